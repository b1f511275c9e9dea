"""Sync: the file source's cursors and push, and the conformance kit's ``check_sync`` (which must fail for
broken providers).

No mocks: providers are built through :class:`hub.testing.ProviderHarness` as the core builds them and read and
write real files in a temporary data directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hub import hookimpl
from hub.builtins.file_source import FileSource
from hub.capabilities import (
    InventoryPush,
    InventoryUpdate,
    Provider,
    PushItemResult,
    PushResult,
    SyncRequest,
    SyncResult,
)
from hub.errors import PermanentError, TransientError
from hub.testing import ProviderHarness
from hub.testing.contracts import check_sync

TENANT = "acme"
SAMPLE_INVENTORY = Path(__file__).resolve().parent.parent / "hub" / "builtins" / "sample_data" / "inventory.csv"


def _page(
    harness: ProviderHarness, provider: Any, data_type: str, cursor: str | None = None, size: int = 500, **options: Any
) -> SyncResult:
    request = SyncRequest(
        id=uuid.uuid4().hex, tenant=TENANT, data_type=data_type, options=options, cursor=cursor, page_size=size
    )
    return harness.call(provider, "sync", request=request)


def _read_all(
    harness: ProviderHarness, provider: Any, data_type: str, cursor: str | None = None, size: int = 2
) -> tuple[list[dict[str, Any]], str | None, int]:
    records: list[dict[str, Any]] = []
    pages = 0
    while True:
        page = _page(harness, provider, data_type, cursor, size)
        pages += 1
        records += page.records
        cursor = page.cursor
        if not page.has_more:
            return records, cursor, pages


def _push(harness: ProviderHarness, provider: Any, *updates: InventoryUpdate) -> PushResult:
    return harness.call(
        provider, "sync_push", push=InventoryPush(id=uuid.uuid4().hex, tenant=TENANT, updates=list(updates))
    )


# --- file-source: cursors -------------------------------------------------------------------------


def test_file_source_pages_timestamped_records_in_updated_at_order_to_the_end(
    provider_harness: ProviderHarness,
) -> None:
    source = provider_harness.build("file-source")
    first = _page(provider_harness, source, "inventory", size=4)
    assert len(first.records) == 4 and first.has_more and first.cursor
    rest = _page(provider_harness, source, "inventory", first.cursor, size=4)
    assert len(rest.records) == 2 and not rest.has_more
    keys = [(r["sku"], r["location"]) for r in first.records + rest.records]
    assert len(set(keys)) == 6
    stamps = [r["updated_at"] for r in first.records + rest.records]
    assert stamps == sorted(stamps)
    # Caught up: the final cursor gives nothing, and says so without moving.
    again = _page(provider_harness, source, "inventory", rest.cursor, size=4)
    assert again.records == [] and not again.has_more and again.cursor == rest.cursor


def test_file_source_resumes_after_any_page_without_losing_or_repeating(provider_harness: ProviderHarness) -> None:
    source = provider_harness.build("file-source")
    everything, _, pages = _read_all(provider_harness, source, "suppliers", size=1)
    assert pages == 3 and [s["id"] for s in everything] == ["supplier_123", "supplier_456", "supplier_789"]
    after_one = _page(provider_harness, source, "suppliers", size=1).cursor
    resumed, _, _ = _read_all(provider_harness, source, "suppliers", after_one, size=1)
    assert [s["id"] for s in resumed] == ["supplier_456", "supplier_789"]


def test_file_source_pages_untimestamped_files_by_offset_and_sees_appended_rows(
    provider_harness: ProviderHarness,
) -> None:
    folder = Path(provider_harness.data_dir) / "pos"
    folder.mkdir(parents=True)
    sales = folder / "sales.csv"
    sales.write_text("receipt,sku,qty\nR1,A,1\nR2,B,2\nR3,A,3\n")
    source = provider_harness.build("file-source", {"directory": "pos", "primary_keys": {"sales": ["receipt"]}})
    records, cursor, pages = _read_all(provider_harness, source, "sales", size=2)
    assert [r["receipt"] for r in records] == ["R1", "R2", "R3"] and pages == 2
    assert _page(provider_harness, source, "sales").primary_key == ("receipt",)
    with sales.open("a") as handle:
        handle.write("R4,C,4\n")
    new, _, _ = _read_all(provider_harness, source, "sales", cursor)
    assert new == [{"receipt": "R4", "sku": "C", "qty": 4}]


def test_file_source_refuses_a_cursor_it_did_not_write(provider_harness: ProviderHarness) -> None:
    source = provider_harness.build("file-source")
    for cursor in ("page-2", '{"v":1,"offset":3}', '{"v":9,"updated_at":["x",[]]}'):
        with pytest.raises(PermanentError, match="full resync"):
            _page(provider_harness, source, "inventory", cursor)


# --- file-source: push ----------------------------------------------------------------------------


def test_file_source_push_sets_and_adjusts_and_the_next_incremental_sync_sees_only_those_rows(
    provider_harness: ProviderHarness,
) -> None:
    source = provider_harness.build("file-source", name="warehouse")
    _, cursor, _ = _read_all(provider_harness, source, "inventory")
    result = _push(
        provider_harness,
        source,
        InventoryUpdate("WIDGET-001", "WAREHOUSE-A", 50),
        InventoryUpdate("BOLT-M8", "WAREHOUSE-B", -100, "adjust"),
        InventoryUpdate("NEW-1", "WAREHOUSE-C", 7),
        InventoryUpdate("GHOST", "WAREHOUSE-A", 1, "adjust"),
        InventoryUpdate("WIDGET-002", "WAREHOUSE-A", 1, "replace"),
    )
    assert [(r.sku, r.status, r.quantity) for r in result.results] == [
        ("WIDGET-001", "sent", 50),
        ("BOLT-M8", "sent", 2400),
        ("NEW-1", "sent", 7),
        ("GHOST", "failed", None),
        ("WIDGET-002", "failed", None),
    ]
    assert "no stock record for GHOST" in result.results[3].error and "mode must be" in result.results[4].error
    changed, _, _ = _read_all(provider_harness, source, "inventory", cursor)
    assert sorted((r["sku"], r["location"], r["quantity"]) for r in changed) == [
        ("BOLT-M8", "WAREHOUSE-B", 2400),
        ("NEW-1", "WAREHOUSE-C", 7),
        ("WIDGET-001", "WAREHOUSE-A", 50),
    ]
    # The packaged sample stays as shipped; the changes live in a copy under the data directory.
    assert "WIDGET-001,WAREHOUSE-A,5," in SAMPLE_INVENTORY.read_text()
    copy = Path(provider_harness.data_dir) / "file-source" / "warehouse" / "inventory.csv"
    assert "WIDGET-001,WAREHOUSE-A,50," in copy.read_text()
    assert len(_read_all(provider_harness, source, "inventory")[0]) == 7


def test_file_source_push_rewrites_a_json_directory_in_place(provider_harness: ProviderHarness) -> None:
    folder = Path(provider_harness.data_dir) / "wms"
    folder.mkdir(parents=True)
    stock = [
        {"sku": "S-1", "location": "DOCK", "quantity": 2.5, "bin": "A1", "updated_at": "2024-01-01T00:00:00+00:00"}
    ]
    (folder / "inventory.json").write_text(json.dumps(stock))
    source = provider_harness.build("file-source", {"directory": str(folder)})
    result = _push(provider_harness, source, InventoryUpdate("S-1", "DOCK", 1.25, "adjust"))
    assert result.results == [PushItemResult("S-1", "DOCK", "sent", quantity=3.75)]
    written = json.loads((folder / "inventory.json").read_text())
    assert written[0]["quantity"] == 3.75 and written[0]["bin"] == "A1" and written[0]["updated_at"] > "2024-01-02"
    assert not (Path(provider_harness.data_dir) / "file-source").exists()


def test_file_source_push_loses_no_update_under_concurrent_threads(provider_harness: ProviderHarness) -> None:
    source = provider_harness.build("file-source")
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda _: _push(provider_harness, source, InventoryUpdate("GADGET-100", "WAREHOUSE-B", 1, "adjust")),
                range(40),
            )
        )
    assert all(result.results[0].status == "sent" for result in results)
    assert sorted(result.results[0].quantity for result in results) == list(range(1, 41))
    levels = {(r["sku"], r["location"]): r["quantity"] for r in _read_all(provider_harness, source, "inventory")[0]}
    assert levels[("GADGET-100", "WAREHOUSE-B")] == 40


_PUSHER = """
import sys, uuid
from hub.builtins.file_source import FileSource
from hub.capabilities import InventoryPush, InventoryUpdate, ProviderContext
source = FileSource("shared", {"directory": sys.argv[1]}, ProviderContext(None, "development", sys.argv[1]))
for _ in range(int(sys.argv[2])):
    result = source.sync_push(InventoryPush(uuid.uuid4().hex, "acme", [InventoryUpdate("S-1", "DOCK", 1, "adjust")]))
    assert result.results[0].status == "sent", result
"""


def test_file_source_push_loses_no_update_between_processes(tmp_path: Path) -> None:
    (tmp_path / "inventory.csv").write_text("sku,location,quantity,updated_at\nS-1,DOCK,0,2024-01-01T00:00:00+00:00\n")
    processes = [
        subprocess.Popen([sys.executable, "-c", _PUSHER, str(tmp_path), "30"], stderr=subprocess.PIPE) for _ in range(3)
    ]
    for process in processes:
        assert process.wait(timeout=120) == 0, process.stderr.read() if process.stderr else ""
    assert "S-1,DOCK,90," in (tmp_path / "inventory.csv").read_text()


def test_file_source_push_reports_a_failed_write_as_transient_and_changes_nothing(
    provider_harness: ProviderHarness,
) -> None:
    folder = Path(provider_harness.data_dir) / "stuck"
    folder.mkdir(parents=True)
    original = "sku,location,quantity\nS-1,DOCK,1\n"
    (folder / "inventory.csv").write_text(original)
    (folder / ".inventory.csv.lock").mkdir()  # the lock file cannot be opened, even by root
    source = provider_harness.build("file-source", {"directory": str(folder)})
    with pytest.raises(TransientError, match="could not write"):
        _push(provider_harness, source, InventoryUpdate("S-1", "DOCK", 5))
    assert (folder / "inventory.csv").read_text() == original


# --- the kit's check_sync fails for broken providers ---------------------------------------------


class _Listing(Provider):
    """Six inventory rows served by offset, correctly; the broken sources below change one thing each."""

    capability = "sync"
    rows = [{"sku": f"SKU-{n}", "location": "A", "quantity": n} for n in range(6)]

    def page(self, request: SyncRequest) -> tuple[int, int]:
        if request.data_type != "inventory":
            raise PermanentError(f"only inventory, not {request.data_type!r}")
        start = int(request.cursor or 0)
        return start, min(start + request.page_size, len(self.rows))

    @hookimpl
    def sync(self, request: SyncRequest) -> SyncResult:
        start, end = self.page(request)
        return SyncResult(self.rows[start:end], cursor=str(end), has_more=end < len(self.rows))


class StuckSource(_Listing):
    type_name = "stuck"

    @hookimpl
    def sync(self, request: SyncRequest) -> SyncResult:
        self.page(request)
        return SyncResult(self.rows[:2], cursor="0", has_more=True)  # ignores the cursor


class GreedySource(_Listing):
    type_name = "greedy"

    @hookimpl
    def sync(self, request: SyncRequest) -> SyncResult:
        self.page(request)
        return SyncResult(list(self.rows), cursor=None)  # ignores page_size


class OffByOneSource(_Listing):
    type_name = "off-by-one"

    @hookimpl
    def sync(self, request: SyncRequest) -> SyncResult:
        start, end = self.page(request)
        skip = 1 if request.cursor else 0  # a resumed run skips the record after the cursor
        return SyncResult(self.rows[start + skip : end], cursor=str(end), has_more=end < len(self.rows))


class ForgetfulSource(_Listing):
    type_name = "forgetful-source"

    @hookimpl
    def sync(self, request: SyncRequest) -> SyncResult:
        start, end = self.page(request)
        return SyncResult(self.rows[start:end], cursor=None, has_more=end < len(self.rows))  # no cursor to go on from


class _Pushing(_Listing):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.rows = [dict(row) for row in _Listing.rows]


class ShortPush(_Pushing):
    type_name = "short-push"

    @hookimpl
    def sync_push(self, push: InventoryPush) -> PushResult:
        return PushResult([PushItemResult(u.sku, u.location, "sent") for u in push.updates[:1]])  # one result only


class PretendPush(_Pushing):
    type_name = "pretend-push"

    @hookimpl
    def sync_push(self, push: InventoryPush) -> PushResult:
        return PushResult([PushItemResult(u.sku, u.location, "sent") for u in push.updates])  # applies nothing


class HonestPush(_Pushing):
    type_name = "honest-push"

    @hookimpl
    def sync(self, request: SyncRequest) -> SyncResult:
        start, end = self.page(request)
        if request.cursor == "end":
            return SyncResult([row for row in self.rows if row.get("changed")], cursor="end")
        return SyncResult(
            self.rows[start:end], cursor=str(end) if end < len(self.rows) else "end", has_more=end < len(self.rows)
        )

    def page(self, request: SyncRequest) -> tuple[int, int]:
        if request.cursor == "end":
            return 0, 0
        return super().page(request)

    @hookimpl
    def sync_push(self, push: InventoryPush) -> PushResult:
        results = []
        for update in push.updates:
            row = next(r for r in self.rows if (r["sku"], r["location"]) == (update.sku, update.location))
            row["quantity"] = update.quantity if update.mode == "set" else row["quantity"] + update.quantity
            row["changed"] = True
            results.append(PushItemResult(update.sku, update.location, "sent", quantity=row["quantity"]))
        return PushResult(results)


@pytest.mark.parametrize(
    ("provider_class", "complaint"),
    [
        (StuckSource, "the cursor did not move"),
        (GreedySource, "6 records for page_size=2"),
        (OffByOneSource, "paging lost or invented records"),
        (ForgetfulSource, "the cursor did not move"),
        (ShortPush, "1 results for 2 updates"),
        (PretendPush, "the next incremental sync shows SKU-0 at A as absent, expected 2"),
    ],
)
def test_check_sync_fails_for_a_broken_provider(
    provider_harness: ProviderHarness, provider_class: type, complaint: str
) -> None:
    provider_harness.add_provider_classes(provider_class)
    provider = provider_harness.build(provider_class.type_name)
    with pytest.raises(AssertionError) as raised:
        check_sync(provider_harness, provider, "inventory")
    assert complaint in str(raised.value) and f"{provider_class.type_name} provider" in str(raised.value)


def test_check_sync_passes_a_correct_provider_and_returns_every_record(provider_harness: ProviderHarness) -> None:
    for provider_class in (_ListingProvider, HonestPush):
        provider_harness.add_provider_classes(provider_class)
        provider = provider_harness.build(provider_class.type_name)
        result = check_sync(provider_harness, provider, "inventory", expect_min=6)
        assert sorted(row["sku"] for row in result.records) == [f"SKU-{n}" for n in range(6)]
    assert provider.rows[0]["quantity"] == 0  # the check set the pushed level back


class _ListingProvider(_Listing):
    type_name = "listing"


def test_file_source_meets_the_sync_contract_with_push(provider_harness: ProviderHarness) -> None:
    source = provider_harness.build("file-source")
    result = check_sync(provider_harness, source, "inventory", expect_min=6, page_size=1)
    assert len(result.records) == 6 and result.cursor
    levels = {(r["sku"], r["location"]): r["quantity"] for r in _read_all(provider_harness, source, "inventory")[0]}
    assert levels[("WIDGET-001", "WAREHOUSE-A")] == 5  # set back after the check's push
    assert isinstance(source, FileSource)
