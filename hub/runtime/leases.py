"""Leases: named, time-limited locks in the hub's database, so a long-running worker (a subscription's
consumer) runs in exactly one hub process at a time, and another takes over soon after that one dies.

A lease is a row of ``hub_leases``: the holder's id, an expiry time and a fencing token. Acquiring it is one
conditional ``UPDATE`` (free, released or expired rows only) or an ``INSERT`` for a new name, so two
processes racing for it cannot both win, on SQLite or PostgreSQL. A keeper thread of the
:class:`LeaseManager` renews every lease the process holds at a third of its time-to-live; when the process
dies the renewals stop and the lease expires within ``ttl`` seconds.

The holder never trusts the row alone: :meth:`HeldLease.valid` is false once the local deadline (the start
of the last successful renewal plus ``ttl``) has passed, which is never later than the moment other
processes see the lease as expired (the hosts' clocks must agree, as NTP makes them do, to well under
``ttl``). A worker checks it before each unit of work and before each commit, and stops when it is false.

Pausing a lease (:meth:`LeaseManager.pause`) makes it unavailable to everyone: its holder's next renewal
fails, the holder stops, and nobody acquires it until it is resumed.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from hub.records import Database, Lease, utcnow

log = logging.getLogger("hub.leases")

#: How often the keeper renews, as a fraction of a lease's time-to-live.
RENEW_FRACTION = 1 / 3


@dataclass
class HeldLease:
    """A lease this process holds. ``lost`` is set when a renewal failed or the lease was released."""

    name: str
    token: int
    ttl: float
    #: ``time.monotonic()`` until which this process may act as the holder.
    deadline: float
    renewed: float
    lost: threading.Event = field(default_factory=threading.Event)
    #: What the worker wants others to see (``GET /events/subscriptions``); written with each renewal.
    note: dict[str, Any] | None = None

    def valid(self) -> bool:
        return not self.lost.is_set() and time.monotonic() < self.deadline

    def wait_lost(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early when the lease is lost; returns whether it still holds."""
        self.lost.wait(max(0.0, min(seconds, self.deadline - time.monotonic())))
        return self.valid()


class LeaseManager:
    """Acquires, renews (in a keeper thread) and releases leases for one hub process.

    :param db: the hub's database.
    :param owner: the holder id written to the rows; unique per manager by default
        (``<host>:<pid>:<random>``), so two hubs in one process do not share leases either.
    """

    def __init__(self, db: Database, owner: str | None = None) -> None:
        self.db = db
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._held: dict[str, HeldLease] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._keeper: threading.Thread | None = None

    # --- acquiring and releasing ------------------------------------------------------------------

    def acquire(self, name: str, ttl: float) -> HeldLease | None:
        """Take the lease ``name`` for ``ttl`` seconds if it is free, released or expired, and not paused;
        ``None`` when another process holds it (or it is paused). The keeper renews it from then on."""
        if ttl <= 0:
            raise ValueError("a lease's ttl must be positive")
        started = time.monotonic()
        now = utcnow()
        expires = now + timedelta(seconds=ttl)
        try:
            token = self._take(name, now, expires)
        except OperationalError as error:  # the database is busy or away: try again on the next poll
            log.warning("could not acquire lease %s: %s", name, error)
            return None
        if token is None:
            return None
        lease = HeldLease(name, token, ttl, deadline=started + ttl, renewed=started)
        with self._lock:
            self._held[name] = lease
            self._start_keeper()
        self._wake.set()
        log.info("lease %s acquired by %s (token %d)", name, self.owner, token)
        return lease

    def _take(self, name: str, now: datetime, expires: datetime) -> int | None:
        with self.db.session() as session:
            taken = session.execute(
                update(Lease)
                .where(Lease.name == name, Lease.paused.is_(False))
                .where(or_(Lease.owner.is_(None), Lease.expires_at < now))
                .values(owner=self.owner, token=Lease.token + 1, expires_at=expires, acquired_at=now, renewed_at=now)
            ).rowcount
            if taken:
                # Same transaction: the row is ours until it commits, so this is the token we set.
                return session.scalar(select(Lease.token).where(Lease.name == name))
            if session.get(Lease, name) is not None:
                return None  # held by someone else, or paused
        try:
            with self.db.session() as session:
                session.add(Lease(name=name, owner=self.owner, token=1, expires_at=expires, acquired_at=now, renewed_at=now))
        except IntegrityError:
            return None  # another process created it first
        return 1

    def renew(self, lease: HeldLease) -> bool:
        """Extend ``lease`` by its ttl; False (and ``lease.lost`` set) when it was taken over, paused or
        released. A database error leaves the lease valid until its local deadline, then lost."""
        started = time.monotonic()
        now = utcnow()
        try:
            with self.db.session() as session:
                renewed = session.execute(
                    update(Lease)
                    .where(Lease.name == lease.name, Lease.owner == self.owner, Lease.token == lease.token)
                    .where(Lease.paused.is_(False))
                    .values(expires_at=now + timedelta(seconds=lease.ttl), renewed_at=now, note=lease.note)
                ).rowcount
        except OperationalError as error:
            log.warning("could not renew lease %s: %s", lease.name, error)
            if time.monotonic() >= lease.deadline:
                self._lose(lease, "its renewals failed until it expired")
            return lease.valid()
        if not renewed:
            self._lose(lease, "it was taken over or paused")
            return False
        lease.deadline, lease.renewed = started + lease.ttl, started
        return lease.valid()

    def release(self, lease: HeldLease) -> None:
        """Give ``lease`` up at once: the worker using it stopped (gracefully, or because the lease was lost
        or paused), so another process need not wait for it to expire."""
        with self._lock:
            if self._held.get(lease.name) is lease:
                del self._held[lease.name]
        lease.lost.set()
        # Also after losing it to a pause: the row still names us until we say we stopped. The token
        # makes this a no-op when another process took the lease over meanwhile.
        try:
            with self.db.session() as session:
                session.execute(
                    update(Lease)
                    .where(Lease.name == lease.name, Lease.owner == self.owner, Lease.token == lease.token)
                    .values(owner=None, expires_at=utcnow(), note=lease.note)
                )
        except OperationalError as error:  # it will expire on its own
            log.warning("could not release lease %s: %s", lease.name, error)
        log.info("lease %s released by %s", lease.name, self.owner)

    def _lose(self, lease: HeldLease, why: str) -> None:
        with self._lock:
            if self._held.get(lease.name) is lease:
                del self._held[lease.name]
        if not lease.lost.is_set():
            log.warning("lease %s lost by %s: %s", lease.name, self.owner, why)
        lease.lost.set()

    # --- pausing ----------------------------------------------------------------------------------

    def pause(self, name: str, paused: bool = True) -> None:
        """Pause (or resume) the lease ``name``: while paused nobody acquires it and its holder loses it
        at the next renewal (within a third of its ttl)."""
        with self.db.session() as session:
            row = session.get(Lease, name)
            if row is None:
                session.add(Lease(name=name, owner=None, token=0, expires_at=utcnow(), paused=paused))
            else:
                row.paused = paused
        with self._lock:
            held = self._held.get(name)
        if held is not None and paused:
            self.renew(held)  # our own worker stops now rather than at the next round of the keeper

    def state(self, name: str) -> dict[str, Any]:
        """The lease's row as a dict: ``held`` (someone holds it now), ``owner``, ``expiresAt``, ``paused``."""
        with self.db.session() as session:
            row = session.get(Lease, name)
            return _lease_view(row, utcnow(), name)

    def states(self, prefix: str = "") -> list[dict[str, Any]]:
        with self.db.session() as session:
            rows = session.scalars(select(Lease).where(Lease.name.startswith(prefix, autoescape=True)).order_by(Lease.name))
            now = utcnow()
            return [_lease_view(row, now, row.name) for row in rows]

    # --- the keeper -------------------------------------------------------------------------------

    def _start_keeper(self) -> None:
        if self._keeper is None or not self._keeper.is_alive():
            self._stopping = False
            self._keeper = threading.Thread(target=self._keep, name="hub-lease-keeper", daemon=True)
            self._keeper.start()

    def _keep(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                held = list(self._held.values())
            now = time.monotonic()
            next_due = now + 1.0
            for lease in held:
                due = lease.renewed + lease.ttl * RENEW_FRACTION
                if now >= due:
                    self.renew(lease)
                    due = lease.renewed + lease.ttl * RENEW_FRACTION
                next_due = min(next_due, due)
            self._wake.wait(max(0.01, next_due - time.monotonic()))
            self._wake.clear()

    def close(self) -> None:
        """Stop renewing and release every lease held (workers must have stopped using them)."""
        with self._lock:
            self._stopping = True
            held = list(self._held.values())
        self._wake.set()
        for lease in held:
            self.release(lease)
        if self._keeper is not None:
            self._keeper.join(timeout=5)
            self._keeper = None


def _lease_view(row: Lease | None, now: datetime, name: str) -> dict[str, Any]:
    if row is None:
        return {"name": name, "held": False, "owner": None, "expiresAt": None, "paused": False, "token": 0, "note": None}
    held = row.owner is not None and row.expires_at >= now
    return {
        "name": row.name,
        "held": held,
        "owner": row.owner if held else None,
        "expiresAt": row.expires_at.isoformat() if held else None,
        "paused": row.paused,
        "token": row.token,
        "note": row.note,
    }
