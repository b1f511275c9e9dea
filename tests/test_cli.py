"""The ``hub`` console script as a user (or a plugin author) runs it: real processes, a temporary hub.yaml
found through ``HUB_CONFIG``, plugins installed into a temporary folder on ``PYTHONPATH``.

Every failure must be one line on stderr naming the cause, with a non-zero exit and no traceback unless
``--debug`` is given; ``hub serve`` says "listening" only once it serves requests.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from hub.testing.servers import free_port
from tests.test_plugins import GOOD_PLUGIN, install_fake_distribution

REPO = Path(__file__).resolve().parent.parent
#: The console script of this interpreter's environment (what ``pip install`` put beside python).
HUB_SCRIPT = Path(sys.executable).with_name("hub")
BROKEN_MESSAGE = "plugin 'broken' failed to load: RuntimeError: boom"


def _hub_command() -> list[str]:
    if HUB_SCRIPT.exists():
        return [str(HUB_SCRIPT)]
    found = shutil.which("hub")
    if found is None:
        pytest.fail("the hub console script is not installed (pip install -e .)")
    return [found]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder holding hub.yaml (embedded defaults, data in ./var) and ``site/`` for installed plugins."""
    (tmp_path / "site").mkdir()
    (tmp_path / "hub.yaml").write_text(yaml.safe_dump({"data_dir": "var"}))
    return tmp_path


def write_config(folder: Path, **settings: object) -> None:
    (folder / "hub.yaml").write_text(yaml.safe_dump({"data_dir": "var", **settings}))


def hub_env(folder: Path, **extra: str) -> dict[str, str]:
    """Nothing inherited that changes where config and records come from; this checkout first on the path,
    then the temporary site; only the plugins under test allowed among those installed here."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_") and key not in ("DATABASE_URL", "REDIS_URL")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(folder / "site")])
    env["HUB_CONFIG"] = str(folder / "hub.yaml")
    env["HUB_PLUGINS_ALLOW"] = "broken,pager"
    env["HUB_LOG_LEVEL"] = "WARNING"
    env.pop("PAGER_API_KEY", None)
    return env | extra


def run_hub(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_hub_command(), *args], cwd=folder, env=hub_env(folder, **env), capture_output=True, text=True, timeout=60)


def assert_one_line_failure(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    """A non-zero exit, stderr exactly one ``hub: ...`` line holding every ``expected`` text, no traceback."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0, done
    assert len(lines) == 1 and lines[0].startswith("hub: "), done.stderr
    assert "Traceback" not in done.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def install_broken_plugin(folder: Path) -> None:
    install_fake_distribution(folder / "site", "hub-broken", "0.1", {"hub_broken": "raise RuntimeError('boom')\n"}, {"broken": "hub_broken"})


#: A provider whose settings pass in the process that imported the plugin (``hub serve``'s check before
#: forking) and fail in a forked worker: what a credential revoked between the check and the worker's
#: own start-up looks like.
FLAKY_PLUGIN = """
import os

from marshmallow import Schema, ValidationError, fields, validates

from hub import hookimpl
from hub.capabilities import NotifyResult, Provider

IMPORTED_IN = os.getpid()


class FlakySettings(Schema):
    api_key = fields.String(load_default="k")

    @validates("api_key")
    def _still_valid(self, value, **_):
        if os.getpid() != IMPORTED_IN:
            raise ValidationError("revoked since start-up")


class Flaky(Provider):
    type_name = "flaky"
    capability = "notify"
    channels = ("sms",)
    settings_schema = FlakySettings

    @hookimpl
    def notify(self, message):
        return NotifyResult([])


@hookimpl
def register_providers(register):
    register(Flaky)
"""


def install_pager_plugin(folder: Path) -> None:
    install_fake_distribution(folder / "site", "hub-pager", "1.2.3", {"hub_pager": GOOD_PLUGIN}, {"pager": "hub_pager"})


# --- hub plugins ---------------------------------------------------------------------------------


def test_plugins_exits_1_when_a_plugin_failed_and_still_lists_everything(folder: Path) -> None:
    install_broken_plugin(folder)
    install_pager_plugin(folder)
    listed = run_hub(folder, "plugins", "--json")
    assert listed.returncode == 1 and "Traceback" not in listed.stderr
    plugins = {item["name"]: item for item in json.loads(listed.stdout)}
    assert plugins["broken"]["status"] == "failed" and plugins["broken"]["error"] == "RuntimeError: boom"
    assert plugins["pager"]["providerTypes"] == [{"type": "pager", "capability": "notify", "channels": ["sms"], "hooks": ["notify"]}]
    assert plugins["outbox"]["providerTypes"][0]["hooks"] == ["notify", "health"]
    plain = run_hub(folder, "plugins")
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert "error: RuntimeError: boom" in plain.stdout and "pager: notify [sms]; hooks: notify" in plain.stdout
    # Without the broken plugin the same command succeeds.
    assert run_hub(folder, "plugins", "--json", HUB_PLUGINS_ALLOW="pager").returncode == 0


def test_strict_mode_failures_are_one_line_and_debug_shows_the_traceback(folder: Path) -> None:
    install_broken_plugin(folder)
    assert_one_line_failure(run_hub(folder, "plugins", HUB_STRICT_PLUGINS="1"), BROKEN_MESSAGE)
    assert_one_line_failure(run_hub(folder, "plugins", "--json", HUB_STRICT_PLUGINS="1"), BROKEN_MESSAGE)
    assert_one_line_failure(run_hub(folder, "check", HUB_STRICT_PLUGINS="1"), BROKEN_MESSAGE)
    debugged = run_hub(folder, "--debug", "check", HUB_STRICT_PLUGINS="1")
    assert debugged.returncode != 0 and "Traceback" in debugged.stderr and "boom" in debugged.stderr


# --- hub check and the configuration -------------------------------------------------------------


def test_check_names_a_missing_provider_setting_and_its_environment_variable(folder: Path) -> None:
    install_pager_plugin(folder)
    write_config(folder, providers={"pager": {"type": "pager"}}, services={"sms": {"providers": ["pager"]}})
    line = assert_one_line_failure(run_hub(folder, "check"), "providers.pager.api_key", "PAGER_API_KEY")
    assert line.startswith("hub: providers.pager.api_key: Missing data")
    checked = run_hub(folder, "check", PAGER_API_KEY="k-1")
    assert checked.returncode == 0 and "hub.yaml OK" in checked.stdout and checked.stderr == ""


def test_check_reports_each_problem_once(folder: Path) -> None:
    write_config(folder, providers={"ghost": {"type": "ghost"}})
    checked = run_hub(folder, "check")
    assert checked.returncode == 1 and "1 problem(s)" in checked.stdout
    assert checked.stderr.splitlines() == ["hub: provider ghost: unknown provider type 'ghost' (is its plugin installed?)"]


@pytest.mark.parametrize("command", [["check"], ["plugins", "--json"], ["token", "list"], ["serve"], ["worker"]])
def test_a_bad_hub_yaml_fails_every_command_with_the_key(folder: Path, command: list[str]) -> None:
    (folder / "hub.yaml").write_text("data_dir: var\nserver: {port: eighty}\n")
    assert_one_line_failure(run_hub(folder, *command), "server.port", "Not a valid integer")


def test_a_missing_config_file_and_an_unreachable_database(folder: Path) -> None:
    assert_one_line_failure(run_hub(folder, "--config", str(folder / "nope.yaml"), "check"), "nope.yaml: file not found")
    write_config(folder, database_url=f"sqlite:///{folder}/no-such-folder/hub.db")
    for command in (["token", "list"], ["check"]):
        assert_one_line_failure(run_hub(folder, *command), "database sqlite:///", "no-such-folder", "unable to open database file")


def test_an_unknown_token_id_is_one_line(folder: Path) -> None:
    assert_one_line_failure(run_hub(folder, "token", "revoke", "tok_nope"), "no active token tok_nope")
    assert_one_line_failure(run_hub(folder, "token", "rotate", "tok_nope"), "no active token tok_nope")


# --- hub serve -----------------------------------------------------------------------------------


class Served:
    """``hub serve`` in its own session, its stderr read line by line as it comes."""

    def __init__(self, folder: Path, *args: str, **env: str) -> None:
        self.process = subprocess.Popen(
            [*_hub_command(), "serve", *args],
            cwd=folder,
            env=hub_env(folder, **env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout: float) -> str | None:
        """The next stderr line, or None once the process has closed stderr."""
        line = self.lines.get(timeout=timeout)
        if line is not None:
            self.seen.append(line)
        return line

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_serve_says_listening_only_when_it_serves(folder: Path) -> None:
    port = free_port()
    served = Served(folder, "--port", str(port), "--workers", "2", "--job-workers", "0")
    try:
        deadline = time.monotonic() + 60
        while True:
            line = served.next_line(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"hub serve exited ({served.process.wait()}) without listening: {served.seen}"
            if "listening" in line:
                break
        # Checked the moment the line appears: the port accepts and the app answers.
        assert _accepts(port)
        assert line == f"hub listening on http://127.0.0.1:{port}/api/integrations (data in {(folder / 'var').resolve()})"
        assert requests.get(f"http://127.0.0.1:{port}/api/integrations/status", timeout=10).status_code == 401
        # Two workers, one announcement.
        time.sleep(1.5)
        while not served.lines.empty():
            served.next_line(timeout=1)
        assert sum("listening" in seen for seen in served.seen) == 1, served.seen
        assert not any("Traceback" in seen for seen in served.seen), served.seen
    finally:
        served.stop()
    assert not _accepts(port)


def test_serve_with_a_bad_provider_setting_never_listens(folder: Path) -> None:
    install_pager_plugin(folder)
    write_config(folder, providers={"pager": {"type": "pager"}})
    port = free_port()
    served = Served(folder, "--port", str(port))
    try:
        assert served.process.wait(timeout=60) != 0
        while served.next_line(timeout=10) is not None:
            pass
        assert len(served.seen) == 1 and served.seen[0].startswith("hub: providers.pager.api_key: Missing data"), served.seen
        assert "PAGER_API_KEY" in served.seen[0] and not _accepts(port)
    finally:
        served.stop()


def test_serve_on_a_port_in_use_is_one_line(folder: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_hub(folder, "serve", "--port", str(port))
    line = assert_one_line_failure(done, f"cannot listen on 127.0.0.1:{port}", "in use")
    assert "listening" not in line


def test_serve_with_a_plugin_refused_in_strict_mode_is_one_line(folder: Path) -> None:
    install_broken_plugin(folder)
    done = run_hub(folder, "serve", "--port", str(free_port()), HUB_STRICT_PLUGINS="1")
    assert_one_line_failure(done, BROKEN_MESSAGE)


def test_serve_when_the_worker_cannot_build_the_hub(folder: Path) -> None:
    install_fake_distribution(folder / "site", "hub-flaky", "0.1", {"hub_flaky": FLAKY_PLUGIN}, {"flaky": "hub_flaky"})
    write_config(folder, providers={"flaky": {"type": "flaky"}})
    done = run_hub(folder, "serve", "--port", str(free_port()), "--job-workers", "0", HUB_PLUGINS_ALLOW="flaky")
    # The cause comes first, as one line; gunicorn then adds its own shutdown lines (no traceback).
    assert done.returncode != 0 and "Traceback" not in done.stderr and "listening" not in done.stderr
    assert done.stderr.splitlines()[0] == "hub: providers.flaky.api_key: revoked since start-up", done.stderr
