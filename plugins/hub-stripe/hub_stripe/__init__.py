"""Pay provider ``stripe``: PaymentIntents and Refunds through Stripe's official SDK (``stripe.StripeClient``).

* ``pay`` creates and confirms a PaymentIntent (``confirm=true`` with the payment method token;
  ``capture_method=manual`` for an authorisation), passing the hub's idempotency key as Stripe's
  ``Idempotency-Key`` and the hub's payment id, tenant, key and order id as metadata, so that ``payment_status`` can
  find a payment whose answer was lost (the PaymentIntent search, ``metadata['hub_idempotency_key']:'...'``).
* ``capture`` (``amount_to_capture``), ``cancel``, ``refund`` (``POST /v1/refunds`` with ``payment_intent``), each
  with its own idempotency key; ``payment_status`` by transaction id (``GET /v1/payment_intents/<id>`` with the latest
  charge expanded, for refunds and disputes) or by search.
* ``handle_webhook`` verifies ``Stripe-Signature`` with the SDK's ``WebhookSignature.verify_header`` against every
  configured signing secret (several during a rotation) and the timestamp tolerance, and turns PaymentIntent, charge
  refund and dispute events into the hub's statuses.

Amounts go in Stripe's minor units: ISO 4217's, except where Stripe's currency table differs (:data:`STRIPE_EXPONENTS`);
three-decimal currencies must end in 0 (:data:`THREE_DECIMAL_CURRENCIES`). Error mapping and the failover rule are in
:func:`stripe_error` and the README. The SDK is imported on first use, and one client (thread-safe: one pooled
``requests`` session per thread) serves the provider instance.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, ClassVar

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

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
from hub.http import HttpSettings, parse_retry_after, transport_error

__all__ = ["STRIPE_EXPONENTS", "StripeGateway", "StripeSettings", "register_providers", "stripe_error"]

SERVICE = "Stripe"

#: Where Stripe's minor unit differs from ISO 4217's (https://docs.stripe.com/currencies#zero-decimal and
#: #special-cases): MGA is in Stripe's zero-decimal list although ISO gives it 2 places; ISK "will remain a
#: two-decimal currency in the Stripe API" (an amount of 100 is 1 krona) although ISO gives it none. HUF and TWD
#: are two-decimal for charges (zero-decimal only for payouts) and UGX zero-decimal, as in ISO: no entry.
STRIPE_EXPONENTS: dict[str, int] = {"MGA": 0, "ISK": 2}
#: Stripe takes three-decimal amounts in these only with a last digit of 0 ("to ensure compatibility with Stripe's
#: payments partners, these API calls require the least-significant (last) digit to be 0").
THREE_DECIMAL_CURRENCIES = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})

#: PaymentIntent status -> the hub's (``requires_payment_method`` is ``failed`` after a decline, else the customer
#: still has to give a payment method: ``requires_action``).
INTENT_STATUSES = {
    "requires_payment_method": "requires_action",
    "requires_confirmation": "requires_action",
    "requires_action": "requires_action",
    "processing": "processing",
    "requires_capture": "requires_capture",
    "succeeded": "succeeded",
    "canceled": "canceled",
}
#: Refund status -> the hub's refund status.
REFUND_STATUSES = {
    "succeeded": "succeeded",
    "pending": "processing",
    "requires_action": "processing",
    "failed": "failed",
    "canceled": "failed",
}
#: PaymentIntent events -> the hub's status.
INTENT_EVENTS = {
    "payment_intent.succeeded": "succeeded",
    "payment_intent.payment_failed": "failed",
    "payment_intent.canceled": "canceled",
    "payment_intent.processing": "processing",
    "payment_intent.amount_capturable_updated": "requires_capture",
    "payment_intent.requires_action": "requires_action",
}
CANCELLATION_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer", "abandoned"})
REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})


class StripeSettings(HttpSettings):
    """``providers.<name>`` settings of a ``stripe`` provider (HttpSettings adds ``timeout`` and ``connect_timeout``)."""

    #: The secret key (``sk_live_...``/``sk_test_...``) or a restricted key (``rk_...``).
    api_key = fields.String(required=True, validate=validate.Length(min=1))
    #: The webhook endpoint's signing secret (``whsec_...``).
    webhook_secret = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    #: More signing secrets, during a rotation: an event verifies when any of them signed it.
    webhook_secrets = fields.List(fields.String(validate=validate.Length(min=1)), load_default=list)
    #: Seconds an event's signed timestamp may be away from now (Stripe's libraries use 300).
    webhook_tolerance = fields.Integer(load_default=300, validate=validate.Range(min=1, max=86_400))
    #: Tests only: an API server to use instead of https://api.stripe.com.
    api_base = fields.Url(load_default="https://api.stripe.com", schemes={"http", "https"}, require_tld=False)
    #: Shown on the customer's statement (card payments use it as a suffix; at most 22 characters).
    statement_descriptor = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=22))

    @validates_schema
    def _statement_descriptor(self, data: dict[str, Any], **_: Any) -> None:
        descriptor = data.get("statement_descriptor")
        if descriptor and any(character in descriptor for character in "<>\\'\"*"):
            raise ValidationError("must not contain < > \\ ' \" *", "statement_descriptor")


class StripeGateway(Provider):
    type_name = "stripe"
    capability = "pay"
    settings_schema: ClassVar[type[Schema]] = StripeSettings
    env_settings: ClassVar[dict[str, str]] = {
        "api_key": "STRIPE_API_KEY",
        "webhook_secret": "STRIPE_WEBHOOK_SECRET",
    }
    secret_settings = ("api_key", "webhook_secret", "webhook_secrets")
    description = "Stripe PaymentIntents and Refunds (official SDK); signed webhooks."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self._client: Any = None
        self._client_lock = threading.Lock()
        self.timeout = float(settings["timeout"])
        self.connect_timeout = float(settings["connect_timeout"] or settings["timeout"])

    def stripe_client(self) -> Any:
        """The SDK client, built on first use (no network, no import of stripe before). A method, not a property:
        pluggy reads every attribute of a provider when it registers it."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    import stripe

                    self._client = stripe.StripeClient(
                        self.settings["api_key"],
                        base_addresses={"api": self.settings["api_base"].rstrip("/")},
                        max_network_retries=0,  # the core retries, with the same idempotency key
                        http_client=stripe.RequestsClient(timeout=(self.connect_timeout, self.timeout)),
                    )
        return self._client

    def _call(self, action: Callable[[Any], Any]) -> dict[str, Any]:
        """Run one SDK call; its answer as plain dicts, its failures as the hub's errors."""
        import stripe

        try:
            answer = action(self.stripe_client().v1)
        except stripe.StripeError as error:
            raise stripe_error(error, self.timeout) from None
        return answer.to_dict() if hasattr(answer, "to_dict") else dict(answer)

    # --- pay ---------------------------------------------------------------------------------------

    @hookimpl
    def pay(self, payment: PaymentRequest) -> PaymentResult:
        currency = payment.currency.upper()
        params: dict[str, Any] = {
            "amount": stripe_amount(payment.amount, currency),
            "currency": currency.lower(),
            "metadata": {
                **{str(key): str(value) for key, value in (payment.metadata or {}).items()},
                "hub_payment_id": payment.id,
                "hub_tenant": payment.tenant,
                **({"hub_idempotency_key": payment.idempotency_key} if payment.idempotency_key else {}),
                **({"order_id": payment.order_id} if payment.order_id else {}),
            },
            "expand": ["latest_charge"],
        }
        if payment.payment_method:
            # Confirmed server-side: no redirect-based methods (they would need a return_url and the customer).
            params.update(
                payment_method=payment.payment_method,
                confirm=True,
                automatic_payment_methods={"enabled": True, "allow_redirects": "never"},
            )
        if not payment.capture:
            params["capture_method"] = "manual"
        if payment.description:
            params["description"] = payment.description
        if self.settings["statement_descriptor"]:
            params["statement_descriptor_suffix"] = self.settings["statement_descriptor"]
        options = {"idempotency_key": payment.idempotency_key} if payment.idempotency_key else {}
        try:
            intent = self._call(lambda v1: v1.payment_intents.create(params=params, options=options))
        except PermanentError as error:
            if error.provider_code != "idempotency_error" or not payment.idempotency_key:
                raise
            return self._first_payment(payment)
        result = intent_result(intent)
        self.log.info("stripe: %s is %s (%s)", payment.id, result.transaction_id, result.raw_status)
        return result

    def _first_payment(self, payment: PaymentRequest) -> PaymentResult:
        """The payment made earlier under ``payment.idempotency_key``, which Stripe refused to replay because this
        request's parameters differ (an order id or metadata changed between tries): the hook must return the first
        payment, never make a second. Stripe's search lags writes by up to a minute; until the payment shows, its
        outcome is unknown (the core looks it up again later)."""
        found = self._search(
            [
                f"metadata['hub_tenant']:'{_quoted(payment.tenant)}'",
                f"metadata['hub_idempotency_key']:'{_quoted(payment.idempotency_key or '')}'",
            ]
        )
        if found is None:
            raise OutcomeUnknownError(
                "Stripe holds a request under this idempotency key with other parameters, and its payment cannot be "
                "found yet",
                provider_code="idempotency_error",
            )
        self.log.warning("stripe: %s was retried with other parameters; returning its first payment", payment.id)
        return found

    @hookimpl
    def payment_status(self, lookup: PaymentLookup) -> PaymentResult | None:
        if lookup.transaction_id:
            try:
                intent = self._call(
                    lambda v1: v1.payment_intents.retrieve(lookup.transaction_id, params={"expand": ["latest_charge"]})
                )
            except NotFoundError:
                return None
            if intent.get("metadata", {}).get("hub_tenant") not in (None, lookup.tenant):
                return None  # another tenant's payment on a shared account counts as none
            return intent_result(intent)
        clauses = [f"metadata['hub_tenant']:'{_quoted(lookup.tenant)}'"]
        if lookup.idempotency_key:
            found = self._search([*clauses, f"metadata['hub_idempotency_key']:'{_quoted(lookup.idempotency_key)}'"])
            if found is not None:
                return found
        return self._search([*clauses, f"metadata['hub_payment_id']:'{_quoted(lookup.payment_id)}'"])

    def _search(self, clauses: list[str]) -> PaymentResult | None:
        """The newest PaymentIntent matching every clause (Stripe's search lists newest first). Stripe's search
        index lags writes by up to a minute: a payment made seconds ago may not be found yet."""
        query = " AND ".join(clauses)
        page = self._call(
            lambda v1: v1.payment_intents.search(params={"query": query, "limit": 10, "expand": ["data.latest_charge"]})
        )
        intents = page.get("data") or []
        return intent_result(intents[0]) if intents else None

    @hookimpl
    def capture(self, capture: CaptureRequest) -> PaymentResult:
        params: dict[str, Any] = {"expand": ["latest_charge"]}
        if capture.amount is not None:
            params["amount_to_capture"] = stripe_amount(capture.amount, capture.currency)
        options = {"idempotency_key": capture.idempotency_key} if capture.idempotency_key else {}
        intent = self._call(
            lambda v1: v1.payment_intents.capture(capture.transaction_id, params=params, options=options)
        )
        return intent_result(intent)

    @hookimpl
    def cancel(self, cancel: CancelRequest) -> PaymentResult:
        params: dict[str, Any] = {}
        if cancel.reason in CANCELLATION_REASONS:
            params["cancellation_reason"] = cancel.reason
        options = {"idempotency_key": cancel.idempotency_key} if cancel.idempotency_key else {}
        intent = self._call(lambda v1: v1.payment_intents.cancel(cancel.transaction_id, params=params, options=options))
        return intent_result(intent)

    @hookimpl
    def refund(self, refund: RefundRequest) -> RefundResult:
        params: dict[str, Any] = {"payment_intent": refund.transaction_id, "metadata": {"hub_refund_id": refund.id}}
        if refund.amount is not None:
            params["amount"] = stripe_amount(refund.amount, refund.currency)
        if refund.reason in REFUND_REASONS:
            params["reason"] = refund.reason
        options = {"idempotency_key": refund.idempotency_key} if refund.idempotency_key else {}
        made = self._call(lambda v1: v1.refunds.create(params=params, options=options))
        currency = str(made.get("currency") or refund.currency).upper()
        return RefundResult(
            refund_id=made["id"],
            status=REFUND_STATUSES.get(str(made.get("status")), "processing"),
            amount=stripe_decimal(made["amount"], currency),
            currency=currency,
            details={"raw_status": made.get("status"), "charge": made.get("charge")},
        )

    # --- health ------------------------------------------------------------------------------------

    @hookimpl
    def health(self) -> HealthResult:
        try:
            balance = self._call(lambda v1: v1.balance.retrieve())
        except ProviderError as error:
            return HealthResult("error", error.message)
        mode = "live" if balance.get("livemode") else "test"
        return HealthResult("success", f"Stripe account reachable ({mode} mode)")

    # --- webhooks ----------------------------------------------------------------------------------

    @property
    def webhook_secrets(self) -> list[str]:
        configured = [self.settings["webhook_secret"], *self.settings["webhook_secrets"]]
        return [secret for secret in configured if secret]

    @hookimpl
    def handle_webhook(self, webhook: WebhookRequest) -> list[WebhookEvent]:
        from stripe import SignatureVerificationError, WebhookSignature

        secrets = self.webhook_secrets
        if not secrets:
            raise SignatureError("no webhook_secret is configured for this Stripe provider")
        header = webhook.headers.get("Stripe-Signature")
        if not header:
            raise SignatureError("missing Stripe-Signature header")
        tolerance = self.settings["webhook_tolerance"]
        timestamp = _signed_timestamp(header)
        if timestamp is None:
            raise SignatureError("Stripe-Signature carries no timestamp (t=...)")
        if abs(time.time() - timestamp) > tolerance:
            # The SDK refuses old timestamps only; one from the future is as much a replay risk.
            raise SignatureError(f"Stripe-Signature timestamp is outside the {tolerance} s tolerance (a stale event)")
        for secret in secrets:
            try:
                WebhookSignature.verify_header(webhook.body, header, secret, tolerance)
            except SignatureVerificationError:
                continue  # not this secret's signature: try the next one of a rotation
            break
        else:
            raise SignatureError("Stripe-Signature does not match the body for any configured signing secret")
        try:
            payload = json.loads(webhook.body)
        except ValueError:
            raise PermanentError("the Stripe event is not JSON") from None
        found = webhook_event(payload)
        return [found] if found is not None else []

    @hookimpl
    def close(self) -> None:
        client, self._client = self._client, None
        http_client = getattr(getattr(client, "_requestor", None), "_client", None)
        if http_client is not None and hasattr(http_client, "close"):
            http_client.close()


# --- amounts ---------------------------------------------------------------------------------------------


def stripe_amount(amount: Decimal, currency: str) -> int:
    """``amount`` in Stripe's minor units of ``currency``; refuses what Stripe cannot take, naming ``amount``."""
    currency = currency.upper()
    try:
        minor = to_minor_units(amount, currency, exponent=STRIPE_EXPONENTS.get(currency))
    except ValueError as error:
        raise PermanentError(f"amount {amount} {currency}: {error} for Stripe", field="amount") from None
    if currency in THREE_DECIMAL_CURRENCIES and minor % 10:
        raise PermanentError(
            f"amount {amount} {currency}: Stripe takes {currency} amounts only with a last decimal of 0 "
            f"(e.g. {from_minor_units(minor - minor % 10, currency)})",
            field="amount",
            provider_code="invalid_amount",
        )
    return minor


def stripe_decimal(value: int | str, currency: str) -> Decimal:
    """A Stripe minor-unit amount as a ``Decimal`` in major units."""
    currency = currency.upper()
    return from_minor_units(value, currency, exponent=STRIPE_EXPONENTS.get(currency))


# --- answers ---------------------------------------------------------------------------------------------


def intent_result(intent: Mapping[str, Any]) -> PaymentResult:
    """A PaymentIntent (its ``latest_charge`` expanded or not) as the hub's result."""
    raw = str(intent.get("status"))
    currency = str(intent["currency"]).upper()
    status = INTENT_STATUSES.get(raw, "processing")
    if raw == "requires_payment_method" and intent.get("last_payment_error"):
        status = "failed"  # declined: a new payment method would be a new attempt
    charge = intent.get("latest_charge") if isinstance(intent.get("latest_charge"), Mapping) else None
    amount_captured: Decimal | None = None
    amount_refunded: Decimal | None = None
    details: dict[str, Any] = {}
    if raw == "succeeded":
        amount_captured = stripe_decimal(intent.get("amount_received") or intent["amount"], currency)
    if charge is not None:
        details["charge"] = charge.get("id")
        refunded = int(charge.get("amount_refunded") or 0)
        amount_refunded = stripe_decimal(refunded, currency)
        captured = int(charge.get("amount_captured") or 0)
        if raw == "succeeded" and refunded:
            status = "refunded" if refunded >= captured else "partially_refunded"
        if raw == "succeeded" and charge.get("disputed"):
            status = "disputed"
    error = intent.get("last_payment_error")
    if isinstance(error, Mapping) and status == "failed":
        details["decline_code"] = error.get("decline_code") or error.get("code")
    return PaymentResult(
        transaction_id=str(intent["id"]),
        status=status,
        amount=stripe_decimal(intent["amount"], currency),
        currency=currency,
        raw_status=raw,
        amount_captured=amount_captured,
        amount_refunded=amount_refunded,
        details=details,
    )


def webhook_event(payload: Mapping[str, Any]) -> WebhookEvent | None:
    """The hub's event for a Stripe event, or ``None`` for an event type the hub does not track."""
    event_type = str(payload.get("type") or "")
    event_id = payload.get("id")
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not event_id or not isinstance(obj, Mapping):
        raise PermanentError("not a Stripe event (no id or data.object)")
    if event_type in INTENT_EVENTS:
        details: dict[str, Any] = {"raw_status": obj.get("status")}
        error = obj.get("last_payment_error")
        if isinstance(error, Mapping):
            details["decline_code"] = error.get("decline_code") or error.get("code")
        return WebhookEvent(str(event_id), str(obj.get("id")), INTENT_EVENTS[event_type], event_type, details=details)
    if event_type == "charge.refunded":
        intent_id = _object_id(obj.get("payment_intent"))
        if not intent_id:
            return None  # a charge made without a PaymentIntent is none of the hub's
        currency = str(obj.get("currency") or "").upper()
        refunded, captured = int(obj.get("amount_refunded") or 0), int(obj.get("amount_captured") or 0)
        status = "refunded" if obj.get("refunded") or (captured and refunded >= captured) else "partially_refunded"
        details = {"raw_status": "refunded" if status == "refunded" else "partially_refunded", "charge": obj.get("id")}
        if currency:
            details["amount_refunded"] = str(stripe_decimal(refunded, currency))
        return WebhookEvent(str(event_id), intent_id, status, event_type, details=details)
    if event_type == "charge.dispute.created":
        intent_id = _object_id(obj.get("payment_intent"))
        if not intent_id:
            return None
        details = {"raw_status": obj.get("status"), "dispute": obj.get("id"), "reason": obj.get("reason")}
        return WebhookEvent(str(event_id), intent_id, "disputed", event_type, details=details)
    return None


def _object_id(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("id")
    return str(value) if value else None


def _signed_timestamp(header: str) -> int | None:
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _quoted(value: str) -> str:
    """A value inside a search query's single quotes (Stripe escapes a quote with a backslash)."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


# --- errors ----------------------------------------------------------------------------------------------


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    wanted = name.lower()
    for key, value in dict(headers).items():
        if str(key).lower() == wanted:
            return str(value)
    return None


def stripe_error(error: Exception, timeout: float | None = None) -> ProviderError:
    """The hub's error for an exception of the stripe SDK (the failover rule; see the README).

    * ``CardError`` (402): a decline -- :class:`PermanentError` with the ``decline_code`` (else the ``code``).
    * ``InvalidRequestError``: ``resource_missing`` on the payment (a 404, or a refund's ``payment_intent``) is
      :class:`NotFoundError`; any other 400 :class:`PermanentError`, naming the ``param``.
    * ``AuthenticationError`` (401), ``PermissionError`` (403): :class:`ConfigurationError` (the next gateway).
    * ``RateLimitError`` (429, run before Stripe's idempotency layer: nothing happened): :class:`TransientError`.
    * ``APIConnectionError``: :class:`TransientError` only when no connection was made (refused, name not found,
      connect timeout); a read timeout or a connection lost after sending is :class:`OutcomeUnknownError`.
    * ``APIError`` (5xx): Stripe says to treat a 500's result as indeterminate -- :class:`OutcomeUnknownError`;
      :class:`TransientError` only when Stripe says the request was not executed: ``Stripe-Should-Retry: true``, or a
      503 with ``Retry-After`` (the API shedding load) unless ``Stripe-Should-Retry: false``.
    """
    import stripe

    status = getattr(error, "http_status", None)
    headers = getattr(error, "headers", None)
    body = getattr(error, "json_body", None)
    detail = body.get("error") if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping) else {}
    code = detail.get("code") or getattr(error, "code", None)
    message = str(detail.get("message") or getattr(error, "user_message", None) or "").strip()
    retry_after = parse_retry_after(_header(headers, "Retry-After"))
    should_retry = (_header(headers, "Stripe-Should-Retry") or "").lower()

    if isinstance(error, stripe.CardError):
        decline = detail.get("decline_code") or code or "card_declined"
        return PermanentError(f"Stripe declined the payment: {message or decline}", provider_code=str(decline))
    if isinstance(error, stripe.AuthenticationError | stripe.PermissionError):
        # Stripe's message quotes (part of) the key: not repeated.
        return ConfigurationError(
            f"Stripe refused the API key (HTTP {status}): check api_key and its permissions", provider_code=code
        )
    if isinstance(error, stripe.RateLimitError):
        return TransientError(
            f"Stripe is rate limiting requests (HTTP {status})",
            provider_code=code or "rate_limit",
            retry_after=retry_after,
        )
    if status == 409:
        # A request with the same idempotency key is still running at Stripe: it may charge. Retry here (the
        # replay then returns its answer), never elsewhere.
        return OutcomeUnknownError(
            "Stripe is still processing a request with this idempotency key", provider_code=code or "conflict"
        )
    if isinstance(error, stripe.IdempotencyError):
        # The key was used before with other parameters: a caller bug, not a question of whether to charge.
        return PermanentError(f"Stripe refused the idempotency key: {message}", provider_code="idempotency_error")
    if isinstance(error, stripe.InvalidRequestError):
        param = detail.get("param") or getattr(error, "param", None)
        text = f"Stripe refused the request: {message or code or 'invalid request'}"
        if code == "resource_missing" and (status == 404 or param in ("intent", "payment_intent", "charge")):
            return NotFoundError(text, field=param, provider_code=code)
        return PermanentError(text, field=param, provider_code=code)
    if isinstance(error, stripe.APIConnectionError):
        cause = error.__cause__ or error.__context__
        if cause is None:
            return OutcomeUnknownError("the connection to Stripe failed", provider_code="connection-dropped")
        return transport_error(cause, service=SERVICE, timeout=timeout, sent_error=OutcomeUnknownError)
    if isinstance(error, stripe.StripeError) and (status is None or status >= 500):
        not_executed = should_retry == "true" or (status == 503 and retry_after is not None and should_retry != "false")
        kind = TransientError if not_executed else OutcomeUnknownError
        what = "did not process the request" if not_executed else "may have processed the request"
        return kind(
            f"Stripe answered HTTP {status or '?'} and {what}",
            provider_code=code or "api_error",
            retry_after=retry_after,
        )
    if isinstance(error, stripe.StripeError) and status is not None and 400 <= status < 500:
        if should_retry == "true":
            return TransientError(
                f"Stripe answered HTTP {status}; try again", provider_code=code, retry_after=retry_after
            )
        return PermanentError(f"Stripe refused the request (HTTP {status}): {message}", provider_code=code)
    return OutcomeUnknownError(f"Stripe failed ({type(error).__name__})", provider_code="unknown")


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(StripeGateway)
