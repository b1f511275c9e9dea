"""Pay provider ``razorpay``: Razorpay Orders, Payments (capture) and Refunds, and its signed webhooks.

The hub's payment is a **Razorpay order**: ``transaction_id`` is the order id (``order_...``), the one id that
exists from the start (before the customer pays in Checkout), that every payment of it carries
(``payment.order_id``), and that every webhook names (payment, refund and dispute events carry the payment
entity, ``order.paid`` the order). Captures, refunds and lookups find the order's payment themselves
(``GET /v1/orders/{id}/payments``); ``details["razorpay_payment_id"]`` names it.

``pay``:

1. the order is found by its **receipt** (``GET /v1/orders?receipt=...``) or created (``POST /v1/orders``) with
   ``receipt`` = a digest of the tenant and the hub's idempotency key (Razorpay: at most 40 characters, unique per
   account), ``notes`` = ``hub_payment_id``, ``hub_tenant``, ``order_id``, ``partial_payment: false`` and
   ``payment.capture`` = ``automatic`` (``manual`` for ``capture=False``). A retried call finds the order the
   first call made, so one hub payment is one Razorpay order, and Razorpay takes at most one captured payment per
   order (an order that is ``paid`` refuses further payments): **never a double charge**.
2. ``payment_method`` ``pay_...`` is a payment the customer authorised in Checkout: it is fetched, its amount
   and currency checked, and its order becomes the transaction (no order is created). Without one the order's
   own payments are read: a captured or authorised one is the payment; none yet means the customer has to pay
   in Checkout (``requires_action``, ``details`` carry ``razorpay_order_id`` and ``key_id`` for it) and a webhook
   or a lookup settles it later. Any other ``payment_method`` goes to Razorpay in the order's notes
   (``hub_payment_method``) for the Checkout page (the test server turns such test tokens into payments); a
   card number is refused, never sent.
3. an ``authorized`` payment is captured (``POST /v1/payments/{id}/capture``) when ``capture`` is true; a
   ``failed`` one raises :class:`~hub.errors.PermanentError` with Razorpay's ``error_reason`` (else
   ``error_code``) as ``provider_code``.

Amounts are integers of the currency's minor unit (``to_minor_units``: paise; JPY has none). For three-decimal
currencies (KWD, BHD, OMR) Razorpay's reference says the last digit must be 0 (KWD 99.990 is 99990): an amount
with a third decimal is refused (never rounded).

Razorpay has **no void**: an authorised payment that is not captured is refunded to the customer automatically
(after the capture window, 5 days by default), so there is no ``cancel`` hook. Razorpay captures only the whole
authorised amount (its reference: the capture amount "should be equal to the order amount"): a partial capture is
refused with :class:`~hub.errors.PermanentError`. Its capture takes no idempotency key, so :meth:`capture` writes the
capture's key into the order's notes (``PATCH /v1/orders/{id}``) before capturing: a retry whose first answer was
lost finds the payment captured under its key and returns it.

Errors (through :mod:`hub.http`): connection refused -> :class:`~hub.errors.TransientError` (nothing was sent);
a timeout after sending, a dropped connection, HTTP 500/502/504 -> :class:`~hub.errors.OutcomeUnknownError`
(Razorpay may have acted: the core retries here with the same receipt, then looks the payment up); 401/403 ->
:class:`~hub.errors.ConfigurationError`; 429/503 -> ``TransientError``; other 4xx -> ``PermanentError`` with
Razorpay's ``error.reason`` (or ``error.code``) and ``description``.

Webhooks: ``X-Razorpay-Signature`` is the hex HMAC-SHA256 of the raw body with the webhook secret, verified with
the official SDK's ``Utility.verify_webhook_signature`` (the only part of the SDK used). Razorpay signs no
timestamp; the event's ``created_at`` must be within ``webhook_tolerance`` seconds (default 25 hours: Razorpay
retries a failed delivery for 24 hours after the event was created, with the same ``created_at``). The event id
is the ``x-razorpay-event-id`` header Razorpay sends with every delivery (the core dedupes on it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from marshmallow import Schema, fields, validate

from hub import hookimpl
from hub.capabilities import (
    CaptureRequest,
    HealthResult,
    PaymentLookup,
    PaymentRequest,
    PaymentResult,
    Provider,
    ProviderContext,
    RefundRequest,
    RefundResult,
    WebhookEvent,
    WebhookRequest,
    from_minor_units,
    to_minor_units,
)
from hub.errors import (
    NotFoundError,
    OutcomeUnknownError,
    PermanentError,
    SignatureError,
    UnsupportedError,
)
from hub.http import HttpClient, HttpSettings, ProviderReason

if TYPE_CHECKING:
    import requests

__all__ = ["RazorpayGateway", "RazorpaySettings", "receipt_for", "register_providers"]

#: Currencies with three decimals whose last digit Razorpay requires to be 0 (its Orders reference).
THREE_DECIMAL_CURRENCIES = frozenset({"KWD", "BHD", "OMR", "JOD", "TND", "IQD", "LYD"})

#: Razorpay's payment statuses -> the hub's (captured payments with refunds are refined by refund_status).
PAYMENT_STATUS_MAP = {
    "created": "processing",
    "authorized": "requires_capture",
    "captured": "succeeded",
    "refunded": "refunded",
    "failed": "failed",
}

#: Which of an order's payments is "the" payment: the furthest along; a failed attempt only when nothing else.
_PAYMENT_PREFERENCE = {"refunded": 0, "captured": 0, "authorized": 1, "created": 2, "failed": 3}

#: Webhook events -> the hub status they move a payment to (refund events are computed from the payment).
WEBHOOK_STATUS = {
    "payment.authorized": "requires_capture",
    "payment.captured": "succeeded",
    "payment.failed": "failed",
    "order.paid": "succeeded",
    "payment.dispute.created": "disputed",
}
REFUND_EVENTS = frozenset({"refund.created", "refund.processed"})

#: Razorpay's 5xx answers may come after it acted (a capture, an order): the outcome is unknown.
INDETERMINATE_STATUSES = {500: OutcomeUnknownError, 502: OutcomeUnknownError, 504: OutcomeUnknownError}

_CARD_NUMBER = re.compile(r"^[\d\s-]{12,23}$")


class RazorpaySettings(HttpSettings):
    """``providers.<name>`` settings of a ``razorpay`` provider (HttpSettings adds ``timeout``, ``connect_timeout``)."""

    key_id = fields.String(
        required=True, validate=validate.Regexp(r"^rzp_(test|live)_\w+$", error="not a Razorpay key id (rzp_test_...)")
    )
    key_secret = fields.String(required=True, validate=validate.Length(min=1))
    #: The secret entered when the webhook was set up on the Dashboard (not the key secret).
    webhook_secret = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    #: Tests (or a proxy): the API's address instead of https://api.razorpay.com (paths start with /v1).
    api_base = fields.Url(load_default="https://api.razorpay.com", schemes={"http", "https"}, require_tld=False)
    #: Seconds an event's created_at may lie in the past (or future): Razorpay retries deliveries for 24 h.
    webhook_tolerance = fields.Integer(load_default=90_000, validate=validate.Range(min=1))


def receipt_for(tenant: str, key: str) -> str:
    """The order receipt for the hub's idempotency ``key`` of ``tenant``: 40 characters (Razorpay's limit), the
    same for every retry, different for another tenant's equal key (receipts are unique per Razorpay account)."""
    return "hub_" + hashlib.sha256(f"{tenant}\x00{key}".encode()).hexdigest()[:36]


def _razorpay_error(response: requests.Response) -> ProviderReason | None:
    """Razorpay's error body: ``{"error": {"code", "description", "field", "source", "step", "reason", ...}}``."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    reason = error.get("reason")
    code = reason if reason and reason != "NA" else error.get("code")
    message = error.get("description")
    if error.get("field"):
        message = f"{message} (field: {error['field']})"
    return ProviderReason(code=str(code) if code else None, message=str(message) if message else None)


class RazorpayGateway(Provider):
    type_name = "razorpay"
    capability = "pay"
    settings_schema: ClassVar[type[Schema]] = RazorpaySettings
    env_settings: ClassVar[dict[str, str]] = {
        "key_id": "RAZORPAY_KEY_ID",
        "key_secret": "RAZORPAY_KEY_SECRET",
        "webhook_secret": "RAZORPAY_WEBHOOK_SECRET",
    }
    secret_settings = ("key_secret", "webhook_secret")
    description = "Razorpay Orders, captures and refunds (REST API via hub.http); webhooks verified with the SDK."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self.http = HttpClient.from_settings(
            "Razorpay",
            settings,
            base_url=settings["api_base"].rstrip("/"),
            auth=(settings["key_id"], settings["key_secret"]),
            headers={"Accept": "application/json"},
            extract_error=_razorpay_error,
            status_errors=INDETERMINATE_STATUSES,
            sent_error=OutcomeUnknownError,
        )

    # --- the API ---------------------------------------------------------------------------------------

    def _get(self, path: str, **params: Any) -> Any:
        return self.http.get(path, params=params or None).json()

    def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.http.post(path, json=dict(body)).json()

    def _order_by_receipt(self, receipt: str) -> dict[str, Any] | None:
        items = self._get("/v1/orders", receipt=receipt).get("items") or []
        return next((item for item in items if item.get("receipt") == receipt), None)

    def _fetch(self, path: str) -> dict[str, Any] | None:
        """The entity at ``path``, or ``None`` when Razorpay has no such id (it answers 400 "The id provided does
        not exist" rather than 404)."""
        try:
            found: dict[str, Any] = self._get(path)
        except PermanentError as error:
            if isinstance(error, NotFoundError) or "does not exist" in (error.message or ""):
                return None
            raise
        return found

    def _order(self, order_id: str) -> dict[str, Any] | None:
        return self._fetch(f"/v1/orders/{quote(order_id, safe='')}")

    def _order_payment(self, order_id: str) -> dict[str, Any] | None:
        """The payment of the order: captured (or refunded) before authorised, before created; a failed attempt
        only when there is nothing else (the newest one)."""
        items = self._get(f"/v1/orders/{order_id}/payments").get("items") or []
        if not items:
            return None
        newest_first = sorted(items, key=lambda item: item.get("created_at") or 0, reverse=True)
        return min(newest_first, key=lambda item: _PAYMENT_PREFERENCE.get(item.get("status"), 4))

    def _minor(self, amount: Decimal, currency: str) -> int:
        try:
            minor = to_minor_units(amount, currency)
        except ValueError as error:
            raise PermanentError(str(error), field="amount", provider_code="amount") from None
        if currency.upper() in THREE_DECIMAL_CURRENCIES and minor % 10:
            raise PermanentError(
                f"Razorpay takes {currency.upper()} amounts with the last of three decimals 0 ({amount} is not)",
                field="amount",
                provider_code="amount",
            )
        return minor

    # --- pay -------------------------------------------------------------------------------------------

    @hookimpl
    def pay(self, payment: PaymentRequest) -> PaymentResult:
        currency = payment.currency.upper()
        minor = self._minor(payment.amount, currency)
        method = (payment.payment_method or "").strip() or None
        if method and _CARD_NUMBER.match(method):
            raise PermanentError(
                "Razorpay takes no card numbers: pass the payment id (pay_...) Checkout returned",
                field="paymentMethod",
                provider_code="payment_method",
            )
        if method and method.startswith("pay_"):
            razorpay_payment = self._checkout_payment(method, minor, currency)
            order = self._order(razorpay_payment["order_id"])
            if order is None:
                raise PermanentError(f"the order of payment {method} does not exist", provider_code="order")
        else:
            order = self._find_or_create_order(payment, minor, currency, method)
            razorpay_payment = self._order_payment(order["id"])
        if razorpay_payment is not None and razorpay_payment.get("status") == "authorized" and payment.capture:
            razorpay_payment = self._capture(razorpay_payment, razorpay_payment["amount"], currency)
        if razorpay_payment is not None and razorpay_payment.get("status") == "failed":
            raise _declined(razorpay_payment)
        return self._result(order, razorpay_payment)

    def _checkout_payment(self, payment_id: str, minor: int, currency: str) -> dict[str, Any]:
        found = self._fetch(f"/v1/payments/{quote(payment_id, safe='')}")
        if found is None:
            raise PermanentError(f"Razorpay has no payment {payment_id}", provider_code="payment_not_found")
        if not found.get("order_id"):
            # Razorpay refunds payments made without an order; they cannot be captured.
            raise PermanentError(f"payment {payment_id} was made without an order", provider_code="order")
        if found.get("amount") != minor or str(found.get("currency", "")).upper() != currency:
            raise PermanentError(
                f"payment {payment_id} is for {found.get('amount')} {found.get('currency')} (minor units), "
                f"not {minor} {currency}",
                field="amount",
                provider_code="amount_mismatch",
            )
        return found

    def _find_or_create_order(
        self, payment: PaymentRequest, minor: int, currency: str, method: str | None
    ) -> dict[str, Any]:
        receipt = receipt_for(payment.tenant, payment.idempotency_key or payment.id)
        order = self._order_by_receipt(receipt)
        if order is None:
            notes = {"hub_payment_id": payment.id, "hub_tenant": payment.tenant}
            if payment.order_id:
                notes["order_id"] = str(payment.order_id)[:256]
            if method:
                notes["hub_payment_method"] = method[:256]
            body: dict[str, Any] = {
                "amount": minor,
                "currency": currency,
                "receipt": receipt,
                "notes": notes,
                "partial_payment": False,
                "payment": {"capture": "automatic" if payment.capture else "manual"},
            }
            order = self._post("/v1/orders", body)
        elif order.get("amount") != minor or str(order.get("currency", "")).upper() != currency:
            raise PermanentError(
                "this idempotency key was used for another amount or currency",
                field="amount",
                provider_code="idempotency_key_reused",
            )
        return order

    def _capture(self, razorpay_payment: dict[str, Any], minor: int, currency: str) -> dict[str, Any]:
        return self._post(f"/v1/payments/{razorpay_payment['id']}/capture", {"amount": minor, "currency": currency})

    def _result(self, order: Mapping[str, Any], razorpay_payment: Mapping[str, Any] | None) -> PaymentResult:
        currency = str(order["currency"]).upper()
        amount = from_minor_units(order["amount"], currency)
        details: dict[str, Any] = {"razorpay_order_id": order["id"], "order_status": order.get("status")}
        if razorpay_payment is None:
            # Nobody paid yet: the customer pays this order in Checkout (key_id and the order id open it).
            details["key_id"] = self.settings["key_id"]
            return PaymentResult(
                order["id"], "requires_action", amount, currency, raw_status=order.get("status"), details=details
            )
        raw = str(razorpay_payment.get("status"))
        status = PAYMENT_STATUS_MAP.get(raw, "processing")
        refunded_minor = int(razorpay_payment.get("amount_refunded") or 0)
        if raw == "captured" and refunded_minor:
            status = "refunded" if razorpay_payment.get("refund_status") == "full" else "partially_refunded"
        details["razorpay_payment_id"] = razorpay_payment.get("id")
        if raw == "failed":
            details["error_code"] = razorpay_payment.get("error_code")
            details["error_reason"] = razorpay_payment.get("error_reason")
        captured = raw in ("captured", "refunded")
        return PaymentResult(
            order["id"],
            status,
            amount,
            currency,
            raw_status=raw,
            amount_captured=from_minor_units(razorpay_payment["amount"], currency) if captured else None,
            amount_refunded=from_minor_units(refunded_minor, currency) if captured else None,
            details=details,
        )

    # --- lookups ---------------------------------------------------------------------------------------

    @hookimpl
    def payment_status(self, lookup: PaymentLookup) -> PaymentResult | None:
        if lookup.transaction_id:
            order = self._order(lookup.transaction_id)
        elif lookup.idempotency_key:
            order = self._order_by_receipt(receipt_for(lookup.tenant, lookup.idempotency_key))
        else:
            # Razorpay searches orders by receipt only, not by notes.
            raise UnsupportedError("Razorpay finds an order by its receipt (the idempotency key) or its id only")
        if order is None or _notes(order).get("hub_tenant", lookup.tenant) != lookup.tenant:
            return None
        return self._result(order, self._order_payment(order["id"]))

    def _paid_order(self, transaction_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        order = self._order(transaction_id)
        if order is None:
            raise NotFoundError(f"Razorpay has no order {transaction_id}", provider_code="order_not_found")
        return order, self._order_payment(order["id"])

    # --- capture ---------------------------------------------------------------------------------------

    @hookimpl
    def capture(self, capture: CaptureRequest) -> PaymentResult:
        order, razorpay_payment = self._paid_order(capture.transaction_id)
        # Razorpay's capture takes no idempotency key: the capture's key goes into the order's notes first, so a
        # retry whose first answer was lost finds the payment captured under its key and returns it.
        mark = receipt_for(capture.tenant, f"capture:{capture.idempotency_key or capture.id}")
        notes = _notes(order)
        status = razorpay_payment.get("status") if razorpay_payment else None
        if razorpay_payment is not None and status == "captured" and notes.get("hub_capture_key") == mark:
            return self._result(order, razorpay_payment)
        if razorpay_payment is None or status != "authorized":
            raise PermanentError(
                f"the order's payment is {status or 'not made yet'}, not authorized", provider_code="not_authorized"
            )
        currency = str(razorpay_payment["currency"]).upper()
        if capture.amount is not None and self._minor(capture.amount, currency) != razorpay_payment["amount"]:
            raise PermanentError(
                "Razorpay captures only the whole authorised amount (no partial captures)",
                field="amount",
                provider_code="partial_capture",
            )
        if notes.get("hub_capture_key") != mark:
            order_path = f"/v1/orders/{quote(order['id'], safe='')}"
            self.http.request("PATCH", order_path, json={"notes": {**notes, "hub_capture_key": mark}})
        return self._result(order, self._capture(razorpay_payment, razorpay_payment["amount"], currency))

    # --- refunds ---------------------------------------------------------------------------------------

    @hookimpl
    def refund(self, refund: RefundRequest) -> RefundResult:
        order, razorpay_payment = self._paid_order(refund.transaction_id)
        if razorpay_payment is None or razorpay_payment.get("status") not in ("captured", "refunded"):
            state = razorpay_payment.get("status") if razorpay_payment else "unpaid"
            raise PermanentError(f"only captured payments can be refunded; this one is {state}", provider_code=state)
        payment_id = razorpay_payment["id"]
        currency = str(razorpay_payment["currency"]).upper()
        key = refund.idempotency_key or refund.id
        # A retried refund whose first answer was lost: Razorpay has it already, under its receipt.
        receipt = receipt_for(refund.tenant, f"refund:{key}")
        earlier = self._get(f"/v1/payments/{payment_id}/refunds", count=100).get("items") or []
        done = next((item for item in earlier if item.get("receipt") == receipt), None)
        if done is None:
            body: dict[str, Any] = {
                "receipt": receipt,
                "notes": {"hub_refund_id": refund.id, "hub_tenant": refund.tenant},
            }
            if refund.amount is not None:
                body["amount"] = self._minor(refund.amount, currency)
            if refund.reason:
                body["notes"]["reason"] = refund.reason[:256]
            done = self._post(f"/v1/payments/{payment_id}/refund", body)
        status = {"processed": "succeeded", "failed": "failed"}.get(str(done.get("status")), "processing")
        return RefundResult(
            str(done["id"]),
            status,
            from_minor_units(done["amount"], currency),
            currency,
            details={"raw_status": done.get("status"), "razorpay_payment_id": payment_id, "order_id": order["id"]},
        )

    # --- health ----------------------------------------------------------------------------------------

    @hookimpl
    def health(self) -> HealthResult:
        result = self.http.probe("GET", "/v1/orders", params={"count": 1})
        if result.ok:
            return HealthResult("success", "Razorpay reachable, API keys accepted")
        return result

    # --- webhooks --------------------------------------------------------------------------------------

    @hookimpl
    def handle_webhook(self, webhook: WebhookRequest) -> list[WebhookEvent]:
        secret = self.settings.get("webhook_secret")
        if not secret:
            raise SignatureError("no webhook_secret is configured for this Razorpay provider")
        signature = webhook.headers.get("X-Razorpay-Signature")
        if not signature:
            raise SignatureError("missing X-Razorpay-Signature header")
        _verify_signature(webhook.body, signature, secret)
        try:
            document = json.loads(webhook.body)
        except ValueError:
            raise PermanentError("a Razorpay webhook body must be JSON") from None
        created_at = document.get("created_at") if isinstance(document, dict) else None
        if not isinstance(created_at, int | float) or isinstance(created_at, bool):
            raise SignatureError("the Razorpay event has no created_at: it cannot be checked for staleness")
        tolerance = self.settings["webhook_tolerance"]
        if abs(time.time() - created_at) > tolerance:
            raise SignatureError(f"the Razorpay event was created more than {tolerance} s from now: refused as stale")
        event_type = str(document.get("event") or "")
        payload = document.get("payload") or {}
        event_id = webhook.headers.get("x-razorpay-event-id") or "sha256:" + hashlib.sha256(webhook.body).hexdigest()
        event = _event(event_type, payload, event_id)
        return [event] if event is not None else []

    @hookimpl
    def close(self) -> None:
        self.http.close()


def _verify_signature(body: bytes, signature: str, secret: str) -> None:
    from razorpay.errors import SignatureVerificationError
    from razorpay.utility.utility import Utility

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError("the webhook body is not UTF-8: not signed by Razorpay") from None
    try:
        Utility().verify_webhook_signature(text, signature, secret)
    except SignatureVerificationError:
        raise SignatureError("X-Razorpay-Signature does not match the body") from None


def _entity(payload: Mapping[str, Any], name: str) -> dict[str, Any]:
    item = payload.get(name)
    entity = item.get("entity") if isinstance(item, Mapping) else None
    return entity if isinstance(entity, dict) else {}


def _event(event_type: str, payload: Mapping[str, Any], event_id: str) -> WebhookEvent | None:
    """The hub's event for a Razorpay event, ``None`` for events that move no payment (refund.failed...)."""
    payment = _entity(payload, "payment")
    order = _entity(payload, "order")
    reference = order.get("id") if event_type == "order.paid" else payment.get("order_id")
    if not reference:
        return None  # a payment made without an order (not the hub's) or an event about something else
    details: dict[str, Any] = {"raw_status": payment.get("status") or order.get("status")}
    if payment.get("id"):
        details["razorpay_payment_id"] = payment["id"]
    currency = str(payment.get("currency") or order.get("currency") or "").upper()
    if event_type in REFUND_EVENTS:
        if not payment:
            return None
        refunded = int(payment.get("amount_refunded") or 0)
        status = "refunded" if refunded >= int(payment.get("amount") or 0) else "partially_refunded"
        refund = _entity(payload, "refund")
        if refund.get("id"):
            details["razorpay_refund_id"] = refund["id"]
    else:
        status = WEBHOOK_STATUS.get(event_type)
        if status is None:
            return None
        refunded = int(payment.get("amount_refunded") or 0)
    if currency and (payment or event_type in REFUND_EVENTS):
        with contextlib.suppress(ValueError):
            details["amount_refunded"] = str(from_minor_units(refunded, currency))
    if event_type == "payment.failed":
        details["error_code"] = payment.get("error_code")
        details["error_reason"] = payment.get("error_reason")
    if event_type == "payment.dispute.created":
        dispute = _entity(payload, "dispute")
        details["razorpay_dispute_id"] = dispute.get("id")
        details["reason_code"] = dispute.get("reason_code")
    return WebhookEvent(event_id=event_id, reference=str(reference), status=status, type=event_type, details=details)


def _notes(entity: Mapping[str, Any]) -> dict[str, Any]:
    notes = entity.get("notes")
    return notes if isinstance(notes, dict) else {}  # Razorpay sends [] for no notes


def _declined(razorpay_payment: Mapping[str, Any]) -> PermanentError:
    code = razorpay_payment.get("error_reason") or razorpay_payment.get("error_code") or "payment_failed"
    description = razorpay_payment.get("error_description") or "the payment failed"
    error = PermanentError(f"Razorpay declined the payment: {description}", provider_code=str(code))
    error.detail = str(razorpay_payment.get("error_code") or "")
    return error


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(RazorpayGateway)
