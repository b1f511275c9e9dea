"""The store capability: the streaming contract (UploadStream, ranged reads, head), the conformance kit's
check_store against broken providers, local-disk's streaming, and the files API through the core."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub import hookimpl
from hub.capabilities import (
    UPLOAD_HEAD_BYTES,
    IteratorStream,
    LimitedReader,
    Provider,
    StoredFile,
    StoredObject,
    UploadStream,
)
from hub.errors import IncompleteUploadError, NotFoundError, PayloadTooLargeError
from hub.testing import ProviderHarness
from hub.testing.contracts import check_store

MIB = 1024 * 1024


# --- UploadStream: what a provider reads -------------------------------------------------------


def _chunks(total: int, size: int = 64 * 1024, byte: bytes = b"a") -> Iterator[bytes]:
    while total > 0:
        yield byte * min(size, total)
        total -= size


def test_upload_stream_counts_and_hashes_what_the_reader_takes() -> None:
    data = bytes(range(256)) * 1000
    stream = UploadStream(io.BytesIO(data), expected_size=len(data))
    assert stream.readable() and not stream.seekable()
    assert stream.checksum is None  # only known at the end
    copied = io.BytesIO()
    while chunk := stream.read(10_000):
        copied.write(chunk)
    assert copied.getvalue() == data
    assert stream.finished and stream.size == len(data) and stream.checksum == hashlib.sha256(data).hexdigest()


def test_upload_stream_refuses_past_the_limit_while_reading() -> None:
    pulled: list[int] = []

    def endless() -> Iterator[bytes]:
        while True:
            pulled.append(1)
            yield b"x" * 65536

    stream = UploadStream(endless(), limit=MIB)
    with pytest.raises(PayloadTooLargeError) as raised:
        while stream.read(65536):
            pass
    assert raised.value.status_code == 413 and raised.value.errors == {"file": [f"the file is over the limit of {MIB} bytes"]}
    assert len(pulled) == MIB // 65536 + 1  # stopped at the first chunk past the limit, not at the end
    with pytest.raises(PayloadTooLargeError):
        stream.read(1)  # the error sticks: a provider that swallowed it cannot read on
    assert stream.error is raised.value and not stream.rewind()


def test_upload_stream_reports_a_short_or_broken_upload() -> None:
    short = UploadStream(io.BytesIO(b"abc"), expected_size=10)
    assert short.read(100) == b"abc"
    with pytest.raises(IncompleteUploadError, match="after 3 of 10 bytes"):
        short.read(100)
    assert not short.finished

    def dropped() -> Iterator[bytes]:
        yield b"first"
        raise ConnectionResetError("peer went away")

    broken = UploadStream(dropped())
    assert broken.read(5) == b"first"
    with pytest.raises(IncompleteUploadError, match="broke off after 5 bytes: ConnectionResetError") as raised:
        broken.read(5)
    assert raised.value.status_code == 400
    longer = UploadStream(io.BytesIO(b"abcdef"), expected_size=3)
    with pytest.raises(IncompleteUploadError, match="longer than"):
        longer.read(6)


def test_upload_stream_peeks_without_consuming_and_rewinds_when_it_can() -> None:
    data = b"%PDF-1.7\n" + b"z" * (3 * UPLOAD_HEAD_BYTES)
    # A source that cannot seek (a request body): replayable only while the reader stayed in the kept head.
    stream = UploadStream(IteratorStream(iter([data[:1000], data[1000:]])))
    assert stream.peek(8) == b"%PDF-1.7"
    assert stream.read(5) == b"%PDF-"
    assert stream.rewind() and stream.read(9) == b"%PDF-1.7\n"
    assert b"".join(iter(lambda: stream.read(50_000), b"")) == data[9:]
    assert stream.finished and not stream.rewind()  # read past the kept head: cannot go back

    seekable = io.BytesIO(b"prefix" + data)
    seekable.seek(6)  # the upload starts where the source stood
    replayable = UploadStream(seekable)
    assert b"".join(iter(lambda: replayable.read(70_000), b"")) == data
    assert replayable.rewind() and replayable.checksum is None
    assert b"".join(iter(lambda: replayable.read(70_000), b"")) == data
    assert replayable.checksum == hashlib.sha256(data).hexdigest() and replayable.size == len(data)


def test_upload_stream_closes_the_iterator_it_wraps_but_not_a_file_it_was_given() -> None:
    source = io.BytesIO(b"data")
    with UploadStream(source) as stream:
        stream.read(2)
    assert stream.closed and not source.closed  # the caller's file (a request body) is the caller's to close
    closed: list[bool] = []

    def chunks() -> Iterator[bytes]:
        try:
            yield b"data"
        finally:
            closed.append(True)

    with UploadStream(chunks()) as stream:
        stream.read(2)
    assert closed == [True]


def test_iterator_stream_and_limited_reader() -> None:
    closed: list[bool] = []

    def chunks() -> Iterator[bytes]:
        try:
            yield b"abc"
            yield b""
            yield b"defgh"
        finally:
            closed.append(True)

    stream = IteratorStream(chunks())
    assert stream.read(2) == b"ab" and stream.read() == b"cdefgh" and stream.read(1) == b""
    stream.close()
    assert closed == [True]
    raw = io.BytesIO(b"0123456789")
    raw.seek(3)
    limited = LimitedReader(raw, 4)
    assert limited.read(2) == b"34" and limited.read(10) == b"56" and limited.read(1) == b""
    limited.close()
    assert raw.closed


# --- the conformance kit fails broken providers ------------------------------------------------


class MemoryStore(Provider):
    """A correct in-memory store: chunks are collected aside and published only at the end."""

    type_name = "kit-memory"
    capability = "store"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.objects: dict[str, tuple[bytes, StoredFile]] = {}

    def _collect(self, stream: UploadStream) -> bytes:
        return b"".join(iter(lambda: stream.read(64 * 1024), b""))

    @hookimpl
    def store(self, file: StoredFile, stream: UploadStream) -> StoredFile:
        self.objects[file.key] = (self._collect(stream), file)
        return file

    @hookimpl
    def store_read(self, key: str, byte_range: tuple[int, int | None] | None) -> Any:
        if key not in self.objects:
            raise NotFoundError(f"no object {key}")
        first, last = byte_range or (0, None)
        return io.BytesIO(self.objects[key][0][first : None if last is None else last + 1])

    @hookimpl
    def store_head(self, key: str) -> StoredObject:
        if key not in self.objects:
            raise NotFoundError(f"no object {key}")
        data, file = self.objects[key]
        return StoredObject(key, len(data), file.content_type, dict(file.metadata), hashlib.sha256(data).hexdigest())

    @hookimpl
    def store_delete(self, key: str) -> bool:
        return self.objects.pop(key, None) is not None


class SlurpingStore(MemoryStore):
    """Reads the whole upload at once."""

    type_name = "kit-slurping"

    def _collect(self, stream: UploadStream) -> bytes:
        return stream.read()


class PartialStore(MemoryStore):
    """Publishes each chunk under the key as it arrives: a broken upload stays visible, half-written."""

    type_name = "kit-partial"

    @hookimpl
    def store(self, file: StoredFile, stream: UploadStream) -> StoredFile:
        self.objects[file.key] = (b"", file)
        while chunk := stream.read(64 * 1024):
            self.objects[file.key] = (self.objects[file.key][0] + chunk, file)
        return file


class SwallowingStore(MemoryStore):
    """Catches the stream's error and keeps what it got, reporting success."""

    type_name = "kit-swallowing"

    def _collect(self, stream: UploadStream) -> bytes:
        parts = []
        try:
            while chunk := stream.read(64 * 1024):
                parts.append(chunk)
        except Exception:
            pass
        return b"".join(parts)


class RangeBlindStore(MemoryStore):
    """Ignores byte_range."""

    type_name = "kit-range-blind"

    @hookimpl
    def store_read(self, key: str, byte_range: tuple[int, int | None] | None) -> Any:
        return super().store_read(key, None)


class ExclusiveRangeStore(MemoryStore):
    """Treats the last offset as exclusive (Python slicing) instead of inclusive (HTTP)."""

    type_name = "kit-exclusive-range"

    @hookimpl
    def store_read(self, key: str, byte_range: tuple[int, int | None] | None) -> Any:
        first, last = byte_range or (0, None)
        return io.BytesIO(super().store_read(key, None).read()[first:last])


class BytesStore(MemoryStore):
    """Returns bytes from store_read instead of a file object."""

    type_name = "kit-bytes"

    @hookimpl
    def store_read(self, key: str, byte_range: tuple[int, int | None] | None) -> Any:
        return super().store_read(key, byte_range).read()


class CarelessHeadStore(MemoryStore):
    """Reports the size the client announced rather than what was stored."""

    type_name = "kit-careless-head"

    @hookimpl
    def store_head(self, key: str) -> StoredObject:
        head = super().store_head(key)
        head.size = self.objects[key][1].size or 0
        return head


class HeadWithoutNotFoundStore(MemoryStore):
    type_name = "kit-head-none"

    @hookimpl
    def store_head(self, key: str) -> Any:
        return super().store_head(key) if key in self.objects else None


@pytest.mark.parametrize(
    ("provider_class", "memory_bound", "complaint"),
    [
        (SlurpingStore, 0, "called stream.read() without a size"),
        (MemoryStore, None, "allocated"),  # correct, but holds the 16 MiB file in memory: past the default bound
        (PartialStore, 0, "a partial object must never be visible under the key"),
        (SwallowingStore, 0, "store() of an upload that broke off (IncompleteUploadError from read()) returned"),
        (RangeBlindStore, 0, "store_read(byte_range=(0, 0)) gave 1028 bytes, expected 1"),
        (ExclusiveRangeStore, 0, "store_read(byte_range=(0, 0)) gave 0 bytes, expected 1"),
        (BytesStore, 0, "returned bytes; return a readable binary file object"),
        (CarelessHeadStore, 0, "store_head() of the large file reported 0 bytes"),
        (HeadWithoutNotFoundStore, 0, "store_head() after an upload that broke off"),
    ],
)
def test_check_store_fails_for_a_broken_provider(
    provider_harness: ProviderHarness, provider_class: type, memory_bound: int | None, complaint: str
) -> None:
    provider_harness.add_provider_classes(provider_class)
    provider = provider_harness.build(provider_class.type_name)
    with pytest.raises(AssertionError) as raised:
        check_store(provider_harness, provider, memory_bound=memory_bound)
    assert complaint in str(raised.value)
    assert f"{provider_class.type_name} provider" in str(raised.value)


def test_check_store_passes_a_correct_in_memory_store_when_memory_is_allowed(provider_harness: ProviderHarness) -> None:
    provider_harness.add_provider_classes(MemoryStore)
    check_store(provider_harness, provider_harness.build("kit-memory"), memory_bound=0, large_size=4 * MIB)


# --- local-disk streaming --------------------------------------------------------------------------


def _file(key: str, size: int | None = None, content_type: str = "application/octet-stream") -> StoredFile:
    return StoredFile(key=key, tenant="acme", filename=key.rsplit("/", 1)[-1], content_type=content_type, size=size)


def _files_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_local_disk_broken_upload_leaves_no_file_and_no_temporary(provider_harness: ProviderHarness) -> None:
    disk = provider_harness.build("local-disk")
    key = "acme/reports/1-ab-big.bin"
    with UploadStream(_chunks(5 * MIB), expected_size=6 * MIB) as stream, pytest.raises(IncompleteUploadError):
        provider_harness.call(disk, "store", file=_file(key, 6 * MIB), stream=stream)
    assert _files_under(disk.root) == []
    with pytest.raises(NotFoundError):
        provider_harness.call(disk, "store_head", key=key)


def test_local_disk_readers_see_the_old_or_the_new_content_during_an_overwrite(provider_harness: ProviderHarness) -> None:
    disk = provider_harness.build("local-disk")
    key = "acme/reports/1-ab-stock.csv"
    old, new = b"o" * (2 * MIB), b"n" * (3 * MIB)
    with UploadStream(io.BytesIO(old)) as stream:
        provider_harness.call(disk, "store", file=_file(key), stream=stream)
    reading = provider_harness.call(disk, "store_read", key=key, byte_range=None)
    half_way = threading.Event()
    release = threading.Event()

    def slow_chunks() -> Iterator[bytes]:
        yield new[: MIB]
        half_way.set()
        release.wait(10)
        yield new[MIB:]

    writer = threading.Thread(
        target=lambda: provider_harness.call(disk, "store", file=_file(key), stream=UploadStream(slow_chunks()))
    )
    writer.start()
    assert half_way.wait(10)
    assert provider_harness.call(disk, "store_head", key=key).size == len(old)  # the upload is not visible yet
    opened = provider_harness.call(disk, "store_read", key=key, byte_range=None)
    release.set()
    writer.join(10)
    with opened:
        assert opened.read() == old
    with reading:
        assert reading.read() == old  # a download that began before the overwrite finishes with the old content
    with provider_harness.call(disk, "store_read", key=key, byte_range=(MIB - 1, MIB)) as opened:
        assert opened.read() == b"nn"
    head = provider_harness.call(disk, "store_head", key=key)
    assert (head.size, head.checksum) == (len(new), hashlib.sha256(new).hexdigest())


def test_local_disk_head_of_a_file_without_sidecar(provider_harness: ProviderHarness) -> None:
    disk = provider_harness.build("local-disk")
    key = "acme/imports/1-ab-by-hand.txt"
    (disk.root / "acme" / "imports").mkdir(parents=True)
    (disk.root / key).write_bytes(b"copied in by an operator")
    head = provider_harness.call(disk, "store_head", key=key)
    assert (head.size, head.content_type, head.metadata, head.checksum) == (24, None, {}, None)
    assert head.etag and head.updated_at is not None
    with pytest.raises(NotFoundError):
        provider_harness.call(disk, "store_head", key="acme/imports")  # a folder is not a file
