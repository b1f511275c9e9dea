"""Persistence (SQLAlchemy): tokens, delivery records, files, audit trail, idempotency keys, webhook
events and inventory snapshots. SQLite by default, PostgreSQL when ``DATABASE_URL`` says so."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """Ids that say what they are (``ntf_``, ``pay_``...) and sort roughly by time."""
    return f"{prefix}_{int(utcnow().timestamp() * 1000):x}{secrets.token_hex(6)}"


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC and always hands back aware datetimes (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class ApiToken(Base):
    __tablename__ = "hub_api_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    #: Admin tokens may also call hub-wide operations (initialize, shutdown).
    admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Record(Base):
    """One accepted unit of work: a notification, payment, refund, upload, event or sync job."""

    __tablename__ = "hub_records"
    __table_args__ = (
        UniqueConstraint("tenant", "kind", "idempotency_key", name="uq_record_idempotency"),
        Index("ix_record_status_lease", "status", "lease_until"),
        Index("ix_record_tenant_kind_created", "tenant", "kind", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    service: Mapped[str] = mapped_column(String(40))
    #: queued -> running -> succeeded | partial | failed | dead
    status: Mapped[str] = mapped_column(String(20), default="queued")
    provider: Mapped[str | None] = mapped_column(String(100))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_id: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    attempt_log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    provider_reference: Mapped[str | None] = mapped_column(String(255), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenantId": self.tenant,
            "kind": self.kind,
            "service": self.service,
            "status": self.status,
            "provider": self.provider,
            # Tries of the same work: a failed-over call is two; jobAttempts counts runs of the record.
            "attempts": max(self.attempts, _most_tries(self.attempt_log or [])),
            "jobAttempts": self.attempts,
            "idempotencyKey": self.idempotency_key,
            "request": self.payload,
            "result": self.result,
            "error": self.error,
            "attemptLog": self.attempt_log,
            "providerReference": self.provider_reference,
            "createdAt": self.created_at.isoformat() if self.created_at else None,
            "updatedAt": self.updated_at.isoformat() if self.updated_at else None,
            "finishedAt": self.finished_at.isoformat() if self.finished_at else None,
        }


def _most_tries(attempt_log: list[dict[str, Any]]) -> int:
    """The most provider tries any one piece of the work took (a bulk send's batch, or the whole call)."""
    tries: dict[Any, int] = {}
    for entry in attempt_log:
        if entry.get("provider"):
            piece = (entry.get("channel"), entry.get("batch"))
            tries[piece] = tries.get(piece, 0) + 1
    return max(tries.values(), default=0)


class ProviderReference(Base):
    """Maps a provider's message/transaction id back to our record (and recipient), for webhooks."""

    __tablename__ = "hub_provider_refs"

    provider: Mapped[str] = mapped_column(String(100), primary_key=True)
    reference: Mapped[str] = mapped_column(String(255), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(40), ForeignKey("hub_records.id"), index=True)
    recipient_index: Mapped[int | None] = mapped_column(Integer)


class RecipientOutcome(Base):
    """One recipient of a notification: written once per batch in bulk (no rewriting of a growing
    document), updated in place by delivery-status webhooks."""

    __tablename__ = "hub_recipient_outcomes"

    record_id: Mapped[str] = mapped_column(String(40), ForeignKey("hub_records.id"), primary_key=True)
    index: Mapped[int] = mapped_column("idx", Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(20))
    address: Mapped[str | None] = mapped_column(String(320))
    #: sent | queued | failed
    status: Mapped[str] = mapped_column(String(20))
    provider: Mapped[str | None] = mapped_column(String(100))
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    #: What the provider reported later through a webhook (delivered, bounced...).
    delivery_status: Mapped[str | None] = mapped_column(String(40))
    delivery_detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def to_dict(self) -> dict[str, Any]:
        data = self.row_view({"idx": self.index, "name": self.name, "channel": self.channel, "address": self.address, "status": self.status, "provider": self.provider, "provider_message_id": self.provider_message_id, "error": self.error})
        if self.delivery_status:
            data.update(deliveryStatus=self.delivery_status, deliveryDetail=self.delivery_detail, deliveryUpdatedAt=self.updated_at.isoformat())
        return data

    @staticmethod
    def row_view(row: dict[str, Any]) -> dict[str, Any]:
        """The API view of an outcome row written as a dict (the bulk insert's form), without reading it back."""
        return {
            "index": row["idx"],
            "name": row["name"],
            "channel": row["channel"],
            "address": row["address"],
            "status": row["status"],
            "provider": row["provider"],
            "providerMessageId": row["provider_message_id"],
            "error": row["error"],
        }


class FileRecord(Base):
    __tablename__ = "hub_files"
    __table_args__ = (Index("ix_file_tenant_created", "tenant", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(1024), unique=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    checksum: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(100))
    file_type: Mapped[str | None] = mapped_column(String(50))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    provider: Mapped[str] = mapped_column(String(100))
    url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def to_dict(self, download_url: str | None = None) -> dict[str, Any]:
        return {
            "fileId": self.id,
            "fileName": self.filename,
            "fileKey": self.key,
            "fileType": self.file_type,
            "category": self.category,
            "url": self.url or download_url,
            "size": self.size,
            "contentType": self.content_type,
            "checksum": self.checksum,
            "metadata": self.meta,
            "provider": self.provider,
            "uploadedAt": self.created_at.isoformat().replace("+00:00", "Z"),
        }


class AuditEntry(Base):
    __tablename__ = "hub_audit"
    __table_args__ = (
        Index("ix_audit_tenant_at", "tenant", "at"),
        Index("ix_audit_provider_at", "provider", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    tenant: Mapped[str | None] = mapped_column(String(100))
    request_id: Mapped[str | None] = mapped_column(String(64))
    capability: Mapped[str | None] = mapped_column(String(20))
    service: Mapped[str | None] = mapped_column(String(40))
    provider: Mapped[str | None] = mapped_column(String(100))
    operation: Mapped[str] = mapped_column(String(60))
    outcome: Mapped[str] = mapped_column(String(20))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    record_id: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[str | None] = mapped_column(Text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "tenantId": self.tenant,
            "requestId": self.request_id,
            "capability": self.capability,
            "service": self.service,
            "provider": self.provider,
            "operation": self.operation,
            "outcome": self.outcome,
            "latencyMs": self.latency_ms,
            "recordId": self.record_id,
            "detail": self.detail,
        }


class IdempotentRequest(Base):
    __tablename__ = "hub_idempotency"

    tenant: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookEventSeen(Base):
    __tablename__ = "hub_webhook_events"

    provider: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StoredTemplate(Base):
    """A tenant's own notification template, saved through the API."""

    __tablename__ = "hub_templates"

    tenant: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    channel: Mapped[str] = mapped_column(String(20), primary_key=True)
    subject: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    blocks: Mapped[str | None] = mapped_column(Text)
    required: Mapped[list[str]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


# --- sync: checkpoints, synced records, inventory levels and their history ----------------------


class SyncCheckpoint(Base):
    """Where the next sync of one stream starts, per tenant, provider and options (``scope``), and which
    job is syncing it now: a job takes the stream with a lease, so two runs never interleave cursors."""

    __tablename__ = "hub_sync_checkpoints"

    tenant: Mapped[str] = mapped_column(String(100), primary_key=True)
    provider: Mapped[str] = mapped_column(String(100), primary_key=True)
    stream: Mapped[str] = mapped_column(String(100), primary_key=True)
    #: ``""`` without options, else a hash of them: each set of options keeps its own cursor.
    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: The provider's cursor after the last stored page; ``None``: start from the beginning.
    cursor: Mapped[str | None] = mapped_column(Text)
    #: Whether the last page stored said ``has_more`` (a run stopped by its page limit, or interrupted).
    has_more: Mapped[bool] = mapped_column(default=False)
    pages: Mapped[int] = mapped_column(Integer, default=0)
    records: Mapped[int] = mapped_column(Integer, default=0)
    #: The sync job holding the stream, until ``lease_until``.
    record_id: Mapped[str | None] = mapped_column(String(40))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: When a run last read the stream to its end.
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "dataType": self.stream,
            "options": self.options,
            "cursor": self.cursor,
            "hasMore": self.has_more,
            "pages": self.pages,
            "records": self.records,
            "jobId": self.record_id,
            "updatedAt": self.updated_at.isoformat() if self.updated_at else None,
            "completedAt": self.completed_at.isoformat() if self.completed_at else None,
        }


class SyncedRecord(Base):
    """One record of a non-inventory stream (a supplier, a customer...), by its primary key: a record
    synced again replaces the earlier version."""

    __tablename__ = "hub_sync_records"
    __table_args__ = (Index("ix_sync_record_job", "record_id"),)

    tenant: Mapped[str] = mapped_column(String(100), primary_key=True)
    provider: Mapped[str] = mapped_column(String(100), primary_key=True)
    stream: Mapped[str] = mapped_column(String(100), primary_key=True)
    #: :func:`hub.capabilities.record_key` of the record (hashed when longer than 255 characters).
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The sync job that wrote this version.
    record_id: Mapped[str | None] = mapped_column(String(40))
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InventoryLevel(Base):
    """The current quantity of one SKU at one location in one external system (provider)."""

    __tablename__ = "hub_inventory_levels"

    tenant: Mapped[str] = mapped_column(String(100), primary_key=True)
    provider: Mapped[str] = mapped_column(String(100), primary_key=True)
    sku: Mapped[str] = mapped_column(String(255), primary_key=True)
    location: Mapped[str] = mapped_column(String(255), primary_key=True)
    quantity: Mapped[float | None] = mapped_column(Float)
    #: The record's other fields as the source sent them (``updated_at``, a bin, a name...).
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The sync job or push that set this level.
    record_id: Mapped[str | None] = mapped_column(String(40))

    def to_dict(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "location": self.location,
            "provider": self.provider,
            "quantity": plain_number(self.quantity),
            "attributes": self.attributes,
            "updatedAt": self.updated_at.isoformat(),
            "recordId": self.record_id,
        }


class InventoryChange(Base):
    """One observed level: a row of a sync run (grouped by ``snapshot_id``) or an update pushed to the
    provider (``source="push"``). The history of a level is its rows by ``id``."""

    __tablename__ = "hub_inventory_history"
    __table_args__ = (
        Index("ix_inventory_history_snapshot", "snapshot_id", "id"),
        Index("ix_inventory_history_item", "tenant", "provider", "sku", "location", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(100))
    provider: Mapped[str] = mapped_column(String(100))
    sku: Mapped[str] = mapped_column(String(255))
    location: Mapped[str] = mapped_column(String(255))
    quantity: Mapped[float | None] = mapped_column(Float)
    #: The level before (``None`` when the hub had none).
    previous: Mapped[float | None] = mapped_column(Float)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: ``sync`` or ``push``.
    source: Mapped[str] = mapped_column(String(10), default="sync")
    snapshot_id: Mapped[str | None] = mapped_column(String(40))
    record_id: Mapped[str | None] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def item(self) -> dict[str, Any]:
        """The row as the source sent it: ``sku``, ``location``, ``quantity`` and its other fields."""
        return {"sku": self.sku, "location": self.location, "quantity": plain_number(self.quantity), **(self.attributes or {})}

    def to_dict(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "location": self.location,
            "provider": self.provider,
            "quantity": plain_number(self.quantity),
            "previous": plain_number(self.previous),
            "source": self.source,
            "snapshotId": self.snapshot_id,
            "recordId": self.record_id,
            "at": self.at.isoformat(),
        }


class InventorySnapshot(Base):
    """One inventory sync run of one provider; its items are the history rows with its id."""

    __tablename__ = "hub_inventory_runs"
    __table_args__ = (Index("ix_inventory_run_tenant_taken", "tenant", "taken_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100))
    provider: Mapped[str] = mapped_column(String(100))
    record_id: Mapped[str | None] = mapped_column(String(40))
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    item_count: Mapped[int] = mapped_column(Integer, default=0)
    #: Whether the run started from the beginning (a first run or a full resync) rather than a cursor.
    full: Mapped[bool] = mapped_column(default=False)

    def to_dict(self, items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "tenantId": self.tenant,
            "provider": self.provider,
            "recordId": self.record_id,
            "takenAt": self.taken_at.isoformat(),
            "itemCount": self.item_count,
            "full": self.full,
        }
        if items is not None:
            data["items"] = items
        return data


def plain_number(value: float | None) -> int | float | None:
    """Quantities are stored as floats; whole ones are shown as integers (``3``, not ``3.0``)."""
    if value is not None and float(value).is_integer():
        return int(value)
    return value


class Lease(Base):
    """A named lease (``subscription:<name>``) one hub process holds at a time, renewed while its worker
    runs and expiring soon after the process dies, so another process takes over."""

    __tablename__ = "hub_leases"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    #: ``<host>:<pid>:<random>`` of the holder; None when released.
    owner: Mapped[str | None] = mapped_column(String(200))
    #: Fencing token: one more at every acquisition, so a holder that lost the lease cannot renew it.
    token: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    acquired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    renewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: A paused lease is acquired by nobody, and its holder stops at the next renewal.
    paused: Mapped[bool] = mapped_column(default=False)
    #: What the holder's worker last reported (status, counts, last error), written with each renewal.
    note: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class DeadLetter(Base):
    """A consumed record whose handler kept failing: recorded here (and optionally published to a
    dead-letter topic), then committed past so the subscription moves on."""

    __tablename__ = "hub_dead_letters"
    __table_args__ = (
        # A record dead-lettered again after a crash (before its commit) stays one row.
        UniqueConstraint("subscription", "topic", "partition", "offset", name="uq_dead_letter_position"),
        Index("ix_dead_letter_tenant_created", "tenant", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100))
    subscription: Mapped[str] = mapped_column(String(200))
    group_id: Mapped[str] = mapped_column(String(255))
    provider: Mapped[str] = mapped_column(String(100))
    topic: Mapped[str] = mapped_column(String(255))
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    key: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    value: Mapped[Any] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: Where it was published as a dead letter (``{"topic", "partition", "offset"}``), if it was.
    published: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenantId": self.tenant,
            "subscription": self.subscription,
            "groupId": self.group_id,
            "provider": self.provider,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key,
            "headers": self.headers,
            "value": self.value,
            "error": self.error,
            "attempts": self.attempts,
            "published": self.published,
            "createdAt": self.created_at.isoformat(),
        }


def normalise_database_url(url: str | None, data_dir: str) -> str:
    if not url:
        return f"sqlite:///{os.path.join(data_dir, 'hub.db')}"
    # Plain postgresql:// means psycopg2 to SQLAlchemy; we ship psycopg 3.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Database:
    """The engine and session factory, plus the few queries several modules share."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
            _serialise_sqlite_writers(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_all(self) -> None:
        Base.metadata.create_all(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self.sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def claim(self, record_id: str, lease_seconds: int) -> Record | None:
        """Atomically move a record to ``running`` for this worker; None if another worker holds it or
        it is already finished. This is what makes a job run once even if it was queued twice."""
        now = utcnow()
        with self.session() as session:
            claimed = session.execute(
                update(Record)
                .where(Record.id == record_id)
                .where(
                    (Record.status == "queued")
                    | ((Record.status == "running") & ((Record.lease_until.is_(None)) | (Record.lease_until < now)))
                )
                .values(status="running", lease_until=now + timedelta(seconds=lease_seconds), attempts=Record.attempts + 1)
            ).rowcount
            if not claimed:
                return None
            return session.get(Record, record_id)

    def unfinished(self, older_than_seconds: float = 0) -> list[str]:
        """Records that were accepted but not finished: queued ones, and running ones whose lease lapsed
        (their worker died). Used at start-up and periodically so nothing accepted is lost."""
        now = utcnow()
        cutoff = now - timedelta(seconds=older_than_seconds)
        with self.session() as session:
            rows = session.execute(
                select(Record.id).where(
                    # A queued record with a future lease is a retry scheduled for later.
                    ((Record.status == "queued") & (Record.updated_at <= cutoff) & ((Record.lease_until.is_(None)) | (Record.lease_until < now)))
                    | ((Record.status == "running") & (Record.lease_until < now))
                )
            )
            return [row[0] for row in rows]


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _serialise_sqlite_writers(engine: Engine) -> None:
    """SQLite has one writer at a time; a thread that finds the database locked sleeps in SQLite's busy
    handler (1, 2, 5... 100 ms steps), which under concurrency costs far more than the writes. So the
    threads of one process take turns with a lock from their first write statement until the driver's
    COMMIT or ROLLBACK has returned, and SQLite's own locking only arbitrates between processes."""
    lock = threading.Lock()
    holder = threading.local()  # a session's statements and its commit run on one thread
    dialect = engine.dialect

    def before_execute(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not getattr(holder, "writing", False) and statement.lstrip()[:7].upper().startswith(_WRITES):
            lock.acquire()
            holder.writing = True

    def released(end_transaction: Any) -> Any:
        def end(dbapi_connection: Any) -> None:
            try:
                end_transaction(dbapi_connection)
            finally:
                if getattr(holder, "writing", False):
                    holder.writing = False
                    lock.release()

        return end

    event.listen(engine, "before_cursor_execute", before_execute)
    # The engine's commit event fires before the driver's COMMIT: release only once it has returned.
    dialect.do_commit = released(dialect.do_commit)  # type: ignore[method-assign]
    dialect.do_rollback = released(dialect.do_rollback)  # type: ignore[method-assign]


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    # WAL lets the CLI, the API threads and the workers read while one writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Truncate the WAL after a checkpoint: under steady load it otherwise keeps its largest size for good.
    cursor.execute("PRAGMA journal_size_limit=16777216")
    cursor.close()
