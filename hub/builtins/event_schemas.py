"""The event types the hub knows out of the box, each with a JSON Schema (draft 2020-12) for its ``data``.

Registered through :func:`~hub.hookspecs.register_event_schemas`, as a plugin would. The inventory and order types
are the seed's; the ``payment.*`` types are what the hub itself publishes when a gateway's webhook moves a payment
(see :mod:`hub.services.pay`). Properties not listed are allowed: a schema names what a consumer may rely on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hub import hookimpl

_TEXT = {"type": "string", "minLength": 1, "maxLength": 500}
_QUANTITY = {"type": "number"}
_TIME = {"type": "string", "format": "date-time"}
_MONEY = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$", "description": "a decimal in major units, as a string"}
_CURRENCY = {"type": "string", "pattern": "^[A-Z]{3}$"}
#: JavaScript callers send amounts as numbers (the seed's ``totalAmount``), the hub as decimal strings.
_MONEY_OR_NUMBER = {"anyOf": [{"type": "number"}, _MONEY]}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


_LINE = _object(["quantity"], sku=_TEXT, itemId=_TEXT, quantity=_QUANTITY, unitPrice=_MONEY_OR_NUMBER, name=_TEXT)
#: An item is named by its ``itemId`` (the seed's) or its ``sku``.
_ITEM = [{"required": ["itemId"]}, {"required": ["sku"]}]

#: event type -> the schema of version 1 (the seed's field names, camelCase)
BUILTIN_EVENT_SCHEMAS: dict[str, dict[str, Any]] = {
    "inventory.stock.updated": {
        **_object(
            ["newQuantity"],
            itemId=_TEXT,
            sku=_TEXT,
            warehouseId=_TEXT,
            location=_TEXT,
            oldQuantity=_QUANTITY,
            newQuantity=_QUANTITY,
            transactionType=_TEXT,
            reason=_TEXT,
            source=_TEXT,
            updatedAt=_TIME,
        ),
        "anyOf": _ITEM,
    },
    "inventory.level.discrepancy": {
        **_object(
            ["expected", "actual"],
            itemId=_TEXT,
            sku=_TEXT,
            warehouseId=_TEXT,
            location=_TEXT,
            expected=_QUANTITY,
            actual=_QUANTITY,
            source=_TEXT,
            detectedAt=_TIME,
        ),
        "anyOf": _ITEM,
    },
    #: The ``low_stock_alert`` template's fields, so a rule can hand the event's data to it as it is.
    "inventory.stock.low": _object(
        ["sku", "current_stock", "threshold"],
        sku=_TEXT,
        location=_TEXT,
        current_stock=_QUANTITY,
        threshold=_QUANTITY,
        item_name=_TEXT,
    ),
    "sales.order.created": _object(
        ["orderId"],
        orderId=_TEXT,
        customerId=_TEXT,
        totalAmount=_MONEY_OR_NUMBER,
        currency=_CURRENCY,
        status=_TEXT,
        items={"type": "array", "items": _LINE},
        timestamp=_TIME,
    ),
    "purchase.order.created": {
        **_object(
            [],
            purchaseOrderId=_TEXT,
            orderId=_TEXT,
            supplierId=_TEXT,
            items={"type": "array", "items": _LINE},
            totalAmount=_MONEY_OR_NUMBER,
            currency=_CURRENCY,
            expectedAt=_TIME,
        ),
        "anyOf": [{"required": ["purchaseOrderId"]}, {"required": ["orderId"]}],
    },
}

#: What the hub publishes as ``payment.<status>`` (hub/services/pay.py).
PAYMENT_EVENT = _object(
    ["paymentId", "status", "amount", "currency", "gateway"],
    paymentId=_TEXT,
    transactionId={"type": ["string", "null"]},
    gateway=_TEXT,
    status=_TEXT,
    previousStatus={"type": ["string", "null"]},
    amount=_MONEY,
    currency=_CURRENCY,
    orderId={"type": ["string", "null"]},
    providerEventId={"type": ["string", "null"]},
    providerEventType={"type": ["string", "null"]},
)
PAYMENT_EVENT_TYPES = (
    "payment.succeeded",
    "payment.failed",
    "payment.canceled",
    "payment.refunded",
    "payment.partially_refunded",
    "payment.disputed",
    "payment.requires_capture",
    "payment.requires_action",
    "payment.processing",
)


@hookimpl
def register_event_schemas(register: Callable[..., None]) -> None:
    for event_type, schema in BUILTIN_EVENT_SCHEMAS.items():
        register(event_type, 1, schema)
    for event_type in PAYMENT_EVENT_TYPES:
        register(event_type, 1, PAYMENT_EVENT)
