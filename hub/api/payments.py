"""Payments and refunds: charge or authorise, capture, cancel, refund, and look a payment up."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, request

from hub.api.middleware import idempotency_key, idempotent, json_body, manager, ok, paging
from hub.schemas import PaymentListSchema, load

blueprint = Blueprint("payments", __name__)


def _created(view: dict[str, Any]) -> Any:
    # 202: accepted, but the outcome is not known yet (GET /payments/<id>?refresh=true tells it later).
    return ok(view, 202 if view["status"] == "processing" else 201)


@blueprint.post("/payments")
@idempotent
def create_payment() -> Any:
    """Charge a payment (or authorise it: "capture": false) through the configured gateway(s)."""
    return _created(manager().pay.accept(g.tenant, json_body(), idempotency_key()))


@blueprint.get("/payments")
def list_payments() -> Any:
    """The tenant's payments, newest first: ?status=&gateway=&orderId=&createdFrom=&createdTo=&limit=&offset=."""
    limit, offset = paging()
    query = load(PaymentListSchema(), request.args.to_dict())
    hub = manager()
    records = hub.list_records(
        g.tenant,
        "payment",
        query["status"],
        limit,
        offset,
        provider=query["gateway"],
        created_from=query["created_from"],
        created_to=query["created_to"],
        payload_equals={"order_id": query["order_id"]} if query["order_id"] else None,
    )
    return ok({"items": [hub.pay.view(record) for record in records], "limit": limit, "offset": offset})


@blueprint.get("/payments/<record_id>")
def get_payment(record_id: str) -> Any:
    """A payment; with ?refresh=true its gateway is asked for the payment's status first."""
    refresh = request.args.get("refresh", "").lower() in ("1", "true", "yes")
    return ok(manager().pay.get(g.tenant, record_id, refresh=refresh))


@blueprint.post("/payments/<record_id>/capture")
@idempotent(with_record=False)
def capture_payment(record_id: str) -> Any:
    """Take the money of an authorised payment: all of it, or "amount" (the rest is released)."""
    return ok(manager().pay.capture(g.tenant, record_id, json_body() or {}))


@blueprint.post("/payments/<record_id>/cancel")
@idempotent(with_record=False)
def cancel_payment(record_id: str) -> Any:
    """Cancel a payment that has taken no money (an authorisation, or one requiring action)."""
    return ok(manager().pay.cancel(g.tenant, record_id, json_body() or {}))


@blueprint.post("/payments/<record_id>/refunds")
@idempotent
def refund_payment(record_id: str) -> Any:
    """Refund all (no amount) or part of a payment, at the gateway that took it."""
    return _created(manager().pay.accept_refund(g.tenant, record_id, json_body() or {}, idempotency_key()))


@blueprint.post("/refunds")
@idempotent
def create_refund() -> Any:
    """Refund by the gateway's transaction id (``transactionId``)."""
    return _created(manager().pay.accept_refund(g.tenant, None, json_body() or {}, idempotency_key()))


@blueprint.get("/refunds/<record_id>")
def get_refund(record_id: str) -> Any:
    hub = manager()
    return ok(hub.pay.refund_view(hub.get_record(record_id, g.tenant, "refund")))
