"""The tables of operations: alert incidents and tenants' stored provider credentials."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hub.records.base import Base, UTCDateTime, utcnow


class AlertIncident(Base):
    """One incident an operations alert was sent for (``key``: what and where, ``circuit:stripe``); open
    until ``resolved_at``. The row is the lock: only the process that inserts it (or resolves it) notifies."""

    __tablename__ = "hub_alert_incidents"
    __table_args__ = (Index("ix_alert_incident_open", "key", "resolved_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(40))
    summary: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The open incident's key while open (unique), ``None`` once resolved: one open incident per key.
    open_key: Mapped[str | None] = mapped_column(String(255), unique=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "key": self.key, "kind": self.kind, "summary": self.summary, "openedAt": self.opened_at.isoformat(),
            "resolvedAt": self.resolved_at.isoformat() if self.resolved_at else None, "status": "resolved" if self.resolved_at else "open",
        }


class StoredCredential(Base):
    """A tenant's own settings for one provider (API keys, webhook secrets), encrypted at rest. The previous
    version is kept until ``previous_until`` so webhooks the provider signed with the old secret still verify."""

    __tablename__ = "hub_credentials"

    tenant: Mapped[str] = mapped_column(String(100), primary_key=True)
    provider: Mapped[str] = mapped_column(String(100), primary_key=True)
    ciphertext: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1)
    fields: Mapped[list[str]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(200))
    previous_ciphertext: Mapped[str | None] = mapped_column(Text)
    previous_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def to_dict(self) -> dict[str, Any]:
        """What may be shown: names of the settings, never their values."""
        return {
            "provider": self.provider, "fields": self.fields, "version": self.version, "updatedAt": self.updated_at.isoformat(),
            "updatedBy": self.updated_by, "previousAcceptedUntil": self.previous_until.isoformat() if self.previous_until else None,
        }
