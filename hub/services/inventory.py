"""The hub's inventory over what its sync sources report: location names shared across sources, low-stock
alerts, discrepancies between sources, manual overrides, webhook levels, stale marking and history.

Every write of levels (a sync page, a push, a webhook, an override) ends in :meth:`InventoryService.after_write`
inside the same transaction: the alert state, the discrepancies and the queued events and alert jobs exist
exactly when the levels they describe do. A crash before the commit loses neither (nothing happened); after
it, the recovery sweep sends what was queued.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, tuple_

from hub.capabilities import INVENTORY_LEVEL_EVENT, WebhookEvent, parse_timestamp
from hub.config import OVERRIDE_SOURCE
from hub.errors import HubError, NotFound, ValidationError
from hub.records import InventoryDiscrepancy, InventoryLevel, Record, StockAlertState, new_id, plain_number, utcnow
from hub.runtime import Runtime, describe
from hub.services.sync_store import INVENTORY, LevelChange, SyncStore, chunks

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from hub.services.notify import NotifyService
    from hub.services.publish import PublishService

log = logging.getLogger("hub.inventory")

SERVICE = "externalAPI"
STOCK_UPDATED = "inventory.stock.updated"
DISCREPANCY = "inventory.level.discrepancy"
_CHUNK = 400  # rows per IN (...) query


@dataclass
class Override:
    """A quantity an operator sets by hand (``PUT /inventory/<sku>/<location>``)."""

    sku: str
    location: str
    quantity: float
    reason: str
    #: Who: the API token's name (or id), or the Python caller's word.
    by: str
    #: Push it to the sources that accept writes (``inventory.sources.<name>.writable``).
    push: bool = True


class InventoryService:
    def __init__(self, runtime: Runtime, store: SyncStore, publish: PublishService, notify: NotifyService) -> None:
        self.runtime = runtime
        self.store = store
        self.publish = publish
        self.notify = notify
        runtime.jobs.register_handler("stock_alert", self.run_alert)

    @property
    def settings(self) -> dict[str, Any]:
        return self.runtime.config["inventory"]

    # --- locations --------------------------------------------------------------------------------

    def hub_location(self, provider: str, location: str) -> str:
        """The hub's name for a source's location (``inventory.sources.<provider>.locations``)."""
        source = self.settings["sources"].get(provider)
        return source["locations"].get(location, location) if source else location

    def source_location(self, provider: str, location: str) -> str:
        """The source's id for one of the hub's locations: the mapping read backwards."""
        source = self.settings["sources"].get(provider)
        if source:
            for theirs, ours in source["locations"].items():
                if ours == location:
                    return theirs
        return location

    def map_records(self, provider: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        source = self.settings["sources"].get(provider)
        if not source or not source["locations"]:
            return records
        mapping = source["locations"]
        mapped = []
        for record in records:
            location = record.get("location")
            if isinstance(location, str | int) and str(location) in mapping:
                record = {**record, "location": mapping[str(location)], "source_location": location}
            mapped.append(record)
        return mapped

    # --- after every write ------------------------------------------------------------------------

    def after_write(self, session: Session, tenant: str, provider: str, changes: list[LevelChange], origin: str) -> list[str]:
        """Events, alert crossings and discrepancies for levels just written by ``provider`` (in the
        caller's transaction). Returns the queued record ids to hand to ``jobs.enqueue`` after the commit."""
        if not changes:
            return []
        queued: list[str] = []
        now = utcnow()
        topic = self.settings["events_topic"]
        crossed = self._crossings(session, tenant, provider, changes, now, queued)
        if topic:
            for change in changes:
                moved = change.previous is not None and change.previous != change.quantity
                if (moved or (change.sku, change.location) in crossed) and change.quantity is not None:
                    data = {
                        "sku": change.sku, "location": change.location, "newQuantity": plain_number(change.quantity),
                        "source": provider, "transactionType": origin, "updatedAt": now.isoformat(),
                    }
                    if change.previous is not None:
                        data["oldQuantity"] = plain_number(change.previous)
                    key = f"stock:{tenant}:{provider}:{change.sku}:{change.location}:{new_id('chg')}"
                    self._queue_event(session, tenant, topic, STOCK_UPDATED, change.sku, data, key, queued)
        if provider != OVERRIDE_SOURCE:
            self._compare(session, tenant, provider, changes, now, topic, queued)
        return queued

    def _queue_event(self, session: Session, tenant: str, topic: str, event_type: str, key: str, data: dict[str, Any], idempotency_key: str, queued: list[str]) -> None:
        # Each change's key is new (it names the change), so no lookup for an earlier one. Long SKUs and
        # locations would overflow the key's column: those keys are hashed.
        if len(idempotency_key) > 200:
            idempotency_key = f"{event_type}:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"
        record_id = self.publish.queue(session, tenant, topic, event_type, key, data, idempotency_key, fresh=True)
        if record_id:
            queued.append(record_id)

    def threshold(self, tenant: str, sku: str, location: str) -> float | None:
        """The most specific threshold: this SKU here, this SKU anywhere, every SKU here, every SKU."""
        low_stock = self.settings["low_stock"]
        best: tuple[int, float] | None = None
        for entry in low_stock["thresholds"]:
            if entry["tenant"] not in (None, tenant):
                continue
            sku_rank = 2 if entry["sku"] == sku else 0 if entry["sku"] == "*" else -1
            location_rank = 1 if entry["location"] == location else 0 if entry["location"] in (None, "*") else -1
            if sku_rank < 0 or location_rank < 0:
                continue
            rank = sku_rank + location_rank
            if best is None or rank > best[0]:
                best = (rank, entry["threshold"])
        return best[1] if best else low_stock["default_threshold"]

    def _crossings(self, session: Session, tenant: str, provider: str, changes: list[LevelChange], now: datetime, queued: list[str]) -> set[tuple[str, str]]:
        """Turn each level's alert state on when it falls to or below its threshold (queueing one alert),
        off when it is above again; a level that stays low alerts once."""
        watched = {}
        for change in changes:
            if change.quantity is None:
                continue
            threshold = self.threshold(tenant, change.sku, change.location)
            if threshold is not None:
                watched[(change.sku, change.location)] = (change, threshold)
        if not watched:
            return set()
        states = {
            (state.sku, state.location): state
            for chunk in chunks(list(watched))
            for state in session.scalars(
                select(StockAlertState).where(StockAlertState.tenant == tenant, tuple_(StockAlertState.sku, StockAlertState.location).in_(chunk))
            )
        }
        crossed = set()
        for pair, (change, threshold) in watched.items():
            state = states.get(pair)
            low = change.quantity is not None and change.quantity <= threshold
            if state is None:
                state = StockAlertState(tenant=tenant, sku=pair[0], location=pair[1], low=False, changed_at=now)
                session.add(state)
            if low == state.low:
                continue
            state.low, state.quantity, state.threshold, state.provider, state.changed_at = low, change.quantity, threshold, provider, now
            if low:
                crossed.add(pair)
                state.record_id = self._queue_alert(session, tenant, provider, change, threshold)
                queued.append(state.record_id)
        return crossed

    def _queue_alert(self, session: Session, tenant: str, provider: str, change: LevelChange, threshold: float) -> str:
        data = {
            "sku": change.sku, "location": change.location, "current_stock": plain_number(change.quantity),
            "threshold": plain_number(threshold), "source": provider,
        }
        return self.runtime.ledger.queue_in(session, "stock_alert", tenant, SERVICE, {"data": data})

    def run_alert(self, record: Record) -> None:
        """Worker: send one crossing's ``low_stock_alert`` to every ``inventory.low_stock.notify`` target
        (each a queued notification whose idempotency key is the alert's, so a retry sends nothing twice)."""
        from hub.services.notify import NotificationRequest

        sent, failed = [], []
        for index, target in enumerate(self.settings["low_stock"]["notify"]):
            request = NotificationRequest(
                channel=target["channel"], recipients=list(target["recipients"]), template=target["template"],
                data=dict(record.payload["data"]), priority=target["priority"], asynchronous=True,
            )
            try:
                view, _ = self.notify.send(record.tenant, request, f"{record.id}:{index}")
            except HubError as error:  # a template or recipient the configuration got wrong: say so, go on
                log.error("low-stock alert %s to %s: %s", record.id, target["channel"], error)
                failed.append({"channel": target["channel"], "error": describe(error)})
                continue
            sent.append({"channel": target["channel"], "notificationId": view["id"]})
        status = "failed" if failed and not sent else "succeeded"
        self.runtime.ledger.save(record.id, status=status, result={"notifications": sent, "failed": failed}, error=failed[0]["error"] if failed else None)

    def _compare(self, session: Session, tenant: str, provider: str, changes: list[LevelChange], now: datetime, topic: str | None, queued: list[str]) -> None:
        """Open (with one event) or refresh a discrepancy where another source disagrees; resolve it where
        they agree again. Stale levels of the other source are not compared: they would only be noise."""
        if len(self.runtime.registry.service_providers(SERVICE, tenant)) < 2:
            return
        tolerance = self.settings["discrepancy_tolerance"]
        stale_after = self.settings["stale_after"]
        last_synced = self.store.last_synced(tenant) if stale_after else {}
        mine = {(change.sku, change.location): change.quantity for change in changes}
        others: dict[tuple[str, str], list[InventoryLevel]] = {}
        for chunk in chunks(list(mine)):
            for level in session.scalars(
                select(InventoryLevel).where(
                    InventoryLevel.tenant == tenant,
                    InventoryLevel.provider.notin_([provider, OVERRIDE_SOURCE]),
                    tuple_(InventoryLevel.sku, InventoryLevel.location).in_(chunk),
                )
            ):
                if stale_after and _age(level, last_synced.get(level.provider), now) > stale_after:
                    continue
                others.setdefault((level.sku, level.location), []).append(level)
        if not others:
            return
        keys = [(sku, location, *sorted((provider, level.provider))) for (sku, location), levels in others.items() for level in levels]
        existing = {
            (row.sku, row.location, row.provider, row.other): row
            for start in range(0, len(keys), _CHUNK)
            for row in session.scalars(
                select(InventoryDiscrepancy).where(
                    InventoryDiscrepancy.tenant == tenant,
                    tuple_(InventoryDiscrepancy.sku, InventoryDiscrepancy.location, InventoryDiscrepancy.provider, InventoryDiscrepancy.other).in_(keys[start : start + _CHUNK]),
                )
            )
        }
        for (sku, location), levels in others.items():
            quantity = mine[(sku, location)]
            for level in levels:
                first, second = sorted((provider, level.provider))
                quantities = {provider: quantity, level.provider: level.quantity}
                differ = None not in quantities.values() and abs(quantity - level.quantity) > tolerance  # type: ignore[operator]
                row = existing.get((sku, location, first, second))
                if row is not None:
                    row.quantity, row.other_quantity, row.updated_at = quantities[first], quantities[second], now
                if not differ:
                    if row is not None and row.resolved_at is None:
                        row.resolved_at = now
                    continue
                if row is not None and row.resolved_at is None:
                    continue  # still open: reported when it opened
                if row is None:
                    row = InventoryDiscrepancy(tenant=tenant, sku=sku, location=location, provider=first, other=second, quantity=quantities[first], other_quantity=quantities[second], updated_at=now)
                    session.add(row)
                row.detected_at, row.resolved_at = now, None
                if topic:
                    data = {
                        "sku": sku, "location": location, "expected": plain_number(level.quantity), "actual": plain_number(quantity),
                        "source": provider, "detectedAt": now.isoformat(),
                    }
                    key = f"discrepancy:{tenant}:{sku}:{location}:{first}:{second}:{now.isoformat()}"
                    self._queue_event(session, tenant, topic, DISCREPANCY, sku, data, key, queued)

    # --- overrides and webhooks -------------------------------------------------------------------

    def override(self, tenant: str, override: Override) -> dict[str, Any]:
        """Set a level by hand: recorded with who and why (its history row and the ``override`` level),
        then pushed to every source that accepts writes, as queued pushes in the same transaction."""
        runtime = self.runtime
        runtime.require_running()
        _check_override(override)
        targets = self._writable(tenant) if override.push else []
        attributes = {"by": override.by, "reason": override.reason}
        pushes: dict[str, str] = {}
        with runtime.db.session() as session:
            change = self.store.set_level(
                session, tenant, OVERRIDE_SOURCE, override.sku, override.location, float(override.quantity), source="override", attributes=attributes
            )
            assert change is not None
            queued = self.after_write(session, tenant, OVERRIDE_SOURCE, [change], "override")
            for provider in targets:
                # The hub's location name: the push maps it to the source's when it sends.
                update = {"sku": override.sku, "location": override.location, "quantity": override.quantity, "mode": "set", "reason": override.reason}
                payload = {"provider": provider, "updates": [update], "metadata": {"override": True, **attributes}}
                pushes[provider] = runtime.ledger.queue_in(session, "inventory_push", tenant, SERVICE, payload, record_id=new_id("psh"))
        runtime.audit.add(
            tenant=tenant, capability="sync", service=SERVICE, provider=OVERRIDE_SOURCE, operation="inventory_override", outcome="accepted",
            latency_ms=0.0, detail=f"{override.sku} at {override.location} set to {plain_number(float(override.quantity))} by {override.by}: {override.reason}"[:2000],
        )
        for record_id in [*queued, *pushes.values()]:
            runtime.jobs.enqueue(record_id)
        return {
            "sku": override.sku, "location": override.location, "quantity": plain_number(float(override.quantity)),
            "previous": plain_number(change.previous), "by": override.by, "reason": override.reason,
            "pushes": [{"provider": provider, "jobId": job} for provider, job in pushes.items()],
        }

    def _writable(self, tenant: str) -> list[str]:
        sources = self.settings["sources"]
        names = []
        for name in self.runtime.registry.service_providers(SERVICE, tenant):
            writable = sources.get(name, {}).get("writable")
            if writable is False:
                continue
            can_push = self.runtime.hook_for(name, tenant, "sync_push") is not None
            if writable and not can_push:
                log.warning("inventory source %s is marked writable but has no sync_push hook", name)
            if can_push:
                names.append(name)
        return names

    def apply_webhook_level(self, tenant: str, provider: str, event: WebhookEvent) -> bool:
        """An ``INVENTORY_LEVEL_EVENT`` from a sync source: set its level (``False`` when a newer one is held)."""
        details = event.details or {}
        sku, location, quantity = details.get("sku"), details.get("location"), details.get("quantity")
        if not isinstance(sku, str | int) or not isinstance(location, str | int) or isinstance(quantity, bool) or not isinstance(quantity, int | float | None):
            log.warning("%s event %s from %s lacks sku/location/quantity: ignored", INVENTORY_LEVEL_EVENT, event.event_id, provider)
            return False
        reported = parse_timestamp(details.get("updatedAt"))
        runtime = self.runtime
        with runtime.db.session() as session:
            change = self.store.set_level(
                session, tenant, provider, str(sku), self.hub_location(provider, str(location)),
                None if quantity is None else float(quantity), source="webhook", attributes={"eventId": event.event_id}, reported_at=reported,
            )
            queued = self.after_write(session, tenant, provider, [change], "webhook") if change else []
        for record_id in queued:
            runtime.jobs.enqueue(record_id)
        return change is not None

    # --- views ------------------------------------------------------------------------------------

    def level_views(self, tenant: str, levels: list[InventoryLevel]) -> list[dict[str, Any]]:
        """Levels with their age and whether they are stale: the source has not been read to its end for
        ``inventory.stale_after`` seconds (it may be down; the level is the last good one)."""
        stale_after = self.settings["stale_after"]
        last_synced = self.store.last_synced(tenant)
        now = utcnow()
        views = []
        for level in levels:
            age = _age(level, last_synced.get(level.provider), now)
            synced = last_synced.get(level.provider)
            views.append(
                {
                    **level.to_dict(),
                    "ageSeconds": round(age, 3),
                    "stale": bool(stale_after) and level.provider != OVERRIDE_SOURCE and age > stale_after,
                    "lastSyncedAt": synced.isoformat() if synced else None,
                }
            )
        return views

    def discrepancies(self, tenant: str, *, status: str | None = "open", sku: str | None = None, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        with self.runtime.db.session() as session:
            query = select(InventoryDiscrepancy).where(InventoryDiscrepancy.tenant == tenant)
            if status == "open":
                query = query.where(InventoryDiscrepancy.resolved_at.is_(None))
            elif status == "resolved":
                query = query.where(InventoryDiscrepancy.resolved_at.is_not(None))
            if sku:
                query = query.where(InventoryDiscrepancy.sku == sku)
            order = (InventoryDiscrepancy.detected_at.desc(), InventoryDiscrepancy.sku, InventoryDiscrepancy.location)
            return [row.to_dict() for row in session.scalars(query.order_by(*order).limit(limit).offset(offset))]

    def low_stock(self, tenant: str, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """The SKUs and locations at or below their threshold now."""
        with self.runtime.db.session() as session:
            query = select(StockAlertState).where(StockAlertState.tenant == tenant, StockAlertState.low.is_(True))
            return [row.to_dict() for row in session.scalars(query.order_by(StockAlertState.sku, StockAlertState.location).limit(limit).offset(offset))]

    def history(self, tenant: str, sku: str, *, location: str | None, provider: str | None, since: datetime | None, until: datetime | None, limit: int) -> list[dict[str, Any]]:
        if since and until and since >= until:
            raise ValidationError({"from": ["must be before to"]})
        rows = self.store.history(tenant, sku=sku, location=location, provider=provider, since=since, until=until, limit=limit, oldest_first=True)
        if not rows and not self.store.levels(tenant, sku=sku, limit=1):
            raise NotFound(f"No inventory history for SKU {sku!r}")
        return [row.to_dict() for row in rows]


def _check_override(override: Override) -> None:
    problems: dict[str, list[str]] = {}
    quantity = override.quantity
    if isinstance(quantity, bool) or not isinstance(quantity, int | float) or quantity != quantity or abs(quantity) == float("inf"):
        problems["quantity"] = ["a number"]
    for name in ("sku", "location"):
        value = getattr(override, name)
        if not isinstance(value, str) or not 1 <= len(value) <= 255:
            problems[name] = ["1 to 255 characters"]
    if not isinstance(override.reason, str) or not override.reason.strip() or len(override.reason) > 500:
        problems["reason"] = ["required: why the level is set by hand (1 to 500 characters)"]
    if problems:
        raise ValidationError(problems)


def _age(level: InventoryLevel, synced: datetime | None, now: datetime) -> float:
    seen = max(level.updated_at, synced) if synced else level.updated_at
    return max(0.0, (now - seen).total_seconds())



__all__ = ["DISCREPANCY", "INVENTORY", "STOCK_UPDATED", "InventoryService", "Override"]
