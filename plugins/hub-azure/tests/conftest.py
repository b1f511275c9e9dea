"""Azurite, the Azure Storage emulator, for the plugin's tests: installed once with npm, run per session.

Azurite (pinned) goes into ``<test servers dir>/azurite-<version>`` (``hub.testing.specs.test_servers_dir()``:
``~/.cache/hub-test-servers``, a per-user cache) under a file lock, so parallel test runs install it once. Without npm
the tests that need it skip, saying so. The blob service runs in memory on a free port, in its own process
group, and is stopped with it at the end of the session.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hub.testing.servers import ServerProcess, free_port
from hub.testing.specs import SpecUnavailable, npm_package

AZURITE_PACKAGE = "azurite"
AZURITE_VERSION = "3.35.0"

#: Azurite's well-known development account (public, documented by Microsoft; not a secret).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(base_url: str) -> str:
    """The development account's connection string for a blob service at ``base_url`` (``http://host:port``)."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={base_url}/{ACCOUNT_NAME};"
    )


def azurite_blob_binary() -> Path:
    """``node_modules/.bin/azurite-blob`` of the pinned Azurite, installing it first when needed (the kit's
    :func:`~hub.testing.specs.npm_package`); skips the calling test when npm is missing, fails when the install does."""
    try:
        package_dir = npm_package(AZURITE_PACKAGE, AZURITE_VERSION, needed_for="Azurite, the Azure Blob emulator")
    except SpecUnavailable as error:
        if error.reason == "npm-missing":
            pytest.skip(str(error))
        raise
    return package_dir.parent / ".bin" / "azurite-blob"


@dataclass
class Azurite:
    server: ServerProcess

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def connection_string(self) -> str:
        return connection_string(self.server.url)

    @staticmethod
    def connection_string_for(base_url: str) -> str:
        """For a provider pointed at another server (a proxy, the kit's fault server)."""
        return connection_string(base_url)

    account_name = ACCOUNT_NAME
    account_key = ACCOUNT_KEY

    def service(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string, retry_total=0)


@pytest.fixture
def dev_connection_string() -> Any:
    """``base_url -> connection string`` of the development account, for a provider pointed at a server that
    is not Azurite (the kit's fault server): needs no Azurite, so those tests run without npm too."""
    return connection_string


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    binary = azurite_blob_binary()
    port = free_port()
    command = [
        str(binary),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--inMemoryPersistence",
        "--skipApiVersionCheck",
        "--disableTelemetry",  # otherwise it tries the network
        "--silent",
    ]
    with ServerProcess(command, port=port, name="azurite-blob", startup_timeout=60) as server:
        yield Azurite(server)


@pytest.fixture
def container(azurite: Azurite) -> Iterator[str]:
    """A fresh container for one test (deleted afterwards)."""
    name = f"t-{uuid.uuid4().hex[:20]}"
    with azurite.service() as service:
        service.create_container(name)
        yield name
        with contextlib.suppress(Exception):
            service.delete_container(name)
