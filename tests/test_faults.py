"""Faults the hub survives, each against the real thing and counted: lost (must be 0) and duplicated.

* Bulkheads: a slow SMTP relay (each message answered after seconds) flooded with jobs does not starve a
  fast one sharing the worker threads; a slow payment gateway's busy bulkhead sends an API payment to the next
  gateway, or answers 503 ``provider_busy`` with ``Retry-After``.
* PostgreSQL restarted under load (a private cluster, never the machine's shared one): 503 while it is down,
  recovery without a restart of the hub, every accepted notification delivered.
* Disk full on local storage (a 2 MB tmpfs): 507 naming the cause, no partial file, earlier files intact,
  uploads work again once space is freed; the SQLite database on a full disk answers 503, not 500.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub import IntegrationManager
from hub.testing.faults import SlowSmtpServer, wait_for
from hub.testing.servers import SmtpServer
from tests.conftest import base_config

hub_smtp = pytest.importorskip("hub_smtp", reason="the hub-smtp plugin (pip install ./plugins/hub-smtp)")

SLOW_SECONDS = 1.5
JOB_THREADS = 4


def _smtp_provider(server: SmtpServer) -> dict[str, Any]:
    return {"type": "smtp", "host": "127.0.0.1", "port": server.port, "security": "none", "from_address": "hub@example.com", "timeout": 10, "env": False}


def _message_ids(server: SmtpServer) -> Counter[str]:
    return Counter(str(received.message["Message-ID"]) for received in list(server.messages))


@pytest.fixture
def relays() -> Iterator[tuple[SmtpServer, SmtpServer]]:
    slow = SlowSmtpServer(delay=SLOW_SECONDS, starttls=False, require_auth=False).start()
    fast = SmtpServer(starttls=False, require_auth=False).start()
    yield slow, fast
    slow.stop()
    fast.stop()


def _two_relay_hub(tmp_path: Path, slow: SmtpServer, fast: SmtpServer, bulkhead: dict[str, Any]) -> IntegrationManager:
    config = base_config(
        tmp_path / "var",
        providers={"slow": _smtp_provider(slow), "fast": _smtp_provider(fast)},
        tenants={"slowco": {"services": {"email": {"providers": ["slow"]}}}, "fastco": {"services": {"email": {"providers": ["fast"]}}}},
        bulkhead=bulkhead,
        rate_limits={"storage": "memory://", "limits": {"email": "100000/minute"}},
    )
    return IntegrationManager(config, environ={}, plugins=[(hub_smtp, "smtp")], entry_points=False)


def _flood(hub: IntegrationManager, slow_jobs: int, fast_jobs: int) -> tuple[list[str], dict[str, float]]:
    """Queue ``slow_jobs`` one-recipient emails for the slow relay, then ``fast_jobs`` for the fast one (the
    slow ones first in the queue: the worst order). Returns the slow ids, and each fast id's accept time."""
    slow_ids = [
        hub.send_notification("email", [{"email": f"s{n}@example.com"}], data={"subject": "slow", "message": "m"}, tenant_id="slowco", asynchronous=True)["messageId"]
        for n in range(slow_jobs)
    ]
    fast_sent: dict[str, float] = {}
    for n in range(fast_jobs):
        accepted = hub.send_notification("email", [{"email": f"f{n}@example.com"}], data={"subject": "fast", "message": "m"}, tenant_id="fastco", asynchronous=True)
        fast_sent[accepted["messageId"]] = time.monotonic()
    return slow_ids, fast_sent


def _delivered_at(server: SmtpServer, ids: dict[str, float], seen: dict[str, float]) -> bool:
    for received in list(server.messages):
        record_id = str(received.message["Message-ID"]).strip("<>").split("-email.")[0]
        if record_id in ids and record_id not in seen:
            seen[record_id] = time.monotonic()
    return len(seen) == len(ids)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bulkhead", ["default", "off"])
def test_a_slow_relay_flooded_with_jobs_does_not_starve_a_fast_one(tmp_path: Path, relays: tuple[SmtpServer, SmtpServer], bulkhead: str) -> None:
    """4 job threads; 8 jobs to a relay that takes 1.5 s per message queued before 6 to a fast one. With the
    default bulkhead (job threads less one: 3 for the slow relay) the fast ones go out within a second; with
    it off (the control) all 4 threads sit on the slow relay and the fast ones wait for the whole backlog."""
    slow, fast = relays
    hub = _two_relay_hub(tmp_path, slow, fast, {} if bulkhead == "default" else {"background": 0})
    slow_jobs, fast_jobs = 8, 6
    try:
        slow_ids, fast_sent = _flood(hub, slow_jobs, fast_jobs)
        hub.start_workers(JOB_THREADS)
        seen: dict[str, float] = {}
        wait_for(lambda: _delivered_at(fast, fast_sent, seen), 30, "the fast relay's messages")
        fast_latency = max(seen[record_id] - fast_sent[record_id] for record_id in fast_sent)
        wait_for(lambda: slow.count >= slow_jobs, 30, "the slow relay's messages")
        for record_id in [*slow_ids, *fast_sent]:
            wait_for(lambda record_id=record_id: hub.get_record(record_id, "slowco" if record_id in slow_ids else "fastco").status == "succeeded", 10, f"{record_id} settled")
        slow_records = [hub.get_record(record_id, "slowco") for record_id in slow_ids]
        received = _message_ids(slow) + _message_ids(fast)
        expected = {f"<{record_id}-email.0@example.com>" for record_id in [*slow_ids, *fast_sent]}
        lost = len(expected - set(received))
        duplicated = sum(count - 1 for count in received.values() if count > 1)
        view = hub.runtime.jobs.bulkheads.view()["providers"].get("slow", {}).get("background", {})
        report = (
            f"bulkhead {bulkhead}: fast relay's {fast_jobs} messages all out {fast_latency:.2f} s after they were queued"
            f" (slow relay {SLOW_SECONDS} s per message, {slow_jobs} queued first); lost {lost}, duplicated {duplicated};"
            f" slow jobs turned away by the bulkhead {view.get('refused', 0)}, attempts counted {sorted(r.attempts for r in slow_records)}"
        )
        print(report)
        assert lost == 0 and duplicated == 0 and set(received) == expected, report
        if bulkhead == "default":
            assert view["limit"] == JOB_THREADS - 1 and view["refused"] > 0, report
            assert fast_latency < 1.0, report
            # A job turned away by a busy bulkhead gives its attempt back: each slow job counted one attempt.
            assert all(record.attempts == 1 for record in slow_records), report
        else:
            assert fast_latency >= SLOW_SECONDS, report  # the control: every thread held by the slow relay
    finally:
        hub.close()


@pytest.mark.timeout(60)
def test_a_busy_gateway_sends_an_api_payment_to_the_next_one_or_answers_503_provider_busy(tmp_path: Path) -> None:
    """Stripe (its bulkhead: one request at a time) holds one payment for 2 s. Meanwhile a payment of a tenant
    with PayPal next goes to PayPal at once, and one of a tenant with Stripe alone gets 503 ``provider_busy``
    with ``Retry-After`` after the short wait; once Stripe is free it takes payments again. Nothing charged twice."""
    hub_stripe = pytest.importorskip("hub_stripe", reason="the hub-stripe plugin (pip install ./plugins/hub-stripe)")
    hub_paypal = pytest.importorskip("hub_paypal", reason="the hub-paypal plugin (pip install ./plugins/hub-paypal)")
    from hub_paypal.testing import paypal_contract_server
    from hub_stripe.testing import DEFAULT_API_KEY, stripe_contract_server

    from hub.testing.rest import RestHub, rest_hub

    payments = "/api/integrations/payments"
    body = {"amount": "42.00", "currency": "EUR", "paymentMethod": "pm_card_visa"}
    with stripe_contract_server() as (stripe_server, stripe_fake), paypal_contract_server() as paypal:
        api = rest_hub(
            tmp_path,
            plugins=[(hub_stripe, "stripe"), (hub_paypal, "paypal")],
            providers={"stripe": {"type": "stripe", "api_key": DEFAULT_API_KEY, "api_base": stripe_server.url, "timeout": 5}, "paypal": {"type": "paypal", **paypal.gateway_settings()}},
            services={"payment": {"providers": ["stripe", "paypal"]}},
            tenants={"solo": {"services": {"payment": {"providers": ["stripe"]}}}},
            bulkhead={"max_wait": 0.2, "retry_after": 2, "providers": {"stripe": {"requests": 1}}},
        )
        solo = RestHub(api.hub, "solo")
        try:
            stripe_server.delay_answers("PostPaymentIntents", 2.0, times=1)
            held: list[Any] = []
            holder = threading.Thread(target=lambda: held.append(api.post(payments, json={**body, "orderId": "HELD"})))
            holder.start()
            wait_for(lambda: stripe_fake.intents(), 5, "the held payment reaches Stripe")

            started = time.monotonic()
            moved = api.post(payments, json={**body, "orderId": "MOVED"})
            moved_after = time.monotonic() - started
            assert moved.status_code == 201, moved.get_json()
            assert moved.get_json()["data"]["gateway"] == "paypal"
            record = api.hub.runtime.ledger.get(moved.get_json()["data"]["paymentId"], "demo")
            assert [(a["provider"], a["outcome"]) for a in record.attempt_log][0] == ("stripe", "skipped"), record.attempt_log

            started = time.monotonic()
            busy = solo.post(payments, json={**body, "orderId": "BUSY"}, headers={"Idempotency-Key": "busy-once"})
            busy_after = time.monotonic() - started
            answer = busy.get_json()
            assert busy.status_code == 503 and answer["code"] == "provider_busy", answer
            assert busy.headers["Retry-After"] == "2" and "busy" in answer["message"], answer
            status = api.get("/api/integrations/status").get_json()["data"]["bulkheads"]["providers"]["stripe"]["requests"]
            assert status["limit"] == 1 and status["inUse"] == 1 and status["refused"] >= 2, status

            holder.join(timeout=10)
            assert held[0].status_code == 201 and held[0].get_json()["data"]["gateway"] == "stripe", held[0].get_json()
            # The same key again: its payment failed (nothing charged), so a clear 422 says to use a new key (not a
            # 409 "still being processed" forever, nor a second record under one key); a new key then pays.
            same = solo.post(payments, json={**body, "orderId": "BUSY"}, headers={"Idempotency-Key": "busy-once"})
            assert same.status_code == 422 and "use a new key" in same.get_json()["message"], same.get_json()
            again = solo.post(payments, json={**body, "orderId": "AGAIN"}, headers={"Idempotency-Key": "busy-twice"})
            assert again.status_code == 201 and again.get_json()["data"]["gateway"] == "stripe", again.get_json()
            orders = sorted(intent["metadata"].get("order_id", "") or intent.get("description", "") for intent in stripe_fake.intents())
            print(
                f"busy gateway: failover to PayPal in {moved_after:.2f} s, 503 provider_busy in {busy_after:.2f} s;"
                f" Stripe intents {len(stripe_fake.intents())}, PayPal orders {len(paypal.orders())}"
            )
            assert moved_after < 1.0 and 0.2 <= busy_after < 1.0
            assert len(stripe_fake.intents()) == 2 and len(paypal.orders()) == 1, orders  # nothing charged twice
        finally:
            api.close()


# --- PostgreSQL restarted under load ----------------------------------------------------------------


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[Any]:
    """A PostgreSQL cluster of the test's own, on a free port (restarting the machine's shared one would
    break every other test and helper using it); initdb once per session."""
    from hub.testing.faults import PrivatePostgres

    reason = PrivatePostgres.available()
    if reason:
        pytest.skip(reason)
    cluster = PrivatePostgres()
    try:
        cluster.init().start()
    except Exception as error:  # initdb or pg_ctl refused here: say why
        cluster.close()
        pytest.skip(f"cannot start a private PostgreSQL cluster: {error}")
    yield cluster
    cluster.close()


DOWN_SECONDS = 1.5


@pytest.mark.timeout(150)
def test_postgresql_restarted_under_load_answers_503_and_delivers_every_accepted_notification_once(tmp_path: Path, private_postgres: Any) -> None:
    """A hub on its own socket (request threads) with 2 job threads on a private PostgreSQL, and a stream of
    notifications (queued and sent in the request) from 2 clients to a local SMTP relay; ``pg_ctl restart -m
    fast`` mid-stream. While the database is down the API answers 503 (never 500); it recovers by itself; every
    accepted notification reaches the relay, counted by Message-ID: lost 0, duplicated at most the sends in
    flight when the connections were cut (sent, their outcome not yet written: sent again with the same
    Message-ID, which a receiver drops)."""
    import requests

    from hub.api import create_app
    from hub.testing.faults import ServedApp

    relay = SmtpServer(starttls=False, require_auth=False).start()
    config = base_config(
        tmp_path / "var",
        providers={"mail": _smtp_provider(relay)},
        services={"email": {"providers": ["mail"]}},
        database_url=private_postgres.create_database("hub_faults"),
        queue={"backend": "sqlite", "workers": 0, "lease_seconds": 3, "batch_size": 10},
        rate_limits={"storage": "memory://", "limits": {"email": "100000/minute"}},
        retry={"attempts": 2, "initial_delay": 0.05, "max_delay": 0.2, "jitter": 0.01, "job_attempts": 50, "job_delay": 0.2, "job_max_delay": 1.0},
    )
    hub = IntegrationManager(config, environ={}, plugins=[(hub_smtp, "smtp")], entry_points=False)
    token = hub.tokens.create("demo", "tests")[1]
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "demo"}
    accepted: list[str] = []
    answers: Counter[int] = Counter()
    refused_ids: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(name: str) -> None:
        session = requests.Session()
        number = 0
        while not stop.is_set():
            number += 1
            body = {"type": "email", "recipients": [{"email": f"{name}{number}@example.com"}], "data": {"subject": "s", "message": "m"}, "async": number % 2 == 0}
            try:
                response = session.post(f"{served.url}/api/integrations/notifications", json=body, headers=headers, timeout=10)
            except requests.RequestException:
                with lock:
                    answers[0] += 1  # no answer at all: counted, must stay 0
                continue
            with lock:
                answers[response.status_code] += 1
                if response.status_code in (200, 201, 202):
                    accepted.append(response.json()["data"]["messageId"])
                elif response.status_code == 503 and (response.json().get("data") or {}).get("messageId"):
                    refused_ids.append(response.json()["data"]["messageId"])
            time.sleep(0.01)

    served = ServedApp(create_app(manager=hub)).start()
    hub.start_workers(2)
    clients = [threading.Thread(target=client, args=(name,)) for name in ("a", "b")]
    try:
        for thread in clients:
            thread.start()
        wait_for(lambda: len(accepted) >= 40, 20, "40 notifications accepted before the restart")
        before = len(accepted)
        restart_started = time.monotonic()
        private_postgres.restart(down_for=DOWN_SECONDS)
        restart_seconds = time.monotonic() - restart_started
        after_restart = len(accepted)
        wait_for(lambda: len(accepted) >= after_restart + 40, 20, "40 more accepted after the restart (recovered by itself)")
        stop.set()
        for thread in clients:
            thread.join(timeout=15)

        def unsettled() -> list[tuple[str, str, int, Any]]:
            records = [hub.get_record(record_id, "demo") for record_id in accepted]
            return [(r.id, r.status, r.attempts, r.lease_until) for r in records if r.status != "succeeded"]

        try:
            # Mostly within seconds (a job cut off by the outage is queued again after one lease); seen once in a
            # full suite run: a record left for the minute's recovery sweep, hence the wait past one sweep.
            wait_for(lambda: not unsettled(), 75, "every accepted notification delivered", every=0.5)
        except AssertionError as error:
            raise AssertionError(f"{error}; unsettled (id, status, attempts, lease): {unsettled()[:10]}") from None
        received = _message_ids(relay)
        expected = {f"<{record_id}-email.0@example.com>" for record_id in accepted}
        lost = len(expected - set(received))
        duplicated = sum(count - 1 for count in received.values() if count > 1)
        unexpected = set(received) - expected
        records = [hub.get_record(record_id, "demo") for record_id in accepted]
        retried = sum(1 for record in records if record.attempts > 1)
        repeated = [message_id for message_id, count in received.items() if count > 1]
        report = (
            f"retried jobs {retried}, repeated {repeated}; "
            f"PostgreSQL restart ({restart_seconds:.1f} s): accepted {len(accepted)} ({before} before, {len(accepted) - after_restart} after),"
            f" answers {dict(sorted(answers.items()))}, delivered {len(expected & set(received))}, lost {lost}, duplicated {duplicated},"
            f" delivered without being accepted {len(unexpected)}"
        )
        print(report)
        assert answers[500] == 0 and answers[0] == 0 and answers[503] > 0, report
        assert lost == 0, report
        # At most the sends in flight when the connections were cut (2 job threads, 2 clients): sent, their
        # outcome not written. The same bound for an inline send whose answer was 503 (sent, not recorded).
        assert duplicated <= 4 and len(unexpected) <= 2, report
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=15)
        served.stop()
        hub.close()
        relay.stop()


# --- disk full ----------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Any]:
    """A 2 MB tmpfs at ``<tmp>/var/files``: the local-disk provider's root (``files`` in the data dir)."""
    from hub.testing.faults import Tmpfs

    disk = Tmpfs(tmp_path / "var" / "files", size="2m")
    reason = disk.mount()
    if reason:
        pytest.skip(reason)
    yield disk
    disk.unmount()


def _partial_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and path.name.startswith(".tmp-")]


@pytest.mark.timeout(60)
def test_local_storage_on_a_full_disk_answers_a_clear_error_keeps_earlier_files_and_recovers(tmp_path: Path, small_disk: Any) -> None:
    """Uploads of 300 KB to local-disk on a 2 MB tmpfs until one is refused: the refusal names the full disk
    (not a 500), no partial file is left, every file stored before reads back intact; after one is deleted,
    uploads work again. Counted: lost 0, partial 0."""
    import hashlib

    from hub.api import create_app

    config = base_config(tmp_path / "var", storage_limits={"max_file_size": 1024 * 1024})
    hub = IntegrationManager(config, environ={}, entry_points=False)
    client = create_app(manager=hub).test_client()
    headers = {"Authorization": f"Bearer {hub.tokens.create('demo', 'tests')[1]}", "X-Tenant-ID": "demo"}
    files = "/api/integrations/files"

    def upload(number: int) -> Any:
        body = hashlib.sha256(str(number).encode()).digest() * (300 * 1024 // 32)
        response = client.post(files, data=body, headers={**headers, "Content-Type": "application/octet-stream", "X-File-Name": f"f{number}.bin"})
        return response, hashlib.sha256(body).hexdigest()

    try:
        stored: dict[str, str] = {}
        refused = None
        for number in range(20):
            response, digest = upload(number)
            if response.status_code != 201:
                refused = response
                break
            stored[response.get_json()["data"]["fileId"]] = digest
        assert refused is not None, "a 2 MB disk took 20 files of 300 KB"
        answer = refused.get_json()
        partial = _partial_files(small_disk.path)
        lost = 0
        for file_id, digest in stored.items():
            content = client.get(f"{files}/{file_id}/content", headers=headers)
            lost += content.status_code != 200 or hashlib.sha256(content.data).hexdigest() != digest
        report = f"disk full: stored {len(stored)} files of 300 KB, then {refused.status_code} {answer.get('message')!r}; lost {lost}, partial files {len(partial)}"
        print(report)
        assert refused.status_code in (503, 507) and ("space" in answer["message"] or "full" in answer["message"]), report
        assert lost == 0 and partial == [], report

        deleted = client.delete(f"{files}/{next(iter(stored))}", headers=headers)
        assert deleted.status_code in (200, 204), deleted.get_json()
        again, _ = upload(99)
        assert again.status_code == 201, again.get_json()
        assert _partial_files(small_disk.path) == []
    finally:
        hub.close()


@pytest.mark.timeout(60)
def test_the_sqlite_database_on_a_full_disk_answers_503_not_500_and_recovers(tmp_path: Path) -> None:
    """The whole data dir (SQLite database, queue, outbox) on a 2 MB tmpfs, filled up: sends are refused with
    503 naming the full disk, never a 500; once the filler is removed they are accepted again."""
    from hub.api import create_app
    from hub.testing.faults import Tmpfs

    disk = Tmpfs(tmp_path / "var", size="2m")
    reason = disk.mount()
    if reason:
        pytest.skip(reason)
    hub = None
    try:
        hub = IntegrationManager(base_config(tmp_path / "var"), environ={}, entry_points=False)
        client = create_app(manager=hub).test_client()
        headers = {"Authorization": f"Bearer {hub.tokens.create('demo', 'tests')[1]}", "X-Tenant-ID": "demo"}
        body = {"type": "email", "recipients": [{"email": "a@example.com"}], "data": {"subject": "s", "message": "m" * 2000}}
        assert client.post("/api/integrations/notifications", json=body, headers=headers).status_code == 200
        filler = disk.path / "filler"
        with filler.open("wb") as handle:  # every free block
            try:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
            except OSError:
                pass
        answers: Counter[int] = Counter()
        refusal = None
        for _ in range(30):
            response = client.post("/api/integrations/notifications", json=body, headers=headers)
            answers[response.status_code] += 1
            if response.status_code >= 500:
                refusal = response.get_json()
                break
        filler.unlink()
        recovered = client.post("/api/integrations/notifications", json=body, headers=headers)
        report = f"SQLite on a full disk: answers {dict(answers)}, refusal {refusal and refusal['message']!r}, after freeing {recovered.status_code}"
        print(report)
        assert answers[500] == 0 and refusal is not None, report
        assert refusal["code"] == "database_unavailable" and "disk is full" in refusal["message"], report
        assert recovered.status_code == 200, recovered.get_json()
    finally:
        if hub is not None:
            hub.close()
        disk.unmount()


def test_bulkhead_settings_are_validated_with_the_key_named(tmp_path: Path) -> None:
    from hub.errors import ConfigError

    with pytest.raises(ConfigError) as negative:
        base_config(tmp_path, bulkhead={"background": -1})
    assert negative.value.path == "bulkhead.background"
    with pytest.raises(ConfigError) as unknown:
        base_config(tmp_path, bulkhead={"providers": {"nowhere": {"requests": 2}}})
    assert unknown.value.path == "bulkhead.providers.nowhere"
    with pytest.raises(ConfigError) as typo:
        base_config(tmp_path, bulkhead={"providers": {"outbox": {"request": 2}}})
    assert typo.value.path.startswith("bulkhead.providers.outbox")
    config = base_config(tmp_path, bulkhead={"providers": {"outbox": {"requests": 2}}})
    assert config["bulkhead"] == {"background": None, "requests": None, "max_wait": 0.5, "retry_after": 1.0, "providers": {"outbox": {"background": None, "requests": 2}}}
