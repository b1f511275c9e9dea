"""Retention of personal data: ``retention.recipient_days`` after a notification finished, its recipients'
addresses (emails, phone numbers, chat handles) and names are masked in the record's payload and in its
per-recipient outcomes. The record itself stays (status, counts, timings, provider ids): an audit of what
was sent, without whom it was sent to.

A periodic job (once a minute, see :meth:`hub.runtime.jobs.JobRegistry.register_periodic`) does it in
batches; masking is marked in the payload, so a record is masked once even when several hub processes run
the job, and a restarted process walks past the masked ones without writing.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update

from hub.observability import mask_email, mask_phone
from hub.records import IdempotentRequest, RecipientOutcome, Record
from hub.records.base import utcnow
from hub.runtime import Runtime

log = logging.getLogger("hub.retention")

#: Statuses after which a notification is never sent again (its addresses are no longer needed).
FINISHED = ("succeeded", "partial", "failed", "dead")
#: The payload key that marks a record as masked (and when).
MASKED_MARK = "recipientsMaskedAt"
#: Recipient fields that identify a person, by how they are masked.
_EMAIL_FIELDS = ("email",)
_PHONE_FIELDS = ("phone",)
_OTHER_FIELDS = ("name", "channel", "address")


def mask_address(value: str | None) -> str | None:
    """An address kept recognisable for support (``a***@shop.example``, ``+*******2671``) but no longer usable."""
    if not value or "*" in value:  # empty, or masked already (masking twice would lose the shape)
        return value
    if "@" in value:
        masked = mask_email(value)
        return masked if masked != value else "***"
    if value.lstrip("+").replace(" ", "").isdigit():
        return mask_phone(value)
    return "***"


def _mask_name(value: Any) -> Any:
    return f"{value[0]}***" if isinstance(value, str) and value and not value.endswith("***") else value


def mask_recipient(recipient: dict[str, Any]) -> dict[str, Any]:
    masked = dict(recipient)
    for key in _EMAIL_FIELDS + _PHONE_FIELDS:
        if isinstance(masked.get(key), str):
            masked[key] = mask_address(masked[key])
    for key in _OTHER_FIELDS:
        if key in masked:
            masked[key] = _mask_name(masked[key]) if key == "name" else ("***" if masked[key] else masked[key])
    return masked


class RecipientRetention:
    """Masks recipients of notifications finished more than ``retention.recipient_days`` ago."""

    #: Records masked per transaction, and the time one run may take (the rest waits for the next minute).
    batch_size = 200
    time_budget = 20.0

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        #: (finished_at, id) of the last record this process looked at: each run goes on from there.
        self._after: tuple[datetime, str] | None = None
        runtime.jobs.register_periodic(self.mask_expired)

    @property
    def days(self) -> float | None:
        return self.runtime.config["retention"]["recipient_days"]

    def mask_expired(self, now: datetime | None = None) -> int:
        """The periodic job: mask every finished notification past the retention period. Returns how many."""
        if self.days is None:
            return 0
        cutoff = (now or utcnow()) - timedelta(days=self.days)
        started = time.monotonic()
        masked = 0
        while time.monotonic() - started < self.time_budget:
            batch = self._next_batch(cutoff)
            if not batch:
                break
            masked += self._mask(batch)
        if masked:
            log.info("retention: masked the recipients of %d notification(s) finished before %s", masked, cutoff.isoformat())
        return masked

    @staticmethod
    def _mask_answer(session: Any, record: Record) -> None:
        """The answer stored for the record's ``Idempotency-Key`` is its view, recipients included: masked
        too (kept, so a late retry with the key is still answered, not refused)."""
        stored = session.get(IdempotentRequest, (record.tenant, record.idempotency_key))
        data = (stored.response or {}).get("data") if stored is not None else None
        if not isinstance(data, dict) or data.get("messageId") != record.id:
            return
        recipients = data.get("recipients")
        if isinstance(recipients, list):
            masked = [
                {**item, "address": mask_address(item.get("address")), "name": _mask_name(item.get("name"))} if isinstance(item, dict) else item
                for item in recipients
            ]
            stored.response = {**stored.response, "data": {**data, "recipients": masked}}

    def _next_batch(self, cutoff: datetime) -> list[Record]:
        query = (
            select(Record)
            .where(Record.kind == "notification", Record.status.in_(FINISHED), Record.finished_at.is_not(None), Record.finished_at < cutoff)
            .order_by(Record.finished_at, Record.id)
            .limit(self.batch_size)
        )
        if self._after is not None:
            at, record_id = self._after
            query = query.where(or_(Record.finished_at > at, and_(Record.finished_at == at, Record.id > record_id)))
        with self.runtime.db.session() as session:
            records = list(session.scalars(query))
            session.expunge_all()
        if records:
            self._after = (records[-1].finished_at, records[-1].id)  # type: ignore[assignment]
        return records

    def _mask(self, records: list[Record]) -> int:
        pending = [record for record in records if MASKED_MARK not in (record.payload or {})]
        if not pending:
            return 0
        stamp = utcnow().isoformat()
        with self.runtime.db.session() as session:
            for record in pending:
                payload = dict(record.payload)
                payload["recipients"] = [mask_recipient(r) if isinstance(r, dict) else r for r in payload.get("recipients", [])]
                payload[MASKED_MARK] = stamp
                # Conditional on the status: a record replayed meanwhile (dead -> queued) keeps its addresses.
                session.execute(update(Record).where(Record.id == record.id, Record.status.in_(FINISHED)).values(payload=payload))
                if record.idempotency_key:
                    self._mask_answer(session, record)
            rows = session.execute(
                select(RecipientOutcome.record_id, RecipientOutcome.index, RecipientOutcome.address, RecipientOutcome.name).where(
                    RecipientOutcome.record_id.in_([record.id for record in pending])
                )
            ).all()
            if rows:
                # One executemany (an UPDATE by primary key per row): a bulk send has thousands of outcomes.
                session.execute(
                    update(RecipientOutcome),
                    [{"record_id": record_id, "index": index, "address": mask_address(address), "name": _mask_name(name)} for record_id, index, address, name in rows],
                )
        return len(pending)
