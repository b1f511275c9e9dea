"""The tables of publish: leases (one holder per subscription) and dead letters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from hub.records.base import Base, UTCDateTime, utcnow


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


class StoredEventSchema(Base):
    """A tenant's own JSON Schema for an event type's data, registered through the API (one row per version)."""

    __tablename__ = "hub_event_schemas"

    tenant: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    schema: Mapped[dict[str, Any]] = mapped_column(JSON)
    breaking: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StoredSubscription(Base):
    """A subscription a tenant defined through the API (``POST /events/subscriptions``): every hub process
    runs it as one from ``hub.yaml`` (one of them at a time, by its lease)."""

    __tablename__ = "hub_subscriptions"

    #: Lease names are global, so subscription names are unique across tenants.
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100), index=True)
    #: The subscription as hub.yaml would hold it (validated by SubscriptionSchema).
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
