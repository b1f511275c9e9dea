"""hub-pos against a stateful Square fake (:mod:`square_pos_server`) served by hub.testing's ContractServer, which
checks every request and every answer against Square's official description (``squareup.com.json``).

Orders carry fixed timestamps in November 2026 and the provider's clock is pinned to 2026-11-12 18:00 UTC, so
"today" and the days of ``sales_daily`` are the same on every run; catalog and inventory changes use the real time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hub_pos
import pytest
from hub_pos import SquarePos
from square_pos_server import LOCATIONS, TOKEN, SquarePosFake, new_server

from hub.capabilities import InventoryPush, InventoryUpdate, SyncRequest
from hub.errors import ConfigurationError, PermanentError, TransientError, UnsupportedError
from hub.testing import ProviderHarness
from hub.testing.contract_server import ContractServer
from hub.testing.contracts import check_provider_class, check_sync, run_contract
from hub.testing.rest import rest_hub
from hub.testing.specs import spec_or_skip
from hub.testing.transport import check_concurrent_use, check_transport_errors

EAST, WEST = LOCATIONS
TODAY = datetime(2026, 11, 12, 18, 0, tzinfo=UTC)
API = "/api/integrations"


@pytest.fixture(scope="session")
def square_spec() -> dict[str, Any]:
    return spec_or_skip("squareup.com.json", what="Square's official API description")


@pytest.fixture
def square(square_spec: dict[str, Any]) -> Iterator[tuple[ContractServer, SquarePosFake]]:
    server, fake = new_server(square_spec)
    with server:
        yield server, fake
        server.check()
        server.check_requests(allow_refused={"unauthorized"})


@pytest.fixture
def fake(square: tuple[ContractServer, SquarePosFake]) -> SquarePosFake:
    return square[1]


def settings(fake: SquarePosFake, **overrides: Any) -> dict[str, Any]:
    return {"access_token": TOKEN, "api_base": fake.server.url, "timeout": 5.0, **overrides}


@pytest.fixture
def harness(provider_harness: ProviderHarness) -> ProviderHarness:
    provider_harness.add_plugin(hub_pos, "pos")
    return provider_harness


@pytest.fixture
def provider(harness: ProviderHarness, fake: SquarePosFake) -> SquarePos:
    built = harness.build("square-pos", settings(fake))
    built.clock = lambda: TODAY
    return built


def seed(fake: SquarePosFake) -> dict[str, str]:
    """Three items (one variation without a SKU) and orders on 10-12 November at both locations."""
    cola, cola_large = fake.add_item("Cola", [("COLA-S", "Small", 250), ("COLA-L", "Large", 400)])
    [bagel] = fake.add_item("Bagel", [("BAGEL", "Regular", 325)])
    [cookie] = fake.add_item("Cookie", [(None, "Regular", 199)])
    ids = {"cola": cola, "cola_large": cola_large, "bagel": bagel, "cookie": cookie}
    day = "2026-11-{:02d}T{}Z"
    ids["o1"] = fake.add_order(
        EAST,
        [(cola, "2"), (bagel, "1")],
        created_at=day.format(10, "09:00:00.000"),
        closed_at=day.format(10, "09:05:00.000"),
    )
    ids["o2"] = fake.add_order(
        EAST,
        [(cola, "1"), (None, "1")],
        created_at=day.format(10, "23:50:00.000"),
        closed_at=day.format(10, "23:59:59.999"),
    )
    ids["o3"] = fake.add_order(
        WEST, [(cola_large, "3")], created_at=day.format(11, "00:00:00.000"), closed_at=day.format(11, "00:00:00.000")
    )
    ids["o4"] = fake.add_order(
        EAST,
        [(bagel, "4"), (cookie, "2")],
        created_at=day.format(11, "12:00:00.000"),
        closed_at=day.format(11, "12:01:00.000"),
    )
    ids["open"] = fake.add_order(EAST, [(bagel, "9")], created_at=day.format(11, "13:00:00.000"), state="OPEN")
    ids["canceled"] = fake.add_order(
        WEST,
        [(cola, "5")],
        created_at=day.format(11, "14:00:00.000"),
        closed_at=day.format(11, "14:10:00.000"),
        state="CANCELED",
    )
    ids["o5"] = fake.add_order(
        WEST, [(cola, "1.5")], created_at=day.format(12, "10:00:00.000"), closed_at=day.format(12, "10:00:30.000")
    )
    return ids


def sync(
    harness: ProviderHarness,
    provider: Any,
    data_type: str,
    cursor: str | None = None,
    page_size: int = 100,
    **options: Any,
) -> Any:
    request = SyncRequest(
        id="s1", tenant="demo", data_type=data_type, options=options, cursor=cursor, page_size=page_size
    )
    return harness.call(provider, "sync", request=request)


def read_run(
    harness: ProviderHarness,
    provider: Any,
    data_type: str,
    cursor: str | None = None,
    page_size: int = 100,
    **options: Any,
) -> tuple[list[Any], str | None]:
    pages = []
    while True:
        page = sync(harness, provider, data_type, cursor, page_size, **options)
        pages.append(page)
        cursor = page.cursor
        if not page.has_more:
            return pages, cursor


def records(pages: list[Any]) -> list[dict[str, Any]]:
    return [record for page in pages for record in page.records]


# --- the kit ------------------------------------------------------------------------------------------


def test_the_provider_class_meets_the_kit() -> None:
    check_provider_class(SquarePos)
    assert SquarePos.secret_settings == ("access_token",)


def test_the_sync_contract_for_every_stream(harness: ProviderHarness, provider: Any, fake: SquarePosFake) -> None:
    seed(fake)
    for variation_id in list(fake.state["objects"]):
        if fake.state["objects"][variation_id]["type"] == "ITEM_VARIATION":
            for location in LOCATIONS:
                fake.set_count(variation_id, location, "7")
    fake.inventory_page_size = 3  # Square's page size is Square's: the provider cuts it to the hub's
    results = run_contract(harness, provider, data_type="sales", expect_min=7)
    assert {r["id"] for r in results["sync"].records} == set(fake.state["orders"])
    assert results["health"].status == "success"
    daily = check_sync(harness, provider, "sales_daily", expect_min=6, options={"start_date": "2026-11-10"})
    assert {r["date"] for r in daily.records} == {"2026-11-10", "2026-11-11", "2026-11-12"}
    catalog = check_sync(harness, provider, "catalog", expect_min=4)
    assert len(catalog.records) == 4
    inventory = check_sync(harness, provider, "inventory", expect_min=8)
    assert len(inventory.records) == 8
    assert {request.header("square-version") for request in fake.server.requests} == {"2021-08-18"}


def test_an_unknown_data_type_is_unsupported_and_names_the_offered_ones(
    harness: ProviderHarness, provider: Any
) -> None:
    with pytest.raises(UnsupportedError) as raised:
        sync(harness, provider, "customers")
    assert "sales_daily" in str(raised.value) and "catalog" in str(raised.value)


def test_a_bad_token_is_a_configuration_error(harness: ProviderHarness, fake: SquarePosFake) -> None:
    wrong = harness.build("square-pos", settings(fake, access_token="EAAA-wrong"))
    with pytest.raises(ConfigurationError) as raised:
        sync(harness, wrong, "sales")
    assert "UNAUTHORIZED" in str(raised.value) and "EAAA-wrong" not in str(raised.value)
    assert harness.call(wrong, "health").status == "error"


def test_a_bad_start_date_or_cursor_is_permanent(harness: ProviderHarness, provider: Any) -> None:
    with pytest.raises(PermanentError):
        sync(harness, provider, "sales_daily", start_date="12/11/2026")
    with pytest.raises(PermanentError):
        sync(harness, provider, "sales", cursor='{"v":1,"s":"catalog"}')


# --- sales ----------------------------------------------------------------------------------------------


def test_sales_pages_follow_squares_cursor_with_the_same_query(
    harness: ProviderHarness, provider: Any, fake: SquarePosFake
) -> None:
    ids = seed(fake)
    pages, _ = read_run(harness, provider, "sales", page_size=2)
    got = records(pages)
    assert [len(page.records) for page in pages] == [2, 2, 2, 1]
    assert len({r["id"] for r in got}) == len(got) == 7
    assert [r["updated_at"] for r in got] == sorted(r["updated_at"] for r in got)
    searches = [r.body for r in fake.calls("SearchOrders")]
    assert [s.get("cursor") is None for s in searches] == [True, False, False, False]
    assert all(s["location_ids"] == sorted(LOCATIONS) and s["limit"] == 2 for s in searches)
    assert all(s["query"]["sort"] == {"sort_field": "UPDATED_AT", "sort_order": "ASC"} for s in searches)
    first = next(r for r in got if r["id"] == ids["o1"])
    assert first["location"] == EAST and first["state"] == "COMPLETED"
    assert (first["total"], first["total_minor"], first["currency"]) == ("8.25", 825, "USD")
    assert first["line_items"][0] == {
        "uid": "line-0",
        "sku": "COLA-S",
        "variation_id": ids["cola"],
        "name": "Cola",
        "variation_name": "Small",
        "quantity": "2",
        "gross_sales": "5.00",
        "gross_sales_minor": 500,
        "total": "5.00",
        "total_minor": 500,
        "currency": "USD",
    }
    custom = next(r for r in got if r["id"] == ids["o2"])["line_items"][1]
    assert custom["sku"] is None and custom["variation_id"] is None
    cookie = next(r for r in got if r["id"] == ids["o4"])["line_items"][1]
    assert cookie["sku"] == ids["cookie"]  # no SKU in Square: the variation id stands in
    assert len(fake.calls("BatchRetrieveCatalogObjects")) <= 4  # line items' variations are cached


def test_more_than_ten_locations_are_searched_ten_at_a_time(
    harness: ProviderHarness, provider: Any, fake: SquarePosFake
) -> None:
    fake.state["locations"] = [f"L{n:02d}" for n in range(12)]
    [tea] = fake.add_item("Tea", [("TEA", "Cup", 300)])
    for n in range(12):
        fake.add_order(f"L{n:02d}", [(tea, "1")], created_at=f"2026-11-10T10:{n:02d}:00.000Z")
    pages, _ = read_run(harness, provider, "sales", page_size=100)
    assert len({r["id"] for r in records(pages)}) == 12
    assert [len(r.body["location_ids"]) for r in fake.calls("SearchOrders")] == [10, 2]


def test_an_incremental_run_reads_only_changed_orders_and_the_lookback(
    harness: ProviderHarness, fake: SquarePosFake, tmp_path: Path
) -> None:
    ids = seed(fake)
    with _hub(tmp_path, fake, lookback_seconds=120) as api:
        first = api.post(f"{API}/sync", {"dataType": "sales", "async": False, "pageSize": 3})
        assert first.status_code == 200, first.get_data(as_text=True)
        assert first.get_json()["data"]["count"] == 7
        # o5 (updated 10:00:30 on the 12th) is the high-water mark. Within the 2-minute lookback before it: a late
        # write Square stamped 10:00:00 (an offline device). After it: o1 changed, and a new order.
        late = fake.add_order(
            WEST,
            [(ids["bagel"], "1")],
            created_at="2026-11-12T09:58:00.000Z",
            closed_at="2026-11-12T09:59:00.000Z",
            updated_at="2026-11-12T10:00:00.000Z",
        )
        fake.update_order(ids["o1"], "2026-11-12T11:00:00.000Z", quantities={0: "3"})
        new = fake.add_order(
            EAST, [(ids["cola"], "1")], created_at="2026-11-12T12:00:00.000Z", closed_at="2026-11-12T12:00:00.000Z"
        )
        second = api.post(f"{API}/sync", {"dataType": "sales", "async": False, "pageSize": 3})
        assert second.status_code == 200, second.get_data(as_text=True)
        since = [r.body["query"].get("filter") for r in fake.calls("SearchOrders")][-1]
        assert since == {"date_time_filter": {"updated_at": {"start_at": "2026-11-12T09:58:30.000Z"}}}
        # Read again: o5 itself (inside the lookback), the late order, o1 changed, the new one -- nothing older.
        assert second.get_json()["data"]["count"] == 4
        stored = _stored(api, "sales")
        assert len(stored) == 9 and {late, new} <= set(stored)
        assert stored[ids["o1"]]["line_items"][0]["quantity"] == "3"
        assert stored[ids["o1"]]["total_minor"] == 1075


def _hub(tmp_path: Path, fake: SquarePosFake, retry: dict[str, Any] | None = None, **overrides: Any) -> Any:
    return rest_hub(
        tmp_path,
        plugins=[(hub_pos, "pos")],
        providers={"pos": {"type": "square-pos", **settings(fake, **overrides)}},
        services={"externalAPI": {"providers": ["pos"]}},
        retry=retry or {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05, "jitter": 0.01},
    )


def _stored(api: Any, data_type: str) -> dict[str, Any]:
    answer = api.get(f"{API}/sync/records?dataType={data_type}&limit=500")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    items = answer.get_json()["data"]["items"]
    if data_type == "sales_daily":
        return {(i["record"]["sku"], i["record"]["date"], i["record"]["location"]): i["record"] for i in items}
    return {i["record"]["id"]: i["record"] for i in items}


def test_an_interrupted_sync_resumes_through_the_hub_without_loss_or_duplicates(
    fake: SquarePosFake, tmp_path: Path
) -> None:
    seed(fake)
    with _hub(tmp_path, fake) as api:
        served = {"pages": 0}
        search = fake.server._handlers["SearchOrders"]

        def failing(request: Any, state: dict[str, Any]) -> Any:
            served["pages"] += 1
            if served["pages"] >= 3:  # page 3 and its retry fail
                return 500, {
                    "errors": [
                        {
                            "category": "API_ERROR",
                            "code": "INTERNAL_SERVER_ERROR",
                            "detail": "An internal error occurred.",
                        }
                    ]
                }
            return search(request, state)

        fake.server.register("SearchOrders", failing)
        failed = api.post(f"{API}/sync", {"dataType": "sales", "async": False, "pageSize": 2})
        assert failed.status_code == 503, failed.get_data(as_text=True)
        assert "INTERNAL_SERVER_ERROR" in failed.get_data(as_text=True)
        assert len(_stored(api, "sales")) == 4  # pages 1 and 2 were stored with their cursor
        fake.server.register("SearchOrders", search)
        resumed = api.post(f"{API}/sync", {"dataType": "sales", "async": False, "pageSize": 2})
        assert resumed.status_code == 200, resumed.get_data(as_text=True)
        assert resumed.get_json()["data"]["count"] == 3  # pages 3 and 4 only
        bodies = [r.body for r in fake.calls("SearchOrders")]
        assert bodies[-2].get("cursor") and bodies[-2].get("cursor") == bodies[2].get("cursor")
        stored = _stored(api, "sales")
        assert len(stored) == 7 and set(stored) == set(fake.state["orders"])


def test_429_with_retry_after_is_transient_and_the_hub_waits(
    harness: ProviderHarness, provider: Any, fake: SquarePosFake, tmp_path: Path
) -> None:
    seed(fake)
    fake.fail("SearchOrders", 429, retry_after="7")
    with pytest.raises(TransientError) as raised:
        sync(harness, provider, "sales")
    assert raised.value.retry_after == 7 and raised.value.provider_code == "RATE_LIMITED"
    assert "RATE_LIMIT_ERROR" in str(raised.value)
    fake.fail("SearchOrders", 503)
    with pytest.raises(TransientError):
        sync(harness, provider, "sales")
    fake.fail("SearchOrders", 429, retry_after="1")
    with _hub(tmp_path, fake, retry={"attempts": 3, "initial_delay": 0.01, "max_delay": 2.0, "jitter": 0.0}) as api:
        started = time.monotonic()
        done = api.post(f"{API}/sync", {"dataType": "sales", "async": False})
        assert done.status_code == 200, done.get_data(as_text=True)
        assert time.monotonic() - started >= 1.0
        assert done.get_json()["data"]["count"] == 7
    assert [r.status for r in fake.calls("SearchOrders")][-2:] == [429, 200]


# --- sales_daily -------------------------------------------------------------------------------------------


def _daily(pages: list[Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["sku"], r["date"], r["location"]): r for r in records(pages)}


def test_daily_aggregates_units_and_revenue_per_sku_day_and_location(
    harness: ProviderHarness, provider: Any, fake: SquarePosFake
) -> None:
    ids = seed(fake)
    pages, cursor = read_run(harness, provider, "sales_daily", page_size=100, start_date="2026-11-10")
    assert all(page.primary_key == ("sku", "date", "location") for page in pages)
    daily = _daily(pages)
    summary = {key: (r["units"], r["revenue"], r["orders"]) for key, r in daily.items()}
    assert summary == {
        ("COLA-S", "2026-11-10", EAST): ("3", {"USD": "7.50"}, 2),  # o1 + o2 (23:59:59.999 is still the 10th)
        ("BAGEL", "2026-11-10", EAST): ("1", {"USD": "3.25"}, 1),
        ("COLA-L", "2026-11-11", WEST): ("3", {"USD": "12.00"}, 1),  # midnight belongs to the 11th
        ("BAGEL", "2026-11-11", EAST): ("4", {"USD": "13.00"}, 1),  # the OPEN order's 9 bagels do not count
        (ids["cookie"], "2026-11-11", EAST): ("2", {"USD": "3.98"}, 1),  # no SKU: the variation id
        ("COLA-S", "2026-11-12", WEST): ("1.5", {"USD": "3.75"}, 1),  # the CANCELED order does not count
    }
    assert daily[("COLA-S", "2026-11-10", EAST)]["revenue_minor"] == {"USD": 750}
    assert daily[("COLA-S", "2026-11-10", EAST)]["returned_units"] == "0"
    assert daily[("COLA-S", "2026-11-10", EAST)]["name"] == "Cola - Small"
    # One page per day; each day's orders read with an inclusive closed_at window of that day.
    assert [sorted({r["date"] for r in page.records}) for page in pages] == [
        ["2026-11-10"],
        ["2026-11-11"],
        ["2026-11-12"],
    ]
    windows = [r.body["query"]["filter"]["date_time_filter"]["closed_at"] for r in fake.calls("SearchOrders")]
    assert windows[0] == {"start_at": "2026-11-10T00:00:00.000Z", "end_at": "2026-11-10T23:59:59.999Z"}
    assert all(
        r.body["query"]["filter"]["state_filter"] == {"states": ["COMPLETED"]} for r in fake.calls("SearchOrders")
    )

    # Later: o1 is changed (2 small colas -> 5), an offline device uploads a sale closed on the 11th, and a sale
    # happens today. The next run re-aggregates the 10th and 11th (found by updated_at) and today, nothing else.
    fake.update_order(ids["o1"], "2026-11-12T18:30:00.000Z", quantities={0: "5"})
    fake.add_order(
        WEST,
        [(ids["cola_large"], "2")],
        created_at="2026-11-11T15:00:00.000Z",
        closed_at="2026-11-11T15:00:00.000Z",
        updated_at="2026-11-12T18:40:00.000Z",
    )
    fake.add_order(
        WEST, [(ids["cola"], "1")], created_at="2026-11-12T18:45:00.000Z", closed_at="2026-11-12T18:45:00.000Z"
    )
    fake.add_order(  # a customer brings back one bagel bought on the 10th: a return order of today
        EAST,
        [],
        created_at="2026-11-12T18:50:00.000Z",
        closed_at="2026-11-12T18:50:00.000Z",
        returns=[(ids["bagel"], "1")],
        source_order_id=ids["o1"],
    )
    provider.clock = lambda: datetime(2026, 11, 12, 19, 0, tzinfo=UTC)
    before = len(fake.calls("SearchOrders"))
    pages, _ = read_run(harness, provider, "sales_daily", cursor=cursor, page_size=100, start_date="2026-11-10")
    again = _daily(pages)
    scan = fake.calls("SearchOrders")[before].body["query"]["filter"]
    assert scan["date_time_filter"] == {"updated_at": {"start_at": "2026-11-12T17:55:00.000Z"}}  # run start - 5 min
    assert sorted({key[1] for key in again}) == ["2026-11-10", "2026-11-11", "2026-11-12"]
    assert again[("COLA-S", "2026-11-10", EAST)]["units"] == "6"
    assert again[("COLA-S", "2026-11-10", EAST)]["revenue"] == {"USD": "15.00"}
    assert again[("COLA-L", "2026-11-11", WEST)]["units"] == "5"
    assert again[("COLA-S", "2026-11-12", WEST)]["units"] == "2.5"
    assert again[("BAGEL", "2026-11-10", EAST)]["units"] == "1"
    returned = again[("BAGEL", "2026-11-12", EAST)]
    assert (returned["units"], returned["orders"], returned["revenue"]) == ("0", 0, {})
    assert (returned["returned_units"], returned["returned"], returned["returned_minor"]) == (
        "1",
        {"USD": "3.25"},
        {"USD": 325},
    )

    # Nothing changed: the next run reads only the scan and today.
    provider.clock = lambda: datetime(2026, 11, 12, 20, 0, tzinfo=UTC)
    pages, _ = read_run(harness, provider, "sales_daily", cursor=pages[-1].cursor, start_date="2026-11-10")
    assert sorted({key[1] for key in _daily(pages)}) == ["2026-11-12"]


def test_a_day_larger_than_the_page_is_served_in_slices(
    harness: ProviderHarness, provider: Any, fake: SquarePosFake
) -> None:
    seed(fake)
    pages, _ = read_run(harness, provider, "sales_daily", page_size=1, start_date="2026-11-10")
    assert [len(page.records) for page in pages] == [1, 1, 1, 1, 1, 1]
    assert len(_daily(pages)) == 6


def test_daily_sync_through_the_hub_resumes_after_a_failed_day(fake: SquarePosFake, tmp_path: Path) -> None:
    ids = seed(fake)
    with _hub(tmp_path, fake) as api:
        provider = _provider(api)
        provider.clock = lambda: TODAY
        fake.fail("SearchOrders", 500, times=3)
        body = {"dataType": "sales_daily", "async": False, "options": {"start_date": "2026-11-10"}}
        first = api.post(f"{API}/sync", body)
        assert first.status_code == 503, first.get_data(as_text=True)
        fake.faults.clear()
        done = api.post(f"{API}/sync", body)
        assert done.status_code == 200, done.get_data(as_text=True)
        stored = _stored(api, "sales_daily")
        assert len(stored) == 6 and stored[("COLA-S", "2026-11-10", EAST)]["units"] == "3"
        fake.update_order(ids["o4"], "2026-11-12T18:10:00.000Z", quantities={0: "1"})
        provider.clock = lambda: datetime(2026, 11, 12, 19, 0, tzinfo=UTC)
        assert api.post(f"{API}/sync", body).status_code == 200
        stored = _stored(api, "sales_daily")
        assert stored[("BAGEL", "2026-11-11", EAST)]["units"] == "1"
        assert stored[("BAGEL", "2026-11-11", EAST)]["revenue"] == {"USD": "3.25"}


def _provider(api: Any) -> SquarePos:
    built = api.hub.registry.instance("pos", None)
    assert isinstance(built, SquarePos)
    return built


# --- catalog and inventory ------------------------------------------------------------------------------------


def test_catalog_pages_and_incremental_changes_with_deletions(
    harness: ProviderHarness, provider: Any, fake: SquarePosFake
) -> None:
    ids = seed(fake)
    pages, cursor = read_run(harness, provider, "catalog", page_size=3)
    got = {r["id"]: r for r in records(pages)}
    assert [len(page.records) for page in pages] == [3, 1]
    assert got[ids["cola_large"]] == {
        "id": ids["cola_large"],
        "sku": "COLA-L",
        "name": "Cola - Large",
        "item_id": got[ids["cola"]]["item_id"],
        "item_name": "Cola",
        "variation_name": "Large",
        "price": "4.00",
        "price_minor": 400,
        "currency": "USD",
        "pricing_type": "FIXED_PRICING",
        "track_inventory": True,
        "updated_at": fake.state["objects"][ids["cola_large"]]["updated_at"],
        "version": 1,
        "deleted": False,
    }
    time.sleep(0.01)
    fake.change_variation(ids["bagel"], price_money={"amount": 350, "currency": "USD"})
    fake.delete_variation(ids["cookie"])
    pages, _ = read_run(harness, provider, "catalog", cursor=cursor, page_size=3)
    changed = {r["id"]: r for r in records(pages)}
    # The lookback re-reads everything changed in the last 5 minutes (here: all of it); the deletion shows.
    assert changed[ids["bagel"]]["price"] == "3.50" and changed[ids["cookie"]]["deleted"] is True
    assert fake.calls("SearchCatalogObjects")[-1].body["include_deleted_objects"] is True


def test_inventory_levels_and_pushed_changes(harness: ProviderHarness, provider: Any, fake: SquarePosFake) -> None:
    ids = seed(fake)
    fake.set_count(ids["cola"], EAST, "12")
    fake.set_count(ids["bagel"], WEST, "3.5")
    pages, cursor = read_run(harness, provider, "inventory")
    levels = {(r["sku"], r["location"]): r["quantity"] for r in records(pages)}
    assert levels == {("COLA-S", EAST): 12, ("BAGEL", WEST): 3.5}
    result = harness.call(
        provider,
        "sync_push",
        push=InventoryPush(
            id="p1",
            tenant="demo",
            updates=[
                InventoryUpdate("COLA-S", EAST, 20, "set", id="u-set"),
                InventoryUpdate("COLA-S", EAST, -3, "adjust", reason="sale", id="u-sale"),
                InventoryUpdate("BAGEL", WEST, 2, "adjust", id="u-in"),
                InventoryUpdate("NO-SUCH", EAST, 1, "set", id="u-unknown"),
                InventoryUpdate("BAGEL", "L-NOWHERE", 1, "set", id="u-nowhere"),
            ],
        ),
    )
    assert [(r.status, r.quantity) for r in result.results[:3]] == [("sent", 20), ("sent", 17), ("sent", 5.5)]
    assert [r.status for r in result.results[3:]] == ["failed", "failed"]
    assert "NO-SUCH" in result.results[3].error and "L-NOWHERE" in result.results[4].error
    bodies = [r.body for r in fake.calls("BatchChangeInventory")]
    assert [b["idempotency_key"] for b in bodies] == ["u-set", "u-sale", "u-in", "u-nowhere"]
    assert bodies[0]["changes"][0]["type"] == "PHYSICAL_COUNT"
    assert bodies[1]["changes"][0]["adjustment"]["from_state"] == "IN_STOCK"
    assert bodies[1]["changes"][0]["adjustment"]["to_state"] == "SOLD"
    assert bodies[2]["changes"][0]["adjustment"]["from_state"] == "NONE"
    # A retried push (same update ids) is applied once: Square answers the same key with the first result.
    again = harness.call(
        provider,
        "sync_push",
        push=InventoryPush(
            id="p1", tenant="demo", updates=[InventoryUpdate("COLA-S", EAST, -3, "adjust", reason="sale", id="u-sale")]
        ),
    )
    assert again.results[0].status == "sent"
    assert fake.state["counts"][(ids["cola"], EAST, "IN_STOCK")]["quantity"] == "17"
    pages, _ = read_run(harness, provider, "inventory", cursor=cursor)
    assert {(r["sku"], r["location"]): r["quantity"] for r in records(pages)}[("COLA-S", EAST)] == 17


def test_a_push_stopped_by_a_rate_limit_leaves_the_rest_to_retry(
    harness: ProviderHarness, provider: Any, fake: SquarePosFake
) -> None:
    ids = seed(fake)
    fake.set_count(ids["cola"], EAST, "1")
    updates = [InventoryUpdate("COLA-S", EAST, 4, "set", id="a"), InventoryUpdate("COLA-S", EAST, 1, "adjust", id="b")]
    fake.fail("BatchChangeInventory", 429, retry_after="2")
    with pytest.raises(TransientError):  # nothing applied: the whole push is retried
        harness.call(provider, "sync_push", push=InventoryPush(id="p", tenant="demo", updates=updates))
    harness.call(provider, "sync_push", push=InventoryPush(id="p", tenant="demo", updates=updates[:1]))
    fake.fail("BatchChangeInventory", 503, after=1)  # the second update of the next push meets a 503
    result = harness.call(
        provider,
        "sync_push",
        push=InventoryPush(
            id="q", tenant="demo", updates=[InventoryUpdate("COLA-S", EAST, 6, "set", id="c"), *updates[1:]]
        ),
    )
    assert [r.status for r in result.results] == ["sent", "retry"]
    assert "503" in (result.results[1].error or "") or "INTERNAL" in (result.results[1].error or "")
    assert fake.state["counts"][(ids["cola"], EAST, "IN_STOCK")]["quantity"] == "6"


# --- the hub's transport checks ---------------------------------------------------------------------------


def test_transport_failures_and_statuses_map_as_the_core_expects(harness: ProviderHarness) -> None:
    def build(url: str, timeout: float) -> Any:
        return harness.build(
            "square-pos", {"access_token": TOKEN, "api_base": url, "timeout": timeout, "location_ids": [EAST]}
        )

    check_transport_errors(harness, build, call=lambda provider: sync(harness, provider, "sales"))


def test_concurrent_syncs_share_pooled_connections(harness: ProviderHarness, fake: SquarePosFake) -> None:
    seed(fake)

    def build(url: str, timeout: float) -> Any:
        return harness.build("square-pos", settings(fake, api_base=url, timeout=timeout))

    def call(provider: Any, number: int) -> Any:
        page = sync(harness, provider, "sales", page_size=1 + number % 3)
        assert len(page.records) == 1 + number % 3 and page.has_more
        return page

    assert len(check_concurrent_use(harness, build, fake.server.url, threads=4, rounds=3, call=call)) == 12
