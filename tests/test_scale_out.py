"""Scale-out on PostgreSQL + Redis: 2 ``hub serve`` processes (``--job-workers 0``) and 2 ``hub worker`` processes
share one database, one huey queue on Redis and one email rate limit in Redis. 2,000 emails (bulk notifications
and single ones, a share sent twice at once with the same ``Idempotency-Key``, once to each API process) go to a
local SMTP server; one worker is SIGKILLed while it holds claimed records and restarted. Counted at the server by
``Message-ID`` and recipient: accepted, delivered, lost (0), duplicated (only messages named in flight at the kill),
and the delivered rate across both workers against the limit."""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from hub import IntegrationManager
from hub.config import validate_config
from hub.records import Record
from hub.testing.processes import ApiServer, NoEmptyRedisDatabase, Worker, empty_redis_database, stop_all, wait_until
from hub.testing.servers import SmtpServer, free_port

TENANT = "scale"
#: Emails per second, for the tenant, across every process (a moving window in Redis).
LIMIT = 100
BULK, BULK_SIZE = 10, 120  # 1,200 emails in bulk notifications (above queue.bulk_threshold: queued, 202)
SINGLES = 800  # + 800 one-recipient notifications (async: true, 202) = 2,000 emails
REPEATED_BULK, REPEATED_SINGLES = 4, 300  # sent to both API processes at once with one Idempotency-Key
THREADS_PER_WORKER = 2
BATCH_SIZE = 10  # recipients per provider call: small, so a call's burst is small beside a second's LIMIT
LEASE_SECONDS = 3
KILL_AFTER = 900  # emails received before the kill


@pytest.fixture
def scale_database() -> Iterator[str]:
    """A database of its own in the machine's PostgreSQL, dropped afterwards (a clear skip without a server)."""
    import psycopg

    base = os.environ.get("HUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        admin = psycopg.connect(base, connect_timeout=2, autocommit=True)
    except psycopg.OperationalError as error:
        pytest.skip(f"no PostgreSQL server at {base}: {error}")
    name = f"hub_scale_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def scale_redis() -> Iterator[str]:
    """An empty database number of the machine's Redis (a clear skip without a server); afterwards only the
    keys this hub wrote there (huey's queue, the limiter's windows, the breakers) are deleted."""
    import redis

    base = os.environ.get("HUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0]
    try:
        redis.Redis.from_url(f"{base}/0", socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError as error:
        pytest.skip(f"no Redis server at {base}: {error}")
    try:
        with empty_redis_database(base) as url:
            yield url
    except NoEmptyRedisDatabase as error:
        pytest.skip(str(error))


class Sender:
    """The load generator: POST /notifications over keep-alive sessions (one per thread and API process)."""

    def __init__(self, urls: list[str], token: str) -> None:
        self.urls = urls
        self.headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": TENANT}
        self.local = threading.local()
        self.lock = threading.Lock()
        #: Responses by status code, and accepted record ids by the notification's number.
        self.statuses: Counter[int] = Counter()
        self.accepted: dict[str, str] = {}
        self.mismatched: list[str] = []

    def _session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        return self.local.session  # type: ignore[no-any-return]

    def post(self, url: str, body: dict[str, Any], key: str | None) -> str:
        """The record id of an accepted notification; a 409 (the same key's first request still running in the
        other process) is asked again until that one has answered."""
        headers = {**self.headers, **({"Idempotency-Key": key} if key else {})}
        for _ in range(200):
            response = self._session().post(f"{url}/notifications", json=body, headers=headers, timeout=30)
            with self.lock:
                self.statuses[response.status_code] += 1
            if response.status_code in (200, 202):
                return str(response.json()["data"]["messageId"])
            if response.status_code != 409:
                raise AssertionError(f"{response.status_code}: {response.text[:500]}")
            time.sleep(0.02)
        raise AssertionError(f"still 409 for {key}")

    def send(self, name: str, body: dict[str, Any], repeated: bool) -> None:
        if not repeated:
            record_id = self.post(random.choice(self.urls), body, None)
        else:
            # Both API processes at once: each thread waits at the barrier, then posts to its own process.
            key, barrier, ids = f"key-{name}", threading.Barrier(2), [""]

            def other() -> None:
                barrier.wait()
                ids[0] = self.post(self.urls[1], body, key)

            thread = threading.Thread(target=other)
            thread.start()
            barrier.wait()
            record_id = self.post(self.urls[0], body, key)
            thread.join()
            if ids[0] != record_id:
                with self.lock:
                    self.mismatched.append(f"{name}: {record_id} and {ids[0]}")
        with self.lock:
            self.accepted[name] = record_id


def _notifications() -> list[tuple[str, dict[str, Any], bool]]:
    """(name, body, sent twice with one key) for every notification, bulk and single interleaved."""
    text = {"subject": "Scale", "message": "Hello"}
    bulk = [
        (f"b{b}", {"type": "email", "recipients": [{"email": f"b{b}.{i}@example.com"} for i in range(BULK_SIZE)], "data": text}, b < REPEATED_BULK)
        for b in range(BULK)
    ]
    singles = [(f"s{s}", {"type": "email", "recipients": [{"email": f"s{s}@example.com"}], "data": text, "async": True}, s < REPEATED_SINGLES) for s in range(SINGLES)]
    random.Random(12).shuffle(singles)
    step = len(singles) // len(bulk)
    mixed: list[tuple[str, dict[str, Any], bool]] = []
    for index, notification in enumerate(bulk):
        mixed += [notification, *singles[index * step : (index + 1) * step]]
    return mixed + singles[len(bulk) * step :]


def _steady_rate(times: list[float], accepted_at: float) -> tuple[float, float]:
    """Emails per second over the steady part of the run: whole seconds from 1 s after the last notification was
    accepted (till then the API processes and the load generator take most of the 2 cores, and the workers
    deliver below the limit) to 2 s before the last email (the tail, fewer records left than threads). Whole
    seconds, as a moving window admits at most LIMIT in any second."""
    times = sorted(times)
    start = accepted_at + 1
    seconds = int(times[-1] - 2 - start)
    inside = sum(1 for moment in times if start <= moment < start + seconds)
    return inside / seconds, float(seconds)


def _peak(times: list[float]) -> int:
    """The most emails received in any one second (a window starting at each email)."""
    times, most, end = sorted(times), 0, 0
    for first, moment in enumerate(times):
        while end < len(times) and times[end] < moment + 1:
            end += 1
        most = max(most, end - first)
    return most


@pytest.mark.timeout(150)
def test_two_apis_and_two_workers_on_postgresql_and_redis_lose_nothing_and_share_the_rate_limit(
    tmp_path: Path, scale_database: str, scale_redis: str
) -> None:
    smtp_port = free_port()
    smtp = SmtpServer(port=smtp_port, starttls=False, require_auth=False).start()
    config_path = tmp_path / "hub.yaml"
    raw = {
        "data_dir": str(tmp_path / "var"),
        "database_url": scale_database,
        "redis_url": scale_redis,
        "server": {"graceful_timeout": 5},
        "providers": {"mail": {"type": "smtp", "host": "127.0.0.1", "port": smtp_port, "security": "none", "from_address": "hub@example.com", "timeout": 5}},
        "services": {"email": {"providers": ["mail"], "enabled": True}},
        "queue": {"backend": "redis", "workers": 0, "batch_size": BATCH_SIZE, "lease_seconds": LEASE_SECONDS},
        "retry": {"attempts": 2, "initial_delay": 0.05, "max_delay": 0.2, "jitter": 0.01, "job_attempts": 5, "job_delay": 0.3, "job_max_delay": 1.0},
        "circuit_breaker": {"fail_max": 5, "reset_timeout": 1.0},
        "rate_limits": {"storage": scale_redis, "limits": {"email": f"{LIMIT}/second"}},
    }
    config_path.write_text(json.dumps(raw))  # JSON is YAML
    # The schema is created here, once, before four processes start on the new database.
    hub = IntegrationManager(validate_config(json.loads(config_path.read_text()), {}), environ={})
    token = hub.tokens.create(TENANT, "scale-out test")[1]
    processes: list[ApiServer | Worker] = []
    try:
        with ThreadPoolExecutor(4) as pool:  # start-up is mostly imports: in parallel
            starting = [pool.submit(ApiServer, config_path, tmp_path / f"api{n}.log", free_port()) for n in range(2)]
            starting += [pool.submit(Worker, config_path, tmp_path / f"worker{n}.log", THREADS_PER_WORKER) for n in range(2)]
            apis, workers = [f.result() for f in starting[:2]], [f.result() for f in starting[2:]]
        processes += [*apis, *workers]
        sender = Sender([api.url for api in apis], token)
        notifications = _notifications()
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            for future in [pool.submit(sender.send, *notification) for notification in notifications]:
                future.result()
        submitted, submitted_at = time.monotonic() - started, time.time()
        # The kill comes once everything is accepted, in the steady part (the workers delivering at the limit).
        log = tmp_path / "worker0.log"
        wait_until(lambda: smtp.count >= KILL_AFTER, 60, f"{KILL_AFTER} emails", log)

        def running() -> list[Record]:
            with hub.runtime.db.session() as session:
                return list(session.scalars(select(Record).where(Record.status == "running")))

        # Each worker thread holds at most one record: more running than one worker's threads means both
        # workers hold claimed work, the one killed included.
        wait_until(lambda: len(running()) > THREADS_PER_WORKER, 10, "both workers holding records", log, every=0.005)
        workers[0].kill()
        killed_at_count = smtp.count
        # What the dead worker's write-ahead names stays on its records (no process writes them any more);
        # the live worker's records are read too, so this is a superset of what the kill can repeat.
        in_flight = {
            f"<{record.id}-email.{index}@example.com>"
            for record in running()
            for index in ((record.result or {}).get("inFlight") or {}).get("indexes", [])
        }
        processes.append(Worker(config_path, tmp_path / "worker2.log", THREADS_PER_WORKER))
        expected_ids = {
            f"<{record_id}-email.{index}@example.com>"
            for name, body, _repeated in notifications
            for record_id in [sender.accepted[name]]
            for index in range(len(body["recipients"]))
        }
        expected_recipients = Counter(recipient["email"] for _name, body, _repeated in notifications for recipient in body["recipients"])
        wait_until(lambda: smtp.count >= len(expected_ids), 60, "every email delivered", tmp_path / "worker2.log", every=0.1)
        time.sleep(1.0)  # a late repeat would arrive now
        delivered_in = time.monotonic() - started

        received = list(smtp.messages)
        by_id = Counter(str(message.message["Message-ID"]) for message in received)
        by_recipient = Counter(address for message in received for address in message.rcpt_tos)
        lost = len(expected_ids - set(by_id))
        duplicated = sum(count - 1 for count in by_id.values() if count > 1)
        repeated_ids = {message_id for message_id, count in by_id.items() if count > 1}
        recipients_lost = sum(1 for address in expected_recipients if address not in by_recipient)
        recipients_duplicated = sum(count - 1 for count in by_recipient.values() if count > 1)
        rate, seconds = _steady_rate([message.received_at for message in received], submitted_at)
        peak = _peak([message.received_at for message in received])
        statuses = {record.status for record in (hub.get_record(record_id, TENANT) for record_id in set(sender.accepted.values()))}
        report = (
            f"scale-out: notifications {len(notifications)} (records {len(set(sender.accepted.values()))}), responses {dict(sender.statuses)},"
            f" emails accepted {len(expected_ids)}, delivered {len(set(by_id) & expected_ids)}, received {len(received)},"
            f" lost {lost} (recipients {recipients_lost}), duplicated {duplicated} (recipients {recipients_duplicated}),"
            f" in flight at the kill {len(in_flight)} (emails received by then {killed_at_count}), unexpected {len(set(by_id) - expected_ids)},"
            f" rate {rate:.1f}/s over {seconds:.0f} s (limit {LIMIT}/s), most in any 1 s {peak}, submitted in {submitted:.1f} s, delivered in {delivered_in:.1f} s,"
            f" record statuses {sorted(statuses)}, idempotency mismatches {sender.mismatched[:3]}"
        )
        print(report)
        assert len(expected_ids) == BULK * BULK_SIZE + SINGLES == sum(expected_recipients.values()), report
        assert not sender.mismatched, report  # one key, one record, whichever process answered
        assert lost == 0 and recipients_lost == 0 and set(by_id) <= expected_ids, report
        # Duplicates: SMTP cannot rule out a message whose DATA the server accepted while the sender died before
        # it read the "250" (or before it checkpointed that call): the resumed run sends it again, with the same
        # Message-ID. Only those may repeat: the ones the dead worker's write-ahead named in flight.
        assert repeated_ids <= in_flight and duplicated <= len(in_flight), report
        assert recipients_duplicated == duplicated, report
        assert statuses == {"succeeded"}, report
        # The limit holds across both workers (one moving window in Redis): the steady rate within 2 % of it at most.
        # Below it is no breach: on 2 shared cores the workers may not keep up (the rate is in the report).
        assert rate <= LIMIT * 1.02, report
        # In any one second at the server: at most the limit, plus the calls whose tokens were taken just before
        # that second but whose emails arrive in it (one call of BATCH_SIZE per worker thread). Limits counted per
        # process would let through up to twice the limit.
        assert peak <= LIMIT + 2 * THREADS_PER_WORKER * BATCH_SIZE, report
    finally:
        stop_all(processes, timeout=10)
        smtp.stop()
        hub.close()
