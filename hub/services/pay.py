"""pay: charge a payment at the chosen gateway (or the configured ones in order), refund it at the gateway
that took it, and keep the payment and refund records."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select

from hub.capabilities import PaymentRequest, RefundRequest, to_dict
from hub.errors import NoProviderError, NotFound, ProviderError, ValidationError
from hub.records import ProviderReference, Record
from hub.runtime import Runtime, describe
from hub.schemas import PaymentSchema, RefundSchema, load


class PayService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def gateway_providers(self, gateway: str | None, tenant: str) -> list[str]:
        registry = self.runtime.registry
        configured = registry.service_providers("payment", tenant)
        if gateway is None:
            return configured
        if gateway in registry.slots and registry.slots[gateway].capability == "pay":
            return [gateway]
        # Accept the provider type too ("stripe"), as the seed's examples do.
        by_type = [name for name in configured if registry.slots.get(name) and registry.slots[name].type_name == gateway]
        if by_type:
            return by_type[:1]
        raise ValidationError({"gateway": [f"no payment gateway named {gateway!r}; configured: {', '.join(configured) or 'none'}"]})

    def accept(self, tenant: str, raw: Any, idempotency_key: str | None = None, *, schema: PaymentSchema | None = None) -> dict[str, Any]:
        self.runtime.require_running()
        request = load(schema or PaymentSchema(), raw)
        return self.charge(tenant, request, idempotency_key)

    def charge(self, tenant: str, request: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        runtime = self.runtime
        request["currency"] = request["currency"].upper()
        providers = self.gateway_providers(request["gateway"], tenant)
        payload = {**request, "amount": str(request["amount"]), "payment_method": _mask_payment_method(request["payment_method"])}
        record, replayed = runtime.ledger.begin("payment", tenant, "payment", payload, idempotency_key, self.view, before=lambda: runtime.hit_rate_limit(tenant, "payment"))
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
            idempotency_key=idempotency_key or record.id,
        )
        try:
            call = runtime.calls.pay(tenant, payment, providers=providers, record_id=record.id)
        except (ProviderError, NoProviderError) as error:
            runtime.ledger.save(record.id, status="failed", error=describe(error), attempt_log=getattr(error, "attempts", []))
            raise
        result = call.result
        status = "succeeded" if result.status == "succeeded" else ("failed" if result.status == "failed" else "running")
        with runtime.db.session() as session:
            session.merge(ProviderReference(provider=call.provider, reference=result.transaction_id, record_id=record.id))
            record = runtime.ledger.apply(
                session,
                record.id,
                {
                    "status": status if status != "running" else "succeeded",
                    "provider": call.provider,
                    "provider_reference": result.transaction_id,
                    "result": to_dict(result),
                    "attempt_log": call.attempts,
                },
            )
        return self.view(record)

    def view(self, record: Record) -> dict[str, Any]:
        result = record.result or {}
        amount = result.get("amount", record.payload.get("amount"))
        return {
            "success": record.status == "succeeded" and result.get("status") != "failed",
            "paymentId": record.id,
            "transactionId": result.get("transaction_id"),
            "status": result.get("status", record.status),
            "amount": float(Decimal(amount)) if amount is not None else None,
            "currency": result.get("currency", record.payload.get("currency")),
            "gateway": record.provider,
            "orderId": record.payload.get("order_id"),
            "refunds": result.get("refunds", []),
            "error": record.error,
            "createdAt": record.created_at.isoformat(),
        }

    # --- refunds --------------------------------------------------------------------------------

    def accept_refund(self, tenant: str, payment_id: str | None, raw: Any, idempotency_key: str | None = None) -> dict[str, Any]:
        runtime = self.runtime
        runtime.require_running()
        request = load(RefundSchema(), raw or {})
        payment = self.find_payment(tenant, payment_id, request["transaction_id"])
        if payment.status != "succeeded":
            raise ValidationError({"paymentId": [f"payment is {payment.status}; only a succeeded payment can be refunded"]})
        payload = {"paymentId": payment.id, "amount": str(request["amount"]) if request["amount"] else None, "reason": request["reason"]}
        record, replayed = runtime.ledger.begin("refund", tenant, "payment", payload, idempotency_key, self.refund_view, before=lambda: runtime.hit_rate_limit(tenant, "payment"))
        if record is None:
            return replayed
        refund = RefundRequest(
            id=record.id,
            tenant=tenant,
            transaction_id=payment.provider_reference or "",
            amount=request["amount"],
            currency=payment.payload["currency"],
            reason=request["reason"],
            idempotency_key=idempotency_key or record.id,
        )
        try:
            # A refund goes to the gateway that took the payment, never to another.
            call = runtime.calls.refund(tenant, refund, provider=payment.provider or "", record_id=record.id)
        except (ProviderError, NoProviderError) as error:
            runtime.ledger.save(record.id, status="failed", error=describe(error), provider=payment.provider)
            raise
        refund_data = to_dict(call.result)
        with runtime.db.session() as session:
            record = runtime.ledger.apply(
                session, record.id, {"status": "succeeded", "provider": call.provider, "provider_reference": call.result.refund_id, "result": refund_data, "attempt_log": call.attempts}
            )
            stored = session.get(Record, payment.id)
            assert stored is not None
            stored_result = dict(stored.result or {})
            stored_result["refunds"] = [*stored_result.get("refunds", []), {"refundId": record.id, **refund_data}]
            stored.result = stored_result
        return self.refund_view(record)

    def find_payment(self, tenant: str, payment_id: str | None, transaction_id: str | None) -> Record:
        if payment_id:
            return self.runtime.ledger.get(payment_id, tenant, "payment")
        if transaction_id:
            with self.runtime.db.session() as session:
                record = session.scalar(select(Record).where(Record.tenant == tenant, Record.kind == "payment", Record.provider_reference == transaction_id))
            if record is not None:
                return record
            raise NotFound(f"No payment with transaction id {transaction_id}")
        raise ValidationError({"paymentId": ["a payment id or transactionId is required"]})

    def refund_view(self, record: Record) -> dict[str, Any]:
        result = record.result or {}
        return {
            "success": record.status == "succeeded",
            "refundId": record.id,
            "paymentId": record.payload.get("paymentId"),
            "providerRefundId": result.get("refund_id"),
            "status": result.get("status", record.status),
            "amount": float(Decimal(result["amount"])) if result.get("amount") is not None else None,
            "currency": result.get("currency"),
            "gateway": record.provider,
            "error": record.error,
        }

    # --- webhooks -------------------------------------------------------------------------------

    def apply_webhook_event(self, session: Any, record: Record, reference: ProviderReference, provider_name: str, event: Any) -> bool:
        result = dict(record.result or {})
        result["providerStatus"] = event.status
        result["events"] = [*result.get("events", []), {"eventId": event.event_id, "status": event.status, "type": event.type}]
        record.result = result
        return True


def _mask_payment_method(method: str | None) -> str | None:
    if method and sum(ch.isdigit() for ch in method) >= 12:
        digits = "".join(ch for ch in method if ch.isdigit())
        return f"card ****{digits[-4:]}"
    return method
