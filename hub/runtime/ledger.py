"""Records and idempotency: every accepted unit of work is a :class:`~hub.records.Record` before the API
answers, and this is the one place that opens, claims, saves, replays and lists them."""

from __future__ import annotations

import contextvars
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError

from hub.bulkheads import busy_outcome
from hub.capabilities import parse_timestamp
from hub.errors import Conflict, NotFound, ValidationError
from hub.observability import Metrics, request_id_var
from hub.records import Database, Record, new_id, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from hub.runtime.jobs import JobRegistry
    from hub.runtime.pipeline import AuditTrail

log = logging.getLogger("hub.ledger")

#: Rows to write in the same transaction as the next new record (the API's idempotency claim): one
#: transaction instead of two, and a concurrent request with the same key loses on the record's own key.
_ride_along: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("hub_ride_along", default=None)


#: Writes that wait for the request's last transaction (see :meth:`RecordLedger.write`).
_deferred: contextvars.ContextVar[list[Callable[[Session], None]] | None] = contextvars.ContextVar(
    "hub_deferred_writes", default=None
)


@contextmanager
def request_scope() -> Iterator[list[Callable[[Session], None]]]:
    """Inside this block (an API request), :meth:`RecordLedger.write` defers its writes; the API runs them
    in the request's last transaction, before the response leaves (:func:`run_deferred`)."""
    token = _deferred.set([])
    try:
        yield _deferred.get()  # type: ignore[misc]
    finally:
        _deferred.reset(token)


def take_deferred() -> list[Callable[[Session], None]]:
    """The writes deferred so far (removed: the caller runs each with a session, and may run them again
    in a new transaction if the first failed)."""
    pending = _deferred.get()
    if not pending:
        return []
    work = list(pending)
    pending.clear()
    return work


@contextmanager
def riding_along(rows: list[Any]) -> Iterator[list[Any]]:
    """Inside this block, :meth:`RecordLedger.new` also inserts ``rows`` (and empties the list once written)."""
    token = _ride_along.set(rows)
    try:
        yield rows
    finally:
        _ride_along.reset(token)


ID_PREFIX = {
    "notification": "ntf",
    "payment": "pay",
    "refund": "ref",
    "file": "fil",
    "event": "evt",
    "event_batch": "evb",
    "sync": "syn",
    "inventory_push": "psh",
}
FINISHED = ("succeeded", "partial", "failed", "dead", "canceled")


class LeaseKeeper:
    """Renews the leases of the records this process's jobs hold, from one thread that runs while any is held.

    Each record is renewed a third of its lease after it was taken and every third from then on, until it is
    released or a renewal finds it is no longer this claim's (settled, or taken over after a stall)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        #: record id -> (the claim's attempt: its fencing token, lease seconds, when the next renewal is due)
        self._held: dict[str, tuple[int, float, float]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, record_id: str, attempt: int, lease_seconds: float) -> None:
        with self._lock:
            self._held[record_id] = (attempt, lease_seconds, time.monotonic() + lease_seconds / 3)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hub-record-lease-keeper", daemon=True)
                self._thread.start()
            else:
                self._wake.set()  # its next wake-up may be later than this record's first renewal

    def release(self, record_id: str) -> None:
        with self._lock:
            self._held.pop(record_id, None)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._held:
                    self._thread = None  # hold() starts a new one; decided under the lock, so none is missed
                    return
                now = time.monotonic()
                due = [(record_id, attempt, lease) for record_id, (attempt, lease, at) in self._held.items() if at <= now]
            for record_id, attempt, lease in due:
                try:
                    kept = self.db.renew_lease(record_id, lease, attempt)
                except Exception:  # a database hiccup: the next renewal may work
                    log.warning("could not renew the lease of %s", record_id, exc_info=True)
                    kept = True
                with self._lock:
                    if record_id in self._held and self._held[record_id][0] == attempt:
                        if kept:
                            self._held[record_id] = (attempt, lease, time.monotonic() + lease / 3)
                        else:
                            self._held.pop(record_id)  # nothing of ours to keep
            self._wake.clear()  # before reading the due times: a hold() from now on wakes the wait below
            with self._lock:
                wait = min((at for _attempt, _lease, at in self._held.values()), default=time.monotonic()) - time.monotonic()
            self._wake.wait(max(0.0, min(wait, 1.0)))


class RecordLedger:
    def __init__(
        self, db: Database, config: dict[str, Any], metrics: Metrics, audit: AuditTrail, jobs: JobRegistry
    ) -> None:
        self.db = db
        self.config = config
        self.metrics = metrics
        self.audit = audit
        self.jobs = jobs
        jobs.lease_keeper = self.lease_kept
        self._keeper = LeaseKeeper(db)

        self._insert = Record.__table__.insert()
        self._updates: dict[tuple[str, ...], Any] = {}
        # (attribute, column) pairs of the records table, for Core inserts and updates
        self._columns = [(attribute.key, attribute.columns[0].name) for attribute in Record.__mapper__.column_attrs]

    @property
    def lease_seconds(self) -> int:
        return self.config["queue"]["lease_seconds"]

    def new(
        self,
        kind: str,
        tenant: str,
        service: str,
        payload: dict[str, Any],
        idempotency_key: str | None,
        status: str,
        *,
        record_id: str | None = None,
    ) -> Record | None:
        """Insert a record; ``None`` if the idempotency key already has one (the caller fetches it)."""
        now = utcnow()
        record = Record(
            id=record_id or new_id(ID_PREFIX.get(kind, kind[:3])),
            tenant=tenant,
            kind=kind,
            service=service,
            status=status,
            payload=payload,
            idempotency_key=idempotency_key,
            request_id=request_id_var.get(),
            attempts=1 if status == "running" else 0,
            attempt_log=[],
            created_at=now,
            updated_at=now,
            lease_until=now + timedelta(seconds=self.lease_seconds) if status == "running" else None,
        )
        extra = _ride_along.get()
        try:
            with self.db.session() as session:
                # Core, not the ORM's unit of work: this is on every request's path.
                session.execute(self._insert, [{column: getattr(record, key) for key, column in self._columns}])
                if extra:
                    session.add_all(extra)
        except IntegrityError:
            if idempotency_key and self.existing(tenant, kind, idempotency_key) is None:
                # The key was claimed by a concurrent request for something else.
                raise Conflict("A request with this Idempotency-Key is still being processed") from None
            return None
        if extra:
            extra.clear()
        return record

    def queue_in(
        self,
        session: Session,
        kind: str,
        tenant: str,
        service: str,
        payload: dict[str, Any],
        idempotency_key: str | None = None,
        *,
        record_id: str | None = None,
    ) -> str:
        """Add a queued record inside the caller's transaction, so it exists exactly when the change that
        asked for it does. Hand the id to ``jobs.enqueue`` after the commit; if the process dies first, the
        recovery sweep queues it. The caller checks ``idempotency_key`` is new when it can repeat."""
        now = utcnow()
        record_id = record_id or new_id(ID_PREFIX.get(kind, kind[:3]))
        session.add(
            Record(
                id=record_id, tenant=tenant, kind=kind, service=service, status="queued", payload=payload,
                idempotency_key=idempotency_key, request_id=request_id_var.get(), attempts=0, attempt_log=[],
                created_at=now, updated_at=now,
            )
        )
        return record_id

    def begin(
        self,
        kind: str,
        tenant: str,
        service: str,
        payload: dict[str, Any],
        idempotency_key: str | None,
        view: Callable[[Record], Any],
        *,
        before: Callable[[], None] | None = None,
    ) -> tuple[Record | None, Any]:
        """Open a running record for a synchronous call, or return the earlier answer for the same
        idempotency key (``(None, view)``). ``before`` (the rate limit) runs only for new work."""
        existing = self.existing(tenant, kind, idempotency_key, claiming=True)
        if existing is None:
            if before is not None:
                before()
            record = self.new(kind, tenant, service, payload, idempotency_key, "running")
            if record is not None:
                return record, None
            # A record with this key exists after all: a concurrent request won, or an earlier request that failed
            # (its answer was a 5xx, so the API kept no answer for the key): replayed or refused by its outcome.
            existing = self.existing(tenant, kind, idempotency_key)
        return None, self.replay(existing, view)

    def existing(self, tenant: str, kind: str, idempotency_key: str | None, *, claiming: bool = False) -> Record | None:
        """The record made earlier under ``idempotency_key``. ``claiming=True`` (the first look of a new request):
        none while the API claims the key with the new record, whose insert fails if one exists."""
        if not idempotency_key:
            return None
        if claiming and _ride_along.get():
            # The API found the key unused a moment ago and claims it with the new record: a record made
            # meanwhile makes that insert fail, and new() then answers None (the caller replays it).
            return None
        with self.db.session() as session:
            return session.scalar(
                select(Record).where(
                    Record.tenant == tenant, Record.kind == kind, Record.idempotency_key == idempotency_key
                )
            )

    def replay(self, record: Record | None, view: Callable[[Record], Any]) -> Any:
        assert record is not None
        if record.status == "failed":
            raise ValidationError(
                {"idempotencyKey": [f"the request with this key failed: {record.error}"]},
                "This idempotency key's request failed; use a new key to try again",
            )
        return view(record)

    def apply(self, session: Session, record_id: str, changes: dict[str, Any]) -> Record:
        """Apply ``changes`` to a record inside the caller's transaction (with the buffered audit rows)."""
        record = session.get(Record, record_id)
        assert record is not None
        for name, value in changes.items():
            setattr(record, name, value)
        record.updated_at = utcnow()
        if changes.get("status") in FINISHED:
            record.finished_at = utcnow()
            record.lease_until = None
            self.metrics.jobs.labels(record.kind, record.status).inc()
        self.audit.drain(session)
        return record

    def write(self, work: Callable[[Session], None]) -> None:
        """Run ``work(session)`` in a transaction now or, inside an API request, in the request's last
        transaction (with its audit rows and idempotent answer: one commit instead of three)."""
        pending = _deferred.get()
        if pending is not None:
            pending.append(work)
            return
        with self.db.session() as session:
            work(session)
            self.audit.drain(session)

    def finish(self, record: Record, changes: dict[str, Any], work: Callable[[Session], None] | None = None) -> Record:
        """Settle ``record`` with ``changes`` (and ``work``, written with it) through :meth:`write`; the
        in-memory ``record`` shows the changes at once, for the caller's view."""
        for name, value in changes.items():
            setattr(record, name, value)
        record.updated_at = utcnow()
        if changes.get("status") in FINISHED:
            record.finished_at = record.updated_at
            record.lease_until = None

        values = {key: getattr(record, key) for key in (*changes, "updated_at", "finished_at", "lease_until")}
        if record.status in FINISHED:
            self.metrics.jobs.labels(record.kind, record.status).inc()

        statement = self._update_statement(tuple(values))
        values["_record_id"] = record.id

        def settle(session: Session) -> None:
            if work is not None:
                work(session)
            session.execute(statement, values)

        self.write(settle)
        return record

    def _update_statement(self, keys: tuple[str, ...]) -> Any:
        """An UPDATE of these attributes by record id, built once per set of attributes (building and
        caching a statement per call costs more than running it)."""
        statement = self._updates.get(keys)
        if statement is None:
            table = Record.__table__
            statement = (
                table.update()
                .where(table.c.id == bindparam("_record_id"))
                .values({Record.__mapper__.attrs[key].columns[0].name: bindparam(key) for key in keys})
            )
            self._updates[keys] = statement
        return statement

    def fail(self, record_id: str, error: BaseException, **changes: Any) -> Record:
        """Settle a record as ``failed`` by ``error``: its safe one-line description, and the provider tries
        the pipeline attached to it."""
        from hub.runtime.pipeline import describe

        changes.setdefault("attempt_log", getattr(error, "attempts", []))
        return self.save(record_id, status="failed", error=describe(error), **changes)

    def save(self, record_id: str, **changes: Any) -> Record:
        with self.db.session() as session:
            return self.apply(session, record_id, changes)

    def get(self, record_id: str, tenant: str, kind: str | None = None) -> Record:
        with self.db.session() as session:
            record = session.get(Record, record_id)
        if record is None or record.tenant != tenant or (kind is not None and record.kind != kind):
            raise NotFound(f"No {kind or 'record'} with id {record_id}")
        return record

    def list(
        self,
        tenant: str,
        kind: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
        *,
        provider: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        payload_equals: dict[str, str] | None = None,
    ) -> list[Record]:
        """A page of the tenant's records, newest first; every filter given must match (``payload_equals``: a
        payload key's value, e.g. a payment's ``order_id``; ``created_to`` is exclusive)."""
        with self.db.session() as session:
            query = select(Record).where(Record.tenant == tenant)
            if kind:
                query = query.where(Record.kind == kind)
            if status:
                query = query.where(Record.status == status)
            if provider:
                query = query.where(Record.provider == provider)
            if created_from:
                query = query.where(Record.created_at >= created_from)
            if created_to:
                query = query.where(Record.created_at < created_to)
            for key, value in (payload_equals or {}).items():
                query = query.where(Record.payload[key].as_string() == value)
            return list(session.scalars(query.order_by(Record.created_at.desc()).limit(limit).offset(offset)))

    def extend_lease(self, session: Session, record_id: str) -> None:
        session.execute(
            update(Record)
            .where(Record.id == record_id)
            .values(updated_at=utcnow(), lease_until=utcnow() + timedelta(seconds=self.lease_seconds))
        )

    def claim(self, record_id: str) -> Record | None:
        return self.db.claim(record_id, self.lease_seconds)

    @contextmanager
    def lease_kept(self, record: Record) -> Iterator[None]:
        """Renew ``record``'s lease every third of ``lease_seconds`` while the block runs (a rate-limit wait or a
        slow provider keeps it alive), so a short lease is safe and a crashed worker's work is taken over soon.
        One keeper thread per process renews every held record (not a thread started and joined per job)."""
        self._keeper.hold(record.id, record.attempts, self.lease_seconds)
        try:
            yield
        finally:
            self._keeper.release(record.id)

    def requeue_or_dead(self, record: Record, error: str) -> None:
        """Try the record again later, with exponential backoff capped at ``retry.job_max_delay``, or mark it
        ``dead`` once it had ``retry.job_attempts`` attempts and has waited ``retry.horizon`` seconds (counted
        from ``result.retryingSince`` when the service keeps it, else from the record's creation)."""
        busy = busy_outcome()
        if busy is not None:
            # Every provider was busy (their bulkheads full): not a failure. Back in the queue for a moment,
            # the claim's attempt given back, so a flood of jobs to a slow provider never reaches "dead".
            delay = (busy.retry_after or 1.0) * random.uniform(1.0, 1.5)  # spread: not all back at once
            with self.db.session() as session:
                session.execute(
                    update(Record)
                    .where(Record.id == record.id)
                    .values(status="queued", error=error, attempts=Record.attempts - 1, lease_until=utcnow() + timedelta(seconds=delay), updated_at=utcnow())
                )
            self.jobs.enqueue(record.id, delay=delay)
            return
        retry = self.config["retry"]
        with self.db.session() as session:
            current = session.get(Record, record.id)
            assert current is not None
            attempts, result, created_at = current.attempts, current.result, current.created_at
        waiting_since = (
            parse_timestamp((result or {}).get("retryingSince") if isinstance(result, dict) else None) or created_at
        )
        left = retry["horizon"] - (utcnow() - waiting_since).total_seconds()
        if attempts >= retry["job_attempts"] and left <= 0:
            self.save(record.id, status="dead", error=error)
            log.error("job %s is dead after %d attempts: %s", record.id, attempts, error)
            return
        delay = min(retry["job_delay"] * (2 ** min(attempts - 1, 30)), retry["job_max_delay"])
        if attempts >= retry["job_attempts"]:
            delay = min(delay, max(left, 0.0))  # the last try lands at the horizon, not a whole backoff after it
        self.save(record.id, status="queued", error=error, lease_until=utcnow() + timedelta(seconds=delay))
        self.jobs.enqueue(record.id, delay=delay)

    def replay_dead(self, record_id: str, tenant: str) -> Record:
        """Queue a ``dead`` record again (its work not yet done: a notification's recipients without an
        outcome), with a fresh horizon; a record in any other state is a :class:`Conflict`."""
        with self.db.session() as session:
            record = session.get(Record, record_id)
            if record is None or record.tenant != tenant:
                raise NotFound(f"No record with id {record_id}")
            if record.status != "dead":
                raise Conflict(f"Only a dead record can be replayed; {record_id} is {record.status}")
            result = dict(record.result) if isinstance(record.result, dict) else {}
            result["retryingSince"] = utcnow().isoformat()
            result["replays"] = int(result.get("replays", 0)) + 1
            self.apply(
                session,
                record_id,
                {"status": "queued", "attempts": 0, "lease_until": None, "finished_at": None, "result": result},
            )
        self.audit.add(
            tenant=tenant, capability="api", operation="replay", outcome="queued", latency_ms=0.0, record_id=record_id
        )
        self.jobs.enqueue(record_id)
        return self.get(record_id, tenant)

    def recover_unfinished(self, older_than: float = 60) -> int:
        """Re-queue accepted-but-unfinished records (a crashed worker's); returns how many. Running records
        whose lease ends before the next sweep are scheduled for that moment: if their worker is alive it
        renews the lease and the claim is refused; if it died, the work resumes seconds after the lease ran out."""
        ids = self.db.unfinished(older_than)
        for record_id in ids:
            self.jobs.enqueue(record_id)
        ending = self.db.leases_ending(within_seconds=max(older_than, 60))
        for record_id, seconds_left in ending:
            self.jobs.enqueue(record_id, delay=seconds_left + 0.5)
        if ids or ending:
            log.info("re-queued %d unfinished job(s), %d more when their lease ends", len(ids), len(ending))
        return len(ids)

