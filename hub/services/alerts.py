"""Operations alerts (seed "Monitoring -- Alerts"): one notification when an incident opens and one when it is
over, never one per failed call.

Every minute a worker looks at what the hub already keeps -- circuit breaker states, the audit trail of provider
calls and refused requests, dead records and dead letters, the inventory sources' last complete syncs -- and turns
each condition into an incident keyed by what and where (``circuit:stripe``). Opening an incident inserts its row
(a unique open key), resolving it updates that row: only the process that wins the write sends the alert, so
several hub processes alert once. Alerts name providers, counts and rates only: no secrets, no recipients.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from hub.errors import HubError
from hub.records import AlertIncident, AuditEntry, DeadLetter, Record, SyncCheckpoint, utcnow
from hub.runtime import Runtime, describe

log = logging.getLogger("hub.alerts")


@dataclass(frozen=True)
class Condition:
    """Something wrong now: ``key`` names it (one incident per key), ``title`` and ``summary`` say it."""

    key: str
    kind: str
    title: str
    summary: str


class AlertService:
    def __init__(self, runtime: Runtime, notify: Any) -> None:
        self.runtime = runtime
        self.notify = notify
        runtime.jobs.register_periodic(self.evaluate)

    @property
    def settings(self) -> dict[str, Any]:
        return self.runtime.config["alerts"]

    # --- what is wrong now --------------------------------------------------------------------------

    def conditions(self, now: datetime) -> list[Condition]:
        found = [*self._circuits(), *self._provider_calls(now), *self._security(now), *self._dead(), *self._stale(now)]
        return list({condition.key: condition for condition in found}.values())

    def _circuits(self) -> list[Condition]:
        found = []
        for name in sorted(self.runtime.registry.slots):
            if self.runtime.breakers.state(name) == "open":
                found.append(Condition(f"circuit:{name}", "circuit", f"Circuit open: {name}", f"Provider {name} failed repeatedly; its circuit is open and calls go to the next provider."))
        return found

    def _provider_calls(self, now: datetime) -> list[Condition]:
        settings = self.settings
        since = now - timedelta(seconds=settings["window"])
        with self.runtime.db.session() as session:
            rows = session.execute(
                select(AuditEntry.provider, AuditEntry.outcome, AuditEntry.latency_ms).where(
                    AuditEntry.at >= since, AuditEntry.provider.is_not(None), AuditEntry.capability != "api"
                )
            ).all()
        calls: dict[str, list[tuple[str, float | None]]] = {}
        for provider, outcome, latency in rows:
            calls.setdefault(provider, []).append((outcome, latency))
        found = []
        minutes = settings["window"] // 60 or 1
        for provider, outcomes in sorted(calls.items()):
            if len(outcomes) < settings["min_calls"]:
                continue
            failed = sum(1 for outcome, _ in outcomes if outcome == "error")
            rate = failed / len(outcomes)
            if rate >= settings["error_rate"]:
                found.append(Condition(f"errors:{provider}", "error_rate", f"Errors: {provider}", f"{failed} of {len(outcomes)} calls to {provider} failed in the last {minutes} min ({rate:.0%})."))
            latencies = [latency for _, latency in outcomes if latency is not None]
            if settings["latency_p95_ms"] and len(latencies) >= 2:
                p95 = statistics.quantiles(latencies, n=20)[-1]
                if p95 > settings["latency_p95_ms"]:
                    found.append(Condition(f"latency:{provider}", "latency", f"Slow: {provider}", f"95% of calls to {provider} took up to {p95:.0f} ms in the last {minutes} min (threshold {settings['latency_p95_ms']:.0f} ms)."))
        return found

    def _security(self, now: datetime) -> list[Condition]:
        settings = self.settings
        since = now - timedelta(seconds=settings["window"])
        with self.runtime.db.session() as session:
            rows = session.execute(
                select(AuditEntry.operation, func.count()).where(AuditEntry.at >= since, AuditEntry.outcome == "refused").group_by(AuditEntry.operation)
            ).all()
        forged = sum(count for operation, count in rows if "/webhooks/" in operation)
        refused = sum(count for operation, count in rows if "/webhooks/" not in operation)
        found = []
        minutes = settings["window"] // 60 or 1
        if refused >= settings["refused_tokens"]:
            found.append(Condition("security:tokens", "security", "Security: refused tokens", f"{refused} requests with a missing or invalid token in the last {minutes} min."))
        if forged >= settings["forged_signatures"]:
            found.append(Condition("security:webhooks", "security", "Security: forged webhooks", f"{forged} webhooks with a missing or wrong signature in the last {minutes} min."))
        return found

    def _dead(self) -> list[Condition]:
        with self.runtime.db.session() as session:
            records = session.execute(select(Record.kind, func.count()).where(Record.status == "dead").group_by(Record.kind)).all()
            letters = session.scalar(select(func.count()).select_from(DeadLetter)) or 0
        found = [
            Condition(f"dead:{kind}", "dead_letter", f"Dead {kind} records", f"{count} {kind} record(s) gave up after every retry; replay them once the cause is fixed.")
            for kind, count in sorted(records)
        ]
        if letters:
            found.append(Condition("dead:subscription", "dead_letter", "Dead letters", f"{letters} event(s) a subscription could not handle are in its dead letters."))
        return found

    def _stale(self, now: datetime) -> list[Condition]:
        stale_after = self.runtime.config["inventory"]["stale_after"]
        if not stale_after:
            return []
        limit = now - timedelta(seconds=stale_after)
        with self.runtime.db.session() as session:
            rows = session.execute(
                select(SyncCheckpoint.tenant, SyncCheckpoint.provider, func.max(SyncCheckpoint.completed_at))
                .where(SyncCheckpoint.stream == "inventory")
                .group_by(SyncCheckpoint.tenant, SyncCheckpoint.provider)
            ).all()
        return [
            Condition(f"stale:{tenant}:{provider}", "sync_stale", f"Stale source: {provider}", f"Inventory from {provider} (tenant {tenant}) was last read in full at {completed.isoformat() if completed else 'never'}.")
            for tenant, provider, completed in rows
            if completed is None or completed < limit
        ]

    # --- incidents ----------------------------------------------------------------------------------

    def evaluate(self, now: datetime | None = None) -> dict[str, list[str]]:
        """Open an incident (and alert) for each new condition, resolve (and say so) each that is over."""
        now = now or utcnow()
        active = {condition.key: condition for condition in self.conditions(now)}
        opened, resolved = [], []
        with self.runtime.db.session() as session:
            open_now = {row.key: row for row in session.scalars(select(AlertIncident).where(AlertIncident.resolved_at.is_(None)))}
        for key, condition in active.items():
            if key in open_now:
                continue
            try:
                with self.runtime.db.session() as session:
                    session.add(AlertIncident(key=key, kind=condition.kind, summary=condition.summary, opened_at=now, open_key=key))
            except IntegrityError:
                continue  # another process opened it and alerts
            opened.append(key)
            self._send(condition.title, condition.summary, "critical", f"{key}@{now.isoformat()}")
        for key, incident in open_now.items():
            if key in active:
                continue
            with self.runtime.db.session() as session:
                won = session.execute(
                    update(AlertIncident).where(AlertIncident.id == incident.id, AlertIncident.resolved_at.is_(None)).values(resolved_at=now, open_key=None)
                ).rowcount
            if won:
                resolved.append(key)
                self._send(f"Resolved: {key.split(':', 1)[0]} {key.split(':', 1)[-1]}", f"Over: {incident.summary}", "resolved", f"{key}@{incident.opened_at.isoformat()}:resolved")
        return {"opened": opened, "resolved": resolved}

    def _send(self, title: str, message: str, severity: str, key: str) -> None:
        from hub.services.notify import NotificationRequest

        log.warning("alert: %s -- %s", title, message)
        tenant = self.settings["tenant"] or self.runtime.config["default_tenant"]
        for index, target in enumerate(self.settings["notify"]):
            request = NotificationRequest(
                channel=target["channel"], recipients=list(target["recipients"]), template="critical_alert",
                data={"title": title, "message": message, "severity": severity}, priority="high", asynchronous=True,
            )
            try:
                self.notify.send(tenant, request, f"alert:{key}:{index}"[:255])
            except HubError as error:
                log.error("alert %r to %s could not be queued: %s", title, target["channel"], describe(error))

    def incidents(self, status: str | None = "open", limit: int = 50) -> list[dict[str, Any]]:
        with self.runtime.db.session() as session:
            query = select(AlertIncident)
            if status == "open":
                query = query.where(AlertIncident.resolved_at.is_(None))
            elif status == "resolved":
                query = query.where(AlertIncident.resolved_at.is_not(None))
            return [row.to_dict() for row in session.scalars(query.order_by(AlertIncident.opened_at.desc()).limit(limit))]
