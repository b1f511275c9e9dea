"""Throughput under concurrency: ``POST /notifications`` through ``hub serve`` vs. a bare Flask endpoint.

Two servers run side by side on 127.0.0.1, both gunicorn with the same settings (``gthread``, the same
workers and threads, the same timeouts):

1. **bare**: a Flask view that parses the JSON body, checks the bearer token (a SHA-256 lookup in SQLite,
   as the hub does) and inserts one row into SQLite (WAL, ``synchronous=NORMAL``, like the hub's pragmas) —
   the least any endpoint that accepts and records a notification must do;
2. **hub**: the real ``hub serve`` on its embedded defaults (SQLite, in-memory rate limits), one inline
   email to one recipient, template ``custom``, through the built-in ``outbox`` provider. The email rate
   limit is raised so nothing is refused with 429.

The load generator keeps N connections busy (closed loop, keep-alive) for fixed-length rounds, alternating
bare, hub, bare, hub…; while one server is measured the other is paused (SIGSTOP), so neither steals CPU
from the other. Records accumulate across the hub's rounds: the per-round rates and row counts show
whether it stays steady as its tables grow. ``wrk`` (with a Lua script) is used when installed
(``apt-get install -y wrk``), else a Python asyncio client; the output says which.

    python bench/api_throughput.py [--rounds 3] [--duration 8] [--connections 16] [--workers 1] [--threads 8]
                                   [--loader auto|wrk|python]

Only 127.0.0.1 is ever contacted; every process the bench starts is stopped when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PATH = "/api/integrations/notifications"
TENANT = "bench"
NOTIFICATION = {
    "type": "email",
    "recipients": [{"email": "bench@example.com"}],
    "template": "custom",
    "data": {"subject": "Bench", "message": "Hello"},
}
#: The options ``hub serve`` gives gunicorn (hub/cli.py), apart from workers and threads which both get from the command line.
GUNICORN_OPTIONS: dict[str, Any] = {
    "worker_class": "gthread",
    "timeout": 120,
    "graceful_timeout": 20,
    "accesslog": None,
    "control_socket_disable": True,
}


# --- the bare endpoint -------------------------------------------------------------------------------


def bare_app(database: str) -> Any:
    """JSON parsing, a bearer-token check against SQLite and one insert: the floor for this endpoint."""
    from flask import Flask, jsonify, request

    app = Flask("bare")
    local = threading.local()

    def connection() -> sqlite3.Connection:
        # One connection per thread, as a pool would hand out; the hub's pragmas.
        if not hasattr(local, "db"):
            local.db = sqlite3.connect(database, timeout=30, check_same_thread=False)
            local.db.execute("PRAGMA journal_mode=WAL")
            local.db.execute("PRAGMA synchronous=NORMAL")
            local.db.execute("PRAGMA busy_timeout=30000")
        return local.db

    @app.post(PATH)
    def create_notification() -> Any:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        db = connection()
        row = db.execute(
            "SELECT tenant FROM tokens WHERE token_hash = ?", (hashlib.sha256(token.strip().encode()).hexdigest(),)
        ).fetchone()
        if scheme.lower() != "bearer" or row is None or row[0] != request.headers.get("X-Tenant-ID"):
            return jsonify({"success": False, "message": "Invalid or expired token"}), 401
        body = request.get_json()
        if not isinstance(body, dict) or not body.get("recipients"):
            return jsonify({"success": False, "message": "Validation failed"}), 422
        record_id = uuid.uuid4().hex
        with db:  # one transaction: the insert and its commit
            db.execute(
                "INSERT INTO notifications (id, tenant, payload, created_at) VALUES (?, ?, ?, ?)",
                (record_id, row[0], json.dumps(body), time.time()),
            )
        return jsonify({"success": True, "data": {"id": record_id, "status": "sent"}})

    return app


def prepare_bare_database(database: str, token: str) -> None:
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE tokens (token_hash TEXT PRIMARY KEY, tenant TEXT NOT NULL)")
        db.execute(
            "CREATE TABLE notifications (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, payload TEXT NOT NULL, created_at REAL NOT NULL)"
        )
        db.execute("INSERT INTO tokens VALUES (?, ?)", (hashlib.sha256(token.encode()).hexdigest(), TENANT))


def serve_bare(port: int, database: str, workers: int, threads: int) -> None:
    from gunicorn.app.base import BaseApplication

    class BareServer(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {
                **GUNICORN_OPTIONS,
                "bind": f"{HOST}:{port}",
                "workers": workers,
                "threads": threads,
            }.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return bare_app(database)

    BareServer().run()


# --- servers -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]

    def pause(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGCONT)

    def cpu_seconds(self) -> float:
        """User + system CPU of every live process in the server's process group (Linux /proc; 0 elsewhere)."""
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == self.process.pid:  # field 5 of stat: the process group
                    total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks

    def stop(self) -> None:
        self.resume()  # a stopped process cannot act on SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=25)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def start(
    name: str, command: list[str], folder: Path, env: dict[str, str], port: int, headers: dict[str, str], body: bytes
) -> Server:
    log_path = folder / f"{name}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the child writes to it for its whole life
    process = subprocess.Popen(
        command, cwd=folder, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
    )
    server = Server(name, port, process)
    try:
        wait_until_serving(server, headers, body, timeout=60)
    except RuntimeError as error:
        server.stop()
        raise RuntimeError(
            f"{error}\n--- {log_path.name} ---\n{log_path.read_text(errors='replace')[-3000:]}"
        ) from None
    return server


def wait_until_serving(server: Server, headers: dict[str, str], body: bytes, timeout: float) -> None:
    """gunicorn listens before its worker has loaded the app (and the hub its plugins): wait for a real answer.
    Anything but 2xx is an error, since a bench of the error path would measure nothing useful."""
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with code {server.process.returncode}")
        connection = http.client.HTTPConnection(HOST, server.port, timeout=30)
        try:
            connection.request("POST", PATH, body=body, headers=headers)
            response = connection.getresponse()
            text = response.read()
        except OSError:
            time.sleep(0.1)
            continue
        finally:
            connection.close()
        if not 200 <= response.status < 300:
            raise RuntimeError(f"{server.name}: POST {PATH} answered {response.status}: {text[:500]!r}")
        return
    raise RuntimeError(f"{server.name} did not answer on {HOST}:{server.port} within {timeout:.0f} s")


# --- load generators -------------------------------------------------------------------------------------


@dataclass
class Round:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    server_cpu_s: float = 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu_s * 1000 / self.requests if self.requests else float("nan")

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = {authorization}
wrk.headers["X-Tenant-ID"] = {tenant}

local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) non_2xx = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then non_2xx = non_2xx + 1 end
end
function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do bad = bad + thread:get("non_2xx") end
  local errors = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), bad, errors.connect + errors.read + errors.write + errors.timeout))
end
"""


def run_wrk(port: int, script: Path, connections: int, seconds: float) -> Round:
    # One wrk thread is plenty for 16 connections at these rates and leaves the servers more of the 2 cores.
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        f"http://{HOST}:{port}{PATH}",
    ]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    count, duration_us, p50_us, p99_us, bad, socket_errors = (int(value) for value in line.split()[1:])
    return Round(count, duration_us / 1e6, p50_us / 1000, p99_us / 1000, bad, socket_errors)


async def _python_round(port: int, request: bytes, connections: int, seconds: float) -> Round:
    latencies: list[float] = []
    statuses = {"non_2xx": 0, "socket_errors": 0}
    deadline = time.perf_counter() + seconds

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                latencies.append((time.perf_counter() - started) * 1000)
                if not 200 <= status < 300:
                    statuses["non_2xx"] += 1
                if b"connection: close" in head.lower():
                    writer.close()
                    reader, writer = await asyncio.open_connection(HOST, port)
        except (OSError, asyncio.IncompleteReadError):
            statuses["socket_errors"] += 1
        finally:
            writer.close()

    started = time.perf_counter()
    # Bounded even if a server stops answering mid-round: the connections still open are cancelled.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(one_connection() for _ in range(connections))), seconds + 30)
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return Round(len(latencies), elapsed, cuts[49], cuts[98], statuses["non_2xx"], statuses["socket_errors"])


def run_python(port: int, request: bytes, connections: int, seconds: float) -> Round:
    return asyncio.run(_python_round(port, request, connections, seconds))


def write_hub_config(folder: Path) -> Path:
    """The repo's hub.yaml (embedded defaults) with the email rate limit raised so no request gets a 429.
    bench/profile_notification.py uses the same file."""
    import yaml

    config = yaml.safe_load((REPO / "hub.yaml").read_text())
    config["rate_limits"]["limits"] = {**config["rate_limits"].get("limits", {}), "email": "1000000000/minute"}
    path = folder / "hub.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# --- the bench -------------------------------------------------------------------------------------------


def hub_table_sizes(database: Path) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as db:
        counts = {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("hub_records", "hub_recipient_outcomes", "hub_audit")
        }  # noqa: S608
    wal = database.with_name(database.name + "-wal")
    wal_size = wal.stat().st_size / 2**20 if wal.exists() else 0.0
    return (
        ", ".join(f"{table.removeprefix('hub_')} {count:,}" for table, count in counts.items())
        + f", WAL {wal_size:.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8, help="seconds per round and contender")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of unmeasured load per server first")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="gunicorn worker processes (both servers)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker (both servers; hub serve's default)")
    parser.add_argument("--loader", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, databases)")
    parser.add_argument("--serve-bare", nargs=2, metavar=("PORT", "DATABASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(int(args.serve_bare[0]), args.serve_bare[1], args.workers, args.threads)
        return

    loader = args.loader if args.loader != "auto" else ("wrk" if shutil.which("wrk") else "python")
    if loader == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install -y wrk), use --loader python")
    folder = Path(tempfile.mkdtemp(prefix="hub-throughput-"))
    write_hub_config(folder)
    # As in bench/api_latency.py: the log at INFO would measure the terminal as much as the hub.
    env = {
        **os.environ,
        "HUB_LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    hub = [sys.executable, "-m", "hub.cli"]
    token = subprocess.run(
        [*hub, "token", "create", "--tenant", TENANT], cwd=folder, env=env, capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    prepare_bare_database(str(folder / "bare.db"), token)
    body = json.dumps(NOTIFICATION).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}", "X-Tenant-ID": TENANT}
    script = folder / "notification.lua"
    script.write_text(
        WRK_SCRIPT.format(
            body=json.dumps(body.decode()),
            authorization=json.dumps(headers["Authorization"]),
            tenant=json.dumps(TENANT),
        )
    )

    def raw_request(port: int) -> bytes:
        lines = [
            f"POST {PATH} HTTP/1.1",
            f"Host: {HOST}:{port}",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def measure(server: Server, seconds: float) -> Round:
        if loader == "wrk":
            return run_wrk(server.port, script, args.connections, seconds)
        return run_python(server.port, raw_request(server.port), args.connections, seconds)

    sizing = ["--workers", str(args.workers), "--threads", str(args.threads)]
    servers: list[Server] = []
    results: dict[str, list[Round]] = {"bare": [], "hub": []}
    try:
        port = free_port()
        servers.append(
            start(
                "bare",
                [sys.executable, __file__, "--serve-bare", str(port), str(folder / "bare.db"), *sizing],
                folder,
                env,
                port,
                headers,
                body,
            )
        )
        port = free_port()
        servers.append(start("hub", [*hub, "serve", "--port", str(port), *sizing], folder, env, port, headers, body))
        for server in servers:
            if args.warmup > 0:
                measure(server, args.warmup)
            server.pause()
        print(
            f"POST {PATH}: one inline email, one recipient, template custom, outbox provider, SQLite; {args.connections} connections, "
            f"gunicorn gthread {args.workers} worker(s) x {args.threads} threads for both; load generator: "
            f"{'wrk (Lua script, 1 thread)' if loader == 'wrk' else 'Python asyncio keep-alive client'}; "
            f"{args.rounds} interleaved rounds of {args.duration:g} s, the idle server paused"
        )
        for number in range(1, args.rounds + 1):
            for server in servers:
                server.resume()
                cpu_before = server.cpu_seconds()
                result = measure(server, args.duration)
                result.server_cpu_s = server.cpu_seconds() - cpu_before
                server.pause()
                results[server.name].append(result)
                sizes = f"  [{hub_table_sizes(folder / 'var' / 'hub.db')}]" if server.name == "hub" else ""
                errors = (
                    f"  non-2xx {result.non_2xx}, socket errors {result.socket_errors}"
                    if result.non_2xx or result.socket_errors
                    else ""
                )
                print(
                    f"round {number} {server.name:<4} {result.rate:8.1f} req/s  p50 {result.p50_ms:7.1f} ms  p99 {result.p99_ms:7.1f} ms  server CPU {result.cpu_ms_per_request:5.2f} ms/request{errors}{sizes}",
                    flush=True,
                )
    finally:
        for server in servers:
            server.stop()
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    # Rates over all rounds; p50 and p99 are the median of the rounds' (wrk reports them per run).
    summary: dict[str, dict[str, float]] = {}
    for name, rounds in results.items():
        total = sum(r.requests for r in rounds)
        summary[name] = {
            "rate": total / sum(r.seconds for r in rounds),
            "p50": statistics.median(r.p50_ms for r in rounds),
            "p99": statistics.median(r.p99_ms for r in rounds),
            "worst_p99": max(r.p99_ms for r in rounds),
            "errors": sum(r.non_2xx + r.socket_errors for r in rounds),
            "requests": total,
            "cpu": sum(r.server_cpu_s for r in rounds) * 1000 / total if total else float("nan"),
        }
        rates = " -> ".join(f"{r.rate:.0f}" for r in rounds)
        print(
            f"{name:<4} {summary[name]['rate']:8.1f} req/s  p50 {summary[name]['p50']:7.1f} ms  p99 {summary[name]['p99']:7.1f} ms "
            f"(worst round {summary[name]['worst_p99']:.1f})  server CPU {summary[name]['cpu']:.2f} ms/request  "
            f"{total:,} requests, {int(summary[name]['errors'])} errors (non-2xx or socket)  per round: {rates} req/s"
        )
    hub_rounds = results["hub"]
    drift = hub_rounds[-1].rate / hub_rounds[0].rate if hub_rounds and hub_rounds[0].rate else float("nan")
    print(
        f"ratio hub/bare: requests/s {summary['hub']['rate'] / summary['bare']['rate']:.2f} (target >= 0.5), "
        f"p99 {summary['hub']['p99'] / summary['bare']['p99']:.2f} (target <= 2), server CPU per request {summary['hub']['cpu'] / summary['bare']['cpu']:.1f}; "
        f"hub last/first round rate {drift:.2f} (steady ~ 1.0)"
    )


if __name__ == "__main__":
    main()
