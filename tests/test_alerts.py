"""Operations alerts: one notification when an incident opens and one when it is over -- a circuit, a provider's
error rate, refused tokens and forged webhooks, dead records -- whichever of several hub processes evaluates.

The alerts go through the chat service to the outbox notifier (the embedded default); providers come from the
scripted test plugin of test_resilience (a real plugin registered through pluggy).
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from hub.api import create_app
from hub.manager import IntegrationManager
from hub.records import Record
from tests.conftest import API, data_of
from tests.test_resilience import make_hub

ALERTS = {"notify": [{"channel": "chat"}, {"channel": "email", "recipients": [{"email": "oncall@example.com"}]}], "min_calls": 3, "error_rate": 0.5, "refused_tokens": 5, "forged_signatures": 3}
PROVIDERS = {"primary": {"type": "scripted-notify", "behaviour": "transient"}, "backup": {"type": "scripted-notify"}}
SERVICES = {"email": {"providers": ["primary", "backup"], "enabled": True, "high_priority_bypasses_rate_limit": False}}


def alert_notifications(hub: IntegrationManager) -> list[Record]:
    with hub.db.session() as session:
        rows = session.scalars(select(Record).where(Record.kind == "notification").order_by(Record.created_at)).all()
    return [row for row in rows if row.payload["template"] == "critical_alert"]


def send(hub: IntegrationManager) -> None:
    hub.send_notification("email", [{"email": "customer@example.com"}], data={"subject": "s", "message": "m"}, tenant_id="demo")


def test_a_circuit_alerts_once_when_it_opens_and_once_when_it_closes(tmp_path: Path) -> None:
    hub = make_hub(tmp_path, PROVIDERS, SERVICES, alerts=ALERTS, circuit_breaker={"fail_max": 2, "reset_timeout": 60})
    try:
        for _ in range(3):
            send(hub)  # the primary fails, the backup delivers: the primary's circuit opens
        assert hub.breakers.state("primary") == "open"
        first = hub.alerts.evaluate()
        assert "circuit:primary" in first["opened"] and "errors:primary" in first["opened"]
        assert hub.alerts.evaluate() == {"opened": [], "resolved": []}  # still open: nothing more
        opened = alert_notifications(hub)
        assert sorted(record.payload["channel"] for record in opened if "circuit" in record.payload["data"]["title"].lower()) == ["chat", "email"]
        text = json.dumps([record.payload for record in opened])
        assert "customer@example.com" not in text  # alerts name providers and counts, never recipients

        hub.breakers.get("primary").close()
        later = hub.alerts.evaluate()
        assert "circuit:primary" in later["resolved"]
        resolved = [record for record in alert_notifications(hub) if record.payload["data"]["severity"] == "resolved"]
        assert len(resolved) == 2 and all("circuit" in record.payload["data"]["title"] for record in resolved)
        assert [item["key"] for item in hub.alerts.incidents("resolved")] == ["circuit:primary"]
    finally:
        hub.close()


def test_two_processes_evaluating_together_alert_once(tmp_path: Path) -> None:
    first = make_hub(tmp_path, PROVIDERS, SERVICES, alerts=ALERTS, circuit_breaker={"fail_max": 2, "reset_timeout": 60})
    second = make_hub(tmp_path, PROVIDERS, SERVICES, alerts=ALERTS, circuit_breaker={"fail_max": 2, "reset_timeout": 60})  # same database
    try:
        for _ in range(3):
            send(first)
        second.breakers.get("primary").open()  # each process sees the circuit open (Redis shares it in production)
        results = [first.alerts.evaluate(), second.alerts.evaluate()]
        assert sum(result["opened"].count("circuit:primary") for result in results) == 1
        assert len([record for record in alert_notifications(first) if "circuit" in record.payload["data"]["title"].lower()]) == 2
    finally:
        first.close()
        second.close()


def test_refused_tokens_and_forged_webhooks_are_one_security_incident_each(tmp_path: Path) -> None:
    hub = make_hub(tmp_path, PROVIDERS, SERVICES, alerts=ALERTS)
    try:
        client = create_app(manager=hub).test_client()
        for _ in range(5):
            assert client.get(f"{API}/status", headers={"Authorization": "Bearer not-a-token", "X-Tenant-ID": "demo"}).status_code == 401
        for _ in range(3):
            response = client.post(f"{API}/webhooks/sandbox", data=b'{"id": "evt_1"}', headers={"Content-Type": "application/json", "X-Sandbox-Signature": "forged"})
            assert response.status_code == 401, response.get_json()
        opened = hub.alerts.evaluate()["opened"]
        assert "security:tokens" in opened and "security:webhooks" in opened
        admin = {"Authorization": f"Bearer {hub.tokens.create('ops', 'admin', admin=True)[1]}", "X-Tenant-ID": "ops"}
        keys = [item["key"] for item in data_of(client.get(f"{API}/alerts", headers=admin))["items"]]
        assert {"security:tokens", "security:webhooks"} <= set(keys)
        tenant = {"Authorization": f"Bearer {hub.tokens.create('demo', 'app')[1]}", "X-Tenant-ID": "demo"}
        assert client.get(f"{API}/alerts", headers=tenant).status_code == 403
    finally:
        hub.close()


def test_a_dead_record_opens_an_incident_and_a_replay_closes_it(tmp_path: Path) -> None:
    hub = make_hub(tmp_path, {"down": {"type": "scripted-notify", "behaviour": "transient"}}, {"email": {"providers": ["down"], "enabled": True}}, alerts=ALERTS, retry={"attempts": 1, "initial_delay": 0, "max_delay": 0, "jitter": 0, "job_attempts": 1, "job_delay": 0, "horizon": 0})
    try:
        accepted = hub.send_notification("email", [{"email": "a@example.com"}], data={"subject": "s", "message": "m"}, tenant_id="demo", asynchronous=True)
        hub.run_record(accepted["messageId"])
        assert hub.get_record(accepted["messageId"], "demo").status == "dead"
        assert "dead:notification" in hub.alerts.evaluate()["opened"]
        hub.runtime.ledger.replay_dead(accepted["messageId"], "demo")
        assert "dead:notification" in hub.alerts.evaluate()["resolved"]
    finally:
        hub.close()
