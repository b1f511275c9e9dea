"""Store provider ``local-disk``: files in a folder on this machine.

Content lives at ``<root>/<key>``, its metadata (content type, checksum, the caller's metadata) in a
sidecar ``<root>/.meta/<key>.json``. Keys are the core's ``<tenant>/<category>/<ts>-<rand>-<name>``;
a key that could reach outside the root is refused.
"""

from __future__ import annotations

import contextlib
import json
import threading
import zlib
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from marshmallow import Schema, fields, validate

from hub import hookimpl
from hub.builtins.local_files import atomic_write, directory_health, resolve_in_data_dir
from hub.capabilities import HealthResult, Provider, ProviderContext, StoredFile, utcnow
from hub.errors import NotFoundError, PermanentError

#: Keys never start a path component with a dot, so the sidecar folder cannot collide with a key.
METADATA_FOLDER = ".meta"

# Writes and deletes of one key are serialised so content and sidecar never disagree; striped locks
# keep memory bounded whatever the number of keys.
_LOCK_STRIPES = 64


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
    def store(self, file: StoredFile, data: bytes) -> StoredFile:
        path = self.content_path(file.key)
        url = f"{self.public_base_url.rstrip('/')}/{quote(file.key)}" if self.public_base_url else None
        stored = replace(file, url=url)
        sidecar = {**asdict(stored), "size": len(data), "stored_at": utcnow().isoformat()}
        with self._lock_for(file.key):
            try:
                atomic_write(path, data)
                atomic_write(self.metadata_path(file.key), json.dumps(sidecar, indent=2).encode("utf-8"))
            except (NotADirectoryError, FileExistsError, IsADirectoryError) as error:
                raise PermanentError(f"local-disk: key {file.key!r} clashes with another key's folder") from error
        return stored

    @hookimpl
    def store_read(self, key: str) -> bytes:
        path = self.content_path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFoundError(f"local-disk: no file stored under {key!r}") from None

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
