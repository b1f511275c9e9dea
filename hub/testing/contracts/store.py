"""The store contract: streamed writes, ranged reads, head, delete, and the optional URLs."""

from __future__ import annotations

import hashlib
import io
import random
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import requests

from hub.capabilities import (
    PresignedUpload,
    StoredFile,
    StoredObject,
    UploadStream,
)
from hub.errors import NotFoundError

if TYPE_CHECKING:
    from hub.testing import ProviderHarness

from hub.testing.contracts.basics import (
    CONTRACT_TENANT,
    _expect,
    _expect_error,
    _label,
)

_MIB = 1024 * 1024
#: The chunk the generated large upload is made of (and read back in).
_STORE_CHUNK = 256 * 1024


class _WatchedUploadStream(UploadStream):
    """An :class:`UploadStream` that notes whether the provider asked for everything at once."""

    read_whole = False

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            self.read_whole = True
        return super().read(size)  # type: ignore[no-any-return]

    def readall(self) -> bytes:
        self.read_whole = True
        return super().readall()


class _GeneratedContent:
    """``size`` pseudo-random bytes, made chunk by chunk on demand (never held whole)."""

    def __init__(self, size: int, seed: str) -> None:
        self.size = size
        self.seed = seed

    def chunk(self, index: int) -> bytes:
        length = min(_STORE_CHUNK, self.size - index * _STORE_CHUNK)
        return random.Random(f"{self.seed}-{index}").randbytes(max(0, length))

    def chunks(self, limit: int | None = None) -> Iterator[bytes]:
        """The content's chunks in order, stopping after ``limit`` bytes when given."""
        produced = 0
        for index in range((self.size + _STORE_CHUNK - 1) // _STORE_CHUNK):
            chunk = self.chunk(index)
            if limit is not None:
                chunk = chunk[: max(0, limit - produced)]
            if not chunk:
                return
            produced += len(chunk)
            yield chunk

    def slice(self, first: int, last: int) -> bytes:
        """Bytes ``first`` to ``last``, inclusive."""
        parts = [self.chunk(index) for index in range(first // _STORE_CHUNK, last // _STORE_CHUNK + 1)]
        offset = first - (first // _STORE_CHUNK) * _STORE_CHUNK
        return b"".join(parts)[offset : offset + last - first + 1]

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for chunk in self.chunks():
            digest.update(chunk)
        return digest.hexdigest()


def _read_stream(provider: object, opened: Any, action: str, *, limit: int = 64 * _MIB) -> bytes:
    """Read what ``store_read`` returned, in chunks, closing it; fails for bytes or a non-file."""
    _expect(
        not isinstance(opened, bytes | bytearray) and callable(getattr(opened, "read", None)),
        provider,
        f"{action} returned {type(opened).__name__}; return a readable binary file object (read(size)), "
        "not the bytes: the core streams downloads",
    )
    parts: list[bytes] = []
    total = 0
    try:
        while chunk := opened.read(_STORE_CHUNK):
            _expect(isinstance(chunk, bytes | bytearray), provider, f"{action}: read() gave {type(chunk).__name__}")
            parts.append(bytes(chunk))
            total += len(chunk)
            _expect(total <= limit, provider, f"{action} gave more than the {limit} bytes expected")
    finally:
        close = getattr(opened, "close", None)
        if callable(close):
            close()
    return b"".join(parts)


def _hash_stream(provider: object, opened: Any, action: str) -> tuple[int, str]:
    """Size and SHA-256 of what ``store_read`` returned, read in chunks (for the large file)."""
    _expect(callable(getattr(opened, "read", None)), provider, f"{action} returned {type(opened).__name__}")
    digest = hashlib.sha256()
    size = 0
    try:
        while chunk := opened.read(_STORE_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    finally:
        close = getattr(opened, "close", None)
        if callable(close):
            close()
    return size, digest.hexdigest()


def check_store(
    harness: ProviderHarness,
    provider: Any,
    *,
    tenant: str = CONTRACT_TENANT,
    large_size: int = 16 * _MIB,
    memory_bound: int | None = None,
) -> StoredFile:
    """Every store hook, as the core calls it.

    ``store`` takes an :class:`~hub.capabilities.UploadStream`: binary and empty content round-trip, an
    existing key is overwritten, the key, content type and metadata are kept; a ``large_size`` stream
    (16 MiB, generated as it is read) is stored without asking for it whole (``read()`` without a size)
    and, when ``memory_bound`` is set (default: half of ``large_size``; ``0`` turns it off, for an SDK
    that buffers whole parts), without Python allocations above that bound. An upload that breaks
    off, or goes past the size limit, raises, and leaves nothing under its key (and an overwritten key
    as it was). ``store_read`` returns a file object, not bytes, with exact ``(first, last)`` ranges;
    ``store_head`` reports size, content type and metadata; missing keys raise ``NotFoundError``;
    ``store_delete`` returns ``True`` then ``False``. The optional ``store_url`` returns a URL or
    ``None``; the optional ``store_upload_url`` returns ``None`` or a ``PresignedUpload`` that really
    uploads (the check sends a file through it and finds it with ``store_head``).
    """
    metadata = {"origin": "contract-check", "uploadedBy": "hub"}

    def stored_file(key: str, content_type: str, size: int | None) -> StoredFile:
        return StoredFile(
            key=key,
            tenant=tenant,
            filename=key.rsplit("/", 1)[-1],
            content_type=content_type,
            category="contract",
            metadata=dict(metadata),
            size=size,
        )

    def new_key(filename: str) -> str:
        return f"{tenant}/contract/{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}-{filename}"

    def store_bytes(key: str, data: bytes, content_type: str) -> Any:
        stream = UploadStream(io.BytesIO(data), expected_size=len(data))
        with stream:
            result = harness.call(provider, "store", file=stored_file(key, content_type, len(data)), stream=stream)
        _expect(stream.finished, provider, "store() returned before reading the stream to its end")
        return result

    def read(key: str, byte_range: tuple[int, int | None] | None, limit: int = 64 * _MIB) -> bytes:
        action = f"store_read(byte_range={byte_range!r})"
        return _read_stream(
            provider, harness.call(provider, "store_read", key=key, byte_range=byte_range), action, limit=limit
        )

    def expect_missing(key: str, when: str) -> None:
        for hook_name, arguments in (("store_read", {"byte_range": None}), ("store_head", {})):
            _expect_error(
                NotFoundError,
                provider,
                f"{hook_name}() {when}",
                lambda hook_name=hook_name, arguments=arguments: harness.call(
                    provider, hook_name, key=key, **arguments
                ),
            )

    # Round trip of binary content, and what store() returns.
    key = new_key("report.bin")
    binary = bytes(range(256)) * 4 + b"\x00\r\n\xff"
    result = store_bytes(key, binary, "application/octet-stream")
    _expect(isinstance(result, StoredFile), provider, f"store() returned {result!r}, not the StoredFile")
    _expect(result.key == key, provider, f"store() changed the key to {result.key!r}; the core's key must be kept")
    _expect(
        result.content_type == "application/octet-stream",
        provider,
        f"store() returned content_type {result.content_type!r}, expected 'application/octet-stream'",
    )
    _expect(
        result.metadata == metadata, provider, f"store() returned metadata {result.metadata!r}, expected {metadata!r}"
    )
    _expect(result.url is None or isinstance(result.url, str), provider, "StoredFile.url must be a string or None")
    _expect(
        read(key, None) == binary,
        provider,
        "store_read() did not return the bytes stored (binary content must round-trip)",
    )

    # Byte ranges: (first, last), both inclusive; last=None is to the end.
    for first, last in ((0, 0), (1, 10), (len(binary) - 4, None), (5, len(binary) - 1), (0, None)):
        expected = binary[first : None if last is None else last + 1]
        got = read(key, (first, last))
        _expect(
            got == expected,
            provider,
            f"store_read(byte_range={(first, last)!r}) gave {len(got)} bytes, expected {len(expected)} "
            "(bytes first..last, both inclusive; last=None to the end)",
        )

    # store_head: what is stored, without reading it.
    head = harness.call(provider, "store_head", key=key)
    _expect(isinstance(head, StoredObject), provider, f"store_head() returned {head!r}, not a StoredObject")
    _expect(head.key == key, provider, f"store_head() reported key {head.key!r}, expected {key!r}")
    _expect(head.size == len(binary), provider, f"store_head() reported size {head.size!r}, expected {len(binary)}")
    _expect(
        head.content_type == "application/octet-stream",
        provider,
        f"store_head() reported content_type {head.content_type!r}; keep the content type store() was given",
    )
    _expect(
        head.metadata == metadata, provider, f"store_head() reported metadata {head.metadata!r}, expected {metadata!r}"
    )
    _expect(
        head.checksum in (None, hashlib.sha256(binary).hexdigest()),
        provider,
        f"store_head() reported checksum {head.checksum!r}: the core's SHA-256, or None when it was not kept",
    )
    _expect(head.etag is None or isinstance(head.etag, str), provider, "StoredObject.etag must be a string or None")

    # Overwrite, then the empty file.
    replacement = b"second version\n"
    store_bytes(key, replacement, "text/plain")
    _expect(
        read(key, None) == replacement, provider, "storing again under the same key must overwrite the first content"
    )
    _expect(
        harness.call(provider, "store_head", key=key).size == len(replacement),
        provider,
        "store_head() after an overwrite must report the new size",
    )
    empty_key = new_key("empty.txt")
    store_bytes(empty_key, b"", "text/plain")
    _expect(read(empty_key, None) == b"", provider, "an empty file did not round-trip")
    _expect(
        harness.call(provider, "store_head", key=empty_key).size == 0, provider, "store_head() of an empty file: size 0"
    )
    harness.call(provider, "store_delete", key=empty_key)

    # A large upload, generated as it is read: the provider must stream it.
    _check_large_store(harness, provider, stored_file, new_key("large.bin"), large_size, memory_bound)

    # Broken uploads leave nothing behind.
    for label, stream_for in (
        (
            "an upload that broke off (IncompleteUploadError from read())",
            lambda content: UploadStream(content.chunks(limit=content.size - 1000), expected_size=content.size),
        ),
        (
            "an upload past the size limit (PayloadTooLargeError from read())",
            lambda content: UploadStream(content.chunks(), limit=content.size // 2),
        ),
    ):
        content = _GeneratedContent(3 * _MIB, f"broken-{uuid.uuid4().hex}")
        for target, before in ((new_key("broken.bin"), None), (key, replacement)):
            with stream_for(content) as stream:
                try:
                    outcome = harness.call(
                        provider,
                        "store",
                        file=stored_file(target, "application/octet-stream", content.size),
                        stream=stream,
                    )
                except Exception:  # any error will do: the core reports the stream's own
                    pass
                else:
                    raise AssertionError(
                        f"{_label(provider)}: store() of {label} returned {outcome!r}; let the stream's error "
                        "propagate (or raise your own): the upload did not complete"
                    )
            if before is None:
                expect_missing(target, f"after {label}: a partial object must never be visible under the key")
            else:
                _expect(
                    read(target, None) == before,
                    provider,
                    f"{label} over an existing key changed it; the old content must stay until an upload completes",
                )

    if harness.implements(provider, "store_url"):
        url = harness.call(provider, "store_url", key=key, expires_in=60)
        _expect(
            url is None or (isinstance(url, str) and url),
            provider,
            f"store_url() returned {url!r}; return a URL or None",
        )
    if harness.implements(provider, "store_upload_url"):
        _check_upload_url(harness, provider, stored_file, new_key("direct.txt"))

    missing = new_key("missing.txt")
    expect_missing(missing, "of a missing key")
    _expect(
        harness.call(provider, "store_delete", key=key) is True,
        provider,
        "store_delete() of a stored key must return True",
    )
    expect_missing(key, "after store_delete()")
    _expect(
        harness.call(provider, "store_delete", key=key) is False,
        provider,
        "store_delete() of a missing key must return False (not raise)",
    )
    return result


def _check_large_store(
    harness: ProviderHarness,
    provider: Any,
    stored_file: Callable[[str, str, int | None], StoredFile],
    key: str,
    size: int,
    memory_bound: int | None,
) -> None:
    content = _GeneratedContent(size, f"large-{uuid.uuid4().hex}")
    bound = size // 2 if memory_bound is None else memory_bound
    stream = _WatchedUploadStream(content.chunks())
    already_tracing = tracemalloc.is_tracing()
    if bound and not already_tracing:
        tracemalloc.start()
    try:
        if bound:
            tracemalloc.reset_peak()
            baseline = tracemalloc.get_traced_memory()[0]
        with stream:
            harness.call(provider, "store", file=stored_file(key, "application/octet-stream", None), stream=stream)
        peak = tracemalloc.get_traced_memory()[1] - baseline if bound else 0
    finally:
        if bound and not already_tracing:
            tracemalloc.stop()
    _expect(
        not stream.read_whole,
        provider,
        "store() called stream.read() without a size, holding the whole upload in memory; read it in chunks "
        "(shutil.copyfileobj(stream, target, 1024 * 1024), an SDK's upload_fileobj)",
    )
    _expect(stream.finished and stream.size == size, provider, f"store() read {stream.size} of the {size} bytes")
    _expect(
        not bound or peak <= bound,
        provider,
        f"store() of a {size // _MIB} MiB stream allocated {peak // _MIB} MiB at its peak (bound: {bound // _MIB} MiB); "
        "copy the stream in chunks instead of collecting it (pass memory_bound= to allow an SDK's part buffers)",
    )
    head = harness.call(provider, "store_head", key=key)
    _expect(head.size == size, provider, f"store_head() of the large file reported {head.size} bytes, expected {size}")
    opened = harness.call(provider, "store_read", key=key, byte_range=None)
    _expect(
        _hash_stream(provider, opened, "store_read() of the large file") == (size, content.sha256()),
        provider,
        "store_read() of the large file did not give back the bytes stored",
    )
    for first, last in ((_STORE_CHUNK - 10, _STORE_CHUNK + 10), (size // 2, size // 2 + 99_999), (size - 100, None)):
        expected = content.slice(first, size - 1 if last is None else last)
        opened = harness.call(provider, "store_read", key=key, byte_range=(first, last))
        got = _read_stream(
            provider, opened, f"store_read(byte_range={(first, last)!r})", limit=len(expected) + _STORE_CHUNK
        )
        _expect(
            got == expected,
            provider,
            f"store_read(byte_range={(first, last)!r}) of the large file gave the wrong bytes",
        )
    _expect(harness.call(provider, "store_delete", key=key) is True, provider, "store_delete() of the large file")


def _check_upload_url(
    harness: ProviderHarness, provider: Any, stored_file: Callable[[str, str, int | None], StoredFile], key: str
) -> None:
    body = b"uploaded straight to the provider\n"
    presigned = harness.call(
        provider, "store_upload_url", file=stored_file(key, "text/plain", len(body)), expires_in=300
    )
    if presigned is None:
        return
    _expect(
        isinstance(presigned, PresignedUpload),
        provider,
        f"store_upload_url() returned {presigned!r}, not a PresignedUpload",
    )
    _expect(
        isinstance(presigned.url, str) and presigned.url.startswith(("http://", "https://")),
        provider,
        f"PresignedUpload.url must be an http(s) URL (got {presigned.url!r})",
    )
    _expect(
        presigned.method in ("PUT", "POST"),
        provider,
        f"PresignedUpload.method must be PUT or POST (got {presigned.method!r})",
    )
    if presigned.method == "PUT":
        response = requests.put(presigned.url, data=body, headers=presigned.headers, timeout=30)
    else:
        files = {"file": (key.rsplit("/", 1)[-1], body, "text/plain")}
        response = requests.post(
            presigned.url, data=presigned.fields, files=files, headers=presigned.headers, timeout=30
        )
    _expect(
        response.ok,
        provider,
        f"uploading through the PresignedUpload ({presigned.method}) was answered {response.status_code}: {response.text[:200]}",
    )
    head = harness.call(provider, "store_head", key=key)
    _expect(head.size == len(body), provider, f"store_head() after a presigned upload reported {head.size} bytes")
    _expect(
        _read_stream(provider, harness.call(provider, "store_read", key=key, byte_range=None), "store_read()") == body,
        provider,
        "store_read() after a presigned upload did not give back the bytes uploaded",
    )
    harness.call(provider, "store_delete", key=key)
