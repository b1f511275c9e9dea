"""Pay provider ``square``: card payments through Square's Payments and Refunds APIs (Connect v2).

Calls go through :mod:`hub.http` (pooled ``requests`` sessions per worker thread, timeouts, the hub's mapping of
statuses and transport failures, ``Retry-After``); the official SDK (``squareup``) is used only to verify webhook
signatures (``square.utils.webhooks_helper.verify_signature``). Why not the SDK's client: it retries 429s and
5xx by itself (two retries unless every call passes ``max_retries=0``), under the hub's own retries and breaker;
its httpx stack would need the hub's status and transport mapping written again over ``ApiError``; and its
models follow the newest ``Square-Version`` while this provider pins the one the official description has.

* ``pay`` -- ``POST /v2/payments`` (``source_id`` = the payment method token, ``idempotency_key``,
  ``amount_money`` in minor units, ``autocomplete=false`` for an authorisation, ``reference_id`` = the order id,
  ``location_id``). Square has no free-form metadata: the hub's payment id, the idempotency key and the tenant go
  into ``note`` as ``[hub:<payment id> key:<key> tenant:<tenant>]``, which lookups match.
* ``payment_status`` -- ``GET /v2/payments/{id}``; without an id, ``GET /v2/payments`` (newest first, over the
  last ``lookup_days``) matched by that note, then by ``reference_id`` with amount and currency.
* ``capture`` -- ``POST /v2/payments/{id}/complete``; a partial capture first lowers ``amount_money`` of the
  APPROVED payment with ``PUT /v2/payments/{id}`` (Square completes the whole approved amount otherwise).
* ``cancel`` -- ``POST /v2/payments/{id}/cancel``. ``refund`` -- ``POST /v2/refunds``.

Idempotency keys: Square takes at most 45 characters. A longer hub key is sent as ``hub-`` + the first 40 hex
digits of its SHA-256 (stable, so a retry sends the same key).

Failover rule (see the README): connection refused, a connect timeout, 429 ``RATE_LIMITED`` and 503
``SERVICE_UNAVAILABLE`` are "nothing happened" (:class:`~hub.errors.TransientError`); a read timeout, a dropped
connection and 500/502/504 on a request that changes something are indeterminate
(:class:`~hub.errors.OutcomeUnknownError`): Square's advice is to retry with the same idempotency key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from marshmallow import Schema, fields, validate

from hub import hookimpl
from hub.capabilities import (
    CancelRequest,
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
    parse_timestamp,
    to_minor_units,
)
from hub.errors import (
    ConfigurationError,
    NotFoundError,
    OutcomeUnknownError,
    PermanentError,
    ProviderError,
    SignatureError,
    TransientError,
)
from hub.http import HttpClient, HttpSettings, json_error

if TYPE_CHECKING:
    import requests

__all__ = ["SquarePayments", "SquareSettings", "derive_key", "register_providers"]

#: The Square-Version every request pins: the version of the official description the tests check against.
DEFAULT_SQUARE_VERSION = "2021-08-18"
#: Square's limit on idempotency keys (CreatePayment, UpdatePayment, RefundPayment).
MAX_KEY_LENGTH = 45
#: How old a webhook's ``created_at`` may be: Square retries a failed delivery for up to 72 hours.
DEFAULT_WEBHOOK_TOLERANCE = 72 * 3600
#: How far in the future ``created_at`` may be (clock skew).
FUTURE_SKEW = 300.0

#: Payment.status -> the hub's status (COMPLETED is refined by refunded_money).
STATUS_MAP = {
    "APPROVED": "requires_capture",
    "PENDING": "processing",
    "COMPLETED": "succeeded",
    "CANCELED": "canceled",
    "FAILED": "failed",
}
#: PaymentRefund.status -> RefundResult.status.
REFUND_STATUS_MAP = {"PENDING": "processing", "COMPLETED": "succeeded", "REJECTED": "failed", "FAILED": "failed"}

#: Error codes that say the credentials or the account are unusable: fail over to the next gateway.
CONFIGURATION_CODES = frozenset(
    {
        "UNAUTHORIZED",
        "ACCESS_TOKEN_EXPIRED",
        "ACCESS_TOKEN_REVOKED",
        "CLIENT_DISABLED",
        "FORBIDDEN",
        "INSUFFICIENT_SCOPES",
        "APPLICATION_DISABLED",
        "V1_APPLICATION",
        "V1_ACCESS_TOKEN",
        "CARD_PROCESSING_NOT_ENABLED",
        "MERCHANT_SUBSCRIPTION_NOT_FOUND",
        "LOCATION_MISMATCH",
        "INVALID_SQUARE_VERSION_FORMAT",
        "API_VERSION_INCOMPATIBLE",
    }
)
#: 5xx codes Square answers after a request may have been processed: retry with the same key, never elsewhere.
INDETERMINATE_STATUSES = frozenset({500, 502, 504})


def derive_key(key: str) -> str:
    """The idempotency key Square gets for the hub's ``key``: itself when it fits Square's 45 characters (and
    has no space or bracket, which the note's marker cannot hold), else ``hub-`` + 40 hex digits of its SHA-256
    (the same on every retry)."""
    if 0 < len(key) <= MAX_KEY_LENGTH and not any(ch.isspace() or ch in "[]" for ch in key):
        return key
    return "hub-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]


class SquareSettings(HttpSettings):
    """``providers.<name>`` settings of a ``square`` provider (HttpSettings adds ``timeout`` and
    ``connect_timeout``)."""

    access_token = fields.String(required=True, validate=validate.Length(min=1))
    #: The location payments are taken at (Square's main location when absent); lookups list this location's.
    location_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    #: The signature key of the webhook subscription; webhooks are refused without it.
    webhook_signature_key = fields.String(load_default=None, allow_none=True)
    #: The notification URL of the subscription, exactly as configured at Square: it is part of what Square signs.
    webhook_url = fields.Url(load_default=None, allow_none=True, schemes={"http", "https"}, require_tld=False)
    #: Seconds a webhook's created_at may lie in the past (0: no limit). Square signs no timestamp and retries a
    #: failed delivery for up to 72 hours; replays inside the window are dropped by event_id.
    webhook_tolerance = fields.Float(load_default=DEFAULT_WEBHOOK_TOLERANCE, validate=validate.Range(min=0))
    api_base = fields.Url(load_default="https://connect.squareup.com", schemes={"http", "https"}, require_tld=False)
    square_version = fields.String(
        load_default=DEFAULT_SQUARE_VERSION,
        validate=validate.Regexp(r"^\d{4}-\d{2}-\d{2}$", error="not a Square-Version (YYYY-MM-DD)"),
    )
    #: How far back a lookup without a payment id searches (ListPayments' begin_time).
    lookup_days = fields.Integer(load_default=7, validate=validate.Range(min=1, max=365))


class SquarePayments(Provider):
    type_name = "square"
    capability = "pay"
    settings_schema: ClassVar[type[Schema]] = SquareSettings
    env_settings: ClassVar[dict[str, str]] = {
        "access_token": "SQUARE_ACCESS_TOKEN",
        "location_id": "SQUARE_LOCATION_ID",
        "webhook_signature_key": "SQUARE_WEBHOOK_SIGNATURE_KEY",
    }
    secret_settings = ("access_token", "webhook_signature_key")
    description = "Card payments through Square's Payments API; signed webhooks (x-square-hmacsha256-signature)."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self.http = HttpClient.from_settings(
            "Square",
            settings,
            base_url=settings["api_base"].rstrip("/"),
            headers={
                "Authorization": f"Bearer {settings['access_token']}",
                "Square-Version": settings["square_version"],
                "Accept": "application/json",
            },
            extract_error=json_error(code="errors.0.code", message="errors.0.detail"),
        )

    # --- calls ---------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None, **options: Any) -> Any:
        """One API call; returns the JSON answer or raises the hub's error.

        Requests that change something (every POST/PUT here carries an idempotency key or is idempotent)
        raise OutcomeUnknownError when the answer is lost or a 500/502/504 comes back: Square may have done it.
        """
        changes = method in ("POST", "PUT")
        response = self.http.request(
            method,
            path,
            json=body,
            check=False,
            sent_error=OutcomeUnknownError if changes else TransientError,
            **options,
        )
        error = self._error(response, changes)
        if error is not None:
            raise error
        try:
            return response.json()
        except ValueError:
            if changes:
                raise OutcomeUnknownError("Square's answer is not JSON", provider_code="bad-answer") from None
            raise TransientError("Square's answer is not JSON", provider_code="bad-answer") from None

    def _error(self, response: requests.Response, changes: bool) -> ProviderError | None:
        base = self.http.error_for(response)
        if base is None:
            return None
        found = _first_error(response)
        code = found.get("code")
        category = found.get("category")
        message = base.message
        if category == "PAYMENT_METHOD_ERROR" or category == "REFUND_ERROR":
            return PermanentError(message, provider_code=code, field=found.get("field"))
        if category == "AUTHENTICATION_ERROR" or code in CONFIGURATION_CODES:
            return ConfigurationError(message, provider_code=code)
        if code == "NOT_FOUND":
            return NotFoundError(message, provider_code=code)
        if code == "RATE_LIMITED" or category == "RATE_LIMIT_ERROR":
            return TransientError(message, provider_code=code, retry_after=base.retry_after)
        if changes and response.status_code in INDETERMINATE_STATUSES:
            return OutcomeUnknownError(message, provider_code=base.provider_code)
        if isinstance(base, PermanentError) and code:
            return type(base)(message, provider_code=code, field=found.get("field"))
        return base

    # --- pay -------------------------------------------------------------------------------------------

    @hookimpl
    def pay(self, payment: PaymentRequest) -> PaymentResult:
        key = derive_key(payment.idempotency_key or payment.id)
        body: dict[str, Any] = {
            "source_id": payment.payment_method or "",
            "idempotency_key": key,
            "amount_money": self._money(payment.amount, payment.currency),
            "autocomplete": bool(payment.capture),
            "note": _note(payment.description, payment.id, key, payment.tenant),
        }
        if payment.order_id and len(payment.order_id) <= 40:
            body["reference_id"] = payment.order_id
        if self.settings["location_id"]:
            body["location_id"] = self.settings["location_id"]
        email = (payment.customer or {}).get("email")
        if isinstance(email, str) and 0 < len(email) <= 255:
            body["buyer_email_address"] = email
        if not body["source_id"]:
            raise PermanentError(
                "Square needs a payment method (a card nonce or card on file id)", field="paymentMethod"
            )
        try:
            answer = self._call("POST", "/v2/payments", body=body)
        except PermanentError as error:
            if error.provider_code != "IDEMPOTENCY_KEY_REUSED":
                raise
            # The key was used already: for the hub that is this payment's earlier try (a key is never shared by
            # two payments), so the payment made with it is the answer -- provided it is for the same money.
            found = self._search(key=key, payment_id=None, tenant=payment.tenant)
            if found is None or (found.amount, found.currency) != (payment.amount, payment.currency.upper()):
                raise
            return found
        return self._result(answer.get("payment") or {})

    @hookimpl
    def payment_status(self, lookup: PaymentLookup) -> PaymentResult | None:
        if lookup.transaction_id:
            try:
                answer = self._call("GET", f"/v2/payments/{_path(lookup.transaction_id)}")
            except NotFoundError:
                return None
            payment = answer.get("payment") or {}
            if _marks(payment.get("note")).get("tenant") not in (None, lookup.tenant):
                return None  # another tenant's payment is no payment of this one
            return self._result(payment)
        key = derive_key(lookup.idempotency_key) if lookup.idempotency_key else None
        return self._search(
            key=key,
            payment_id=lookup.payment_id,
            tenant=lookup.tenant,
            order_id=lookup.order_id,
            amount=lookup.amount,
            currency=lookup.currency,
        )

    def _search(
        self,
        *,
        key: str | None,
        payment_id: str | None,
        tenant: str,
        order_id: str | None = None,
        amount: Decimal | None = None,
        currency: str | None = None,
        pages: int = 10,
    ) -> PaymentResult | None:
        """A payment the hub made, found with ListPayments: by the idempotency key in its note, else by the hub's
        payment id there, else by order id (reference_id) with the same amount and currency."""
        begin = datetime.now(UTC) - timedelta(days=self.settings["lookup_days"])
        params: dict[str, Any] = {"begin_time": _rfc3339(begin), "sort_order": "DESC", "limit": 100}
        if self.settings["location_id"]:
            params["location_id"] = self.settings["location_id"]
        by_id: dict[str, Any] | None = None
        by_order: dict[str, Any] | None = None
        for _ in range(pages):
            answer = self._call("GET", "/v2/payments", params=params)
            for found in answer.get("payments") or []:
                marks = _marks(found.get("note"))
                if marks.get("tenant") not in (None, tenant):
                    continue  # another tenant's payment is no payment of this one
                if key and marks.get("key") == key:
                    return self._result(found)
                if by_id is None and payment_id and marks.get("hub") == payment_id:
                    by_id = found
                if by_order is None and order_id and found.get("reference_id") == order_id and marks:
                    money = found.get("amount_money") or {}
                    if (
                        currency
                        and amount is not None
                        and money.get("currency") == currency.upper()
                        and from_minor_units(money.get("amount", 0), currency) == Decimal(amount)
                    ):
                        by_order = found
            params["cursor"] = answer.get("cursor")
            if not params["cursor"]:
                break
        chosen = by_id or by_order
        return self._result(chosen) if chosen is not None else None

    @hookimpl
    def capture(self, capture: CaptureRequest) -> PaymentResult:
        path = f"/v2/payments/{_path(capture.transaction_id)}"
        if capture.amount is not None:
            current = self._result(self._call("GET", path).get("payment") or {})
            if current.status != "requires_capture":
                raise PermanentError(
                    f"the Square payment is {current.raw_status}; only an APPROVED payment can be captured",
                    provider_code="BAD_REQUEST",
                )
            if Decimal(capture.amount) > current.amount:
                raise PermanentError(
                    f"cannot capture {capture.amount}: {current.amount} was authorised", provider_code="AMOUNT_TOO_HIGH"
                )
            if Decimal(capture.amount) != current.amount:
                key = derive_key(capture.idempotency_key or f"capture-{capture.id}")
                update = {"amount_money": self._money(capture.amount, capture.currency)}
                self._call("PUT", path, body={"idempotency_key": key, "payment": update})
        answer = self._call("POST", f"{path}/complete", body={})
        return self._result(answer.get("payment") or {})

    @hookimpl
    def cancel(self, cancel: CancelRequest) -> PaymentResult:
        answer = self._call("POST", f"/v2/payments/{_path(cancel.transaction_id)}/cancel", body={})
        return self._result(answer.get("payment") or {})

    @hookimpl
    def refund(self, refund: RefundRequest) -> RefundResult:
        amount = refund.amount
        if amount is None:
            payment = self._call("GET", f"/v2/payments/{_path(refund.transaction_id)}").get("payment") or {}
            amount = _refundable(payment, refund.currency)
            if amount <= 0:
                raise PermanentError(
                    "nothing is left to refund on this Square payment", provider_code="REFUND_AMOUNT_INVALID"
                )
        body: dict[str, Any] = {
            "idempotency_key": derive_key(refund.idempotency_key or f"refund-{refund.id}"),
            "payment_id": refund.transaction_id,
            "amount_money": self._money(amount, refund.currency),
        }
        if refund.reason:
            body["reason"] = refund.reason[:192]
        made = self._call("POST", "/v2/refunds", body=body).get("refund") or {}
        money = made.get("amount_money") or {}
        currency = money.get("currency") or refund.currency
        raw = made.get("status") or "PENDING"
        return RefundResult(
            refund_id=str(made.get("id") or ""),
            status=REFUND_STATUS_MAP.get(raw, "processing"),
            amount=from_minor_units(money["amount"], currency) if "amount" in money else Decimal(amount),
            currency=currency,
            details={"raw_status": raw, "payment_id": made.get("payment_id")},
        )

    # --- health ----------------------------------------------------------------------------------------

    @hookimpl
    def health(self) -> HealthResult:
        location = self.settings["location_id"]
        path = f"/v2/locations/{_path(location)}" if location else "/v2/locations"
        try:
            answer = self._call("GET", path, timeout=min(self.http.timeout, 5.0))
        except NotFoundError:
            return HealthResult("error", f"Square has no location {location} for this access token")
        except ProviderError as error:
            return HealthResult("error", error.message)
        found = answer.get("location") or next(iter(answer.get("locations") or []), None) or {}
        name = found.get("name") or found.get("id") or "main location"
        status = found.get("status") or "ACTIVE"
        if status != "ACTIVE":
            return HealthResult("error", f"Square location {name} is {status}")
        return HealthResult("success", f"Square location {name} active")

    # --- webhooks --------------------------------------------------------------------------------------

    @hookimpl
    def handle_webhook(self, webhook: WebhookRequest) -> list[WebhookEvent]:
        from square.utils.webhooks_helper import verify_signature

        key, url = self.settings["webhook_signature_key"], self.settings["webhook_url"]
        if not key or not url:
            raise SignatureError("Square webhooks need webhook_signature_key and webhook_url configured")
        signature = webhook.headers.get("x-square-hmacsha256-signature")
        if not signature:
            raise SignatureError("missing x-square-hmacsha256-signature header")
        try:
            body = webhook.body.decode("utf-8")
        except UnicodeDecodeError:
            raise SignatureError("the webhook body is not UTF-8") from None
        if not verify_signature(request_body=body, signature_header=signature, signature_key=key, notification_url=url):
            raise SignatureError("x-square-hmacsha256-signature does not match the request")
        try:
            event = json.loads(body)
        except ValueError:
            raise PermanentError("the Square webhook body is not JSON") from None
        if not isinstance(event, dict) or not event.get("event_id") or not event.get("type"):
            raise PermanentError("not a Square event notification (no event_id/type)")
        self._check_age(event.get("created_at"))
        return self._events(event)

    def _check_age(self, created_at: Any) -> None:
        """Square signs no timestamp, but created_at is inside the signed body: refuse events older than
        webhook_tolerance (a captured request replayed after Square's retry window) or from the future."""
        tolerance = self.settings["webhook_tolerance"]
        if not tolerance:
            return
        when = parse_timestamp(created_at)
        if when is None:
            raise SignatureError("the Square event has no readable created_at")
        age = (datetime.now(UTC) - when).total_seconds()
        if age > tolerance:
            raise SignatureError(f"the Square event is {age:.0f} s old, over the {tolerance:g} s tolerance")
        if age < -FUTURE_SKEW:
            raise SignatureError("the Square event's created_at is in the future")

    def _events(self, event: dict[str, Any]) -> list[WebhookEvent]:
        event_type = str(event["type"])
        event_id = str(event["event_id"])
        data = event.get("data") or {}
        found = data.get("object") or {}
        if event_type.startswith("payment."):
            payment = found.get("payment") or {}
            if not payment.get("id") or not payment.get("status"):
                return []
            result = self._result(payment)
            details: dict[str, Any] = {"raw_status": result.raw_status}
            if result.amount_refunded is not None:
                details["amount_refunded"] = str(result.amount_refunded)
            return [WebhookEvent(event_id, result.transaction_id, result.status, type=event_type, details=details)]
        if event_type.startswith("refund."):
            refund = found.get("refund") or {}
            payment_id = refund.get("payment_id")
            raw = refund.get("status")
            if not payment_id or raw not in ("PENDING", "COMPLETED"):
                return []  # a refund that failed or was rejected moves no payment
            status, details = "partially_refunded", {"raw_status": f"REFUND_{raw}", "refund_id": refund.get("id")}
            try:  # the refund does not say how much of the payment is refunded now; the payment does
                # Square waits 10 s for the acknowledgement: a short read, the status is known without it anyway.
                answer = self._call("GET", f"/v2/payments/{_path(payment_id)}", timeout=min(self.http.timeout, 3.0))
                payment = self._result(answer.get("payment") or {})
            except ProviderError as error:
                self.log.info("square: refund event %s: payment lookup failed (%s)", event_id, error.message)
            else:
                if payment.amount_refunded is not None:
                    status = payment.status if payment.status in ("refunded", "partially_refunded") else status
                    details["amount_refunded"] = str(payment.amount_refunded)
            return [WebhookEvent(event_id, str(payment_id), status, type=event_type, details=details)]
        if event_type.startswith("dispute."):
            dispute = found.get("dispute") or {}
            disputed = dispute.get("disputed_payment") or {}
            payment_id = disputed.get("payment_id") or dispute.get("payment_id")
            if not payment_id or event_type != "dispute.created":
                return []
            details = {"raw_status": dispute.get("state"), "dispute_id": dispute.get("id") or dispute.get("dispute_id")}
            return [WebhookEvent(event_id, str(payment_id), "disputed", type=event_type, details=details)]
        return []

    # --- helpers ---------------------------------------------------------------------------------------

    @staticmethod
    def _money(amount: Decimal, currency: str) -> dict[str, Any]:
        return {"amount": to_minor_units(Decimal(amount), currency), "currency": currency.upper()}

    @staticmethod
    def _result(payment: Mapping[str, Any]) -> PaymentResult:
        if not payment.get("id"):
            raise OutcomeUnknownError("Square's answer names no payment", provider_code="bad-answer")
        money = payment.get("amount_money") or {}
        currency = str(money.get("currency") or "USD")
        approved = payment.get("approved_money") or {}
        raw = str(payment.get("status") or "PENDING")
        status = STATUS_MAP.get(raw, "processing")
        charged = from_minor_units(money.get("amount", 0), currency)
        # An authorisation partly captured: amount_money was lowered, approved_money is what was authorised.
        authorised = from_minor_units(approved["amount"], currency) if "amount" in approved else charged
        amount = max(authorised, charged)
        refunded_money = payment.get("refunded_money") or {}
        refunded = from_minor_units(refunded_money["amount"], currency) if "amount" in refunded_money else None
        if status == "succeeded" and refunded:
            status = "refunded" if refunded >= charged else "partially_refunded"
        return PaymentResult(
            transaction_id=str(payment["id"]),
            status=status,
            amount=amount,
            currency=currency,
            raw_status=raw,
            amount_captured=charged if status in ("succeeded", "refunded", "partially_refunded") else None,
            amount_refunded=refunded,
            details={
                key: payment[key]
                for key in ("location_id", "reference_id", "receipt_url", "created_at")
                if key in payment
            },
        )

    @hookimpl
    def close(self) -> None:
        self.http.close()


def _first_error(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return errors[0]
    return {}


def _note(description: str | None, payment_id: str, key: str, tenant: str) -> str:
    marker = f"[hub:{payment_id} key:{key} tenant:{tenant}]"
    text = (description or "").strip()
    room = 500 - len(marker) - 1
    return f"{text[:room]} {marker}" if text and room > 0 else marker[:500]


def _marks(note: Any) -> dict[str, str]:
    """The ``[hub:... key:... tenant:...]`` marker pay wrote into a payment's note."""
    if not isinstance(note, str):
        return {}
    start = note.rfind("[hub:")
    if start < 0 or not note.endswith("]"):
        return {}
    marks: dict[str, str] = {}
    for part in note[start + 1 : -1].split(" "):
        name, _, value = part.partition(":")
        if name and value:
            marks[name] = value
    return marks


def _refundable(payment: Mapping[str, Any], currency: str) -> Decimal:
    money = payment.get("amount_money") or {}
    refunded = payment.get("refunded_money") or {}
    code = money.get("currency") or currency
    return from_minor_units(money.get("amount", 0), code) - from_minor_units(refunded.get("amount", 0), code)


def _path(value: str) -> str:
    from urllib.parse import quote

    return quote(str(value), safe="")


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")



@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(SquarePayments)
