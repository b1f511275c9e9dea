"""Inventory sync throughput: 50,000 SKUs x 3 locations from a local Shopify Admin GraphQL server, hub vs. bare.

The server (``plugins/hub-shopify/tests/shopify_server.py``'s FakeShopify, with O(page) paging of
``inventoryLevels`` and a stats endpoint added here) runs in a child process, so its CPU does not share the GIL
with the contenders. Contenders:

1. **hub**: ``IntegrationManager.sync_all_inventory`` (SQLite, provider ``shopify``), then a second
   (incremental) run: Shopify has no change feed, so the hub re-reads every level (README "Paging");
2. **bare**: the plugin's GraphQL queries with ``requests`` in a loop (same page size), THROTTLED waited out from
   ``throttleStatus``, each page upserted into SQLite (levels + a history row each + the cursor) with
   ``executemany`` in one transaction.

Prints requests and cost charged vs. the minimum, records/s, throttle waits, the hub's peak RSS, the ratio.

    python3 bench/sync_inventory.py [--items 50000] [--locations 3] [--restore-rate R] [--bucket B] [--quick]
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "plugins" / "hub-shopify"), str(REPO / "plugins" / "hub-shopify" / "tests")]

TOKEN = "shpat_bench"
PAGE = 250


def make_server(items: int, locations: int, restore_rate: float, bucket: float, port: int) -> Any:
    from shopify_server import _CURRENT, FakeShopify, GraphQLError
    from werkzeug.wrappers import Request, Response

    class BenchShopify(FakeShopify):
        """FakeShopify whose levels page is built from the page's items only (the fake builds every level of the
        location per request: O(items) per page), plus ``/bench/stats`` and ``/bench/reset``."""

        def __init__(self) -> None:
            super().__init__(token=TOKEN, items=items, locations=locations)
            self._port = port
            for item in self.items:
                item["sku"] = f"SKU-{item['number'] - 1000:06d}"
            self.numbers = [item["number"] for item in self.items]
            self.maximum = self.available = bucket
            self.restore_rate = restore_rate
            self.reset()

        def reset(self) -> None:
            self.stats = {"requests": 0, "throttled": 0, "actualCost": 0, "requestedCost": 0}
            self.available, self.last_refill = self.maximum, self.clock()

        def _location_object(self, location: dict[str, Any]) -> dict[str, Any]:
            result = super()._location_object(location)

            def levels(info: Any, first: int | None = None, after: str | None = None) -> dict[str, Any]:
                if first is None or first < 0 or first > 250:
                    raise GraphQLError("The first argument must be between 0 and 250")
                start = bisect.bisect_right(self.numbers, int(after.removeprefix("c"))) if after else 0
                page = [self._level_object(item, location) for item in self.items[start : start + first]]
                cursors = [f"c{row['_item']}" for row in page]
                _CURRENT.nodes += len(page)
                return {
                    "nodes": page,
                    "edges": [{"cursor": c, "node": n} for c, n in zip(cursors, page, strict=True)],
                    "pageInfo": {
                        "hasNextPage": start + first < len(self.items),
                        "hasPreviousPage": start > 0,
                        "endCursor": cursors[-1] if cursors else None,
                        "startCursor": cursors[0] if cursors else None,
                    },
                }

            result["inventoryLevels"] = levels
            return result

        def handle(self, request: Request) -> Response:
            if request.path == "/bench/stats":
                return Response(json.dumps(self.stats), content_type="application/json")
            if request.path == "/bench/reset":
                with self.lock:
                    self.reset()
                return Response("{}", content_type="application/json")
            response = super().handle(request)
            body = json.loads(response.get_data())
            cost = (body.get("extensions") or {}).get("cost") or {}
            with self.lock:
                self.stats["requests"] += 1
                self.stats["requestedCost"] += cost.get("requestedQueryCost") or 0
                self.stats["actualCost"] += cost.get("actualQueryCost") or 0
                if any((e.get("extensions") or {}).get("code") == "THROTTLED" for e in body.get("errors") or []):
                    self.stats["throttled"] += 1
            return response

    return BenchShopify()


def serve(args: argparse.Namespace) -> None:
    server = make_server(args.items, args.locations, args.restore_rate, args.bucket, args.port).start()
    while True:
        time.sleep(3600)
    server.stop()


# --- the contenders -------------------------------------------------------------------------------------


def hub_run(url: str, folder: str, args: argparse.Namespace) -> dict[str, Any]:
    import hub_shopify

    from hub.testing.rest import rest_hub

    levels = args.items * args.locations
    api = rest_hub(
        folder,
        plugins=[(hub_shopify, "shopify")],
        providers={"shop": {"type": "shopify", "shop": "bench.myshopify.com", "access_token": TOKEN, "api_base": url}},
        services={"externalAPI": {"providers": ["shop"]}},
        retry={"attempts": 3, "initial_delay": 0.2, "max_delay": 5.0, "jitter": 0.2},  # the hub's defaults
        sync={"page_size": PAGE, "max_pages": 100_000, "max_records": 10 * levels},  # one run reads everything
        rate_limits={"limits": {"externalAPI": "100000/minute"}},
    )
    manager = api.hub
    policy = manager.runtime.retry
    waits: list[float] = []
    original = policy._wait

    def counted(state: Any) -> float:
        delay = original(state)
        waits.append(delay)
        return delay

    policy._wait = counted  # type: ignore[method-assign]  # the sum of the retry sleeps = throttle waiting
    runs = []
    try:
        for label in ("first", "incremental"):
            waits.clear()
            _reset(url)
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            started = time.perf_counter()
            result = manager.sync_all_inventory("demo")
            elapsed = time.perf_counter() - started
            assert result["shop"]["success"], result
            assert result["shop"]["count"] == levels, result
            runs.append(
                {
                    "run": label,
                    "seconds": round(elapsed, 2),
                    "records": result["shop"]["count"],
                    "records_per_second": round(levels / elapsed),
                    "throttle_waits": len(waits),
                    "throttle_wait_seconds": round(sum(waits), 2),
                    "server": _stats(url),
                    "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                    "peak_rss_growth_mib": round(
                        (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024, 1
                    ),
                }
            )
    finally:
        api.close()
    return {"runs": runs}


def bare_run(url: str, folder: str, args: argparse.Namespace) -> dict[str, Any]:
    import requests
    from hub_shopify import LEVELS_QUERY, LOCATIONS_QUERY

    db = sqlite3.connect(Path(folder) / "bare.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE levels (sku TEXT, location TEXT, quantity INTEGER, location_name TEXT, inventory_item_id TEXT,"
        " inventory_level_id TEXT, updated_at TEXT, synced_at REAL, PRIMARY KEY (sku, location))"
    )
    db.execute("CREATE TABLE changes (sku TEXT, location TEXT, quantity INTEGER, previous INTEGER, at REAL)")
    db.execute("CREATE TABLE checkpoint (id INTEGER PRIMARY KEY, cursor TEXT)")
    db.execute("INSERT INTO checkpoint VALUES (1, NULL)")
    session = requests.Session()
    session.headers.update({"X-Shopify-Access-Token": TOKEN, "Content-Type": "application/json"})
    endpoint = f"{url}/admin/api/2026-04/graphql.json"
    waited = [0.0, 0]

    def query(source: str, variables: dict[str, Any]) -> dict[str, Any]:
        while True:
            body = session.post(endpoint, json={"query": source, "variables": variables}, timeout=10).json()
            errors = body.get("errors") or []
            if any((e.get("extensions") or {}).get("code") == "THROTTLED" for e in errors):
                cost = body["extensions"]["cost"]
                status = cost["throttleStatus"]
                pause = (cost["requestedQueryCost"] - status["currentlyAvailable"]) / status["restoreRate"]
                waited[0] += pause
                waited[1] += 1
                time.sleep(pause)
                continue
            assert not errors, errors
            return body["data"]

    _reset(url)
    started = time.perf_counter()
    locations = [(n["id"], n["name"]) for n in query(LOCATIONS_QUERY, {"first": 50})["locations"]["nodes"]]
    count = 0
    for location_id, location_name in locations:
        after = None
        while True:
            data = query(LEVELS_QUERY, {"location": location_id, "first": PAGE, "after": after})
            connection = data["location"]["inventoryLevels"]
            now = time.time()
            rows = [
                (
                    node["item"]["sku"],
                    location_id,
                    node["quantities"][0]["quantity"],
                    location_name,
                    node["item"]["id"],
                    node["id"],
                    node["updatedAt"],
                    now,
                )
                for node in connection["nodes"]
            ]
            db.execute("BEGIN")
            previous = dict(
                db.execute(
                    f"SELECT sku, quantity FROM levels WHERE location = ? AND sku IN ({','.join('?' * len(rows))})",
                    [location_id, *(row[0] for row in rows)],
                ).fetchall()
            )
            db.executemany(
                "INSERT INTO levels VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (sku, location) DO UPDATE SET"
                " quantity=excluded.quantity, updated_at=excluded.updated_at, synced_at=excluded.synced_at",
                rows,
            )
            db.executemany(
                "INSERT INTO changes VALUES (?,?,?,?,?)", [(r[0], r[1], r[2], previous.get(r[0]), now) for r in rows]
            )
            after = connection["pageInfo"]["endCursor"] if connection["pageInfo"]["hasNextPage"] else None
            db.execute("UPDATE checkpoint SET cursor = ? WHERE id = 1", (json.dumps([location_id, after]),))
            db.execute("COMMIT")
            count += len(rows)
            if after is None:
                break
    elapsed = time.perf_counter() - started
    assert count == args.items * args.locations
    assert db.execute("SELECT count(*) FROM levels").fetchone()[0] == count
    db.close()
    return {
        "seconds": round(elapsed, 2),
        "records": count,
        "records_per_second": round(count / elapsed),
        "throttle_waits": waited[1],
        "throttle_wait_seconds": round(waited[0], 2),
        "server": _stats(url),
    }


def _reset(url: str) -> None:
    import requests

    requests.post(f"{url}/bench/reset", timeout=5).raise_for_status()


def _stats(url: str) -> dict[str, Any]:
    import requests

    return requests.get(f"{url}/bench/stats", timeout=5).json()


def minimum(args: argparse.Namespace) -> dict[str, Any]:
    """What the API's page size allows: one locations query, ceil(levels/250) pages per location; the fake's
    actual cost is 1 + the nodes returned."""
    pages = args.locations * math.ceil(args.items / PAGE)
    return {"requests": pages + 1, "actualCost": args.items * args.locations + pages + 1 + args.locations}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--locations", type=int, default=3)
    parser.add_argument("--restore-rate", type=float, default=4000.0, help="bucket points restored per second")
    parser.add_argument("--bucket", type=float, default=2000.0, help="maximumAvailable (Shopify Plus: 2000)")
    parser.add_argument("--quick", action="store_true", help="600 SKUs: a smoke run of a few seconds")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--skip-hub", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.items = 600
    if args.serve:
        serve(args)
        return
    from hub.testing.servers import ServerProcess, free_port

    port = free_port()
    command = [sys.executable, __file__, "--serve", "--port", str(port), "--items", str(args.items)]
    command += ["--locations", str(args.locations), "--restore-rate", str(args.restore_rate)]
    command += ["--bucket", str(args.bucket)]
    with ServerProcess(command, port=port, name="bench-shopify") as server:
        url = server.url
        with tempfile.TemporaryDirectory(prefix="hub-sync-bench-") as folder:
            hub = None if args.skip_hub else hub_run(url, folder, args)
            bare = bare_run(url, folder, args)
    report: dict[str, Any] = {
        "levels": args.items * args.locations,
        "page_size": PAGE,
        "bucket": {"maximumAvailable": args.bucket, "restoreRate": args.restore_rate},
        "minimum": minimum(args),
        "bare": bare,
    }
    if hub:
        report["hub"] = hub["runs"]
        report["ratio_hub_over_bare_records_per_second"] = round(
            hub["runs"][0]["records_per_second"] / bare["records_per_second"], 3
        )
        report["ratio_incremental_over_bare"] = round(
            hub["runs"][1]["records_per_second"] / bare["records_per_second"], 3
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
