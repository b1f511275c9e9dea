"""hub-azure against Any on 127.0.0.1 (see conftest.py), with the official azure-storage-blob SDK."""

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

import psutil
import pytest
import requests

import hub_azure
from hub.capabilities import StoredFile, UploadStream
from hub.errors import ConfigError, ConfigurationError, IncompleteUploadError, NotFoundError, TransientError
from hub.testing import ProviderHarness
from hub.testing.contracts import check_provider_class, run_contract
from hub.testing.rest import rest_hub
from hub.testing.transport import check_concurrent_use, check_transport_errors

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


def build_at(harness: ProviderHarness, azurite: Any, container: str = "kit"):
    return lambda url, timeout: harness.build(
        "azure-blob",
        {"connection_string": azurite.connection_string_for(url), "container": container, "timeout": timeout},
    )


def store_small(harness: ProviderHarness):
    def call(provider: Any) -> Any:
        return store(harness, provider, new_key("small.txt", "transport-checks"), b"hello azure\n")

    return call


def test_transport_errors(harness: ProviderHarness, azurite: Any) -> None:
    raised = check_transport_errors(harness, build_at(harness, azurite), call=store_small(harness), timeout=0.4)
    assert all(error.provider_code for error in raised.values() if hasattr(error, "provider_code"))


def test_concurrent_use(harness: ProviderHarness, azurite: Any, container: str) -> None:
    def call(provider: Any, number: int) -> bytes:
        key = new_key(f"concurrent-{number}.txt")
        body = f"call {number}\n".encode() * 50
        store(harness, provider, key, body)
        assert read_all(harness, provider, key) == body
        return body

    results = check_concurrent_use(harness, build_at(harness, azurite, container), azurite.url, call=call)
    assert len(set(results)) == len(results)
