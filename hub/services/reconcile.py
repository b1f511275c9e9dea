"""Reconciling payments whose outcome is unknown: a periodic job looks each one up at its gateway (with
backoff), and a payment or refund left ``running`` by a process that died is looked up, never failed."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import or_, select, update

from hub.capabilities import PaymentLookup
from hub.errors import NoProviderError, ProviderError
from hub.records import Record, utcnow
from hub.runtime import describe

if TYPE_CHECKING:
    from hub.services.pay import PayService

log = logging.getLogger("hub.pay")


class PaymentReconciler:
    #: A payment whose answer was lost and that the gateway does not know is marked failed only after this
    #: long (the request may still be on its way); until then it stays ``processing``.
    unknown_grace = timedelta(minutes=10)
    #: The reconciliation job's backoff between two lookups of one payment: doubling, up to the maximum.
    reconcile_first = timedelta(minutes=1)
    reconcile_max = timedelta(hours=1)

    def __init__(self, pay: PayService) -> None:
        self.pay = pay
        self.runtime = runtime = pay.runtime
        # A record left "running" by a process that died mid-call: its outcome is unknown, so look it up.
        runtime.jobs.register_handler("payment", self._recover_payment)
        runtime.jobs.register_handler("refund", self._recover_refund)
        runtime.jobs.register_periodic(self.reconcile_due)

    def reconcile_due(self, limit: int = 100) -> int:
        """The periodic job: look up every payment still ``processing`` whose next check is due, and send
        again every refund whose answer was lost (same idempotency key). Each record is claimed first (its
        next check moved forward) so that several hub processes never check one twice. Returns how many."""
        now = utcnow()
        with self.runtime.db.session() as session:
            due = list(
                session.scalars(
                    select(Record.id)
                    .where(
                        Record.kind.in_(("payment", "refund")),
                        Record.status == "processing",
                        or_(Record.lease_until.is_(None), Record.lease_until <= now),
                    )
                    .order_by(Record.lease_until)
                    .limit(limit)
                )
            )
        checked = 0
        for record_id in due:
            record = self._claim_check(record_id)
            if record is None:
                continue  # another process took it
            checked += 1
            try:
                if record.kind == "payment":
                    self.reconcile(record)
                else:
                    self.pay._send_refund(
                        record, self.runtime.ledger.get(record.payload["paymentId"], record.tenant, "payment")
                    )
            except Exception:  # one bad record must not stop the others
                log.exception("reconciling %s failed", record_id)
        return checked

    def _claim_check(self, record_id: str) -> Record | None:
        now = utcnow()
        with self.runtime.db.session() as session:
            record = session.get(Record, record_id)
            if record is None:
                return None
            wait = min(self.reconcile_first * (2 ** min(record.attempts or 0, 10)), self.reconcile_max)
            claimed = session.execute(
                update(Record)
                .where(
                    Record.id == record_id,
                    Record.status == "processing",
                    or_(Record.lease_until.is_(None), Record.lease_until <= now),
                )
                .values(lease_until=now + wait, attempts=Record.attempts + 1)
            ).rowcount
            return session.get(Record, record_id) if claimed else None

    def reconcile(self, record: Record) -> Record:
        """Ask the payment's gateway (or, if the hub never learnt which, each candidate) for its status now and
        apply it. A payment whose answer was lost and which the gateway does not have is failed only after
        :attr:`unknown_grace`; a lookup that fails leaves everything as it is."""
        payload = record.payload
        lookup = PaymentLookup(
            tenant=record.tenant,
            payment_id=record.id,
            transaction_id=record.provider_reference,
            idempotency_key=gateway_key(record),
            order_id=payload.get("order_id"),
            amount=Decimal(payload["amount"]),
            currency=payload.get("currency"),
        )
        gateways = (
            [record.provider]
            if record.provider
            else self.pay.gateway_providers(payload.get("gateway"), record.tenant, capture=payload.get("capture", True))
        )
        errors = []
        for gateway in gateways:
            try:
                found = self.runtime.calls.payment_status(
                    record.tenant, lookup, provider=gateway, record_id=record.id
                ).result
            except (ProviderError, NoProviderError) as error:
                errors.append(f"{gateway}: {describe(error)}")
                continue
            if found is not None:
                return self.pay._apply_result(record.id, gateway, found)
        if record.status != "processing":
            return record  # a refresh of a payment the gateway no longer answers for: keep what is known
        if errors or record.provider_reference:
            note = "; ".join(errors) or "the gateway has no payment with this transaction id"
            log.warning("payment %s: status lookup did not settle it (%s)", record.id, note)
            return record
        if utcnow() - record.created_at >= self.unknown_grace:
            result = {key: value for key, value in (record.result or {}).items() if key != "outcomeUnknown"}
            error = f"{', '.join(gateways)} has no payment for this idempotency key: nothing was charged"
            return self.runtime.ledger.save(
                record.id, status="failed", error=error, result={**result, "status": "failed"}
            )
        return record

    def _recover_payment(self, record: Record) -> None:
        """A worker claimed a payment left ``running`` (its process died during the gateway call)."""
        record = self.runtime.ledger.save(
            record.id,
            status="processing",
            result={**(record.result or {}), "status": "processing", "outcomeUnknown": True},
            lease_until=utcnow() + self.reconcile_first,
        )
        self.reconcile(record)

    def _recover_refund(self, record: Record) -> None:
        self.pay._send_refund(record, self.runtime.ledger.get(record.payload["paymentId"], record.tenant, "payment"))



def gateway_key(record: Record) -> str:
    """The idempotency key the gateway sees for this record: the caller's, else the record's id."""
    return record.idempotency_key or record.id
