"""Notify provider ``textlocal``: SMS through TextLocal's send API, with delivery receipts.

TextLocal's API (``https://api.txtlocal.com``; ``https://api.textlocal.in`` for India) takes form
posts and answers JSON with ``"status": "success"`` or ``"status": "failure"`` and numbered
``errors`` (and ``warnings``) — usually with HTTP 200 either way, so the body decides.

* ``POST /send/`` with ``apikey``, ``numbers`` (comma-separated, international format without
  ``+``), ``message``, ``sender``, ``test``, ``custom`` and ``receipt_url``. One call sends a whole
  batch; the reply lists the ``messages`` sent, each with its ``recipient`` number.
* ``POST /balance/`` with ``apikey``: the account's remaining credits (the health check).
* Delivery receipts: TextLocal posts ``number``, ``status`` (``D``, ``U``, ``P``, ``I``, ``E``...),
  ``customID`` and ``datetime`` to the ``receipt_url`` given at send time. Receipts are not signed,
  so the URL carries a secret ``token`` query parameter that :meth:`TextLocalSms.handle_webhook`
  checks in constant time.

A receipt names the batch's ``custom`` value and the number, not TextLocal's message id, so each
recipient's ``provider_message_id`` is ``"<custom>:<number>"``, where ``custom`` is derived from the
hub's message id (stable across retries).

A batch larger than ``max_numbers_per_request`` takes several calls. An error is raised only when no
call of the batch was accepted; once one was, a transient or configuration error on a later call
makes its numbers and the rest ``retry`` (the core hands only those to the next provider), and a
refused later call makes its numbers ``failed``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

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
from hub.errors import (
    ConfigurationError,
    PermanentError,
    ProviderError,
    SignatureError,
    TransientError,
    UnsupportedError,
)
from hub.http import HttpClient, HttpSettings

__all__ = ["ERROR_CODES", "RECEIPT_STATUSES", "TextLocalSettings", "TextLocalSms", "register_providers"]

#: TextLocal's send/balance error codes (its API reference), and what the hub does about each:
#: ``configuration`` -> ConfigurationError (the account is unusable: fail over), ``permanent`` ->
#: PermanentError, ``recipients`` -> every recipient of that request failed, ``transient`` ->
#: TransientError. A code not listed here is treated as ``configuration``: another provider may send.
ERROR_CODES: dict[int, tuple[str, str]] = {
    1: ("permanent", "No command specified"),
    2: ("permanent", "Unrecognised command"),
    3: ("configuration", "Invalid login details"),
    4: ("permanent", "No recipients specified"),
    5: ("permanent", "No message content"),
    6: ("permanent", "Message too long"),
    7: ("configuration", "Insufficient credits"),
    8: ("permanent", "Invalid schedule date"),
    9: ("permanent", "Schedule date is in the past"),
    10: ("permanent", "Invalid group ID"),
    11: ("permanent", "Selected group is empty"),
    32: ("recipients", "Invalid number format"),
    33: ("permanent", "You have supplied too many numbers"),
    34: ("permanent", "You have supplied both a group ID and a set of numbers"),
    43: ("configuration", "Invalid sender name"),
    44: ("configuration", "No sender name specified"),
    51: ("recipients", "No valid numbers specified"),
    191: ("transient", "Schedule time is outside that allowed"),
    192: ("transient", "You cannot send message at this time"),
}

#: Receipt status letters -> the hub's delivery status. The hub marks a recipient failed on
#: ``undelivered``/``failed``; the letter itself is kept in the event details.
RECEIPT_STATUSES: dict[str, str] = {
    "D": "delivered",
    "U": "undelivered",
    "P": "pending",
    "I": "failed",  # invalid number
    "E": "undelivered",  # expired before it could be delivered
}

#: Numbers per send call; TextLocal refuses larger lists (error 33).
MAX_NUMBERS_PER_REQUEST = 1000

_SENDER = re.compile(r"^(?:[A-Za-z0-9]{3,11}|[0-9]{3,13})$")
_NUMBER = re.compile(r"^[1-9][0-9]{6,14}$")


class TextLocalSettings(HttpSettings):
    """``providers.<name>`` settings of a ``textlocal`` provider (HttpSettings adds ``timeout`` and
    ``connect_timeout``, in seconds)."""

    api_key = fields.String(required=True, validate=validate.Length(min=1))
    #: Sender name shown on the phone: 3-11 letters/digits, or up to 13 digits. Absent: the account's default.
    sender = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(_SENDER, error="3 to 11 letters or digits, or up to 13 digits"),
    )
    base_url = fields.Url(load_default="https://api.txtlocal.com", require_tld=False, schemes={"http", "https"})
    #: TextLocal's ``test`` flag: requests are checked and answered, nothing is sent, no credit is used.
    test_mode = fields.Boolean(load_default=False)
    max_numbers_per_request = fields.Integer(
        load_default=MAX_NUMBERS_PER_REQUEST, validate=validate.Range(min=1, max=MAX_NUMBERS_PER_REQUEST)
    )
    #: Public URL of the hub's ``POST /api/integrations/webhooks/<provider name>``; enables receipts.
    receipt_url = fields.Url(load_default=None, allow_none=True, require_tld=False, schemes={"http", "https"})
    #: Shared secret added to receipt_url as ``?token=``; receipts without it are refused.
    receipt_token = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=16))

    @validates_schema
    def _receipts_need_a_token(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("receipt_url") and not data.get("receipt_token"):
            raise ValidationError({"receipt_token": ["required with receipt_url: TextLocal receipts are unsigned"]})
        if data.get("receipt_url") and "token=" in (urlsplit(data["receipt_url"]).query or ""):
            raise ValidationError({"receipt_url": ["leave the token out: it is added from receipt_token"]})


def textlocal_number(address: str) -> str | None:
    """TextLocal's form of an E.164 number (``+447700900123`` -> ``447700900123``), or ``None``."""
    digits = address.strip().removeprefix("+")
    return digits if _NUMBER.fullmatch(digits) else None


def custom_reference(message_id: str) -> str:
    """The ``custom`` value sent with a batch: short, alphanumeric, and the same on every retry."""
    return hashlib.sha256(message_id.encode("utf-8")).hexdigest()[:20]


class TextLocalSms(Provider):
    type_name = "textlocal"
    capability = "notify"
    channels = ("sms",)
    settings_schema: ClassVar[type[Schema]] = TextLocalSettings
    env_settings: ClassVar[dict[str, str]] = {
        "api_key": "TEXTLOCAL_API_KEY",
        "receipt_token": "TEXTLOCAL_RECEIPT_TOKEN",
    }
    secret_settings: ClassVar[tuple[str, ...]] = ("api_key", "receipt_token")
    description = "SMS through TextLocal's send API (one call per batch), with delivery receipts."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        # 404/405: there is no TextLocal API at base_url, a setting to fix (the next provider is tried).
        self.http = HttpClient.from_settings(
            "TextLocal",
            settings,
            base_url=settings["base_url"],
            headers={"User-Agent": "integration-hub-textlocal/0.1"},
            status_errors={404: ConfigurationError, 405: ConfigurationError},
        )

    # --- HTTP ----------------------------------------------------------------------------------------

    def _call(self, command: str, fields: dict[str, str]) -> dict[str, Any]:
        """POST ``fields`` (plus the API key) to ``/<command>/`` and return the JSON answer. Transport
        and HTTP-level problems are hub errors (hub.http); TextLocal's own ``failure`` answers are returned."""
        response = self.http.post(f"/{command}/", data={"apikey": self.settings["api_key"], **fields})
        try:
            body = response.json()
        except ValueError:
            raise TransientError(
                f"TextLocal answered /{command}/ with something other than JSON", provider_code="bad-response"
            ) from None
        if not isinstance(body, dict) or body.get("status") not in ("success", "failure"):
            raise TransientError(f"TextLocal answered /{command}/ without a status", provider_code="bad-response")
        return body

    # --- notify --------------------------------------------------------------------------------------

    def receipt_url(self) -> str | None:
        """The ``receipt_url`` sent to TextLocal: the configured URL plus the secret token."""
        url = self.settings["receipt_url"]
        if not url:
            return None
        parts = urlsplit(url)
        query = [*parse_qsl(parts.query, keep_blank_values=True), ("token", self.settings["receipt_token"])]
        return urlunsplit(parts._replace(query=urlencode(query)))

    @hookimpl
    def notify(self, message: Message) -> NotifyResult:
        if message.channel != "sms":
            raise UnsupportedError(f"textlocal delivers SMS only, not {message.channel}")
        custom = custom_reference(message.id)
        accepted_status = "queued" if self.settings["receipt_url"] else "sent"
        numbers: list[str | None] = [textlocal_number(r.address) for r in message.recipients]
        to_send = list(dict.fromkeys(n for n in numbers if n))  # a number listed twice is sent once
        base = {"message": message.text, "custom": custom}
        if self.settings["sender"]:
            base["sender"] = self.settings["sender"]
        if self.settings["test_mode"]:
            base["test"] = "true"
        receipt_url = self.receipt_url()
        if receipt_url:
            base["receipt_url"] = receipt_url
        outcomes: dict[str, RecipientResult] = {}  # by TextLocal number
        size = self.settings["max_numbers_per_request"]
        for start in range(0, len(to_send), size):
            chunk = to_send[start : start + size]
            try:
                body = self._call("send", {**base, "numbers": ",".join(chunk)})
                outcomes.update(self._send_outcomes(body, chunk, custom, accepted_status))
            except ProviderError as error:
                if not any(outcome.status == accepted_status for outcome in outcomes.values()):
                    raise  # nothing was sent: a retry or the next provider texts nobody twice
                if isinstance(error, PermanentError):
                    # Earlier calls were accepted, so raising would mark their numbers failed too: this call's fail.
                    outcomes.update({n: RecipientResult("", "failed", error=error.message) for n in chunk})
                    continue
                # Earlier calls were accepted: this call's numbers and the rest go to the next provider.
                self.log.warning(
                    "textlocal: message %s stopped after %d of %d number(s): %s",
                    message.id,
                    start,
                    len(to_send),
                    error.message,
                )
                outcomes.update({n: RecipientResult("", "retry", error=error.message) for n in to_send[start:]})
                break

        results = []
        for recipient, number in zip(message.recipients, numbers, strict=True):
            if number is None:
                results.append(RecipientResult(recipient.address, "failed", error="not an international phone number"))
                continue
            outcome = outcomes[number]
            results.append(
                RecipientResult(recipient.address, outcome.status, outcome.provider_message_id, outcome.error)
            )
        self.log.info(
            "textlocal: message %s: %d SMS accepted, %d refused, %d left to retry",
            message.id,
            sum(1 for result in results if result.status == accepted_status),
            sum(1 for result in results if result.status == "failed"),
            sum(1 for result in results if result.status == "retry"),
        )
        return NotifyResult(results, provider_message_id=custom)

    def _send_outcomes(
        self, body: dict[str, Any], chunk: list[str], custom: str, accepted_status: str
    ) -> dict[str, RecipientResult]:
        """Each number of one send call -> its outcome; raises the hub error for a refused call."""
        warned = _warned_numbers(body)
        if body["status"] == "failure":
            kind, code, text = _refusal(body)
            if kind != "recipients":
                raise _error_for(kind, code, text)
            return {n: RecipientResult("", "failed", error=warned.get(n) or f"TextLocal {code}: {text}") for n in chunk}
        listed = body.get("messages")
        if isinstance(listed, list):
            accepted = {str(item.get("recipient")) for item in listed if isinstance(item, dict)}
        else:  # a reply without the list (test mode): every number not warned about was accepted
            accepted = {n for n in chunk if n not in warned}
        outcomes = {}
        for number in chunk:
            if number in accepted:
                outcomes[number] = RecipientResult("", accepted_status, provider_message_id=f"{custom}:{number}")
            else:
                outcomes[number] = RecipientResult(
                    "", "failed", error=warned.get(number) or "TextLocal did not accept this number"
                )
        return outcomes

    # --- health --------------------------------------------------------------------------------------

    @hookimpl
    def health(self) -> HealthResult:
        try:
            body = self._call("balance", {})
        except ProviderError as error:
            return HealthResult("error", error.message)
        if body["status"] == "failure":
            _kind, code, text = _refusal(body)
            return HealthResult("error", f"TextLocal refused the balance request ({code} {text})")
        balance = body.get("balance")
        credits = balance.get("sms") if isinstance(balance, dict) else balance
        mode = " (test mode: nothing is sent)" if self.settings["test_mode"] else ""
        if isinstance(credits, int | float) and credits <= 0:
            return HealthResult("error", f"TextLocal API key accepted, but no SMS credits are left{mode}")
        return HealthResult("success", f"TextLocal API key accepted; {credits} SMS credits left{mode}")

    # --- delivery receipts ---------------------------------------------------------------------------

    @hookimpl
    def handle_webhook(self, webhook: WebhookRequest) -> list[WebhookEvent]:
        expected = self.settings["receipt_token"]
        if not expected:
            raise SignatureError("TextLocal receipts are not enabled: set receipt_token (and receipt_url)")
        given = webhook.query.get("token") or ""
        if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
            raise SignatureError("the TextLocal receipt's token is missing or wrong")
        form = webhook.form or dict(parse_qsl(webhook.body.decode("utf-8", errors="replace")))
        number = (form.get("number") or "").strip().removeprefix("+")
        letter = (form.get("status") or "").strip().upper()
        custom = (form.get("customID") or form.get("customid") or form.get("custom") or "").strip()
        when = (form.get("datetime") or "").strip()
        if not number or not letter:
            raise PermanentError("not a TextLocal delivery receipt: number and status are required")
        if not custom:
            self.log.info("textlocal: receipt without customID ignored (not sent by this hub)")
            return []
        event_id = hashlib.sha256(f"{custom}|{number}|{letter}|{when}".encode()).hexdigest()[:32]
        return [
            WebhookEvent(
                event_id=event_id,
                reference=f"{custom}:{number}",
                status=RECEIPT_STATUSES.get(letter, "unknown"),
                type=f"textlocal.receipt.{letter}",
                recipient=f"+{number}",
                details={"textlocalStatus": letter, "datetime": when},
            )
        ]

    @hookimpl
    def close(self) -> None:
        self.http.close()


def _refusal(body: dict[str, Any]) -> tuple[str, int | None, str]:
    """(what to do, code, TextLocal's text) for a ``failure`` answer, from its first known error."""
    errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    for error in errors:
        code = _as_int(error.get("code"))
        if code in ERROR_CODES:
            kind, meaning = ERROR_CODES[code]
            return kind, code, str(error.get("message") or meaning)[:300]
    if errors:
        return "configuration", _as_int(errors[0].get("code")), str(errors[0].get("message") or "unknown error")[:300]
    return "configuration", None, "failure without an error code"


def _error_for(kind: str, code: int | None, text: str) -> ProviderError:
    label = f"TextLocal error {code}: {text}" if code is not None else f"TextLocal: {text}"
    provider_code = str(code) if code is not None else None
    if kind == "permanent":
        return PermanentError(label, provider_code=provider_code)
    if kind == "transient":
        return TransientError(label, provider_code=provider_code)
    return ConfigurationError(label, provider_code=provider_code)


def _warned_numbers(body: dict[str, Any]) -> dict[str, str]:
    """Numbers named in the answer's ``warnings`` -> the warning's text."""
    warned: dict[str, str] = {}
    for warning in body.get("warnings") or []:
        if not isinstance(warning, dict):
            continue
        numbers = warning.get("numbers") or []
        if isinstance(numbers, str | int):
            numbers = str(numbers).split(",")
        text = str(warning.get("message") or "refused by TextLocal")[:300]
        for number in numbers:
            warned[str(number).strip().removeprefix("+")] = f"TextLocal: {text}"
    return warned


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(TextLocalSms)
