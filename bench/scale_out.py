"""Scale-out throughput: 1 vs. 2 ``hub serve`` processes and 1 vs. 2 ``hub worker`` processes on PostgreSQL + Redis,
and the same workload on SQLite, on this machine.

Two measurements per layout, one after the other so they do not share the CPU:

1. **API**: ``POST /notifications`` (one recipient, ``async: true``: validated, recorded, queued, 202) from a load
   generator in its own process (threads, one keep-alive ``requests.Session`` each, spread over the API
   processes), with no worker running. Requests per second over the whole run, after a warm-up.
2. **workers**: the API processes stopped, the worker processes started on the queue the API filled; emails
   per second received at a local SMTP server (its own process) from the 5th to the 95th percentile of the
   run (start-up and the tail left out).

Every process is on 127.0.0.1: PostgreSQL (127.0.0.1:5432, a database of its own, dropped afterwards), Redis
(an empty database number, only the hub's keys deleted afterwards) and the SMTP server (hub-smtp provider, no
TLS). The email rate limit is raised out of the way. The ratios 2:1 are printed side by side.

    python bench/scale_out.py [--requests 1500] [--connections 16] [--threads 4] [--rounds 3]
    python bench/scale_out.py --requests 500 profile [--database sqlite] [--no-pre-ping] [--quiet]

``profile`` runs one worker's jobs in one thread under pyinstrument and counts the SQL statements per
notification (``--no-pre-ping``: without the pool's ``SELECT 1`` at each checkout, to see what it costs;
``HUB_BENCH_PG_OPTIONS=-csynchronous_commit=off``: what waiting for the WAL flush at each commit costs).

Only 127.0.0.1 is contacted; every process the bench starts is stopped when it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "plugins" / "hub-smtp")]

from hub.testing.processes import (  # noqa: E402
    ApiServer,
    HubProcess,
    NoEmptyRedisDatabase,
    Worker,
    empty_redis_database,
    hub_environment,
    stop_all,
    wait_until,
)
from hub.testing.servers import free_port  # noqa: E402

POSTGRES = os.environ.get("HUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("HUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0]
TENANT = "bench"
WARM_UP = 100


# --- the load generator (its own process: `python bench/scale_out.py load ...`) ------------------------------


def load(urls: list[str], token: str, count: int, connections: int, warm_up: int) -> dict[str, Any]:
    import requests

    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": TENANT}
    local = threading.local()
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def post(number: int) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        body = {"type": "email", "recipients": [{"email": f"n{number}@example.com"}], "data": {"subject": "Bench", "message": "Hi"}, "async": True}
        response = local.session.post(f"{urls[number % len(urls)]}/notifications", json=body, headers=headers, timeout=60)
        with lock:
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(post, range(warm_up)))
        started = time.perf_counter()
        list(pool.map(post, range(warm_up, warm_up + count)))
        elapsed = time.perf_counter() - started
    return {"elapsed": elapsed, "rate": count / elapsed, "statuses": statuses}


def run_load(urls: list[str], token: str, count: int, connections: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "load", "--token", token, "--count", str(count), "--connections", str(connections), *urls]
    output = subprocess.run(command, capture_output=True, text=True, env=hub_environment(), check=True, timeout=600).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


# --- shared state: a PostgreSQL database and a Redis database number of the bench's own -----------------------


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    import psycopg

    admin = psycopg.connect(POSTGRES, connect_timeout=2, autocommit=True)
    name = f"hub_bench_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        options = os.environ.get("HUB_BENCH_PG_OPTIONS")  # e.g. "-csynchronous_commit=off", to see what commits cost
        yield POSTGRES.rsplit("/", 1)[0] + f"/{name}" + (f"?options={quote(options)}" if options else "")
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextlib.contextmanager
def redis_database() -> Iterator[str]:

    try:
        with empty_redis_database(REDIS) as url:
            yield url
    except NoEmptyRedisDatabase as error:
        raise SystemExit(str(error)) from None


class SmtpCounter:
    """``python -m hub.testing.servers smtp`` in its own process; a thread notes when each count line arrived."""

    def __init__(self) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "hub.testing.servers", "smtp", "--port", str(self.port), "--no-tls", "--no-auth", "--report-every", "0.05"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=hub_environment(), start_new_session=True)
        self.samples: list[tuple[float, int]] = []
        #: The server counts since it started: a layout's count is what came after its reset().
        self.base = 0
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        if not first.startswith("listening"):
            raise SystemExit(f"SMTP server: {first}")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("messages "):
                self.samples.append((time.perf_counter(), int(line.split()[1])))

    @property
    def count(self) -> int:
        return self.samples[-1][1] - self.base if self.samples else 0

    def rate_between(self, low: int, high: int) -> float:
        """Emails per second between the samples where the count first reached ``low`` and ``high``."""
        first = next((moment, count) for moment, count in self.samples if count - self.base >= low)
        last = next((moment, count) for moment, count in self.samples if count - self.base >= high)
        return (last[1] - first[1]) / max(last[0] - first[0], 1e-9)

    def reset(self) -> None:
        if self.samples:
            self.base = self.samples[-1][1]
            self.samples = self.samples[-1:]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


# --- one layout --------------------------------------------------------------------------------------------


@dataclass
class Result:
    database: str
    apis: int
    workers: int
    api_rate: float
    delivery_rate: float
    #: Worker processes' CPU milliseconds per email (start-up included), and the machine's busy cores meanwhile.
    worker_cpu_ms: float = 0.0
    busy_cores: float = 0.0


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy core-seconds, elapsed core-seconds) of the whole machine so far, from /proc/stat."""
    values = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK"), sum(values) / os.sysconf("SC_CLK_TCK") / (os.cpu_count() or 1)


def write_config(folder: Path, database_url: str | None, redis_url: str, smtp_port: int) -> Path:
    raw = {
        "data_dir": str(folder / "var"),
        "database_url": database_url,
        "redis_url": redis_url,
        "server": {"graceful_timeout": 5},
        "providers": {"mail": {"type": "smtp", "host": "127.0.0.1", "port": smtp_port, "security": "none", "from_address": "hub@example.com"}},
        "services": {"email": {"providers": ["mail"], "enabled": True}},
        "queue": {"backend": "redis", "workers": 0, "lease_seconds": 10},
        "rate_limits": {"storage": redis_url, "limits": {"email": "1000000/second"}},
    }
    path = folder / "hub.yaml"
    path.write_text(json.dumps(raw))  # JSON is YAML
    return path


def measure(database: str, apis: int, workers: int, arguments: argparse.Namespace, smtp: SmtpCounter) -> Result:
    from hub import IntegrationManager
    from hub.config import load_config

    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hub-scale-")))
        database_url = stack.enter_context(postgres_database()) if database == "postgresql" else None
        redis_url = stack.enter_context(redis_database())
        config = write_config(folder, database_url, redis_url, smtp.port)
        hub = IntegrationManager(load_config(config, {}), environ={})  # the schema, once, and a token
        token = hub.tokens.create(TENANT, "bench")[1]
        hub.close()
        smtp.reset()
        processes: list[HubProcess] = []
        try:
            with ThreadPoolExecutor(2) as pool:
                servers = list(pool.map(lambda n: ApiServer(config, folder / f"api{n}.log", free_port(), threads=arguments.threads * 2), range(apis)))
            processes += servers
            api = run_load([server.url for server in servers], token, arguments.requests, arguments.connections)
            if set(api["statuses"]) != {"202"}:
                raise SystemExit(f"unexpected answers {api['statuses']}: {servers[0].log_tail()}")
            stop_all(servers)
            total = arguments.requests + WARM_UP
            started = [Worker(config, folder / f"worker{n}.log", arguments.threads) for n in range(workers)]
            processes += started
            machine, own = machine_busy(), [process_cpu(worker.pid) for worker in started]
            wait_until(lambda: smtp.count >= total, 600, f"{total} emails", folder / "worker0.log", every=0.1)
            delivery = smtp.rate_between(int(total * 0.05), int(total * 0.95))
            busy, elapsed = (now - then for now, then in zip(machine_busy(), machine, strict=True))
            worker_cpu = sum(process_cpu(worker.pid) - before for worker, before in zip(started, own, strict=True))
        finally:
            stop_all(processes)
    return Result(database, apis, workers, api["rate"], delivery, 1000 * worker_cpu / total, busy / elapsed)


def profile(arguments: argparse.Namespace, smtp: SmtpCounter) -> None:
    """Where a worker's time goes: the queue filled in-process, then its jobs run one by one in this thread
    (huey's own ``execute``, as a consumer's worker thread runs them) under pyinstrument."""
    from pyinstrument import Profiler

    from hub import IntegrationManager
    from hub.config import load_config

    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hub-scale-")))
        database_url = stack.enter_context(postgres_database()) if arguments.database == "postgresql" else None
        config = write_config(folder, database_url, stack.enter_context(redis_database()), smtp.port)
        hub = IntegrationManager(load_config(config, {}), environ={})
        stack.callback(hub.close)
        for number in range(arguments.requests):
            hub.send_notification("email", [{"email": f"n{number}@example.com"}], data={"subject": "Bench", "message": "Hi"}, tenant_id=TENANT, asynchronous=True)
        huey = hub.jobs.huey
        from sqlalchemy import event

        statements: Counter[str] = Counter()
        event.listen(hub.runtime.db.engine, "before_cursor_execute", lambda _c, _k, text, *_: statements.update([" ".join(text.split()[:3])]))
        if arguments.no_pre_ping:  # what pool_pre_ping's SELECT 1 per checkout costs
            hub.runtime.db.engine.pool._pre_ping = False
        profiler = Profiler(interval=0.0005)
        started = time.perf_counter()
        with profiler:
            while (task := huey.dequeue()) is not None:
                huey.execute(task)
        elapsed = time.perf_counter() - started
        print(f"{arguments.requests} notifications in {elapsed:.2f} s: {arguments.requests / elapsed:.1f}/s in one thread ({arguments.database})")
        print("statements per notification:", {text: round(count / arguments.requests, 2) for text, count in statements.most_common(12)})
        if not arguments.quiet:
            print(profiler.output_text(unicode=False, color=False, show_all=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    loader = commands.add_parser("load", help="(internal) the load generator")
    loader.add_argument("urls", nargs="+")
    loader.add_argument("--token", required=True)
    loader.add_argument("--count", type=int, required=True)
    loader.add_argument("--connections", type=int, required=True)
    profiler = commands.add_parser("profile", help="where one worker thread's time goes (pyinstrument)")
    profiler.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    profiler.add_argument("--no-pre-ping", action="store_true", help="without pool_pre_ping's check at each checkout")
    profiler.add_argument("--quiet", action="store_true", help="the rate and statements only")
    parser.add_argument("--requests", type=int, default=1500, help="notifications per layout (after a warm-up of 100)")
    parser.add_argument("--connections", type=int, default=16, help="load generator threads")
    parser.add_argument("--threads", type=int, default=4, help="threads per hub worker (API processes get twice as many)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every layout; medians are reported")
    arguments = parser.parse_args()
    if arguments.command == "load":
        print(json.dumps(load(arguments.urls, arguments.token, arguments.count, arguments.connections, WARM_UP)))
        return
    smtp = SmtpCounter()
    if arguments.command == "profile":
        try:
            profile(arguments, smtp)
        finally:
            smtp.stop()
        return
    layouts = [("postgresql", 1, 1), ("postgresql", 2, 2), ("sqlite", 1, 1), ("sqlite", 2, 2)]
    results: dict[tuple[str, int, int], list[Result]] = {layout: [] for layout in layouts}
    print(f"load average before: {' '.join(f'{value:.1f}' for value in os.getloadavg())}", flush=True)
    try:
        for round_number in range(arguments.rounds):
            # Each round runs every layout back to back: a ratio compares runs a minute apart at most (the
            # machine is shared), and the median of the rounds' ratios is the figure.
            for layout in layouts:
                result = measure(*layout, arguments, smtp)
                results[layout].append(result)
                print(f"round {round_number + 1} {layout[0]:10} apis {layout[1]} workers {layout[2]}:"
                      f" API {result.api_rate:7.1f} requests/s, workers {result.delivery_rate:7.1f} emails/s"
                      f" ({result.worker_cpu_ms:.1f} ms worker CPU per email, machine {result.busy_cores:.2f} cores busy)"
                      f" (load average {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        smtp.stop()

    def median_ratio(top: tuple[str, int, int], bottom: tuple[str, int, int], field: str) -> float:
        return statistics.median(getattr(a, field) / getattr(b, field) for a, b in zip(results[top], results[bottom], strict=True))

    def median(layout: tuple[str, int, int], field: str) -> float:
        return statistics.median(getattr(result, field) for result in results[layout])

    print(f"\n{os.cpu_count()} cores, {arguments.requests} notifications per layout, load generator {arguments.connections} threads,"
          f" {arguments.threads} threads per worker; medians of {arguments.rounds} round(s)")
    print(f"{'':12}{'API requests/s':>30}{'worker emails/s':>30}")
    print(f"{'':12}{'1 proc':>10}{'2 procs':>10}{'ratio':>10}{'1 proc':>10}{'2 procs':>10}{'ratio':>10}")
    for database in ("postgresql", "sqlite"):
        one, two = (database, 1, 1), (database, 2, 2)
        print(f"{database:12}{median(one, 'api_rate'):10.1f}{median(two, 'api_rate'):10.1f}{median_ratio(two, one, 'api_rate'):9.2f}x"
              f"{median(one, 'delivery_rate'):10.1f}{median(two, 'delivery_rate'):10.1f}{median_ratio(two, one, 'delivery_rate'):9.2f}x")
    pg, lite = ("postgresql", 1, 1), ("sqlite", 1, 1)
    print(f"PostgreSQL vs SQLite (1 + 1): API {median_ratio(pg, lite, 'api_rate'):.2f}x, workers {median_ratio(pg, lite, 'delivery_rate'):.2f}x;"
          f" (2 + 2): API {median_ratio(('postgresql', 2, 2), ('sqlite', 2, 2), 'api_rate'):.2f}x,"
          f" workers {median_ratio(('postgresql', 2, 2), ('sqlite', 2, 2), 'delivery_rate'):.2f}x")

if __name__ == "__main__":
    main()
