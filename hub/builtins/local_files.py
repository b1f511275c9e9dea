"""File-system helpers shared by the built-in providers that keep their state on local disk."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from hub.capabilities import HealthResult


def resolve_in_data_dir(setting: str, data_dir: str) -> Path:
    """A directory or file setting as a path: relative settings live under the hub's data directory,
    so the hub's state stays in one place whatever the working directory."""
    path = Path(setting).expanduser()
    return path if path.is_absolute() else Path(data_dir) / path


#: Chunk size for copying streams to and from disk: large enough for throughput, small enough for memory.
COPY_CHUNK = 256 * 1024


def atomic_write(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    Readers see the old content or the new, never half a file, and a retried write replaces the first
    rather than adding a second copy.
    """
    staged = stage_stream(path, io.BytesIO(data), fsync=fsync)
    commit_staged(staged, path)


def stage_stream(path: Path, stream: BinaryIO, *, fsync: bool = True) -> Path:
    """Copy ``stream`` in chunks to a hidden temporary file beside ``path`` and return the temporary file.

    Nothing is visible under ``path`` yet: :func:`commit_staged` renames it into place. When reading the
    stream or writing fails, the temporary file is removed and the error raised, so a broken upload
    leaves nothing behind.
    """
    # The leading dot keeps half-written files out of listings; same folder so os.replace is atomic.
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    except FileNotFoundError:  # the folder's first file: make it then (not a mkdir call per write)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            shutil.copyfileobj(stream, handle, COPY_CHUNK)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
    except BaseException:
        discard_staged(Path(temporary))
        raise
    return Path(temporary)


def commit_staged(staged: Path, path: Path) -> None:
    """Move a file made by :func:`stage_stream` into place atomically (removing it if that fails)."""
    try:
        os.replace(staged, path)
    except BaseException:
        discard_staged(staged)
        raise


def discard_staged(staged: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(staged)


def directory_health(directory: Path, purpose: str) -> HealthResult:
    """``success`` when a file can be created in ``directory`` (created if missing), ``error`` otherwise.

    Creating a real file is the only reliable test: ``os.access`` is wrong for root and for read-only mounts.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory, prefix=".health-"):
            pass
    except OSError as error:
        return HealthResult("error", f"{purpose} directory {directory} is not writable: {error.strerror or error}")
    return HealthResult("success", f"{purpose} directory {directory} is writable")
