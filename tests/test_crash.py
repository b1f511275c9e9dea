"""The crash test: a 1,000-recipient bulk email through hub-smtp to a local SMTP server, the worker process
SIGKILLed midway and restarted, then the SMTP server stopped for longer than the job retries would have lasted
under the old rules. Counted at the server by ``Message-ID``: nothing lost, and no more repeats than the
messages in flight at the kill (the ones the write-ahead names)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from hub import IntegrationManager
from hub.config import validate_config
from hub.records import Record
from hub.testing.processes import Worker, wait_until
from hub.testing.servers import SmtpServer, free_port

REPO = Path(__file__).resolve().parent.parent
RECIPIENTS = 1000
BATCH_SIZE = 20
OUTAGE_SECONDS = 10.0
# Old rules: 5 attempts 0.3, 0.6, 1.2, 2.4 s apart = dead 4.5 s into the outage. The new ones back off to
# 1 s between tries and give up only after the horizon.
RETRY = {"attempts": 2, "initial_delay": 0.05, "max_delay": 0.2, "jitter": 0.01, "job_attempts": 5, "job_delay": 0.3, "job_max_delay": 1.0, "horizon": 45.0}


def _message_ids(*servers: SmtpServer) -> Counter[str]:
    return Counter(str(received.message["Message-ID"]) for server in servers for received in list(server.messages))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_bulk_send_survives_a_sigkill_and_an_smtp_outage_without_losing_a_message(tmp_path: Path, database: str, request: pytest.FixtureRequest) -> None:
    database_url = str(request.getfixturevalue("postgres_url")) if database == "postgresql" else None
    port = free_port()
    servers = [SmtpServer(port=port, starttls=False, require_auth=False).start()]
    config_path, log = tmp_path / "hub.yaml", tmp_path / "worker.log"
    raw = {
        "data_dir": str(tmp_path / "var"),
        "database_url": database_url,
        "providers": {"mail": {"type": "smtp", "host": "127.0.0.1", "port": port, "security": "none", "from_address": "hub@example.com", "timeout": 2}},
        "services": {"email": {"providers": ["mail"], "enabled": True}},
        "queue": {"backend": "sqlite", "workers": 0, "batch_size": BATCH_SIZE, "lease_seconds": 3},
        "retry": RETRY,
        "circuit_breaker": {"fail_max": 3, "reset_timeout": 1.0},
        "rate_limits": {"storage": "memory://", "limits": {"email": "100000/minute"}},
    }
    config_path.write_text(json.dumps(raw))  # JSON is YAML
    hub = IntegrationManager(validate_config(json.loads(config_path.read_text()), {}), environ={})
    workers: list[Worker] = []
    try:
        recipients = [{"email": f"r{n}@example.com", "name": f"Recipient {n}"} for n in range(RECIPIENTS)]
        accepted = hub.send_notification("email", recipients, data={"subject": "Bulk", "message": "Hello"}, tenant_id="demo")
        record_id = accepted["messageId"]
        assert accepted["status"] == "queued"

        def record() -> Record:
            return hub.get_record(record_id, "demo")

        workers.append(Worker(config_path, log))
        wait_until(lambda: servers[0].count >= 300, 60, "the first 300 messages", log)
        workers[0].kill()
        killed_at = time.monotonic()
        at_kill = record()
        in_flight = at_kill.result["inFlight"]["indexes"] if at_kill.status == "running" and at_kill.result else []
        received_at_kill = servers[0].count

        workers.append(Worker(config_path, log))
        # The lease (3 s) runs out and the restarted worker resumes within seconds, not minutes.
        wait_until(lambda: servers[0].count > received_at_kill, 15, "the restarted worker resumes", log)
        resumed_after = time.monotonic() - killed_at
        wait_until(lambda: servers[0].count >= 650, 60, "650 messages", log)
        servers[0].stop()  # the outage: longer than the old rules' retries lasted
        outage_started = time.monotonic()
        while time.monotonic() - outage_started < OUTAGE_SECONDS:
            assert record().status != "dead", "dead during an outage shorter than the horizon"
            time.sleep(0.5)
        during = record()
        servers.append(SmtpServer(port=port, starttls=False, require_auth=False).start())
        done = wait_until(lambda: (current := record()).status in ("succeeded", "partial", "failed", "dead") and current, 60, "the send finishes", log, every=0.2)

        received = _message_ids(*servers)
        expected = {f"<{record_id}-email.{index}@example.com>" for index in range(RECIPIENTS)}
        lost = len(expected - set(received))
        duplicated = sum(count - 1 for count in received.values() if count > 1)
        unexpected = set(received) - expected
        report = (
            f"crash test: received {sum(received.values())}, lost {lost}, duplicated {duplicated}, in flight at the kill"
            f" {len(in_flight)} (received at the kill {received_at_kill}), resumed {resumed_after:.1f} s after the kill,"
            f" job attempts by the end of the {OUTAGE_SECONDS:g} s outage {during.attempts} (old rules: dead at {RETRY['job_attempts']})"
        )
        print(report)
        assert done.status == "succeeded", (done.status, done.error, report)
        assert lost == 0 and not unexpected, report
        assert duplicated <= len(in_flight) <= BATCH_SIZE, report
        assert during.attempts > RETRY["job_attempts"], report  # kept retrying past what the old rules allowed
        assert any(entry.get("outcome") == "resumed" for entry in done.attempt_log), report
    finally:
        for worker in workers:
            worker.stop()
        for server in servers:
            server.stop()
        hub.close()
