"""The hub over real inventory sources: Shopify (hub-shopify against its local Admin GraphQL server) and the
warehouse system (hub-wms against its local Fulfillment.com API, checked against the official description)
disagree; a signed Shopify webhook moves a level; a level falling below its threshold sends one Slack message
(hub-slack against a local incoming-webhook server) and publishes one ``inventory.stock.updated`` event to the
event log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from werkzeug.wrappers import Request, Response

from hub import IntegrationManager
from hub.api import create_app
from hub.records import Record
from hub.testing.servers import WsgiServer
from tests.conftest import API, base_config, data_of
from tests.test_inventory import records_of, work

pytest.importorskip("hub_shopify", reason="hub-shopify is not installed (pip install -e plugins/hub-shopify[test])")
pytest.importorskip("hub_slack", reason="hub-slack is not installed (pip install -e plugins/hub-slack[test])")
pytest.importorskip("hub_wms", reason="hub-wms is not installed (pip install -e plugins/hub-wms[test])")
from hub_wms.testing import DEFAULT_API_KEY, FakeWMS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins" / "hub-shopify" / "tests"))
from shopify_server import FakeShopify  # noqa: E402

TENANT = "demo"
TOKEN = "shpat_hub_level"
WEBHOOK_SECRET = "shopify-app-secret"
WAREHOUSE = 11


class SlackHooks(WsgiServer):
    """Slack incoming webhooks: answers ``ok`` and keeps every message posted."""

    def __init__(self) -> None:
        super().__init__(name="slack-hooks")
        self.lock = threading.Lock()
        self.messages: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self.lock:
            self.messages.append(json.loads(request.get_data()))
        return Response("ok", content_type="text/plain")(environ, start_response)


@pytest.fixture
def servers() -> Iterator[tuple[FakeShopify, SlackHooks, FakeWMS]]:
    with FakeShopify(token=TOKEN, items=3, locations=1) as shop, SlackHooks() as slack, FakeWMS() as wms:
        # The warehouse: SKU-001 agrees with Shopify (10), SKU-002 does not (20 against 17).
        wms.set_stock("SKU-001", WAREHOUSE, 10)
        wms.set_stock("SKU-002", WAREHOUSE, 20)
        yield shop, slack, wms


@pytest.fixture
def hub(tmp_path: Path, servers: tuple[FakeShopify, SlackHooks, FakeWMS]) -> Iterator[IntegrationManager]:
    shop, slack, wms = servers
    config = base_config(
        tmp_path / "var",
        {
            "shop": {"type": "shopify", "shop": "hub-test.myshopify.com", "access_token": TOKEN, "api_base": shop.url, "webhook_secret": WEBHOOK_SECRET},
            "wms": {"type": "wms", "base_url": wms.url, "api_key": DEFAULT_API_KEY, "warehouse_ids": [WAREHOUSE]},
            "slack": {"type": "slack-webhook", "webhook_url": f"{slack.url}/services/T0/B0/X"},
        },
        {"externalAPI": {"providers": ["shop", "wms"]}, "chat": {"providers": ["slack"]}},
        inventory={
            "sources": {"shop": {"locations": {"gid://shopify/Location/1": "WAREHOUSE-A"}}, "wms": {"locations": {str(WAREHOUSE): "WAREHOUSE-A"}}},
            "low_stock": {"thresholds": [{"sku": "SKU-001", "location": "WAREHOUSE-A", "threshold": 8}], "notify": [{"channel": "chat"}]},
        },
    )
    manager = IntegrationManager(config, environ={})
    yield manager
    manager.close()


def test_shopify_and_the_warehouse_disagree_and_a_threshold_crossing_alerts_once(hub: IntegrationManager, servers: tuple[FakeShopify, SlackHooks, FakeWMS]) -> None:
    shop, slack, _wms = servers
    client = create_app(manager=hub).test_client()
    headers = {"Authorization": f"Bearer {hub.tokens.create(TENANT, 'ops')[1]}", "X-Tenant-ID": TENANT}

    results = data_of(client.post(f"{API}/inventory/sync", json={}, headers=headers))
    assert {name: (result["success"], result["count"]) for name, result in results.items()} == {"shop": (True, 3), "wms": (True, 2)}
    work(hub)
    discrepancies = data_of(client.get(f"{API}/inventory/discrepancies", headers=headers))["items"]
    assert [(item["sku"], item["location"], item["quantities"]) for item in discrepancies] == [("SKU-002", "WAREHOUSE-A", {"shop": 17, "wms": 20})]
    assert slack.messages == []  # 10 is above the threshold of 8

    # A sale in the shop: SKU-001 falls to 5. One Slack message, one inventory.stock.updated event, and the
    # warehouse (still 10) now disagrees too.
    with shop.lock:
        shop.levels[(1001, 1)] = 5
    hub.sync_external_data(TENANT, "inventory", provider="shop")
    work(hub)
    assert len(slack.messages) == 1 and "SKU-001" in json.dumps(slack.messages[0])
    updated = records_of(hub, "event", eventType="inventory.stock.updated")
    assert [(event.payload["data"]["sku"], event.payload["data"]["oldQuantity"], event.payload["data"]["newQuantity"], event.status, event.provider) for event in updated] == [
        ("SKU-001", 10, 5, "succeeded", "eventlog")
    ]
    assert sorted(item["sku"] for item in hub.inventory_discrepancies(TENANT)) == ["SKU-001", "SKU-002"]

    # The next syncs find it still low: nothing more is sent.
    hub.sync_all_inventory(TENANT)
    work(hub)
    assert len(slack.messages) == 1
    assert len(records_of(hub, "event", eventType="inventory.stock.updated")) == 1
    with hub.db.session() as session:
        alerts = session.scalars(select(Record).where(Record.kind == "stock_alert")).all()
    assert [alert.status for alert in alerts] == ["succeeded"]


def _signed(body: dict[str, Any], secret: str = WEBHOOK_SECRET) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    signature = base64.b64encode(hmac.new(secret.encode(), raw, hashlib.sha256).digest()).decode()
    return raw, {"X-Shopify-Hmac-Sha256": signature, "X-Shopify-Topic": "inventory_levels/update", "X-Shopify-Event-Id": f"evt-{body['available']}", "Content-Type": "application/json"}


def test_a_signed_shopify_webhook_sets_the_level_and_a_forged_one_changes_nothing(hub: IntegrationManager) -> None:
    client = create_app(manager=hub).test_client()
    hub.sync_all_inventory(TENANT)
    assert [item["sku"] for item in hub.inventory_discrepancies(TENANT)] == ["SKU-002"]  # 17 in the shop, 20 in the warehouse

    later = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    body = {"inventory_item_id": 1002, "location_id": 1, "available": 20, "updated_at": later}
    raw, signed = _signed(body)
    forged_raw, forged = _signed(body, secret="not-the-secret")
    assert client.post(f"{API}/webhooks/shop?tenant={TENANT}", data=forged_raw, headers=forged).status_code == 401
    assert {level["provider"]: level["quantity"] for level in hub.inventory_levels(TENANT, sku="SKU-002")} == {"shop": 17, "wms": 20}

    answer = data_of(client.post(f"{API}/webhooks/shop?tenant={TENANT}", data=raw, headers=signed))
    assert (answer["received"], answer["updated"]) == (1, 1)
    assert {level["provider"]: level["quantity"] for level in hub.inventory_levels(TENANT, sku="SKU-002")} == {"shop": 20, "wms": 20}
    assert hub.inventory_discrepancies(TENANT) == []  # they agree now: resolved
    history = hub.inventory_history("SKU-002", provider="shop", tenant_id=TENANT)
    assert [(item["source"], item["previous"], item["quantity"]) for item in history] == [("sync", None, 17), ("webhook", 17, 20)]

    # Shopify delivering the same webhook again, or an older one late, changes nothing.
    assert data_of(client.post(f"{API}/webhooks/shop?tenant={TENANT}", data=raw, headers=signed))["duplicates"] == 1
    older, headers = _signed({**body, "available": 3, "updated_at": "2020-01-01T00:00:00+00:00"})
    assert data_of(client.post(f"{API}/webhooks/shop?tenant={TENANT}", data=older, headers=headers))["updated"] == 0
    assert {level["provider"]: level["quantity"] for level in hub.inventory_levels(TENANT, sku="SKU-002")} == {"shop": 20, "wms": 20}
