"""Persistence (SQLAlchemy): one module per part of the hub's tables -- the core's
(:mod:`~hub.records.core`: tokens, records, outcomes, files, audit, idempotency keys, templates), sync's
(:mod:`~hub.records.sync`) and publish's (:mod:`~hub.records.events`) -- and the database
(:mod:`~hub.records.database`), all importable from here. SQLite by default, PostgreSQL when
``DATABASE_URL`` says so."""

from __future__ import annotations

from hub.records.base import (
    Base,
    UTCDateTime,
    new_id,
    utcnow,
)
from hub.records.core import (
    ApiToken,
    AuditEntry,
    FileRecord,
    IdempotentRequest,
    ProviderReference,
    RecipientOutcome,
    Record,
    StoredTemplate,
    WebhookEventSeen,
)
from hub.records.database import (
    Database,
    insert_ignoring_duplicates,
    normalise_database_url,
)
from hub.records.events import (
    DeadLetter,
    Lease,
    StoredEventSchema,
    StoredSubscription,
)
from hub.records.ops import AlertIncident, StoredCredential
from hub.records.sync import (
    InventoryChange,
    InventoryDiscrepancy,
    InventoryLevel,
    InventorySnapshot,
    StockAlertState,
    SyncCheckpoint,
    SyncedRecord,
    plain_number,
)

__all__ = [
    "AlertIncident",
    "ApiToken",
    "AuditEntry",
    "Base",
    "Database",
    "DeadLetter",
    "FileRecord",
    "IdempotentRequest",
    "InventoryChange",
    "InventoryLevel",
    "InventoryDiscrepancy",
    "InventorySnapshot",
    "StockAlertState",
    "StoredCredential",
    "Lease",
    "ProviderReference",
    "RecipientOutcome",
    "Record",
    "StoredEventSchema",
    "StoredSubscription",
    "StoredTemplate",
    "SyncCheckpoint",
    "SyncedRecord",
    "UTCDateTime",
    "WebhookEventSeen",
    "new_id",
    "insert_ignoring_duplicates",
    "normalise_database_url",
    "plain_number",
    "utcnow",
]
