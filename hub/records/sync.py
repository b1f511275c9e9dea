"""The tables of sync: checkpoints, synced records, inventory levels, their history and runs (snapshots)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from hub.records.base import Base, UTCDateTime, utcnow


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
        Index("ix_inventory_history_sku_at", "tenant", "sku", "at"),
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
    #: Where the change came from: ``sync`` (a run), ``push`` (an update sent), ``webhook`` (the source
    #: told), ``override`` (an operator; ``attributes`` has ``by`` and ``reason``).
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
            **({"by": self.attributes.get("by"), "reason": self.attributes.get("reason")} if self.source == "override" else {}),
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


class StockAlertState(Base):
    """Whether one SKU at one location is below its threshold now: an alert goes out when this turns on,
    so a level that stays low alerts once, and again only after it recovered."""

    __tablename__ = "hub_stock_alerts"

    tenant: Mapped[str] = mapped_column(String(100), primary_key=True)
    sku: Mapped[str] = mapped_column(String(255), primary_key=True)
    location: Mapped[str] = mapped_column(String(255), primary_key=True)
    low: Mapped[bool] = mapped_column(default=False)
    quantity: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    #: The source whose level crossed.
    provider: Mapped[str | None] = mapped_column(String(100))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The queued alert job of the last crossing.
    record_id: Mapped[str | None] = mapped_column(String(40))

    def to_dict(self) -> dict[str, Any]:
        return {
            "sku": self.sku, "location": self.location, "low": self.low, "quantity": plain_number(self.quantity),
            "threshold": plain_number(self.threshold), "provider": self.provider, "changedAt": self.changed_at.isoformat(),
            "alertId": self.record_id,
        }


class InventoryDiscrepancy(Base):
    """Two sources disagreeing about one SKU at one location (``provider`` < ``other`` by name). Open while
    they differ by more than the tolerance; ``resolved_at`` is set when they agree again."""

    __tablename__ = "hub_inventory_discrepancies"
    __table_args__ = (Index("ix_inventory_discrepancy_open", "tenant", "resolved_at"),)

    tenant: Mapped[str] = mapped_column(String(100), primary_key=True)
    sku: Mapped[str] = mapped_column(String(255), primary_key=True)
    location: Mapped[str] = mapped_column(String(255), primary_key=True)
    provider: Mapped[str] = mapped_column(String(100), primary_key=True)
    other: Mapped[str] = mapped_column(String(100), primary_key=True)
    quantity: Mapped[float | None] = mapped_column(Float)
    other_quantity: Mapped[float | None] = mapped_column(Float)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def to_dict(self) -> dict[str, Any]:
        quantities = {self.provider: plain_number(self.quantity), self.other: plain_number(self.other_quantity)}
        difference = None if self.quantity is None or self.other_quantity is None else plain_number(abs(self.quantity - self.other_quantity))
        return {
            "sku": self.sku, "location": self.location, "quantities": quantities, "difference": difference,
            "status": "resolved" if self.resolved_at else "open", "detectedAt": self.detected_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(), "resolvedAt": self.resolved_at.isoformat() if self.resolved_at else None,
        }

