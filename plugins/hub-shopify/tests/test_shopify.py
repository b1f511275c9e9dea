"""hub-shopify against a local Shopify Admin GraphQL server (graphql-core) with Shopify's cost model and cursors.

The server (:mod:`shopify_server`) validates every query and mutation against its SDL, pages Relay connections,
charges each query's cost from a leaky bucket and answers ``THROTTLED`` (HTTP 200) when the bucket is short, and
refuses a stale ``changeFromQuantity`` with ``CHANGE_FROM_QUANTITY_STALE``. Its clock can be frozen, so the
throttling tests are deterministic.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hub_shopify
import pytest
from hub_shopify import ShopifyInventory
from shopify_server import FakeShopify

from hub.capabilities import INVENTORY_LEVEL_EVENT, InventoryPush, InventoryUpdate, SyncRequest, WebhookRequest
from hub.errors import ConfigurationError, SignatureError, TransientError, UnsupportedError
from hub.testing import ProviderHarness
from hub.testing.contracts import check_provider_class, run_contract
from hub.testing.rest import rest_hub
from hub.testing.transport import check_concurrent_use, check_transport_errors, check_webhook_signatures

TOKEN = "shpat_test"
SECRET = "whsec-shopify-test"


@pytest.fixture
def shop() -> Iterator[FakeShopify]:
    with FakeShopify(token=TOKEN) as server:
        yield server


def settings(shop: FakeShopify, **overrides: Any) -> dict[str, Any]:
    return {
        "shop": "hub-test.myshopify.com",
        "access_token": TOKEN,
        "api_base": shop.url,
        "webhook_secret": SECRET,
        "timeout": 5,
        **overrides,
    }


@pytest.fixture
def provider(provider_harness: ProviderHarness, shop: FakeShopify) -> ShopifyInventory:
    provider_harness.add_plugin(hub_shopify, "shopify")
    return provider_harness.build("shopify", settings(shop))


def sync(harness: ProviderHarness, provider: Any, cursor: str | None = None, page_size: int = 3) -> Any:
    request = SyncRequest(id="s1", tenant="demo", data_type="inventory", cursor=cursor, page_size=page_size)
    return harness.call(provider, "sync", request=request)


def read_all(harness: ProviderHarness, provider: Any, page_size: int = 3) -> list[Any]:
    pages: list[Any] = []
    cursor = None
    while True:
        page = sync(harness, provider, cursor, page_size)
        pages.append(page)
        if not page.has_more:
            return pages
        cursor = page.cursor


# --- contract -------------------------------------------------------------------------------------


def test_provider_class_and_the_sync_contract(provider_harness: ProviderHarness, provider: Any) -> None:
    check_provider_class(ShopifyInventory)
    results = run_contract(provider_harness, provider, data_type="inventory", expect_min=21)
    assert len(results["sync"].records) == 21
    assert results["health"].status == "success"


def test_settings_defaults_and_secrets(provider: Any, shop: FakeShopify) -> None:
    assert provider.settings["api_version"] == "2026-04"
    assert set(ShopifyInventory.secret_settings) == {"access_token", "webhook_secret"}
    assert ShopifyInventory.env_settings["access_token"] == "SHOPIFY_ACCESS_TOKEN"


# --- paging ---------------------------------------------------------------------------------------


def test_pages_follow_the_cursor_across_locations_without_loss_or_repeat(
    provider_harness: ProviderHarness, provider: Any, shop: FakeShopify
) -> None:
    pages = read_all(provider_harness, provider, page_size=3)
    records = [record for page in pages for record in page.records]
    keys = [(record["sku"], record["location"]) for record in records]
    assert len(keys) == len(set(keys)) == 21
    assert [len(page.records) for page in pages] == [3, 3, 1] * 3  # 7 levels per location, pages of 3
    assert pages[-1].cursor is None  # no change feed: the next run reads everything again
    first = records[0]
    assert first["location"] == "gid://shopify/Location/1" and first["location_name"] == "Warehouse 1"
    assert first["quantity"] == shop.levels[(1001, 1)]
    assert set(shop.versions) == {"2026-04"}
    afters = [r["variables"].get("after") for r in shop.requests if "HubInventoryLevels" in r["query"]]
    assert afters[:3] == [None, "c1003", "c1006"]


def test_a_configured_api_version_is_used(provider_harness: ProviderHarness, shop: FakeShopify) -> None:
    provider_harness.add_plugin(hub_shopify, "shopify")
    provider = provider_harness.build("shopify", settings(shop, api_version="2025-10"))
    sync(provider_harness, provider)
    assert set(shop.versions) == {"2025-10"}


def test_a_wrong_token_is_a_configuration_error(provider_harness: ProviderHarness, shop: FakeShopify) -> None:
    provider_harness.add_plugin(hub_shopify, "shopify")
    provider = provider_harness.build("shopify", settings(shop, access_token="shpat_wrong"))
    with pytest.raises(ConfigurationError) as raised:
        sync(provider_harness, provider)
    assert "shpat_wrong" not in str(raised.value)


def test_an_unknown_data_type_is_unsupported(provider_harness: ProviderHarness, provider: Any) -> None:
    with pytest.raises(UnsupportedError):
        provider_harness.call(provider, "sync", request=SyncRequest(id="x", tenant="demo", data_type="orders"))


# --- throttling -----------------------------------------------------------------------------------


def test_throttled_answer_raises_with_the_time_the_bucket_needs(
    provider_harness: ProviderHarness, provider: Any, shop: FakeShopify
) -> None:
    now = [0.0]  # frozen clocks (server and provider): no restore between requests unless the test says
    shop.clock = provider.clock = lambda: now[0]
    shop.last_refill = 0.0
    first = sync(provider_harness, provider, page_size=3)
    shop.restore_rate = 20.0
    shop.available = 4.0
    with pytest.raises(TransientError) as raised:
        sync(provider_harness, provider, first.cursor, page_size=3)
    error = raised.value
    requested = shop_requested_cost(shop)  # the levels query with first=3, as the server priced it
    assert requested > 4
    assert error.provider_code == "THROTTLED"
    assert error.retry_after == pytest.approx((requested - 4) / 20.0)
    now[0] += error.retry_after  # the core waits that long; the same cursor goes on
    assert [record["sku"] for record in sync(provider_harness, provider, first.cursor, page_size=3).records] == [
        "SKU-004",
        "SKU-005",
        "SKU-006",
    ]


def shop_requested_cost(shop: FakeShopify) -> int:
    from graphql import parse
    from shopify_server import _CURRENT, requested_cost

    last = shop.requests[-1]
    document = parse(last["query"])
    _CURRENT.variables = last["variables"]
    return requested_cost(document, document.definitions[0])


def test_http_429_raises_transient_with_retry_after(
    provider_harness: ProviderHarness, provider: Any, shop: FakeShopify
) -> None:
    shop.faults.append((429, {"Retry-After": "2"}, json.dumps({"errors": "Exceeded 2 calls per second"})))
    with pytest.raises(TransientError) as raised:
        sync(provider_harness, provider)
    assert raised.value.retry_after == 2


# --- push -----------------------------------------------------------------------------------------


def push(harness: ProviderHarness, provider: Any, *updates: InventoryUpdate) -> Any:
    return harness.call(provider, "sync_push", push=InventoryPush(id="p1", tenant="demo", updates=list(updates)))


def test_push_sets_with_change_from_quantity(
    provider_harness: ProviderHarness, provider: Any, shop: FakeShopify
) -> None:
    before = shop.levels[(1002, 2)]
    result = push(
        provider_harness, provider, InventoryUpdate("SKU-002", "gid://shopify/Location/2", 40, reason="received")
    )
    assert [(r.status, r.quantity) for r in result.results] == [("sent", 40)]
    assert shop.levels[(1002, 2)] == 40
    sent = [r["variables"]["input"] for r in shop.requests if "HubSetQuantities" in r["query"]]
    assert sent[0]["name"] == "available" and sent[0]["reason"] == "received"
    assert sent[0]["quantities"][0]["changeFromQuantity"] == before


def test_a_stale_change_from_quantity_is_read_again_and_retried_once(
    provider_harness: ProviderHarness, provider: Any, shop: FakeShopify
) -> None:
    shop.stale_writes = 1  # another app changes the level once between our read and our write
    result = push(provider_harness, provider, InventoryUpdate("SKU-003", "gid://shopify/Location/1", -2, mode="adjust"))
    changed = shop.levels[(1003, 1)]
    assert [(r.status, r.quantity) for r in result.results] == [("sent", changed)]
    shop.stale_writes = 2  # it changes again before the retry: a conflict
    result = push(
        provider_harness,
        provider,
        InventoryUpdate("SKU-004", "gid://shopify/Location/1", 9),
        InventoryUpdate("SKU-005", "gid://shopify/Location/3", 11),
    )
    assert [r.status for r in result.results] == ["failed", "sent"]
    assert "conflict" in result.results[0].error and "CHANGE_FROM_QUANTITY_STALE" in result.results[0].error
    assert shop.levels[(1004, 1)] != 9 and shop.levels[(1005, 3)] == 11
    writes = [r for r in shop.requests if "HubSetQuantities" in r["query"]]
    assert len(writes) == 2 + 3  # first push: stale + retry; second: stale + stale retry, then the next item


def test_unknown_sku_fails_that_update_only(
    provider_harness: ProviderHarness, provider: Any, shop: FakeShopify
) -> None:
    result = push(
        provider_harness,
        provider,
        InventoryUpdate("NO-SUCH", "gid://shopify/Location/1", 1),
        InventoryUpdate("SKU-002", "Warehouse 1", 1),
        InventoryUpdate("SKU-002", "gid://shopify/Location/99", 1),
        InventoryUpdate("SKU-001", "1", 5),
    )
    assert [r.status for r in result.results] == ["failed", "failed", "failed", "sent"]
    assert shop.levels[(1001, 1)] == 5


# --- webhooks through the hub ---------------------------------------------------------------------


def signed(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def webhook_headers(body: bytes, signature: str | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "inventory_levels/update",
        "X-Shopify-Hmac-Sha256": signature if signature is not None else signed(body),
        "X-Shopify-Shop-Domain": "hub-test.myshopify.com",
        "X-Shopify-Event-Id": "evt-1",
        "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
    }


WEBHOOK_BODY = json.dumps(
    {
        "inventory_item_id": 1002,
        "location_id": 2,
        "available": 6,
        "updated_at": "2026-01-03T10:00:00-05:00",
        "admin_graphql_api_id": "gid://shopify/InventoryLevel/2?inventory_item_id=1002",
    }
).encode()


def sku_lookups(shop: FakeShopify) -> list[str]:
    """The inventory items the provider asked Shopify about (one per ``inventoryItem`` query)."""
    return [r["variables"]["id"] for r in shop.requests if "HubInventoryItemSku" in r["query"]]


def webhook(body: bytes = WEBHOOK_BODY, **headers: str) -> WebhookRequest:
    return WebhookRequest(headers={**webhook_headers(body), **headers}, body=body, url="", form={}, query={})


def level_body(item: int, location: int, available: int | None) -> bytes:
    return json.dumps(
        {
            "inventory_item_id": item,
            "location_id": location,
            "available": available,
            "updated_at": "2026-01-04T00:00:00Z",
        }
    ).encode()


def test_webhook_verified_through_the_hub_and_forgeries_refused(tmp_path: Path, shop: FakeShopify) -> None:
    with rest_hub(
        tmp_path,
        plugins=[(hub_shopify, "shopify")],
        providers={"shop": {"type": "shopify", **settings(shop)}},
        services={"externalAPI": {"providers": ["shop"]}},
    ) as hub:
        url = "/api/integrations/webhooks/shop"
        good = hub.client.post(url, data=WEBHOOK_BODY, headers=webhook_headers(WEBHOOK_BODY))
        assert good.status_code == 200, good.get_data(as_text=True)
        # The core's handling of inventory.level events (stored levels, "updated") is not asserted here yet.
        counts = good.get_json()["data"]
        assert (counts["received"], counts["duplicates"]) == (1, 0)
        assert sku_lookups(shop) == ["gid://shopify/InventoryItem/1002"]
        again = hub.client.post(url, data=WEBHOOK_BODY, headers=webhook_headers(WEBHOOK_BODY))
        counts = again.get_json()["data"]
        assert (counts["received"], counts["duplicates"]) == (1, 1)
        assert len(sku_lookups(shop)) == 1  # the SKU came from the cache
        sent = len(shop.versions)
        forged = hub.client.post(
            url, data=WEBHOOK_BODY, headers=webhook_headers(WEBHOOK_BODY, signed(WEBHOOK_BODY, "x"))
        )
        assert forged.status_code == 401
        tampered = level_body(1003, 1, 600)
        altered = hub.client.post(url, data=tampered, headers=webhook_headers(WEBHOOK_BODY))
        assert altered.status_code == 401
        assert len(shop.versions) == sent  # refused deliveries cost no request to Shopify
        garbled = b"not json"
        refused = hub.client.post(url, data=garbled, headers=webhook_headers(garbled))
        assert refused.status_code == 422, refused.get_data(as_text=True)


def test_a_throttled_sku_lookup_answers_503_so_shopify_delivers_again(tmp_path: Path, shop: FakeShopify) -> None:
    with rest_hub(
        tmp_path,
        plugins=[(hub_shopify, "shopify")],
        providers={"shop": {"type": "shopify", **settings(shop)}},
        services={"externalAPI": {"providers": ["shop"]}},
    ) as hub:
        now = [0.0]  # one frozen clock for the server and the hub's provider instance
        shop.clock = hub.hub.registry.instance("shop", None).clock = lambda: now[0]  # type: ignore[attr-defined]
        shop.last_refill, shop.available = 0.0, 0.5  # less than the lookup's requested cost of 1
        url = "/api/integrations/webhooks/shop"
        throttled = hub.client.post(url, data=WEBHOOK_BODY, headers=webhook_headers(WEBHOOK_BODY))
        assert throttled.status_code == 503, throttled.get_data(as_text=True)
        again = hub.client.post(url, data=WEBHOOK_BODY, headers=webhook_headers(WEBHOOK_BODY))
        assert again.status_code == 503 and len(sku_lookups(shop)) == 1  # the provider knows the bucket is short
        now[0] += 1.0
        delivered = hub.client.post(url, data=WEBHOOK_BODY, headers=webhook_headers(WEBHOOK_BODY))
        assert delivered.status_code == 200, delivered.get_data(as_text=True)
        assert delivered.get_json()["data"]["received"] == 1


def test_webhook_events_carry_the_level_under_the_sync_records_sku_and_location(
    provider_harness: ProviderHarness, provider: Any
) -> None:
    [event] = provider_harness.call(provider, "handle_webhook", webhook=webhook())
    assert event.event_id == "evt-1" and event.type == INVENTORY_LEVEL_EVENT == "inventory.level"
    assert event.reference == "gid://shopify/InventoryLevel/2?inventory_item_id=1002"
    assert event.details == {
        "sku": "SKU-002",
        "location": "gid://shopify/Location/2",
        "quantity": 6,
        "updatedAt": "2026-01-03T10:00:00-05:00",
        "inventoryItemId": "gid://shopify/InventoryItem/1002",
    }
    [record] = [
        record
        for page in read_all(provider_harness, provider, page_size=50)
        for record in page.records
        if record["inventory_item_id"] == "gid://shopify/InventoryItem/1002"
        and record["location"] == "gid://shopify/Location/2"
    ]
    assert (record["sku"], record["location"]) == (event.details["sku"], event.details["location"])
    missing = WebhookRequest(
        headers={"X-Shopify-Topic": "inventory_levels/update"}, body=WEBHOOK_BODY, url="", form={}, query={}
    )
    with pytest.raises(SignatureError):
        provider_harness.call(provider, "handle_webhook", webhook=missing)


def test_a_forged_webhook_costs_no_request(provider_harness: ProviderHarness, provider: Any, shop: FakeShopify) -> None:
    forged = webhook(**{"X-Shopify-Hmac-Sha256": signed(WEBHOOK_BODY, "not-the-secret")})
    with pytest.raises(SignatureError):
        provider_harness.call(provider, "handle_webhook", webhook=forged)
    assert shop.versions == [] and shop.requests == []


def test_the_sku_of_an_item_is_asked_for_once(
    provider_harness: ProviderHarness, provider: Any, shop: FakeShopify
) -> None:
    first, second = (
        provider_harness.call(provider, "handle_webhook", webhook=webhook(level_body(1004, location, quantity)))
        for location, quantity in ((1, 3), (3, 8))
    )
    assert [(e.details["sku"], e.details["location"], e.details["quantity"]) for e in first + second] == [
        ("SKU-004", "gid://shopify/Location/1", 3),
        ("SKU-004", "gid://shopify/Location/3", 8),
    ]
    assert sku_lookups(shop) == ["gid://shopify/InventoryItem/1004"]
    provider_harness.call(provider, "handle_webhook", webhook=webhook(level_body(1005, 1, 1)))
    assert sku_lookups(shop) == ["gid://shopify/InventoryItem/1004", "gid://shopify/InventoryItem/1005"]
    assert shop_requested_cost(shop) == 1  # one object, scalars free: Shopify's price for this lookup


def test_a_cached_sku_is_asked_for_again_after_a_while(
    provider_harness: ProviderHarness, provider: Any, shop: FakeShopify
) -> None:
    now = [0.0]
    provider.clock = lambda: now[0]
    provider_harness.call(provider, "handle_webhook", webhook=webhook())
    shop.items[1]["sku"] = "SKU-002-RENAMED"  # a merchant renamed the variant's SKU
    now[0] += hub_shopify.SKU_CACHE_SECONDS - 1
    [cached] = provider_harness.call(provider, "handle_webhook", webhook=webhook())
    now[0] += 2
    [fresh] = provider_harness.call(provider, "handle_webhook", webhook=webhook())
    assert (cached.details["sku"], fresh.details["sku"]) == ("SKU-002", "SKU-002-RENAMED")
    assert len(sku_lookups(shop)) == 2


def test_an_item_shopify_no_longer_knows_gives_no_event(
    provider_harness: ProviderHarness, provider: Any, shop: FakeShopify
) -> None:
    assert provider_harness.call(provider, "handle_webhook", webhook=webhook(level_body(9999, 1, 4))) == []
    assert sku_lookups(shop) == ["gid://shopify/InventoryItem/9999"]
    # An untracked item (no available quantity) and other topics give no event and cost no request either.
    assert provider_harness.call(provider, "handle_webhook", webhook=webhook(level_body(1001, 1, None))) == []
    other = webhook(**{"X-Shopify-Topic": "products/update"})
    assert provider_harness.call(provider, "handle_webhook", webhook=other) == []
    assert len(shop.requests) == 1


def test_an_item_without_a_sku_is_named_by_its_gid_as_in_sync_records(
    provider_harness: ProviderHarness, provider: Any, shop: FakeShopify
) -> None:
    shop.items[0]["sku"] = None
    [event] = provider_harness.call(provider, "handle_webhook", webhook=webhook(level_body(1001, 2, 5)))
    [record] = [
        r for r in sync(provider_harness, provider, page_size=50).records if r["inventory_item_id"].endswith("/1001")
    ]
    assert event.details["sku"] == record["sku"] == "gid://shopify/InventoryItem/1001"


# --- an interrupted sync resumed through the hub --------------------------------------------------


def test_an_interrupted_sync_resumes_through_the_hub_without_loss_or_duplicates(
    tmp_path: Path, shop: FakeShopify
) -> None:
    with rest_hub(
        tmp_path,
        plugins=[(hub_shopify, "shopify")],
        providers={"shop": {"type": "shopify", **settings(shop)}},
        services={"externalAPI": {"providers": ["shop"]}},
        retry={"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05, "jitter": 0.01},
    ) as hub:
        original = shop.handle
        served = {"levels": 0}

        def failing(request: Any) -> Any:
            body = request.get_data()
            if b"HubInventoryLevels" in body:
                served["levels"] += 1
                if served["levels"] >= 4:  # page 4 and every retry of it fail
                    from werkzeug.wrappers import Response

                    return Response('{"errors":"Internal error"}', status=503, content_type="application/json")
            return original(request)

        shop.handle = failing  # type: ignore[method-assign]
        failed = hub.post("/api/integrations/sync", {"dataType": "inventory", "async": False, "pageSize": 3})
        assert failed.status_code == 503, failed.get_data(as_text=True)
        shop.handle = original  # type: ignore[method-assign]
        resumed = hub.post("/api/integrations/sync", {"dataType": "inventory", "async": False, "pageSize": 3})
        assert resumed.status_code in (200, 201), resumed.get_data(as_text=True)
        afters = [r["variables"].get("after") for r in shop.requests if "HubInventoryLevels" in r["query"]]
        # pages 1-3 stored, page 4 failed; the second run starts at page 4 (location 2 from the start).
        assert afters.count(None) == 3
        done = resumed.get_json()["data"]
        assert (done["count"], done["hasMore"]) == (14, False)  # locations 2 and 3 only
        levels = hub.get("/api/integrations/inventory/levels?limit=100")
        assert levels.status_code == 200, levels.get_data(as_text=True)
        body = levels.get_json()
        items = (body.get("data") or body)["items"]
        keys = [(item["sku"], item["location"]) for item in items]
        assert len(keys) == len(set(keys)) == 21


# --- the hub's transport and signature checks -------------------------------------------------------


def test_transport_failures_and_statuses_map_as_the_core_expects(provider_harness: ProviderHarness) -> None:
    provider_harness.add_plugin(hub_shopify, "shopify")

    def build(url: str, timeout: float) -> Any:
        return provider_harness.build(
            "shopify", {"shop": "hub-test.myshopify.com", "access_token": TOKEN, "api_base": url, "timeout": timeout}
        )

    check_transport_errors(provider_harness, build, call=lambda provider: sync(provider_harness, provider))


def test_webhook_signatures_check(provider_harness: ProviderHarness, provider: Any) -> None:
    def sign(timestamp: float, forged: bool) -> WebhookRequest:
        headers = webhook_headers(WEBHOOK_BODY, signed(WEBHOOK_BODY, "not-the-secret" if forged else SECRET))
        return WebhookRequest(headers=headers, body=WEBHOOK_BODY, url="", form={}, query={})

    events = check_webhook_signatures(provider_harness, provider, sign)
    assert [(event.type, event.details["sku"]) for event in events] == [(INVENTORY_LEVEL_EVENT, "SKU-002")]


def test_a_low_bucket_is_waited_out_before_the_next_page_is_asked_for(
    provider_harness: ProviderHarness, provider: Any, shop: FakeShopify
) -> None:
    now = [100.0]  # one frozen clock for the provider and the server: refills happen only when the test says
    provider.clock = shop.clock = lambda: now[0]
    shop.last_refill = now[0]
    first = sync(provider_harness, provider, page_size=3)
    shop.available = 2.0  # another client of the same app drained the bucket
    with pytest.raises(TransientError) as throttled:
        sync(provider_harness, provider, first.cursor, page_size=3)
    requested = shop_requested_cost(shop)
    sent = len(shop.requests)
    with pytest.raises(TransientError) as waited:  # the provider knows the bucket now: no request is sent
        sync(provider_harness, provider, first.cursor, page_size=3)
    assert len(shop.requests) == sent
    assert waited.value.retry_after == throttled.value.retry_after == pytest.approx((requested - 2) / 50.0, abs=0.001)
    now[0] += waited.value.retry_after  # the core waits that long
    second = sync(provider_harness, provider, first.cursor, page_size=3)
    assert [record["sku"] for record in second.records] == ["SKU-004", "SKU-005", "SKU-006"]


def test_concurrent_syncs_share_pooled_connections(provider_harness: ProviderHarness, shop: FakeShopify) -> None:
    provider_harness.add_plugin(hub_shopify, "shopify")

    def build(url: str, timeout: float) -> Any:
        return provider_harness.build("shopify", settings(shop, api_base=url, timeout=timeout))

    def call(provider: Any, number: int) -> Any:
        page = sync(provider_harness, provider, page_size=1 + number % 5)
        assert page.records and page.has_more
        return page

    results = check_concurrent_use(provider_harness, build, shop.url, threads=4, rounds=3, call=call)
    assert len(results) == 12
