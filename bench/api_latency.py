"""Request latency of the real server on its embedded defaults.

Starts ``hub serve`` (gunicorn, one worker) in a temporary folder with the repo's hub.yaml, then times
``GET /status``, ``POST /test/notification`` and ``POST /test/payment`` over one keep-alive HTTP
connection, side by side with the same work done in-process through ``IntegrationManager`` (no HTTP),
so the ratio shows what the HTTP layer, auth and idempotency cost.

    python bench/api_latency.py [--requests 300]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hub.testing.servers import free_port, wait_for_port  # noqa: E402

NOTIFICATION = {"type": "email", "recipients": [{"email": "bench@example.com"}], "template": "custom", "data": {"subject": "Bench", "message": "Hello"}}


def timed(function: Callable[[], object], count: int) -> list[float]:
    for _ in range(min(20, count)):
        function()  # warm up
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def describe(samples: list[float]) -> str:
    cuts = statistics.quantiles(samples, n=100)
    return f"p50 {cuts[49]:6.2f} ms  p95 {cuts[94]:6.2f} ms  mean {statistics.fmean(samples):6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    config = yaml.safe_load((REPO / "hub.yaml").read_text())
    config["rate_limits"]["limits"] = {"email": "1000000/minute", "payment": "1000000/minute"}
    (folder / "hub.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "HUB_LOG_LEVEL": "WARNING"}
    hub = [sys.executable, "-m", "hub.cli"]
    token = subprocess.run([*hub, "token", "create", "--tenant", "bench"], cwd=folder, capture_output=True, text=True, check=True, env=env).stdout.split()[-1]
    port = free_port()
    server = subprocess.Popen([*hub, "serve", "--port", str(port)], cwd=folder, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        session = requests.Session()
        session.headers.update({"Authorization": f"Bearer {token}", "X-Tenant-ID": "bench"})
        base = f"http://127.0.0.1:{port}/api/integrations"
        session.get(f"{base}/status").raise_for_status()
        http = {
            "GET /status": timed(lambda: session.get(f"{base}/status").raise_for_status(), args.requests),
            "POST /test/notification": timed(lambda: session.post(f"{base}/test/notification", json=NOTIFICATION).raise_for_status(), args.requests),
            "POST /test/payment": timed(lambda: session.post(f"{base}/test/payment", json={"amount": 10, "currency": "USD"}).raise_for_status(), args.requests),
        }
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    from hub.config import load_config
    from hub.manager import IntegrationManager

    manager = IntegrationManager(load_config(folder / "hub.yaml"))
    direct = {
        "GET /status": timed(lambda: manager.status("bench"), args.requests),
        "POST /test/notification": timed(lambda: manager.send_notification(tenant_id="bench", **NOTIFICATION), args.requests),
        "POST /test/payment": timed(lambda: manager.process_payment(10, "USD", payment_method="4242424242424242", tenant_id="bench"), args.requests),
    }
    manager.close()
    shutil.rmtree(folder, ignore_errors=True)
    print(f"{args.requests} sequential requests each, one keep-alive connection, embedded defaults (SQLite, local disk)")
    for name, samples in http.items():
        ratio = statistics.median(samples) / statistics.median(direct[name])
        print(f"{name:<26} HTTP {describe(samples)} | in-process p50 {statistics.median(direct[name]):6.2f} ms | ratio {ratio:4.2f}")


if __name__ == "__main__":
    main()
