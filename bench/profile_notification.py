"""Where one ``POST /notifications`` spends its time, and every database transaction it makes.

In-process (Flask test client over ``hub.api.create_app``, no HTTP server), with the same hub.yaml as
bench/api_throughput.py (embedded defaults, email rate limit raised): one inline email to one recipient,
template ``custom``, through the built-in ``outbox`` provider. It prints

* the time per request (and per block of requests, to show whether it grows with the tables);
* per request: sessions used, transactions begun, commits, rollbacks, statements (counted by SQLAlchemy
  event listeners on every ``Engine`` and ``Session``, so nothing in ``hub/`` is touched);
* the walk of one request: each transaction in order, the hub function that opened it, and its statements;
* every distinct statement's SQLite query plan, flagging full-table scans (``SCAN`` without an index);
* the top functions by own and cumulative time, in ms per request (cProfile, or ``--profiler pyinstrument``).

    python bench/profile_notification.py [--requests 500] [--preload 0] [--idempotency-key]
                                         [--profiler cprofile|pyinstrument] [--top 25]

``--preload N`` sends N unprofiled requests first, to look at the same request over bigger tables.
Only public entry points are used (``hub token create``, ``hub.api.create_app``, the REST API), so the
script keeps working while the core is reorganised.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_throughput import NOTIFICATION, PATH, REPO, TENANT, write_hub_config  # noqa: E402

HUB_PACKAGE = str(REPO / "hub") + os.sep
#: Frames that only forward a transaction (the session context manager, contextlib): the caller is named instead.
FORWARDING_FUNCTIONS = {"session", "__enter__", "__exit__"}


@dataclass
class Transaction:
    opened_by: str
    statements: list[str] = field(default_factory=list)
    ended: str = "open"


@dataclass
class RequestTrace:
    transactions: list[Transaction] = field(default_factory=list)
    sessions: int = 0
    commits: int = 0
    rollbacks: int = 0
    statements: int = 0
    read_ms: float = 0.0  # inside SELECT statements
    write_ms: float = 0.0  # inside INSERT/UPDATE/DELETE statements, including any wait for SQLite's write lock
    commit_ms: float = 0.0

    @property
    def sql_ms(self) -> float:
        return self.read_ms + self.write_ms + self.commit_ms


class DatabaseTracer:
    """SQLAlchemy event listeners on the Engine and Session classes: they see every engine the hub creates.
    State is per thread, so requests running side by side are traced apart."""

    def __init__(self) -> None:
        self.distinct_statements: dict[str, Any] = {}  # SQL text -> first parameters, for EXPLAIN QUERY PLAN
        self._local = threading.local()
        self._listeners: list[tuple[Any, str, Any]] = []

    @property
    def current(self) -> RequestTrace | None:
        return getattr(self._local, "trace", None)

    @current.setter
    def current(self, trace: RequestTrace | None) -> None:
        self._local.trace = trace
        self._local.open = None

    def install(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
        from sqlalchemy.orm import Session

        self._listeners = [
            (Engine, "begin", self._begin),
            (Engine, "commit", self._commit),
            (Engine, "rollback", self._rollback),
            (Engine, "before_cursor_execute", self._before_execute),
            (Engine, "after_cursor_execute", self._after_execute),
            (Session, "after_transaction_create", self._session_used),
            (Session, "after_commit", self._committed),
        ]
        for target, name, listener in self._listeners:
            event.listen(target, name, listener)

    def remove(self) -> None:
        from sqlalchemy import event

        for target, name, listener in self._listeners:
            event.remove(target, name, listener)
        self._listeners = []

    def _session_used(self, session: Any, transaction: Any) -> None:
        # A session counts once, the first time it opens a transaction (an unused session costs next to nothing).
        trace = self.current
        if trace is not None and transaction.parent is None and not session.info.get("profiled"):
            session.info["profiled"] = True
            trace.sessions += 1

    def _begin(self, connection: Any) -> None:
        trace = self.current
        if trace is not None:
            self._local.open = Transaction(opened_by=hub_caller())
            trace.transactions.append(self._local.open)

    def _end(self, how: str) -> None:
        trace = self.current
        if trace is None:
            return
        if how == "commit":
            trace.commits += 1
        else:
            trace.rollbacks += 1
        if self._local.open is not None:
            self._local.open.ended = how

    def _commit(self, connection: Any) -> None:
        # The engine's event comes just before the driver's COMMIT, the session's after_commit just after it.
        self._local.commit_started = time.perf_counter()
        self._end("commit")

    def _committed(self, session: Any) -> None:
        trace = self.current
        started = getattr(self._local, "commit_started", None)
        if trace is not None and started is not None:
            trace.commit_ms += (time.perf_counter() - started) * 1000
            self._local.commit_started = None

    def _rollback(self, connection: Any) -> None:
        self._end("rollback")

    def _before_execute(
        self, connection: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        trace = self.current
        if trace is None:
            return
        self._local.statement_started = time.perf_counter()
        self._local.statement_reads = statement.lstrip()[:6].upper() == "SELECT"
        trace.statements += 1
        self.distinct_statements.setdefault(statement, parameters)
        if self._local.open is not None:
            self._local.open.statements.append(describe_statement(statement, executemany))

    def _after_execute(self, *_: Any) -> None:
        # Includes any wait for SQLite's write lock (the busy handler sleeps inside the statement).
        trace = self.current
        if trace is not None:
            elapsed = (time.perf_counter() - self._local.statement_started) * 1000
            if self._local.statement_reads:
                trace.read_ms += elapsed
            else:
                trace.write_ms += elapsed


def hub_caller() -> str:
    """The innermost hub function (and its hub caller) on the stack: who opened this transaction. Walks the
    frames by hand: ``traceback.extract_stack`` reads source lines and would cost milliseconds per request."""
    named: list[str] = []
    frame = sys._getframe(1)
    while frame is not None and len(named) < 2:
        code = frame.f_code
        if code.co_filename.startswith(HUB_PACKAGE) and code.co_name not in FORWARDING_FUNCTIONS:
            named.append(f"{Path(code.co_filename).relative_to(REPO)}:{code.co_name}")
        frame = frame.f_back
    return " < ".join(named) or "(outside hub/)"


def describe_statement(statement: str, executemany: bool) -> str:
    words = statement.split()
    verb = words[0].upper() if words else "?"
    table = re.search(r"\b(?:FROM|INTO|UPDATE)\s+\"?(\w+)", statement, re.IGNORECASE)
    return f"{verb} {table.group(1) if table else ''}{' (many)' if executemany else ''}".strip()


def query_plans(database: Path, statements: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """EXPLAIN QUERY PLAN for each distinct SELECT/UPDATE/DELETE, with the parameters it first ran with."""
    plans = []
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        for statement, parameters in statements.items():
            if not statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
                continue
            try:
                rows = db.execute(
                    f"EXPLAIN QUERY PLAN {statement}", parameters if isinstance(parameters, tuple | dict) else ()
                ).fetchall()
            except sqlite3.Error as error:
                rows = [(0, 0, 0, f"(no plan: {error})")]
            plans.append((statement, [row[3] for row in rows]))
    return plans


def is_full_scan(plan_line: str) -> bool:
    # "SCAN t" reads the whole table; "SCAN t USING (COVERING) INDEX" or "SEARCH ..." do not.
    return plan_line.startswith("SCAN") and "USING" not in plan_line and "CONSTANT ROW" not in plan_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--preload", type=int, default=0, help="unprofiled requests sent first (bigger tables)")
    parser.add_argument("--idempotency-key", action="store_true", help="send a fresh Idempotency-Key with each request")
    parser.add_argument("--profiler", choices=("cprofile", "pyinstrument"), default="cprofile")
    parser.add_argument("--top", type=int, default=25, help="functions to list")
    parser.add_argument("--block", type=int, default=100, help="requests per block in the time-per-block line")
    parser.add_argument(
        "--threads", type=int, default=8, help="threads for the concurrent in-process phase (1: skip it)"
    )
    parser.add_argument("--seconds", type=float, default=5, help="length of the concurrent phase")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="hub-profile-"))
    env = {
        **os.environ,
        "HUB_LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    try:
        config_path = write_hub_config(folder)
        created = subprocess.run(
            [sys.executable, "-m", "hub.cli", "token", "create", "--tenant", TENANT],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        token = created.stdout.split()[-1]
        os.environ["HUB_LOG_LEVEL"] = "WARNING"
        sys.path.insert(0, str(REPO))
        from hub.api import create_app

        app = create_app(str(config_path))
        headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": TENANT}
        sequence = iter(range(10**9))
        clients = threading.local()  # a test client per thread: it keeps state (cookies) between requests

        def post() -> None:
            if not hasattr(clients, "client"):
                clients.client = app.test_client()
            extra = {"Idempotency-Key": f"profile-{next(sequence)}"} if args.idempotency_key else {}
            response = clients.client.post(PATH, json=NOTIFICATION, headers={**headers, **extra})
            if not 200 <= response.status_code < 300:
                raise SystemExit(
                    f"POST {PATH} answered {response.status_code}: {response.get_data(as_text=True)[:500]}"
                )

        print(
            f"POST {PATH}{' with an Idempotency-Key' if args.idempotency_key else ''}: one inline email, one recipient, "
            "template custom, outbox provider, SQLite; in-process (Flask test client)"
        )
        started = time.perf_counter()
        for _ in range(20 + args.preload):  # warm-up (imports, caches, first connections), then bigger tables
            post()
        if args.preload:
            print(f"preloaded {args.preload} requests in {time.perf_counter() - started:.1f} s")

        durations: list[float] = []  # 1. time alone: no tracer, no profiler
        cpu_times: list[float] = []
        for _ in range(args.requests):
            started, cpu_started = time.perf_counter(), time.process_time()
            post()
            durations.append((time.perf_counter() - started) * 1000)
            cpu_times.append((time.process_time() - cpu_started) * 1000)
        print_timing(durations, cpu_times, args.block)

        tracer = DatabaseTracer()  # 2. every transaction, statement and session
        tracer.install()
        traces: list[RequestTrace] = []
        for _ in range(min(args.requests, 100)):
            tracer.current = RequestTrace()
            post()
            traces.append(tracer.current)
        tracer.current = None
        tracer.remove()
        print_transactions(traces, tracer, folder / "var" / "hub.db")

        if args.threads > 1:  # 3. the same request from several threads at once, as gunicorn's gthread runs it
            print_concurrency(args, post, tracer, sql_split(traces))

        profiler: Any  # 4. where the time goes
        if args.profiler == "pyinstrument":
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.001)
            profiler.start()
        else:
            profiler = cProfile.Profile()
            profiler.enable()
        for _ in range(args.requests):
            post()
        if args.profiler == "pyinstrument":
            profiler.stop()
            print(f"\n{args.requests} requests under pyinstrument, ms per request (sampling: little overhead):")
            print(per_request(profiler.output_text(unicode=False, color=False, show_all=False), args.requests))
        else:
            profiler.disable()
            print_profile(profiler, args.requests, args.top)
        app.extensions["hub"].close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def print_timing(durations: list[float], cpu_times: list[float], block: int) -> None:
    def blocks(values: list[float]) -> str:
        return " -> ".join(
            f"{statistics.fmean(values[start : start + block]):.2f}" for start in range(0, len(values), block)
        )

    print(
        f"time per request ({len(durations)} requests, no profiler): wall mean {statistics.fmean(durations):.2f} ms, p50 {statistics.median(durations):.2f} ms; "
        f"CPU mean {statistics.fmean(cpu_times):.2f} ms"
    )
    # Wall time moves with the machine's other load; CPU time much less, so a trend in CPU time is the hub's own.
    print(f"  per block of {block}: wall {blocks(durations)} ms; CPU {blocks(cpu_times)} ms")
    # CPU time is what bounds one gunicorn worker: with the GIL, its threads share about one core.
    print(f"  CPU time bounds one worker process (the GIL) at ~{1000 / statistics.fmean(cpu_times):.0f} requests/s")


def spread(values: list[float]) -> str:
    low, middle, high = min(values), statistics.median(values), max(values)
    return f"{middle:g}" if low == high else f"{middle:g} (min {low:g}, max {high:g})"


def print_transactions(traces: list[RequestTrace], tracer: DatabaseTracer, database: Path) -> None:
    print(
        f"per request ({len(traces)} traced): sessions {spread([t.sessions for t in traces])}, transactions {spread([len(t.transactions) for t in traces])}, "
        f"commits {spread([t.commits for t in traces])}, rollbacks {spread([t.rollbacks for t in traces])}, "
        f"statements {spread([t.statements for t in traces])}"
    )
    print(f"  time in SQLite per request: {sql_split(traces)}")
    sample = traces[-1]
    print(
        f"\nthe walk of one request ({len(sample.transactions)} transactions, in order; opened by innermost < caller):"
    )
    for number, transaction in enumerate(sample.transactions, 1):
        statements = Counter(transaction.statements)
        listed = ", ".join(f"{name} x{n}" if n > 1 else name for name, n in statements.items()) or "(no statement)"
        print(f"  {number:2}. {transaction.ended:<8} {transaction.opened_by}\n      {listed}")

    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        tables = [
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'hub_%'")
        ]
        sizes = {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables}  # noqa: S608
    print("\nquery plans of the distinct SELECT/UPDATE/DELETE statements (* = full table scan)")
    print(
        "  table rows: " + ", ".join(f"{table.removeprefix('hub_')} {rows:,}" for table, rows in sizes.items() if rows)
    )
    for statement, plan in query_plans(database, tracer.distinct_statements):
        flag = "*" if any(is_full_scan(line) for line in plan) else " "
        print(f"  {flag} {' '.join(statement.split())[:140]}\n      {' | '.join(plan)}")


def sql_split(traces: list[RequestTrace]) -> str:
    def mean(name: str) -> float:
        return statistics.fmean(getattr(trace, name) for trace in traces)

    return f"{mean('sql_ms'):.2f} ms (reads {mean('read_ms'):.2f}, writes {mean('write_ms'):.2f}, commits {mean('commit_ms'):.2f})"


def print_concurrency(args: argparse.Namespace, post: Any, tracer: DatabaseTracer, sequential: str) -> None:
    """Threads share one app, as gthread's do: the time inside SQL statements grows by the waits for SQLite's
    single write lock (and the GIL), which a sequential run never shows."""
    traces: list[RequestTrace] = []
    durations: list[float] = []
    deadline = time.perf_counter() + args.seconds
    lock = threading.Lock()

    def loop() -> None:
        while time.perf_counter() < deadline:
            tracer.current = RequestTrace()
            started = time.perf_counter()
            post()
            with lock:
                durations.append((time.perf_counter() - started) * 1000)
                traces.append(tracer.current)
        tracer.current = None

    tracer.install()
    started = time.perf_counter()
    threads = [threading.Thread(target=loop) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    tracer.remove()
    cuts = statistics.quantiles(durations, n=100)
    print(
        f"\n{args.threads} threads for {args.seconds:g} s in-process: {len(durations) / elapsed:.1f} req/s, p50 {cuts[49]:.1f} ms, p99 {cuts[98]:.1f} ms"
    )
    print(f"  time in SQLite per request: {sql_split(traces)} (sequential: {sequential})")


def print_profile(profiler: cProfile.Profile, count: int, top: int) -> None:
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = []
    for (filename, line, name), (_calls, primitive_calls, own, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((own, cumulative, primitive_calls, shorten(filename), line, name))
    total = sum(row[0] for row in rows)
    by_package: Counter[str] = Counter()
    for own, _cumulative, _calls, filename, _line, _name in rows:
        by_package[package_of(filename)] += own
    print(
        f"\n{count} requests under cProfile ({total / count * 1000:.2f} ms per request with its overhead); top {top} functions, ms per request"
    )
    print(
        "  own time by package: "
        + ", ".join(f"{name} {own / count * 1000:.2f}" for name, own in by_package.most_common(12))
    )
    print("  by own time (excluding callees):")
    for own, cumulative, calls, filename, line, name in sorted(rows, reverse=True)[:top]:
        print(
            f"    {own / count * 1000:7.3f} own {cumulative / count * 1000:7.3f} cum {calls / count:7.1f} calls  {filename}:{line} {name}"
        )
    print(
        "  by cumulative time, hub/ and plugins/ only (a generator or context manager counts each resumption as a call):"
    )
    hub_rows = [row for row in rows if row[3].startswith(("hub/", "plugins/"))]
    for own, cumulative, calls, filename, line, name in sorted(hub_rows, key=lambda row: row[1], reverse=True)[:top]:
        print(
            f"    {cumulative / count * 1000:7.3f} cum {own / count * 1000:7.3f} own {calls / count:7.1f} calls  {filename}:{line} {name}"
        )


def per_request(tree: str, count: int) -> str:
    """pyinstrument prints seconds for the whole run in front of each frame: turn them into ms per request."""

    def scale(match: re.Match[str]) -> str:
        return f"{match.group(1)}{float(match.group(2)) * 1000 / count:7.3f} "

    return "\n".join(re.sub(r"^([\s|`-]*)(\d+\.\d+) ", scale, line) for line in tree.splitlines())


def package_of(short_name: str) -> str:
    """``sqlalchemy/orm/session.py`` -> ``sqlalchemy``; ``hub/manager.py`` -> ``hub``; C built-ins -> ``built-ins``."""
    if short_name.startswith("~"):
        return "built-ins (I/O, sqlite3, locks)"
    head = short_name.split("/", 1)[0]
    return head.removesuffix(".py")


def shorten(filename: str) -> str:
    if filename.startswith(str(REPO) + os.sep):
        return str(Path(filename).relative_to(REPO))
    match = re.search(r"site-packages/(.*)$", filename) or re.search(r"lib/python3\.\d+/(.*)$", filename)
    return match.group(1) if match else filename


if __name__ == "__main__":
    main()
