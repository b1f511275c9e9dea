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
from typing import Any

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
        assert line == f"hub listening on http://127.0.0.1:{port}/api/integrations (data in {(folder / 'var').resolve()}); console: http://127.0.0.1:{port}/console/"
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


# --- hub dead-letters and progress ---------------------------------------------------------------
# In-process (click's CliRunner) against a hub.yaml the test's own IntegrationManager shares: the dead
# letters are made through the real path (a job that runs out of attempts, a subscription handler that keeps
# refusing), then the command lists and replays them.

#: A plain form's output never holds the bar's characters.
BAR = "━"


def _cli_config(tmp_path: Path, smtp_port: int, **settings: object) -> Path:
    """The repo's hub.yaml (embedded defaults) plus an SMTP provider for email on ``smtp_port``; one attempt
    per job and no horizon, so a job that fails once is dead."""
    raw = yaml.safe_load((REPO / "hub.yaml").read_text())
    raw["providers"]["mail"] = {"type": "smtp", "host": "127.0.0.1", "port": smtp_port, "security": "none", "from_address": "hub@example.com", "timeout": 2}
    raw["services"]["email"] = {"providers": ["mail"], "enabled": True}
    raw.update(
        data_dir=str(tmp_path / "var"),
        database_url=f"sqlite:///{tmp_path / 'var' / 'hub.db'}",
        redis_url="",
        mode="development",
        plugins={"allow": ["smtp"], "block": [], "strict": True},  # only the plugin used: a fast start
        retry={"attempts": 1, "initial_delay": 0.01, "max_delay": 0.02, "jitter": 0, "job_attempts": 1, "job_delay": 0.05, "horizon": 0},
        circuit_breaker={"fail_max": 100, "reset_timeout": 0.1},
        queue={**raw.get("queue", {}), "workers": 0},
        **settings,
    )
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _manager(config_path: Path) -> Any:
    from hub.config import validate_config
    from hub.manager import IntegrationManager

    return IntegrationManager(validate_config(yaml.safe_load(config_path.read_text()), {}), environ={})


def _cli(config_path: Path, *args: str, **env: str | None) -> Any:
    """``hub --config <path> ARGS`` in this process; stdout is not a TTY (and rich is not told otherwise)."""
    from click.testing import CliRunner

    from hub.cli import main

    return CliRunner().invoke(main, ["--config", str(config_path), *args], env={"FORCE_COLOR": None, "TTY_COMPATIBLE": None, **env})


def _dead_notification(hub: Any, tenant: str, idempotency_key: str | None = None) -> str:
    """A notification whose one job attempt finds the SMTP server down: ``dead``."""
    accepted = hub.send_notification("email", [{"email": f"ops@{tenant}.example"}], data={"subject": "s", "message": "m"}, tenant_id=tenant, idempotency_key=idempotency_key, asynchronous=True)
    hub.run_record(accepted["messageId"])
    assert hub.get_record(accepted["messageId"], tenant).status == "dead"
    return str(accepted["messageId"])


def test_dead_letters_list_and_replay_one_keeping_its_idempotency_key(tmp_path: Path) -> None:
    from hub.testing.servers import SmtpServer

    port = free_port()
    config = _cli_config(tmp_path, port)
    hub = _manager(config)
    try:
        welcome = _dead_notification(hub, "demo", idempotency_key="welcome-1")
        other = _dead_notification(hub, "acme")

        listed = _cli(config, "dead-letters", "list")
        assert listed.exit_code == 0, listed.output
        lines = listed.output.strip().splitlines()
        assert [line.split()[:3] for line in lines] == [[other, "notification", "acme"], [welcome, "notification", "demo"]]  # newest first
        assert all(line.split()[3] == "email" and "1 attempt(s)  All providers for email failed: mail: SMTP server" in line for line in lines), lines
        (item,) = json.loads(_cli(config, "dead-letters", "list", "--tenant", "demo", "--json").output)
        assert (item["id"], item["kind"], item["tenantId"], item["idempotencyKey"]) == (welcome, "notification", "demo", "welcome-1")
        assert _cli(config, "dead-letters", "list", "--kind", "subscription").output == ""
        assert len(json.loads(_cli(config, "dead-letters", "list", "--limit", "1", "--json").output)) == 1
        refused = _cli(config, "dead-letters", "list", "--kind", "letter")
        assert refused.exit_code == 2 and "'letter' is not one of notification, payment" in refused.output

        # Tenant-scoped: acme's record is not demo's to replay.
        wrong = _cli(config, "dead-letters", "replay", other, "--tenant", "demo")
        assert wrong.exit_code == 1 and f"hub: no dead letter or record {other} for tenant demo" in wrong.output

        with SmtpServer(port=port, starttls=False, require_auth=False) as smtp:
            replayed = _cli(config, "dead-letters", "replay", welcome)
            assert replayed.exit_code == 0, replayed.output
            assert replayed.output == f"replayed {welcome} (notification, tenant demo): queued\n"
            queued = hub.get_record(welcome, "demo")
            assert queued.status == "queued" and queued.idempotency_key == "welcome-1"  # the same record, the same key
            hub.run_record(welcome)
            done = hub.get_record(welcome, "demo")
            assert done.status == "succeeded" and done.idempotency_key == "welcome-1" and smtp.count == 1
            # The key still answers with that record: a retry by the caller sends nothing more.
            again = hub.send_notification("email", [{"email": "ops@demo.example"}], data={"subject": "s", "message": "m"}, tenant_id="demo", idempotency_key="welcome-1", asynchronous=True)
            assert again["messageId"] == welcome
            hub.run_record(welcome)
            assert smtp.count == 1

        twice = _cli(config, "dead-letters", "replay", welcome)
        assert twice.exit_code == 1
        assert f"hub: could not replay {welcome} (notification, tenant demo): Only a dead record can be replayed; {welcome} is succeeded" in twice.output
        missing = _cli(config, "dead-letters", "replay", "ntf_nope")
        assert missing.exit_code == 1 and "hub: no dead letter or record ntf_nope" in missing.output
        assert _cli(config, "dead-letters", "replay").exit_code == 2  # an id or --all
        assert _cli(config, "dead-letters", "replay", welcome, "--all").exit_code == 2
        assert [item["id"] for item in json.loads(_cli(config, "dead-letters", "list", "--json").output)] == [other]
    finally:
        hub.close()


def test_replay_all_replays_records_and_subscription_dead_letters_and_names_what_failed(tmp_path: Path) -> None:
    from tests.test_publish import Receiver

    with Receiver() as receiver:
        receiver.fail = {1: (-1, 422), 2: (-1, 422)}  # refused for good: a dead letter at the first attempt
        subscription = {"tenant": "demo", "topics": ["orders"], "handler": {"type": "webhook", "url": f"{receiver.url}/erp"}, "max_attempts": 1, "lease_seconds": 2}
        config = _cli_config(tmp_path, free_port(), subscriptions={"orders-to-erp": subscription})
        consumer = _manager(config)
        try:
            consumer.start_workers(1)
            for n in (1, 2):
                consumer.publish_event("orders", "order.created", {"n": n}, tenant_id="demo")
            deadline = time.monotonic() + 15
            while len(consumer.publish.dead_letters("demo")) < 2:
                assert time.monotonic() < deadline, "no two dead letters"
                time.sleep(0.05)
            letters = {letter["value"]["data"]["n"]: letter["id"] for letter in consumer.publish.dead_letters("demo")}
        finally:
            consumer.close()  # its job workers would otherwise run the notifications below
        hub = _manager(config)
        try:
            notifications = [_dead_notification(hub, "demo"), _dead_notification(hub, "acme")]
            listed = _cli(config, "dead-letters", "list", "--tenant", "demo").output.strip().splitlines()
            assert sorted(line.split()[1] for line in listed) == ["notification", "subscription", "subscription"]
            assert any(line.startswith(letters[1]) and "orders-to-erp orders[" in line and "422" in line for line in listed), listed
            only = _cli(config, "dead-letters", "list", "--kind", "subscription", "--json").output
            assert sorted(item["id"] for item in json.loads(only)) == sorted(letters.values())

            receiver.fail = {2: (-1, 422)}  # the receiver is fixed for 1, still refuses 2
            replayed = _cli(config, "dead-letters", "replay", "--all")
            assert replayed.exit_code == 1
            out = replayed.stdout.splitlines()
            assert BAR not in replayed.output
            # One plain line per item, oldest first, then the count; the failure on stderr, named.
            assert out == [
                f"replayed {letters[1]} (subscription, tenant demo): delivered",
                f"replayed {notifications[0]} (notification, tenant demo): queued",
                f"replayed {notifications[1]} (notification, tenant acme): queued",
                "replayed 3 of 4",
            ], out
            errors = replayed.stderr.splitlines()
            assert errors[0].startswith(f"hub: could not replay {letters[2]} (subscription, tenant demo): ") and "422" in errors[0]
            assert errors[-1] == f"hub: 1 could not be replayed: {letters[2]}"
            assert receiver.numbers() == [1]
            assert [hub.get_record(record_id, tenant).status for record_id, tenant in zip(notifications, ("demo", "acme"), strict=True)] == ["queued", "queued"]
            left = json.loads(_cli(config, "dead-letters", "list", "--json").output)
            assert [(item["id"], item["attempts"]) for item in left] == [(letters[2], 2)]
            # --kind narrows --all: nothing of that kind is dead now, so nothing to do and nothing failed.
            none = _cli(config, "dead-letters", "replay", "--all", "--kind", "notification")
            assert none.exit_code == 0 and none.output == "replayed 0 of 0\n"
        finally:
            hub.close()


def test_replay_all_on_a_terminal_shows_a_bar(tmp_path: Path) -> None:
    config = _cli_config(tmp_path, free_port())
    hub = _manager(config)
    try:
        dead = [_dead_notification(hub, "demo") for _ in range(3)]
        # rich's own switch for "this is a terminal" (what a TTY gives): the bar, with the lines above it.
        shown = _cli(config, "dead-letters", "replay", "--all", TTY_COMPATIBLE="1", COLUMNS="100")
        assert shown.exit_code == 0, shown.output
        assert BAR in shown.output and "replaying" in shown.output and "3/3" in shown.output, shown.output
        assert all(f"replayed {record_id} (notification, tenant demo): queued" in shown.output for record_id in dead)
    finally:
        hub.close()


def test_steps_draw_a_bar_on_a_forced_terminal_and_plain_lines_otherwise(capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from rich.console import Console

    from hub.cli import Steps

    screen = io.StringIO()
    with Steps("moving files", 4, console=Console(file=screen, force_terminal=True, width=100)) as steps:
        assert steps.terminal
        for n in range(4):
            steps.step(f"moved fil_{n}")
    drawn = screen.getvalue()
    assert BAR in drawn and "moving files" in drawn and "4/4" in drawn and "moved fil_3" in drawn
    with Steps("moving files", 2, console=Console(file=io.StringIO(), force_terminal=False)) as steps:
        assert not steps.terminal
        steps.step("moved fil_0")
        steps.step("failed fil_1: down", 0, err=True)
    captured = capsys.readouterr()
    assert captured.out == "moved fil_0\n" and captured.err == "failed fil_1: down\n"
    with Steps("moving files", 1, quiet=True) as steps:  # --json: only failures, on stderr
        steps.step("moved fil_2")
        steps.step("failed fil_3: down", 0, err=True)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "failed fil_3: down\n"


def test_files_migrate_prints_a_line_per_file_moved(tmp_path: Path) -> None:
    config = _cli_config(tmp_path, free_port())
    raw = yaml.safe_load(config.read_text())
    raw["providers"]["spare"] = {"type": "local-disk", "root": "spare"}
    raw["services"]["fileStorage"] = {"providers": ["spare"]}
    config.write_text(yaml.safe_dump(raw))
    hub = _manager(config)
    try:
        stored = [hub.upload_file(f"f{n}.txt", f"file {n}".encode(), "text/plain", tenant_id=tenant)["fileId"] for n, tenant in enumerate(("acme", "demo", "demo"))]
    finally:
        hub.close()
    # The first provider is back (here: listed first again): the spare's files move to it.
    raw["services"]["fileStorage"] = {"providers": ["local", "spare"]}
    config.write_text(yaml.safe_dump(raw))
    moved = _cli(config, "files", "migrate", "--limit", "2")
    assert moved.exit_code == 0, moved.output
    assert moved.output.splitlines() == [f"moved {stored[0]} (tenant acme)", f"moved {stored[1]} (tenant demo)", "moved 2 file(s); 1 still on another provider"]
    rest = _cli(config, "files", "migrate", "--json")
    assert rest.exit_code == 0 and json.loads(rest.output) == {"moved": [stored[2]], "failed": [], "remaining": 0}
    hub = _manager(config)
    try:
        for n, (file_id, tenant) in enumerate(zip(stored, ("acme", "demo", "demo"), strict=True)):
            with hub.download_file(file_id, tenant_id=tenant) as download:
                assert download.file.provider == "local" and download.stream.read() == f"file {n}".encode()
    finally:
        hub.close()


def test_sync_run_shows_a_line_per_run_and_on_a_terminal_a_bar_over_them(tmp_path: Path) -> None:
    # One record a run (the built-in file source's three sample customers): three runs to the end of the stream.
    config = _cli_config(tmp_path, free_port(), sync={"page_size": 1, "max_pages": 1, "max_records": 1})
    plain = _cli(config, "sync", "run", "customers", "--tenant", "demo")
    assert plain.exit_code == 0, plain.output
    lines = plain.output.splitlines()
    assert len(lines) == 3 and all(line.startswith("local-files: succeeded 1 record(s) in 1 page(s) job syn_") for line in lines), lines
    assert BAR not in plain.output
    shown = _cli(config, "sync", "run", "customers", "--tenant", "demo", "--full", TTY_COMPATIBLE="1", COLUMNS="100")
    assert shown.exit_code == 0, shown.output
    assert BAR in shown.output and "sync customers" in shown.output and "3/?" in shown.output, shown.output
    assert shown.output.count("local-files: succeeded 1 record(s) in 1 page(s)") == 3
    quiet = _cli(config, "sync", "run", "customers", "--tenant", "demo", "--full", "--json", TTY_COMPATIBLE="1")
    assert BAR not in quiet.output and len(json.loads(quiet.output)) == 3  # --json: the JSON alone
