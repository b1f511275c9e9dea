"""Razorpay's API as this plugin uses it: an OpenAPI 3 description written by us from Razorpay's published API
reference (https://razorpay.com/docs/api/ -- Orders, Payments, Refunds, Webhooks), and a stateful fake serving it
through :class:`hub.testing.contract_server.ContractServer`.

Razorpay publishes no OpenAPI description (none is in a registry), so :data:`SPEC` is ours: the paths, field names,
types, required fields, limits (``receipt`` at most 40 characters, ``notes`` at most 15 pairs of 256 characters)
and the error body ``{"error": {"code", "description", "field", "source", "step", "reason", "metadata"}}`` follow
the reference; request bodies refuse unknown fields, as Razorpay does ("... is/are not required and should not be
sent"). The exact wording of the fake's error descriptions is ours where the reference does not give it.

:class:`RazorpayFake` keeps orders, payments and refunds like the real service: amounts in the currency's subunits
(the last digit 0 for three-decimal currencies), unique receipts, captures only of ``authorized`` payments and for
the whole amount, updates of an order's notes only, refunds only of captured payments and never above what is left, ``400 BAD_REQUEST_ERROR "The id
provided does not exist"`` for unknown ids (Razorpay answers 400, not 404). The customer's Checkout is simulated: an
order created with ``notes.hub_payment_method`` set to one of :data:`TEST_TOKENS` is paid at once (captured when
the order's ``payment.capture`` is ``automatic``, else left ``authorized``), declined, or paid with its answer
delayed (the "answer lost" case); :meth:`RazorpayFake.checkout` pays an order the way a customer would later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import string
import time
from typing import Any

from hub.testing.contract_server import ContractError, ContractRequest, ContractServer

KEY_ID = "rzp_test_hubPrimary001"
KEY_SECRET = "razorpay-test-key-secret"
WEBHOOK_SECRET = "razorpay-webhook-secret"

#: Test "payment methods" the fake's Checkout turns into a payment of the order.
SUCCESS = "tok_test_success"
DECLINED = "tok_test_declined"
LOST = "tok_test_lost"
TEST_TOKENS = (SUCCESS, DECLINED, LOST)

#: What a declined test payment carries (the shape of Razorpay's payment error fields).
DECLINE = {
    "error_code": "BAD_REQUEST_ERROR",
    "error_description": "Your payment has been declined by your bank. Try another card.",
    "error_source": "issuer_bank",
    "error_step": "payment_authorization",
    "error_reason": "card_declined",
}

_ALPHABET = string.ascii_letters + string.digits


def _razorpay_id(prefix: str) -> str:
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(14))


# ---------------------------------------------------------------------------------------------------------------
# The description

_NULLABLE_STRING = {"type": "string", "nullable": True}
_NOTES_IN = {
    "type": "object",
    "maxProperties": 15,
    "additionalProperties": {"type": "string", "maxLength": 256},
    "description": "Key-value pairs; at most 15, of at most 256 characters each.",
}
# Razorpay answers an empty notes object as [].
_NOTES_OUT = {"oneOf": [{"type": "object"}, {"type": "array", "maxItems": 0}]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _answers(schema: str) -> dict[str, Any]:
    error = {"description": "Razorpay's error body", **_json(_ref("Error"))}
    return {
        "200": {"description": "OK", **_json(_ref(schema))},
        "400": error,
        "401": error,
        "404": error,
        "429": error,
        "500": error,
    }


def _collection(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["entity", "count", "items"],
        "properties": {
            "entity": {"type": "string", "enum": ["collection"]},
            "count": {"type": "integer"},
            "items": {"type": "array", "items": _ref(item)},
        },
    }


def _id_parameter(description: str) -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "Razorpay API (Orders, Payments, Refunds) -- written from Razorpay's API reference",
        "version": "v1",
        "description": "Not Razorpay's: Razorpay publishes no OpenAPI description. Written for the hub-razorpay tests.",
    },
    "servers": [{"url": "https://api.razorpay.com"}],
    "security": [{"basicAuth": []}],
    "paths": {
        "/v1/orders": {
            "post": {
                "operationId": "createOrder",
                "requestBody": {"required": True, **_json(_ref("OrderCreate"))},
                "responses": _answers("Order"),
            },
            "get": {
                "operationId": "fetchOrders",
                "parameters": [
                    {"name": "receipt", "in": "query", "schema": {"type": "string", "maxLength": 40}},
                    {"name": "authorized", "in": "query", "schema": {"type": "integer", "enum": [0, 1]}},
                    {"name": "from", "in": "query", "schema": {"type": "integer"}},
                    {"name": "to", "in": "query", "schema": {"type": "integer"}},
                    {"name": "count", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    {"name": "skip", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                ],
                "responses": _answers("OrderCollection"),
            },
        },
        "/v1/orders/{id}": {
            "get": {
                "operationId": "fetchOrder",
                "parameters": [_id_parameter("The order's id (order_...).")],
                "responses": _answers("Order"),
            },
            "patch": {
                "operationId": "updateOrder",
                "description": "Only an order's notes can be modified.",
                "parameters": [_id_parameter("The order's id (order_...).")],
                "requestBody": {"required": True, **_json(_ref("OrderUpdate"))},
                "responses": _answers("Order"),
            },
        },
        "/v1/orders/{id}/payments": {
            "get": {
                "operationId": "fetchOrderPayments",
                "parameters": [_id_parameter("The order's id (order_...).")],
                "responses": _answers("PaymentCollection"),
            }
        },
        "/v1/payments/{id}": {
            "get": {
                "operationId": "fetchPayment",
                "parameters": [_id_parameter("The payment's id (pay_...).")],
                "responses": _answers("Payment"),
            }
        },
        "/v1/payments/{id}/capture": {
            "post": {
                "operationId": "capturePayment",
                "parameters": [_id_parameter("The payment to capture.")],
                "requestBody": {"required": True, **_json(_ref("CaptureRequest"))},
                "responses": _answers("Payment"),
            }
        },
        "/v1/payments/{id}/refund": {
            "post": {
                "operationId": "refundPayment",
                "parameters": [_id_parameter("The payment to refund.")],
                "requestBody": {"required": False, **_json(_ref("RefundCreate"))},
                "responses": _answers("Refund"),
            }
        },
        "/v1/payments/{id}/refunds": {
            "get": {
                "operationId": "fetchPaymentRefunds",
                "parameters": [
                    _id_parameter("The payment whose refunds are listed."),
                    {"name": "count", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    {"name": "skip", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                ],
                "responses": _answers("RefundCollection"),
            }
        },
    },
    "components": {
        "securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic", "description": "key_id:key_secret"}},
        "schemas": {
            "OrderCreate": {
                "type": "object",
                "required": ["amount", "currency"],
                "additionalProperties": False,
                "properties": {
                    "amount": {"type": "integer", "minimum": 1, "description": "In the currency's subunits."},
                    "currency": {"type": "string", "minLength": 3, "maxLength": 3},
                    "receipt": {"type": "string", "maxLength": 40, "description": "Unique per account."},
                    "notes": _NOTES_IN,
                    "partial_payment": {"type": "boolean"},
                    "first_payment_min_amount": {"type": "integer", "minimum": 1},
                    "payment": {
                        "type": "object",
                        "required": ["capture"],
                        "additionalProperties": False,
                        "properties": {
                            "capture": {"type": "string", "enum": ["automatic", "manual"]},
                            "capture_options": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "automatic_expiry_period": {"type": "integer", "minimum": 12},
                                    "manual_expiry_period": {"type": "integer", "minimum": 7200},
                                    "refund_speed": {"type": "string", "enum": ["normal", "optimum"]},
                                },
                            },
                        },
                    },
                },
            },
            "OrderUpdate": {
                "type": "object",
                "required": ["notes"],
                "additionalProperties": False,
                "properties": {"notes": _NOTES_IN},
            },
            "Order": {
                "type": "object",
                "required": [
                    "id",
                    "entity",
                    "amount",
                    "amount_paid",
                    "amount_due",
                    "currency",
                    "status",
                    "attempts",
                    "created_at",
                ],
                "properties": {
                    "id": {"type": "string", "pattern": "^order_[A-Za-z0-9]{14}$"},
                    "entity": {"type": "string", "enum": ["order"]},
                    "amount": {"type": "integer"},
                    "amount_paid": {"type": "integer"},
                    "amount_due": {"type": "integer"},
                    "currency": {"type": "string"},
                    "receipt": _NULLABLE_STRING,
                    "offer_id": _NULLABLE_STRING,
                    "status": {"type": "string", "enum": ["created", "attempted", "paid"]},
                    "attempts": {"type": "integer"},
                    "notes": _NOTES_OUT,
                    "partial_payment": {"type": "boolean"},
                    "created_at": {"type": "integer"},
                },
            },
            "Payment": {
                "type": "object",
                "required": [
                    "id",
                    "entity",
                    "amount",
                    "currency",
                    "status",
                    "captured",
                    "amount_refunded",
                    "created_at",
                ],
                "properties": {
                    "id": {"type": "string", "pattern": "^pay_[A-Za-z0-9]{14}$"},
                    "entity": {"type": "string", "enum": ["payment"]},
                    "amount": {"type": "integer"},
                    "currency": {"type": "string"},
                    "status": {"type": "string", "enum": ["created", "authorized", "captured", "refunded", "failed"]},
                    "order_id": _NULLABLE_STRING,
                    "invoice_id": _NULLABLE_STRING,
                    "international": {"type": "boolean"},
                    "method": {"type": "string"},
                    "amount_refunded": {"type": "integer"},
                    "refund_status": {"type": "string", "enum": ["partial", "full"], "nullable": True},
                    "captured": {"type": "boolean"},
                    "description": _NULLABLE_STRING,
                    "card_id": _NULLABLE_STRING,
                    "bank": _NULLABLE_STRING,
                    "wallet": _NULLABLE_STRING,
                    "vpa": _NULLABLE_STRING,
                    "email": _NULLABLE_STRING,
                    "contact": _NULLABLE_STRING,
                    "notes": _NOTES_OUT,
                    "fee": {"type": "integer", "nullable": True},
                    "tax": {"type": "integer", "nullable": True},
                    "error_code": _NULLABLE_STRING,
                    "error_description": _NULLABLE_STRING,
                    "error_source": _NULLABLE_STRING,
                    "error_step": _NULLABLE_STRING,
                    "error_reason": _NULLABLE_STRING,
                    "acquirer_data": {"type": "object"},
                    "created_at": {"type": "integer"},
                },
            },
            "CaptureRequest": {
                "type": "object",
                "required": ["amount", "currency"],
                "additionalProperties": False,
                "properties": {
                    "amount": {"type": "integer", "minimum": 1, "description": "Equal to the order amount."},
                    "currency": {"type": "string", "minLength": 3, "maxLength": 3},
                },
            },
            "RefundCreate": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "amount": {"type": "integer", "minimum": 1, "description": "Absent: the whole captured amount."},
                    "speed": {"type": "string", "enum": ["normal", "optimum"]},
                    "notes": _NOTES_IN,
                    "receipt": {"type": "string", "maxLength": 40},
                },
            },
            "Refund": {
                "type": "object",
                "required": ["id", "entity", "amount", "currency", "payment_id", "status", "created_at"],
                "properties": {
                    "id": {"type": "string", "pattern": "^rfnd_[A-Za-z0-9]{14}$"},
                    "entity": {"type": "string", "enum": ["refund"]},
                    "amount": {"type": "integer"},
                    "currency": {"type": "string"},
                    "payment_id": {"type": "string"},
                    "notes": _NOTES_OUT,
                    "receipt": _NULLABLE_STRING,
                    "acquirer_data": {"type": "object"},
                    "batch_id": _NULLABLE_STRING,
                    "status": {"type": "string", "enum": ["pending", "processed", "failed"]},
                    "speed_processed": {"type": "string", "enum": ["normal", "instant"]},
                    "speed_requested": {"type": "string", "enum": ["normal", "optimum"]},
                    "created_at": {"type": "integer"},
                },
            },
            "OrderCollection": _collection("Order"),
            "PaymentCollection": _collection("Payment"),
            "RefundCollection": _collection("Refund"),
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "description"],
                        "properties": {
                            "code": {
                                "type": "string",
                                "enum": ["BAD_REQUEST_ERROR", "GATEWAY_ERROR", "SERVER_ERROR"],
                            },
                            "description": {"type": "string"},
                            "field": _NULLABLE_STRING,
                            "source": {"type": "string"},
                            "step": {"type": "string"},
                            "reason": {"type": "string"},
                            "metadata": {"type": "object"},
                        },
                    }
                },
            },
        },
    },
}


# ---------------------------------------------------------------------------------------------------------------
# Errors


def razorpay_error(
    status: int,
    description: str,
    *,
    code: str = "BAD_REQUEST_ERROR",
    field: str | None = None,
    reason: str = "input_validation_failed",
    source: str = "business",
    step: str = "payment_initiation",
) -> tuple[int, dict[str, Any]]:
    error: dict[str, Any] = {
        "code": code,
        "description": description,
        "source": source,
        "step": step,
        "reason": reason,
        "metadata": {},
    }
    if field is not None:
        error["field"] = field
    return status, {"error": error}


def not_found() -> tuple[int, dict[str, Any]]:
    # Razorpay answers an unknown id with 400, not 404.
    return razorpay_error(400, "The id provided does not exist", reason="NA", source="NA", step="NA")


def razorpay_error_shaper(error: ContractError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Requests the description refuses, answered as Razorpay does."""
    if error.kind == "unauthorized":
        status, body = razorpay_error(401, "Authentication failed", reason="NA", source="NA", step="NA")
    elif error.kind == "not_found":
        status, body = razorpay_error(400, "The requested URL was not found on the server.", reason="NA")
    else:
        field = (error.param or "").split(".")[0] or None
        status, body = razorpay_error(400, error.message, field=field)
    return status, body, {}


# ---------------------------------------------------------------------------------------------------------------
# The fake


class RazorpayFake:
    """Orders, payments and refunds of one Razorpay account, as the API reference describes them."""

    #: Seconds the answer to an order paid with :data:`LOST` is held back (longer than the tests' timeouts).
    lost_delay = 1.5

    def __init__(self, server: ContractServer, keys: dict[str, str] | None = None) -> None:
        self.server = server
        self.keys = keys or {KEY_ID: KEY_SECRET}
        server.auth_check = self.authenticated
        for operation in (
            "createOrder",
            "fetchOrders",
            "fetchOrder",
            "updateOrder",
            "fetchOrderPayments",
            "fetchPayment",
            "capturePayment",
            "refundPayment",
            "fetchPaymentRefunds",
        ):
            server.register(operation, getattr(self, operation))

    def authenticated(self, request: ContractRequest) -> bool:
        auth = request.auth
        return auth is not None and auth.username in self.keys and self.keys[auth.username] == auth.password

    # --- state ---------------------------------------------------------------------------------------------

    @staticmethod
    def _table(state: dict[str, Any], name: str) -> dict[str, Any]:
        table: dict[str, Any] = state.setdefault(name, {})
        return table

    @property
    def orders(self) -> dict[str, dict[str, Any]]:
        return self._table(self.server.state, "orders")

    @property
    def payments(self) -> dict[str, dict[str, Any]]:
        return self._table(self.server.state, "payments")

    @property
    def refunds(self) -> dict[str, dict[str, Any]]:
        return self._table(self.server.state, "refunds")

    def captured(self) -> list[dict[str, Any]]:
        """The payments that took money (captured, possibly refunded since)."""
        return [payment for payment in self.payments.values() if payment["captured"]]

    # --- the customer's Checkout ------------------------------------------------------------------------------

    def _pay(self, state: dict[str, Any], order: dict[str, Any], outcome: str) -> dict[str, Any]:
        now = int(time.time())
        payment = {
            "id": _razorpay_id("pay"),
            "entity": "payment",
            "amount": order["amount"],
            "currency": order["currency"],
            "status": "authorized",
            "order_id": order["id"],
            "invoice_id": None,
            "international": order["currency"] != "INR",
            "method": "card",
            "amount_refunded": 0,
            "refund_status": None,
            "captured": False,
            "description": None,
            "card_id": _razorpay_id("card"),
            "bank": None,
            "wallet": None,
            "vpa": None,
            "email": "gaurav.kumar@example.com",
            "contact": "+919000090000",
            "notes": [],
            "fee": None,
            "tax": None,
            "error_code": None,
            "error_description": None,
            "error_source": None,
            "error_step": None,
            "error_reason": None,
            "acquirer_data": {"auth_code": "828553"},
            "created_at": now,
        }
        order["attempts"] += 1
        order["status"] = "attempted"
        if outcome == "declined":
            payment.update(status="failed", **DECLINE)
        elif self._table(state, "capture_mode").get(order["id"]) == "automatic":
            self._mark_captured(state, payment)
        self._table(state, "payments")[payment["id"]] = payment
        return payment

    def _mark_captured(self, state: dict[str, Any], payment: dict[str, Any]) -> None:
        payment.update(status="captured", captured=True, fee=max(1, payment["amount"] // 50), tax=0)
        order = self._table(state, "orders").get(payment["order_id"] or "")
        if order is not None:
            order.update(status="paid", amount_paid=payment["amount"], amount_due=0)

    def checkout(self, order_id: str, outcome: str = "success") -> dict[str, Any]:
        """The customer pays ``order_id`` in Checkout (later than the order's creation)."""
        with self.server._lock:
            return dict(self._pay(self.server.state, self.server.state["orders"][order_id], outcome))

    # --- handlers ------------------------------------------------------------------------------------------

    def createOrder(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = request.body
        currency = body["currency"].upper()
        if currency in ("KWD", "BHD", "OMR") and body["amount"] % 10:
            return razorpay_error(
                400, "The last digit of the amount must be 0 for three decimal currencies", field="amount"
            )
        receipts = self._table(state, "receipts")
        receipt = body.get("receipt")
        if receipt is not None and receipt in receipts:
            return razorpay_error(400, "receipt must be unique for every order", field="receipt")
        order = {
            "id": _razorpay_id("order"),
            "entity": "order",
            "amount": body["amount"],
            "amount_paid": 0,
            "amount_due": body["amount"],
            "currency": currency,
            "receipt": receipt,
            "offer_id": None,
            "status": "created",
            "attempts": 0,
            "notes": body.get("notes") or [],
            "partial_payment": bool(body.get("partial_payment", False)),
            "created_at": int(time.time()),
        }
        self._table(state, "orders")[order["id"]] = order
        self._table(state, "capture_mode")[order["id"]] = (body.get("payment") or {}).get("capture", "automatic")
        if receipt is not None:
            receipts[receipt] = order["id"]
        token = order["notes"].get("hub_payment_method") if isinstance(order["notes"], dict) else None
        if token in TEST_TOKENS:
            self._pay(state, order, "declined" if token == DECLINED else "success")
            if token == LOST:
                self.server.delay_answers("createOrder", self.lost_delay)
        return 200, dict(order)

    def fetchOrders(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        items = sorted(self._table(state, "orders").values(), key=lambda order: order["created_at"], reverse=True)
        if "receipt" in request.query:
            items = [order for order in items if order["receipt"] == request.query["receipt"]]
        skip, count = int(request.query.get("skip", 0)), int(request.query.get("count", 10))
        page = [dict(order) for order in items[skip : skip + count]]
        return 200, {"entity": "collection", "count": len(page), "items": page}

    def fetchOrder(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        order = self._table(state, "orders").get(request.path_params["id"])
        return (200, dict(order)) if order else not_found()

    def updateOrder(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        order = self._table(state, "orders").get(request.path_params["id"])
        if order is None:
            return not_found()
        order["notes"] = request.body["notes"] or []
        return 200, dict(order)

    def fetchOrderPayments(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        order_id = request.path_params["id"]
        if order_id not in self._table(state, "orders"):
            return not_found()
        items = [dict(p) for p in self._table(state, "payments").values() if p["order_id"] == order_id]
        return 200, {"entity": "collection", "count": len(items), "items": items}

    def fetchPayment(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        payment = self._table(state, "payments").get(request.path_params["id"])
        return (200, dict(payment)) if payment else not_found()

    def capturePayment(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        payment = self._table(state, "payments").get(request.path_params["id"])
        if payment is None:
            return not_found()
        if payment["captured"]:
            return razorpay_error(400, "This payment has already been captured")
        if payment["status"] != "authorized":
            return razorpay_error(400, "Only payments which have been authorized and not yet captured can be captured")
        if request.body["currency"].upper() != payment["currency"]:
            return razorpay_error(400, "The currency should be the same as the payment currency", field="currency")
        if request.body["amount"] != payment["amount"]:
            return razorpay_error(400, "Capture amount must be equal to the amount authorized", field="amount")
        self._mark_captured(state, payment)
        return 200, dict(payment)

    def refundPayment(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        payment = self._table(state, "payments").get(request.path_params["id"])
        if payment is None:
            return not_found()
        if not payment["captured"]:
            return razorpay_error(400, "The payment has not been captured. Only captured payments can be refunded")
        left = payment["amount"] - payment["amount_refunded"]
        if left <= 0:
            return razorpay_error(400, "The payment has been fully refunded already")
        body = request.body or {}
        amount = body.get("amount", left)
        if amount > left:
            return razorpay_error(400, "The refund amount provided is greater than amount captured", field="amount")
        refund = {
            "id": _razorpay_id("rfnd"),
            "entity": "refund",
            "amount": amount,
            "currency": payment["currency"],
            "payment_id": payment["id"],
            "notes": body.get("notes") or [],
            "receipt": body.get("receipt"),
            "acquirer_data": {"arn": None},
            "batch_id": None,
            "status": "processed",
            "speed_processed": "normal",
            "speed_requested": body.get("speed", "normal"),
            "created_at": int(time.time()),
        }
        self._table(state, "refunds")[refund["id"]] = refund
        payment["amount_refunded"] += amount
        full = payment["amount_refunded"] >= payment["amount"]
        payment["refund_status"] = "full" if full else "partial"
        if full:
            payment["status"] = "refunded"
        return 200, dict(refund)

    def fetchPaymentRefunds(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        payment_id = request.path_params["id"]
        if payment_id not in self._table(state, "payments"):
            return not_found()
        items = [dict(r) for r in self._table(state, "refunds").values() if r["payment_id"] == payment_id]
        return 200, {"entity": "collection", "count": len(items), "items": items}


# ---------------------------------------------------------------------------------------------------------------
# Webhooks, as Razorpay sends them


def webhook_body(
    event: str,
    payment: dict[str, Any] | None = None,
    *,
    order: dict[str, Any] | None = None,
    refund: dict[str, Any] | None = None,
    dispute: dict[str, Any] | None = None,
    created_at: float | None = None,
) -> bytes:
    """An event envelope as Razorpay posts it: ``entity``, ``account_id``, ``event``, ``contains``, ``payload``
    (each entity under ``payload.<name>.entity``) and ``created_at``."""
    payload: dict[str, Any] = {}
    for name, entity in (("payment", payment), ("order", order), ("refund", refund), ("dispute", dispute)):
        if entity is not None:
            payload[name] = {"entity": entity}
    document = {
        "entity": "event",
        "account_id": "acc_BFQ7uQEaa7j2z7",
        "event": event,
        "contains": list(payload),
        "payload": payload,
        "created_at": int(time.time() if created_at is None else created_at),
    }
    return json.dumps(document).encode()


def signature(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    """``X-Razorpay-Signature``: hex HMAC-SHA256 of the raw body with the webhook secret."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_headers(body: bytes, event_id: str, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Razorpay-Signature": signature(body, secret),
        "X-Razorpay-Event-Id": event_id,
    }
