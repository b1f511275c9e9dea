"""Files: what a store provider is told about a file, the upload stream it reads, and what it reports."""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, NoReturn

from hub.errors import HubError, IncompleteUploadError, PayloadTooLargeError


@dataclass
class StoredFile:
    """A file the core asks a store provider to keep, and what ``store`` returns.

    ``key`` is tenant-prefixed and unique: ``<tenant>/<category>/<ms timestamp>-<random>-<name>``.
    """

    key: str
    tenant: str
    filename: str
    content_type: str
    category: str = "general"
    metadata: dict[str, str] = field(default_factory=dict)
    #: Bytes. When ``store`` is called: the length the client announced, or ``None`` when it is not known
    #: in advance (a chunked request body). Only a hint (pick a single PUT or a multipart upload): the
    #: stream is the truth, and the core checks the count when the stream ends.
    size: int | None = None
    #: SHA-256 (hex) of the content, computed by the core as the stream passes; ``None`` until it ended.
    checksum: str | None = None
    #: Filled by the provider: a permanent URL the file can be fetched from, if it has one.
    url: str | None = None


@dataclass
class StoredObject:
    """What a store provider holds under a key, as ``store_head`` reports it."""

    key: str
    #: Bytes stored.
    size: int
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    #: The SHA-256 (hex) the core computed at upload, when the provider kept it; ``None`` otherwise.
    checksum: str | None = None
    #: The provider's entity tag (an S3 or Azure ETag, a GCS generation), when it has one.
    etag: str | None = None
    updated_at: datetime | None = None


@dataclass
class PresignedUpload:
    """How a client uploads a file straight to the provider, as ``store_upload_url`` answers."""

    url: str
    #: ``PUT`` (send the bytes as the body) or ``POST`` (an HTML form: ``fields`` first, then ``file``).
    method: str = "PUT"
    #: Headers the client must send with a ``PUT`` (``Content-Type``, the provider's checksum headers).
    headers: dict[str, str] = field(default_factory=dict)
    #: Form fields a ``POST`` upload must carry before the file (an S3 presigned POST's policy).
    fields: dict[str, str] = field(default_factory=dict)
    expires_at: datetime | None = None


#: Bytes of an upload the core reads ahead of the provider: enough for content sniffing, and kept so that
#: a retry of a small upload can replay it even when its source cannot seek.
UPLOAD_HEAD_BYTES = 64 * 1024


class UploadStream(io.RawIOBase):
    """The readable, non-seekable binary stream a ``store`` provider receives.

    The core wraps the upload's source (a request body, a spooled multipart part, a file object or bytes
    from the Python API) in one of these. As the provider reads, it counts the bytes, computes their
    SHA-256 and enforces the size limit: ``read()`` raises :class:`~hub.errors.PayloadTooLargeError` past
    ``limit`` and :class:`~hub.errors.IncompleteUploadError` when the source ends before
    ``expected_size`` or breaks (the client went away). Once ``read()`` returned ``b""``, :attr:`size` and
    :attr:`checksum` are final.

    The core (not the provider) owns the stream and closes it (a file object given as ``source`` stays open:
    it is its opener's to close). :meth:`peek` and :meth:`rewind` are the core's: it sniffs the content type on the first bytes before calling the provider, and replays the
    stream for a retry when the source allows it.
    """

    def __init__(
        self,
        source: BinaryIO | Iterable[bytes],
        *,
        limit: int | None = None,
        expected_size: int | None = None,
        head_bytes: int = UPLOAD_HEAD_BYTES,
    ) -> None:
        super().__init__()
        # A file object stays its opener's to close (a request body, the caller's file); an iterable is
        # wrapped here, and closed with the stream.
        self._owns_source = not hasattr(source, "read")
        self._source: Any = IteratorStream(source) if self._owns_source else source  # type: ignore[arg-type]
        self.limit = limit
        self.expected_size = expected_size
        self._head_limit = head_bytes
        self._head = bytearray()  # the first bytes pulled from the source, kept for sniffing and replay
        self._pulled = 0  # bytes taken from the source (at its start offset + _pulled)
        self._position = 0  # bytes handed to the reader since the last rewind
        self._hash = hashlib.sha256()
        self._finished = False
        #: The error the stream raised to its reader, if any: the core reports it whatever the provider made of it.
        self.error: HubError | None = None
        try:
            self._start: int | None = self._source.tell() if self._source.seekable() else None
        except (AttributeError, OSError, ValueError):
            self._start = None

    # --- what a provider uses -------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    @property
    def size(self) -> int:
        """Bytes read so far; the file's size once :attr:`finished`."""
        return self._position

    @property
    def finished(self) -> bool:
        """Whether the reader reached the end (``read()`` returned ``b""``) without an error."""
        return self._finished

    @property
    def checksum(self) -> str | None:
        """SHA-256 (hex) of the content once :attr:`finished`, else ``None``."""
        return self._hash.hexdigest() if self._finished else None

    def readinto(self, buffer: Any) -> int:
        if self.error is not None:
            raise self.error
        if self.closed:
            raise ValueError("I/O operation on a closed upload stream")
        wanted = len(buffer)
        if wanted == 0:
            return 0
        # Bytes before len(_head) come from the kept head (after a peek or a rewind); the source always stands
        # right after what was handed out or kept, so the rest of a read continues from it.
        if self._position < len(self._head):
            chunk = bytes(self._head[self._position : self._position + wanted])
            if len(chunk) < wanted:
                chunk += self._pull(wanted - len(chunk))
        else:
            chunk = self._pull(wanted)  # the common case: no copy beyond the one into the reader's buffer
        if not chunk:
            if self.expected_size is not None and self._position < self.expected_size:
                self._fail(IncompleteUploadError(f"the upload ended after {self._position} of {self.expected_size} bytes"))
            self._finished = True
            return 0
        self._position += len(chunk)
        if self.limit is not None and self._position > self.limit:
            self._fail(PayloadTooLargeError(self.limit))
        if self.expected_size is not None and self._position > self.expected_size:
            self._fail(IncompleteUploadError(f"the upload is longer than the {self.expected_size} bytes it announced"))
        self._hash.update(chunk)
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        if not self.closed and self._owns_source:
            with contextlib.suppress(Exception):
                self._source.close()
        super().close()

    # --- what the core uses ---------------------------------------------------------------------

    def peek(self, size: int) -> bytes:
        """The first ``size`` bytes (fewer when the content is shorter), without consuming them."""
        size = min(size, self._head_limit)
        while len(self._head) < size and self._pulled == len(self._head):
            chunk = self._read_source(size - len(self._head))
            if not chunk:
                break
            self._head.extend(chunk)
            self._pulled += len(chunk)
        return bytes(self._head[:size])

    def rewind(self) -> bool:
        """Start again from the first byte, for another attempt; ``False`` when the source cannot go back
        (a request body read past :data:`UPLOAD_HEAD_BYTES`), or when the stream failed for the client's
        reason (too large, incomplete: another attempt would fail the same way)."""
        if self.error is not None or self.closed:
            return False
        if self._pulled != len(self._head):
            if self._start is None:
                return False
            try:
                self._source.seek(self._start + len(self._head))
            except (OSError, ValueError):
                return False
            self._pulled = len(self._head)
        self._position = 0
        self._hash = hashlib.sha256()
        self._finished = False
        return True

    # --- internals ------------------------------------------------------------------------------

    def _pull(self, wanted: int) -> bytes:
        chunk = self._read_source(wanted)
        if len(self._head) == self._pulled and len(self._head) < self._head_limit:
            self._head.extend(chunk[: self._head_limit - len(self._head)])
        self._pulled += len(chunk)
        return chunk

    def _read_source(self, wanted: int) -> bytes:
        try:
            chunk = self._source.read(wanted)
        except Exception as error:  # a dropped connection, a werkzeug ClientDisconnected, a broken iterator
            self._fail(IncompleteUploadError(f"the upload broke off after {self._pulled} bytes: {type(error).__name__}"))
        if chunk is None:  # a non-blocking source with nothing yet: not something an upload should be
            self._fail(IncompleteUploadError("the upload source returned no data (non-blocking?)"))
        return bytes(chunk)

    def _fail(self, error: HubError) -> NoReturn:
        self.error = error
        raise error


class IteratorStream(io.RawIOBase):
    """A readable binary file object over an iterable of ``bytes`` chunks.

    For a ``store_read`` whose SDK hands out an iterator (Azure's ``download_blob().chunks()``), and for
    feeding a generator to :class:`UploadStream`. ``close()`` closes the iterator when it can be closed.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._iterator = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = bytes(next(self._iterator))
            except StopIteration:
                return 0
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def close(self) -> None:
        if not self.closed:
            for closable in (self._iterator, self._chunks):
                close = getattr(closable, "close", None)
                if callable(close):
                    close()
        super().close()


class LimitedReader(io.RawIOBase):
    """At most ``length`` bytes of ``raw`` from its current position; ``close()`` closes ``raw``.

    For a ``store_read`` of a byte range on a file object that can seek but not stop (a local file): seek
    to the start, then ``LimitedReader(handle, end - start + 1)``.
    """

    def __init__(self, raw: BinaryIO, length: int) -> None:
        super().__init__()
        self._raw = raw
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        chunk = self._raw.read(min(len(buffer), self._left))
        if not chunk:
            return 0
        self._left -= len(chunk)
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()
