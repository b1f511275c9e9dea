"""The example plugin installed for real: pip builds ``examples/hub-example`` into a private folder, and
hubs in subprocesses (with that folder on PYTHONPATH) find it through the ``hub`` entry-point group, list
it, and deliver a notification through it to a local HTTP server."""

from __future__ import annotations

import contextlib
import importlib.util
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from hub.testing.servers import free_port, wait_for_port

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "hub-example"
HUB = [sys.executable, "-m", "hub.cli"]
WEBHOOK_TOKEN = "example-secret-7d1c"


def _builds_wheels_offline() -> bool:
    """Whether this environment's setuptools can build a wheel without build isolation: from 70.1 it
    has bdist_wheel itself, before that it needs the ``wheel`` package."""
    if importlib.util.find_spec("wheel") is not None:
        return True
    try:
        version = tuple(int(part) for part in metadata.version("setuptools").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return version >= (70, 1)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install --no-deps --target <site> examples/hub-example``, from a copy so the build leaves
    nothing in the repo."""
    root = tmp_path_factory.mktemp("example-install")
    source = root / "hub-example"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    target = root / "site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]
    if _builds_wheels_offline():
        command.append("--no-build-isolation")  # fast: no download of setuptools into a fresh venv
    command += ["--target", str(target), str(source)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (target / "hub_example" / "__init__.py").is_file()
    return target


def hub_env(site: Path, **extra: str) -> dict[str, str]:
    """The environment of a hub subprocess: the install folder on PYTHONPATH, nothing inherited that
    would change where records go, and only the example allowed among the installed plugins (the other
    plugins installed in this environment are not under test here)."""
    ignored = ("DATABASE_URL", "REDIS_URL", "HUB_CONFIG", "HUB_MODE", "HUB_PLUGINS_BLOCK", "HUB_STRICT_PLUGINS")
    env = {key: value for key, value in os.environ.items() if key not in ignored}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env["HUB_LOG_LEVEL"] = "WARNING"
    env["HUB_PLUGINS_ALLOW"] = "example"
    env.update(extra)
    return env


def run_hub(folder: Path, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*HUB, *args], cwd=folder, capture_output=True, text=True, timeout=120, env=env)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def hub_folder(tmp_path: Path, providers: dict[str, Any] | None = None, services: dict[str, Any] | None = None) -> Path:
    """A folder with the repo's hub.yaml plus ``providers`` and ``services``."""
    folder = tmp_path / "hub"
    folder.mkdir()
    config = yaml.safe_load((REPO / "hub.yaml").read_text())
    config["providers"].update(providers or {})
    config["services"].update(services or {})
    (folder / "hub.yaml").write_text(yaml.safe_dump(config))
    return folder


# --- a local HTTP endpoint ---------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Endpoint:
    url: str = ""
    received: list[Received] = field(default_factory=list)

    def posts(self) -> list[Received]:
        return [request for request in self.received if request.method == "POST"]


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    state = Endpoint()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: bytes) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            state.received.append(Received(self.command, self.path, dict(self.headers.items()), self.rfile.read(length)))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_POST(self) -> None:
            self._answer(b'{"id": "rcv-1"}')

        def do_HEAD(self) -> None:
            self._answer(b"")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


# --- a real hub process ------------------------------------------------------------------------


@contextmanager
def serving(folder: Path, env: dict[str, str]) -> Iterator[str]:
    """``hub serve`` in its own process group; yields the API's base URL. The group is ended at the end
    (SIGTERM, then SIGKILL) and the port waited for until it is closed."""
    port = free_port()
    log_path = folder / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [*HUB, "serve", "--port", str(port), "--job-workers", "0"],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        try:
            try:
                wait_for_port("127.0.0.1", port, timeout=60, process=process)
            except Exception as error:
                pytest.fail(f"hub serve did not start ({error}):\n{log_path.read_text()[-3000:]}")
            yield f"http://127.0.0.1:{port}/api/integrations"
        finally:
            _stop(process)
    _wait_until_closed(port)


def _stop(process: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):  # a worker that outlived the master
        os.killpg(process.pid, signal.SIGKILL)


def _wait_until_closed(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return
        time.sleep(0.05)


# --- the tests ---------------------------------------------------------------------------------


def test_hub_plugins_lists_the_installed_example(site: Path, tmp_path: Path) -> None:
    folder = hub_folder(tmp_path)
    listed = {plugin["name"]: plugin for plugin in json.loads(run_hub(folder, hub_env(site), "plugins", "--json").stdout)}
    example = listed["example"]
    assert (example["status"], example["source"], example["error"]) == ("loaded", "entrypoint", None)
    assert (example["distribution"], example["version"]) == ("hub-example", "0.1.0")
    assert example["providers"] == ["webhook-notifier"] and example["templates"] == ["example_digest"]
    assert {"register_providers", "register_templates"} <= set(example["hooks"])
    assert listed["outbox"]["status"] == "loaded"  # the built-ins still load beside it

    blocked = run_hub(folder, hub_env(site, HUB_PLUGINS_BLOCK="example"), "plugins", "--json")
    assert {p["name"]: p["status"] for p in json.loads(blocked.stdout)}["example"] == "blocked"
    none_allowed = run_hub(folder, hub_env(site, HUB_PLUGINS_ALLOW=""), "plugins", "--json")
    assert {p["name"]: p["status"] for p in json.loads(none_allowed.stdout)}["example"] == "not-allowed"


def test_a_running_hub_delivers_through_the_installed_example(site: Path, tmp_path: Path, endpoint: Endpoint) -> None:
    folder = hub_folder(
        tmp_path,
        providers={"team-hook": {"type": "webhook-notifier", "url": f"{endpoint.url}/notify", "timeout": 5}},
        services={"email": {"providers": ["team-hook"]}},
    )
    env = hub_env(site, EXAMPLE_WEBHOOK_TOKEN=WEBHOOK_TOKEN)  # the token comes from the environment only
    token = run_hub(folder, env, "token", "create", "--tenant", "demo").stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "demo"}
    with serving(folder, env) as base:
        plugins = requests.get(f"{base}/plugins", headers=headers, timeout=10).json()["data"]
        assert "webhook-notifier" in plugins["providerTypes"]
        assert {p["name"]: p["status"] for p in plugins["plugins"]}["example"] == "loaded"

        body = {
            "type": "email",
            "recipients": [{"email": "ops@example.com", "name": "Ops"}],
            "template": "example_digest",  # contributed by the plugin's register_templates
            "data": {"title": "Nightly stock", "items": ["SKU-1 below threshold", "SKU-2 restocked"]},
        }
        response = requests.post(f"{base}/notifications", json=body, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        sent = response.json()["data"]
        assert (sent["status"], sent["transporter"], sent["sent"]) == ("succeeded", "team-hook", 1)

        [post] = endpoint.posts()
        message = json.loads(post.body)
        assert sent["recipients"][0]["providerMessageId"] == f"{message['id']}:0"
        assert post.path == "/notify"
        assert post.headers["Authorization"] == f"Bearer {WEBHOOK_TOKEN}"
        assert post.headers["Idempotency-Key"] == message["id"] and message["id"].startswith(sent["messageId"])
        assert (message["tenant"], message["channel"], message["template"]) == ("demo", "email", "example_digest")
        assert message["recipients"] == [{"address": "ops@example.com", "name": "Ops", "index": 0}]  # index: its place in the notification
        assert message["subject"] == "Nightly stock: 2 updates"
        assert message["text"] == "Nightly stock\n\n- SKU-1 below threshold\n- SKU-2 restocked"
        # The endpoint answers the same id every time: the next send must still be recorded.
        again = requests.post(f"{base}/notifications", json=body, headers=headers, timeout=30)
        assert again.status_code == 200 and again.json()["data"]["status"] == "succeeded", again.text
        assert len(endpoint.posts()) == 2

        health = requests.get(f"{base}/health/email", headers=headers, timeout=30).json()["data"]
        assert health["status"] == "healthy" and health["details"]["team-hook"]["status"] == "success", health
        service = requests.get(f"{base}/services/email", headers=headers, timeout=10).json()["data"]
        assert service["dependencies"] == ["EXAMPLE_WEBHOOK_TOKEN"]
        assert service["providers"][0]["settings"]["token"] == "[REDACTED]"
        assert WEBHOOK_TOKEN not in json.dumps(service)
    assert WEBHOOK_TOKEN not in (folder / "serve.log").read_text()
