"""pay: charge (or authorise) a payment at the chosen gateway, or the configured ones in order; capture,
cancel and refund it at the gateway that took it; keep its status in step with the gateway.

The rule that keeps a customer from being charged twice: a payment moves to another gateway only after an
error proving nothing was charged (``TransientError`` before sending, ``ConfigurationError``). When the
outcome is unknown (``OutcomeUnknownError``: a timeout after sending) the pipeline retries the same gateway
with the same idempotency key; if that does not settle it, the payment is looked up (``payment_status``) and,
while still unknown, kept ``processing`` and looked up again by the reconciliation job -- never ``failed``
while money may have moved. Status updates (lookups, webhooks) only move a payment forwards.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import event as orm_event
from sqlalchemy import select

from hub.capabilities import (
    PAYMENT_STATUSES,
    REFUNDABLE_STATUSES,
    CancelRequest,
    CaptureRequest,
    PaymentRequest,
    PaymentResult,
    RefundRequest,
    payment_status_supersedes,
    to_dict,
)
from hub.errors import NoProviderError, NotFound, OutcomeUnknownError, ProviderError, ValidationError
from hub.records import ProviderReference, Record, insert_ignoring_duplicates, utcnow
from hub.runtime import Runtime, describe
from hub.schemas import CancelSchema, CaptureSchema, PaymentSchema, RefundSchema, check_amount_in, load
from hub.services.reconcile import PaymentReconciler, gateway_key

log = logging.getLogger("hub.pay")


class EventQueue(Protocol):
    def queue(
        self,
        session: Any,
        tenant: str,
        topic: str,
        event_type: str,
        key: str | None,
        data: dict[str, Any],
        idempotency_key: str,
    ) -> str | None: ...


#: Statuses in which a payment has taken no money yet and can be cancelled.
CANCELABLE = ("requires_capture", "requires_action", "processing")
#: Statuses a view counts as a successful payment (money taken or reserved).
SUCCESSFUL = ("succeeded", "requires_capture", "partially_refunded", "refunded")


class PaymentStateError(ValidationError):
    """What the payment's state does not allow (refunding more than is left, capturing twice): a 422 naming
    the field, with a code as a gateway would give it."""

    def __init__(self, field: str, message: str, code: str) -> None:
        super().__init__({field: [message]}, message)
        self.provider_code = code


class PayService:
    def __init__(self, runtime: Runtime, events: EventQueue | None = None) -> None:
        self.runtime = runtime
        self.reconciler = PaymentReconciler(self)
        #: Where ``payment.<status>`` events go when a webhook moves a payment (the publish service).
        self.events = events

    # --- gateways ---------------------------------------------------------------------------------

    def gateway_providers(self, gateway: str | None, tenant: str, *, capture: bool = True) -> list[str]:
        registry = self.runtime.registry
        configured = registry.service_providers("payment", tenant)
        if gateway is None:
            names = configured
        elif gateway in registry.slots and registry.slots[gateway].capability == "pay":
            names = [gateway]
        else:
            # Accept the provider type too ("stripe"), as the seed's examples do.
            names = [
                name for name in configured if registry.slots.get(name) and registry.slots[name].type_name == gateway
            ][:1]
            if not names:
                raise ValidationError(
                    {
                        "gateway": [
                            f"no payment gateway named {gateway!r}; configured: {', '.join(configured) or 'none'}"
                        ]
                    }
                )
        if not capture:
            names = [name for name in names if self.runtime.hook_for(name, tenant, "capture") is not None]
            if not names:
                raise ValidationError(
                    {
                        "capture": [
                            "no gateway for this payment can authorise without capturing (none implements capture)"
                        ]
                    }
                )
        return names

    # --- pay --------------------------------------------------------------------------------------

    def accept(
        self, tenant: str, raw: Any, idempotency_key: str | None = None, *, schema: PaymentSchema | None = None
    ) -> dict[str, Any]:
        self.runtime.require_running()
        request = load(schema or PaymentSchema(), raw)
        return self.charge(tenant, request, idempotency_key)

    def charge(self, tenant: str, request: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        runtime = self.runtime
        request["currency"] = request["currency"].upper()
        providers = self.gateway_providers(request["gateway"], tenant, capture=request["capture"])
        payload = {
            **request,
            "amount": str(request["amount"]),
            "payment_method": _mask_payment_method(request["payment_method"]),
        }
        record, replayed = runtime.ledger.begin(
            "payment",
            tenant,
            "payment",
            payload,
            idempotency_key,
            self.view,
            before=lambda: runtime.hit_rate_limit(tenant, "payment"),
        )
        if record is None:
            return replayed
        payment = PaymentRequest(
            id=record.id,
            tenant=tenant,
            amount=request["amount"],
            currency=request["currency"],
            order_id=request["order_id"],
            payment_method=request["payment_method"],
            customer=request["customer"],
            description=request["description"],
            metadata={**request["metadata"], "hub_payment_id": record.id, "tenant": tenant},
            idempotency_key=gateway_key(record),
            capture=request["capture"],
        )
        try:
            call = runtime.calls.pay(tenant, payment, providers=providers, record_id=record.id)
        except OutcomeUnknownError as error:
            # Retried on that gateway already; it may have charged: never another gateway, never "failed".
            attempts = getattr(error, "attempts", [])
            gateway = attempts[-1]["provider"] if attempts else providers[0]
            unknown = {"status": "processing", "outcomeUnknown": True}
            record = runtime.ledger.save(
                record.id,
                status="processing",
                provider=gateway,
                error=describe(error),
                attempt_log=attempts,
                result=unknown,
                lease_until=utcnow() + self.reconciler.reconcile_first,
            )
            return self.view(self.reconciler.reconcile(record))
        except (ProviderError, NoProviderError) as error:
            runtime.ledger.fail(record.id, error)
            raise
        return self.view(self._record_first_answer(record, call.provider, call.result, call.attempts))

    def _record_first_answer(self, record: Record, provider: str, result: PaymentResult, attempts: list[dict[str, Any]]) -> Record:
        """Store the gateway's answer to the payment just made. Nothing else can have changed the record since
        it was opened (the reconciler leaves a running record alone; no webhook matches it before its reference
        is stored), so nothing is read back: written with the request's last transaction (:meth:`RecordLedger.finish`)."""
        status = _hub_status(provider, result)
        stored = {key: value for key, value in to_dict(result).items() if value is not None}
        stored.update(status=status, checkedAt=utcnow().isoformat())
        changes = {
            "status": status,
            "error": "the gateway reports the payment failed" if status == "failed" else None,
            # When to look a processing payment up (the reconciliation job's first check); others: never.
            "lease_until": utcnow() + self.reconciler.reconcile_first if status == "processing" else None,
            "provider": provider,
            "provider_reference": result.transaction_id,
            "result": stored,
            "attempt_log": attempts,
        }
        reference = {"provider": provider, "reference": result.transaction_id, "record_id": record.id, "recipient_index": None}

        def write_reference(session: Any) -> None:
            session.execute(insert_ignoring_duplicates(session, ProviderReference.__table__), [reference])

        return self.runtime.ledger.finish(record, changes, write_reference)

    def _apply_result(self, record_id: str, provider: str, result: PaymentResult, **changes: Any) -> Record:
        """Store what the gateway says about the payment, if it moves the payment forwards (a lookup may be
        older than a webhook already applied); amounts and raw status are kept either way."""
        status = _hub_status(provider, result)
        with self.runtime.db.session() as session:
            record = session.get(Record, record_id)
            assert record is not None
            stored = dict(record.result or {})
            current = record.status if record.status in PAYMENT_STATUSES else None
            data = {key: value for key, value in to_dict(result).items() if value is not None}
            if "amount_refunded" in data:  # a lookup may not see a refund made a moment ago
                data["amount_refunded"] = str(max(Decimal(data["amount_refunded"]), _refunded(record)))
            if payment_status_supersedes(status, current) or current == status:
                stored.update(data, status=status)
                changes["status"] = status
                changes["error"] = f"the gateway reports the payment {status}" if status == "failed" else None
                # When to look a processing payment up (the job's backoff, once it is processing); others: never.
                if status != "processing":
                    changes.setdefault("lease_until", None)
                elif current != "processing":
                    changes.setdefault("lease_until", utcnow() + self.reconciler.reconcile_first)
            else:
                stored.update({key: data[key] for key in ("amount_captured", "amount_refunded") if key in data})
            stored.pop("outcomeUnknown", None)
            stored["checkedAt"] = utcnow().isoformat()
            session.merge(ProviderReference(provider=provider, reference=result.transaction_id, record_id=record_id))
            return self.runtime.ledger.apply(
                session,
                record_id,
                {**changes, "provider": provider, "provider_reference": result.transaction_id, "result": stored},
            )

    def view(self, record: Record) -> dict[str, Any]:
        result = record.result or {}
        payload = record.payload
        status = record.status if record.status in (*PAYMENT_STATUSES, "failed") else "processing"
        return {
            "success": status in SUCCESSFUL,
            "paymentId": record.id,
            "transactionId": result.get("transaction_id"),
            "status": status,
            "rawStatus": result.get("raw_status"),
            "amount": _number(result.get("amount", payload.get("amount"))),
            "amountCaptured": _number(_captured(record)) if status in (*REFUNDABLE_STATUSES, "refunded") else None,
            "amountRefunded": _number(_refunded(record)),
            "currency": result.get("currency", payload.get("currency")),
            "gateway": record.provider,
            "orderId": payload.get("order_id"),
            "capture": payload.get("capture", True),
            "outcomeUnknown": bool(result.get("outcomeUnknown")),
            "refunds": result.get("refunds", []),
            "events": result.get("events", []),
            "error": record.error,
            "createdAt": record.created_at.isoformat(),
            "updatedAt": record.updated_at.isoformat() if record.updated_at else None,
        }

    def get(self, tenant: str, payment_id: str, *, refresh: bool = False) -> dict[str, Any]:
        """A payment's view; ``refresh`` first asks its gateway (``payment_status``) for its status now."""
        record = self.runtime.ledger.get(payment_id, tenant, "payment")
        if refresh and record.provider and record.status not in ("running", "queued"):
            record = self.reconciler.reconcile(record)
        return self.view(record)

    # --- capture and cancel ---------------------------------------------------------------------------

    def capture(self, tenant: str, payment_id: str, raw: Any) -> dict[str, Any]:
        runtime = self.runtime
        runtime.require_running()
        request = load(CaptureSchema(), raw or {})
        record = runtime.ledger.get(payment_id, tenant, "payment")
        check_amount_in(request["amount"], record.payload["currency"])
        if record.status != "requires_capture":
            raise PaymentStateError(
                "paymentId",
                f"payment is {record.status}; only a payment in requires_capture can be captured",
                "payment_intent_unexpected_state",
            )
        authorised = Decimal(record.result["amount"])
        if request["amount"] is not None and request["amount"] > authorised:
            raise PaymentStateError(
                "amount", f"{request['amount']} is more than the {authorised} authorised", "amount_too_large"
            )
        runtime.hit_rate_limit(tenant, "payment")
        capture = CaptureRequest(
            id=f"{record.id}-capture",
            tenant=tenant,
            transaction_id=record.provider_reference or "",
            amount=request["amount"],
            currency=record.result["currency"],
            idempotency_key=f"{gateway_key(record)}:capture",  # one capture per payment, whoever retries it
        )
        return self._call_or_look_up(
            record,
            "succeeded",
            lambda: runtime.calls.capture(tenant, capture, provider=record.provider or "", record_id=record.id),
        )

    def cancel(self, tenant: str, payment_id: str, raw: Any) -> dict[str, Any]:
        runtime = self.runtime
        runtime.require_running()
        request = load(CancelSchema(), raw or {})
        record = runtime.ledger.get(payment_id, tenant, "payment")
        if record.status not in CANCELABLE or not record.provider_reference:
            reason = "its outcome is not known yet" if record.status == "processing" else f"it is {record.status}"
            raise PaymentStateError(
                "paymentId",
                f"payment cannot be canceled: {reason}; only one that has taken no money can",
                "payment_intent_unexpected_state",
            )
        if runtime.hook_for(record.provider or "", tenant, "cancel") is None:
            raise PaymentStateError(
                "paymentId", f"gateway {record.provider} cannot cancel payments (no cancel hook)", "unsupported"
            )
        runtime.hit_rate_limit(tenant, "payment")
        cancel = CancelRequest(
            id=f"{record.id}-cancel",
            tenant=tenant,
            transaction_id=record.provider_reference,
            reason=request["reason"],
            idempotency_key=f"{gateway_key(record)}:cancel",
        )
        return self._call_or_look_up(
            record,
            "canceled",
            lambda: runtime.calls.cancel(tenant, cancel, provider=record.provider or "", record_id=record.id),
        )

    def _call_or_look_up(self, record: Record, expected: str, call: Any) -> dict[str, Any]:
        """Make a capture or cancel call and store its answer. When the answer is lost, look the payment up:
        if it reached ``expected`` the call went through; otherwise the error goes to the caller, who may
        repeat the call safely (it carries the same idempotency key)."""
        try:
            made = call()
        except OutcomeUnknownError:
            record = self.reconciler.reconcile(record)
            if record.status == expected:
                return self.view(record)
            raise
        return self.view(self._apply_result(record.id, made.provider, made.result))

    # --- refunds --------------------------------------------------------------------------------

    def accept_refund(
        self, tenant: str, payment_id: str | None, raw: Any, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        runtime = self.runtime
        runtime.require_running()
        request = load(RefundSchema(), raw or {})
        payment = self.find_payment(tenant, payment_id, request["transaction_id"])
        check_amount_in(request["amount"], payment.payload["currency"])
        if payment.status not in REFUNDABLE_STATUSES:
            raise PaymentStateError(
                "paymentId",
                f"payment is {payment.status}; only a succeeded or partially refunded payment can be refunded",
                "payment_intent_unexpected_state",
            )
        left = _captured(payment) - _refunded(payment) - self._refunds_in_flight(payment, idempotency_key)
        if request["amount"] is None and left <= 0 or request["amount"] is not None and request["amount"] > left:
            asked = "a refund of the rest" if request["amount"] is None else str(request["amount"])
            raise PaymentStateError(
                "amount", f"{asked} is more than the {max(left, Decimal(0))} left to refund", "amount_too_large"
            )
        payload = {
            "paymentId": payment.id,
            "amount": str(request["amount"]) if request["amount"] else None,
            "reason": request["reason"],
        }
        record, replayed = runtime.ledger.begin(
            "refund",
            tenant,
            "payment",
            payload,
            idempotency_key,
            self.refund_view,
            before=lambda: runtime.hit_rate_limit(tenant, "payment"),
        )
        if record is None:
            return replayed
        return self.refund_view(self._send_refund(record, payment))

    def _refunds_in_flight(self, payment: Record, idempotency_key: str | None) -> Decimal:
        """What refunds of ``payment`` not yet counted in it may take: those being sent now, or whose answer was
        lost (counted whole when they refund "the rest"), so two refunds at once cannot refund more than was
        captured. A repeat of this request (the same key) is not counted: it replays its own answer."""
        counted = {entry.get("refundId") for entry in (payment.result or {}).get("refunds", [])}
        query = select(Record.id, Record.payload).where(
            Record.tenant == payment.tenant,
            Record.kind == "refund",
            Record.status.in_(("running", "processing", "queued")),
            Record.payload["paymentId"].as_string() == payment.id,
        )
        if idempotency_key:
            query = query.where((Record.idempotency_key != idempotency_key) | Record.idempotency_key.is_(None))
        with self.runtime.db.session() as session:
            pending = [payload for record_id, payload in session.execute(query) if record_id not in counted]
        whole = _captured(payment)
        return sum((Decimal(p["amount"]) if p.get("amount") else whole for p in pending), Decimal(0))

    def _send_refund(self, record: Record, payment: Record) -> Record:
        runtime = self.runtime
        refund = RefundRequest(
            id=record.id,
            tenant=record.tenant,
            transaction_id=payment.provider_reference or "",
            amount=Decimal(record.payload["amount"]) if record.payload.get("amount") else None,
            currency=payment.payload["currency"],
            reason=record.payload.get("reason"),
            idempotency_key=gateway_key(record),
        )
        # When to send it again if it stays processing: soon the first time, then the job's backoff.
        next_check = (
            {} if record.status == "processing" else {"lease_until": utcnow() + self.reconciler.reconcile_first}
        )
        try:
            # A refund goes to the gateway that took the payment, never to another.
            call = runtime.calls.refund(record.tenant, refund, provider=payment.provider or "", record_id=record.id)
        except OutcomeUnknownError as error:
            # Sent again later with the same key by the reconciliation job: the gateway refunds once.
            return runtime.ledger.save(
                record.id, status="processing", provider=payment.provider, error=describe(error), **next_check
            )
        except (ProviderError, NoProviderError) as error:
            runtime.ledger.fail(record.id, error, provider=payment.provider)
            raise
        refund_data = to_dict(call.result)
        status = call.result.status if call.result.status in ("succeeded", "processing", "failed") else "processing"
        with runtime.db.session() as session:
            session.merge(
                ProviderReference(provider=call.provider, reference=call.result.refund_id, record_id=record.id)
            )
            stored = session.get(Record, payment.id)
            assert stored is not None
            result = dict(stored.result or {})
            earlier = [entry for entry in result.get("refunds", []) if entry.get("refundId") == record.id]
            counted = sum(
                (Decimal(entry["amount"]) for entry in earlier if entry.get("status") != "failed"), Decimal(0)
            )
            result["refunds"] = [
                *(entry for entry in result.get("refunds", []) if entry not in earlier),
                {"refundId": record.id, **refund_data},
            ]
            if status != "failed":
                # A refund sent again (its answer was lost, or it was processing) is counted once.
                result["amount_refunded"] = str(_refunded(stored) - counted + call.result.amount)
                refunded_all = Decimal(result["amount_refunded"]) >= _captured(stored)
                moved = "refunded" if refunded_all else "partially_refunded"
                if payment_status_supersedes(moved, stored.status):
                    stored.status = result["status"] = moved
            stored.result = result
            stored.updated_at = utcnow()
            changes = {
                "status": status,
                "provider": call.provider,
                "provider_reference": call.result.refund_id,
                "result": refund_data,
                "attempt_log": call.attempts,
                "error": None,
            }
            if status == "processing":
                changes.update(next_check)
            return runtime.ledger.apply(session, record.id, changes)

    def find_payment(self, tenant: str, payment_id: str | None, transaction_id: str | None) -> Record:
        if payment_id:
            return self.runtime.ledger.get(payment_id, tenant, "payment")
        if transaction_id:
            with self.runtime.db.session() as session:
                record = session.scalar(
                    select(Record).where(
                        Record.tenant == tenant, Record.kind == "payment", Record.provider_reference == transaction_id
                    )
                )
            if record is not None:
                return record
            raise NotFound(f"No payment with transaction id {transaction_id}")
        raise ValidationError({"paymentId": ["a payment id or transactionId is required"]})

    def refund_view(self, record: Record) -> dict[str, Any]:
        result = record.result or {}
        status = record.status if record.status != "running" else "processing"
        return {
            "success": status == "succeeded",
            "refundId": record.id,
            "paymentId": record.payload.get("paymentId"),
            "providerRefundId": result.get("refund_id"),
            "status": status,
            "amount": _number(result.get("amount", record.payload.get("amount"))),
            "currency": result.get("currency"),
            "gateway": record.provider,
            "error": record.error,
        }

    # --- webhooks -------------------------------------------------------------------------------

    def apply_webhook_event(
        self, session: Any, record: Record, reference: ProviderReference, provider_name: str, event: Any
    ) -> bool:
        """Record the event in the payment's (or refund's) history and move its status when the event is
        further along; an event older than the current state changes nothing else."""
        result = dict(record.result or {})
        details = event.details or {}
        result["events"] = [
            *result.get("events", []),
            {"eventId": event.event_id, "status": event.status, "type": event.type, "at": utcnow().isoformat()},
        ]
        if record.kind == "payment" and payment_status_supersedes(
            event.status, record.status if record.status in PAYMENT_STATUSES else None
        ):
            previous = record.status
            record.status = result["status"] = event.status
            result["raw_status"] = details.get("raw_status", result.get("raw_status"))
            record.error = f"the gateway reports the payment {event.status}" if event.status == "failed" else None
            self._emit(session, record, provider_name, event, previous)
        if record.kind == "payment" and details.get("amount_refunded") is not None:
            result["amount_refunded"] = str(max(Decimal(str(details["amount_refunded"])), _refunded(record)))
        if (
            record.kind == "refund"
            and record.status in ("processing", "running")
            and event.status in ("succeeded", "failed")
        ):
            record.status = event.status
        record.result = result
        return True

    def _emit(self, session: Any, record: Record, provider_name: str, event: Any, previous: str) -> None:
        """Queue ``payment.<status>`` in the webhook's transaction; a worker publishes it once that committed."""
        topic = self.runtime.config["payments"]["events_topic"]
        if self.events is None or not topic:
            return
        result = record.result or {}
        data = {
            "paymentId": record.id,
            "transactionId": record.provider_reference,
            "gateway": provider_name,
            "status": event.status,
            "previousStatus": previous,
            "amount": str(result.get("amount", record.payload.get("amount"))),
            "currency": result.get("currency", record.payload.get("currency")),
            "orderId": record.payload.get("order_id"),
            "providerEventId": event.event_id,
            "providerEventType": event.type,
        }
        queued = self.events.queue(
            session,
            record.tenant,
            topic,
            f"payment.{event.status}",
            record.id,
            data,
            f"webhook:{provider_name}:{event.event_id}",
        )
        if queued is not None:
            jobs = self.runtime.jobs
            orm_event.listen(session, "after_commit", lambda _session: jobs.enqueue(queued), once=True)


def _hub_status(provider: str, result: PaymentResult) -> str:
    """The gateway's status when it is one of the hub's; anything else is kept as ``processing`` (looked up later)."""
    if result.status in PAYMENT_STATUSES:
        return result.status
    log.warning("gateway %s answered status %r, not a hub status; kept as processing", provider, result.status)
    return "processing"


def _captured(record: Record) -> Decimal:
    result = record.result or {}
    return Decimal(str(result.get("amount_captured") or result.get("amount") or record.payload["amount"]))


def _refunded(record: Record) -> Decimal:
    result = record.result or {}
    if result.get("amount_refunded") is not None:
        return Decimal(str(result["amount_refunded"]))
    return sum(
        (Decimal(str(entry["amount"])) for entry in result.get("refunds", []) if entry.get("status") != "failed"),
        Decimal(0),
    )


def _number(value: Any) -> float | None:
    return float(Decimal(str(value))) if value is not None else None


def _mask_payment_method(method: str | None) -> str | None:
    if method and sum(ch.isdigit() for ch in method) >= 12:
        digits = "".join(ch for ch in method if ch.isdigit())
        return f"card ****{digits[-4:]}"
    return method
