"""Subscriptions: the long-running consumer workers of the publish service.

One supervisor thread per hub process (registered with the job registry, so it runs in ``hub serve`` with
job workers and in ``hub worker``) tries every second or so to take the lease of each subscription it does not
run yet. For each lease it wins it starts a :class:`SubscriptionWorker` thread, which

* pulls records with the provider's ``consume`` (the runtime keeps the threads: no provider calls back),
* hands each record to the subscription's handler -- a webhook POST or a Python callable -- in order,
* retries a failing record with exponential backoff, calling ``consume(max_records=0)`` meanwhile so the
  broker keeps the consumer in its group, and after ``max_attempts`` records it as a dead letter (and
  publishes it to ``dead_letter_topic`` if set) and moves on,
* ``commit``\\ s offsets only for records handled (or dead-lettered): after each batch, and before waiting to
  retry -- at-least-once delivery, with duplicates limited to the batch in flight when a process dies,
* stops as soon as its lease is no longer valid (lost, paused, expired locally), the subscription was removed,
  or the hub stops; it then ``unsubscribe``\\ s and releases the lease, so another process takes over.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hub.capabilities import ConsumedRecord, PartitionOffset, Subscription, utcnow
from hub.errors import ConfigurationError, PermanentError
from hub.http import HttpClient, describe_url
from hub.http.targets import TargetRefused
from hub.runtime import describe
from hub.runtime.leases import HeldLease

if TYPE_CHECKING:
    from hub.services.publish import PublishService

log = logging.getLogger("hub.subscriptions")

#: ``handler(record, subscription)``: returning means handled; raising means try again later.
Handler = Callable[[ConsumedRecord, Subscription], Any]

#: The longest wait a handler's ``retry_after`` (a receiver's ``Retry-After``) can put before a record's next try.
RETRY_AFTER_CAP = 600.0
#: Seconds each ``consume`` call may wait for records.
POLL_TIMEOUT = 1.0
#: How long a subscription whose provider refuses it (credentials, a missing topic) waits before trying again.
FAILING_PAUSE = 60.0


@dataclass
class SubscriptionSpec:
    """A subscription as the hub runs it: the provider's view (:class:`Subscription`) plus the hub's settings."""

    subscription: Subscription
    provider: str
    handler: Handler
    #: How the handler is shown (``webhook https://erp.example/…``, ``callable reserve-stock``).
    handler_label: str
    batch_size: int = 50
    max_attempts: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    dead_letter_topic: str | None = None
    lease_seconds: float = 10.0
    enabled: bool = True
    #: ``config`` (hub.yaml) or ``python`` (``IntegrationManager.subscribe``).
    source: str = "config"

    @property
    def name(self) -> str:
        return self.subscription.name

    def sees(self, record: ConsumedRecord) -> bool:
        """Whether the handler gets ``record``. Topics are shared by tenants, so a hub event of another tenant never
        reaches a tenant's subscription; a message that is no hub event (another producer's) reaches only
        subscriptions the operator defined (hub.yaml, Python), not those a tenant defined through the API."""
        event = record.event()
        if event is None:
            return self.source != "api"
        return event.tenant == self.subscription.tenant

    @property
    def lease_name(self) -> str:
        return lease_name(self.subscription.name)

    def backoff(self, attempt: int) -> float:
        """Seconds before try ``attempt + 1``: exponential, capped, with a little jitter."""
        delay = min(self.backoff_max, self.backoff_initial * (2 ** (attempt - 1)))
        return delay * random.uniform(0.9, 1.1)


def lease_name(subscription_name: str) -> str:
    return f"subscription:{subscription_name}"


class WebhookHandler:
    """POSTs each record as JSON to a URL; 2xx means handled. With ``secret``, signs the body:
    ``X-Hub-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body>``."""

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        secret: str | None = None,
        guard: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.secret = secret
        #: Checks the URL before each delivery (a tenant's URL: hub.http.targets); raises to refuse it.
        self.guard = guard
        # A 404 is a wrong URL to fix, not a record to give up on: retried like a 5xx. Other 4xx (400, 422):
        # the receiver refused this record for good, so it goes to the dead letters at once.
        self.client = HttpClient("subscription webhook", timeout=timeout, headers=headers, status_errors={404: ConfigurationError})

    @property
    def label(self) -> str:
        return f"webhook {describe_url(self.url)}"

    def __call__(self, record: ConsumedRecord, subscription: Subscription) -> None:
        if self.guard is not None:
            try:
                self.guard(self.url)
            except TargetRefused as error:  # retried like a wrong URL: an operator may allow the host
                raise ConfigurationError(f"webhook {describe_url(self.url)} refused: {error}") from None
        body = json.dumps(record.document(subscription), separators=(",", ":"), default=str).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Subscription": subscription.name,
            # Stable across redeliveries: the receiver can drop a duplicate by it.
            "X-Hub-Delivery": f"{record.topic}:{record.partition}:{record.offset}",
        }
        event = record.event()
        if event is not None:
            headers["X-Hub-Event-Id"] = event.id
        if self.secret:
            stamp = str(int(time.time()))
            digest = hmac.new(self.secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            headers["X-Hub-Signature"] = f"t={stamp},v1={digest}"
        self.client.post(self.url, data=body, headers=headers)

    def close(self) -> None:
        self.client.close()


class _StartOver(Exception):
    """A commit failed for good: drop what is in flight and consume again from the committed offsets."""


@dataclass
class _Stats:
    handled: int = 0
    dead_letters: int = 0
    started_at: str = field(default_factory=lambda: utcnow().isoformat())


class SubscriptionWorker:
    """Runs one subscription while this process holds its lease (see the module's description)."""

    def __init__(self, service: PublishService, spec: SubscriptionSpec, lease: HeldLease, stop: threading.Event) -> None:
        self.service = service
        self.spec = spec
        self.lease = lease
        self.stop = stop
        self.calls = service.runtime.calls
        self.tenant = spec.subscription.tenant
        self.stats = _Stats()
        self.report("starting")

    def active(self) -> bool:
        return (
            not self.stop.is_set()
            and self.lease.valid()
            and self.service.specs.get(self.spec.name) is self.spec
            and self.service.runtime.state == "running"  # POST /shutdown closed the providers
        )

    def report(self, status: str, error: str | None = None) -> None:
        """Shown in ``GET /events/subscriptions`` (written with the next lease renewal)."""
        self.lease.note = {
            "status": status,
            "error": error,
            "handled": self.stats.handled,
            "deadLetters": self.stats.dead_letters,
            "since": self.stats.started_at,
            "at": utcnow().isoformat(),
        }

    def run(self) -> None:
        log.info("subscription %s: consuming %s for %s", self.spec.name, ",".join(self.spec.subscription.topics), self.lease.name)
        try:
            self._loop()
        except Exception as error:  # never let the thread die silently
            log.exception("subscription %s stopped on an unexpected error", self.spec.name)
            self.report("failed", describe(error))
        finally:
            self._unsubscribe()
            if self.lease.note and self.lease.note.get("status") not in ("failed",):
                self.report("stopped")
            self.service.leases.release(self.lease)
            log.info("subscription %s: stopped in this process", self.spec.name)

    def _loop(self) -> None:
        failures = 0
        while self.active():
            try:
                records = self._consume(self.spec.batch_size, POLL_TIMEOUT)
            except (ConfigurationError, PermanentError) as error:
                self.report("failing", describe(error))
                log.error("subscription %s cannot consume: %s", self.spec.name, describe(error))
                self._unsubscribe()
                self._sleep(FAILING_PAUSE)
                continue
            except Exception as error:
                failures += 1
                self.report("retrying", describe(error))
                log.warning("subscription %s: consume failed (%d): %s", self.spec.name, failures, describe(error))
                self._sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))
                continue
            if failures:
                failures = 0
                self.report("running")
            if not records:
                continue
            try:
                self._handle(records)
            except _StartOver as error:
                self.report("retrying", str(error))
                log.warning("subscription %s: %s; consuming again from the committed offsets", self.spec.name, error)
                self._unsubscribe()

    def _handle(self, records: list[ConsumedRecord]) -> None:
        done: dict[tuple[str, int], PartitionOffset] = {}
        for record in records:
            if not self.active() or not self._deliver(record, done):
                break  # the rest of the batch is delivered again by whoever consumes next
            done[(record.topic, record.partition)] = record.next_offset
        self._commit(done)
        self.report("running")

    def _deliver(self, record: ConsumedRecord, done: dict[tuple[str, int], PartitionOffset]) -> bool:
        """Hand ``record`` to the handler until it succeeds or becomes a dead letter (True), or the worker
        has to stop while waiting to try again (False: not handled)."""
        if not self.spec.sees(record):
            return True  # another tenant's event on a shared topic: never this tenant's handler's
        attempt = 0
        while True:
            attempt += 1
            try:
                self.spec.handler(record, self.spec.subscription)
            except Exception as error:  # the handler is the user's code: anything it raises is a failure
                reason = describe(error)
                if isinstance(error, PermanentError) or attempt >= self.spec.max_attempts:
                    self.service.record_dead_letter(self.spec, record, reason, attempt)
                    self.stats.dead_letters += 1
                    return True
                position = f"{record.topic}[{record.partition}]@{record.offset}"
                self.report("retrying", f"{position}, attempt {attempt} of {self.spec.max_attempts}: {reason}")
                log.warning("subscription %s: handler failed on %s (attempt %d): %s", self.spec.name, position, attempt, reason)
                self._commit(done)  # what was handled before this record stays handled if the process dies now
                delay = self.spec.backoff(attempt)
                retry_after = getattr(error, "retry_after", None)  # a receiver's Retry-After, through hub.http
                if isinstance(retry_after, int | float) and retry_after > delay:
                    delay = min(float(retry_after), RETRY_AFTER_CAP)
                if not self._wait_keeping_alive(delay):
                    return False
                continue
            self.stats.handled += 1
            return True

    def _commit(self, done: dict[tuple[str, int], PartitionOffset]) -> None:
        if not done:
            return
        if not self.lease.valid():
            return  # another process may own the group now: its position wins; ours is redelivered
        last: BaseException | None = None
        for attempt in range(3):
            try:
                self.calls.commit(self.tenant, self.spec.subscription, list(done.values()), provider=self.spec.provider)
            except Exception as error:
                last = error
                log.warning("subscription %s: commit failed: %s", self.spec.name, describe(error))
                if not self._sleep(0.2 * 2**attempt):
                    break
                continue
            done.clear()
            return
        raise _StartOver(f"commit failed: {describe(last) if last else 'stopped'}")

    def _consume(self, max_records: int, timeout: float) -> list[ConsumedRecord]:
        records = self.calls.consume(self.tenant, self.spec.subscription, max_records, timeout, provider=self.spec.provider)
        return list(records or [])

    def _wait_keeping_alive(self, seconds: float) -> bool:
        """Wait ``seconds`` before retrying a record, sending the broker a keep-alive each second; False when
        the worker must stop instead."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if not self._sleep(min(1.0, remaining)):
                return False
            try:
                self._consume(0, 0)
            except Exception as error:  # a keep-alive that fails changes nothing: the retry comes anyway
                log.debug("subscription %s: keep-alive failed: %s", self.spec.name, describe(error))
        return self.active()

    def _sleep(self, seconds: float) -> bool:
        """Sleep, waking when the hub stops or the lease is lost; returns whether the worker may go on."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0 and self.active():
            if self.stop.wait(min(remaining, 0.25)):
                break
        return self.active()

    def _unsubscribe(self) -> None:
        try:
            self.calls.unsubscribe(self.tenant, self.spec.subscription, provider=self.spec.provider)
        except Exception as error:
            log.warning("subscription %s: unsubscribe failed: %s", self.spec.name, describe(error))


class SubscriptionRunner:
    """The supervisor: takes the leases of the subscriptions this process does not run yet, one worker each."""

    def __init__(self, service: PublishService) -> None:
        self.service = service
        self.threads: dict[str, threading.Thread] = {}

    def poll_interval(self) -> float:
        ttls = [spec.lease_seconds for spec in self.service.specs.values()] or [10.0]
        return max(0.2, min(2.0, min(ttls) / 4))

    def run(self, stop: threading.Event) -> None:
        log.info("subscription supervisor started (%d subscription(s))", len(self.service.specs))
        try:
            while not stop.is_set():
                try:
                    self.tick(stop)
                except Exception:  # the database away for a moment: try again next round
                    log.exception("subscription supervisor round failed")
                stop.wait(self.poll_interval())
        finally:
            for thread in list(self.threads.values()):
                thread.join(timeout=4)
            self.threads.clear()
            self.service.leases.close()

    def tick(self, stop: threading.Event) -> None:
        for name, thread in list(self.threads.items()):
            if not thread.is_alive():
                del self.threads[name]
        if self.service.runtime.state != "running":
            return
        self.service.sync_stored_subscriptions()
        for name, spec in list(self.service.specs.items()):
            if name in self.threads or not spec.enabled or stop.is_set():
                continue
            lease = self.service.leases.acquire(spec.lease_name, spec.lease_seconds)
            if lease is None:
                continue
            worker = SubscriptionWorker(self.service, spec, lease, stop)
            thread = threading.Thread(target=worker.run, name=f"hub-subscription-{name}", daemon=True)
            self.threads[name] = thread
            thread.start()
