"""Payments and refunds."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g

from hub.api.middleware import idempotency_key, idempotent, json_body, list_records, manager, ok

blueprint = Blueprint("payments", __name__)


@blueprint.post("/payments")
@idempotent
def create_payment() -> Any:
    """Charge a payment through the configured gateway(s)."""
    return ok(manager().pay.accept(g.tenant, json_body(), idempotency_key()), 201)


@blueprint.get("/payments")
def list_payments() -> Any:
    return list_records("payment", manager().pay.view)


@blueprint.get("/payments/<record_id>")
def get_payment(record_id: str) -> Any:
    hub = manager()
    return ok(hub.pay.view(hub.get_record(record_id, g.tenant, "payment")))


@blueprint.post("/payments/<record_id>/refunds")
@idempotent
def refund_payment(record_id: str) -> Any:
    """Refund all (no amount) or part of a payment, at the gateway that took it."""
    return ok(manager().pay.accept_refund(g.tenant, record_id, json_body() or {}, idempotency_key()), 201)


@blueprint.post("/refunds")
@idempotent
def create_refund() -> Any:
    """Refund by the gateway's transaction id (``transactionId``)."""
    return ok(manager().pay.accept_refund(g.tenant, None, json_body() or {}, idempotency_key()), 201)


@blueprint.get("/refunds/<record_id>")
def get_refund(record_id: str) -> Any:
    hub = manager()
    return ok(hub.pay.refund_view(hub.get_record(record_id, g.tenant, "refund")))
