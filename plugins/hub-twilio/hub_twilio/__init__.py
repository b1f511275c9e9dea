"""Notify provider ``twilio``: SMS through Twilio's Programmable Messaging API (the official ``twilio`` SDK).

One ``Messages.create`` call per recipient. Each accepted recipient comes back ``queued`` with the Message
SID as its ``provider_message_id``; Twilio reports delivery later to ``status_callback_url``, which
:meth:`TwilioSms.handle_webhook` verifies with the SDK's ``RequestValidator`` (``X-Twilio-Signature``).

Error mapping (Twilio's documented codes, https://www.twilio.com/docs/api/errors):

* 401 / 20003 (bad credentials), 20005 (account suspended), a refused sender (21212, 21606...) ->
  :class:`~hub.errors.ConfigurationError`: the next provider is tried;
* 429 / 20429, 5xx, timeouts and connection errors -> :class:`~hub.errors.TransientError`;
* an unreachable recipient (21211, 21214, 21217, 21265, 21408, 21610, 21612, 21614, 21635) -> that
  recipient ``failed`` with the code, the others are still sent;
* any other 400 -> :class:`~hub.errors.PermanentError` when nothing was sent yet.

The errors stop the batch. They are raised only when Twilio accepted nobody in it; once someone was
texted, the recipients not tried yet come back ``retry`` and the core hands only those to the next
provider (or a later attempt), so nobody is texted twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

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
from hub.errors import ConfigurationError, PermanentError, ProviderError, SignatureError, TransientError

if TYPE_CHECKING:
    from twilio.rest import Client

__all__ = ["TwilioSettings", "TwilioSms", "register_providers"]

#: Twilio's codes for a recipient it will not message; the other recipients of the batch are still sent.
RECIPIENT_ERROR_CODES = frozenset(
    {
        21211,  # invalid 'To' phone number
        21214,  # 'To' number cannot be reached
        21217,  # phone number does not appear to be valid
        21265,  # 'To' number cannot be a short code
        21408,  # permission to send an SMS has not been enabled for the region
        21610,  # attempt to send to an unsubscribed recipient (STOP)
        21612,  # cannot route to this number
        21614,  # 'To' number is not a valid mobile number
        21635,  # 'To' number cannot be a landline
    }
)
#: Codes that say the provider itself is unusable as configured: fail over to the next provider.
CONFIGURATION_ERROR_CODES = frozenset(
    {
        20003,  # authentication failed
        20005,  # account not active
        21212,  # invalid 'From' number
        21606,  # 'From' number is not a valid, SMS-capable number of this account
        21659,  # 'From' is not a Twilio number
        21660,  # 'From' number does not belong to this account
        21703,  # Messaging Service has no phone numbers in its sender pool
    }
)
TRANSIENT_ERROR_CODES = frozenset({20429, 21611})  # too many requests; the sender's queue is full

#: MessageStatus values of a status callback -> the hub's delivery status. Statuses before "sent"
#: (queued, accepted, sending, scheduled) carry no news: the record says "queued" already.
STATUS_MAP = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "failed",
    "failed": "failed",
    "canceled": "failed",
}

E164 = r"^\+[1-9]\d{1,14}$"


class TwilioSettings(Schema):
    account_sid = fields.String(
        required=True, validate=validate.Regexp(r"^AC[0-9a-fA-F]{32}$", error="not a Twilio Account SID (AC + 32 hex)")
    )
    auth_token = fields.String(required=True, validate=validate.Length(min=1))
    from_number = fields.String(
        load_default=None, allow_none=True, validate=validate.Regexp(E164, error="not an E.164 number (+14155550100)")
    )
    messaging_service_sid = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(r"^MG[0-9a-fA-F]{32}$", error="not a Messaging Service SID (MG + 32 hex)"),
    )
    #: Where Twilio posts status callbacks: the hub's https://<host>/api/integrations/webhooks/<provider name>.
    status_callback_url = fields.Url(load_default=None, allow_none=True, schemes={"http", "https"}, require_tld=False)
    #: Tests only: an API server to use instead of https://api.twilio.com.
    api_base_url = fields.Url(load_default=None, allow_none=True, schemes={"http", "https"}, require_tld=False)
    timeout = fields.Float(load_default=10.0, validate=validate.Range(min=0, min_inclusive=False, max=300))

    @validates_schema
    def _sender_required(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("from_number") and not data.get("messaging_service_sid"):
            raise ValidationError("set from_number or messaging_service_sid", "from_number")


class TwilioSms(Provider):
    type_name = "twilio"
    capability = "notify"
    channels = ("sms",)
    settings_schema: ClassVar[type[Schema]] = TwilioSettings
    env_settings: ClassVar[dict[str, str]] = {"account_sid": "TWILIO_ACCOUNT_SID", "auth_token": "TWILIO_AUTH_TOKEN"}
    secret_settings = ("auth_token",)
    description = "SMS through Twilio (official SDK); delivery status from signed status callbacks."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        # The SDK's http client keeps a requests Session and per-request state: one client per worker
        # thread keeps concurrent sends apart, all built lazily (no network, no SDK import here).
        self._local = threading.local()
        self._clients: list[Client] = []
        self._clients_lock = threading.Lock()

    # --- the SDK client ----------------------------------------------------------------------------

    def _client(self) -> Client:
        client = getattr(self._local, "client", None)
        if client is None:
            from twilio.http.http_client import TwilioHttpClient
            from twilio.rest import Client

            http_client = TwilioHttpClient(timeout=self.settings["timeout"])
            client = Client(self.settings["account_sid"], self.settings["auth_token"], http_client=http_client)
            if self.settings["api_base_url"]:
                # Before the first call: the SDK caches its API versions with the base URL.
                client.api.base_url = self.settings["api_base_url"].rstrip("/")
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    # --- notify ------------------------------------------------------------------------------------

    @hookimpl
    def notify(self, message: Message) -> NotifyResult:
        import requests
        from twilio.base.exceptions import TwilioRestException

        client = self._client()
        sender: dict[str, str] = (
            {"messaging_service_sid": self.settings["messaging_service_sid"]}
            if self.settings["messaging_service_sid"]
            else {"from_": self.settings["from_number"]}
        )
        if self.settings["status_callback_url"]:
            sender["status_callback"] = self.settings["status_callback_url"]
        results: list[RecipientResult] = []
        for recipient in message.recipients:
            outcome: RecipientResult | ProviderError
            try:
                created = client.messages.create(to=recipient.address, body=message.text, **sender)
            except TwilioRestException as error:
                outcome = self._refused(error, recipient.address, _accepted(results) > 0)
            except (requests.RequestException, OSError) as error:
                outcome = _transport_error(error)
            else:
                outcome = RecipientResult(recipient.address, "queued", provider_message_id=created.sid)
            if isinstance(outcome, ProviderError):
                return NotifyResult.cut_short(message, results, outcome)
            results.append(outcome)
        self.log.info("twilio: %s queued %d of %d recipient(s)", message.id, _accepted(results), len(results))
        return NotifyResult(results)

    def _refused(self, error: Any, address: str, sent_any: bool) -> RecipientResult | ProviderError:
        """The outcome for one recipient Twilio refused, or the error that stops the batch."""
        code = error.code
        label = f"Twilio error {code}" if code else f"Twilio HTTP {error.status}"
        reason = f"{label}: {error.msg}" if error.msg else label
        provider_code = str(code) if code else str(error.status)
        if error.status in (401, 403) or code in CONFIGURATION_ERROR_CODES:
            return ConfigurationError(reason, provider_code=provider_code)
        if error.status == 429 or error.status >= 500 or code in TRANSIENT_ERROR_CODES:
            return TransientError(reason, provider_code=provider_code)
        if code in RECIPIENT_ERROR_CODES:
            return RecipientResult(address, "failed", error=reason)
        if not sent_any:
            return PermanentError(reason, provider_code=provider_code)
        # The same text went out to an earlier recipient: what Twilio refused here is this recipient's message.
        return RecipientResult(address, "failed", error=reason)

    # --- health ------------------------------------------------------------------------------------

    @hookimpl
    def health(self) -> HealthResult:
        from twilio.base.exceptions import TwilioRestException

        try:
            account = self._client().api.v2010.accounts(self.settings["account_sid"]).fetch()
        except TwilioRestException as error:
            if error.status in (401, 403):
                return HealthResult("error", f"Twilio refused the credentials (HTTP {error.status}, code {error.code})")
            return HealthResult("error", f"Twilio answered HTTP {error.status} (code {error.code})")
        except Exception as error:  # noqa: BLE001 - health reports, never raises
            return HealthResult("error", f"cannot reach Twilio: {type(error).__name__}")
        status = account.status or "unknown"
        name = account.friendly_name or account.sid
        if status != "active":
            return HealthResult("error", f"Account {name} is {status}")
        return HealthResult("success", f"Account {name} active")

    # --- status callbacks --------------------------------------------------------------------------

    @hookimpl
    def handle_webhook(self, webhook: WebhookRequest) -> list[WebhookEvent]:
        from twilio.request_validator import RequestValidator

        signature = _header(webhook.headers, "X-Twilio-Signature")
        if not signature:
            raise SignatureError("missing X-Twilio-Signature header")
        # Twilio signs the URL it was given (behind a proxy request.url differs): the configured one.
        url = self.settings["status_callback_url"] or webhook.url
        if not RequestValidator(self.settings["auth_token"]).validate(url, dict(webhook.form), signature):
            raise SignatureError("X-Twilio-Signature does not match the request")
        form = webhook.form
        # SmsSid/SmsStatus are the older names Twilio still sends beside the Message* ones.
        sid = form.get("MessageSid") or form.get("SmsSid")
        twilio_status = form.get("MessageStatus") or form.get("SmsStatus")
        if not sid or not twilio_status:
            raise PermanentError("not a Twilio message status callback (no MessageSid/MessageStatus)")
        status = STATUS_MAP.get(twilio_status)
        if status is None:
            return []  # an intermediate status (queued, sending...): nothing to record
        details = {"twilioStatus": twilio_status}
        if form.get("ErrorCode"):
            details["errorCode"] = form["ErrorCode"]
        return [
            WebhookEvent(
                event_id=f"{sid}:{twilio_status}",
                reference=sid,
                status=status,
                type=f"message.{twilio_status}",
                recipient=form.get("To"),
                details=details,
            )
        ]

    @hookimpl
    def close(self) -> None:
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            session = getattr(client.http_client, "session", None)
            if session is not None:
                session.close()


def _transport_error(error: Exception) -> TransientError:
    """Timeouts and refused connections: this recipient was not accepted, so trying again (elsewhere) may help."""
    import requests

    if isinstance(error, requests.Timeout | TimeoutError):
        return TransientError("Twilio did not answer in time", provider_code="timeout")
    return TransientError(f"cannot reach Twilio: {type(error).__name__}", provider_code="connection")


def _accepted(results: list[RecipientResult]) -> int:
    return sum(1 for result in results if result.status in ("sent", "queued"))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(TwilioSms)
