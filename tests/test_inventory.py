"""The inventory store over several sync sources: discrepancies, low-stock alerts once per crossing, manual
overrides pushed to writable sources, shared location names, stale marking, per-SKU history, sync metrics and
``hub sync run``.

Two built-in ``file-source`` providers read real files in the test's data folder (an ERP export and a WMS export);
queued jobs (alerts, events, pushes) are run as a worker runs them; notifications go to the outbox notifier and
events to the local event log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from hub import IntegrationManager, hookimpl
from hub.api import create_app
from hub.capabilities import Provider, ProviderContext, SyncRequest, SyncResult
from hub.cli import main as cli
from hub.records import AuditEntry, InventoryLevel, Record, SyncCheckpoint
from tests.conftest import API, base_config, data_of, error_of

TENANT = "demo"
_clock = [datetime(2026, 1, 1, tzinfo=UTC)]


def write_levels(folder: Path, *rows: tuple[str, str, float]) -> None:
    """The source's export: every row gets a later ``updated_at`` so an incremental sync reads it."""
    _clock[0] += timedelta(minutes=1)
    stamp = _clock[0].isoformat()
    records = [{"sku": sku, "location": location, "quantity": quantity, "updated_at": stamp} for sku, location, quantity in rows]
    existing = json.loads((folder / "inventory.json").read_text()) if (folder / "inventory.json").exists() else []
    keep = [row for row in existing if (row["sku"], row["location"]) not in {(sku, location) for sku, location, _ in rows}]
    (folder / "inventory.json").write_text(json.dumps(keep + records))


def work(hub: IntegrationManager) -> list[Record]:
    """Run every queued job, as a worker would, until none is left; returns the records run."""
    ran = []
    for _ in range(20):
        with hub.db.session() as session:
            queued = list(session.scalars(select(Record).where(Record.status == "queued").order_by(Record.created_at)))
        if not queued:
            return ran
        for record in queued:
            hub.run_record(record.id)
            ran.append(record)
    raise AssertionError("jobs keep queueing")


def records_of(hub: IntegrationManager, kind: str, **payload: Any) -> list[Record]:
    with hub.db.session() as session:
        rows = list(session.scalars(select(Record).where(Record.kind == kind).order_by(Record.created_at)))
    return [row for row in rows if all(row.payload.get(key) == value for key, value in payload.items())]


def outbox(data_dir: Path, channel: str) -> list[dict[str, Any]]:
    folder = data_dir / "outbox" / TENANT / channel
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))] if folder.exists() else []


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    paths = {"erp": tmp_path / "erp", "wms": tmp_path / "wms"}
    for path in paths.values():
        path.mkdir()
    return paths


def make_config(tmp_path: Path, folders: dict[str, Path], database_url: str | None = None, **inventory: Any) -> dict[str, Any]:
    settings = {
        "stale_after": 3600,
        "sources": {"wms": {"locations": {"WH-A": "WAREHOUSE-A"}}},
        "low_stock": {
            "thresholds": [{"sku": "WIDGET-001", "location": "WAREHOUSE-A", "threshold": 10}],
            "notify": [{"channel": "chat"}, {"channel": "email", "recipients": [{"email": "ops@example.com"}]}],
        },
        **inventory,
    }
    return base_config(
        tmp_path / "var",
        {"erp": {"type": "file-source", "directory": str(folders["erp"])}, "wms": {"type": "file-source", "directory": str(folders["wms"])}},
        {"externalAPI": {"providers": ["erp", "wms"]}},
        inventory=settings,
        **({"database_url": database_url} if database_url else {}),
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request: pytest.FixtureRequest, tmp_path: Path, folders: dict[str, Path]) -> Iterator[IntegrationManager]:
    """The store on SQLite (the default) and on the machine's PostgreSQL (the same SQL must hold on both)."""
    database_url = str(request.getfixturevalue("postgres_url")) if request.param == "postgresql" else None
    manager = IntegrationManager(make_config(tmp_path, folders, database_url), environ={}, entry_points=False)
    yield manager
    manager.close()


@pytest.fixture
def client(hub: IntegrationManager) -> Any:
    return create_app(manager=hub).test_client()


@pytest.fixture
def headers(hub: IntegrationManager) -> dict[str, str]:
    return {"Authorization": f"Bearer {hub.tokens.create(TENANT, 'ops-desk')[1]}", "X-Tenant-ID": TENANT}


def test_sources_that_disagree_open_one_discrepancy_with_one_event_until_they_agree(
    hub: IntegrationManager, folders: dict[str, Path], client: Any, headers: dict[str, str]
) -> None:
    write_levels(folders["erp"], ("WIDGET-001", "WAREHOUSE-A", 40), ("GADGET-9", "WAREHOUSE-A", 7))
    write_levels(folders["wms"], ("WIDGET-001", "WH-A", 40), ("GADGET-9", "WH-A", 5))
    results = hub.sync_all_inventory(TENANT)
    assert {name: result["success"] for name, result in results.items()} == {"erp": True, "wms": True}

    # The WMS's WH-A is the hub's WAREHOUSE-A: one location, compared across the two sources.
    levels = data_of(client.get(f"{API}/inventory/levels?sku=GADGET-9", headers=headers))["items"]
    assert {(level["provider"], level["location"], level["quantity"]) for level in levels} == {("erp", "WAREHOUSE-A", 7), ("wms", "WAREHOUSE-A", 5)}
    assert all(level["stale"] is False and level["lastSyncedAt"] for level in levels)
    open_ = data_of(client.get(f"{API}/inventory/discrepancies", headers=headers))["items"]
    assert [(item["sku"], item["location"], item["quantities"], item["difference"], item["status"]) for item in open_] == [
        ("GADGET-9", "WAREHOUSE-A", {"erp": 7, "wms": 5}, 2, "open")
    ]
    events = records_of(hub, "event", eventType="inventory.level.discrepancy")
    assert len(events) == 1 and events[0].payload["data"] | {"detectedAt": None} == {
        "sku": "GADGET-9", "location": "WAREHOUSE-A", "expected": 7, "actual": 5, "source": "wms", "detectedAt": None,
    }

    # Syncing the same disagreement again reports nothing new.
    write_levels(folders["wms"], ("GADGET-9", "WH-A", 5))
    hub.sync_all_inventory(TENANT)
    assert len(records_of(hub, "event", eventType="inventory.level.discrepancy")) == 1

    # They agree again: resolved, and listed as such.
    write_levels(folders["wms"], ("GADGET-9", "WH-A", 7))
    hub.sync_all_inventory(TENANT)
    assert data_of(client.get(f"{API}/inventory/discrepancies", headers=headers))["items"] == []
    resolved = data_of(client.get(f"{API}/inventory/discrepancies?status=resolved", headers=headers))["items"]
    assert [item["status"] for item in resolved] == ["resolved"] and resolved[0]["resolvedAt"]
    work(hub)
    assert all(record.status == "succeeded" for record in records_of(hub, "event"))
    assert error_of(client.get(f"{API}/inventory/discrepancies?status=maybe", headers=headers), 422)["errors"] == {"status": ["Must be one of: open, resolved, all."]}


def test_a_level_falling_below_its_threshold_alerts_once_per_crossing(hub: IntegrationManager, folders: dict[str, Path], tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    write_levels(folders["erp"], ("WIDGET-001", "WAREHOUSE-A", 12))
    hub.sync_external_data(TENANT, "inventory", provider="erp")
    work(hub)
    assert records_of(hub, "stock_alert") == [] and outbox(data_dir, "chat") == []

    write_levels(folders["erp"], ("WIDGET-001", "WAREHOUSE-A", 5))
    hub.sync_external_data(TENANT, "inventory", provider="erp")
    work(hub)
    alerts = records_of(hub, "stock_alert")
    assert [(alert.status, alert.payload["data"]) for alert in alerts] == [
        ("succeeded", {"sku": "WIDGET-001", "location": "WAREHOUSE-A", "current_stock": 5, "threshold": 10, "source": "erp"})
    ]
    chat, email = outbox(data_dir, "chat"), outbox(data_dir, "email")
    assert len(chat) == 1 and len(email) == 1
    assert "WIDGET-001" in json.dumps(chat[0]) and email[0]["recipients"][0]["address"] == "ops@example.com"
    stock_events = records_of(hub, "event", eventType="inventory.stock.updated")
    assert [(event.payload["data"]["oldQuantity"], event.payload["data"]["newQuantity"], event.status) for event in stock_events] == [(12, 5, "succeeded")]

    # Still low on the next syncs: no second alert. Back above and down again: a new crossing, a new alert.
    for quantity, alerts_expected in ((4, 1), (4, 1), (15, 1), (3, 2)):
        write_levels(folders["erp"], ("WIDGET-001", "WAREHOUSE-A", quantity))
        hub.sync_external_data(TENANT, "inventory", provider="erp")
        work(hub)
        assert len(records_of(hub, "stock_alert")) == alerts_expected, quantity
    assert len(outbox(data_dir, "chat")) == 2 and len(outbox(data_dir, "email")) == 2
    assert [item["sku"] for item in hub.sync.inventory.low_stock(TENANT)] == ["WIDGET-001"]


def test_an_override_is_recorded_with_who_and_why_and_pushed_to_writable_sources(
    hub: IntegrationManager, folders: dict[str, Path], client: Any, headers: dict[str, str]
) -> None:
    write_levels(folders["erp"], ("WIDGET-001", "WAREHOUSE-A", 40))
    write_levels(folders["wms"], ("WIDGET-001", "WH-A", 40))
    hub.sync_all_inventory(TENANT)

    refused = error_of(client.put(f"{API}/inventory/WIDGET-001/WAREHOUSE-A", json={"quantity": 8}, headers=headers), 422)
    assert set(refused["errors"]) == {"reason"}
    assert set(error_of(client.put(f"{API}/inventory/WIDGET-001/WAREHOUSE-A", json={"quantity": -1, "reason": "x"}, headers=headers), 422)["errors"]) == {"quantity"}

    body = {"quantity": 8, "reason": "cycle count: 32 units damaged"}
    done = data_of(client.put(f"{API}/inventory/WIDGET-001/WAREHOUSE-A", json=body, headers=headers))
    assert done["by"] == "token:ops-desk" and done["previous"] is None and done["quantity"] == 8
    assert sorted(push["provider"] for push in done["pushes"]) == ["erp", "wms"]
    work(hub)
    for push in done["pushes"]:
        view = data_of(client.get(f"{API}/inventory/updates/{push['jobId']}", headers=headers))
        assert (view["status"], view["sent"]) == ("succeeded", 1), view
    # Each file now says 8, the WMS under its own name for the location.
    assert {(row["location"], row["quantity"]) for row in json.loads((folders["wms"] / "inventory.json").read_text())} == {("WH-A", 8)}
    assert {(row["location"], row["quantity"]) for row in json.loads((folders["erp"] / "inventory.json").read_text())} == {("WAREHOUSE-A", 8)}

    levels = {level["provider"]: level["quantity"] for level in hub.inventory_levels(TENANT, sku="WIDGET-001")}
    assert levels == {"override": 8, "erp": 8, "wms": 8}
    history = data_of(client.get(f"{API}/inventory/WIDGET-001/history", headers=headers))["items"]
    override = [item for item in history if item["source"] == "override"]
    assert [(item["quantity"], item["by"], item["reason"]) for item in override] == [(8, "token:ops-desk", body["reason"])]
    assert [item["source"] for item in history] == ["sync", "sync", "override", "push", "push"]
    with hub.db.session() as session:
        audit = session.scalars(select(AuditEntry).where(AuditEntry.operation == "inventory_override")).all()
    assert len(audit) == 1 and "by token:ops-desk" in audit[0].detail

    # The level fell below its threshold by hand: alerted once, not again when the sources confirm it.
    assert len(records_of(hub, "stock_alert")) == 1
    hub.sync_all_inventory(TENANT, full_resync=True)
    work(hub)
    assert len(records_of(hub, "stock_alert")) == 1


def test_history_by_sku_between_two_times_and_at_one_location(hub: IntegrationManager, folders: dict[str, Path], client: Any, headers: dict[str, str]) -> None:
    for quantity in (30, 25, 20):
        write_levels(folders["erp"], ("WIDGET-001", "WAREHOUSE-A", quantity), ("WIDGET-001", "STORE-1", quantity + 1))
        hub.sync_external_data(TENANT, "inventory", provider="erp")
    everything = data_of(client.get(f"{API}/inventory/WIDGET-001/history?location=WAREHOUSE-A", headers=headers))["items"]
    assert [(item["previous"], item["quantity"]) for item in everything] == [(None, 30), (30, 25), (25, 20)]
    second = everything[1]["at"]
    window = data_of(client.get(f"{API}/inventory/WIDGET-001/history", query_string={"from": second, "location": "WAREHOUSE-A"}, headers=headers))["items"]
    assert [item["quantity"] for item in window] == [25, 20]
    before = data_of(client.get(f"{API}/inventory/WIDGET-001/history", query_string={"to": second}, headers=headers))["items"]
    assert sorted(item["quantity"] for item in before) == [30, 31]
    assert error_of(client.get(f"{API}/inventory/NOPE/history", headers=headers), 404)
    assert set(error_of(client.get(f"{API}/inventory/WIDGET-001/history", query_string={"from": second, "to": second}, headers=headers), 422)["errors"]) == {"to"}
    assert set(error_of(client.get(f"{API}/inventory/WIDGET-001/history?from=yesterday", headers=headers), 422)["errors"]) == {"from"}


def test_levels_of_a_source_not_synced_for_too_long_are_served_marked_stale(hub: IntegrationManager, folders: dict[str, Path], client: Any, headers: dict[str, str]) -> None:
    write_levels(folders["erp"], ("WIDGET-001", "WAREHOUSE-A", 40))
    write_levels(folders["wms"], ("WIDGET-001", "WH-A", 40))
    hub.sync_all_inventory(TENANT)
    # The WMS went down two hours ago: its last good levels are still served, with their age.
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    with hub.db.session() as session:
        session.execute(update(SyncCheckpoint).where(SyncCheckpoint.provider == "wms").values(completed_at=two_hours_ago))
        session.execute(update(InventoryLevel).where(InventoryLevel.provider == "wms").values(updated_at=two_hours_ago))
    (folders["wms"] / "inventory.json").write_text("not json")  # and answers nonsense now
    results = hub.sync_all_inventory(TENANT)
    assert results["erp"]["success"] and not results["wms"]["success"]
    levels = {level["provider"]: level for level in data_of(client.get(f"{API}/inventory/levels?sku=WIDGET-001", headers=headers))["items"]}
    assert levels["wms"]["stale"] is True and levels["wms"]["quantity"] == 40 and levels["wms"]["ageSeconds"] >= 7200
    assert levels["erp"]["stale"] is False
    # A stale source is not compared: a change at the ERP is no discrepancy with a WMS that cannot tell.
    write_levels(folders["erp"], ("WIDGET-001", "WAREHOUSE-A", 12))
    hub.sync_external_data(TENANT, "inventory", provider="erp")
    assert hub.inventory_discrepancies(TENANT) == []

    metrics = {row["provider"]: row for row in data_of(client.get(f"{API}/sync/metrics", headers=headers))["items"]}
    assert metrics["wms"]["failed"] == 1 and metrics["wms"]["runs"] == 2 and metrics["wms"]["lagSeconds"] >= 7200
    assert metrics["erp"]["failed"] == 0 and metrics["erp"]["records"] == 2 and metrics["erp"]["recordsPerSecond"] > 0


def test_a_run_record_says_when_it_ran_and_the_cursor_before_and_after(hub: IntegrationManager, folders: dict[str, Path]) -> None:
    write_levels(folders["erp"], *((f"SKU-{n}", "WAREHOUSE-A", n) for n in range(5)))
    first = hub.sync_external_data(TENANT, "inventory", provider="erp", page_size=2)
    assert first["cursorBefore"] is None and first["cursorAfter"] and first["pages"] == 3 and first["startedAt"] <= first["finishedAt"]
    write_levels(folders["erp"], ("SKU-1", "WAREHOUSE-A", 9))
    second = hub.sync_external_data(TENANT, "inventory", provider="erp")
    assert second["cursorBefore"] == first["cursorAfter"] and second["count"] == 1 and second["cursorAfter"] != second["cursorBefore"]


def test_hub_sync_run_runs_a_schedule_by_name_to_the_end_of_its_stream(tmp_path: Path, folders: dict[str, Path]) -> None:
    write_levels(folders["erp"], *((f"SKU-{n}", "WAREHOUSE-A", n) for n in range(7)))
    config = make_config(tmp_path, folders)
    raw = {key: value for key, value in config.items() if key not in ("tenants",)}
    raw["sync_schedules"] = [{"name": "erp-stock", "data_type": "inventory", "cron": "*/15 * * * *", "tenant": TENANT, "provider": "erp"}]
    raw["sync"] = {"page_size": 2, "max_pages": 2, "max_records": 100}
    path = tmp_path / "hub.yaml"
    path.write_text(json.dumps(raw, default=str))
    result = CliRunner().invoke(cli, ["--config", str(path), "sync", "run", "erp-stock"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("erp: succeeded 4 record(s) in 2 page(s)") and lines[1].startswith("erp: succeeded 3 record(s)"), lines
    # Every source of the tenant's inventory, one line each; a source that fails makes the exit status 1.
    (folders["wms"] / "inventory.json").write_text("not json")
    result = CliRunner().invoke(cli, ["--config", str(path), "sync", "run", "inventory", "--tenant", TENANT])
    assert result.exit_code == 1 and "erp: ok" in result.output and "wms: failed" in result.output, result.output


class ChangeFeed(Provider):
    """A source with a change feed: each page carries what changed and what was deleted since the cursor."""

    capability = "sync"
    type_name = "change-feed"

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self.feed: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []

    @hookimpl
    def sync(self, request: SyncRequest) -> SyncResult:
        position = int(request.cursor or 0)
        records, deleted = self.feed[position] if position < len(self.feed) else ([], [])
        primary_key = () if request.data_type == "inventory" else ("code",)
        return SyncResult(records, cursor=str(min(position + 1, len(self.feed))), deleted=deleted, primary_key=primary_key)


def test_records_a_source_deleted_are_removed_with_the_page(hub: IntegrationManager, tmp_path: Path) -> None:
    feed = ChangeFeed("feed", {}, ProviderContext(None, "development", str(tmp_path)))
    hub.register_integration("feed", feed)
    feed.feed = [
        ([{"code": "S1", "name": "Acme"}, {"code": "S2", "name": "Bolt Co"}], []),
        ([{"code": "S3", "name": "Cogs"}], [{"code": "S1"}]),
    ]
    hub.sync_external_data(TENANT, "suppliers", provider="feed")
    second = hub.sync_external_data(TENANT, "suppliers", provider="feed")
    assert second["deleted"] == 1
    assert sorted(row.data["code"] for row in hub.sync.store.records(TENANT, "suppliers", "feed")) == ["S2", "S3"]

    feed.feed = [([{"sku": "A", "location": "WAREHOUSE-A", "quantity": 3}], []), ([], [{"sku": "A", "location": "WAREHOUSE-A"}])]
    hub.sync_external_data(TENANT, "inventory", provider="feed", full_resync=True)
    hub.sync_external_data(TENANT, "inventory", provider="feed")
    assert hub.inventory_levels(TENANT, provider="feed") == []
    assert [(item["previous"], item["quantity"]) for item in hub.inventory_history("A", provider="feed", tenant_id=TENANT)] == [(None, 3), (3, None)]
