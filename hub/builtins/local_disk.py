"""Store provider ``local-disk``: files in a folder on this machine.

Content lives at ``<root>/<key>``, its metadata (content type, checksum, the caller's metadata) in a
sidecar ``<root>/.meta/<key>.json``. Keys are the core's ``<tenant>/<category>/<ts>-<rand>-<name>``;
a key that could reach outside the root is refused. Uploads stream to a hidden temporary file beside the
target and are renamed into place only once complete, so a broken upload never shows under its key;
reads stream from the file, seeking for byte ranges. There are no presigned URLs: the API serves files.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import stat
import threading
import zlib
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, ClassVar
from urllib.parse import quote

from marshmallow import Schema, fields, validate

from hub import hookimpl
from hub.builtins.local_files import commit_staged, directory_health, discard_staged, resolve_in_data_dir, stage_stream
from hub.capabilities import (
    HealthResult,
    LimitedReader,
    Provider,
    ProviderContext,
    StoredFile,
    StoredObject,
    UploadStream,
    utcnow,
)
from hub.errors import NotFoundError, PermanentError, ProviderError

#: Keys never start a path component with a dot, so the sidecar folder cannot collide with a key.
METADATA_FOLDER = ".meta"

# Writes and deletes of one key are serialised so content and sidecar never disagree; striped locks
# keep memory bounded whatever the number of keys.
_LOCK_STRIPES = 64


class DiskFullError(ProviderError):
    """The disk (or the quota) under the root is full: nothing was stored (the staged file is removed).
    Not retried here, failed over to the next store provider; not a sign the provider is down, so the
    breaker does not count it and uploads work again as soon as space is freed."""

    failover = True
    status_code = 507


class LocalDiskSettings(Schema):
    root = fields.String(load_default="files", validate=validate.Length(min=1))
    #: Set when a web server publishes ``root``: stored files then carry ``<public_base_url>/<key>``.
    public_base_url = fields.Url(load_default=None, allow_none=True, require_tld=False)


class LocalDisk(Provider):
    type_name = "local-disk"
    capability = "store"
    settings_schema: ClassVar[type[Schema]] = LocalDiskSettings
    description = "Stores files under a local folder (metadata in sidecar JSON files)."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self.root = resolve_in_data_dir(settings["root"], context.data_dir)
        self.public_base_url: str | None = settings.get("public_base_url")
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    # --- paths -----------------------------------------------------------------------------------

    def content_path(self, key: str) -> Path:
        """Where ``key``'s bytes live; raises PermanentError for a key that would escape the root."""
        if not isinstance(key, str) or not key or "\\" in key or "\x00" in key or key.startswith("/"):
            raise PermanentError(f"local-disk: refusing key {key!r}: keys are relative paths with '/' separators")
        if any(not part or part.startswith(".") for part in key.split("/")):
            # Covers "..", "." and empty parts, and keeps keys away from the sidecar and temporary files.
            raise PermanentError(f"local-disk: refusing key {key!r}: no empty, '..' or dot-prefixed path parts")
        root = self.root.resolve()
        path = (root / key).resolve()
        if not path.is_relative_to(root):
            # A symlink inside the root pointing elsewhere.
            raise PermanentError(f"local-disk: refusing key {key!r}: it resolves outside the storage root")
        return path

    def metadata_path(self, key: str) -> Path:
        """The sidecar JSON holding ``key``'s content type and metadata."""
        self.content_path(key)  # validates the key
        return self.root.resolve() / METADATA_FOLDER / f"{key}.json"

    def _lock_for(self, key: str) -> threading.Lock:
        return self._locks[zlib.crc32(key.encode("utf-8")) % _LOCK_STRIPES]

    # --- hooks -----------------------------------------------------------------------------------

    @hookimpl
    def store(self, file: StoredFile, stream: UploadStream) -> StoredFile:
        path = self.content_path(file.key)
        sidecar_path = self.metadata_path(file.key)
        url = f"{self.public_base_url.rstrip('/')}/{quote(file.key)}" if self.public_base_url else None
        staged: list[Path] = []
        try:
            # Copied outside the key's lock: a long upload must not hold up other keys on the same stripe.
            staged.append(stage_stream(path, stream))
            stored = replace(file, url=url, size=staged[0].stat().st_size, checksum=stream.checksum)
            sidecar = {**asdict(stored), "stored_at": utcnow().isoformat()}
            staged.append(stage_stream(sidecar_path, io.BytesIO(json.dumps(sidecar, indent=2).encode("utf-8"))))
            with self._lock_for(file.key):
                # Content and sidecar change together for readers that take the lock (store_head).
                commit_staged(staged.pop(0), path)
                commit_staged(staged.pop(0), sidecar_path)
        except (NotADirectoryError, FileExistsError, IsADirectoryError) as error:
            raise PermanentError(f"local-disk: key {file.key!r} clashes with another key's folder") from error
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError("local-disk: the storage disk is full (no space left on device); nothing was stored") from error
            raise
        finally:
            for leftover in staged:
                discard_staged(leftover)  # a broken upload leaves no trace
        return stored

    @hookimpl
    def store_read(self, key: str, byte_range: tuple[int, int | None] | None) -> BinaryIO:
        path = self.content_path(key)
        try:
            handle = path.open("rb")  # an open handle keeps reading the old content if the key is overwritten
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFoundError(f"local-disk: no file stored under {key!r}") from None
        if byte_range is None:
            return handle
        first, last = byte_range
        if first < 0 or (last is not None and last < first):
            handle.close()
            raise PermanentError(f"local-disk: invalid byte range {byte_range!r}")
        handle.seek(first)
        return handle if last is None else LimitedReader(handle, last - first + 1)

    @hookimpl
    def store_head(self, key: str) -> StoredObject:
        path = self.content_path(key)
        with self._lock_for(key):
            try:
                status = path.stat()
            except (FileNotFoundError, NotADirectoryError):
                status = None
            if status is None or not stat.S_ISREG(status.st_mode):
                raise NotFoundError(f"local-disk: no file stored under {key!r}")
            try:
                sidecar = json.loads(self.metadata_path(key).read_text(encoding="utf-8"))
            except (FileNotFoundError, ValueError):
                sidecar = {}  # content copied in by hand: still a file, described by what the disk knows
        checksum = sidecar.get("checksum")
        return StoredObject(
            key=key,
            size=status.st_size,
            content_type=sidecar.get("content_type"),
            metadata=dict(sidecar.get("metadata") or {}),
            checksum=checksum,
            etag=checksum or f"{status.st_mtime_ns:x}-{status.st_size:x}",
            updated_at=datetime.fromtimestamp(status.st_mtime, UTC),
        )

    @hookimpl
    def store_delete(self, key: str) -> bool:
        path = self.content_path(key)
        with self._lock_for(key):
            try:
                path.unlink()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return False
            with contextlib.suppress(FileNotFoundError):
                self.metadata_path(key).unlink()
        return True

    @hookimpl
    def store_url(self, key: str, expires_in: int) -> str | None:
        # No presigned URLs on a local disk: the API serves the file itself.
        return None

    @hookimpl
    def health(self) -> HealthResult:
        return directory_health(self.root, "storage root")


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(LocalDisk)
