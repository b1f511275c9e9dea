"""The real server over a socket: ``hub token create`` + ``hub serve``, and nothing accepted is lost
when the process is killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from hub.auth import TokenStore
from hub.testing.servers import free_port, wait_for_port

REPO = Path(__file__).resolve().parent.parent
HUB = [sys.executable, "-m", "hub.cli"]


def run_hub(folder: Path, *args: str) -> str:
    done = subprocess.run([*HUB, *args], cwd=folder, capture_output=True, text=True, timeout=60, env=_env())
    assert done.returncode == 0, done.stderr
    return done.stdout


def _env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL", "HUB_CONFIG")}
    env["HUB_LOG_LEVEL"] = "WARNING"
    return env


class HubProcess:
    def __init__(self, folder: Path, port: int, *extra: str) -> None:
        self.log = open(folder / f"serve-{time.monotonic_ns()}.log", "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [*HUB, "serve", "--port", str(port), *extra], cwd=folder, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=_env()
        )
        self.port = port
        wait_for_port("127.0.0.1", port, timeout=30)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.log.close()
        # The worker process dies a moment after the master; until then it still holds the socket.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                return
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


@pytest.fixture
def hub_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    config = yaml.safe_load((REPO / "hub.yaml").read_text())
    config["queue"]["bulk_threshold"] = 5
    config["queue"]["batch_size"] = 7
    config["rate_limits"]["limits"]["email"] = "10000/minute"
    (folder / "hub.yaml").write_text(yaml.safe_dump(config))
    return folder


def test_cli_token_and_server_over_a_socket(hub_folder: Path) -> None:
    output = run_hub(hub_folder, "token", "create", "--tenant", "demo")
    token = output.strip().splitlines()[-1]
    assert token.startswith("hub_")
    port = free_port()
    server = HubProcess(hub_folder, port)
    try:
        base = f"http://127.0.0.1:{port}/api/integrations"
        headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "demo"}
        assert requests.get(f"{base}/status", timeout=10).status_code == 401
        status = requests.get(f"{base}/status", headers=headers, timeout=10).json()
        assert status["success"] and status["data"]["healthy"] == status["data"]["total"]
        sent = requests.post(
            f"{base}/test/notification",
            json={"type": "email", "recipients": [{"email": "a@example.com"}], "data": {"subject": "s", "message": "m"}},
            headers=headers,
            timeout=10,
        ).json()
        assert sent["data"]["transporter"] == "outbox"
        listed = json.loads(run_hub(hub_folder, "token", "list", "--json"))
        assert [item["tenant"] for item in listed] == ["demo"] and token not in json.dumps(listed)
        run_hub(hub_folder, "token", "revoke", listed[0]["id"])
        # The server caches a verified token for TokenStore.CACHE_SECONDS: the revocation (made by another
        # process) takes effect within that.
        deadline = time.monotonic() + TokenStore.CACHE_SECONDS + 3
        while requests.get(f"{base}/status", headers=headers, timeout=10).status_code != 401:
            assert time.monotonic() < deadline, "a revoked token still works after the cache lapsed"
            time.sleep(0.25)
        # Prometheus text covers every tenant: refused without a token and with a tenant's (here revoked) one,
        # served to an admin token, with the notification sent above counted.
        prometheus = f"http://127.0.0.1:{port}/metrics"
        assert requests.get(prometheus, timeout=10).status_code == 401
        assert requests.get(prometheus, headers={"Authorization": headers["Authorization"]}, timeout=10).status_code == 401
        admin = run_hub(hub_folder, "token", "create", "--tenant", "ops", "--admin").strip().splitlines()[-1]
        scraped = requests.get(prometheus, headers={"Authorization": f"Bearer {admin}"}, timeout=10)
        assert scraped.status_code == 200 and scraped.headers["Content-Type"].startswith("text/plain")
        assert 'hub_provider_calls_total{operation="notify",outcome="success",provider="outbox",service="email"} 1.0' in scraped.text
    finally:
        server.stop()


def test_sigkill_with_queued_work_loses_nothing_and_runs_each_item_once(hub_folder: Path) -> None:
    token = run_hub(hub_folder, "token", "create", "--tenant", "demo").strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "demo"}
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/integrations"
    # No job workers: everything accepted stays queued when the process dies.
    server = HubProcess(hub_folder, port, "--job-workers", "0")
    accepted: dict[str, str] = {}
    bodies: dict[str, dict] = {}
    try:
        for batch in range(6):
            key = f"bulk-{batch}"
            bodies[key] = {
                "type": "email",
                "recipients": [{"email": f"user{batch}-{i}@example.com"} for i in range(12)],
                "template": "low_stock_alert",
                "data": {"sku": f"SKU-{batch}", "location": "A", "current_stock": 1, "threshold": 5},
            }
            response = requests.post(f"{base}/notifications", json=bodies[key], headers={**headers, "Idempotency-Key": key}, timeout=10)
            assert response.status_code == 202, response.text
            accepted[key] = response.json()["data"]["messageId"]
        sync = requests.post(f"{base}/sync", json={"dataType": "inventory"}, headers={**headers, "Idempotency-Key": "sync-1"}, timeout=10)
        assert sync.status_code == 202
        accepted["sync-1"] = sync.json()["data"]["jobId"]
    finally:
        server.kill()

    server = HubProcess(hub_folder, port, "--job-workers", "2")
    try:
        deadline = time.monotonic() + 60
        statuses: dict[str, str] = {}
        while time.monotonic() < deadline:
            statuses = {key: requests.get(f"{base}/deliveries/{record}", headers=headers, timeout=10).json()["data"]["status"] for key, record in accepted.items()}
            if all(status == "succeeded" for status in statuses.values()):
                break
            time.sleep(0.3)
        assert all(status == "succeeded" for status in statuses.values()), statuses
        # Replaying the same keys returns the same records and sends nothing more.
        for key, body in bodies.items():
            replay = requests.post(f"{base}/notifications", json=body, headers={**headers, "Idempotency-Key": key}, timeout=10)
            assert replay.json()["data"]["messageId"] == accepted[key]
        time.sleep(1.5)  # give any (wrong) duplicate job time to run before counting
        outbox = hub_folder / "var" / "outbox" / "demo" / "email"
        delivered = [r["address"] for f in outbox.glob("*.json") for r in json.loads(f.read_text())["recipients"]]
        assert len(delivered) == 72 and len(set(delivered)) == 72
        for record in accepted.values():
            assert requests.get(f"{base}/deliveries/{record}", headers=headers, timeout=10).json()["data"]["attempts"] == 1
    finally:
        server.stop()
