"""Sync: the file source's cursors and push, the conformance kit's ``check_sync`` (which must fail for broken
providers), and the core's page loop, checkpoints, inventory levels and snapshots, and pushed updates.

No mocks: providers are built through :class:`hub.testing.ProviderHarness` as the core builds them and read and
write real files in a temporary data directory; the core's tests page through a stock API served over real HTTP
on 127.0.0.1 (:class:`StockApi`), which fails, hangs or repeats records when a test asks it to.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from marshmallow import fields
from sqlalchemy import func, select
from sqlalchemy import update as sql_update

from hub import IntegrationManager, hookimpl
from hub.api import create_app
from hub.builtins.file_source import FileSource
from hub.capabilities import (
    InventoryPush,
    InventoryUpdate,
    Provider,
    ProviderContext,
    PushItemResult,
    PushResult,
    SyncRequest,
    SyncResult,
)
from hub.errors import PermanentError, TransientError, UnsupportedError, ValidationError
from hub.http import HttpClient, HttpSettings, json_error
from hub.records import InventoryChange, InventoryLevel, Record, SyncedRecord, utcnow
from hub.testing import ProviderHarness
from hub.testing.contracts import check_sync
from hub.testing.servers import WsgiServer
from tests.conftest import API, base_config, data_of

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


# --- the core: a stock API over real HTTP, paged by the hub ---------------------------------------



class StockApi(WsgiServer):
    """An external stock system over HTTP: ``GET /<stream>?after=N&limit=K`` answers ``{"items", "next"}``
    (``levels`` and ``suppliers``); ``POST /adjust`` applies one update, once per update id.

    Faults a test sets: ``fail_at`` (offset answered 503), ``block_at`` (offset whose request hangs until
    :attr:`release` is set, :attr:`reached` says it arrived), ``overlap`` (each page repeats the records
    before the cursor, as inclusive cursors do) and ``push_fail_after`` (updates applied before 503s).
    """

    def __init__(self, count: int = 30) -> None:
        super().__init__(name="stock-api")
        self.streams = {
            "levels": [{"sku": f"SKU-{n:03d}", "location": f"WH-{n % 2}", "quantity": n} for n in range(count)],
            "suppliers": [{"id": f"sup-{n:03d}", "name": f"Supplier {n}"} for n in range(count)],
        }
        self.lock = threading.Lock()
        self.requested: list[tuple[str, int]] = []
        self.applied: list[str] = []
        self.fail_at: int | None = None
        self.block_at: int | None = None
        self.overlap = 0
        self.push_fail_after: int | None = None
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, environ: Any, start_response: Any) -> Any:
        from werkzeug.wrappers import Request, Response

        request = Request(environ)
        stream = request.path.strip("/")
        if request.method == "POST" and stream == "adjust":
            return self._adjust(request.get_json())(environ, start_response)
        if stream not in self.streams:
            return Response("no such stream", status=404)(environ, start_response)
        after, limit = int(request.args.get("after", 0)), int(request.args["limit"])
        with self.lock:
            self.requested.append((stream, after))
        if after == self.block_at and not self.release.is_set():
            self.reached.set()
            self.release.wait(60)
        if after == self.fail_at:
            return Response("try later", status=503)(environ, start_response)
        rows = self.streams[stream]
        start = max(0, after - self.overlap)
        end = min(after + limit, len(rows))
        body = {"items": rows[start:end], "next": end if end < len(rows) else None}
        return Response(json.dumps(body), content_type="application/json")(environ, start_response)

    def _adjust(self, update: dict[str, Any]) -> Any:
        from werkzeug.wrappers import Response

        with self.lock:
            if self.push_fail_after is not None and len(self.applied) >= self.push_fail_after:
                return Response("overloaded", status=503)
            row = next((r for r in self.streams["levels"] if (r["sku"], r["location"]) == (update["sku"], update["location"])), None)
            if row is None:
                return Response(json.dumps({"code": "unknown_item", "message": "no such item"}), status=404)
            if update["id"] not in self.applied:  # idempotent by update id
                self.applied.append(update["id"])
                row["quantity"] = update["quantity"] if update["mode"] == "set" else row["quantity"] + update["quantity"]
            return Response(json.dumps({"quantity": row["quantity"]}), content_type="application/json")


class RestStockSettings(HttpSettings):
    base_url = fields.String(required=True)


class RestStock(Provider):
    """A sync provider for :class:`StockApi`: the hub's cursor is the API's offset."""

    type_name = "rest-stock"
    capability = "sync"
    settings_schema = RestStockSettings
    paths: ClassVar[dict[str, str]] = {"inventory": "levels", "suppliers": "suppliers"}

    def __init__(self, name: str, settings: dict[str, Any], context: Any) -> None:
        super().__init__(name, settings, context)
        self.http = HttpClient.from_settings("Stock API", settings, base_url=settings["base_url"], extract_error=json_error())

    @hookimpl
    def sync(self, request: SyncRequest) -> SyncResult:
        if request.data_type not in self.paths:
            raise UnsupportedError(f"the stock API offers {', '.join(self.paths)}, not {request.data_type!r}")
        after = int(request.cursor or 0)
        body = self.http.get(f"/{self.paths[request.data_type]}", params={"after": after, "limit": request.page_size}).json()
        following = body["next"]
        return SyncResult(body["items"], cursor=str(following if following is not None else after + len(body["items"])), has_more=following is not None)

    @hookimpl
    def sync_push(self, push: InventoryPush) -> PushResult:
        results: list[PushItemResult] = []
        for update in push.updates:
            payload = {"id": update.id, "sku": update.sku, "location": update.location, "quantity": update.quantity, "mode": update.mode}
            try:
                level = self.http.post("/adjust", json=payload).json()["quantity"]
            except TransientError as error:
                return PushResult.cut_short(push, results, error)
            except PermanentError as error:
                results.append(PushItemResult(update.sku, update.location, "failed", error=str(error)))
                continue
            results.append(PushItemResult(update.sku, update.location, "sent", quantity=level))
        return PushResult(results)


class RestStockPlugin:
    @hookimpl
    def register_providers(self, register: Callable[[type], None]) -> None:
        register(RestStock)


def _stock_config(data_dir: Path, *urls: str) -> dict[str, Any]:
    providers = {f"stock-{index}": {"type": "rest-stock", "base_url": url, "timeout": 30} for index, url in enumerate(urls)}
    return base_config(data_dir, providers=providers, services={"externalAPI": {"providers": list(providers)}})


@pytest.fixture
def stock_api() -> Iterator[StockApi]:
    with StockApi() as server:
        yield server
        server.release.set()


@pytest.fixture
def stock_hub(tmp_path: Path, stock_api: StockApi) -> Iterator[IntegrationManager]:
    hub = IntegrationManager(_stock_config(tmp_path / "var", stock_api.url), environ={}, entry_points=False, plugins=[(RestStockPlugin(), "rest-stock")])
    yield hub
    hub.close()



def _client(hub: IntegrationManager, tenant: str = "acme") -> tuple[Any, dict[str, str]]:
    token = hub.tokens.create(tenant, "tests")[1]
    return create_app(manager=hub).test_client(), {"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant}


def _count(hub: IntegrationManager, statement: Any) -> int:
    with hub.db.session() as session:
        return int(session.scalar(statement) or 0)


def _levels_by_key(hub: IntegrationManager, provider: str = "stock-0") -> tuple[int, int]:
    """(rows, distinct (sku, location)) of a provider's levels: equal when nothing is duplicated."""
    rows = _count(hub, select(func.count()).select_from(InventoryLevel).where(InventoryLevel.provider == provider))
    distinct = _count(
        hub,
        select(func.count()).select_from(
            select(InventoryLevel.sku, InventoryLevel.location).where(InventoryLevel.provider == provider).distinct().subquery()
        ),
    )
    return rows, distinct


def _snapshot_rows(hub: IntegrationManager, snapshot_id: str) -> tuple[int, int]:
    rows = _count(hub, select(func.count()).select_from(InventoryChange).where(InventoryChange.snapshot_id == snapshot_id))
    distinct = _count(
        hub,
        select(func.count()).select_from(
            select(InventoryChange.sku, InventoryChange.location).where(InventoryChange.snapshot_id == snapshot_id).distinct().subquery()
        ),
    )
    return rows, distinct


# --- jobs through the REST API -----------------------------------------------------------------------


def test_sync_jobs_are_accepted_and_run_by_a_worker(client: Any, manager: Any, headers: dict[str, str]) -> None:
    job = data_of(client.post(f"{API}/sync", json={"dataType": "inventory"}, headers=headers), 202)
    assert job["status"] == "queued"
    manager.run_record(job["jobId"])  # what a worker does with the queued id
    done = data_of(client.get(f"{API}/sync/{job['jobId']}", headers=headers))
    assert done["status"] == "succeeded" and done["count"] > 0 and done["snapshotId"]
    assert len(done["inventory"]) == done["count"] == 6 and done["pages"] == 1 and done["hasMore"] is False
    snapshot = data_of(client.get(f"{API}/inventory/snapshots/{done['snapshotId']}", headers=headers))
    assert snapshot["itemCount"] == done["count"] and {"sku", "location", "quantity"} <= set(snapshot["items"][0])
    listed = data_of(client.get(f"{API}/inventory/snapshots", headers=headers))["items"]
    assert [s["id"] for s in listed] == [done["snapshotId"]] and "items" not in listed[0]
    unknown = data_of(client.post(f"{API}/sync", json={"dataType": "spaceships"}, headers=headers), 202)
    manager.run_record(unknown["jobId"])
    failed = data_of(client.get(f"{API}/sync/{unknown['jobId']}", headers=headers))
    assert failed["status"] == "failed" and "available data types" in failed["error"]
    everything = data_of(client.post(f"{API}/inventory/sync", headers=headers))
    # Caught up: the second inventory run finds nothing new after the first one's cursor.
    assert everything["local-files"]["success"] and everything["local-files"]["count"] == 0
    again = data_of(client.post(f"{API}/inventory/sync", json={"fullResync": True}, headers=headers))
    assert again["local-files"]["count"] == 6 and again["local-files"]["snapshotId"] != done["snapshotId"]
    levels = data_of(client.get(f"{API}/inventory/levels?location=WAREHOUSE-B", headers=headers))["items"]
    assert sorted((level["sku"], level["quantity"]) for level in levels) == [("BOLT-M8", 2500), ("GADGET-100", 0), ("WIDGET-001", 64)]
    checkpoints = data_of(client.get(f"{API}/sync/checkpoints?dataType=inventory", headers=headers))["items"]
    assert len(checkpoints) == 1 and checkpoints[0]["cursor"] and checkpoints[0]["jobId"] is None and checkpoints[0]["completedAt"]


def test_records_are_stored_by_primary_key_and_the_next_run_is_incremental(client: Any, manager: Any, headers: dict[str, str]) -> None:
    first = data_of(client.post(f"{API}/sync", json={"dataType": "suppliers", "async": False, "pageSize": 1}, headers=headers))
    assert first["count"] == 3 and first["pages"] == 3 and [s["id"] for s in first["suppliers"]] == ["supplier_123", "supplier_456", "supplier_789"]
    second = data_of(client.post(f"{API}/sync", json={"dataType": "suppliers", "async": False}, headers=headers))
    assert second["count"] == 0 and second["suppliers"] == []
    full = data_of(client.post(f"{API}/sync", json={"dataType": "suppliers", "async": False, "fullResync": True}, headers=headers))
    assert full["count"] == 3 and full["fullResync"] is True
    stored = data_of(client.get(f"{API}/sync/records?dataType=suppliers", headers=headers))["items"]
    assert [item["key"] for item in stored] == ['["supplier_123"]', '["supplier_456"]', '["supplier_789"]']
    assert {item["jobId"] for item in stored} == {full["jobId"]}
    # A narrowed sync keeps a cursor of its own and does not move the unfiltered one.
    narrowed = data_of(client.post(f"{API}/sync", json={"dataType": "suppliers", "async": False, "options": {"supplierId": "supplier_456"}}, headers=headers))
    assert narrowed["count"] == 1
    assert len(data_of(client.get(f"{API}/sync/checkpoints", headers=headers))["items"]) == 2


def test_a_run_stops_at_max_pages_and_the_next_run_goes_on(stock_hub: IntegrationManager, stock_api: StockApi) -> None:
    first = stock_hub.sync_external_data("acme", "inventory", page_size=4, max_pages=3)
    assert (first["count"], first["pages"], first["hasMore"], first["status"]) == (12, 3, True, "succeeded")
    second = stock_hub.sync_external_data("acme", "inventory", page_size=4, max_records=100)
    assert (second["count"], second["pages"], second["hasMore"]) == (18, 5, False)
    assert [after for _, after in stock_api.requested] == list(range(0, 30, 4))
    assert _levels_by_key(stock_hub) == (30, 30)


def test_pages_that_repeat_records_are_stored_once_by_primary_key(stock_hub: IntegrationManager, stock_api: StockApi) -> None:
    stock_api.overlap = 2  # every page repeats the two records before the cursor
    done = stock_hub.sync_external_data("acme", "suppliers", page_size=5)
    assert done["pages"] == 6
    assert _count(stock_hub, select(func.count()).select_from(SyncedRecord).where(SyncedRecord.stream == "suppliers")) == 30
    inventory = stock_hub.sync_external_data("acme", "inventory", page_size=5)
    assert _levels_by_key(stock_hub) == (30, 30) and inventory["count"] == 30 + 2 * 5


# --- interrupted runs resume after the last stored page ----------------------------------------


def test_a_sync_interrupted_mid_run_resumes_after_the_last_stored_page(stock_hub: IntegrationManager, stock_api: StockApi) -> None:
    stock_api.fail_at = 15  # pages 0, 5 and 10 are served, then the API fails
    queued = stock_hub.sync_external_data("acme", "inventory", page_size=5, asynchronous=True)
    stock_hub.run_record(queued["jobId"])
    interrupted = stock_hub.sync.view(stock_hub.get_record(queued["jobId"], "acme"))
    assert (interrupted["status"], interrupted["count"], interrupted["pages"], interrupted["hasMore"]) == ("queued", 15, 3, True)
    assert _levels_by_key(stock_hub) == (15, 15)
    stock_api.fail_at = None  # the API is back: the re-queued job runs again
    stock_hub.run_record(queued["jobId"])
    done = stock_hub.sync.view(stock_hub.get_record(queued["jobId"], "acme"))
    assert (done["status"], done["count"], done["pages"]) == ("succeeded", 30, 6)
    assert _levels_by_key(stock_hub) == (30, 30)
    assert _snapshot_rows(stock_hub, done["snapshotId"]) == (30, 30)  # one snapshot, each row once
    offsets = [after for _, after in stock_api.requested]
    assert offsets.count(0) == 1 and offsets[-3:] == [15, 20, 25] and set(offsets) == {0, 5, 10, 15, 20, 25}


def test_an_inline_sync_that_fails_part_way_answers_503_and_the_next_one_resumes(stock_hub: IntegrationManager, stock_api: StockApi) -> None:
    client, headers = _client(stock_hub)
    stock_api.fail_at = 10
    failed = client.post(f"{API}/sync", json={"dataType": "inventory", "async": False, "pageSize": 5}, headers=headers)
    assert failed.status_code == 503
    job = data_of(client.get(f"{API}/sync", headers=headers))["items"][0]
    assert (job["status"], job["count"], job["hasMore"]) == ("failed", 10, True)
    stock_api.fail_at = None
    resumed = data_of(client.post(f"{API}/sync", json={"dataType": "inventory", "async": False, "pageSize": 5}, headers=headers))
    assert resumed["count"] == 20 and resumed["pages"] == 4 and len(resumed["inventory"]) == 20
    assert _levels_by_key(stock_hub) == (30, 30)


_WORKER = """
import json, sys
from hub import IntegrationManager
from tests.test_sync import RestStockPlugin
config = json.load(open(sys.argv[1]))
hub = IntegrationManager(config, environ={}, entry_points=False, plugins=[(RestStockPlugin(), "rest-stock")])
hub.run_record(sys.argv[2])
"""


def test_a_killed_worker_process_loses_nothing_and_the_job_resumes_after_its_last_page(
    tmp_path: Path, stock_api: StockApi
) -> None:
    config = _stock_config(tmp_path / "var", stock_api.url)
    (tmp_path / "config.json").write_text(json.dumps(config))
    hub = IntegrationManager(config, environ={}, entry_points=False, plugins=[(RestStockPlugin(), "rest-stock")])
    try:
        job = hub.sync_external_data("acme", "inventory", page_size=5, asynchronous=True)
        stock_api.block_at = 15
        worker = subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(tmp_path / "config.json"), job["jobId"]],
            cwd=Path(__file__).resolve().parent.parent, stderr=subprocess.PIPE,
        )
        try:
            assert stock_api.reached.wait(60), worker.stderr.read() if worker.poll() is not None and worker.stderr else "no page 4 request"
        finally:
            worker.send_signal(signal.SIGKILL)  # mid-run: three pages stored, the fourth in flight
            worker.wait(30)
        assert _levels_by_key(hub) == (15, 15)
        record = hub.get_record(job["jobId"], "acme")
        assert record.status == "running" and record.result["pages"] == 3
        [checkpoint] = hub.sync.store.checkpoints("acme")
        assert checkpoint.cursor == "15" and checkpoint.record_id == job["jobId"]
        with hub.db.session() as session:  # as if the dead worker's lease had run out
            session.execute(sql_update(Record).where(Record.id == job["jobId"]).values(lease_until=utcnow() - timedelta(seconds=1)))
        stock_api.block_at = None
        stock_api.release.set()
        assert hub.runtime.ledger.recover_unfinished(older_than=0) == 1
        hub.run_record(job["jobId"])
        done = hub.sync.view(hub.get_record(job["jobId"], "acme"))
        assert (done["status"], done["count"], done["pages"]) == ("succeeded", 30, 6)
        assert _levels_by_key(hub) == (30, 30) and _snapshot_rows(hub, done["snapshotId"]) == (30, 30)
        assert [after for _, after in stock_api.requested] == [0, 5, 10, 15, 15, 20, 25]
        assert hub.get_record(job["jobId"], "acme").to_dict()["jobAttempts"] == 2
    finally:
        hub.close()


def test_a_second_run_of_a_busy_stream_is_refused_while_the_first_holds_it(stock_hub: IntegrationManager, stock_api: StockApi) -> None:
    client, headers = _client(stock_hub)
    stock_api.block_at = 5
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(stock_hub.sync_external_data, "acme", "inventory", page_size=5)
        assert stock_api.reached.wait(30)
        busy = client.post(f"{API}/sync", json={"dataType": "inventory", "async": False}, headers=headers)
        assert busy.status_code == 409 and "already running" in busy.get_json()["message"]
        other_stream = data_of(client.post(f"{API}/sync", json={"dataType": "suppliers", "async": False}, headers=headers))
        assert other_stream["count"] == 30
        stock_api.release.set()
        assert first.result(30)["count"] == 30


# --- schedules and the Python API -----------------------------------------------------------------


def test_scheduled_sync_jobs_are_created_once_per_minute(tmp_path: Path) -> None:
    schedules = [
        {"data_type": "inventory", "cron": "*/15 * * * *", "tenant": "acme"},
        {"data_type": "inventory", "cron": "1 3 * * *", "tenant": "acme", "full_resync": True},
    ]
    hub = IntegrationManager(base_config(tmp_path / "var", sync_schedules=schedules), environ={}, entry_points=False)
    try:
        at = datetime(2026, 11, 23, 10, 30, tzinfo=UTC)
        first = hub.run_schedules(at)
        again = hub.run_schedules(at)  # another hub process in the same minute
        assert len(first) == 1 and again == first
        assert hub.run_schedules(datetime(2026, 11, 23, 10, 31, tzinfo=UTC)) == []
        hub.run_record(first[0])
        assert hub.get_record(first[0], "acme").status == "succeeded"
        [nightly] = hub.run_schedules(datetime(2026, 11, 24, 3, 1, tzinfo=UTC))
        hub.run_record(nightly)
        assert hub.sync.view(hub.get_record(nightly, "acme"))["count"] == 6  # from the beginning again
    finally:
        hub.close()


def test_register_integration_adds_a_sync_source_at_run_time(manager: IntegrationManager, tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "inventory.json").write_text(json.dumps([{"sku": "S-1", "location": "store", "quantity": 3}]))
    shop = FileSource("shop", {"directory": str(tmp_path / "shop")}, ProviderContext(None, "development", str(tmp_path)))
    manager.register_integration("shop", shop)
    results = manager.sync_all_inventory("acme")
    assert results["shop"] == {"success": True, "count": 1, "snapshotId": results["shop"]["snapshotId"], "jobId": results["shop"]["jobId"]}
    assert manager.get_snapshot(results["shop"]["snapshotId"], "acme").items == [{"sku": "S-1", "location": "store", "quantity": 3}]
    assert manager.get_record(results["shop"]["jobId"], "acme").provider == "shop"


def test_the_python_api_syncs_pushes_and_reads_levels(manager: IntegrationManager) -> None:
    manager.sync_external_data("acme", "inventory")
    pushed = manager.push_inventory(
        [InventoryUpdate("WIDGET-001", "WAREHOUSE-A", 3, "adjust"), {"sku": "BOLT-M8", "location": "WAREHOUSE-B", "quantity": 10}],
        tenant_id="acme",
    )
    assert pushed["status"] == "succeeded" and [r["level"] for r in pushed["results"]] == [8, 10]
    levels = {(level["sku"], level["location"]): level["quantity"] for level in manager.inventory_levels("acme")}
    assert levels[("WIDGET-001", "WAREHOUSE-A")] == 8 and levels[("BOLT-M8", "WAREHOUSE-B")] == 10
    incremental = manager.sync_external_data("acme", "inventory")
    assert sorted(item["sku"] for item in incremental["inventory"]) == ["BOLT-M8", "WIDGET-001"]
    with pytest.raises(ValidationError) as raised:
        manager.sync_external_data("acme", "inventory", page_size=0)
    assert "pageSize" in raised.value.errors


# --- push -------------------------------------------------------------------------------------------


def test_push_inventory_updates_through_the_api(client: Any, manager: Any, headers: dict[str, str]) -> None:
    data_of(client.post(f"{API}/sync", json={"dataType": "inventory", "async": False}, headers=headers))
    body = {
        "updates": [
            {"sku": "WIDGET-001", "location": "WAREHOUSE-A", "quantity": 50},
            {"sku": "GADGET-100", "location": "WAREHOUSE-A", "quantity": -2, "mode": "adjust", "reason": "sale"},
            {"sku": "GHOST", "location": "WAREHOUSE-A", "quantity": 1, "mode": "adjust"},
        ]
    }
    pushed = data_of(client.post(f"{API}/inventory/updates", json=body, headers=headers))
    assert (pushed["status"], pushed["provider"], pushed["sent"], pushed["failed"]) == ("partial", "local-files", 2, 1)
    assert [(r["status"], r["level"]) for r in pushed["results"]] == [("sent", 50), ("sent", 40), ("failed", None)]
    assert "no stock record for GHOST" in pushed["results"][2]["error"]
    assert data_of(client.get(f"{API}/inventory/updates/{pushed['jobId']}", headers=headers)) == pushed
    history = data_of(client.get(f"{API}/inventory/history?sku=GADGET-100&location=WAREHOUSE-A", headers=headers))["items"]
    assert [(h["source"], h["quantity"], h["previous"]) for h in history] == [("push", 40, 42), ("sync", 42, None)]
    changed = data_of(client.post(f"{API}/sync", json={"dataType": "inventory", "async": False}, headers=headers))
    assert sorted((i["sku"], i["quantity"]) for i in changed["inventory"]) == [("GADGET-100", 40), ("WIDGET-001", 50)]
    queued = data_of(client.post(f"{API}/inventory/updates", json={**body, "async": True}, headers=headers), 202)
    assert queued["status"] == "queued" and queued["pending"] == 3
    manager.run_record(queued["jobId"])
    assert data_of(client.get(f"{API}/inventory/updates/{queued['jobId']}", headers=headers))["sent"] == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"updates": []}, "updates"),
        ({"updates": [{"sku": "A", "location": "X", "quantity": "lots"}]}, "updates"),
        ({"updates": [{"sku": "A", "location": "X", "quantity": 1, "mode": "replace"}]}, "updates"),
        ({"updates": [{"sku": "A", "location": "X", "quantity": True}]}, "updates"),
        ({"updates": [{"sku": "A", "location": "X", "quantity": 1}], "provider": "outbox"}, "provider"),
        ({"updates": [{"sku": "A", "location": "X", "quantity": 1}], "surprise": 1}, "surprise"),
    ],
)
def test_push_validation_names_the_field(client: Any, headers: dict[str, str], body: dict[str, Any], field: str) -> None:
    response = client.post(f"{API}/inventory/updates", json=body, headers=headers)
    assert response.status_code == 422 and field in response.get_json()["errors"], response.get_json()


def test_a_push_cut_short_retries_only_the_unsent_updates_and_never_fails_over(tmp_path: Path) -> None:
    with StockApi() as first, StockApi() as second:
        hub = IntegrationManager(_stock_config(tmp_path / "var", first.url, second.url), environ={}, entry_points=False, plugins=[(RestStockPlugin(), "rest-stock")])
        try:
            client, headers = _client(hub)
            first.push_fail_after = 2
            updates = [{"sku": f"SKU-{n:03d}", "location": f"WH-{n % 2}", "quantity": 100, "mode": "adjust"} for n in range(5)]
            accepted = data_of(client.post(f"{API}/inventory/updates", json={"updates": updates}, headers=headers), 202)
            assert (accepted["status"], accepted["sent"], accepted["retry"], accepted["provider"]) == ("queued", 2, 3, "stock-0")
            first.push_fail_after = None
            hub.run_record(accepted["jobId"])
            done = data_of(client.get(f"{API}/inventory/updates/{accepted['jobId']}", headers=headers))
            assert done["status"] == "succeeded" and [r["level"] for r in done["results"]] == [100, 101, 102, 103, 104]
            assert first.applied == [f"{accepted['jobId']}:{n}" for n in range(5)]  # each update once, by its id
            assert second.applied == [] and second.requested == []
        finally:
            hub.close()


def test_a_provider_without_sync_push_is_refused_for_updates(tmp_path: Path, stock_api: StockApi) -> None:
    class ReadOnly(RestStock):
        type_name = "read-only-stock"
        sync_push = None  # type: ignore[assignment]

    class ReadOnlyPlugin:
        @hookimpl
        def register_providers(self, register: Callable[[type], None]) -> None:
            register(ReadOnly)

    config = base_config(tmp_path / "var", providers={"erp": {"type": "read-only-stock", "base_url": stock_api.url}}, services={"externalAPI": {"providers": ["erp"]}})
    hub = IntegrationManager(config, environ={}, entry_points=False, plugins=[(ReadOnlyPlugin(), "read-only")])
    try:
        with pytest.raises(ValidationError) as raised:
            hub.push_inventory([InventoryUpdate("SKU-001", "WH-1", 1)], tenant_id="acme")
        assert "none implements sync_push" in raised.value.errors["provider"][0]
    finally:
        hub.close()


def test_the_openapi_document_describes_the_sync_and_inventory_endpoints(client: Any) -> None:
    document = client.get(f"{API}/openapi.json").get_json()
    for path in ("/sync", "/sync/checkpoints", "/sync/records", "/inventory/updates", "/inventory/levels", "/inventory/history"):
        assert f"{API}{path}" in document["paths"], path
    push = document["paths"][f"{API}/inventory/updates"]["post"]
    assert push["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/InventoryPush")
    sync_job = document["components"]["schemas"]["Sync"]["properties"]
    assert {"fullResync", "pageSize", "maxPages", "maxRecords"} <= set(sync_job)


def test_paging_checkpoints_and_push_on_postgresql(tmp_path: Path, postgres_url: str, stock_api: StockApi) -> None:
    config = _stock_config(tmp_path / "var", stock_api.url) | {"database_url": postgres_url}
    hub = IntegrationManager(config, environ={}, entry_points=False, plugins=[(RestStockPlugin(), "rest-stock")])
    try:
        stock_api.fail_at, stock_api.overlap = 20, 1
        job = hub.sync_external_data("acme", "inventory", page_size=5, asynchronous=True)
        hub.run_record(job["jobId"])
        assert _levels_by_key(hub) == (20, 20)
        stock_api.fail_at = None
        hub.run_record(job["jobId"])
        done = hub.sync.view(hub.get_record(job["jobId"], "acme"))
        assert done["status"] == "succeeded" and _levels_by_key(hub) == (30, 30)
        assert hub.sync_external_data("acme", "suppliers", page_size=7)["count"] == 30 + 4
        assert _count(hub, select(func.count()).select_from(SyncedRecord)) == 30
        pushed = hub.push_inventory([InventoryUpdate("SKU-004", "WH-0", 6, "adjust")], tenant_id="acme")
        assert pushed["results"][0]["level"] == 10
        assert [level["quantity"] for level in hub.inventory_levels("acme", sku="SKU-004")] == [10]
    finally:
        hub.close()
