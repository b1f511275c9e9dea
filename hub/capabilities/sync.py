"""Sync: pages of records from an external system, and quantity updates pushed to it."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

#: The primary key of inventory records: one level per SKU and location (and source).
INVENTORY_KEY = ("sku", "location")
#: The primary key of every other stream's records unless the provider names another.
DEFAULT_KEY = ("id",)
#: How a :class:`InventoryUpdate` changes a level: ``set`` it to ``quantity``, or ``adjust`` it by ``quantity``.
PUSH_MODES = ("set", "adjust")
#: The outcome of one pushed update, as for notify's recipients.
PUSH_STATUSES = ("sent", "failed", "retry")
#: The ``type`` of a :class:`hub.capabilities.WebhookEvent` from a sync source that reports a level
#: (``details``: ``sku``, ``location``, ``quantity``, optionally ``updatedAt`` as ISO 8601): the core
#: sets that source's stored level, as a sync row would, with ``source="webhook"`` in the history.
INVENTORY_LEVEL_EVENT = "inventory.level"


@dataclass
class SyncRequest:
    """One page of a stream, asked for by the core's page loop.

    The core calls :func:`hub.hookspecs.sync` again with the returned ``cursor`` while the result says
    ``has_more``, storing each page and saving the cursor after it, per tenant, provider and stream.
    """

    id: str
    tenant: str
    #: The stream: ``inventory``, ``suppliers``, ``customers``, ``orders``, ``sales``, ``shipments``...
    data_type: str
    options: dict[str, Any] = field(default_factory=dict)
    #: Where to continue: the ``cursor`` of the previous page or run, exactly as the provider returned
    #: it; ``None`` means from the beginning (a first run, or a full resync).
    cursor: str | None = None
    #: The most records to return in this page (fewer is fine).
    page_size: int = 500


@dataclass
class SyncResult:
    """One page of records."""

    records: list[dict[str, Any]]
    #: Opaque position after the last record of this page, handed back as ``SyncRequest.cursor`` for
    #: the next page (or the next run, when ``has_more`` is false). ``None``: the source has no
    #: position, and the next run starts from the beginning again.
    cursor: str | None = None
    #: ``True`` when more records follow now: the core asks again with ``cursor``. ``False`` when
    #: the stream is read to its end for this run.
    has_more: bool = False
    #: The record fields that identify a record in this stream; empty means the default:
    #: :data:`INVENTORY_KEY` for ``inventory`` (always), :data:`DEFAULT_KEY` for every other stream.
    primary_key: tuple[str, ...] = ()
    #: Records gone from the source since the cursor (deleted, or an aggregate row that no longer applies):
    #: each a dict with at least the primary-key fields. The core removes its stored copies in the same
    #: transaction as the page (for inventory, the source's level, with a history row of quantity ``None``).
    deleted: list[dict[str, Any]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.records)


def primary_key_of(data_type: str, declared: tuple[str, ...] | list[str] = ()) -> tuple[str, ...]:
    """The primary key the core deduplicates ``data_type`` records by (see :attr:`SyncResult.primary_key`)."""
    if data_type == "inventory":
        return INVENTORY_KEY
    return tuple(declared) or DEFAULT_KEY


def record_key(record: dict[str, Any], key_fields: tuple[str, ...]) -> str:
    """The string a record is stored under: its key fields' values as a JSON list, or, for a record
    lacking one of them, ``#`` and a hash of its content (identical records then collapse into one)."""
    if all(record.get(name) is not None for name in key_fields):
        return json.dumps([str(record[name]) for name in key_fields], ensure_ascii=False, separators=(",", ":"))
    content = json.dumps(record, default=str, sort_keys=True, separators=(",", ":"))
    return "#" + hashlib.sha256(content.encode("utf-8")).hexdigest()


@dataclass
class InventoryUpdate:
    """One quantity change to send to the external system."""

    sku: str
    location: str
    #: The new level (``mode="set"``) or the change, positive or negative (``mode="adjust"``).
    quantity: int | float
    #: ``set`` or ``adjust`` (:data:`PUSH_MODES`).
    mode: str = "set"
    #: Why (``"received"``, ``"correction"``, ``"sale"``...), for sources that record a reason.
    reason: str | None = None
    #: The hub's id of this update, stable across retries (also when it is retried alone): use it as the
    #: system's idempotency key where there is one, so a retried ``adjust`` is applied once.
    id: str | None = None


@dataclass
class InventoryPush:
    """Quantity updates for one external system, from ``POST /inventory/updates`` or the facade."""

    #: The hub's id of the push (a later attempt with the updates left to retry has the same id).
    id: str
    tenant: str
    updates: list[InventoryUpdate]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class PushItemResult:
    """The outcome of one update: ``sent`` (applied), ``failed`` (refused for good: an unknown SKU or
    location, a quantity the system does not accept) or ``retry`` (not applied because of a transient
    problem: the core sends it again later)."""

    sku: str
    location: str
    status: str
    #: The level after the update, when the system says (the hub then records it as the new level).
    quantity: int | float | None = None
    error: str | None = None


@dataclass
class PushResult:
    """What ``sync_push`` returns: one :class:`PushItemResult` per update, in order."""

    results: list[PushItemResult]

    @property
    def sent(self) -> int:
        return sum(1 for result in self.results if result.status == "sent")

    @classmethod
    def cut_short(cls, push: InventoryPush, results: list[PushItemResult], error: Exception) -> PushResult:
        """For a provider that applies one update at a time and was stopped by ``error`` after
        ``len(results)`` of them: with nothing applied yet, raise ``error`` (a retry applies nothing
        twice); otherwise the rest are ``retry``, which the core sends again later."""
        if not any(result.status == "sent" for result in results):
            raise error from None
        logging.getLogger("hub.provider").warning(
            "push %s stopped after %d of %d update(s): %s", push.id, len(results), len(push.updates), error
        )
        rest = push.updates[len(results) :]
        retry = [PushItemResult(update.sku, update.location, "retry", error=str(error)) for update in rest]
        return cls([*results, *retry])
