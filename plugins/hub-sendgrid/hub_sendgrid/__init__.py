"""Notify provider ``sendgrid``: email through SendGrid's v3 Mail Send API.

Requests go through :mod:`hub.http` (pooled sessions per worker thread, timeouts, the hub's mapping of statuses
and transport failures); the official ``sendgrid`` SDK verifies the Event Webhook's signatures. A batch is
**one** ``POST /v3/mail/send`` (chunked at SendGrid's limit of 1,000 personalizations): one
personalization per recipient, each carrying ``custom_args`` ``hub_message_id`` and ``hub_recipient`` (its
index), which SendGrid copies into every event of its Event Webhook. That is how events find their delivery
record: each recipient's ``provider_message_id`` is ``"<message id>:<index>"``, rebuilt from an event's
custom args. SendGrid's own ``X-Message-Id`` (the prefix of each event's ``sg_message_id``) is returned as the
batch's ``NotifyResult.provider_message_id``.

Error mapping: 401/403 (and 404: the ``host`` setting is wrong) -> :class:`~hub.errors.ConfigurationError`; 429
(``retry_after`` from ``Retry-After``, else ``X-RateLimit-Reset``), 5xx, timeouts and refused connections ->
:class:`~hub.errors.TransientError`; a 400
that names recipients (``personalizations.<n>.to...``) -> those recipients ``failed``, the rest sent again
without them; any other 400 -> :class:`~hub.errors.PermanentError` with SendGrid's messages. An error is raised
only when SendGrid accepted no chunk of the batch; once one was accepted, a transient or configuration error on a
later chunk makes that chunk's recipients and the ones after it ``retry`` (the core hands only those to the next
provider), and a refusal makes that chunk's recipients ``failed``.

Webhooks: SendGrid's *Signed* Event Webhook, verified with the SDK's ``EventWebhook`` (ECDSA P-256 over the
timestamp and the raw body) against the ``webhook_public_key`` setting; a timestamp older than
``webhook_tolerance`` seconds is refused, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from marshmallow import Schema, ValidationError, fields, validate, validates

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
from hub.http import HttpClient, HttpSettings, ProviderReason

if TYPE_CHECKING:
    import requests

__all__ = ["SendGridEmail", "SendGridSettings", "register_providers"]

#: SendGrid refuses more personalizations than this in one request.
MAX_PERSONALIZATIONS = 1000
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
#: A 400's ``field`` naming one recipient: ``personalizations.3.to.0.email``.
_RECIPIENT_FIELD = re.compile(r"^personalizations\.(\d+)\.to\b")

#: Event Webhook ``event`` -> the hub's delivery status. ``processed`` (accepted, not yet delivered) is
#: what the record says already ("queued") and may arrive after ``delivered``: it is ignored.
STATUS_MAP = {
    "delivered": "delivered",
    "deferred": "deferred",
    "bounce": "bounced",
    "dropped": "failed",
    "open": "opened",
    "click": "clicked",
    "spamreport": "complained",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
    "group_resubscribe": "resubscribed",
}
#: Event fields worth keeping on the delivery record (SendGrid's names); addresses and IPs are not kept.
_EVENT_DETAILS = ("reason", "response", "status", "type", "bounce_classification", "attempt", "url")


class SendGridSettings(HttpSettings):
    """``providers.<name>`` settings of a ``sendgrid`` provider (HttpSettings adds ``timeout`` and
    ``connect_timeout``, in seconds)."""

    api_key = fields.String(required=True, validate=validate.Length(min=1))
    from_address = fields.Email(required=True)
    from_name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    #: The API's address; tests point it at a local server.
    host = fields.Url(load_default="https://api.sendgrid.com", schemes={"http", "https"}, require_tld=False)
    #: SendGrid validates the request but delivers nothing (``mail_settings.sandbox_mode``).
    sandbox_mode = fields.Boolean(load_default=False)
    #: The Signed Event Webhook's verification key (Settings > Mail Settings > Event Webhook), base64 DER.
    webhook_public_key = fields.String(load_default=None, allow_none=True)
    #: Oldest acceptable ``X-Twilio-Email-Event-Webhook-Timestamp``, in seconds: older requests are replays.
    webhook_tolerance = fields.Integer(load_default=300, validate=validate.Range(min=1))

    @validates("webhook_public_key")
    def _base64_key(self, value: str | None, **_: Any) -> None:
        if value is None:
            return
        try:
            base64.b64decode(_strip_pem(value), validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError("not a base64 public key (copy it from SendGrid's Event Webhook settings)") from None


def _strip_pem(key: str) -> str:
    """The base64 body of a key given with or without PEM armour and line breaks."""
    lines = [line.strip() for line in key.strip().splitlines() if line.strip() and "-----" not in line]
    return "".join(lines)


class SendGridEmail(Provider):
    type_name = "sendgrid"
    capability = "notify"
    channels = ("email",)
    settings_schema: ClassVar[type[Schema]] = SendGridSettings
    env_settings: ClassVar[dict[str, str]] = {
        "api_key": "SENDGRID_API_KEY",
        "webhook_public_key": "SENDGRID_WEBHOOK_PUBLIC_KEY",
    }
    secret_settings = ("api_key",)
    description = "Email through SendGrid v3 Mail Send (one request per batch); signed Event Webhook."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self.http = HttpClient.from_settings(
            "SendGrid",
            settings,
            base_url=settings["host"],
            headers={"Authorization": f"Bearer {settings['api_key']}", "Accept": "application/json"},
            extract_error=_reason,
            status_errors={404: ConfigurationError},  # no Mail Send API at ``host``: a setting to fix
        )
        self._public_key: Any = None
        self._key_lock = threading.Lock()

    # --- notify ------------------------------------------------------------------------------------

    @hookimpl
    def notify(self, message: Message) -> NotifyResult:
        if not message.subject:
            raise PermanentError("an email needs a subject", field="subject")
        results: list[RecipientResult] = []
        batch_ids: list[str] = []
        for start in range(0, len(message.recipients), MAX_PERSONALIZATIONS):
            indexes = list(range(start, min(start + MAX_PERSONALIZATIONS, len(message.recipients))))
            try:
                chunk_results, message_ids = self._send_chunk(message, indexes, sent_before=_accepted(results) > 0)
            except (TransientError, ConfigurationError) as error:
                if not _accepted(results):
                    raise  # nothing went out: a retry or the next provider sends nothing twice
                # Earlier chunks went out: only this chunk and the ones after it go to the next provider.
                self.log.warning(
                    "sendgrid: %s stopped after %d of %d recipient(s): %s",
                    message.id,
                    start,
                    len(message.recipients),
                    error.message,
                )
                unsent = message.recipients[start:]
                results.extend(RecipientResult(r.address, "retry", error=error.message) for r in unsent)
                break
            results.extend(chunk_results)
            batch_ids.extend(message_ids)
        self.log.info("sendgrid: %s accepted for %d of %d recipient(s)", message.id, _accepted(results), len(results))
        return NotifyResult(results, provider_message_id=",".join(batch_ids) or None)

    def _send_chunk(
        self, message: Message, indexes: list[int], *, sent_before: bool
    ) -> tuple[list[RecipientResult], list[str]]:
        """Send one request for ``indexes``; recipients SendGrid names as invalid fail and the rest are sent
        again without them. Returns the chunk's results (in order) and SendGrid's X-Message-Ids.

        Raises ``TransientError``/``ConfigurationError`` (the caller decides what the rest of the batch gets),
        and a refusal of the whole chunk when nothing was sent before it."""
        failed: dict[int, str] = {}
        remaining = list(indexes)
        message_ids: list[str] = []
        # Each refusal removes at least one recipient, so this ends.
        while remaining:
            response = self.http.post("/v3/mail/send", json=self._mail_body(message, remaining), check=False)
            error = self.http.error_for(response)
            if error is None:
                if response.headers.get("X-Message-Id"):
                    message_ids.append(response.headers["X-Message-Id"])
                break
            if response.status_code == 400:
                errors = _errors(response)
                refused = _refused_recipients(errors, remaining)
                if refused:
                    failed.update(refused)
                    remaining = [index for index in remaining if index not in refused]
                    continue
                error = PermanentError(f"SendGrid refused the message: {_describe(errors)}", field=_first_field(errors))
            elif not isinstance(error, PermanentError):  # 401/403, 429, 5xx: this chunk and the rest stop
                raise _with_rate_limit_reset(error, response)
            if not sent_before:
                raise error
            # An earlier chunk is out: raising would mark its recipients failed too, so only this chunk's fail.
            failed.update({index: error.message for index in remaining})
            break
        status = "sent" if self.settings["sandbox_mode"] else "queued"
        results = [
            RecipientResult(message.recipients[index].address, "failed", error=failed[index])
            if index in failed
            else RecipientResult(message.recipients[index].address, status, provider_message_id=f"{message.id}:{index}")
            for index in indexes
        ]
        return results, message_ids

    def _mail_body(self, message: Message, indexes: list[int]) -> dict[str, Any]:
        personalizations = []
        for index in indexes:
            recipient = message.recipients[index]
            to: dict[str, str] = {"email": recipient.address}
            if recipient.name:
                to["name"] = recipient.name
            personalizations.append(
                {"to": [to], "custom_args": {"hub_message_id": message.id, "hub_recipient": str(index)}}
            )
        sender: dict[str, str] = {"email": self.settings["from_address"]}
        if self.settings["from_name"]:
            sender["name"] = self.settings["from_name"]
        # text/plain must come before text/html; SendGrid refuses empty values.
        content = [
            {"type": kind, "value": value}
            for kind, value in (("text/plain", message.text), ("text/html", message.html))
            if value
        ]
        body: dict[str, Any] = {
            "personalizations": personalizations,
            "from": sender,
            "subject": message.subject,
            "content": content,
        }
        if message.template:
            body["categories"] = [message.template[:255]]
        if self.settings["sandbox_mode"]:
            body["mail_settings"] = {"sandbox_mode": {"enable": True}}
        return body

    # --- health ------------------------------------------------------------------------------------

    @hookimpl
    def health(self) -> HealthResult:
        try:
            response = self.http.get("/v3/scopes", timeout=min(self.http.timeout, 5.0))
            scopes = response.json().get("scopes") or []
        except ProviderError as error:
            return HealthResult("error", error.message)
        except (ValueError, AttributeError):
            return HealthResult("error", "SendGrid's scopes answer is not the JSON object documented")
        if "mail.send" not in scopes:
            return HealthResult("error", "the API key lacks the mail.send scope")
        return HealthResult("success", f"API key can send mail ({len(scopes)} scopes)")

    # --- the Event Webhook -------------------------------------------------------------------------

    def _verification_key(self) -> Any:
        with self._key_lock:
            if self._public_key is None:
                from sendgrid.helpers.eventwebhook import EventWebhook

                try:
                    self._public_key = EventWebhook().convert_public_key_to_ecdsa(
                        _strip_pem(self.settings["webhook_public_key"])
                    )
                except ValueError:
                    raise ConfigurationError("webhook_public_key is not an EC public key") from None
            return self._public_key

    @hookimpl
    def handle_webhook(self, webhook: WebhookRequest) -> list[WebhookEvent]:
        from sendgrid.helpers.eventwebhook import EventWebhook

        if not self.settings["webhook_public_key"]:
            raise SignatureError("cannot verify SendGrid events: set webhook_public_key (signed Event Webhook)")
        signature = _header(webhook.headers, SIGNATURE_HEADER)
        timestamp = _header(webhook.headers, TIMESTAMP_HEADER)
        if not signature or not timestamp:
            raise SignatureError(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}")
        try:
            age = time.time() - int(timestamp)
        except ValueError:
            raise SignatureError(f"{TIMESTAMP_HEADER} is not a Unix time") from None
        if abs(age) > self.settings["webhook_tolerance"]:
            raise SignatureError(f"{TIMESTAMP_HEADER} is {age:.0f} s away from now: refused as a replay")
        try:
            payload = webhook.body.decode("utf-8")
            valid = EventWebhook().verify_signature(payload, signature, timestamp, self._verification_key())
        except (UnicodeDecodeError, binascii.Error, ValueError):
            valid = False
        if not valid:
            raise SignatureError(f"{SIGNATURE_HEADER} does not verify")
        try:
            events = json.loads(payload)
        except ValueError:
            raise PermanentError("the Event Webhook body is not JSON") from None
        if not isinstance(events, list):
            raise PermanentError("the Event Webhook body is not a JSON array of events")
        return [event for event in map(_event, events) if event is not None]

    @hookimpl
    def close(self) -> None:
        self.http.close()


def _event(raw: Any) -> WebhookEvent | None:
    if not isinstance(raw, dict):
        return None
    name = str(raw.get("event") or "")
    if name not in STATUS_MAP:
        return None
    sg_message_id = str(raw.get("sg_message_id") or "")
    hub_message, hub_recipient = raw.get("hub_message_id"), raw.get("hub_recipient")
    if hub_message is not None and hub_recipient is not None:
        reference = f"{hub_message}:{hub_recipient}"
    else:
        # Mail the hub did not send (no custom args): SendGrid's X-Message-Id, which matches no recipient.
        reference = sg_message_id.split(".", 1)[0]
    if not reference:
        return None
    event_id = raw.get("sg_event_id") or f"{sg_message_id}:{name}:{raw.get('timestamp')}"
    details = {key: raw[key] for key in _EVENT_DETAILS if raw.get(key) not in (None, "")}
    if sg_message_id:
        details["sgMessageId"] = sg_message_id
    return WebhookEvent(
        event_id=str(event_id),
        reference=reference,
        status=STATUS_MAP[name],
        type=name,
        recipient=raw.get("email"),
        details=details,
    )


def _accepted(results: list[RecipientResult]) -> int:
    return sum(1 for result in results if result.status in ("sent", "queued"))


def _errors(response: requests.Response) -> list[dict[str, Any]]:
    """SendGrid's ``{"errors": [{"message", "field", "help"}]}``, or ``[]``."""
    try:
        body = response.json()
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    return [item for item in errors if isinstance(item, dict)] if isinstance(errors, list) else []


def _reason(response: requests.Response) -> ProviderReason | None:
    """hub.http's extractor: every message SendGrid gave, with its field."""
    errors = _errors(response)
    return ProviderReason(message=_describe(errors)) if errors else None


def _refused_recipients(errors: list[dict[str, Any]], indexes: list[int]) -> dict[int, str] | None:
    """Recipients a 400 names (by personalization position), or ``None`` when an error is not about one."""
    refused: dict[int, str] = {}
    for item in errors:
        found = _RECIPIENT_FIELD.match(str(item.get("field") or ""))
        if found is None or int(found.group(1)) >= len(indexes):
            return None
        refused[indexes[int(found.group(1))]] = f"SendGrid: {item.get('message') or 'invalid recipient'}"
    return refused or None


def _describe(errors: list[dict[str, Any]]) -> str:
    parts = [
        f"{item.get('field')}: {item.get('message')}" if item.get("field") else str(item.get("message"))
        for item in errors
    ]
    return "; ".join(parts) or "bad request"


def _first_field(errors: list[dict[str, Any]]) -> str | None:
    return next((str(item["field"]) for item in errors if item.get("field")), None)


def _with_rate_limit_reset(error: ProviderError, response: requests.Response) -> ProviderError:
    """SendGrid's 429 says when the limit resets in ``X-RateLimit-Reset`` (a Unix time) rather than
    ``Retry-After``: use it when hub.http found no ``Retry-After``."""
    reset = response.headers.get("X-RateLimit-Reset", "")
    if error.retryable and error.retry_after is None and reset.isdigit():
        error.retry_after = max(0.0, int(reset) - time.time())
    return error


def _header(headers: Mapping[str, str] | Any, name: str) -> str | None:
    wanted = name.lower()
    return next((str(value) for key, value in headers.items() if key.lower() == wanted), None)


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(SendGridEmail)
