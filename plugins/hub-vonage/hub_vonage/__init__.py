"""Notify provider ``vonage``: SMS through the Vonage (Nexmo) SMS API, ``POST https://rest.nexmo.com/sms/json``.

Spoken with ``requests`` exactly as Vonage's official description (``nexmo.com/sms.json``) has it: a form with
``api_key``, ``api_secret``, ``from``, ``to`` (E.164 digits, no ``+``), ``text``, ``type`` (``unicode`` when the
text is not GSM-7), ``client-ref`` and, when configured, ``callback`` for delivery receipts. One request per
recipient. Vonage answers HTTP 200 even for refusals; each message part carries a ``status`` whose meaning the
description lists (``x-errors``):

* 0 -> accepted: the recipient is ``queued`` (delivery is reported later by a receipt);
* 1 throttled, 5 internal error, 10 too many binds -> :class:`~hub.errors.TransientError`;
* 4 bad credentials, 8 account barred, 9 no credit, 11 not enabled for HTTP, 14 bad signature, 15 sender not
  allowed, 23 bad callback URL, 32 signature and secret -> :class:`~hub.errors.ConfigurationError`;
* 2, 3, 6, 7, 22, 29, 33 (missing/invalid parameters, unroutable, barred, not whitelisted, deactivated
  number) -> that recipient ``failed`` with the code, the others are still sent;
* 12 message too long -> :class:`~hub.errors.PermanentError` (when nothing was sent yet).

These errors stop the batch and are raised only when Vonage accepted nobody in it. Once someone was texted, the
recipients not tried yet come back ``retry`` instead: the core hands only those to the next provider (or a later
attempt), so nobody is texted twice.

Each recipient's ``provider_message_id`` is the ``client-ref`` sent with it (``"<message id>:<index>"``): Vonage
splits a long text into parts with one ``message-id`` each, but every part's delivery receipt carries the same
``client-ref``, so all of them find the recipient.

Delivery receipts are verified with Vonage's signed requests (``sig``: the sorted parameters as
``&key=value`` with ``&`` and ``=`` in values replaced by ``_``, HMAC-SHA256 with ``signature_secret`` by default)
or, for accounts without signing, a ``token`` query parameter matching ``receipt_token``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates_schema

from hub import hookimpl
from hub.capabilities import (
    HealthResult,
    Message,
    NotifyResult,
    Provider,
    ProviderContext,
    RecipientResult,
    WebhookEvent,
    WebhookRequest,
)
from hub.errors import ConfigurationError, PermanentError, ProviderError, SignatureError, TransientError
from hub.http import HttpClient, HttpSettings, json_error

if TYPE_CHECKING:
    import requests

__all__ = ["VonageSettings", "VonageSms", "register_providers", "signature"]

#: ``status`` values of the SMS API's answer, from the description's ``x-errors``.
TRANSIENT_STATUSES = {"1": "throttled", "5": "internal error", "10": "too many existing binds"}
CONFIGURATION_STATUSES = {
    "4": "invalid credentials",
    "8": "partner account barred",
    "9": "partner quota violation (no credit)",
    "11": "account not enabled for HTTP",
    "14": "invalid signature",
    "15": "invalid sender address",
    "23": "invalid callback URL",
    "32": "signature and API secret disallowed",
}
RECIPIENT_STATUSES = {
    "2": "missing parameters",
    "3": "invalid parameters",
    "6": "invalid message (unroutable number)",
    "7": "number barred",
    "22": "invalid network code",
    "29": "non-whitelisted destination",
    "33": "number de-activated",
}
MESSAGE_STATUSES = {"12": "message too long"}

#: Delivery receipt ``status`` -> the hub's delivery status; ``buffered`` (still trying) changes nothing.
RECEIPT_STATUS_MAP = {
    "delivered": "delivered",
    "accepted": "sent",
    "expired": "failed",
    "failed": "failed",
    "rejected": "failed",
    "unknown": "unknown",
}
SIGNATURE_METHODS = {"md5hash": None, "md5": "md5", "sha1": "sha1", "sha256": "sha256", "sha512": "sha512"}
#: Query parameters the hub itself adds to a webhook URL; Vonage does not sign them.
_HUB_QUERY = ("tenant", "token")

# GSM 03.38: the default alphabet plus its extension table (which costs two septets, still GSM-7).
_GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€\f"
)


class VonageSettings(HttpSettings):
    """``providers.<name>`` settings of a ``vonage`` provider (HttpSettings adds ``timeout`` and ``connect_timeout``)."""

    api_key = fields.String(required=True, validate=validate.Length(min=1, max=32))
    api_secret = fields.String(required=True, validate=validate.Length(min=1))
    #: The sender: an alphanumeric ID (up to 11 characters) or a number. ``from_`` is accepted too.
    from_ = fields.String(required=True, data_key="from", validate=validate.Length(min=1, max=15))
    base_url = fields.Url(load_default="https://rest.nexmo.com", schemes={"http", "https"}, require_tld=False)
    #: Per-message delivery receipt URL (the hub's .../webhooks/<provider name>); else the dashboard's.
    callback_url = fields.Url(
        load_default=None,
        allow_none=True,
        schemes={"http", "https"},
        require_tld=False,
        validate=validate.Length(max=100),
    )
    #: Verifies signed delivery receipts (Vonage dashboard > Settings > signature secret).
    signature_secret = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    signature_method = fields.String(load_default="sha256", validate=validate.OneOf(list(SIGNATURE_METHODS)))
    #: Oldest acceptable ``timestamp`` of a signed receipt, in seconds (older ones are replays).
    signature_tolerance = fields.Integer(load_default=300, validate=validate.Range(min=1))
    #: Without signing: receipts must carry ``?token=<receipt_token>`` (put it in the callback URL).
    receipt_token = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=16))

    @pre_load
    def _from_alias(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        # Python's keyword-safe spelling, as the settings are written in code.
        if "from_" in data and "from" not in data:
            data = {**data, "from": data["from_"]}
            del data["from_"]
        return data

    @validates_schema
    def _receipts_verifiable(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("callback_url") and not (data.get("signature_secret") or data.get("receipt_token")):
            raise ValidationError(
                "delivery receipts cannot be verified: set signature_secret or receipt_token", "callback_url"
            )


def signature(params: Mapping[str, Any], secret: str, method: str = "sha256") -> str:
    """Vonage's request signature of ``params`` (without ``sig``), as its SDKs compute it.

    The parameters sorted by name, each as ``&name=value`` with ``&`` and ``=`` in string values replaced by
    ``_``; hashed with HMAC(``secret``) for ``md5``/``sha1``/``sha256``/``sha512``, or, for ``md5hash``, MD5
    over that string followed by the secret. Lower-case hex.
    """
    digest = SIGNATURE_METHODS[method]
    hasher: Any = hmac.new(secret.encode(), digestmod=digest) if digest else hashlib.md5()
    for key in sorted(params):
        if key == "sig":
            continue
        value = params[key]
        if isinstance(value, str):
            value = value.replace("&", "_").replace("=", "_")
        hasher.update(f"&{key}={value}".encode())
    if digest is None:
        hasher.update(secret.encode())
    return str(hasher.hexdigest())


class VonageSms(Provider):
    type_name = "vonage"
    capability = "notify"
    channels = ("sms",)
    settings_schema: ClassVar[type[Schema]] = VonageSettings
    env_settings: ClassVar[dict[str, str]] = {
        "api_key": "VONAGE_API_KEY",
        "api_secret": "VONAGE_API_SECRET",
        "signature_secret": "VONAGE_SIGNATURE_SECRET",
    }
    secret_settings = ("api_secret", "signature_secret", "receipt_token")
    description = "SMS through the Vonage (Nexmo) SMS API; signed delivery receipts."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        # A 404 means base_url is not Vonage's API: a setting to fix, so the next provider is tried.
        self.http = HttpClient.from_settings(
            "Vonage",
            settings,
            base_url=settings["base_url"],
            headers={"Accept": "application/json"},
            extract_error=json_error(code=None, message="title"),  # Vonage's error documents (RFC 7807)
            status_errors={404: ConfigurationError},
        )

    # --- notify ------------------------------------------------------------------------------------

    @hookimpl
    def notify(self, message: Message) -> NotifyResult:
        sender = self.settings["from_"]
        if sender.startswith("+") and sender[1:].isdigit():
            sender = sender[1:]  # numbers go without the "+"
        form: dict[str, str] = {
            "api_key": self.settings["api_key"],
            "api_secret": self.settings["api_secret"],
            "from": sender,
            "text": message.text,
        }
        if not set(message.text) <= _GSM7:
            form["type"] = "unicode"
        if self.settings["callback_url"]:
            form["callback"] = self.settings["callback_url"]
        results: list[RecipientResult] = []
        for index, recipient in enumerate(message.recipients):
            reference = _client_ref(message.id, index)
            outcome: RecipientResult | ProviderError
            try:
                response = self.http.post(
                    "/sms/json",
                    data={**form, "to": recipient.address.lstrip("+"), "client-ref": reference},
                    check=False,
                )
            except ProviderError as error:  # no connection, a timeout: hub.http mapped it
                outcome = error
            else:
                outcome = self._outcome(response, recipient.address, reference, _accepted(results) > 0)
            if isinstance(outcome, ProviderError):
                return NotifyResult.cut_short(message, results, outcome)
            results.append(outcome)
        self.log.info("vonage: %s queued %d of %d recipient(s)", message.id, _accepted(results), len(results))
        return NotifyResult(results)

    def _outcome(
        self, response: requests.Response, address: str, reference: str, sent_any: bool
    ) -> RecipientResult | ProviderError:
        """One recipient's result from the SMS API's answer, or the error that stops the batch."""
        refused = self.http.error_for(response)  # the statuses: 401/403, 429/5xx with Retry-After, other 4xx
        if refused is not None:
            if isinstance(refused, PermanentError) and sent_any:
                return RecipientResult(address, "failed", error=refused.message)  # this recipient's request
            return refused
        try:
            parts = response.json()["messages"]
        except (ValueError, KeyError, TypeError):
            parts = None
        if not parts:
            return TransientError(
                f"Vonage answered HTTP {response.status_code} without a message status",
                provider_code=str(response.status_code),
            )
        refused_part = next((part for part in parts if str(part.get("status")) != "0"), None)
        if refused_part is None:
            message_ids = ",".join(str(part.get("message-id")) for part in parts)
            self.log.debug("vonage: %s accepted as %s", reference, message_ids)
            return RecipientResult(address, "queued", provider_message_id=reference)
        code = str(refused_part.get("status"))
        text = refused_part.get("error-text") or ""
        reason = f"Vonage status {code}: {text}" if text else f"Vonage status {code}"
        if code in TRANSIENT_STATUSES:
            return TransientError(reason, provider_code=code)
        if code in CONFIGURATION_STATUSES:
            return ConfigurationError(reason, provider_code=code)
        if code in MESSAGE_STATUSES and not sent_any:
            return PermanentError(reason, provider_code=code, field="text")
        # Recipient statuses, and codes newer than this plugin: this recipient only.
        return RecipientResult(address, "failed", error=reason)

    # --- health ------------------------------------------------------------------------------------

    @hookimpl
    def health(self) -> HealthResult:
        try:
            # The Account API's balance (nexmo.com/account.json): cheap, and it proves the key and secret.
            response = self.http.get(
                "/account/get-balance",
                params={"api_key": self.settings["api_key"], "api_secret": self.settings["api_secret"]},
                timeout=min(self.http.timeout, 5.0),
            )
        except ProviderError as error:
            return HealthResult("error", error.message)
        try:
            balance = float(response.json()["value"])
        except (ValueError, KeyError, TypeError):
            return HealthResult("error", "Vonage's balance answer has no value")
        if balance <= 0:
            return HealthResult("error", f"Vonage balance is {balance:.2f} EUR: messages will be refused")
        return HealthResult("success", f"Vonage balance {balance:.2f} EUR")

    # --- delivery receipts -------------------------------------------------------------------------

    @hookimpl
    def handle_webhook(self, webhook: WebhookRequest) -> list[WebhookEvent]:
        params = _receipt_params(webhook)
        if self.settings["signature_secret"]:
            self._verify_signature(params)
        elif self.settings["receipt_token"]:
            token = webhook.query.get("token") or ""
            if not hmac.compare_digest(token.encode(), self.settings["receipt_token"].encode()):
                raise SignatureError("the receipt's token does not match receipt_token")
        else:
            raise SignatureError("cannot verify Vonage receipts: set signature_secret or receipt_token")
        message_id, vonage_status = params.get("messageId"), params.get("status")
        if not message_id or not vonage_status:
            raise PermanentError("not a Vonage delivery receipt (no messageId/status)")
        status = RECEIPT_STATUS_MAP.get(str(vonage_status))
        if status is None:
            return []  # buffered: still being delivered
        details = {"vonageStatus": vonage_status, "messageId": message_id}
        for key, name in (("err-code", "errCode"), ("network-code", "networkCode"), ("price", "price")):
            if params.get(key) not in (None, ""):
                details[name] = params[key]
        msisdn = params.get("msisdn")
        return [
            WebhookEvent(
                event_id=f"{message_id}:{vonage_status}",
                reference=str(params.get("client-ref") or message_id),
                status=status,
                type=f"dlr.{vonage_status}",
                recipient=f"+{msisdn}" if msisdn else None,
                details=details,
            )
        ]

    def _verify_signature(self, params: Mapping[str, Any]) -> None:
        sent = str(params.get("sig") or "")
        if not sent:
            raise SignatureError("the receipt is not signed (no sig parameter)")
        expected = signature(params, self.settings["signature_secret"], self.settings["signature_method"])
        if not hmac.compare_digest(sent.lower().encode(), expected.encode()):
            raise SignatureError("the receipt's sig does not verify")
        timestamp = params.get("timestamp")
        if timestamp is not None:
            try:
                age = time.time() - int(str(timestamp))
            except ValueError:
                raise SignatureError("the receipt's timestamp is not a Unix time") from None
            if abs(age) > self.settings["signature_tolerance"]:
                raise SignatureError(f"the receipt was signed {age:.0f} s ago: refused as a replay")

    @hookimpl
    def close(self) -> None:
        self.http.close()


def _accepted(results: list[RecipientResult]) -> int:
    return sum(1 for result in results if result.status in ("sent", "queued"))


def _client_ref(message_id: str, index: int) -> str:
    """``client-ref`` for one recipient: ``<message id>:<index>``, hashed when over Vonage's 100 characters."""
    reference = f"{message_id}:{index}"
    if len(reference) <= 100:
        return reference
    return f"h{hashlib.sha256(message_id.encode()).hexdigest()[:48]}:{index}"


def _receipt_params(webhook: WebhookRequest) -> dict[str, Any]:
    """A receipt's parameters: a JSON or form body (POST receipts) or the query string (GET-style receipts
    forwarded as is), without the parameters the hub's own URL adds."""
    content_type = next((v for k, v in webhook.headers.items() if k.lower() == "content-type"), "") or ""
    if "json" in content_type.lower() and webhook.body:
        try:
            body = json.loads(webhook.body)
        except ValueError:
            raise PermanentError("the receipt's body is not JSON") from None
        if not isinstance(body, dict):
            raise PermanentError("the receipt's body is not a JSON object")
        return body
    if webhook.form:
        return dict(webhook.form)
    return {key: value for key, value in webhook.query.items() if key not in _HUB_QUERY}


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(VonageSms)
