"""Notify provider ``twilio``: SMS through Twilio's Programmable Messaging REST API.

One ``POST /2010-04-01/Accounts/<sid>/Messages.json`` per recipient, through :mod:`hub.http` (pooled sessions per
worker thread, timeouts, the hub's mapping of statuses and transport failures, ``Retry-After``). Each accepted
recipient comes back ``queued`` with the Message SID as its ``provider_message_id``; Twilio reports delivery
later to ``status_callback_url``, which :meth:`TwilioSms.handle_webhook` verifies with the official SDK's
``RequestValidator`` (``X-Twilio-Signature``) -- the only part of the SDK used.

Error mapping: hub.http maps the HTTP status first (401/403 -> :class:`~hub.errors.ConfigurationError`; 429,
5xx, timeouts and connection errors -> :class:`~hub.errors.TransientError`; other 4xx ->
:class:`~hub.errors.PermanentError`), with Twilio's ``code`` and ``message`` from the error body; then Twilio's
documented codes (https://www.twilio.com/docs/api/errors) refine it:

* 20003 (bad credentials), 20005 (account suspended), a refused sender (21212, 21606...) ->
  :class:`~hub.errors.ConfigurationError`: the next provider is tried;
* 20429, 21611 (the sender's queue is full) -> :class:`~hub.errors.TransientError`;
* an unreachable recipient (21211, 21214, 21217, 21265, 21408, 21610, 21612, 21614, 21635) -> that
  recipient ``failed`` with the code, the others are still sent.

The errors stop the batch. They are raised only when Twilio accepted nobody in it; once someone was
texted, the recipients not tried yet come back ``retry`` and the core hands only those to the next
provider (or a later attempt), so nobody is texted twice.
"""

from __future__ import annotations

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
from hub.http import HttpClient, HttpSettings, json_error

if TYPE_CHECKING:
    import requests

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


class TwilioSettings(HttpSettings):
    """``providers.<name>`` settings of a ``twilio`` provider (HttpSettings adds ``timeout`` and ``connect_timeout``)."""

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
        base_url = (settings["api_base_url"] or "https://api.twilio.com").rstrip("/")
        self.account_path = f"/Accounts/{settings['account_sid']}"
        # A 404 names no resource of ours (the account is in the URL): the account SID or api_base_url is wrong.
        self.http = HttpClient.from_settings(
            "Twilio",
            settings,
            base_url=f"{base_url}/2010-04-01",
            auth=(settings["account_sid"], settings["auth_token"]),
            headers={"Accept": "application/json"},
            extract_error=json_error(code="code", message="message"),
            status_errors={404: ConfigurationError},
        )

    # --- notify ------------------------------------------------------------------------------------

    @hookimpl
    def notify(self, message: Message) -> NotifyResult:
        sender: dict[str, str] = (
            {"MessagingServiceSid": self.settings["messaging_service_sid"]}
            if self.settings["messaging_service_sid"]
            else {"From": self.settings["from_number"]}
        )
        if self.settings["status_callback_url"]:
            sender["StatusCallback"] = self.settings["status_callback_url"]
        results: list[RecipientResult] = []
        for recipient in message.recipients:
            outcome: RecipientResult | ProviderError
            form = {"To": recipient.address, "Body": message.text, **sender}
            try:
                response = self.http.post(f"{self.account_path}/Messages.json", data=form, check=False)
            except ProviderError as error:  # no connection, a timeout: hub.http mapped it
                outcome = error
            else:
                outcome = self._outcome(response, recipient.address, _accepted(results) > 0)
            if isinstance(outcome, ProviderError):
                return NotifyResult.cut_short(message, results, outcome)
            results.append(outcome)
        self.log.info("twilio: %s queued %d of %d recipient(s)", message.id, _accepted(results), len(results))
        return NotifyResult(results)

    def _outcome(self, response: requests.Response, address: str, sent_any: bool) -> RecipientResult | ProviderError:
        """One recipient's outcome from Twilio's answer, or the error that stops the batch."""
        error = self.http.error_for(response)
        if error is None:
            sid = _sid(response)
            # Accepted without a readable SID: it went out, so never "retry" it; no id to match callbacks by.
            return (
                RecipientResult(address, "queued", provider_message_id=sid) if sid else RecipientResult(address, "sent")
            )
        code = int(error.provider_code) if error.provider_code and error.provider_code.isdigit() else None
        if code in CONFIGURATION_ERROR_CODES:
            return ConfigurationError(error.message, provider_code=error.provider_code)
        if code in TRANSIENT_ERROR_CODES:
            return TransientError(error.message, provider_code=error.provider_code, retry_after=error.retry_after)
        if code in RECIPIENT_ERROR_CODES:
            return RecipientResult(address, "failed", error=error.message)
        if isinstance(error, PermanentError) and sent_any:
            # The same text went out to an earlier recipient: what Twilio refused here is this recipient's message.
            return RecipientResult(address, "failed", error=error.message)
        return error

    # --- health ------------------------------------------------------------------------------------

    @hookimpl
    def health(self) -> HealthResult:
        try:
            response = self.http.get(f"{self.account_path}.json", timeout=min(self.http.timeout, 5.0))
            account = response.json()
        except ProviderError as error:
            return HealthResult("error", error.message)
        except ValueError:
            return HealthResult("error", "Twilio's account answer is not JSON")
        status = account.get("status") or "unknown"
        name = account.get("friendly_name") or account.get("sid") or self.settings["account_sid"]
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
        self.http.close()


def _sid(response: requests.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    sid = body.get("sid") if isinstance(body, dict) else None
    return str(sid) if sid else None


def _accepted(results: list[RecipientResult]) -> int:
    return sum(1 for result in results if result.status in ("sent", "queued"))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(TwilioSms)
