"""The load balancer's probes and the graceful shutdown.

``/livez`` answers as long as the process does; ``/readyz`` answers 503 with the reason when the database or the
job queue does not answer in time, when the services are shut down, and from the moment a graceful shutdown
begins. ``hub serve`` on SIGTERM lets the request in flight finish (a notification through an SMTP server that
takes its time), refuses new work meanwhile and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from hub.api import begin_shutdown, create_app
from hub.auth import TokenStore
from hub.manager import IntegrationManager
from hub.records import Database, normalise_database_url
from hub.testing.servers import SmtpServer, free_port
from tests.conftest import base_config

REPO = Path(__file__).resolve().parent.parent


def _client(tmp_path: Path, **overrides: Any) -> tuple[Any, IntegrationManager]:
    manager = IntegrationManager(base_config(tmp_path / "var", **overrides), environ={}, entry_points=False)
    return create_app(manager=manager), manager


@pytest.fixture
def probed(tmp_path: Path) -> Iterator[tuple[Any, IntegrationManager]]:
    (tmp_path / "db").mkdir()  # its own folder, removed to take the database away
    app, manager = _client(tmp_path, database_url=f"sqlite:///{tmp_path / 'db' / 'hub.db'}")
    yield app, manager
    manager.close()


def test_ready_and_alive_without_a_token(probed: tuple[Any, IntegrationManager]) -> None:
    app, _manager = probed
    client = app.test_client()
    alive = client.get("/livez")
    assert alive.status_code == 200 and alive.get_json() == {"success": True, "data": {"status": "alive"}}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    assert ready.get_json()["data"] == {"status": "ready", "checks": {"database": "ok", "queue": "ok"}}


def test_database_gone_is_503_naming_it_while_liveness_still_answers(probed: tuple[Any, IntegrationManager], tmp_path: Path) -> None:
    app, manager = probed
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    manager.db.engine.dispose()
    shutil.rmtree(tmp_path / "db")  # the next connection cannot open the file
    ready = client.get("/readyz")
    assert ready.status_code == 503
    body = ready.get_json()
    assert body["message"] == "Not ready" and body["error"] == "database: unreachable (OperationalError)", body
    assert body["checks"]["queue"] == "ok"
    assert str(tmp_path) not in ready.get_data(as_text=True)  # no paths (nor URLs) in an unauthenticated answer
    started = time.perf_counter()
    assert client.get("/livez").status_code == 200  # no database call
    assert time.perf_counter() - started < 0.1


def test_queue_unreachable_is_503(tmp_path: Path) -> None:
    app, manager = _client(tmp_path, queue={"backend": "redis", "url": f"redis://127.0.0.1:{free_port()}/0", "workers": 0})
    try:
        ready = app.test_client().get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json()["error"] == "queue: unreachable (ConnectionError)"
    finally:
        manager.close()


def test_a_hanging_dependency_answers_503_within_the_readiness_timeout(tmp_path: Path) -> None:
    # A Redis that accepts connections and never answers: the queue check hangs, the probe does not.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    app, manager = _client(tmp_path, queue={"backend": "redis", "url": url, "workers": 0}, server={"readiness_timeout": 0.3})
    try:
        client = app.test_client()
        for _ in range(3):  # later probes wait on the hanging check rather than start new ones
            started = time.perf_counter()
            ready = client.get("/readyz")
            elapsed = time.perf_counter() - started
            assert ready.status_code == 503 and ready.get_json()["error"] == "queue: no answer within 0.3 s", ready.get_json()
            assert ready.get_json()["checks"] == {"database": "ok", "queue": "no answer within 0.3 s"}
            assert 0.25 < elapsed < 1.0, elapsed
        hanging = [thread for thread in threading.enumerate() if thread.name == "hub-readiness-queue"]
        assert len(hanging) == 1  # one run of the check, not one per probe
    finally:
        silent.close()  # the hanging check ends with the connection
        manager.close()


def test_shutdown_makes_readiness_503_at_once(probed: tuple[Any, IntegrationManager]) -> None:
    app, _manager = probed
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    begin_shutdown(app)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["error"] == "shutdown: draining in-flight work"
    assert client.get("/livez").status_code == 200  # alive while it drains: not a reason to kill it


def test_services_shut_down_by_the_api_are_not_ready(probed: tuple[Any, IntegrationManager]) -> None:
    app, manager = probed
    client = app.test_client()
    admin = {"Authorization": f"Bearer {manager.tokens.create('ops', 'admin', admin=True)[1]}", "X-Tenant-ID": "ops"}
    assert client.post("/api/integrations/shutdown", headers=admin).status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["error"] == "services: shutdown (POST /api/integrations/initialize)"
    assert client.post("/api/integrations/initialize", headers=admin).status_code == 200
    assert client.get("/readyz").status_code == 200


def test_probes_are_in_the_openapi_document_without_security(probed: tuple[Any, IntegrationManager]) -> None:
    app, _manager = probed
    paths = app.test_client().get("/api/integrations/openapi.json").get_json()["paths"]
    assert paths["/livez"]["get"]["security"] == [] and set(paths["/livez"]["get"]["responses"]) == {"200"}
    assert paths["/readyz"]["get"]["security"] == [] and set(paths["/readyz"]["get"]["responses"]) == {"200", "503"}


# --- a real server, SIGTERM with a request in flight -----------------------------------------------------


class SlowSmtpServer(SmtpServer):
    """Takes ``delay`` seconds to accept each message, as a distant relay does; ``receiving`` is set when the
    first message arrives."""

    def __init__(self, delay: float, **options: Any) -> None:
        super().__init__(**options)
        self.delay = delay
        self.receiving = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        self.receiving.set()
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


def _environment() -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("HUB_") and key not in ("DATABASE_URL", "REDIS_URL")}
    return {**environment, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])), "HUB_LOG_LEVEL": "WARNING"}


def _get(url: str, session: Any = requests) -> int | str:
    try:
        return session.get(url, timeout=2).status_code
    except requests.ConnectionError as error:
        return type(error).__name__


@pytest.mark.timeout(30)
def test_sigterm_drains_the_request_in_flight_and_exits_0(tmp_path: Path) -> None:
    smtp = SlowSmtpServer(1.5, starttls=False, require_auth=False).start()
    port = free_port()
    data_dir = tmp_path / "var"
    raw = {
        "data_dir": str(data_dir),
        "providers": {"mail": {"type": "smtp", "host": "127.0.0.1", "port": smtp.port, "security": "none", "from_address": "hub@example.com", "timeout": 10}},
        "services": {"email": {"providers": ["mail"], "enabled": True}},
        "queue": {"backend": "sqlite", "workers": 0},
        "server": {"graceful_timeout": 8},
        "plugins": {"allow": ["smtp"]},
    }
    (tmp_path / "hub.yaml").write_text(json.dumps(raw))  # JSON is YAML
    data_dir.mkdir()
    token = TokenStore(_database(data_dir)).create("demo", "probe test")[1]
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "--config", str(tmp_path / "hub.yaml"), "serve", "--port", str(port), "--job-workers", "0"],
            stdout=log, stderr=subprocess.STDOUT, env=_environment(), start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        balancer = requests.Session()  # a load balancer keeps its connection to the process alive
        while _get(f"{base}/readyz", balancer) != 200:
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.05)
        answer: dict[str, Any] = {}

        def send() -> None:
            response = requests.post(
                f"{base}/api/integrations/notifications",
                json={"type": "email", "recipients": [{"email": "a@example.com"}], "data": {"subject": "Hi", "message": "Slow relay"}},
                headers={"Authorization": f"Bearer {token}", "X-Tenant-ID": "demo"},
                timeout=15,
            )
            answer.update(status=response.status_code, body=response.json(), at=time.monotonic())

        sender = threading.Thread(target=send)
        sender.start()
        assert smtp.receiving.wait(10), log_path.read_text()[-3000:]
        process.send_signal(signal.SIGTERM)  # what systemd, Docker or Kubernetes send
        signalled = time.monotonic()
        time.sleep(0.2)  # the master passes SIGTERM on to its worker: a few milliseconds
        # While the request drains, nobody new gets in: on the kept-alive connection readiness is 503, and a
        # new connection is refused outright.
        meanwhile: list[int | str] = []
        refused: list[int | str] = []
        while sender.is_alive() and time.monotonic() - signalled < 5:
            meanwhile.append(_get(f"{base}/readyz", balancer))
            refused.append(_get(f"{base}/readyz"))
            time.sleep(0.1)
        sender.join(timeout=15)
        assert answer.get("status") == 200, (answer, log_path.read_text()[-3000:])
        assert answer["body"]["data"]["status"] == "succeeded" and smtp.count == 1
        assert meanwhile and meanwhile[0] == 503 and all(seen in (503, "ConnectionError") for seen in meanwhile), meanwhile
        assert refused and set(refused) == {"ConnectionError"}, refused
        assert process.wait(timeout=10) == 0, log_path.read_text()[-3000:]
        exited = time.monotonic() - signalled
        assert exited < raw["server"]["graceful_timeout"], exited  # it left once the work was done, not at the timeout
        assert _get(f"{base}/livez") == "ConnectionError"
        assert "Traceback" not in log_path.read_text()
        print(f"drain: kept-alive {meanwhile}, new {refused}, exited {exited:.2f} s after SIGTERM")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        smtp.stop()


def _database(data_dir: Path) -> Database:
    database = Database(normalise_database_url("", str(data_dir)))
    database.create_all()
    return database


# --- hub worker: SIGTERM lets the running job finish, or leaves it leased at the timeout ----------------


def _worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "--config", str(config), "worker", "--threads", "1"],
            stdout=output, stderr=subprocess.STDOUT, env=_environment(), start_new_session=True,
        )


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.mark.timeout(40)
@pytest.mark.parametrize("delay, graceful_timeout", [(1.0, 8), (4.0, 1)], ids=["finishes", "cut-short-stays-leased"])
def test_worker_sigterm_drains_the_running_job_or_leaves_it_leased(tmp_path: Path, delay: float, graceful_timeout: int) -> None:
    from hub.config import validate_config

    smtp = SlowSmtpServer(delay, starttls=False, require_auth=False).start()
    raw = {
        "data_dir": str(tmp_path / "var"),
        "providers": {"mail": {"type": "smtp", "host": "127.0.0.1", "port": smtp.port, "security": "none", "from_address": "hub@example.com", "timeout": 10}},
        "services": {"email": {"providers": ["mail"], "enabled": True}},
        # The lease outlasts a slow exit on a loaded machine (up to ~3 s), so "still leased" is checked in time.
        "queue": {"backend": "sqlite", "workers": 0, "lease_seconds": 5},
        "server": {"graceful_timeout": graceful_timeout},
        "plugins": {"allow": ["smtp"]},
    }
    config, log = tmp_path / "hub.yaml", tmp_path / "worker.log"
    config.write_text(json.dumps(raw))
    hub = IntegrationManager(validate_config(json.loads(config.read_text()), {}), environ={})
    process = _worker(config, log)
    try:
        accepted = hub.send_notification("email", [{"email": "a@example.com"}], data={"subject": "Hi", "message": "x"}, tenant_id="demo", asynchronous=True)
        record_id = accepted["messageId"]
        assert smtp.receiving.wait(15), log.read_text()[-3000:]
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert process.wait(timeout=graceful_timeout + 5) == 0, log.read_text()[-3000:]
        exited = time.monotonic() - signalled
        record = hub.get_record(record_id, "demo")
        if delay < graceful_timeout:
            # It waited for the job: delivered and settled before the process left.
            assert record.status == "succeeded" and smtp.count == 1, (record.status, log.read_text()[-3000:])
            assert exited < graceful_timeout
        else:
            # Cut short at the timeout: the record stays running under its lease, and once the lease lapses the
            # existing sweep takes it over.
            assert graceful_timeout <= exited < graceful_timeout + 2, exited
            assert record.status == "running" and record.lease_until is not None, record.status
            assert hub.recover_unfinished(older_than=0) == 0  # still leased: nobody takes it yet
            _wait_for(lambda: hub.recover_unfinished(older_than=0) == 1, 10, "the lapsed lease is recovered")
        print(f"worker {delay=} {graceful_timeout=}: exited {exited:.2f} s after SIGTERM, record {record.status}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        hub.close()
        smtp.stop()
