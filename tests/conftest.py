"""Shared fixtures: a hub on a temporary data folder, its Flask client and a tenant's token."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.api import create_app
from hub.config import validate_config
from hub.manager import IntegrationManager

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = ["hub.testing"]


def base_config(data_dir: Path, **overrides: Any) -> dict[str, Any]:
    """The repo's hub.yaml (embedded defaults) on a private data folder, with fast retries."""
    raw = yaml.safe_load((REPO / "hub.yaml").read_text())
    raw["data_dir"] = str(data_dir)
    raw["retry"] = {"attempts": 2, "initial_delay": 0.01, "max_delay": 0.05, "jitter": 0.01, "job_attempts": 3, "job_delay": 0.1}
    raw["queue"] = {**raw.get("queue", {}), "workers": 0}
    for key, value in overrides.items():
        raw[key] = value
    environ = {"HUB_MODE": "development"}
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
