"""What sync keeps in the database: stream checkpoints (with the lease of the job syncing the stream), synced
records by primary key, inventory levels with their history, and inventory snapshots (one per run, its items
being the history rows of that run).

:class:`SyncStore` writes inside the caller's session, so the sync service stores a page, its checkpoint and
the job's progress in one transaction: a run that dies part-way keeps exactly the pages it finished.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from hub.capabilities import INVENTORY_KEY, record_key, to_dict
from hub.errors import Conflict, NotFound
from hub.records import (
    Database,
    InventoryChange,
    InventoryLevel,
    InventorySnapshot,
    SyncCheckpoint,
    SyncedRecord,
    plain_number,
    utcnow,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

INVENTORY = "inventory"
#: Longest stored record key; longer ones are hashed.
KEY_LENGTH = 255
_HISTORY_INSERT = InventoryChange.__table__.insert()
#: Rows per ``IN (...)`` query when reading the levels a page replaces.
_CHUNK = 400


@dataclass(frozen=True)
class StreamKey:
    """One checkpointed stream: a tenant's ``stream`` from ``provider``, with one set of options."""

    tenant: str
    provider: str
    stream: str
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def scope(self) -> str:
        if not self.options:
            return ""
        canonical = json.dumps(self.options, sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]

    @property
    def primary_key(self) -> tuple[str, str, str, str]:
        return (self.tenant, self.provider, self.stream, self.scope)

    def where(self) -> Any:
        return (
            (SyncCheckpoint.tenant == self.tenant)
            & (SyncCheckpoint.provider == self.provider)
            & (SyncCheckpoint.stream == self.stream)
            & (SyncCheckpoint.scope == self.scope)
        )


class StreamBusy(Conflict):
    """Another job is syncing the same stream: two runs would interleave their cursors."""


class StreamLost(Conflict):
    """The job's hold on its stream lapsed and another job took it: this job must stop, storing nothing."""


@dataclass(frozen=True)
class LevelChange:
    """A level the hub just wrote: what it was (``None``: the hub had none) and what it is now."""

    sku: str
    location: str
    previous: float | None
    quantity: float | None


@dataclass
class PageCounts:
    stored: int = 0
    skipped: int = 0
    changes: list[LevelChange] = field(default_factory=list)


class SyncStore:
    def __init__(self, db: Database, lease_seconds: int) -> None:
        self.db = db
        self.lease_seconds = lease_seconds

    # --- checkpoints ------------------------------------------------------------------------------

    def take_stream(self, key: StreamKey, record_id: str) -> SyncCheckpoint:
        """Hold ``key``'s checkpoint for ``record_id`` (free, already ours, or its holder's lease lapsed)
        and return it; :class:`StreamBusy` when another job holds it."""
        now = utcnow()
        lease = now + timedelta(seconds=self.lease_seconds)
        for _ in range(2):  # a concurrent first insert makes the second try an update
            with self.db.session() as session:
                taken = session.execute(
                    update(SyncCheckpoint)
                    .where(key.where())
                    .where(
                        SyncCheckpoint.record_id.is_(None)
                        | (SyncCheckpoint.record_id == record_id)
                        | (SyncCheckpoint.lease_until < now)
                    )
                    .values(record_id=record_id, lease_until=lease)
                ).rowcount
                if taken:
                    checkpoint = session.get(SyncCheckpoint, key.primary_key)
                    assert checkpoint is not None
                    return checkpoint
                holder = session.get(SyncCheckpoint, key.primary_key)
                if holder is not None:
                    raise StreamBusy(
                        f"A sync of {key.stream!r} from {key.provider} is already running (job {holder.record_id}); "
                        "try again when it has finished"
                    )
            checkpoint = SyncCheckpoint(
                tenant=key.tenant, provider=key.provider, stream=key.stream, scope=key.scope, options=key.options,
                cursor=None, has_more=False, pages=0, records=0, record_id=record_id, lease_until=lease, updated_at=now,
            )
            try:
                with self.db.session() as session:
                    session.add(checkpoint)
                return checkpoint
            except IntegrityError:
                continue
        raise StreamBusy(f"A sync of {key.stream!r} from {key.provider} is starting in another job; try again")

    def release_stream(self, key: StreamKey, record_id: str) -> None:
        with self.db.session() as session:
            session.execute(
                update(SyncCheckpoint)
                .where(key.where(), SyncCheckpoint.record_id == record_id)
                .values(record_id=None, lease_until=None)
            )

    def advance(self, session: Session, key: StreamKey, record_id: str, cursor: str | None, has_more: bool, count: int) -> None:
        """Move the checkpoint past a stored page and renew the job's hold; :class:`StreamLost` (which rolls
        the page back) when the hold was taken over."""
        now = utcnow()
        values: dict[str, Any] = {
            "cursor": cursor,
            "has_more": has_more,
            "pages": SyncCheckpoint.pages + 1,
            "records": SyncCheckpoint.records + count,
            "updated_at": now,
            "lease_until": now + timedelta(seconds=self.lease_seconds),
        }
        if not has_more:
            values["completed_at"] = now
        moved = session.execute(
            update(SyncCheckpoint).where(key.where(), SyncCheckpoint.record_id == record_id).values(**values)
        ).rowcount
        if not moved:
            raise StreamLost(f"job {record_id} lost its hold on {key.stream!r} from {key.provider} to another job")

    def checkpoints(self, tenant: str, provider: str | None = None, stream: str | None = None) -> list[SyncCheckpoint]:
        with self.db.session() as session:
            query = select(SyncCheckpoint).where(SyncCheckpoint.tenant == tenant)
            if provider:
                query = query.where(SyncCheckpoint.provider == provider)
            if stream:
                query = query.where(SyncCheckpoint.stream == stream)
            return list(session.scalars(query.order_by(SyncCheckpoint.provider, SyncCheckpoint.stream)))

    # --- pages ------------------------------------------------------------------------------------

    def write_records(
        self, session: Session, key: StreamKey, record_id: str, records: list[dict[str, Any]], primary_key: tuple[str, ...]
    ) -> PageCounts:
        """Upsert a page of a non-inventory stream by primary key (the last version of a key wins)."""
        now = utcnow()
        rows: dict[str, dict[str, Any]] = {}
        for record in records:
            stored_key = _stored_key(record_key(record, primary_key))
            rows[stored_key] = {
                "tenant": key.tenant, "provider": key.provider, "stream": key.stream, "key": stored_key,
                "data": to_dict(record), "record_id": record_id, "synced_at": now,
            }
        _upsert(session, SyncedRecord, list(rows.values()), ("tenant", "provider", "stream", "key"), ("data", "record_id", "synced_at"))
        return PageCounts(stored=len(rows))

    def write_inventory(
        self,
        session: Session,
        key: StreamKey,
        record_id: str,
        snapshot: InventorySnapshot,
        records: list[dict[str, Any]],
        *,
        new_snapshot: bool,
    ) -> PageCounts:
        """Set the levels of a page of inventory records and add them to the run's snapshot (history rows)."""
        now = utcnow()
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        skipped = 0
        for record in records:
            level = _inventory_row(record)
            if level is None:
                skipped += 1
                continue
            rows[(level["sku"], level["location"])] = level
        if not rows:
            return PageCounts(skipped=skipped)
        held = self._held(session, key.tenant, key.provider, list(rows))
        previous = {pair: level[0] for pair, level in held.items()}
        if new_snapshot:
            session.add(snapshot)
            session.flush()
        # Only levels that changed are written: a level's updated_at says when it last changed (the source's
        # last complete sync says when it was last confirmed), and an unchanged re-read costs no UPDATE.
        _upsert(
            session,
            InventoryLevel,
            [
                {"tenant": key.tenant, "provider": key.provider, **row, "updated_at": now, "record_id": record_id}
                for pair, row in rows.items()
                if held.get(pair) != (row["quantity"], row["attributes"])
            ],
            ("tenant", "provider", "sku", "location"),
            ("quantity", "attributes", "updated_at", "record_id"),
        )
        session.execute(
            _HISTORY_INSERT,  # the table's, not the ORM entity's: a Core executemany, no ORM bulk bookkeeping
            [
                {
                    "tenant": key.tenant, "provider": key.provider, **row, "previous": previous.get(pair),
                    "source": "sync", "snapshot_id": snapshot.id, "record_id": record_id, "at": now,
                }
                for pair, row in rows.items()
            ],
        )
        session.execute(
            update(InventorySnapshot)
            .where(InventorySnapshot.id == snapshot.id)
            .values(item_count=InventorySnapshot.item_count + len(rows))
        )
        changes = [LevelChange(sku, location, previous.get((sku, location)), row["quantity"]) for (sku, location), row in rows.items()]
        return PageCounts(stored=len(rows), skipped=skipped, changes=changes)

    def delete_records(self, session: Session, key: StreamKey, record_id: str, deleted: list[dict[str, Any]], primary_key: tuple[str, ...]) -> tuple[int, list[LevelChange]]:
        """Remove the stored copies of records the source says are gone; returns how many, and for
        inventory the levels removed (a history row each, quantity ``None``)."""
        if not deleted:
            return 0, []
        if key.stream != INVENTORY:
            keys = [_stored_key(record_key(record, primary_key)) for record in deleted]
            removed = 0
            for chunk in chunks(keys):
                removed += session.execute(
                    delete(SyncedRecord).where(
                        SyncedRecord.tenant == key.tenant, SyncedRecord.provider == key.provider, SyncedRecord.stream == key.stream, SyncedRecord.key.in_(chunk)
                    )
                ).rowcount
            return removed, []
        pairs = [(str(record["sku"]), str(record["location"])) for record in deleted if _identifier(record.get("sku")) and _identifier(record.get("location"))]
        previous = {pair: level[0] for pair, level in self._held(session, key.tenant, key.provider, pairs).items()}
        now = utcnow()
        changes = []
        for pair, quantity in previous.items():
            session.execute(
                delete(InventoryLevel).where(
                    InventoryLevel.tenant == key.tenant, InventoryLevel.provider == key.provider, InventoryLevel.sku == pair[0], InventoryLevel.location == pair[1]
                )
            )
            session.add(
                InventoryChange(
                    tenant=key.tenant, provider=key.provider, sku=pair[0], location=pair[1], quantity=None, previous=quantity,
                    attributes={"deleted": True}, source="sync", snapshot_id=None, record_id=record_id, at=now,
                )
            )
            changes.append(LevelChange(pair[0], pair[1], quantity, None))
        return len(changes), changes

    def write_pushed(self, session: Session, tenant: str, provider: str, record_id: str, items: list[dict[str, Any]]) -> list[LevelChange]:
        """Record the levels updates sent to ``provider`` left it with (``items``: sku, location, mode,
        quantity asked for, and ``level`` when the provider said)."""
        if not items:
            return []
        now = utcnow()
        changes: list[LevelChange] = []
        pairs = [(item["sku"], item["location"]) for item in items]
        current = {
            (level.sku, level.location): level
            for chunk in chunks(pairs)
            for level in session.scalars(
                select(InventoryLevel).where(
                    InventoryLevel.tenant == tenant,
                    InventoryLevel.provider == provider,
                    tuple_(InventoryLevel.sku, InventoryLevel.location).in_(chunk),
                )
            )
        }
        for item in items:
            pair = (item["sku"], item["location"])
            level = current.get(pair)
            before = level.quantity if level is not None else None
            if item.get("level") is not None:
                after: float | None = float(item["level"])
            elif item["mode"] == "set":
                after = float(item["quantity"])
            elif before is not None:
                after = before + float(item["quantity"])
            else:
                continue  # an adjustment of a level the hub never saw: the next sync tells
            if level is None:
                level = InventoryLevel(tenant=tenant, provider=provider, sku=pair[0], location=pair[1], attributes={})
                session.add(level)
                current[pair] = level
            level.quantity, level.updated_at, level.record_id = after, now, record_id
            session.add(
                InventoryChange(
                    tenant=tenant, provider=provider, sku=pair[0], location=pair[1], quantity=after, previous=before,
                    attributes={}, source="push", snapshot_id=None, record_id=record_id, at=now,
                )
            )
            changes.append(LevelChange(pair[0], pair[1], before, after))
        return changes

    def set_level(
        self,
        session: Session,
        tenant: str,
        provider: str,
        sku: str,
        location: str,
        quantity: float | None,
        *,
        source: str,
        attributes: dict[str, Any] | None = None,
        record_id: str | None = None,
        reported_at: datetime | None = None,
    ) -> LevelChange | None:
        """Set one level by hand or from a webhook, with its history row (``source``). With ``reported_at``
        (when the source says the level changed), ``None`` when the hub observed the level at that time or
        later: a late webhook must not undo a newer sync."""
        now = utcnow()
        level = session.get(InventoryLevel, (tenant, provider, sku, location))
        if reported_at is not None and level is not None and level.updated_at >= reported_at:
            return None
        attributes = dict(attributes or {})
        before = level.quantity if level is not None else None
        if level is None:
            level = InventoryLevel(tenant=tenant, provider=provider, sku=sku, location=location)
            session.add(level)
        # A webhook's level is as of when the source says: a later one (or a sync after it) replaces it.
        level.quantity, level.updated_at, level.record_id = quantity, reported_at or now, record_id
        level.attributes = {**(level.attributes or {}), **attributes}
        session.add(
            InventoryChange(
                tenant=tenant, provider=provider, sku=sku, location=location, quantity=quantity, previous=before,
                attributes=attributes, source=source, snapshot_id=None, record_id=record_id, at=now,
            )
        )
        return LevelChange(sku, location, before, quantity)

    def _held(self, session: Session, tenant: str, provider: str, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[float | None, dict[str, Any]]]:
        """The quantity and attributes held for each of ``pairs`` that has a level."""
        found: dict[tuple[str, str], tuple[float | None, dict[str, Any]]] = {}
        for chunk in chunks(pairs):
            rows = session.execute(
                select(InventoryLevel.sku, InventoryLevel.location, InventoryLevel.quantity, InventoryLevel.attributes).where(
                    InventoryLevel.tenant == tenant,
                    InventoryLevel.provider == provider,
                    tuple_(InventoryLevel.sku, InventoryLevel.location).in_(chunk),
                )
            )
            found.update({(sku, location): (quantity, attributes or {}) for sku, location, quantity, attributes in rows})
        return found

    # --- views ------------------------------------------------------------------------------------

    def job_records(self, tenant: str, stream: str, record_id: str, snapshot_id: str | None, limit: int) -> list[dict[str, Any]]:
        """The first ``limit`` records a sync job stored (for inventory, its snapshot's rows)."""
        with self.db.session() as session:
            if stream == INVENTORY:
                if not snapshot_id:
                    return []
                rows = session.scalars(
                    select(InventoryChange).where(InventoryChange.snapshot_id == snapshot_id).order_by(InventoryChange.id).limit(limit)
                )
                return [row.item() for row in rows]
            data = session.scalars(
                select(SyncedRecord.data)
                .where(SyncedRecord.tenant == tenant, SyncedRecord.stream == stream, SyncedRecord.record_id == record_id)
                .order_by(SyncedRecord.key)
                .limit(limit)
            )
            return list(data)

    def records(
        self, tenant: str, stream: str, provider: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[SyncedRecord]:
        with self.db.session() as session:
            query = select(SyncedRecord).where(SyncedRecord.tenant == tenant, SyncedRecord.stream == stream)
            if provider:
                query = query.where(SyncedRecord.provider == provider)
            order = (SyncedRecord.provider, SyncedRecord.key)
            return list(session.scalars(query.order_by(*order).limit(limit).offset(offset)))

    def levels(
        self,
        tenant: str,
        *,
        provider: str | None = None,
        sku: str | None = None,
        location: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[InventoryLevel]:
        with self.db.session() as session:
            query = select(InventoryLevel).where(InventoryLevel.tenant == tenant)
            for column, wanted in ((InventoryLevel.provider, provider), (InventoryLevel.sku, sku), (InventoryLevel.location, location)):
                if wanted:
                    query = query.where(column == wanted)
            order = (InventoryLevel.sku, InventoryLevel.location, InventoryLevel.provider)
            return list(session.scalars(query.order_by(*order).limit(limit).offset(offset)))

    def history(
        self,
        tenant: str,
        *,
        provider: str | None = None,
        sku: str | None = None,
        location: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        oldest_first: bool = False,
    ) -> list[InventoryChange]:
        with self.db.session() as session:
            query = select(InventoryChange).where(InventoryChange.tenant == tenant)
            for column, wanted in ((InventoryChange.provider, provider), (InventoryChange.sku, sku), (InventoryChange.location, location)):
                if wanted:
                    query = query.where(column == wanted)
            if since is not None:
                query = query.where(InventoryChange.at >= since)
            if until is not None:
                query = query.where(InventoryChange.at < until)
            order = InventoryChange.id.asc() if oldest_first else InventoryChange.id.desc()
            return list(session.scalars(query.order_by(order).limit(limit)))

    def last_synced(self, tenant: str) -> dict[str, datetime]:
        """When each provider last read its inventory stream to the end."""
        with self.db.session() as session:
            rows = session.execute(
                select(SyncCheckpoint.provider, func.max(SyncCheckpoint.completed_at))
                .where(SyncCheckpoint.tenant == tenant, SyncCheckpoint.stream == INVENTORY)
                .group_by(SyncCheckpoint.provider)
            )
            return {provider: completed for provider, completed in rows if completed is not None}

    def snapshots(self, tenant: str, provider: str | None = None, limit: int = 20) -> list[InventorySnapshot]:
        with self.db.session() as session:
            query = select(InventorySnapshot).where(InventorySnapshot.tenant == tenant)
            if provider:
                query = query.where(InventorySnapshot.provider == provider)
            return list(session.scalars(query.order_by(InventorySnapshot.taken_at.desc()).limit(limit)))

    def snapshot(self, snapshot_id: str, tenant: str) -> Snapshot:
        with self.db.session() as session:
            header = session.get(InventorySnapshot, snapshot_id)
            if header is None or header.tenant != tenant:
                raise NotFound(f"No inventory snapshot with id {snapshot_id}")
            rows = session.scalars(
                select(InventoryChange).where(InventoryChange.snapshot_id == snapshot_id).order_by(InventoryChange.id)
            )
            return Snapshot(header, [row.item() for row in rows])


@dataclass
class Snapshot:
    """An inventory snapshot with its items (the rows its run stored, as the source sent them)."""

    header: InventorySnapshot
    items: list[dict[str, Any]]

    @property
    def id(self) -> str:
        return self.header.id

    @property
    def item_count(self) -> int:
        return self.header.item_count

    def to_dict(self, with_items: bool = True) -> dict[str, Any]:
        return self.header.to_dict(self.items if with_items else None)


def _inventory_row(record: dict[str, Any]) -> dict[str, Any] | None:
    """``record`` as a level row, or ``None`` when it cannot be one (no SKU or location, a quantity that is
    not a number)."""
    sku, location, quantity = record.get("sku"), record.get("location"), record.get("quantity")
    if not _identifier(sku) or not _identifier(location):
        return None
    if isinstance(quantity, str):
        try:
            quantity = float(quantity)
        except ValueError:
            return None
    if quantity is not None and (isinstance(quantity, bool) or not isinstance(quantity, int | float) or not math.isfinite(quantity)):
        return None
    attributes = to_dict({name: value for name, value in record.items() if name not in (*INVENTORY_KEY, "quantity")})
    return {"sku": str(sku), "location": str(location), "quantity": None if quantity is None else float(quantity), "attributes": attributes}


def _identifier(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool) and 0 < len(str(value)) <= KEY_LENGTH


def _stored_key(key: str) -> str:
    return key if len(key) <= KEY_LENGTH else "#" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def chunks(items: list[Any]) -> list[list[Any]]:
    return [items[start : start + _CHUNK] for start in range(0, len(items), _CHUNK)]


def _upsert(session: Session, model: type, rows: list[dict[str, Any]], keys: tuple[str, ...], changes: tuple[str, ...]) -> None:
    """Insert ``rows``, replacing ``changes`` of those whose ``keys`` exist: one statement per page."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:  # another database: one merge per row, slower but correct
        for row in rows:
            session.merge(model(**row))
        return
    statement = dialect_insert(model.__table__)  # Core: the ORM's bulk path costs more than the SQL
    statement = statement.on_conflict_do_update(index_elements=list(keys), set_={name: statement.excluded[name] for name in changes})
    session.execute(statement, rows)


__all__ = ["INVENTORY", "LevelChange", "PageCounts", "chunks", "Snapshot", "StreamBusy", "StreamKey", "StreamLost", "SyncStore", "plain_number"]
