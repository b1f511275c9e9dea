"""Pay provider ``paypal``: PayPal's Orders v2 and Payments v2 REST APIs through :mod:`hub.http` (no SDK).

* **Credentials**: OAuth2 client credentials (``POST /v1/oauth2/token`` with HTTP Basic ``client_id:client_secret``).
  The access token is cached until ``expires_in`` minus a minute, shared by every worker thread (one fetch at a
  time), and fetched again once when an API call answers 401; a second 401 is a
  :class:`~hub.errors.ConfigurationError`.
* **Pay**: ``POST /v2/checkout/orders`` with ``intent`` ``CAPTURE`` (``AUTHORIZE`` for ``capture=False``), one
  purchase unit (``amount.value`` a decimal string in the currency's decimals, ``custom_id`` = the hub's payment id,
  ``reference_id``/``invoice_id`` = the order id) and the vaulted ``payment_source``. PayPal processes an order
  with a vaulted source at once; an order that comes back ``APPROVED`` is then captured (``.../capture``) or
  authorised (``.../authorize``). ``transaction_id`` is the **order id**; the capture or authorization id is in
  ``details`` and looked up from the order when a refund, capture or void needs it.
* **Idempotency**: ``PayPal-Request-Id`` on every create, capture, authorize, void and refund: the hub's
  idempotency key (hashed when longer than PayPal's 108 characters). PayPal answers a repeated id with the
  result of the first request ("PayPal returns the latest status of the previous request that used that same
  header", https://developer.paypal.com/api/rest/reference/idempotency/).
* **Lookup without a transaction id**: PayPal has no order search. The create is sent again with the same
  ``PayPal-Request-Id``: PayPal returns the order the first request made. That probe carries no payment source
  (an order that only a payer's approval could fund, which never comes) and a ``custom_id`` marking it, so when
  it *is* the order made -- nothing existed for the key -- the lookup answers ``None``: nothing was charged. Valid
  while PayPal keeps the key (6 hours by default, per the ``PayPal-Request-Id`` parameter of the Orders API).
* **Errors**: PayPal's body ``{name, message, debug_id, details: [{issue, description}]}`` gives ``provider_code``
  (the first ``issue``, else ``name``). 422 (``INSTRUMENT_DECLINED``, ``TRANSACTION_REFUSED``...) and 400 ->
  :class:`~hub.errors.PermanentError`; 404 -> :class:`~hub.errors.NotFoundError`; 401/403 -> ``ConfigurationError``;
  429 and 503 (``SERVICE_UNAVAILABLE``: maintenance, nothing processed) -> :class:`~hub.errors.TransientError`;
  500/502/504 and 409 on a call that moves money -> :class:`~hub.errors.OutcomeUnknownError` (PayPal: retry an
  ``INTERNAL_SERVER_ERROR`` with the same ``PayPal-Request-Id``); timeouts and dropped connections after sending
  -> ``OutcomeUnknownError``; refused connections -> ``TransientError``. Reads (``GET`` an order) and the token
  request move no money: their failures are ``TransientError``.
* **Webhooks**: verified through ``POST /v1/notifications/verify-webhook-signature`` (``webhook_verification:
  api``, the default) or offline (``certificate``): the certificate from ``PAYPAL-CERT-URL`` -- fetched only from a
  host in ``cert_hosts``, cached -- verifies the SHA256withRSA ``PAYPAL-TRANSMISSION-SIG`` over
  ``transmission_id|transmission_time|webhook_id|crc32(body)``. ``PAYPAL-TRANSMISSION-TIME`` must be within
  ``webhook_tolerance`` seconds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

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
    to_minor_units,
)
from hub.errors import (
    NotFoundError,
    OutcomeUnknownError,
    PermanentError,
    ProviderError,
    SignatureError,
    TransientError,
)
from hub.http import HttpClient, HttpSettings, ProviderReason, response_error

if TYPE_CHECKING:
    import requests

__all__ = ["DEFAULT_CERT_HOSTS", "PayPalGateway", "PayPalSettings", "paypal_amount", "register_providers"]

LIVE_API = "https://api-m.paypal.com"
SANDBOX_API = "https://api-m.sandbox.paypal.com"
#: Hosts PayPal serves its webhook signing certificates from (``PAYPAL-CERT-URL``).
DEFAULT_CERT_HOSTS = ("api.paypal.com", "api-m.paypal.com", "api.sandbox.paypal.com", "api-m.sandbox.paypal.com")
#: PayPal's own decimals where they differ from ISO 4217: "This currency does not support decimals"
#: (https://developer.paypal.com/api/rest/reference/currency-codes/).
PAYPAL_EXPONENTS = {"HUF": 0, "TWD": 0}
#: PayPal-Request-Id is at most 108 characters (the Orders API's parameter).
REQUEST_ID_LIMIT = 108
#: Seconds before ``expires_in`` at which a token counts as expired (a call in flight must not outlive it).
TOKEN_MARGIN = 60.0
#: ``custom_id`` prefix of the probe order a lookup creates when no order exists for the key.
PROBE_PREFIX = "hub-lookup-probe:"

#: An order id as the Orders API's path parameter takes it.
ORDER_ID = re.compile(r"[A-Z0-9]{1,36}")

#: Capture statuses -> hub status (refunds are counted separately).
CAPTURE_STATUSES = {
    "COMPLETED": "succeeded",
    "PARTIALLY_REFUNDED": "succeeded",
    "REFUNDED": "succeeded",
    "PENDING": "processing",
    "DECLINED": "failed",
    "FAILED": "failed",
}
AUTHORIZATION_STATUSES = {
    "CREATED": "requires_capture",
    "PENDING": "processing",
    "CAPTURED": "succeeded",
    "PARTIALLY_CAPTURED": "succeeded",
    "VOIDED": "canceled",
    "EXPIRED": "canceled",
    "DENIED": "failed",
}
ORDER_STATUSES = {
    "CREATED": "requires_action",
    "SAVED": "requires_action",
    "APPROVED": "requires_action",
    "PAYER_ACTION_REQUIRED": "requires_action",
    "VOIDED": "canceled",
    "COMPLETED": "processing",  # completed without a capture or authorization in the answer: look again
}
#: Webhook event types -> hub status (refund events are computed from the order).
EVENT_STATUSES = {
    "PAYMENT.CAPTURE.COMPLETED": "succeeded",
    "PAYMENT.CAPTURE.PENDING": "processing",
    "PAYMENT.CAPTURE.DECLINED": "failed",
    "PAYMENT.CAPTURE.DENIED": "failed",
    "PAYMENT.AUTHORIZATION.CREATED": "requires_capture",
    "PAYMENT.AUTHORIZATION.VOIDED": "canceled",
    "CHECKOUT.ORDER.COMPLETED": "succeeded",
}
REFUND_EVENTS = ("PAYMENT.CAPTURE.REFUNDED", "PAYMENT.CAPTURE.REVERSED")
#: A chargeback or a buyer's claim opened on a capture: the payment is ``disputed``.
DISPUTE_EVENTS = ("CUSTOMER.DISPUTE.CREATED",)


class PayPalSettings(HttpSettings):
    """``providers.<name>`` settings of a ``paypal`` gateway (HttpSettings adds ``timeout`` and ``connect_timeout``)."""

    client_id = fields.String(required=True, validate=validate.Length(min=1))
    client_secret = fields.String(required=True, validate=validate.Length(min=1))
    #: https://api-m.paypal.com (live) or https://api-m.sandbox.paypal.com; tests point it at their server.
    api_base = fields.Url(load_default=LIVE_API, schemes={"http", "https"}, require_tld=False)
    #: The id of the webhook registered for the hub's URL (Developer Dashboard); needed to verify webhooks.
    webhook_id = fields.String(load_default=None, allow_none=True)
    webhook_verification = fields.String(load_default="api", validate=validate.OneOf(["api", "certificate"]))
    #: Hosts a ``PAYPAL-CERT-URL`` may name (``certificate`` verification); any other is refused.
    cert_hosts = fields.List(fields.String(), load_default=list(DEFAULT_CERT_HOSTS))
    #: Seconds a webhook's ``PAYPAL-TRANSMISSION-TIME`` may be from now.
    webhook_tolerance = fields.Float(load_default=300.0, validate=validate.Range(min=0, min_inclusive=False))


class PayPalGateway(Provider):
    type_name = "paypal"
    capability = "pay"
    settings_schema: ClassVar[type[Schema]] = PayPalSettings
    env_settings: ClassVar[dict[str, str]] = {
        "client_id": "PAYPAL_CLIENT_ID",
        "client_secret": "PAYPAL_CLIENT_SECRET",
        "webhook_id": "PAYPAL_WEBHOOK_ID",
    }
    secret_settings = ("client_secret",)
    description = "PayPal Orders v2 (capture, authorize, refund) over REST; webhooks verified by API or certificate."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self.http = HttpClient.from_settings(
            "PayPal",
            settings,
            base_url=settings["api_base"],
            headers={"Accept": "application/json"},
            extract_error=paypal_error,
            sent_error=OutcomeUnknownError,
        )
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = threading.Lock()
        self._certificates: dict[str, Any] = {}
        self._cert_lock = threading.Lock()

    # --- credentials -------------------------------------------------------------------------------

    def access_token(self, *, fresh: bool = False) -> str:
        """The cached OAuth2 access token, fetched when missing, expired or ``fresh`` is asked for."""
        with self._token_lock:
            if fresh or self._token is None or time.monotonic() >= self._token_expires:
                response = self.http.post(
                    "/v1/oauth2/token",
                    data={"grant_type": "client_credentials"},
                    auth=(self.settings["client_id"], self.settings["client_secret"]),
                    sent_error=TransientError,  # a token moves no money: nothing to look up
                    check=False,
                )
                error = response_error(response, service="PayPal", extract_error=paypal_error)
                if error is not None:
                    raise error
                body = _json(response)
                token = body.get("access_token")
                if not isinstance(token, str) or not token:
                    raise TransientError("PayPal's token answer carries no access_token", provider_code="token")
                expires_in = float(body.get("expires_in") or 0)
                self._token = token
                self._token_expires = time.monotonic() + max(0.0, expires_in - TOKEN_MARGIN)
            return self._token

    def _forget_token(self, token: str) -> None:
        with self._token_lock:
            if self._token == token:
                self._token = None

    def _api(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        request_id: str | None = None,
        moves_money: bool = False,
        raw_body: bytes | None = None,
    ) -> dict[str, Any]:
        """One API call with the bearer token (refreshed once on a 401), mapped to the hub's errors."""
        for attempt in (1, 2):
            token = self.access_token()
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            if request_id is not None:
                headers["PayPal-Request-Id"] = request_id
                headers["Prefer"] = "return=representation"
            data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else None)
            response = self.http.request(
                method,
                path,
                data=data,
                headers=headers,
                check=False,
                sent_error=OutcomeUnknownError if moves_money else TransientError,
            )
            if response.status_code == 401 and attempt == 1:
                self._forget_token(token)  # expired or revoked: one new token, the same request again
                continue
            error = self._error(response, moves_money)
            if error is not None:
                raise error
            if not response.content:
                return {}
            return _json(response, OutcomeUnknownError if moves_money else TransientError)
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, response: requests.Response, moves_money: bool) -> ProviderError | None:
        overrides: dict[int, type[ProviderError]] = {503: TransientError}
        if moves_money:
            # PayPal: retry an INTERNAL_SERVER_ERROR with the same PayPal-Request-Id -- it may have been processed.
            # 409: a request with the same PayPal-Request-Id is still being processed.
            overrides.update({500: OutcomeUnknownError, 502: OutcomeUnknownError, 504: OutcomeUnknownError})
            overrides[409] = OutcomeUnknownError
        return response_error(response, service="PayPal", extract_error=paypal_error, status_errors=overrides)

    # --- pay -----------------------------------------------------------------------------------------

    @hookimpl
    def pay(self, payment: PaymentRequest) -> PaymentResult:
        request_id = _request_id(payment.idempotency_key or payment.id)
        unit: dict[str, Any] = {
            "reference_id": _clip(payment.order_id or payment.id, 256),
            "custom_id": _clip(payment.id, 127),
            "amount": paypal_amount(payment.amount, payment.currency),
        }
        if payment.order_id:
            unit["invoice_id"] = _clip(payment.order_id, 127)
        if payment.description:
            unit["description"] = _clip(payment.description, 127)
        order_request: dict[str, Any] = {
            "intent": "CAPTURE" if payment.capture else "AUTHORIZE",
            "purchase_units": [unit],
        }
        source = payment_source(payment.payment_method)
        if source is not None:
            order_request["payment_source"] = source
        order = self._api("POST", "/v2/checkout/orders", body=order_request, request_id=request_id, moves_money=True)
        if _is_probe(order):
            raise PermanentError(
                "PayPal holds a lookup's empty order for this idempotency key (a lookup found nothing charged): "
                "pay again with a new key",
                provider_code="IDEMPOTENCY_KEY_USED_BY_LOOKUP",
            )
        if order.get("status") == "APPROVED" and source is not None:
            action = "capture" if payment.capture else "authorize"
            order = self._api(
                "POST",
                f"/v2/checkout/orders/{order['id']}/{action}",
                body={},
                request_id=_request_id(f"{payment.idempotency_key or payment.id}:{action}"),
                moves_money=True,
            )
        result = order_result(order)
        if result.status == "failed":
            raise PermanentError(
                f"PayPal declined the payment ({result.raw_status})",
                provider_code=result.details.get("decline_code") or result.raw_status,
            )
        return result

    @hookimpl
    def payment_status(self, lookup: PaymentLookup) -> PaymentResult | None:
        if lookup.transaction_id:
            if not ORDER_ID.fullmatch(lookup.transaction_id):
                return None  # not a PayPal order id (PayPal would refuse the path): no such order
            try:
                order = self._api("GET", f"/v2/checkout/orders/{lookup.transaction_id}")
            except NotFoundError:
                return None  # no such order (or one of another PayPal account): nothing was charged under it
            return order_result(order)
        key = lookup.idempotency_key or lookup.payment_id
        # The create again with the same PayPal-Request-Id: PayPal answers with the order the first one made.
        probe = {
            "intent": "CAPTURE",
            "purchase_units": [
                {
                    "custom_id": _clip(PROBE_PREFIX + lookup.payment_id, 127),
                    "amount": _probe_amount(lookup),
                }
            ],
        }
        order = self._api("POST", "/v2/checkout/orders", body=probe, request_id=_request_id(key), moves_money=True)
        if _is_probe(order):
            return None  # the probe made this order: PayPal had none for the key, so nothing was charged
        return order_result(order)

    def _order(self, transaction_id: str) -> dict[str, Any]:
        if not ORDER_ID.fullmatch(transaction_id):
            raise NotFoundError(
                f"{transaction_id[:40]!r} is not a PayPal order id", provider_code="INVALID_RESOURCE_ID"
            )
        return self._api("GET", f"/v2/checkout/orders/{transaction_id}")

    @hookimpl
    def capture(self, capture: CaptureRequest) -> PaymentResult:
        order = self._order(capture.transaction_id)
        authorization = _first(_payments(order).get("authorizations"))
        if authorization is None:
            raise PermanentError("this PayPal order has no authorization to capture", provider_code="NOT_AUTHORIZED")
        authorized = _money(authorization.get("amount")) or _unit_amount(order)
        body: dict[str, Any] = {"final_capture": True}
        if capture.amount is not None:
            if authorized is not None and Decimal(capture.amount) > authorized:
                raise PermanentError(
                    f"cannot capture {capture.amount}: {authorized} was authorised", provider_code="AMOUNT_TOO_LARGE"
                )
            body["amount"] = paypal_amount(capture.amount, capture.currency)
        taken = self._api(
            "POST",
            f"/v2/payments/authorizations/{authorization['id']}/capture",
            body=body,
            request_id=_request_id(capture.idempotency_key or capture.id),
            moves_money=True,
        )
        raw = str(taken.get("status") or "")
        status = CAPTURE_STATUSES.get(raw, "processing")
        if status == "failed":
            raise PermanentError(f"PayPal declined the capture ({raw})", provider_code=raw)
        currency = _unit_currency(order) or capture.currency
        return PaymentResult(
            transaction_id=capture.transaction_id,
            status=status,
            amount=_unit_amount(order) or authorized or Decimal(0),
            currency=currency,
            raw_status=raw or None,
            amount_captured=_money(taken.get("amount")),
            details={"capture_id": taken.get("id"), "authorization_id": authorization["id"]},
        )

    @hookimpl
    def cancel(self, cancel: CancelRequest) -> PaymentResult:
        order = self._order(cancel.transaction_id)
        payments = _payments(order)
        authorization = _first(payments.get("authorizations"))
        if payments.get("captures") or authorization is None:
            current = order_result(order)
            raise PermanentError(
                f"a PayPal order that is {current.status} cannot be cancelled"
                + (": refund it instead" if current.status == "succeeded" else ""),
                provider_code=current.raw_status,
            )
        self._api(
            "POST",
            f"/v2/payments/authorizations/{authorization['id']}/void",
            body={},
            request_id=_request_id(cancel.idempotency_key or cancel.id),
            moves_money=True,
        )
        return order_result(self._order(cancel.transaction_id))

    @hookimpl
    def refund(self, refund: RefundRequest) -> RefundResult:
        order = self._order(refund.transaction_id)
        captures = _payments(order).get("captures") or []
        capture = next((c for c in captures if c.get("status") in ("COMPLETED", "PARTIALLY_REFUNDED")), None)
        if capture is None:
            capture = next((c for c in captures if c.get("status") == "REFUNDED"), None)  # PayPal says why not
        if capture is None:
            raise PermanentError("this PayPal order has no completed capture to refund", provider_code="NOT_CAPTURED")
        body: dict[str, Any] = {"custom_id": _clip(refund.transaction_id, 127)}  # refund webhooks name the order
        if refund.amount is not None:
            body["amount"] = paypal_amount(refund.amount, refund.currency)
        made = self._api(
            "POST",
            f"/v2/payments/captures/{capture['id']}/refund",
            body=body,
            request_id=_request_id(refund.idempotency_key or refund.id),
            moves_money=True,
        )
        raw = str(made.get("status") or "")
        status = {"COMPLETED": "succeeded", "PENDING": "processing"}.get(raw, "failed")
        amount = _money(made.get("amount"))
        if amount is None:
            amount = (
                Decimal(refund.amount) if refund.amount is not None else _money(capture.get("amount")) or Decimal(0)
            )
        return RefundResult(
            refund_id=str(made.get("id") or ""),
            status=status,
            amount=amount,
            currency=(made.get("amount") or {}).get("currency_code") or refund.currency,
            details={"raw_status": raw, "capture_id": capture["id"]},
        )

    # --- health ----------------------------------------------------------------------------------------

    @hookimpl
    def health(self) -> HealthResult:
        try:
            self.access_token(fresh=True)
        except ProviderError as error:
            return HealthResult("error", error.message)
        return HealthResult(
            "success", f"PayPal accepted the client credentials ({urlsplit(self.http.base_url or '').hostname})"
        )

    # --- webhooks ----------------------------------------------------------------------------------------

    @hookimpl
    def handle_webhook(self, webhook: WebhookRequest) -> list[WebhookEvent]:
        headers = webhook.headers
        names = ("transmission-id", "transmission-time", "transmission-sig", "cert-url", "auth-algo")
        values = {name: headers.get(f"paypal-{name}") for name in names}
        missing = [f"PAYPAL-{name.upper()}" for name, value in values.items() if not value]
        if missing:
            raise SignatureError(f"the webhook lacks PayPal's signature headers: {', '.join(missing)}")
        webhook_id = self.settings.get("webhook_id")
        if not webhook_id:
            raise SignatureError("no webhook_id configured (PAYPAL_WEBHOOK_ID): PayPal webhooks cannot be verified")
        sent_at = _parse_time(values["transmission-time"] or "")
        if sent_at is None:
            raise SignatureError("PAYPAL-TRANSMISSION-TIME is not a date and time")
        tolerance = float(self.settings["webhook_tolerance"])
        if abs(time.time() - sent_at) > tolerance:
            raise SignatureError(f"the webhook was signed more than {tolerance:g} s from now (stale or replayed)")
        try:
            event = json.loads(webhook.body)
        except ValueError:
            raise SignatureError("the webhook body is not JSON") from None
        if not isinstance(event, dict):
            raise SignatureError("the webhook body is not a PayPal event")
        if self.settings["webhook_verification"] == "certificate":
            self._verify_with_certificate(values, webhook_id, webhook.body)
        else:
            self._verify_with_api(values, webhook_id, webhook.body)
        return self._events(event)

    def _verify_with_api(self, values: Mapping[str, str | None], webhook_id: str, body: bytes) -> None:
        fields_ = {
            "auth_algo": values["auth-algo"],
            "cert_url": values["cert-url"],
            "transmission_id": values["transmission-id"],
            "transmission_sig": values["transmission-sig"],
            "transmission_time": values["transmission-time"],
            "webhook_id": webhook_id,
        }
        # The event goes as received, byte for byte: PayPal checks the CRC32 of what it sent.
        raw = json.dumps(fields_).encode()[:-1] + b', "webhook_event": ' + body.strip() + b"}"
        answer = self._api("POST", "/v1/notifications/verify-webhook-signature", raw_body=raw)
        if answer.get("verification_status") != "SUCCESS":
            raise SignatureError("PayPal did not verify the webhook's signature")

    def _verify_with_certificate(self, values: Mapping[str, str | None], webhook_id: str, body: bytes) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        if (values["auth-algo"] or "").upper() != "SHA256WITHRSA":
            raise SignatureError("PAYPAL-AUTH-ALGO is not SHA256withRSA")
        certificate = self._certificate(values["cert-url"] or "")
        now = datetime.now(UTC)
        if not (certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc):
            raise SignatureError("PayPal's signing certificate is expired or not valid yet")
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SignatureError("PayPal's signing certificate has no RSA key")
        message = f"{values['transmission-id']}|{values['transmission-time']}|{webhook_id}|{zlib.crc32(body)}"
        try:
            signature = base64.b64decode(values["transmission-sig"] or "", validate=True)
            key.verify(signature, message.encode(), padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            raise SignatureError("PAYPAL-TRANSMISSION-SIG does not match the webhook") from None

    def _certificate(self, url: str) -> Any:
        from cryptography import x509

        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        allowed = {entry.lower() for entry in self.settings["cert_hosts"]}
        loopback = host in ("127.0.0.1", "localhost", "::1")
        if host not in allowed or (parts.scheme != "https" and not loopback):
            raise SignatureError("PAYPAL-CERT-URL names a host that is not one of cert_hosts")
        with self._cert_lock:
            cached = self._certificates.get(url)
        if cached is not None:
            return cached
        try:
            response = self.http.get(url, sent_error=TransientError, timeout=min(self.http.timeout, 5.0))
        except PermanentError:
            raise SignatureError("PAYPAL-CERT-URL serves no certificate") from None
        try:
            certificate = x509.load_pem_x509_certificate(response.content)
        except ValueError:
            raise SignatureError("PAYPAL-CERT-URL does not serve a PEM certificate") from None
        with self._cert_lock:
            if len(self._certificates) > 32:
                self._certificates.clear()
            self._certificates[url] = certificate
        return certificate

    def _events(self, event: dict[str, Any]) -> list[WebhookEvent]:
        event_type = str(event.get("event_type") or "")
        event_id = str(event.get("id") or "")
        resource = event.get("resource") if isinstance(event.get("resource"), dict) else {}
        if not event_id:
            raise PermanentError("a PayPal event without an id")
        if event_type in REFUND_EVENTS:
            order_id = self._order_of_refund(resource)
            if not order_id:
                return []
            found = self.payment_status(PaymentLookup(tenant="", payment_id="", transaction_id=str(order_id)))
            if found is None:
                return []
            status = found.status if found.status in ("refunded", "partially_refunded") else "partially_refunded"
            details: dict[str, Any] = {"raw_status": resource.get("status"), "refund_id": resource.get("id")}
            if found.amount_refunded is not None:
                details["amount_refunded"] = str(found.amount_refunded)
            return [WebhookEvent(event_id, str(order_id), status, type=event_type, details=details)]
        if event_type in DISPUTE_EVENTS:
            return self._dispute_events(event_id, event_type, resource)
        status = EVENT_STATUSES.get(event_type)
        if status is None:
            return []  # an event the hub keeps no status for: acknowledged
        order_id = resource.get("id") if event_type.startswith("CHECKOUT.ORDER.") else _order_id_of(resource)
        if not order_id:
            return []
        details = {"raw_status": resource.get("status"), "resource_id": resource.get("id")}
        return [WebhookEvent(event_id, str(order_id), status, type=event_type, details=details)]

    def _order_of_refund(self, resource: Mapping[str, Any]) -> str | None:
        """The order a refund belongs to: its ``custom_id`` (the hub sends the order id there), else -- a refund
        made elsewhere, in PayPal's dashboard say -- the order of the capture its ``up`` link names."""
        custom = str(resource.get("custom_id") or "")
        if ORDER_ID.fullmatch(custom):
            return custom
        for link in resource.get("links") or []:
            href = str(link.get("href") or "") if isinstance(link, dict) else ""
            if link.get("rel") == "up" and "/payments/captures/" in href:
                return self._order_of_capture(href.rstrip("/").rsplit("/", 1)[-1])
        return None

    def _order_of_capture(self, capture_id: str) -> str | None:
        if not ORDER_ID.fullmatch(capture_id):
            return None
        try:
            return _order_id_of(self._api("GET", f"/v2/payments/captures/{capture_id}"))
        except NotFoundError:
            return None  # a capture of another account

    def _dispute_events(self, event_id: str, event_type: str, resource: Mapping[str, Any]) -> list[WebhookEvent]:
        """A dispute names the captures it is about (``seller_transaction_id``): each capture's order is read
        from the capture (``GET /v2/payments/captures/{id}``, its ``up`` link)."""
        events = []
        transactions = [t for t in resource.get("disputed_transactions") or [] if isinstance(t, dict)]
        for index, transaction in enumerate(transactions):
            capture_id = str(transaction.get("seller_transaction_id") or "")
            order_id = self._order_of_capture(capture_id)
            if order_id is None:
                continue
            events.append(
                WebhookEvent(
                    event_id if len(transactions) == 1 else f"{event_id}:{index}",
                    order_id,
                    "disputed",
                    type=event_type,
                    details={
                        "raw_status": resource.get("status"),
                        "dispute_id": resource.get("dispute_id"),
                        "reason": resource.get("reason"),
                        "capture_id": capture_id,
                    },
                )
            )
        return events

    @hookimpl
    def close(self) -> None:
        self.http.close()


# --- helpers ------------------------------------------------------------------------------------------


def paypal_error(response: requests.Response) -> ProviderReason | None:
    """PayPal's ``{name, message, debug_id, details: [{issue, description}]}`` (and OAuth's ``{error,
    error_description}``) as the provider's code and message: the first ``issue``, else ``name``."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    details = body.get("details") if isinstance(body.get("details"), list) else []
    first = details[0] if details and isinstance(details[0], dict) else {}
    code = first.get("issue") or body.get("name") or body.get("error")
    message = first.get("description") or body.get("message") or body.get("error_description")
    if body.get("debug_id"):
        message = f"{message or ''} (debug_id {body['debug_id']})".strip()
    if code is None and message is None:
        return None
    return ProviderReason(code=str(code) if code else None, message=str(message) if message else None)


def paypal_amount(amount: Decimal, currency: str) -> dict[str, str]:
    """PayPal's money object: ``{"currency_code": "USD", "value": "10.50"}``, ``"1500"`` for JPY, ``"1.234"`` for
    KWD -- exactly, in PayPal's decimals (ISO 4217's, except HUF and TWD which PayPal takes in whole units).

    :raises PermanentError: the amount has more decimals than PayPal takes for the currency."""
    code = currency.upper()
    exponent = PAYPAL_EXPONENTS.get(code)
    try:
        minor = to_minor_units(Decimal(amount), code, exponent=exponent)
    except ValueError as error:
        raise PermanentError(f"PayPal cannot take this amount: {error}", provider_code="DECIMAL_PRECISION") from None
    return {"currency_code": code, "value": str(from_minor_units(minor, code, exponent=exponent))}


def payment_source(method: str | None) -> dict[str, Any] | None:
    """The order's ``payment_source`` for a hub payment method: a PayPal vault id (``card:<id>`` or a bare id: a
    saved card; ``paypal:<id>``: a saved PayPal wallet) or a billing agreement (``BA-...``). ``None``: no source
    (the payer approves the order at PayPal: ``requires_action``). Card numbers are refused: tokens only."""
    if not method:
        return None
    digits = method.replace(" ", "").replace("-", "")
    if digits.isdigit() and len(digits) >= 12:
        raise PermanentError(
            "PayPal payments take a vaulted payment token, never a card number", provider_code="TOKEN_REQUIRED"
        )
    kind, _, value = method.partition(":")
    if value and kind == "paypal":
        return {"paypal": {"vault_id": value}}
    if value and kind == "card":
        return {"card": {"vault_id": value}}
    if method.startswith("BA-"):
        return {"token": {"id": method, "type": "BILLING_AGREEMENT"}}
    return {"card": {"vault_id": method}}


def order_result(order: Mapping[str, Any]) -> PaymentResult:
    """A PayPal order as the hub's :class:`PaymentResult` (see the module's status mapping)."""
    unit = _first(order.get("purchase_units")) or {}
    payments = _payments(order)
    amount_field = unit.get("amount") or {}
    currency = str(amount_field.get("currency_code") or "")
    amount = _money(amount_field) or Decimal(0)
    order_status = str(order.get("status") or "")
    details: dict[str, Any] = {"order_status": order_status}
    captures = [c for c in payments.get("captures") or [] if isinstance(c, dict)]
    authorizations = [a for a in payments.get("authorizations") or [] if isinstance(a, dict)]
    refunds = [r for r in payments.get("refunds") or [] if isinstance(r, dict)]
    captured = refunded = None
    if captures:
        capture = captures[-1]
        raw = str(capture.get("status") or order_status)
        details["capture_id"] = capture.get("id")
        status = CAPTURE_STATUSES.get(raw, "processing")
        taken = [c for c in captures if CAPTURE_STATUSES.get(str(c.get("status"))) == "succeeded"]
        if taken:
            status = "succeeded"
            captured = sum((_money(c.get("amount")) or Decimal(0) for c in taken), Decimal(0))
            refunded = sum(
                (_money(r.get("amount")) or Decimal(0) for r in refunds if r.get("status") == "COMPLETED"), Decimal(0)
            )
            if not refunds and all(c.get("status") == "REFUNDED" for c in taken):
                refunded = captured
            if refunded and refunded >= captured:
                status = "refunded"
            elif refunded:
                status = "partially_refunded"
        elif status == "failed":
            response = capture.get("processor_response") or {}
            details["decline_code"] = response.get("response_code") or (capture.get("status_details") or {}).get(
                "reason"
            )
        if authorizations:
            details["authorization_id"] = authorizations[-1].get("id")
    elif authorizations:
        authorization = authorizations[-1]
        raw = str(authorization.get("status") or order_status)
        details["authorization_id"] = authorization.get("id")
        status = AUTHORIZATION_STATUSES.get(raw, "processing")
    else:
        raw = order_status or "UNKNOWN"
        status = ORDER_STATUSES.get(order_status, "processing")
        approve = next(
            (link.get("href") for link in order.get("links") or [] if link.get("rel") in ("approve", "payer-action")),
            None,
        )
        if approve:
            details["approve_url"] = approve
    return PaymentResult(
        transaction_id=str(order.get("id") or ""),
        status=status,
        amount=amount,
        currency=currency,
        raw_status=raw or None,
        amount_captured=captured if captured is not None and captured != amount else None,
        amount_refunded=refunded if refunded else None,
        details=details,
    )


def _probe_amount(lookup: PaymentLookup) -> dict[str, str]:
    """The probe's amount: the payment's where PayPal can carry it (PayPal answers a known key with the first
    order whatever the body says, so any valid amount does)."""
    try:
        return paypal_amount(lookup.amount or Decimal("1.00"), lookup.currency or "USD")
    except PermanentError:
        return {"currency_code": "USD", "value": "1.00"}


def _request_id(key: str) -> str:
    """The hub's key as a PayPal-Request-Id: as it is, or its SHA-256 when longer than PayPal takes."""
    return key if len(key) <= REQUEST_ID_LIMIT else "hub-" + hashlib.sha256(key.encode()).hexdigest()


def _clip(value: str, limit: int) -> str:
    return value[:limit]


def _json(response: requests.Response, error: type[ProviderError] = TransientError) -> dict[str, Any]:
    """The answer's JSON object; ``error`` when it is none (``OutcomeUnknownError`` for a call that moved money:
    a 2xx PayPal sent, whose body was garbled on the way)."""
    try:
        body = response.json()
    except ValueError:
        raise error("PayPal's answer is not JSON", provider_code="invalid-answer") from None
    if not isinstance(body, dict):
        raise error("PayPal's answer is not a JSON object", provider_code="invalid-answer")
    return body


def _first(items: Any) -> Any:
    return items[0] if isinstance(items, list) and items else None


def _payments(order: Mapping[str, Any]) -> dict[str, Any]:
    unit = _first(order.get("purchase_units")) or {}
    payments = unit.get("payments")
    return payments if isinstance(payments, dict) else {}


def _money(value: Any) -> Decimal | None:
    if not isinstance(value, dict) or value.get("value") in (None, ""):
        return None
    try:
        return Decimal(str(value["value"]))
    except InvalidOperation:
        return None


def _unit_amount(order: Mapping[str, Any]) -> Decimal | None:
    return _money((_first(order.get("purchase_units")) or {}).get("amount"))


def _unit_currency(order: Mapping[str, Any]) -> str | None:
    return ((_first(order.get("purchase_units")) or {}).get("amount") or {}).get("currency_code")


def _is_probe(order: Mapping[str, Any]) -> bool:
    unit = _first(order.get("purchase_units")) or {}
    return str(unit.get("custom_id") or "").startswith(PROBE_PREFIX)


def _order_id_of(resource: Mapping[str, Any]) -> str | None:
    """The order a capture or authorization belongs to: ``supplementary_data.related_ids.order_id``, else its
    ``up`` link (``.../v2/checkout/orders/<id>``)."""
    related = (resource.get("supplementary_data") or {}).get("related_ids") or {}
    if related.get("order_id"):
        return str(related["order_id"])
    for link in resource.get("links") or []:
        href = str(link.get("href") or "")
        if link.get("rel") == "up" and "/checkout/orders/" in href:
            return href.rstrip("/").rsplit("/", 1)[-1]
    return None


def _parse_time(value: str) -> float | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(PayPalGateway)
