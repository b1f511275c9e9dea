"""hub-s3 against a real S3 API: moto in server mode on 127.0.0.1 (one per test session), driven by boto3.

Each test gets a bucket of its own, so tests never see each other's objects. moto does not check presigned
URLs' signatures or expiry, nor a presigned POST's conditions: the tests here check what the URLs carry and that
they upload and download, not that S3 would refuse them once expired or tampered with.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import hub_s3
import psutil
import pytest
import requests

from hub.capabilities import StoredFile, UploadStream
from hub.errors import (
    ConfigError,
    ConfigurationError,
    IncompleteUploadError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from hub.testing import ProviderHarness
from hub.testing.contracts import check_provider_class, run_contract
from hub.testing.rest import rest_hub
from hub.testing.servers import ServerProcess, moto_server
from hub.testing.transport import check_concurrent_use, check_transport_errors

MIB = 1024 * 1024
KEYS = {"region": "us-east-1", "access_key_id": "testing", "secret_access_key": "testing"}
#: S3's smallest part size: the tests' thresholds, so multipart shows with small files.
SMALL_PARTS = {"multipart_threshold": 5 * MIB, "multipart_chunksize": 5 * MIB, "max_concurrency": 2}
#: An S3 error document, which botocore reads the error code from.
S3_ERROR = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>KitFault</Code><Message>injected</Message></Error>"


@pytest.fixture(scope="session")
def moto() -> Iterator[ServerProcess]:
    server = moto_server().start()
    yield server
    server.stop()


def admin_client(server: ServerProcess) -> Any:
    """A boto3 client of the test's own, to look at the bucket behind the provider's back."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=server.url, config=Config(s3={"addressing_style": "path"}), **_boto_keys())


def _boto_keys() -> dict[str, str]:
    return {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(scope="session")
def admin(moto: ServerProcess) -> Any:
    return admin_client(moto)


@pytest.fixture
def bucket(admin: Any) -> str:
    name = f"hub-test-{uuid.uuid4().hex[:12]}"
    admin.create_bucket(Bucket=name)
    return name


def build(harness: ProviderHarness, server: ServerProcess, bucket: str, **settings: Any) -> Any:
    if "s3" not in harness.host.provider_types:
        harness.add_plugin(hub_s3, "s3")
    return harness.build("s3", {**KEYS, "endpoint_url": server.url, "bucket": bucket, **settings})


def stored_file(key: str, content_type: str = "application/octet-stream", size: int | None = None) -> StoredFile:
    return StoredFile(
        key=key,
        tenant=key.split("/", 1)[0],
        filename=key.rsplit("/", 1)[-1],
        content_type=content_type,
        category="docs",
        metadata={"orderId": "ORD-1", "note": "café ✓"},
        size=size,
    )


def new_key(name: str = "file.bin", tenant: str = "acme") -> str:
    return f"{tenant}/docs/{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}-{name}"


def generated(size: int, seed: str, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """``size`` pseudo-random bytes in chunks, never held whole."""
    produced = 0
    index = 0
    while produced < size:
        part = random.Random(f"{seed}-{index}").randbytes(min(chunk, size - produced))
        produced += len(part)
        index += 1
        yield part


def sha256_of(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def read_all(opened: Any) -> bytes:
    try:
        parts = []
        while chunk := opened.read(256 * 1024):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        opened.close()


def upload(harness: ProviderHarness, provider: Any, key: str, data: bytes, content_type: str = "text/plain") -> Any:
    with UploadStream(io.BytesIO(data), expected_size=len(data)) as stream:
        return harness.call(provider, "store", file=stored_file(key, content_type, len(data)), stream=stream)


# --- the conformance kit -------------------------------------------------------------------------------


def test_s3_provider_class_meets_the_contract() -> None:
    check_provider_class(hub_s3.S3Store)


def test_s3_meets_the_store_contract(provider_harness: ProviderHarness, moto: ServerProcess, bucket: str) -> None:
    provider = build(provider_harness, moto, bucket, **SMALL_PARTS)
    # The 16 MiB check file goes up in 5 MiB parts, two in flight and as many buffered: s3transfer and
    # botocore hold whole parts (and a copy while signing), hence a bound above the kit's default 8 MiB.
    results = run_contract(provider_harness, provider, memory_bound=24 * MIB)
    assert results["health"].ok, results["health"].message


def builder(harness: ProviderHarness) -> Any:
    """``build(url, timeout)`` for the kit's transport checks (keys no message may quote)."""
    if "s3" not in harness.host.provider_types:
        harness.add_plugin(hub_s3, "s3")
    keys = {"access_key_id": "AKIAKITCHECK0000", "secret_access_key": "kit-secret-value-0000"}
    return lambda url, timeout: harness.build(
        "s3", {"region": "us-east-1", **keys, "endpoint_url": url, "bucket": "kit-bucket", "timeout": timeout}
    )


def test_transport_errors_map_to_the_hubs_errors(provider_harness: ProviderHarness) -> None:
    """Down, too slow, dropped, 5xx, 429 with Retry-After, 401/403: a store of a small file each time."""

    def store_small(provider: Any) -> Any:
        return upload(provider_harness, provider, new_key("kit.txt"), b"transport check\n")

    raised = check_transport_errors(
        provider_harness,
        builder(provider_harness),
        call=store_small,
        error_body=S3_ERROR,
        error_content_type="application/xml",
    )
    assert all(not isinstance(error, NotFoundError) for error in raised.values())


def test_worker_threads_share_one_client(provider_harness: ProviderHarness, moto: ServerProcess, bucket: str) -> None:
    """The kit's check: many threads storing through one provider share its client and connection pool."""
    provider_harness.add_plugin(hub_s3, "s3")

    def store_one(provider: Any, number: int) -> bytes:
        key = new_key(f"thread-{number}.txt")
        upload(provider_harness, provider, key, f"call {number}\n".encode())
        return read_all(provider_harness.call(provider, "store_read", key=key, byte_range=None))

    def build_here(url: str, timeout: float) -> Any:
        return provider_harness.build("s3", {**KEYS, "endpoint_url": url, "bucket": bucket, "timeout": timeout})

    results = check_concurrent_use(provider_harness, build_here, moto.url, call=store_one)
    assert results == [f"call {number}\n".encode() for number in range(len(results))]


def test_concurrent_stores_on_one_provider(provider_harness: ProviderHarness, moto: ServerProcess, bucket: str) -> None:
    provider = build(provider_harness, moto, bucket, **SMALL_PARTS)
    keys = [new_key(f"parallel-{number}.bin") for number in range(8)]
    sizes = [1000 * (number + 1) for number in range(7)] + [6 * MIB]  # one of them multipart
    errors: list[BaseException] = []

    def store_one(number: int) -> None:
        try:
            data = b"".join(generated(sizes[number], f"parallel-{number}"))
            upload(provider_harness, provider, keys[number], data, "application/octet-stream")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=store_one, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    for number, key in enumerate(keys):
        got = read_all(provider_harness.call(provider, "store_read", key=key, byte_range=None))
        assert hashlib.sha256(got).hexdigest() == sha256_of(generated(sizes[number], f"parallel-{number}"))


# --- round trip, URLs, ranges ---------------------------------------------------------------------------


def test_upload_head_url_range_and_delete(provider_harness: ProviderHarness, moto: ServerProcess, bucket: str) -> None:
    provider = build(provider_harness, moto, bucket)
    key = new_key("report.csv")
    data = b"sku,qty\n" + b"".join(f"SKU-{i},{i}\n".encode() for i in range(2000))
    result = upload(provider_harness, provider, key, data, "text/csv")
    assert result.key == key and result.size == len(data) and result.checksum == hashlib.sha256(data).hexdigest()

    head = provider_harness.call(provider, "store_head", key=key)
    assert head.size == len(data) and head.content_type == "text/csv"
    assert head.metadata == {"orderId": "ORD-1", "note": "café ✓"}  # camelCase and non-ASCII survive S3
    assert head.checksum == hashlib.sha256(data).hexdigest()  # S3's ChecksumSHA256 of the single PUT
    assert head.etag == hashlib.md5(data).hexdigest()  # noqa: S324 - S3's ETag of a single PUT is an MD5
    assert head.updated_at is not None and head.updated_at.tzinfo is not None

    # What S3 itself holds: the hub's entries as object metadata, the SHA-256 as S3's own checksum.
    raw = admin_client(moto).head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert raw["Metadata"]["hub-tenant"] == "acme" and raw["Metadata"]["hub-category"] == "docs"
    assert raw["Metadata"]["hub-sha256"] == hashlib.sha256(data).hexdigest()  # known before the single PUT
    assert raw["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()

    url = provider_harness.call(provider, "store_url", key=key, expires_in=120)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["120"] and "X-Amz-Signature" in query
    fetched = requests.get(url, timeout=10)  # plain HTTP, no SDK
    assert fetched.status_code == 200 and fetched.content == data
    ranged = requests.get(url, headers={"Range": "bytes=8-17"}, timeout=10)
    assert ranged.status_code == 206 and ranged.content == data[8:18]

    for byte_range in ((0, 7), (8, 17), (len(data) - 5, None)):
        first, last = byte_range
        expected = data[first : None if last is None else last + 1]
        assert read_all(provider_harness.call(provider, "store_read", key=key, byte_range=byte_range)) == expected

    assert provider_harness.call(provider, "store_delete", key=key) is True
    assert provider_harness.call(provider, "store_delete", key=key) is False
    with pytest.raises(NotFoundError):
        provider_harness.call(provider, "store_head", key=key)
    with pytest.raises(NotFoundError):
        provider_harness.call(provider, "store_read", key=key, byte_range=None)


def test_presigned_put_binds_type_and_metadata(
    provider_harness: ProviderHarness, moto: ServerProcess, bucket: str
) -> None:
    provider = build(provider_harness, moto, bucket)
    key = new_key("direct.json")
    presigned = provider_harness.call(
        provider, "store_upload_url", file=stored_file(key, "application/json"), expires_in=300
    )
    assert presigned.method == "PUT" and presigned.headers["Content-Type"] == "application/json"
    signed = parse_qs(urlsplit(presigned.url).query)["X-Amz-SignedHeaders"][0].split(";")
    assert {"content-type", "x-amz-meta-hub-metadata", "x-amz-meta-hub-tenant"} <= set(signed)
    body = b'{"hello": "direct"}'
    assert requests.put(presigned.url, data=body, headers=presigned.headers, timeout=10).status_code == 200
    head = provider_harness.call(provider, "store_head", key=key)
    assert head.size == len(body) and head.content_type == "application/json"
    assert head.metadata == {"orderId": "ORD-1", "note": "café ✓"}

    # With the size known: a POST policy with the exact content-length-range and the same fields.
    sized = provider_harness.call(
        provider, "store_upload_url", file=stored_file(new_key("sized.json"), "application/json", 19), expires_in=60
    )
    assert sized.method == "POST" and sized.fields["Content-Type"] == "application/json"
    policy = base64.b64decode(sized.fields["policy"]).decode()
    assert '["content-length-range", 19, 19]' in policy and "x-amz-meta-hub-metadata" in policy
    assert sized.expires_at is not None


def test_a_prefix_is_put_before_every_key(provider_harness: ProviderHarness, moto: ServerProcess, bucket: str) -> None:
    provider = build(provider_harness, moto, bucket, prefix="hub/files/")
    key = new_key("prefixed.txt")
    upload(provider_harness, provider, key, b"under a prefix")
    listed = admin_client(moto).list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Key"] for item in listed] == [f"hub/files/{key}"]
    assert read_all(provider_harness.call(provider, "store_read", key=key, byte_range=(6, 6))) == b"a"
    assert f"/hub/files/{key}" in provider_harness.call(provider, "store_url", key=key, expires_in=60)


# --- multipart, verification, broken uploads -------------------------------------------------------------


def test_multipart_above_the_threshold(provider_harness: ProviderHarness, moto: ServerProcess, bucket: str) -> None:
    provider = build(provider_harness, moto, bucket, **SMALL_PARTS)
    size = 13 * MIB + 12345  # three parts: 5 + 5 + 3 MiB and a bit
    key = new_key("big.bin")
    calls: list[str] = []
    part_sizes: list[int] = []
    provider.client.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
    provider.client.meta.events.register(
        "before-parameter-build.s3.UploadPart", lambda params, **_: part_sizes.append(len(params["Body"]))
    )

    # A source giving short reads (as a request body does): the parts must still be full 5 MiB.
    def trickle() -> Iterator[bytes]:
        yield from generated(size, "multipart", chunk=100_000)

    with UploadStream(trickle()) as stream:
        provider_harness.call(provider, "store", file=stored_file(key, size=None), stream=stream)
    assert calls.count("UploadPart") == 3 and "CompleteMultipartUpload" in calls and "PutObject" not in calls

    raw = admin_client(moto).head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert raw["ETag"].strip('"').endswith("-3")
    assert part_sizes == [5 * MIB, 5 * MIB, 3 * MIB + 12345]

    head = provider_harness.call(provider, "store_head", key=key)
    assert head.size == size and head.checksum is None  # a composite checksum is not the file's SHA-256
    assert head.metadata == {"orderId": "ORD-1", "note": "café ✓"}
    opened = provider_harness.call(provider, "store_read", key=key, byte_range=None)
    assert sha256_of(iter(lambda: opened.read(MIB), b"")) == sha256_of(trickle())
    opened.close()
    middle = read_all(provider_harness.call(provider, "store_read", key=key, byte_range=(5 * MIB - 3, 5 * MIB + 2)))
    assert middle == b"".join(trickle())[5 * MIB - 3 : 5 * MIB + 3]


def test_an_interrupted_multipart_upload_leaves_nothing(
    provider_harness: ProviderHarness, moto: ServerProcess, bucket: str
) -> None:
    provider = build(provider_harness, moto, bucket, **SMALL_PARTS)
    admin = admin_client(moto)
    calls: list[str] = []
    part_sent = threading.Event()

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)
        if model.name == "UploadPart":
            part_sent.set()

    provider.client.meta.events.register("after-call.s3.*", record)
    existing = new_key("existing.bin")
    upload(provider_harness, provider, existing, b"the old version")

    def goes_away() -> Iterator[bytes]:
        """12 MiB of the 20 announced, then the client is gone -- once S3 has taken a part."""
        for number, chunk in enumerate(generated(12 * MIB, "broken")):
            if number * len(chunk) >= 11 * MIB:
                part_sent.wait(10)
            yield chunk

    broken = new_key("broken.bin")
    for key in (broken, existing):
        calls.clear()
        part_sent.clear()
        stream = UploadStream(goes_away(), expected_size=20 * MIB)
        with stream, pytest.raises(IncompleteUploadError):
            provider_harness.call(provider, "store", file=stored_file(key, size=20 * MIB), stream=stream)
        assert calls.count("UploadPart") >= 1 and "AbortMultipartUpload" in calls, calls
        assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(NotFoundError):
        provider_harness.call(provider, "store_head", key=broken)
    listed = [item["Key"] for item in admin.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert listed == [existing]
    assert read_all(provider_harness.call(provider, "store_read", key=existing, byte_range=None)) == b"the old version"


@pytest.mark.parametrize(("size", "checksum"), [(1000, "ChecksumSHA256"), (6 * MIB, "ChecksumCRC32")])
def test_a_checksum_s3_disagrees_with_deletes_the_object(
    provider_harness: ProviderHarness, moto: ServerProcess, bucket: str, size: int, checksum: str
) -> None:
    """moto keeps the checksum the client sent without checking it: the disagreement is injected into its
    answer, as a store that damaged the content would give it."""
    provider = build(provider_harness, moto, bucket, **SMALL_PARTS)
    seen: dict[str, str] = {}

    def corrupt(parsed: dict[str, Any], **_: Any) -> None:
        seen[checksum] = parsed.get(checksum)
        parsed[checksum] = "AAAAAA==" if checksum == "ChecksumCRC32" else base64.b64encode(bytes(32)).decode()

    provider.client.meta.events.register("after-call.s3.HeadObject", corrupt)
    key = new_key("mismatch.bin")
    with pytest.raises(TransientError, match="did not match"):
        upload(provider_harness, provider, key, b"".join(generated(size, "mismatch")))
    provider.client.meta.events.unregister("after-call.s3.HeadObject", corrupt)
    assert seen[checksum]  # S3 did report one: the single PUT's SHA-256, the parts' composite CRC32
    with pytest.raises(NotFoundError):
        provider_harness.call(provider, "store_head", key=key)


# --- errors: credentials, buckets, settings ------------------------------------------------------------------


@contextlib.contextmanager
def iam_checks(server: ServerProcess) -> Iterator[None]:
    """Make moto check every request's credentials against its IAM users (none exist: all refused)."""
    requests.post(f"{server.url}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()
    try:
        yield
    finally:
        requests.post(f"{server.url}/moto-api/reset-auth", data=b"inf", timeout=5).raise_for_status()


def test_rejected_credentials_are_a_configuration_error(
    provider_harness: ProviderHarness, moto: ServerProcess, bucket: str
) -> None:
    provider = build(provider_harness, moto, bucket, access_key_id="AKIAEXAMPLEKEY", secret_access_key="wrong-secret")
    with iam_checks(moto):
        with pytest.raises(ConfigurationError) as caught:
            upload(provider_harness, provider, new_key(), b"refused")
        with pytest.raises(ConfigurationError):
            provider_harness.call(provider, "store_read", key=new_key(), byte_range=None)
        health = provider_harness.call(provider, "health")
    assert caught.value.provider_code == "InvalidAccessKeyId"
    assert health.status == "error"
    for text in (caught.value.message, health.message):
        assert "wrong-secret" not in text and "AKIAEXAMPLEKEY" not in text


def test_a_missing_bucket_is_a_configuration_error_or_created(
    provider_harness: ProviderHarness, moto: ServerProcess
) -> None:
    name = f"hub-missing-{uuid.uuid4().hex[:10]}"
    provider = build(provider_harness, moto, name)
    with pytest.raises(ConfigurationError) as caught:
        upload(provider_harness, provider, new_key(), b"nowhere to go")
    assert caught.value.provider_code == "NoSuchBucket"
    health = provider_harness.call(provider, "health")
    assert health.status == "error" and name in health.message

    creating = build(provider_harness, moto, name, create_bucket=True)
    key = new_key()
    upload(provider_harness, creating, key, b"bucket made on first use")
    assert provider_harness.call(creating, "health").ok
    assert (
        read_all(provider_harness.call(provider, "store_read", key=key, byte_range=None)) == b"bucket made on first use"
    )


def test_metadata_s3_cannot_hold_is_refused_before_uploading(
    provider_harness: ProviderHarness, moto: ServerProcess, bucket: str
) -> None:
    provider = build(provider_harness, moto, bucket)
    file = stored_file(new_key())
    file.metadata = {"notes": "x" * 3000}
    stream = UploadStream(io.BytesIO(b"data"))
    with stream, pytest.raises(PermanentError, match="at most 2048") as caught:
        provider_harness.call(provider, "store", file=file, stream=stream)
    assert caught.value.status_code == 422 and stream.size == 0  # refused before reading
    assert admin_client(moto).list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_settings_are_validated_and_read_from_the_environment(
    provider_harness: ProviderHarness, moto: ServerProcess, bucket: str
) -> None:
    provider_harness.add_plugin(hub_s3, "s3")
    with pytest.raises(ConfigError, match="bucket"):
        provider_harness.build("s3", {**KEYS})
    with pytest.raises(ConfigError, match="bucket"):
        provider_harness.build("s3", {**KEYS, "bucket": "Not_A_Bucket"})
    with pytest.raises(ConfigError, match="multipart_chunksize"):
        provider_harness.build("s3", {**KEYS, "bucket": bucket, "multipart_chunksize": MIB})
    with pytest.raises(ConfigError, match="secret_access_key"):
        provider_harness.build("s3", {"bucket": bucket, "access_key_id": "AKIAONLY"})
    environ = {
        "S3_BUCKET": bucket,
        "AWS_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    provider = provider_harness.build("s3", {"endpoint_url": moto.url}, environ=environ)
    assert provider.bucket == bucket and provider.client.meta.region_name == "eu-west-1"
    config = provider.transfer_config()
    assert (config.multipart_threshold, config.multipart_chunksize, config.max_request_concurrency) == (
        8 * MIB,
        8 * MIB,
        4,
    )
    assert config.max_in_memory_upload_chunks == 4


# --- through the hub's REST API --------------------------------------------------------------------------------


def test_rest_upload_download_and_tenant_isolation(tmp_path: Path, moto: ServerProcess, bucket: str) -> None:
    settings = {"type": "s3", **KEYS, "endpoint_url": moto.url, "bucket": bucket}
    with rest_hub(
        tmp_path, plugins=[(hub_s3, "s3")], providers={"s3": settings}, services={"fileStorage": {"providers": ["s3"]}}
    ) as api:
        data = b"%PDF-1.4\n" + bytes(range(256)) * 400
        created = api.post(
            "/api/integrations/files?category=invoices",
            data=data,
            headers={"Content-Type": "application/pdf", "X-File-Name": "invoice.pdf"},
        )
        assert created.status_code == 201, created.get_json()
        file_id = created.get_json()["data"]["fileId"]

        meta = api.get(f"/api/integrations/files/{file_id}?verify=true")
        assert meta.status_code == 200, meta.get_json()
        view = meta.get_json()["data"]
        assert view["storage"]["intact"] is True and view["storage"]["checksum"] == hashlib.sha256(data).hexdigest()
        assert requests.get(view["downloadUrl"], timeout=10).content == data  # presigned, straight from S3

        ranged = api.get(f"/api/integrations/files/{file_id}/content", headers={"Range": "bytes=9-18"})
        assert ranged.status_code == 206 and ranged.data == data[9:19]

        other = {"Authorization": f"Bearer {api.hub.tokens.create('rival')[1]}", "X-Tenant-ID": "rival"}
        for method, path in (
            ("get", f"/api/integrations/files/{file_id}"),
            ("get", f"/api/integrations/files/{file_id}/content"),
            ("delete", f"/api/integrations/files/{file_id}"),
        ):
            answer = getattr(api.client, method)(path, headers=other)
            assert answer.status_code == 404, (method, path, answer.get_json())
        listed = api.client.get("/api/integrations/files", headers=other).get_json()["data"]
        assert listed["items"] == []

        # A direct upload: presigned at S3 for the owner, not completable by the other tenant.
        body = b"straight to S3, bypassing the hub\n"
        started = api.post(
            "/api/integrations/files/uploads",
            {"fileName": "direct.txt", "contentType": "text/plain", "size": len(body), "metadata": {"ref": "A-1"}},
        )
        assert started.status_code == 201, started.get_json()
        direct = started.get_json()["data"]
        assert direct["upload"]["method"] == "POST" and direct["fileKey"].startswith("demo/")
        sent = requests.post(
            direct["upload"]["url"],
            data=direct["upload"]["fields"],
            files={"file": ("direct.txt", body, "text/plain")},
            timeout=10,
        )
        assert sent.status_code in (200, 204), sent.text
        refused = api.client.post(f"/api/integrations/files/uploads/{direct['uploadId']}/complete", headers=other)
        assert refused.status_code == 404
        completed = api.post(f"/api/integrations/files/uploads/{direct['uploadId']}/complete")
        assert completed.status_code == 201, completed.get_json()
        assert completed.get_json()["data"]["checksum"] == hashlib.sha256(body).hexdigest()
        head = admin_client(moto).head_object(Bucket=bucket, Key=direct["fileKey"])
        assert head["Metadata"]["hub-tenant"] == "demo" and head["ContentType"] == "text/plain"
        api.client.delete(f"/api/integrations/files/{direct['uploadId']}", headers=api.headers)
        # Still there for its owner.
        assert api.get(f"/api/integrations/files/{file_id}/content").data == data
        deleted = api.client.delete(f"/api/integrations/files/{file_id}", headers=api.headers)
        assert deleted.status_code == 200 and deleted.get_json()["data"]["existedAtProvider"] is True
        assert admin_client(moto).list_objects_v2(Bucket=bucket).get("KeyCount") == 0


# --- memory ----------------------------------------------------------------------------------------------------


class PeakRss:
    """The process's peak resident set while the block runs, sampled every 10 ms (moto runs in its own process)."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._stop = threading.Event()
        self.baseline = self.peak = 0

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self.baseline = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def test_a_200_mb_upload_and_download_stay_under_100_mb_of_memory(
    provider_harness: ProviderHarness, moto: ServerProcess, bucket: str
) -> None:
    provider = build(provider_harness, moto, bucket)  # the defaults: 8 MiB parts, 4 at once
    size = 200 * MIB
    key = new_key("huge.bin")
    chunk = b"\xa5" * MIB  # the same chunk over and over: the test measures the provider, not a generator

    def source() -> Iterator[bytes]:
        for _ in range(size // MIB):
            yield chunk

    with PeakRss() as overall:
        with PeakRss() as uploading, UploadStream(source()) as stream:
            provider_harness.call(provider, "store", file=stored_file(key), stream=stream)
        assert stream.size == size
        opened = provider_harness.call(provider, "store_read", key=key, byte_range=None)
        digest = hashlib.sha256()
        while part := opened.read(256 * 1024):
            digest.update(part)
        opened.close()
    assert digest.hexdigest() == stream.checksum
    print(
        f"\npeak RSS growth: upload {uploading.growth / MIB:.1f} MiB, upload + download {overall.growth / MIB:.1f} MiB"
    )
    assert overall.growth < 100 * MIB, f"the upload and download grew RSS by {overall.growth / MIB:.0f} MiB"
    provider_harness.call(provider, "store_delete", key=key)


def test_rest_fails_over_to_local_disk_while_s3_is_down_then_migrates_back(
    tmp_path: Path, moto: ServerProcess, bucket: str
) -> None:
    """A second moto, stopped half-way: uploads then go to the local disk, and the earlier file's record still
    says it lives on S3 (a download is then a 503, not a wrong answer). Once S3 is back, ``hub files migrate``'s
    work moves the local file to S3, checksum-verified, and it stays downloadable throughout."""
    spare = moto_server().start()
    try:
        admin_client(spare).create_bucket(Bucket=bucket)
        settings = {"type": "s3", **KEYS, "endpoint_url": spare.url, "bucket": bucket, "timeout": 1}
        with rest_hub(
            tmp_path,
            plugins=[(hub_s3, "s3")],
            providers={"s3": settings, "local": {"type": "local-disk", "root": str(tmp_path / "files")}},
            services={"fileStorage": {"providers": ["s3", "local"]}},
        ) as api:
            headers = {"Content-Type": "text/plain", "X-File-Name": "notes.txt"}
            first = api.post("/api/integrations/files", data=b"to S3", headers=headers)
            assert first.status_code == 201 and first.get_json()["data"]["provider"] == "s3", first.get_json()
            spare.stop()
            second = api.post("/api/integrations/files", data=b"to the local disk", headers=headers)
            assert second.status_code == 201, second.get_json()
            assert second.get_json()["data"]["provider"] == "local"
            assert api.get(f"/api/integrations/files/{second.get_json()['data']['fileId']}/content").data == (
                b"to the local disk"
            )
            gone = api.get(f"/api/integrations/files/{first.get_json()['data']['fileId']}/content")
            assert gone.status_code == 503

            # S3 is back (moto keeps nothing across a restart: the bucket is made again).
            spare = moto_server(port=spare.port).start()
            admin_client(spare).create_bucket(Bucket=bucket)
            moved_id = second.get_json()["data"]["fileId"]
            report = api.hub.store.migrate()
            assert report["moved"] == [moved_id] and report["failed"] == [], report
            moved = api.get(f"/api/integrations/files/{moved_id}").get_json()["data"]
            assert moved["provider"] == "s3"
            assert api.get(f"/api/integrations/files/{moved_id}/content").data == b"to the local disk"
            key = second.get_json()["data"]["fileKey"]
            assert admin_client(spare).get_object(Bucket=bucket, Key=key)["Body"].read() == b"to the local disk"
            assert not (tmp_path / "files" / key).exists()  # the local copy went
    finally:
        spare.stop()
