"""The tables of the core: tokens, records of accepted work, recipient outcomes, provider references, files,
audit, idempotency keys, seen webhook events and tenants' templates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from hub.records.base import Base, UTCDateTime, utcnow


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
