"""The store capability: the streaming contract (UploadStream, ranged reads, head), the conformance kit's
check_store against broken providers, local-disk's streaming, and the files API through the core."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import pytest
import requests
import yaml
from marshmallow import Schema, fields, validate
from werkzeug.wrappers import Request
from werkzeug.wrappers import Response as WerkzeugResponse

from hub import hookimpl
from hub.api import create_app
from hub.builtins.local_disk import LocalDisk, LocalDiskSettings
from hub.capabilities import (
    UPLOAD_HEAD_BYTES,
    IteratorStream,
    LimitedReader,
    PresignedUpload,
    Provider,
    StoredFile,
    StoredObject,
    UploadStream,
)
from hub.errors import (
    ConfigurationError,
    IncompleteUploadError,
    NotFoundError,
    PayloadTooLargeError,
    TransientError,
    ValidationError,
)
from hub.manager import IntegrationManager
from hub.testing import ProviderHarness
from hub.testing.contracts import check_store
from hub.testing.servers import WsgiServer, free_port, wait_for_port
from tests.conftest import API, REPO, base_config

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
    assert raised.value.status_code == 413 and raised.value.errors == {
        "file": [f"the file is over the limit of {MIB} bytes"]
    }
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


def test_local_disk_readers_see_the_old_or_the_new_content_during_an_overwrite(
    provider_harness: ProviderHarness,
) -> None:
    disk = provider_harness.build("local-disk")
    key = "acme/reports/1-ab-stock.csv"
    old, new = b"o" * (2 * MIB), b"n" * (3 * MIB)
    with UploadStream(io.BytesIO(old)) as stream:
        provider_harness.call(disk, "store", file=_file(key), stream=stream)
    reading = provider_harness.call(disk, "store_read", key=key, byte_range=None)
    half_way = threading.Event()
    release = threading.Event()

    def slow_chunks() -> Iterator[bytes]:
        yield new[:MIB]
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


# --- the files API through the core ------------------------------------------------------------------


class FlakySettings(Schema):
    #: The first ``failures`` tries stop after reading ``fail_after`` bytes and raise ``error``.
    fail_after = fields.Integer(load_default=100_000)
    failures = fields.Integer(load_default=1)
    error = fields.String(load_default="transient", validate=validate.OneOf(["transient", "configuration"]))


class FlakyStore(MemoryStore):
    """Reads part of the upload, then fails (a connection to the storage service dropped)."""

    type_name = "flaky-store"
    settings_schema = FlakySettings

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.tries: list[int] = []

    @hookimpl
    def store(self, file: StoredFile, stream: UploadStream) -> StoredFile:
        if len(self.tries) < self.settings["failures"]:
            taken = len(stream.read(self.settings["fail_after"]))
            self.tries.append(taken)
            error = TransientError if self.settings["error"] == "transient" else ConfigurationError
            raise error("storage connection dropped")
        self.objects[file.key] = (self._collect(stream), file)
        self.tries.append(len(self.objects[file.key][0]))
        return file


class SigningDiskSettings(LocalDiskSettings):
    upload_base_url = fields.String(required=True)
    secret = fields.String(required=True)


class SigningDisk(LocalDisk):
    """local-disk plus presigned uploads to its own upload endpoint (:class:`UploadEndpoint`): an HMAC of
    the key, the expiry and the content type, as a cloud store signs them."""

    type_name = "signing-disk"
    settings_schema = SigningDiskSettings
    secret_settings = ("secret",)

    def signature(self, key: str, expires: int, content_type: str) -> str:
        message = f"{key}\n{expires}\n{content_type}".encode()
        return hmac.new(self.settings["secret"].encode(), message, hashlib.sha256).hexdigest()

    @hookimpl
    def store_upload_url(self, file: StoredFile, expires_in: int) -> PresignedUpload:
        expires = int(time.time()) + expires_in
        query = urlencode({"expires": expires, "signature": self.signature(file.key, expires, file.content_type)})
        url = f"{self.settings['upload_base_url']}/upload/{quote(file.key)}?{query}"
        return PresignedUpload(
            url, "PUT", {"Content-Type": file.content_type}, expires_at=datetime.fromtimestamp(expires, UTC)
        )


class UploadEndpoint(WsgiServer):
    """The storage service's side of a presigned upload: checks the signature and expiry, then stores."""

    def __init__(self) -> None:
        super().__init__(name="upload-endpoint")
        self.disk: SigningDisk | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        assert self.disk is not None and request.path.startswith("/upload/")
        key = unquote(request.path.removeprefix("/upload/"))
        expires = int(request.args.get("expires", "0"))
        expected = self.disk.signature(key, expires, request.mimetype)
        if not hmac.compare_digest(request.args.get("signature", ""), expected) or expires < time.time():
            return WerkzeugResponse("signature does not match or expired", 403)(environ, start_response)
        file = StoredFile(
            key=key, tenant=key.split("/")[0], filename=key.rsplit("/", 1)[-1], content_type=request.mimetype
        )
        with UploadStream(request.stream, expected_size=request.content_length) as stream:
            self.disk.store(file, stream)
        return WerkzeugResponse("", 200)(environ, start_response)


class StoreTestsPlugin:
    @hookimpl
    def register_providers(self, register: Any) -> None:
        for provider_class in (MemoryStore, FlakyStore, SwallowingStore, SigningDisk):
            register(provider_class)


class Hub:
    def __init__(self, manager: IntegrationManager) -> None:
        self.manager = manager
        self.client = create_app(manager=manager).test_client()
        self.headers = {
            "Authorization": f"Bearer {manager.tokens.create('demo', 'store-tests')[1]}",
            "X-Tenant-ID": "demo",
        }

    def instance(self, name: str) -> Any:
        return self.manager.registry.slots[name].instance

    def upload(self, status: int = 201, **kwargs: Any) -> Any:
        response = self.client.post(f"{API}/files", headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs)
        body = response.get_json()
        assert response.status_code == status, body
        return body["data"] if status < 300 else body

    def get(self, path: str, status: int = 200, **headers: str) -> Any:
        response = self.client.get(f"{API}{path}", headers={**self.headers, **headers})
        assert response.status_code == status, response.get_data(as_text=True)[:500]
        return response


@pytest.fixture
def make_hub(tmp_path: Path) -> Iterator[Any]:
    made: list[IntegrationManager] = []

    def make(providers: dict[str, Any] | None = None, services: dict[str, Any] | None = None, **overrides: Any) -> Hub:
        config = base_config(tmp_path / f"var-{len(made)}", providers, services, **overrides)
        manager = IntegrationManager(
            config, environ={}, entry_points=False, plugins=[(StoreTestsPlugin(), "store-tests")]
        )
        made.append(manager)
        return Hub(manager)

    yield make
    for manager in made:
        manager.close()


def test_file_upload_download_metadata_list_delete(make_hub: Any) -> None:
    hub = make_hub()
    payload = bytes(range(256)) * 10
    form = {"file": (io.BytesIO(payload), "report.bin"), "category": "reports", "metadata": json.dumps({"po": "PO-1"})}
    uploaded = hub.upload(data=form, content_type="multipart/form-data")
    assert (
        uploaded["size"] == len(payload)
        and uploaded["metadata"] == {"po": "PO-1"}
        and uploaded["category"] == "reports"
    )
    assert uploaded["checksum"] == hashlib.sha256(payload).hexdigest() and uploaded["provider"] == "local"
    content = hub.get(f"/files/{uploaded['fileId']}/content")
    assert content.data == payload and content.headers["Accept-Ranges"] == "bytes"
    assert content.headers["ETag"] == f'"{uploaded["checksum"]}"' and content.headers["Content-Length"] == str(
        len(payload)
    )
    assert hub.get(f"/files/{uploaded['fileId']}").get_json()["data"]["fileName"] == "report.bin"
    json_upload = hub.upload(json={"fileName": "notes.txt", "content": base64.b64encode(b"hello").decode()})
    assert json_upload["contentType"] == "text/plain"
    listed = hub.get("/files?category=reports").get_json()["data"]
    assert [item["fileId"] for item in listed["items"]] == [uploaded["fileId"]] and listed["total"] == 1
    deleted = hub.client.delete(f"{API}/files/{uploaded['fileId']}", headers=hub.headers).get_json()["data"]
    assert deleted["existedAtProvider"] is True
    hub.get(f"/files/{uploaded['fileId']}", status=404)
    assert not (Path(hub.manager.config["data_dir"]) / "files" / uploaded["fileKey"]).exists()


def test_raw_body_uploads_name_and_type_the_file_from_headers_and_query(make_hub: Any) -> None:
    hub = make_hub()
    pdf = b"%PDF-1.7\n" + b"x" * 200_000
    uploaded = hub.upload(
        data=pdf,
        headers={"Content-Type": "application/pdf", "X-File-Name": quote("Bon de commande n°7.pdf")},
        query_string={"category": "purchase-orders", "fileType": "document", "metadata": json.dumps({"po": "7"})},
    )
    assert (uploaded["fileName"], uploaded["contentType"], uploaded["size"]) == (
        "Bon de commande n°7.pdf",
        "application/pdf",
        len(pdf),
    )
    assert uploaded["fileKey"].startswith("demo/purchase-orders/") and uploaded["metadata"] == {"po": "7"}
    assert uploaded["fileType"] == "document" and uploaded["checksum"] == hashlib.sha256(pdf).hexdigest()
    # No declared type: sniffed from the bytes, whatever the name says.
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
    sniffed = hub.upload(
        data=png, headers={"Content-Type": "application/octet-stream"}, query_string={"fileName": "scan.dat"}
    )
    assert sniffed["contentType"] == "image/png"
    assert hub.manager.store.runtime.ledger.get(sniffed["fileId"], "demo").payload["sniffedType"] == "image/png"
    missing_name = hub.upload(422, data=b"abc", headers={"Content-Type": "text/plain"})
    assert "fileName" in missing_name["errors"]
    empty = hub.upload(422, data=b"", headers={"Content-Type": "text/plain"}, query_string={"fileName": "a.txt"})
    assert empty["errors"] == {"file": ["the file is empty"]}


def test_file_limits_answer_413_while_reading_and_check_the_sniffed_type(make_hub: Any) -> None:
    hub = make_hub(storage_limits={"max_file_size": 1000, "allowed_content_types": ["image/*", "application/pdf"]})
    multipart = {"file": (io.BytesIO(b"x" * 1001), "a.png")}
    too_big = hub.upload(413, data=multipart, content_type="multipart/form-data")
    assert too_big["errors"] == {"file": ["the file is over the limit of 1000 bytes"]}
    hub.upload(413, data=b"x" * 1001, headers={"Content-Type": "image/png"}, query_string={"fileName": "a.png"})
    hub.upload(413, json={"fileName": "a.png", "content": base64.b64encode(b"x" * 1100).decode()})
    # Past MAX_CONTENT_LENGTH (the multipart framing allowance): refused by the server before the view.
    huge = hub.upload(413, data={"file": (io.BytesIO(b"x" * 5000), "a.png")}, content_type="multipart/form-data")
    assert "file" in huge["errors"]

    # A chunked body announces no length: the limit stops it as it streams, after reading just past it.
    pulled: list[int] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            pulled.append(1)
            yield b"\x89PNG\r\n\x1a\n" + b"y" * 92

    chunked = {"wsgi.input": IteratorStream(chunks()), "wsgi.input_terminated": True}  # as gunicorn hands it over
    streamed = hub.client.post(
        f"{API}/files?fileName=a.png", environ_overrides=chunked, headers={**hub.headers, "Content-Type": "image/png"}
    )
    assert streamed.status_code == 413 and len(pulled) <= 12
    assert list(hub.manager.store.list("demo")[0]) == []

    wrong = hub.upload(422, data={"file": (io.BytesIO(b"x"), "a.txt")}, content_type="multipart/form-data")
    assert "contentType" in wrong["errors"]
    # Declared as an image, but the bytes are an executable: the sniffed type must be allowed too.
    disguised = hub.upload(
        422,
        data=b"MZ\x90\x00\x03" + b"\x00" * 300,
        headers={"Content-Type": "image/png"},
        query_string={"fileName": "cat.png"},
    )
    assert disguised["errors"]["contentType"] == ["the content is application/x-msdownload, not the declared image/png"]
    hub.upload(
        data={"file": (io.BytesIO(b"x"), "a.png")}, content_type="multipart/form-data"
    )  # no signature: the name decides


def test_downloads_stream_with_byte_ranges(make_hub: Any) -> None:
    hub = make_hub()
    data = bytes(range(256)) * 40  # 10240 bytes
    file = hub.upload(
        data=data, headers={"Content-Type": "application/octet-stream"}, query_string={"fileName": "data.bin"}
    )
    path = f"/files/{file['fileId']}/content"
    etag = f'"{file["checksum"]}"'

    def ranged(header: str, **extra: str) -> Any:
        return hub.client.get(f"{API}{path}", headers={**hub.headers, "Range": header, **extra})

    for header, first, last in (
        ("bytes=0-9", 0, 9),
        ("bytes=100-", 100, 10239),
        ("bytes=-16", 10224, 10239),
        ("bytes=10000-99999", 10000, 10239),
    ):
        response = ranged(header)
        assert response.status_code == 206, header
        assert response.data == data[first : last + 1]
        assert response.headers["Content-Range"] == f"bytes {first}-{last}/10240"
        assert response.headers["Content-Length"] == str(last - first + 1)
    unsatisfiable = ranged("bytes=10240-")
    assert unsatisfiable.status_code == 416 and unsatisfiable.headers["Content-Range"] == "bytes */10240"
    assert unsatisfiable.get_json()["success"] is False
    assert ranged("bytes=0-1,5-6").data == data  # several ranges: the whole file, 200
    assert ranged("bytes=0-1,5-6").status_code == 200
    assert ranged("bytes=0-3", **{"If-Range": etag}).status_code == 206
    stale = ranged("bytes=0-3", **{"If-Range": '"an-older-version"'})
    assert stale.status_code == 200 and stale.data == data
    head = hub.client.head(f"{API}{path}", headers=hub.headers)
    assert head.status_code == 200 and head.data == b"" and head.headers["Content-Length"] == "10240"

    # The Python API streams too: a file object in, a bounded stream out.
    source = io.BytesIO(data)
    uploaded = hub.manager.upload_file("copy.bin", source, size=len(data), tenant_id="demo")
    assert not source.closed and uploaded["size"] == len(data)
    with hub.manager.download_file(uploaded["fileId"], byte_range=(256, 511), tenant_id="demo") as download:
        assert download.length == 256 and download.stream.read() == data[256:512]
        assert download.file.checksum == hashlib.sha256(data).hexdigest()
    with pytest.raises(ValidationError, match="range"):
        hub.manager.download_file(uploaded["fileId"], byte_range=(0, 10240), tenant_id="demo")


def test_head_and_verify_ask_the_provider_what_it_holds(make_hub: Any) -> None:
    hub = make_hub()
    file = hub.upload(
        data=b"inventory,42\n", headers={"Content-Type": "text/csv"}, query_string={"fileName": "stock.csv"}
    )
    storage = hub.get(f"/files/{file['fileId']}?verify=true").get_json()["data"]["storage"]
    assert storage["exists"] and storage["intact"] and storage["size"] == 13 and storage["checksum"] == file["checksum"]
    assert storage["contentType"] == "text/csv" and storage["etag"] and storage["updatedAt"].endswith("Z")
    assert "storage" not in hub.get(f"/files/{file['fileId']}").get_json()["data"]
    on_disk = Path(hub.manager.config["data_dir"]) / "files" / file["fileKey"]
    on_disk.write_bytes(b"changed behind the hub's back")
    assert hub.get(f"/files/{file['fileId']}?verify=1").get_json()["data"]["storage"]["intact"] is False
    on_disk.unlink()
    assert hub.get(f"/files/{file['fileId']}?verify=true").get_json()["data"]["storage"] == {
        "exists": False,
        "intact": False,
    }
    assert hub.client.head(f"{API}/files/{file['fileId']}/content", headers=hub.headers).status_code == 404


def test_a_failed_try_replays_the_upload_from_its_first_byte(make_hub: Any) -> None:
    hub = make_hub({"flaky": {"type": "flaky-store", "fail_after": 100_000}}, {"fileStorage": {"providers": ["flaky"]}})
    flaky = hub.instance("flaky")
    data = bytes(range(256)) * 2000  # 512000 bytes: far past the kept head
    # A multipart part is spooled to a file: the retry reads it again from the start.
    uploaded = hub.upload(data={"file": (io.BytesIO(data), "big.bin")}, content_type="multipart/form-data")
    assert flaky.tries == [100_000, len(data)] and flaky.objects[uploaded["fileKey"]][0] == data
    assert uploaded["size"] == len(data) and uploaded["checksum"] == hashlib.sha256(data).hexdigest()

    # A large raw body read past its kept head cannot be read again: 503, nothing stored, the client sends it again.
    flaky.tries.clear()
    refused = hub.upload(
        503, data=data * 3, headers={"Content-Type": "application/octet-stream"}, query_string={"fileName": "big.bin"}
    )
    assert "cannot be read again" in refused["message"] and flaky.tries == [100_000]
    assert len(flaky.objects) == 1
    # ... but a small one can: a body up to 1 MiB is read whole, and one within the kept head is replayed from it.
    for small in (data, bytes(range(256)) * 100):
        flaky.tries.clear()
        kept = hub.upload(
            data=small, headers={"Content-Type": "application/octet-stream"}, query_string={"fileName": "small.bin"}
        )
        assert flaky.tries == [min(len(small), 100_000), len(small)] and flaky.objects[kept["fileKey"]][0] == small
    chunked = {"wsgi.input": IteratorStream(iter([small[:1000], small[1000:]])), "wsgi.input_terminated": True}
    flaky.tries.clear()
    response = hub.client.post(
        f"{API}/files?fileName=c.bin",
        environ_overrides=chunked,
        headers={**hub.headers, "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 201 and flaky.tries == [len(small), len(small)]


def test_failover_hands_the_next_provider_the_whole_upload(make_hub: Any) -> None:
    hub = make_hub(
        {
            "broken": {"type": "flaky-store", "fail_after": 70_000, "failures": 99, "error": "configuration"},
            "spare": {"type": "kit-memory"},
        },
        {"fileStorage": {"providers": ["broken", "spare"]}},
    )
    data = b"%PDF-1.7\n" + bytes(range(256)) * 1000
    uploaded = hub.upload(data={"file": (io.BytesIO(data), "po.pdf")}, content_type="multipart/form-data")
    assert uploaded["provider"] == "spare" and hub.instance("spare").objects[uploaded["fileKey"]][0] == data
    assert hub.instance("broken").tries == [70_000] and uploaded["contentType"] == "application/pdf"


def test_a_provider_that_swallows_the_stream_error_does_not_keep_the_file(make_hub: Any) -> None:
    hub = make_hub(
        {"swallowing": {"type": "kit-swallowing"}},
        {"fileStorage": {"providers": ["swallowing"]}},
        storage_limits={"max_file_size": 100_000},
    )
    # Chunked: no length announced, so the limit is only found while the provider reads.
    chunked = {"wsgi.input": IteratorStream(iter([b"z" * 50_000] * 3)), "wsgi.input_terminated": True}
    response = hub.client.post(
        f"{API}/files",
        environ_overrides=chunked,
        headers={**hub.headers, "Content-Type": "text/plain", "X-File-Name": "big.txt"},
    )
    assert response.status_code == 413
    assert response.get_json()["errors"] == {"file": ["the file is over the limit of 100000 bytes"]}
    assert hub.instance("swallowing").objects == {}  # it reported success; the core deleted what it kept
    records = hub.manager.store.runtime.ledger.list("demo", "file")
    assert [(record.status, record.error) for record in records] == [("failed", "File too large: over 100000 bytes")]


def test_idempotent_raw_upload_is_answered_once_without_reading_the_body_twice(make_hub: Any) -> None:
    hub = make_hub()
    body = b"R" * (2 * 1024 * 1024)  # larger than a fingerprinted body: described by its headers
    headers = {"Content-Type": "text/plain", "X-File-Name": "r.txt", "Idempotency-Key": "upload-1"}
    first = hub.upload(data=body, headers=headers)
    again = hub.client.post(f"{API}/files", data=body, headers={**hub.headers, **headers})
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["data"]["fileId"] == first["fileId"]
    other = hub.client.post(f"{API}/files", data=body[:-1], headers={**hub.headers, **headers})
    assert other.status_code == 422 and "Idempotency-Key" in other.get_json()["errors"]
    assert hub.manager.store.list("demo")[1] == 1


def test_direct_upload_through_a_presigned_url_is_confirmed_by_head(
    make_hub: Any, provider_harness: ProviderHarness
) -> None:
    with UploadEndpoint() as endpoint:
        hub = make_hub(
            {"signing": {"type": "signing-disk", "upload_base_url": endpoint.url, "secret": "s3cr3t"}},
            {"fileStorage": {"providers": ["signing"]}},
            storage_limits={
                "max_file_size": 50_000,
                "allowed_content_types": ["text/*", "application/pdf"],
                "url_expiry": 600,
            },
            tenants={"acme": {"services": {"fileStorage": {"providers": ["local"]}}}},
        )
        endpoint.disk = hub.instance("signing")
        started = hub.client.post(
            f"{API}/files/uploads",
            json={"fileName": "po.pdf", "contentType": "application/pdf", "size": 9, "metadata": {"po": "9"}},
            headers=hub.headers,
        )
        assert started.status_code == 201, started.get_json()
        upload = started.get_json()["data"]
        assert (
            upload["status"] == "awaiting_upload"
            and upload["upload"]["method"] == "PUT"
            and upload["upload"]["expiresAt"]
        )
        complete = f"{API}/files/uploads/{upload['uploadId']}/complete"
        early = hub.client.post(complete, headers=hub.headers)
        assert early.status_code == 409 and "Nothing was uploaded" in early.get_json()["message"]
        forged = requests.put(
            upload["upload"]["url"].replace("signature=", "signature=0"),
            data=b"%PDF-1.7\n",
            headers=upload["upload"]["headers"],
            timeout=10,
        )
        assert forged.status_code == 403
        sent = requests.put(
            upload["upload"]["url"], data=b"%PDF-1.7\n", headers=upload["upload"]["headers"], timeout=10
        )
        assert sent.status_code == 200
        done = hub.client.post(complete, headers=hub.headers)
        assert done.status_code == 201, done.get_json()
        file = done.get_json()["data"]
        assert (file["fileId"], file["size"], file["contentType"], file["metadata"]) == (
            upload["fileId"],
            9,
            "application/pdf",
            {"po": "9"},
        )
        assert file["checksum"] == hashlib.sha256(b"%PDF-1.7\n").hexdigest()
        assert hub.get(f"/files/{file['fileId']}/content").data == b"%PDF-1.7\n"
        assert (
            hub.client.post(complete, headers=hub.headers).get_json()["data"]["fileId"] == file["fileId"]
        )  # completing again: same answer

        # What arrived is checked, not what was announced: over the limit, or not an allowed type, it is deleted.
        for content, status in ((b"a" * 60_000, 413), (b"MZ\x90\x00" + b"\x00" * 100, 422)):
            started = hub.client.post(
                f"{API}/files/uploads",
                json={"fileName": "n.txt", "contentType": "text/plain", "size": 10},
                headers=hub.headers,
            ).get_json()["data"]
            assert requests.put(
                started["upload"]["url"], data=content, headers=started["upload"]["headers"], timeout=10
            ).ok
            refused = hub.client.post(f"{API}/files/uploads/{started['uploadId']}/complete", headers=hub.headers)
            assert refused.status_code == status, refused.get_json()
            with pytest.raises(NotFoundError):
                endpoint.disk.store_head(started["fileKey"])
        announced = hub.client.post(
            f"{API}/files/uploads", json={"fileName": "big.pdf", "size": 60_000}, headers=hub.headers
        )
        assert announced.status_code == 413
        # local-disk cannot presign: a tenant on it is told to upload through the hub.
        acme = {"Authorization": f"Bearer {hub.manager.tokens.create('acme', 't')[1]}", "X-Tenant-ID": "acme"}
        refused = hub.client.post(f"{API}/files/uploads", json={"fileName": "a.txt", "size": 3}, headers=acme)
        assert refused.status_code == 409 and "POST /files" in refused.get_json()["message"]

        # The kit's check_store uploads through the presigned URL too.
        provider_harness.add_provider_classes(SigningDisk)
        endpoint.disk = provider_harness.build("signing-disk", {"upload_base_url": endpoint.url, "secret": "kit"})
        check_store(provider_harness, endpoint.disk)


# --- the memory bound, measured on a real server ------------------------------------------------------

STREAMED_SIZE = 200 * MIB
#: Peak resident memory the hub's worker may gain while 200 MB pass through it, either way.
MEMORY_GROWTH_BOUND = 60 * MIB


class GeneratedBody:
    """``size`` bytes made as they are read (a repeated random block), with their SHA-256: an upload body that
    the client never holds whole. ``prefix``/``suffix`` frame it (a hand-made multipart body)."""

    def __init__(self, size: int, prefix: bytes = b"", suffix: bytes = b"") -> None:
        self.block = random.Random(7).randbytes(MIB)
        self.size = size
        self.parts = [prefix, suffix]
        self.position = -len(prefix)
        self.digest = hashlib.sha256()
        self.done = b""

    def __len__(self) -> int:
        return len(self.parts[0]) + self.size + len(self.parts[1])

    def read(self, wanted: int = 65536) -> bytes:
        if self.position < 0:
            prefix = self.parts[0][len(self.parts[0]) + self.position :][:wanted]
            self.position += len(prefix)
            return prefix
        if self.position >= self.size:
            suffix = self.parts[1][self.position - self.size :][:wanted]
            self.position += len(suffix)
            return suffix
        offset = self.position % MIB
        chunk = self.block[offset : offset + min(wanted, self.size - self.position, MIB - offset)]
        self.position += len(chunk)
        self.digest.update(chunk)
        return chunk


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return values


def _peak_growth(pid: int, action: Any) -> tuple[int, Any]:
    """How far the process's resident memory rose above where it stood while ``action`` ran."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    before = _memory(pid)["VmRSS"]
    result = action()
    return _memory(pid)["VmHWM"] - before, result


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS accounting")
def test_200_mb_streams_through_hub_serve_in_and_out_within_60_mb_of_memory(tmp_path: Path) -> None:
    folder = tmp_path / "site"
    folder.mkdir()
    config = yaml.safe_load((REPO / "hub.yaml").read_text())
    config["storage_limits"] = {"max_file_size": 300 * MIB}
    (folder / "hub.yaml").write_text(yaml.safe_dump(config))
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL", "HUB_CONFIG")}
    env["HUB_LOG_LEVEL"] = "WARNING"
    hub_command = [sys.executable, "-m", "hub.cli"]
    created = subprocess.run(
        [*hub_command, "token", "create", "--tenant", "demo"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert created.returncode == 0, created.stderr
    headers = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}", "X-Tenant-ID": "demo"}
    port = free_port()
    base = f"http://127.0.0.1:{port}{API}"
    with open(folder / "serve.log", "w") as log:
        server = subprocess.Popen(
            [*hub_command, "serve", "--port", str(port), "--workers", "1", "--job-workers", "0"],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        try:
            wait_for_port("127.0.0.1", port, timeout=60, process=server)
            session = requests.Session()
            # Warm up (imports, the database, the first request's caches), then measure the worker process.
            small = session.post(
                f"{base}/files",
                data=b"warm-up",
                headers={**headers, "Content-Type": "text/plain", "X-File-Name": "w.txt"},
                timeout=30,
            )
            assert small.status_code == 201, small.text
            assert (
                session.get(
                    f"{base}/files/{small.json()['data']['fileId']}/content", headers=headers, timeout=30
                ).content
                == b"warm-up"
            )
            children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
            assert len(children) == 1, children
            worker = int(children[0])

            def upload_raw() -> Any:
                body = GeneratedBody(STREAMED_SIZE)
                response = session.post(
                    f"{base}/files",
                    data=body,
                    headers={**headers, "Content-Type": "application/octet-stream", "X-File-Name": "big.bin"},
                    timeout=600,
                )
                assert response.status_code == 201, response.text
                return response.json()["data"], body.digest.hexdigest()

            def upload_multipart() -> Any:
                boundary = "hub-memory-test"
                prefix = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
                body = GeneratedBody(STREAMED_SIZE, prefix, f"\r\n--{boundary}--\r\n".encode())
                response = session.post(
                    f"{base}/files",
                    data=body,
                    headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                    timeout=600,
                )
                assert response.status_code == 201, response.text
                return response.json()["data"], body.digest.hexdigest()

            def download(file_id: str) -> Any:
                digest, size = hashlib.sha256(), 0
                with session.get(
                    f"{base}/files/{file_id}/content", headers=headers, stream=True, timeout=600
                ) as response:
                    assert response.status_code == 200
                    for chunk in response.iter_content(MIB):
                        digest.update(chunk)
                        size += len(chunk)
                return size, digest.hexdigest()

            growth: dict[str, int] = {}
            growth["raw upload"], (raw, sent) = _peak_growth(worker, upload_raw)
            assert raw["size"] == STREAMED_SIZE and raw["checksum"] == sent
            growth["download"], received = _peak_growth(worker, lambda: download(raw["fileId"]))
            assert received == (STREAMED_SIZE, sent)
            session.delete(f"{base}/files/{raw['fileId']}", headers=headers, timeout=30)
            growth["multipart upload"], (multipart, sent) = _peak_growth(worker, upload_multipart)
            assert multipart["size"] == STREAMED_SIZE and multipart["checksum"] == sent
            print(
                "peak RSS growth of the hub worker for 200 MB:",
                {name: f"{value / MIB:.1f} MB" for name, value in growth.items()},
            )
            assert all(value < MEMORY_GROWTH_BOUND for value in growth.values()), growth
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)


def test_openapi_describes_streamed_uploads_ranges_and_direct_uploads(make_hub: Any) -> None:
    from openapi_spec_validator import validate

    document = make_hub().client.get(f"{API}/openapi.json").get_json()
    validate(document)
    upload = document["paths"][f"{API}/files"]["post"]
    assert {"multipart/form-data", "application/octet-stream", "application/json"} <= set(
        upload["requestBody"]["content"]
    )
    assert {"X-File-Name", "fileName", "Idempotency-Key"} <= {parameter["name"] for parameter in upload["parameters"]}
    assert {"201", "400", "413"} <= set(upload["responses"])
    download = document["paths"][f"{API}/files/{{file_id}}/content"]["get"]
    assert {"Range", "If-Range"} <= {parameter["name"] for parameter in download["parameters"]}
    assert download["responses"]["206"]["headers"]["Content-Range"] and "416" in download["responses"]
    assert "*/*" in download["responses"]["200"]["content"]
    direct = document["paths"][f"{API}/files/uploads"]["post"]
    assert direct["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DirectUpload"
    }
    assert "201" in document["paths"][f"{API}/files/uploads/{{upload_id}}/complete"]["post"]["responses"]


# --- signed hub URLs, per-category limits, content sniffing, prefixes ----------------------------------------


def test_local_disk_files_get_a_signed_hub_url_refused_once_altered_or_expired(make_hub: Any) -> None:
    hub = make_hub()
    payload = b"%PDF-1.4\n" + bytes(range(256)) * 40
    uploaded = hub.upload(data=payload, headers={"Content-Type": "application/pdf", "X-File-Name": "invoice.pdf"})
    url = hub.get(f"/files/{uploaded['fileId']}").get_json()["data"]["downloadUrl"]
    assert url.startswith("http://localhost/api/integrations/files/") and "/download?token=" in url
    path = url.removeprefix("http://localhost")
    fetched = hub.client.get(path)  # no token, no tenant header: the URL is the credential
    assert fetched.status_code == 200 and fetched.data == payload
    part = hub.client.get(path, headers={"Range": "bytes=5-9"})
    assert part.status_code == 206 and part.data == payload[5:10]
    token = path.split("token=")[1]
    altered = hub.client.get(path.replace(token, token[:-2] + ("AA" if not token.endswith("AA") else "BB")))
    assert altered.status_code == 403 and "altered" in altered.get_json()["message"]
    other = hub.upload(data=b"%PDF-1.4 other", headers={"Content-Type": "application/pdf", "X-File-Name": "other.pdf"})
    swapped = hub.client.get(path.replace(uploaded["fileId"], other["fileId"]))
    assert swapped.status_code == 403  # a URL for one file opens no other
    store = hub.manager.store
    expired = store.signed_download(store.get(uploaded["fileId"], "demo"), -1)
    refused = hub.client.get(expired)
    assert refused.status_code == 403 and "expired" in refused.get_json()["message"]
    hub.client.delete(f"{API}/files/{uploaded['fileId']}", headers=hub.headers)
    assert hub.client.get(path).status_code == 404  # deleted: the URL dies with the file
    key_file = Path(hub.manager.config["data_dir"]) / "url-signing.key"
    assert key_file.stat().st_mode & 0o077 == 0  # the generated key is readable by its owner only


def test_each_category_may_have_its_own_size_limit_and_types(make_hub: Any) -> None:
    hub = make_hub(
        storage_limits={
            "max_file_size": 1000,
            "allowed_content_types": ["image/*", "application/pdf"],
            "categories": {"archives": {"max_file_size": 5000, "allowed_content_types": ["application/zip"]}},
        }
    )
    zipped = b"PK\x03\x04" + b"\x00" * 2000
    assert (
        hub.upload(
            data=zipped,
            headers={"Content-Type": "application/zip", "X-File-Name": "a.zip"},
            query_string={"category": "archives"},
        )["size"]
        == 2004
    )
    too_big = hub.upload(
        413, data=zipped, headers={"Content-Type": "application/zip", "X-File-Name": "a.zip"}
    )  # general: 1000
    assert too_big["success"] is False
    pdf = hub.upload(
        422,
        data=b"%PDF-1.4 x",
        headers={"Content-Type": "application/pdf", "X-File-Name": "a.pdf"},
        query_string={"category": "archives"},
    )
    assert "application/pdf is not accepted" in pdf["errors"]["contentType"][0]


@pytest.mark.parametrize(
    ("name", "declared", "content", "found"),
    [
        (
            "cat.png",
            None,
            b"%PDF-1.4 not a picture",
            "the content is application/pdf, not image/png, as its name 'cat.png' says",
        ),
        (
            "cat.png",
            "image/png",
            b"\xff\xd8\xff\xe0" + b"\x00" * 64,
            "the content is image/jpeg, not the declared image/png",
        ),
    ],
)
def test_content_that_is_not_what_its_type_or_name_says_is_refused_saying_what_was_found(
    make_hub: Any, name: str, declared: str | None, content: bytes, found: str
) -> None:
    hub = make_hub()
    headers = {"X-File-Name": name, "Content-Type": declared or "application/octet-stream"}
    assert hub.upload(422, data=content, headers=headers)["errors"]["contentType"] == [found]


def test_aliases_and_containers_are_not_mismatches(make_hub: Any) -> None:
    hub = make_hub()
    jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 64
    assert (
        hub.upload(data=jpeg, headers={"Content-Type": "image/jpg", "X-File-Name": "photo.jpg"})["contentType"]
        == "image/jpg"
    )
    assert (
        hub.upload(data=jpeg, headers={"Content-Type": "application/octet-stream", "X-File-Name": "photo.jpeg"})[
            "contentType"
        ]
        == "image/jpeg"
    )
    text = hub.upload(data=b"plain words", headers={"Content-Type": "text/plain", "X-File-Name": "notes.png"})
    assert text["contentType"] == "text/plain"  # nothing sniffed: the declared type stands


def test_files_list_by_key_prefix_within_the_tenant_only(make_hub: Any) -> None:
    hub = make_hub()
    invoice = hub.upload(
        data=b"%PDF-1.4 a",
        headers={"Content-Type": "application/pdf", "X-File-Name": "a.pdf"},
        query_string={"category": "invoices"},
    )
    hub.upload(
        data=b"%PDF-1.4 b",
        headers={"Content-Type": "application/pdf", "X-File-Name": "b.pdf"},
        query_string={"category": "reports"},
    )
    listed = hub.get("/files?prefix=invoices/").get_json()["data"]
    assert [item["fileId"] for item in listed["items"]] == [invoice["fileId"]] and listed["total"] == 1
    assert hub.get("/files?prefix=%25").get_json()["data"]["total"] == 0  # a LIKE wildcard is a plain character
    other = hub.manager.tokens.create("other", "store-tests")[1]
    foreign = hub.client.get(
        f"{API}/files?prefix=../demo/invoices/", headers={"Authorization": f"Bearer {other}", "X-Tenant-ID": "other"}
    )
    assert foreign.get_json()["data"]["total"] == 0


def test_files_a_failover_put_on_local_disk_move_back_to_the_first_provider_and_stay_downloadable(
    make_hub: Any,
) -> None:
    hub = make_hub(
        {"primary": {"type": "flaky-store", "fail_after": 1000, "failures": 2, "error": "transient"}},
        {"fileStorage": {"providers": ["primary", "local"]}},
    )
    primary = hub.instance("primary")
    data = b"%PDF-1.7\n" + bytes(range(256)) * 400
    spilled = hub.upload(
        data=data,
        headers={"Content-Type": "application/pdf", "X-File-Name": "po.pdf"},
        query_string={"category": "orders"},
    )
    assert spilled["provider"] == "local" and primary.objects == {}  # both tries failed: local disk took it
    assert hub.get(f"/files/{spilled['fileId']}/content").data == data
    assert hub.get("/files?provider=local").get_json()["data"]["total"] == 1

    store = hub.manager.store
    report = store.migrate()
    assert report == {"moved": [spilled["fileId"]], "failed": [], "remaining": 0}
    assert primary.objects[spilled["fileKey"]][0] == data
    moved = hub.get(f"/files/{spilled['fileId']}").get_json()["data"]
    assert moved["provider"] == "primary" and moved["checksum"] == spilled["checksum"]
    assert hub.get(f"/files/{spilled['fileId']}/content").data == data  # now read from the primary
    assert not (Path(hub.manager.config["data_dir"]) / "files" / spilled["fileKey"]).exists()  # the old copy went
    assert store.migrate() == {"moved": [], "failed": [], "remaining": 0}


def test_a_migration_stops_while_the_first_provider_is_still_down_and_loses_nothing(make_hub: Any) -> None:
    hub = make_hub(
        {"primary": {"type": "flaky-store", "fail_after": 10, "failures": 99, "error": "transient"}},
        {"fileStorage": {"providers": ["primary", "local"]}},
    )
    first = hub.upload(data=b"%PDF-1.4 one", headers={"Content-Type": "application/pdf", "X-File-Name": "one.pdf"})
    second = hub.upload(data=b"%PDF-1.4 two", headers={"Content-Type": "application/pdf", "X-File-Name": "two.pdf"})
    report = hub.manager.store.migrate()
    assert report["moved"] == [] and [failure["fileId"] for failure in report["failed"]] == [first["fileId"]]
    assert report["remaining"] == 2  # it stopped at the first failure instead of hammering a store that is down
    for uploaded, body in ((first, b"%PDF-1.4 one"), (second, b"%PDF-1.4 two")):
        assert hub.get(f"/files/{uploaded['fileId']}/content").data == body
        assert hub.get(f"/files/{uploaded['fileId']}").get_json()["data"]["provider"] == "local"


def test_hub_files_migrate_command(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hub.cli import main

    config = tmp_path / "hub.yaml"
    config.write_text(f"data_dir: {tmp_path / 'var'}\n")
    result = CliRunner().invoke(main, ["--config", str(config), "files", "migrate", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"moved": [], "failed": [], "remaining": 0}
