"""Failover, retries, circuit breakers, channel fallback, rate limits and breakers shared through Redis."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import pytest
from marshmallow import Schema, fields

from hub import hookimpl
from hub.api import create_app
from hub.capabilities import HealthResult, NotifyResult, PaymentResult, Provider, RecipientResult, RefundResult
from hub.errors import ConfigurationError, PermanentError, ProviderThrottledError, TransientError
from hub.manager import IntegrationManager
from hub.resilience import Breakers, RetryPolicy
from tests.conftest import base_config

API = "/api/integrations"


class ScriptedSettings(Schema):
    #: "ok", "transient", "config", "permanent" or "flaky:N" (N transient failures, then ok).
    behaviour = fields.String(load_default="ok")


class ScriptedNotifier(Provider):
    """A notify provider whose behaviour the test sets; it records every call."""

    type_name = "scripted-notify"
    capability = "notify"
    channels = ("email", "sms")
    settings_schema = ScriptedSettings
    calls: ClassVar[list[tuple[str, str, int]]] = []
    #: (monotonic time, recipients) of every call: the pace a rate limit allows
    call_times: ClassVar[list[tuple[float, int]]] = []
    _lock = threading.Lock()

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.failures_left = int(self.settings["behaviour"].split(":")[1]) if self.settings["behaviour"].startswith("flaky") else 0

    @hookimpl
    def notify(self, message: Any) -> NotifyResult:
        with self._lock:
            ScriptedNotifier.calls.append((self.name, message.channel, len(message.recipients)))
            ScriptedNotifier.call_times.append((time.monotonic(), len(message.recipients)))
        behaviour = self.settings["behaviour"]
        if behaviour == "transient" or (behaviour.startswith("flaky") and self.failures_left > 0):
            self.failures_left -= 1
            raise TransientError("connection refused")
        if behaviour == "config":
            raise ConfigurationError("credentials rejected")
        if behaviour == "permanent":
            raise PermanentError("message refused", provider_code="refused")
        if behaviour == "half":  # the connection dropped half-way through the batch
            half = len(message.recipients) // 2
            return NotifyResult(
                [RecipientResult(r.address, "sent" if i < half else "retry", f"{self.name}-{i}" if i < half else None) for i, r in enumerate(message.recipients)]
            )
        return NotifyResult([RecipientResult(r.address, "sent", f"{self.name}-{message.id}-{i}") for i, r in enumerate(message.recipients)])

    @hookimpl
    def health(self) -> HealthResult:
        return HealthResult("error" if self.settings["behaviour"] != "ok" else "success", self.settings["behaviour"])


class ScriptedGateway(Provider):
    type_name = "scripted-pay"
    capability = "pay"
    settings_schema = ScriptedSettings
    calls: ClassVar[list[str]] = []

    @hookimpl
    def pay(self, payment: Any) -> PaymentResult:
        ScriptedGateway.calls.append(self.name)
        if self.settings["behaviour"] == "transient":
            raise TransientError("gateway timeout")
        if self.settings["behaviour"] == "permanent":
            raise PermanentError("Your card was declined.", provider_code="card_declined")
        return PaymentResult(f"{self.name}_{payment.id}", "succeeded", payment.amount, payment.currency)

    @hookimpl
    def refund(self, refund: Any) -> RefundResult:
        return RefundResult(f"re_{refund.id}", "succeeded", refund.amount, refund.currency)

    @hookimpl
    def payment_status(self, lookup: Any) -> PaymentResult | None:
        return None  # never asked: these gateways answer every pay() or raise an error that proves no charge


class MeetingNotifier(Provider):
    """Each call waits until another call is in flight too: it only succeeds if calls to one provider overlap."""

    type_name = "meeting-notify"
    capability = "notify"
    channels = ("email",)
    meeting = threading.Barrier(2, timeout=5)

    @hookimpl
    def notify(self, message: Any) -> NotifyResult:
        self.meeting.wait()  # BrokenBarrierError (a TransientError for the hub) if calls were serialised
        return NotifyResult([RecipientResult(r.address, "sent", f"{message.id}-{i}") for i, r in enumerate(message.recipients)])


class ScriptedPlugin:
    @staticmethod
    @hookimpl
    def register_providers(register: Any) -> None:
        register(ScriptedNotifier)
        register(ScriptedGateway)
        register(MeetingNotifier)


def make_hub(tmp_path: Path, providers: dict[str, Any], services: dict[str, Any], **overrides: Any) -> IntegrationManager:
    config = base_config(tmp_path / "var", providers, services, **overrides)
    ScriptedNotifier.calls.clear()
    ScriptedNotifier.call_times.clear()
    ScriptedGateway.calls.clear()
    return IntegrationManager(config, environ={}, entry_points=False, plugins=[(ScriptedPlugin(), "scripted")])


@pytest.fixture
def hub_factory(tmp_path: Path) -> Any:
    made: list[IntegrationManager] = []

    def factory(providers: dict[str, Any], services: dict[str, Any], **overrides: Any) -> IntegrationManager:
        hub = make_hub(tmp_path / uuid.uuid4().hex[:6], providers, services, **overrides)
        made.append(hub)
        return hub

    yield factory
    for hub in made:
        hub.close()


def test_transient_failure_fails_over_to_the_next_provider(hub_factory: Any) -> None:
    hub = hub_factory(
        {"primary": {"type": "scripted-notify", "behaviour": "transient"}, "backup": {"type": "scripted-notify"}},
        {"email": {"providers": ["primary", "backup"], "enabled": True, "high_priority_bypasses_rate_limit": False}},
    )
    result = hub.send_notification("email", [{"email": "a@example.com"}], data={"subject": "s", "message": "m"}, tenant_id="t")
    assert result["status"] == "succeeded" and result["transporter"] == "backup"
    # Retried on the primary (attempts=2 in tests), then failed over once.
    assert [call[0] for call in ScriptedNotifier.calls] == ["primary", "primary", "backup"]
    assert [a["provider"] for a in result["attempts"]] == ["primary", "backup"]
    assert result["attempts"][0]["outcome"] == "failed" and result["attempts"][0]["retries"] == 1


def test_retry_recovers_a_flaky_provider_without_failover(hub_factory: Any) -> None:
    hub = hub_factory(
        {"primary": {"type": "scripted-notify", "behaviour": "flaky:1"}, "backup": {"type": "scripted-notify"}},
        {"email": {"providers": ["primary", "backup"], "enabled": True, "high_priority_bypasses_rate_limit": False}},
    )
    result = hub.send_notification("email", [{"email": "a@example.com"}], data={"subject": "s", "message": "m"}, tenant_id="t")
    assert result["transporter"] == "primary" and [c[0] for c in ScriptedNotifier.calls] == ["primary", "primary"]


def test_configuration_error_fails_over_without_retry_and_permanent_error_does_not_fail_over(hub_factory: Any) -> None:
    hub = hub_factory(
        {"broken": {"type": "scripted-notify", "behaviour": "config"}, "refuses": {"type": "scripted-notify", "behaviour": "permanent"}, "backup": {"type": "scripted-notify"}},
        {
            "email": {"providers": ["broken", "backup"], "enabled": True, "high_priority_bypasses_rate_limit": False},
            "sms": {"providers": ["refuses", "backup"], "enabled": True, "high_priority_bypasses_rate_limit": False},
        },
    )
    hub.send_notification("email", [{"email": "a@example.com"}], data={"subject": "s", "message": "m"}, tenant_id="t")
    assert [c[0] for c in ScriptedNotifier.calls] == ["broken", "backup"]
    ScriptedNotifier.calls.clear()
    result = hub.send_notification("sms", [{"phone": "+14155552671"}], data={"subject": "s", "message": "m"}, tenant_id="t")
    assert [c[0] for c in ScriptedNotifier.calls] == ["refuses"]
    assert result["status"] == "failed" and "message refused" in result["recipients"][0]["error"]


def test_circuit_breaker_opens_and_skips_the_provider(hub_factory: Any) -> None:
    hub = hub_factory(
        {"primary": {"type": "scripted-notify", "behaviour": "transient"}, "backup": {"type": "scripted-notify"}},
        {"email": {"providers": ["primary", "backup"], "enabled": True, "high_priority_bypasses_rate_limit": False}},
        circuit_breaker={"fail_max": 2, "reset_timeout": 60},
    )
    for _ in range(3):
        hub.send_notification("email", [{"email": "a@example.com"}], data={"subject": "s", "message": "m"}, tenant_id="t")
    primary_calls = [c for c in ScriptedNotifier.calls if c[0] == "primary"]
    assert len(primary_calls) == 2  # the breaker opened after 2 failures; later sends skip it
    assert hub.breakers.state("primary") == "open"
    health = hub.service_health("email")
    assert health["details"]["primary"]["status"] == "error" and "circuit open" in health["details"]["primary"]["message"]
    assert health["status"] == "healthy"  # the backup still serves


def test_an_open_circuit_is_skipped_at_once_and_noted(hub_factory: Any) -> None:
    hub = hub_factory(
        {"primary": {"type": "scripted-notify", "behaviour": "transient"}, "backup": {"type": "scripted-notify"}},
        {"email": {"providers": ["primary", "backup"], "enabled": True, "high_priority_bypasses_rate_limit": False}},
        circuit_breaker={"fail_max": 1, "reset_timeout": 60},
        retry={"attempts": 3, "initial_delay": 0.01, "max_delay": 0.02, "jitter": 0, "job_attempts": 2, "job_delay": 1},
    )
    first = hub.send_notification("email", [{"email": "a@example.com"}], data={"subject": "s", "message": "m"}, tenant_id="t")
    assert first["transporter"] == "backup"
    ScriptedNotifier.calls.clear()
    second = hub.send_notification("email", [{"email": "b@example.com"}], data={"subject": "s", "message": "m"}, tenant_id="t")
    # Not called, not retried: the open circuit sends the batch straight to the next provider.
    assert [call[0] for call in ScriptedNotifier.calls] == ["backup"]
    skipped = second["attempts"][0]
    assert skipped["provider"] == "primary" and skipped["outcome"] == "skipped" and skipped["error"] == "circuit open" and skipped["retries"] == 0
    assert "Timeout not elapsed" not in str(second)


def test_a_failed_over_record_counts_both_tries(hub_factory: Any) -> None:
    hub = hub_factory(
        {"primary": {"type": "scripted-notify", "behaviour": "config"}, "backup": {"type": "scripted-notify"}},
        {"email": {"providers": ["primary", "backup"], "enabled": True, "high_priority_bypasses_rate_limit": False}},
    )
    sent = hub.send_notification("email", [{"email": "a@example.com"}], data={"subject": "s", "message": "m"}, tenant_id="t")
    record = hub.get_record(sent["messageId"], "t").to_dict()
    assert len(record["attemptLog"]) == 2 and record["attempts"] == 2 and record["jobAttempts"] == 1


def test_fallback_services_move_to_another_channel(hub_factory: Any) -> None:
    hub = hub_factory(
        {"mail": {"type": "scripted-notify", "behaviour": "transient"}, "texts": {"type": "scripted-notify"}},
        {
            "email": {"providers": ["mail"], "enabled": True, "high_priority_bypasses_rate_limit": False},
            "sms": {"providers": ["texts"], "enabled": True, "high_priority_bypasses_rate_limit": False},
        },
    )
    result = hub.send_notification(
        "email",
        [{"name": "Ops", "email": "ops@example.com", "phone": "+14155552671"}],
        template="low_stock_alert",
        data={"sku": "WIDGET-001", "location": "WAREHOUSE-A", "current_stock": 5, "threshold": 10},
        priority="high",
        fallback_services=["sms"],
        tenant_id="t",
    )
    assert result["status"] == "succeeded" and result["recipients"][0]["channel"] == "sms"
    assert result["recipients"][0]["address"] == "+14155552671"
    assert [(a["channel"], a["provider"], a["outcome"]) for a in result["attempts"]] == [("email", "mail", "failed"), ("sms", "texts", "succeeded")]


def test_when_every_provider_is_down_the_notification_is_kept_and_retried(hub_factory: Any) -> None:
    hub = hub_factory(
        {"mail": {"type": "scripted-notify", "behaviour": "transient"}},
        {"email": {"providers": ["mail"], "enabled": True, "high_priority_bypasses_rate_limit": False}},
    )
    result = hub.send_notification("email", [{"email": "a@example.com"}], data={"subject": "s", "message": "m"}, tenant_id="t")
    assert result["status"] == "queued" and result["error"]
    record_id = result["messageId"]
    # The provider comes back: the queued record is delivered by a worker, once.
    hub.registry.slots["mail"].instance.settings["behaviour"] = "ok"
    hub.db.engine.dispose()
    with hub.db.session() as session:
        from hub.records import Record

        session.get(Record, record_id).lease_until = None
    hub.run_record(record_id)
    hub.run_record(record_id)  # a duplicate queue entry does nothing
    done = hub.get_record(record_id, "t")
    assert done.status == "succeeded" and done.attempts == 2


def test_jobs_die_after_the_configured_attempts_once_the_horizon_has_passed(hub_factory: Any) -> None:
    hub = hub_factory(
        {"mail": {"type": "scripted-notify", "behaviour": "transient"}},
        {"email": {"providers": ["mail"], "enabled": True, "high_priority_bypasses_rate_limit": False}},
        retry={"attempts": 2, "initial_delay": 0.01, "max_delay": 0.05, "jitter": 0.01, "job_attempts": 3, "job_delay": 0.1, "horizon": 0},
    )
    accepted = hub.send_notification("email", [{"email": "a@example.com"}], data={"subject": "s", "message": "m"}, tenant_id="t", asynchronous=True)
    from hub.records import Record

    for _ in range(5):
        with hub.db.session() as session:
            session.get(Record, accepted["messageId"]).lease_until = None
        hub.run_record(accepted["messageId"])
    record = hub.get_record(accepted["messageId"], "t")
    assert record.status == "dead" and record.attempts == 3  # job_attempts=3 in the test config


def test_payments_fail_over_only_when_no_charge_was_made(hub_factory: Any) -> None:
    hub = hub_factory(
        {"down": {"type": "scripted-pay", "behaviour": "transient"}, "declines": {"type": "scripted-pay", "behaviour": "permanent"}, "up": {"type": "scripted-pay"}},
        {"payment": {"providers": ["down", "up"], "enabled": True, "high_priority_bypasses_rate_limit": False}},
    )
    paid = hub.process_payment("10.00", "USD", tenant_id="t")
    assert paid["gateway"] == "up" and ScriptedGateway.calls == ["down", "down", "up"]
    ScriptedGateway.calls.clear()
    with pytest.raises(PermanentError):
        hub.process_payment("10.00", "USD", gateway="declines", tenant_id="t")
    assert ScriptedGateway.calls == ["declines"]  # a decline is never retried elsewhere


def test_two_accounts_of_one_provider_type_and_tenant_overrides(hub_factory: Any) -> None:
    hub = hub_factory(
        {"us-account": {"type": "scripted-pay"}, "eu-account": {"type": "scripted-pay"}},
        {"payment": {"providers": ["us-account", "eu-account"], "enabled": True, "high_priority_bypasses_rate_limit": False}},
        tenants={"acme": {"providers": {"us-account": {"behaviour": "transient"}}}},
    )
    assert hub.process_payment(1, "USD", tenant_id="demo")["gateway"] == "us-account"
    assert hub.process_payment(1, "EUR", gateway="eu-account", tenant_id="demo")["gateway"] == "eu-account"
    # acme's own settings for us-account build a separate instance that fails; it fails over.
    assert hub.process_payment(1, "USD", tenant_id="acme")["gateway"] == "eu-account"
    assert hub.process_payment(1, "USD", tenant_id="demo")["gateway"] == "us-account"


def test_rate_limits_and_breakers_are_shared_through_redis(tmp_path: Path, redis_url: str) -> None:
    namespace = uuid.uuid4().hex[:8]
    providers = {"primary": {"type": "scripted-notify", "behaviour": "transient"}, "backup": {"type": "scripted-notify"}}
    services = {"email": {"providers": ["primary", "backup"], "enabled": True, "high_priority_bypasses_rate_limit": False}}
    overrides = {
        "redis_url": redis_url,
        "rate_limits": {"storage": redis_url, "limits": {"email": "4/minute"}},
        "circuit_breaker": {"fail_max": 2, "reset_timeout": 60},
    }
    first = make_hub(tmp_path / "a", providers, services, **overrides)
    second = make_hub(tmp_path / "b", providers, services, **overrides)
    try:
        for hub in (first, second):
            hub.breakers.namespace = namespace
            hub.rate_limits.storage.key_prefix = namespace  # type: ignore[attr-defined]
        tenant = f"t-{namespace}"
        for hub in (first, second, first, second):
            hub.send_notification("email", [{"email": "a@example.com"}], data={"subject": "s", "message": "m"}, tenant_id=tenant)
        from hub.errors import RateLimitedError

        with pytest.raises(RateLimitedError):
            second.send_notification("email", [{"email": "a@example.com"}], data={"subject": "s", "message": "m"}, tenant_id=tenant)
        # The first process opened the breaker; the second sees it open without failing itself.
        assert first.breakers.state("primary") == "open" and second.breakers.state("primary") == "open"
    finally:
        first.close()
        second.close()


def test_high_priority_may_skip_the_rate_limit(hub_factory: Any) -> None:
    hub = hub_factory(
        {"mail": {"type": "scripted-notify"}},
        {"email": {"providers": ["mail"], "enabled": True, "high_priority_bypasses_rate_limit": True}},
        rate_limits={"storage": "memory://", "limits": {"email": "1/minute"}},
    )
    hub.send_notification("email", [{"email": "a@example.com"}], data={"subject": "s", "message": "m"}, tenant_id="t")
    from hub.errors import RateLimitedError

    with pytest.raises(RateLimitedError):
        hub.send_notification("email", [{"email": "a@example.com"}], data={"subject": "s", "message": "m"}, tenant_id="t")
    hub.send_notification("email", [{"email": "a@example.com"}], data={"subject": "s", "message": "m"}, priority="high", tenant_id="t")


def test_rest_failover_with_zero_messages_lost(tmp_path: Path) -> None:
    hub = make_hub(
        tmp_path,
        {"primary": {"type": "scripted-notify", "behaviour": "transient"}, "backup": {"type": "scripted-notify"}},
        {"email": {"providers": ["primary", "backup"], "enabled": True, "high_priority_bypasses_rate_limit": False}},
    )
    try:
        client = create_app(manager=hub).test_client()
        headers = {"Authorization": f"Bearer {hub.tokens.create('t')[1]}", "X-Tenant-ID": "t"}
        delivered = 0
        for i in range(10):
            body = {"type": "email", "recipients": [{"email": f"u{i}@example.com"}], "data": {"subject": "s", "message": "m"}}
            response = client.post(f"{API}/notifications", json=body, headers=headers).get_json()
            delivered += response["data"]["sent"]
        assert delivered == 10
        assert sum(c[2] for c in ScriptedNotifier.calls if c[0] == "backup") == 10
    finally:
        hub.close()


def test_recipients_a_provider_could_not_send_go_to_the_next_provider_only(hub_factory: Any) -> None:
    hub = hub_factory(
        {"primary": {"type": "scripted-notify", "behaviour": "half"}, "backup": {"type": "scripted-notify"}},
        {"email": {"providers": ["primary", "backup"], "enabled": True, "high_priority_bypasses_rate_limit": False}},
    )
    recipients = [{"email": f"u{i}@example.com"} for i in range(10)]
    result = hub.send_notification("email", recipients, data={"subject": "s", "message": "m"}, tenant_id="t")
    assert result["status"] == "succeeded" and result["sent"] == 10
    assert [(name, count) for name, _, count in ScriptedNotifier.calls] == [("primary", 10), ("backup", 5)]
    assert [r["provider"] for r in result["recipients"]] == ["primary"] * 5 + ["backup"] * 5


def test_calls_to_one_provider_run_concurrently_under_its_circuit_breaker(hub_factory: Any) -> None:
    # pybreaker's own call() holds the breaker's lock for the whole call, which would serialise every send
    # through one provider (an SMTP pool, a server's threads); the hub holds it only to decide and to count.
    hub = hub_factory(
        {"meeting": {"type": "meeting-notify"}},
        {"email": {"providers": ["meeting"], "enabled": True, "high_priority_bypasses_rate_limit": False}},
        retry={"attempts": 1, "initial_delay": 0.01, "max_delay": 0.02, "jitter": 0, "job_attempts": 1, "job_delay": 1},
    )
    MeetingNotifier.meeting.reset()
    results: list[dict[str, Any]] = []

    def send(index: int) -> None:
        results.append(hub.send_notification("email", [{"email": f"m{index}@example.com"}], data={"subject": "s", "message": "m"}, tenant_id="t"))

    threads = [threading.Thread(target=send, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    assert [result["status"] for result in results] == ["succeeded", "succeeded"], results


def _run_again(hub: IntegrationManager, record_id: str) -> None:
    """Run a queued record now, as its scheduled retry would."""
    from hub.records import Record

    with hub.db.session() as session:
        session.get(Record, record_id).lease_until = None
    hub.run_record(record_id)


def test_an_outage_longer_than_the_job_attempts_waits_for_the_horizon_then_dead_letters_and_can_be_replayed(hub_factory: Any) -> None:
    horizon = 1.5
    hub = hub_factory(
        {"mail": {"type": "scripted-notify", "behaviour": "half"}},
        {"email": {"providers": ["mail"], "enabled": True, "high_priority_bypasses_rate_limit": False}},
        retry={"attempts": 1, "initial_delay": 0.01, "max_delay": 0.02, "jitter": 0, "job_attempts": 2, "job_delay": 0.05, "job_max_delay": 0.2, "horizon": horizon},
        circuit_breaker={"fail_max": 2, "reset_timeout": 0.3},
    )
    mail = hub.registry.slots["mail"].instance
    recipients = [{"email": f"r{n}@example.com"} for n in range(4)]
    accepted = hub.send_notification("email", recipients, data={"subject": "s", "message": "m"}, tenant_id="t", asynchronous=True)
    record_id = accepted["messageId"]
    hub.run_record(record_id)  # two sent, then the provider goes down for the other two
    mail.settings["behaviour"] = "transient"
    started = time.monotonic()
    for _ in range(4):  # twice job_attempts: under the old rules it was dead after the second
        _run_again(hub, record_id)
        record = hub.get_record(record_id, "t")
        assert record.status == "queued", "dead before the horizon"
    # The backoff doubles and is capped: 0.05, 0.1, 0.2, 0.2... (the schedule is the record's lease).
    assert 0.1 < (record.lease_until - record.updated_at).total_seconds() <= 0.25
    time.sleep(max(0.0, horizon - (time.monotonic() - started)))
    _run_again(hub, record_id)
    dead = hub.get_record(record_id, "t")
    assert dead.status == "dead" and "connection refused" in dead.error
    view = hub.notify.view(dead)
    assert (view["sent"], view["pending"]) == (2, 2)  # the unsent recipients are kept
    assert hub.breakers.state("mail") == "open"

    client = create_app(manager=hub).test_client()
    headers = {"Authorization": f"Bearer {hub.tokens.create('t', 'tests')[1]}", "X-Tenant-ID": "t"}
    other = {"Authorization": f"Bearer {hub.tokens.create('u', 'tests')[1]}", "X-Tenant-ID": "u"}
    assert client.post(f"{API}/deliveries/{record_id}/replay", headers=other).status_code == 404  # tenant-scoped
    mail.settings["behaviour"] = "ok"
    ScriptedNotifier.calls.clear()
    time.sleep(0.35)  # the breaker's reset timeout: the replay's first call is its half-open probe
    replayed = client.post(f"{API}/deliveries/{record_id}/replay", headers=headers)
    assert replayed.status_code == 202 and replayed.get_json()["data"]["status"] == "queued"
    hub.run_record(record_id)
    done = hub.get_record(record_id, "t")
    assert done.status == "succeeded" and hub.notify.view(done)["sent"] == 4
    assert [call[2] for call in ScriptedNotifier.calls] == [2]  # only the recipients without an outcome
    again = client.post(f"{API}/deliveries/{record_id}/replay", headers=headers)
    assert again.status_code == 409 and "dead" in again.get_json()["message"]


def test_a_bulk_send_larger_than_the_rate_limit_flows_at_the_limits_pace(hub_factory: Any) -> None:
    limit, window = 10, 2.0
    hub = hub_factory(
        {"mail": {"type": "scripted-notify"}},
        {"email": {"providers": ["mail"], "enabled": True, "high_priority_bypasses_rate_limit": False}},
        rate_limits={"storage": "memory://", "limits": {"email": f"{limit}/{window:g} seconds"}},
    )
    recipients = [{"email": f"r{n}@example.com"} for n in range(3 * limit)]
    accepted = hub.send_notification("email", recipients, data={"subject": "s", "message": "m"}, tenant_id="t")
    assert accepted["status"] == "queued"  # larger than the bulk threshold
    started = time.monotonic()
    hub.run_record(accepted["messageId"])
    record = hub.get_record(accepted["messageId"], "t")
    assert record.status == "succeeded" and hub.notify.view(record)["sent"] == 3 * limit
    calls = list(ScriptedNotifier.call_times)
    assert sum(count for _, count in calls) == 3 * limit and max(count for _, count in calls) <= limit
    for at, _ in calls:  # never more than the limit in any window (less a little for the time a call takes)
        assert sum(count for other, count in calls if at - (window - 0.1) < other <= at) <= limit
    assert time.monotonic() - started >= 2 * window - 0.2  # three windows' worth: it waited, twice


def test_a_running_job_keeps_its_short_lease_and_a_dead_workers_job_is_scheduled_for_its_lease_end(hub_factory: Any) -> None:
    hub = hub_factory(
        {"mail": {"type": "scripted-notify"}},
        {"email": {"providers": ["mail"], "enabled": True, "high_priority_bypasses_rate_limit": False}},
        queue={"backend": "memory", "workers": 0, "lease_seconds": 2},
    )
    accepted = hub.send_notification("email", [{"email": "a@example.com"}], data={"subject": "s", "message": "m"}, tenant_id="t", asynchronous=True)
    record_id = accepted["messageId"]
    hub.jobs.huey.flush()
    claimed = hub.runtime.ledger.claim(record_id)
    assert claimed is not None
    with hub.runtime.ledger.lease_kept(claimed):
        time.sleep(3)  # longer than the lease: renewed meanwhile
        assert hub.runtime.ledger.claim(record_id) is None, "another worker took over a live job"
        assert hub.get_record(record_id, "t").lease_until > claimed.lease_until
    # As if its worker had been killed: the sweep schedules it for the end of its lease, not a minute later.
    hub.runtime.ledger.recover_unfinished(older_than=0)
    scheduled = hub.jobs.huey.pending()  # huey queues a delayed task with its eta; the consumer holds it until then
    assert [task.args for task in scheduled] == [(record_id,)]
    lease_end = hub.get_record(record_id, "t").lease_until.replace(tzinfo=None)
    assert scheduled[0].eta is not None and 0 < (scheduled[0].eta - lease_end).total_seconds() <= 1


def test_one_keeper_thread_renews_every_held_lease_and_ends_when_none_is_held(hub_factory: Any) -> None:
    hub = hub_factory(
        {"mail": {"type": "scripted-notify"}},
        {"email": {"providers": ["mail"], "enabled": True, "high_priority_bypasses_rate_limit": False}},
        queue={"backend": "memory", "workers": 0, "lease_seconds": 2},
    )
    ids = [hub.send_notification("email", [{"email": f"{n}@example.com"}], data={"subject": "s", "message": "m"}, tenant_id="t", asynchronous=True)["messageId"] for n in range(3)]
    hub.jobs.huey.flush()
    ledger = hub.runtime.ledger
    claimed = [ledger.claim(record_id) for record_id in ids]
    keepers = lambda: [thread for thread in threading.enumerate() if thread.name == "hub-record-lease-keeper"]  # noqa: E731
    with ledger.lease_kept(claimed[0]), ledger.lease_kept(claimed[1]):
        time.sleep(0.5)
        with ledger.lease_kept(claimed[2]):  # joins the running keeper: its first renewal still comes in time
            time.sleep(2.4)  # longer than the 2 s lease
            assert len(keepers()) == 1
            assert all(ledger.claim(record_id) is None for record_id in ids), "a held lease lapsed"
    time.sleep(1.5)
    assert keepers() == []  # nothing held: the thread is gone, the next hold starts one


def test_a_providers_own_wait_is_honoured_exactly_and_capped() -> None:
    policy = RetryPolicy(attempts=3, initial_delay=2.0, max_delay=5.0, jitter=0.0, max_retry_after=0.3)
    calls: list[float] = []

    def throttled_twice() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ProviderThrottledError("bucket short", retry_after=0.05 if len(calls) == 1 else 30)
        return "ok"

    assert policy.call(throttled_twice) == "ok"
    first_wait, second_wait = calls[1] - calls[0], calls[2] - calls[1]
    assert 0.04 <= first_wait < 0.5  # not stretched to the 2 s backoff
    assert 0.28 <= second_wait < 1.0  # 30 s asked, max_retry_after 0.3 s


def test_throttled_calls_do_not_open_the_circuit_but_outages_do() -> None:
    breakers = Breakers(fail_max=2, reset_timeout=30)

    def throttled() -> None:
        raise ProviderThrottledError("429", retry_after=1)

    def down() -> None:
        raise TransientError("503")

    for _ in range(5):
        with pytest.raises(ProviderThrottledError):
            breakers.call("shop", throttled)
    assert breakers.state("shop") == "closed"
    for _ in range(2):
        with pytest.raises(TransientError):
            breakers.call("shop", down)
    assert breakers.state("shop") == "open"


class RedisLink:
    """A TCP relay to the real Redis that can be cut (connections reset, new ones refused) and restored on the
    same port: a Redis outage as the hub sees it, without stopping the machine's Redis."""

    def __init__(self, target: tuple[str, int]) -> None:
        import socket

        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.listener: Any = None
        self.links: list[Any] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def open(self) -> None:
        import socket

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: Any) -> None:
        import socket

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.links += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: Any, sink: Any) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.close()

    def cut(self) -> None:
        import socket

        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in the relay's thread
        self.listener.close()
        with self.lock:
            for link in self.links:
                try:
                    link.shutdown(socket.SHUT_RDWR)
                    link.close()
                except OSError:
                    pass
            self.links.clear()


def test_without_redis_each_process_limits_and_breaks_on_its_own_and_shares_again_when_it_returns(tmp_path: Path, redis_url: str) -> None:
    from urllib.parse import urlparse

    from hub.errors import RateLimitedError

    parsed = urlparse(redis_url)
    if parsed.scheme != "redis":
        pytest.skip("needs a Redis over TCP to cut the link to")
    link = RedisLink((parsed.hostname or "127.0.0.1", parsed.port or 6379))
    link.open()
    namespace = uuid.uuid4().hex[:8]
    providers = {"primary": {"type": "scripted-notify", "behaviour": "transient"}, "backup": {"type": "scripted-notify"}}
    services = {"email": {"providers": ["primary", "backup"], "enabled": True, "high_priority_bypasses_rate_limit": False}}
    hub = make_hub(tmp_path, providers, services, redis_url=link.url, rate_limits={"storage": link.url, "limits": {"email": "3/minute"}}, circuit_breaker={"fail_max": 2, "reset_timeout": 60})
    try:
        hub.breakers.namespace = namespace
        hub.rate_limits.storage.key_prefix = namespace  # type: ignore[attr-defined]
        hub.runtime.shared_state.RETRY_SECONDS = 0.3
        tenant = f"t-{namespace}"

        def send() -> dict[str, Any]:
            return hub.send_notification("email", [{"email": "a@example.com"}], data={"subject": "s", "message": "m"}, tenant_id=tenant)

        send()
        assert hub.runtime.shared_state.view() == {"shared": True, "status": "ok"}
        link.cut()
        # Redis is gone: no 500, the process counts on its own (3 a minute here too) and says so.
        for _ in range(3):
            assert send()["success"]
        with pytest.raises(RateLimitedError):
            send()
        view = hub.status("demo")["sharedState"]
        assert view["status"] == "degraded" and view["since"] and "Connection" in view["error"]
        assert hub.breakers.state("primary") == "open"  # opened locally by the failing primary
        link.open()
        time.sleep(0.35)
        # Back: Redis's window (one send before the cut) counts again, and the flag clears.
        send()
        assert hub.runtime.shared_state.view()["status"] == "ok"
        send()
        with pytest.raises(RateLimitedError):
            send()
    finally:
        hub.close()
        link.cut()
