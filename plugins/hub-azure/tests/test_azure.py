"""hub-azure against Azurite on 127.0.0.1 (see conftest.py), with the official azure-storage-blob SDK."""

from __future__ import annotations

import base64
import hashlib
import io
import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import hub_azure
import psutil
import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from hub.capabilities import StoredFile, UploadStream
from hub.errors import ConfigError, ConfigurationError, IncompleteUploadError, NotFoundError, TransientError
from hub.testing import ProviderHarness
from hub.testing.contracts import check_provider_class, run_contract
from hub.testing.rest import rest_hub
from hub.testing.transport import Fault, FaultServer, check_concurrent_use, check_transport_errors

API = "/api/integrations"
MIB = 1024 * 1024
TENANT = "acme"


def settings(azurite: Any, container: str, **overrides: Any) -> dict[str, Any]:
    return {"connection_string": azurite.connection_string, "container": container, **overrides}


@pytest.fixture
def harness(provider_harness: ProviderHarness) -> ProviderHarness:
    provider_harness.add_plugin(hub_azure, "hub-azure")
    return provider_harness


def stored_file(key: str, content_type: str = "application/octet-stream", **fields: Any) -> StoredFile:
    return StoredFile(
        key=key,
        tenant=key.split("/")[0],
        filename=key.rsplit("/", 1)[-1],
        content_type=content_type,
        category=key.split("/")[1],
        **fields,
    )


def new_key(name: str, tenant: str = TENANT) -> str:
    return f"{tenant}/reports/{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}-{name}"


def generated(size: int, seed: str, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """``size`` pseudo-random bytes in chunks, never held whole."""
    produced = 0
    index = 0
    while produced < size:
        part = random.Random(f"{seed}-{index}").randbytes(min(chunk, size - produced))
        produced += len(part)
        index += 1
        yield part


def digest_of(chunks: Iterator[bytes], kind: str = "sha256") -> str:
    digest = hashlib.new(kind)
    for part in chunks:
        digest.update(part)
    return digest.hexdigest()


def store(harness: ProviderHarness, provider: Any, key: str, data: bytes, content_type: str = "text/plain", **kw: Any):
    with UploadStream(io.BytesIO(data), expected_size=len(data)) as stream:
        return harness.call(provider, "store", file=stored_file(key, content_type, size=len(data), **kw), stream=stream)


def read_all(harness: ProviderHarness, provider: Any, key: str, byte_range: Any = None) -> bytes:
    opened = harness.call(provider, "store_read", key=key, byte_range=byte_range)
    try:
        return b"".join(iter(lambda: opened.read(64 * 1024), b""))
    finally:
        opened.close()


def blob_client(azurite: Any, container: str, key: str) -> Any:
    return azurite.service().get_blob_client(container, key)


# --- the kit ---------------------------------------------------------------------------------------


def test_provider_class_meets_the_kit() -> None:
    check_provider_class(hub_azure.AzureBlobStore)


def test_store_contract(harness: ProviderHarness, azurite: Any, container: str) -> None:
    # Small blocks so the kit's 16 MiB stream goes up as staged blocks within its 8 MiB memory bound.
    provider = harness.build(
        "azure-blob",
        settings(azurite, container, max_block_size=1 * MIB, max_single_put_size=1 * MIB, max_concurrency=2),
    )
    results = run_contract(harness, provider)
    assert results["health"].status == "success"


def build_at(harness: ProviderHarness, connection_string_for: Any, container: str = "kit"):
    return lambda url, timeout: harness.build(
        "azure-blob",
        {"connection_string": connection_string_for(url), "container": container, "timeout": timeout},
    )


def store_small(harness: ProviderHarness):
    def call(provider: Any) -> Any:
        return store(harness, provider, new_key("small.txt", "transport-checks"), b"hello azure\n")

    return call


def test_transport_errors(harness: ProviderHarness, dev_connection_string: Any) -> None:
    raised = check_transport_errors(
        harness, build_at(harness, dev_connection_string), call=store_small(harness), timeout=0.4
    )
    assert all(error.provider_code for error in raised.values() if hasattr(error, "provider_code"))


def test_concurrent_use(harness: ProviderHarness, azurite: Any, container: str) -> None:
    def call(provider: Any, number: int) -> bytes:
        key = new_key(f"concurrent-{number}.txt")
        body = f"call {number}\n".encode() * 50
        store(harness, provider, key, body)
        assert read_all(harness, provider, key) == body
        return body

    results = check_concurrent_use(
        harness, build_at(harness, azurite.connection_string_for, container), azurite.url, call=call
    )
    assert len(set(results)) == len(results)


# --- the round trip --------------------------------------------------------------------------------


def test_upload_head_presigned_url_range_and_delete(harness: ProviderHarness, azurite: Any, container: str) -> None:
    provider = harness.build("azure-blob", settings(azurite, container, prefix="hub/"))
    key = new_key("Relevé n°7.csv")
    body = b"sku,qty\n" + b"".join(f"SKU-{n},{n}\n".encode() for n in range(2000))
    result = store(harness, provider, key, body, "text/csv", metadata={"po-number": "PO-7", "uploadedBy": "zoë"})
    assert result.key == key and result.size == len(body) and result.checksum == hashlib.sha256(body).hexdigest()

    head = harness.call(provider, "store_head", key=key)
    assert (head.size, head.content_type, head.checksum) == (len(body), "text/csv", hashlib.sha256(body).hexdigest())
    assert head.metadata == {"po-number": "PO-7", "uploadedBy": "zoë"} and head.etag and head.updated_at
    # As Azure holds it: under the prefix, the hub's fields as metadata, the whole file's MD5 (Put Blob).
    properties = blob_client(azurite, container, f"hub/{key}").get_blob_properties()
    assert properties.metadata["tenant"] == TENANT and properties.metadata["category"] == "reports"
    assert properties.metadata["filename"].endswith("Relev%C3%A9%20n%C2%B07.csv")
    assert bytes(properties.content_settings.content_md5) == hashlib.md5(body).digest()
    assert provider.content_md5(key) == hashlib.md5(body).digest()

    # The SAS URL, fetched with plain requests: whole, and a range.
    url = harness.call(provider, "store_url", key=key, expires_in=60)
    assert url.startswith(f"{azurite.url}/{azurite.account_name}/{container}/hub/") and "sig=" in url
    fetched = requests.get(url, timeout=10)
    assert fetched.status_code == 200 and fetched.content == body
    assert fetched.headers["Content-Type"] == "text/csv"
    partial = requests.get(url, headers={"Range": "bytes=8-20"}, timeout=10)
    assert partial.status_code == 206 and partial.content == body[8:21]

    assert read_all(harness, provider, key, (8, 20)) == body[8:21]
    assert read_all(harness, provider, key, (len(body) - 5, None)) == body[-5:]
    assert read_all(harness, provider, key) == body

    assert harness.call(provider, "store_delete", key=key) is True
    assert requests.get(url, timeout=10).status_code == 404
    with pytest.raises(NotFoundError):
        harness.call(provider, "store_head", key=key)
    with pytest.raises(NotFoundError):
        harness.call(provider, "store_read", key=key, byte_range=None)
    assert harness.call(provider, "store_delete", key=key) is False


def test_azurite_enforces_the_sas(harness: ProviderHarness, azurite: Any, container: str) -> None:
    provider = harness.build("azure-blob", settings(azurite, container))
    key = new_key("signed.txt")
    store(harness, provider, key, b"only with a valid signature\n")
    url = harness.call(provider, "store_url", key=key, expires_in=60)
    assert requests.get(url, timeout=10).status_code == 200

    # Tampered: another signature, or a later expiry than the one signed.
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    forged_sig = {**query, "sig": base64.b64encode(b"x" * 32).decode()}
    later = {**query, "se": "2099-01-01T00:00:00Z"}
    for tampered in (forged_sig, later):
        response = requests.get(urlunsplit(parts._replace(query=urlencode(tampered))), timeout=10)
        assert response.status_code == 403, response.text[:300]
    # Anonymous (no SAS at all): the container is private.
    assert requests.get(urlunsplit(parts._replace(query="")), timeout=10).status_code in (403, 404)
    # A read SAS does not let anyone write.
    assert (
        requests.put(url, data=b"overwritten", headers={"x-ms-blob-type": "BlockBlob"}, timeout=10).status_code == 403
    )

    # Expired: valid for 1 s.
    short = harness.call(provider, "store_url", key=key, expires_in=1)
    time.sleep(2.1)  # SAS expiry has a resolution of one second
    expired = requests.get(short, timeout=10)
    assert expired.status_code == 403, expired.text[:300]
    assert read_all(harness, provider, key) == b"only with a valid signature\n"


def test_presigned_upload_creates_the_blob_with_plain_requests(
    harness: ProviderHarness, azurite: Any, container: str
) -> None:
    provider = harness.build("azure-blob", settings(azurite, container))
    key = new_key("direct.pdf")
    body = b"%PDF-1.7\n" + b"0" * 5000
    file = stored_file(key, "application/pdf", size=len(body), metadata={"po": "9"})
    upload = harness.call(provider, "store_upload_url", file=file, expires_in=300)
    assert upload.method == "PUT" and upload.headers["x-ms-blob-type"] == "BlockBlob"
    assert upload.headers["Content-Type"] == "application/pdf" and upload.expires_at is not None
    response = requests.put(upload.url, data=body, headers=upload.headers, timeout=10)
    assert response.status_code == 201, response.text[:300]
    head = harness.call(provider, "store_head", key=key)
    assert (head.size, head.content_type, head.metadata) == (len(body), "application/pdf", {"po": "9"})
    assert head.checksum is None  # the hub never saw the bytes: no SHA-256 to keep
    # The upload SAS only creates and writes: it cannot read, and a tampered one cannot write.
    assert requests.get(upload.url, timeout=10).status_code == 403
    parts = urlsplit(upload.url)
    query = {**dict(parse_qsl(parts.query)), "sp": "rcw"}
    tampered = urlunsplit(parts._replace(query=urlencode(query)))
    assert requests.put(tampered, data=b"x", headers=upload.headers, timeout=10).status_code == 403


# --- blocks ----------------------------------------------------------------------------------------


def block_settings(azurite: Any, container: str, **overrides: Any) -> dict[str, Any]:
    return settings(
        azurite, container, max_block_size=1 * MIB, max_single_put_size=1 * MIB, max_concurrency=3, **overrides
    )


def test_large_upload_goes_up_in_staged_blocks_and_one_commit(
    harness: ProviderHarness, azurite: Any, container: str
) -> None:
    provider = harness.build("azure-blob", block_settings(azurite, container))
    key = new_key("blocks.bin")
    size = 5 * MIB + 12_345
    with UploadStream(generated(size, key)) as stream:
        harness.call(provider, "store", file=stored_file(key), stream=stream)
    committed, uncommitted = blob_client(azurite, container, key).get_block_list("all")
    assert [block.size for block in committed] == [MIB] * 5 + [12_345] and uncommitted == []
    upload_id = committed[0].id.split("-")[0]  # one attempt's ids: <upload id>-<index>, all of one length
    assert [block.id for block in committed] == [f"{upload_id}-{index:06d}" for index in range(6)]
    head = harness.call(provider, "store_head", key=key)
    # The core's SHA-256 went into the commit itself, with the content type and the whole file's MD5.
    assert head.size == size and head.checksum == digest_of(generated(size, key))
    assert provider.content_md5(key) == bytes.fromhex(digest_of(generated(size, key), "md5"))
    opened = harness.call(provider, "store_read", key=key, byte_range=None)
    assert digest_of(iter(lambda: opened.read(300_000), b"")) == head.checksum
    opened.close()
    middle = read_all(harness, provider, key, (MIB - 3, 2 * MIB + 2))
    assert middle == b"".join(generated(size, key))[MIB - 3 : 2 * MIB + 3]


class BreaksOff(io.RawIOBase):
    """A client that goes away after ``after`` bytes (the stream raises, as a dropped request body does)."""

    def __init__(self, chunks: Iterator[bytes], after: int) -> None:
        self.chunks = chunks
        self.left = after
        self.pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.pending:
            if self.left <= 0:
                raise ConnectionResetError("the client went away")
            self.pending = next(self.chunks, b"")[: self.left]
            self.left -= len(self.pending)
        count = min(len(buffer), len(self.pending))
        buffer[:count] = self.pending[:count]
        self.pending = self.pending[count:]
        return count


def test_an_interrupted_upload_commits_nothing(harness: ProviderHarness, azurite: Any, container: str) -> None:
    provider = harness.build("azure-blob", block_settings(azurite, container))
    size = 6 * MIB
    broken_at = int(2.5 * MIB)  # past two whole blocks

    def broken_upload(key: str) -> None:
        source = BreaksOff(generated(size, key), broken_at)
        with UploadStream(source, expected_size=size) as stream, pytest.raises(IncompleteUploadError):
            harness.call(provider, "store", file=stored_file(key, size=size), stream=stream)

    # A new key: nothing is visible, not even in a listing, and the staged blocks were dropped (deleting an
    # uncommitted blob removes them; left alone, Azure would collect them after 7 days, Azurite never).
    key = new_key("broken.bin")
    broken_upload(key)
    with pytest.raises(NotFoundError):
        harness.call(provider, "store_head", key=key)
    with pytest.raises(NotFoundError):
        harness.call(provider, "store_read", key=key, byte_range=None)
    client = blob_client(azurite, container, key)
    listed = azurite.service().get_container_client(container).list_blobs(include=["uncommittedblobs"])
    assert [blob.name for blob in listed] == []
    with pytest.raises(ResourceNotFoundError):
        client.get_block_list("all")

    # An existing blob stays exactly as it was (content, metadata, ETag); the broken upload's blocks stay
    # staged, invisible, until the next commit under the key discards them.
    # (The first version goes up in blocks: its commit also drops the records Azurite keeps of the blocks
    # dropped above -- an Azurite quirk: they reappear in the block list of a blob later Put under the name.)
    first_size = 2 * MIB + 1
    with UploadStream(generated(first_size, "first")) as stream:
        harness.call(provider, "store", file=stored_file(key), stream=stream)
    assert client.get_block_list("uncommitted")[1] == []
    before = harness.call(provider, "store_head", key=key)
    broken_upload(key)
    after = harness.call(provider, "store_head", key=key)
    assert (after.etag, after.size, after.checksum, after.metadata) == (
        before.etag,
        before.size,
        before.checksum,
        before.metadata,
    )
    assert read_all(harness, provider, key) == b"".join(generated(first_size, "first"))
    committed, uncommitted = client.get_block_list("all")
    # One or two: a block still queued when the stream broke is never sent.
    assert 1 <= len(uncommitted) <= 2 and {block.size for block in uncommitted} == {MIB}
    size = 2 * MIB + 10  # the retry, in blocks: its commit drops the leftovers
    with UploadStream(generated(size, "retry")) as stream:
        harness.call(provider, "store", file=stored_file(key), stream=stream)
    committed, uncommitted = client.get_block_list("all")
    assert [block.size for block in committed] == [MIB, MIB, 10] and uncommitted == []


def test_azure_refuses_a_block_whose_md5_does_not_match(azurite: Any, container: str) -> None:
    """What validate_content relies on: Azure (here Azurite) checks each block's Content-MD5."""

    client = blob_client(azurite, container, "md5/check.bin")
    block_id = base64.b64encode(b"block-000001").decode()
    with pytest.raises(HttpResponseError) as refused:
        client.stage_block(
            block_id,
            b"the bytes sent",
            headers={"Content-MD5": base64.b64encode(hashlib.md5(b"other").digest()).decode()},
        )
    # Azure's code is Md5Mismatch; Azurite's is InvalidOperation ("Provided contentMD5 doesn't match").
    assert refused.value.status_code == 400 and refused.value.error_code in ("Md5Mismatch", "InvalidOperation")
    mapped = hub_azure.AzureBlobStore._provider_error(object.__new__(hub_azure.AzureBlobStore), refused.value)
    assert isinstance(mapped, TransientError) and mapped.provider_code == "Md5Mismatch"


def test_an_md5_azure_reports_differently_deletes_the_blob(
    harness: ProviderHarness, azurite: Any, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.storage.blob import BlobClient

    provider = harness.build("azure-blob", settings(azurite, container))
    upload_blob = BlobClient.upload_blob

    def damaged_on_the_way(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        answer = dict(upload_blob(self, *args, **kwargs))
        answer["content_md5"] = bytearray(hashlib.md5(b"something else").digest())
        return answer

    monkeypatch.setattr(BlobClient, "upload_blob", damaged_on_the_way)
    key = new_key("damaged.txt")
    with pytest.raises(TransientError, match="MD5"):
        store(harness, provider, key, b"these bytes\n")
    monkeypatch.undo()
    with pytest.raises(NotFoundError):
        harness.call(provider, "store_head", key=key)


def test_a_download_notices_the_blob_changing_or_going_under_it(
    harness: ProviderHarness, azurite: Any, container: str
) -> None:
    provider = harness.build("azure-blob", settings(azurite, container, download_chunk_size=64 * 1024))
    key = new_key("moving.bin")
    first = b"a" * (512 * 1024)
    store(harness, provider, key, first)
    opened = harness.call(provider, "store_read", key=key, byte_range=None)
    assert opened.read(64 * 1024) == first[: 64 * 1024]  # the first range is in
    store(harness, provider, key, b"b" * (512 * 1024))
    with pytest.raises(TransientError, match="overwritten"):
        while opened.read(64 * 1024):
            pass
    opened.close()
    opened = harness.call(provider, "store_read", key=key, byte_range=None)
    opened.read(1000)
    harness.call(provider, "store_delete", key=key)
    with pytest.raises((NotFoundError, TransientError)):  # Azure: 404; Azurite: 412 (If-Match on a deleted blob)
        while opened.read(64 * 1024):
            pass
    opened.close()


def test_a_block_the_service_refuses_stops_the_upload_before_any_commit(
    harness: ProviderHarness, dev_connection_string: Any
) -> None:
    with FaultServer(
        Fault(status=503, headers={"Retry-After": "3"}, body=b"", content_type="application/xml")
    ) as server:
        provider = harness.build(
            "azure-blob",
            {
                "connection_string": dev_connection_string(server.url),
                "container": "files",
                "max_block_size": 256 * 1024,
                "max_single_put_size": 256 * 1024,
                "max_concurrency": 2,
                "timeout": 2,
            },
        )
        size = 8 * MIB
        with UploadStream(generated(size, "refused")) as stream:
            with pytest.raises(TransientError) as refused:
                harness.call(provider, "store", file=stored_file(new_key("refused.bin")), stream=stream)
            assert stream.size < size  # it stopped reading once a block failed
        assert refused.value.retry_after == 3
        sent = server.received()
        queries = [urlsplit(request.path).query for request in sent]
        assert any("comp=block&" in query or query.startswith("comp=block") for query in queries)
        assert not any("comp=blocklist" in query for query in queries)  # never committed
        assert len([query for query in queries if "comp=block" in query]) <= 2 + 2  # at most the blocks in flight


# --- configuration and errors ----------------------------------------------------------------------


def test_a_missing_container_is_a_configuration_error_unless_created(harness: ProviderHarness, azurite: Any) -> None:
    name = f"absent-{uuid.uuid4().hex[:12]}"
    provider = harness.build("azure-blob", settings(azurite, name))
    key = new_key("a.txt")
    with pytest.raises(ConfigurationError, match="does not exist") as missing:
        store(harness, provider, key, b"x")
    assert missing.value.provider_code == "ContainerNotFound"
    for hook, arguments in (("store_head", {}), ("store_read", {"byte_range": None}), ("store_delete", {})):
        with pytest.raises(ConfigurationError):
            harness.call(provider, hook, key=key, **arguments)
    health = harness.call(provider, "health")
    assert health.status == "error" and "does not exist" in health.message

    creating = harness.build("azure-blob", settings(azurite, name, create_container=True))
    store(harness, creating, key, b"created\n")
    assert read_all(harness, provider, key) == b"created\n"
    azurite.service().delete_container(name)


def test_settings_come_from_hub_yaml_or_the_environment(harness: ProviderHarness, azurite: Any) -> None:
    with pytest.raises(ConfigError, match="connection_string"):
        harness.build("azure-blob", {"container": "files"}, environ={})
    with pytest.raises(ConfigError, match="account_key"):
        harness.build("azure-blob", {"container": "files", "account_name": "myaccount"}, environ={})
    with pytest.raises(ConfigError, match="container"):
        harness.build("azure-blob", {"connection_string": azurite.connection_string, "container": "Bad_Name"})
    with pytest.raises(ConfigError, match="AZURE_STORAGE_CONTAINER"):
        harness.build("azure-blob", {"connection_string": azurite.connection_string}, environ={})
    with pytest.raises(ConfigError, match="download_chunk_size"):
        harness.build("azure-blob", settings(azurite, "files", download_chunk_size=8 * MIB))
    environ = {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string, "AZURE_STORAGE_CONTAINER": "files"}
    provider = harness.build("azure-blob", {}, environ=environ)
    assert provider.settings["container"] == "files" and provider.settings["max_block_size"] == 4 * MIB
    # Account name and key, with the account URL (Azurite's path-style URL here).
    keyed = harness.build(
        "azure-blob",
        {"account_url": f"{azurite.url}/{azurite.account_name}", "container": "files"},
        environ={"AZURE_STORAGE_ACCOUNT": azurite.account_name, "AZURE_STORAGE_KEY": azurite.account_key},
    )
    azurite.service().create_container("files")
    try:
        key = new_key("keyed.txt")
        store(harness, keyed, key, b"signed with the key\n")
        assert requests.get(harness.call(keyed, "store_url", key=key, expires_in=30), timeout=10).ok
        assert read_all(harness, provider, key) == b"signed with the key\n"
    finally:
        azurite.service().delete_container("files")


def test_rejected_credentials_are_a_configuration_error_without_the_key(
    harness: ProviderHarness, azurite: Any, container: str
) -> None:
    wrong_key = base64.b64encode(b"not the account key" * 3).decode()
    wrong = azurite.connection_string.replace(azurite.account_key, wrong_key)
    provider = harness.build("azure-blob", settings(azurite, container, connection_string=wrong))
    with pytest.raises(ConfigurationError) as refused:
        store(harness, provider, new_key("a.txt"), b"x")
    assert refused.value.provider_code in ("AuthorizationFailure", "AuthenticationFailed", "403")
    assert wrong_key not in str(refused.value) and "sig=" not in str(refused.value)
    health = harness.call(provider, "health")
    assert health.status == "error" and wrong_key not in health.message


# --- through the hub's REST API --------------------------------------------------------------------


def test_tenants_cannot_read_sign_or_delete_each_others_files(tmp_path: Any, azurite: Any, container: str) -> None:
    with rest_hub(
        tmp_path,
        plugins=[(hub_azure, "hub-azure")],
        providers={"azure": {"type": "azure-blob", **settings(azurite, container)}},
        services={"fileStorage": {"providers": ["azure"]}},
    ) as api:
        body = b"tenant demo's invoice\n"
        uploaded = api.post(
            f"{API}/files", data=body, headers={"Content-Type": "text/plain", "X-File-Name": "invoice.txt"}
        )
        assert uploaded.status_code == 201, uploaded.get_json()
        file = uploaded.get_json()["data"]
        assert file["provider"] == "azure" and file["fileKey"].startswith("demo/")
        path = f"{API}/files/{file['fileId']}"
        view = api.get(path).get_json()["data"]
        assert requests.get(view["downloadUrl"], timeout=10).content == body  # signed by Azure, not the hub
        assert api.get(f"{path}/content", headers={"Range": "bytes=7-12"}).data == body[7:13]

        token = api.hub.tokens.create("other")[1]
        other = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "other"}
        assert api.client.get(path, headers=other).status_code == 404  # no metadata, no download URL
        assert api.client.get(f"{path}/content", headers=other).status_code == 404
        assert api.client.delete(path, headers=other).status_code == 404
        assert api.client.get(f"{API}/files", headers=other).get_json()["data"]["items"] == []
        assert blob_client(azurite, container, file["fileKey"]).exists()

        deleted = api.client.delete(path, headers=api.headers)
        assert deleted.status_code == 200 and deleted.get_json()["data"]["existedAtProvider"] is True
        assert not blob_client(azurite, container, file["fileKey"]).exists()


def test_a_direct_upload_through_the_hub_goes_straight_to_azure(tmp_path: Any, azurite: Any, container: str) -> None:
    with rest_hub(
        tmp_path,
        plugins=[(hub_azure, "hub-azure")],
        providers={"azure": {"type": "azure-blob", **settings(azurite, container)}},
        services={"fileStorage": {"providers": ["azure"]}},
    ) as api:
        body = b"%PDF-1.7\n" + b"1" * 1000
        started = api.post(
            f"{API}/files/uploads",
            json={"fileName": "po.pdf", "contentType": "application/pdf", "size": len(body), "metadata": {"po": "9"}},
        )
        assert started.status_code == 201, started.get_json()
        upload = started.get_json()["data"]
        signed = upload["upload"]
        assert signed["method"] == "PUT" and signed["url"].startswith(azurite.url)
        forged = signed["url"].replace("sig=", "sig=AAAA")
        assert requests.put(forged, data=body, headers=signed["headers"], timeout=10).status_code == 403
        sent = requests.put(signed["url"], data=body, headers=signed["headers"], timeout=10)
        assert sent.status_code == 201, sent.text[:300]
        done = api.post(f"{API}/files/uploads/{upload['uploadId']}/complete")
        assert done.status_code == 201, done.get_json()
        file = done.get_json()["data"]
        assert (file["size"], file["contentType"], file["metadata"]) == (len(body), "application/pdf", {"po": "9"})
        assert api.get(f"{API}/files/{file['fileId']}/content").data == body


# --- memory ----------------------------------------------------------------------------------------


class PeakRss:
    """The process's peak resident memory above its level at the start, sampled every 5 ms."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.baseline = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.running = False
        self.thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def test_200_mb_up_and_down_within_100_mb_of_memory(harness: ProviderHarness, azurite: Any, container: str) -> None:
    # The defaults: 4 MiB blocks, 4 in flight, 4 MiB download ranges. (Azurite runs in its own process.)
    provider = harness.build("azure-blob", settings(azurite, container))
    key = new_key("large.bin")
    size = 200 * 1000 * 1000
    expected = digest_of(generated(size, key, chunk=1024 * 1024))
    store(harness, provider, new_key("warm-up.txt"), b"warm-up")  # the SDK's imports and the pool, before measuring
    with PeakRss() as upload:
        started = time.monotonic()
        with UploadStream(generated(size, key, chunk=1024 * 1024)) as stream:
            harness.call(provider, "store", file=stored_file(key), stream=stream)
        upload_seconds = time.monotonic() - started
    with PeakRss() as download:
        started = time.monotonic()
        opened = harness.call(provider, "store_read", key=key, byte_range=None)
        digest = digest_of(iter(lambda: opened.read(1024 * 1024), b""))
        opened.close()
        download_seconds = time.monotonic() - started
    assert digest == expected
    assert harness.call(provider, "store_head", key=key).checksum == expected
    print(
        f"\n200 MB: upload {upload_seconds:.1f} s, peak RSS +{upload.growth / MIB:.1f} MiB; "
        f"download {download_seconds:.1f} s, peak RSS +{download.growth / MIB:.1f} MiB"
    )
    assert upload.growth < 100 * MIB, f"upload grew RSS by {upload.growth / MIB:.0f} MiB"
    assert download.growth < 100 * MIB, f"download grew RSS by {download.growth / MIB:.0f} MiB"
    assert harness.call(provider, "store_delete", key=key) is True
