"""URLs tenants set through the API may not reach the hub's own network (SSRF): a subscription's webhook and a
stored credential's URL settings are checked when saved, and a tenant's webhook again before each delivery."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hub.api import create_app
from hub.errors import ConfigurationError
from hub.http.targets import TargetRefused, TenantUrlPolicy
from hub.manager import IntegrationManager
from hub.services.subscriptions import WebhookHandler
from tests.conftest import API, base_config, error_of

KEYS = "u7Cnl2_1dGQbQm9_1zS1Yl6f1sVw5S2nq0l3mJm7d1Q="


@pytest.fixture
def strict(tmp_path: Path) -> Any:
    config = base_config(tmp_path / "var", tenant_urls={"allow_private": False, "allow": ["erp.vpn.example", "192.0.2.0/24"]})
    hub = IntegrationManager(config, environ={"HUB_CREDENTIAL_KEYS": KEYS}, entry_points=False)
    client = create_app(manager=hub).test_client()
    headers = {"Authorization": f"Bearer {hub.tokens.create('demo', 't')[1]}", "X-Tenant-ID": "demo"}
    yield hub, client, headers
    hub.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/",  # Redis on the hub's host
        "http://localhost:5432/",  # a name that resolves to loopback
        "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
        "http://10.0.0.5/",
        "http://[::1]:8000/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
        "http://100.64.0.1/",  # carrier-grade NAT: not public either
        "ftp://203.0.113.7/",
    ],
)
def test_a_tenants_subscription_to_the_hubs_own_network_is_a_422_naming_the_field(strict: Any, url: str) -> None:
    _hub, client, headers = strict
    body = {"name": "inward", "topics": ["orders"], "handler": {"type": "webhook", "url": url}}
    refused = error_of(client.post(f"{API}/events/subscriptions", json=body, headers=headers), 422)
    assert list(refused["errors"]) == ["handler.url"], refused
    assert client.get(f"{API}/events/subscriptions/inward", headers=headers).status_code == 404  # nothing saved


def test_public_and_allowed_targets_are_accepted(strict: Any) -> None:
    _hub, client, headers = strict
    for name, url in (("public", "https://93.184.216.34/hook"), ("vpn-net", "http://192.0.2.10/hook")):
        body = {"name": name, "topics": ["orders"], "handler": {"type": "webhook", "url": url}}
        assert client.post(f"{API}/events/subscriptions", json=body, headers=headers).status_code == 201
    policy = TenantUrlPolicy(False, ["erp.vpn.example"])
    policy.check("https://erp.vpn.example/api")  # an allowed name is not even resolved


def test_a_credential_pointing_a_provider_inward_is_refused(strict: Any) -> None:
    _hub, client, headers = strict
    refused = error_of(client.put(f"{API}/credentials/sandbox", json={"settings": {"base_url": "http://169.254.169.254/"}}, headers=headers), 422)
    assert list(refused["errors"]) == ["settings.base_url"] and "not a public address" in refused["errors"]["settings.base_url"][0]


def test_a_tenants_webhook_is_checked_again_before_each_delivery() -> None:
    received: list[str] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            received.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        # Accepted when saved (say the name resolved outward then); the guard refuses it now, before any request.
        handler = WebhookHandler(url, guard=TenantUrlPolicy(False).check)
        with pytest.raises(ConfigurationError, match="not a public address"):
            handler(None, None)  # type: ignore[arg-type]
        assert received == []
    finally:
        server.shutdown()
        server.server_close()


def test_development_allows_private_targets_and_production_refuses_them() -> None:
    TenantUrlPolicy.from_config({"mode": "development"}).check("http://127.0.0.1:9000/")
    with pytest.raises(TargetRefused):
        TenantUrlPolicy.from_config({"mode": "production"}).check("http://127.0.0.1:9000/")
    TenantUrlPolicy.from_config({"mode": "production", "tenant_urls": {"allow_private": True}}).check("http://10.1.2.3/")
    with pytest.raises(TargetRefused, match="does not resolve"):
        TenantUrlPolicy(False).check("http://no-such-host.invalid/")
