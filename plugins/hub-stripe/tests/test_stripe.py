"""hub-stripe against :class:`hub_stripe.testing.StripeFake`: a stateful Stripe on 127.0.0.1 behind the contract
server, which checks every request the SDK sends (and every answer of the fake) against Stripe's official OpenAPI
description (``stripe.com.json``). Webhooks are signed as Stripe signs them and verified by the SDK."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import hub_stripe
import pytest
from hub_stripe import StripeGateway
from hub_stripe.testing import (
    ANSWER_LOST_METHOD,
    DEFAULT_API_KEY,
    PROCESSING_METHOD,
    StripeFake,
    event,
    sign_webhook,
    stripe_contract_server,
)

from hub.capabilities import PaymentLookup, PaymentRequest, RefundRequest, WebhookRequest
from hub.errors import (
    ConfigError,
    ConfigurationError,
    NotFoundError,
    OutcomeUnknownError,
    PermanentError,
    SignatureError,
    TransientError,
)
from hub.testing import ProviderHarness
from hub.testing.contract_server import ContractServer
from hub.testing.contracts import check_provider_class, run_contract
from hub.testing.rest import RestHub, rest_hub
from hub.testing.transport import check_concurrent_use, check_transport_errors, check_webhook_signatures

API = "/api/integrations"
OTHER_KEY = "sk_test_other_account"
WEBHOOK_SECRET = "whsec_hub_test_secret"
OLD_WEBHOOK_SECRET = "whsec_hub_old_secret"
STRIPE_ERROR_BODY = json.dumps({"error": {"type": "api_error", "message": "injected by the kit"}}).encode()


# ---------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def stripe_session_server() -> Iterator[tuple[ContractServer, StripeFake]]:
    with stripe_contract_server(api_keys=(DEFAULT_API_KEY, OTHER_KEY)) as (server, fake):
        yield server, fake


@pytest.fixture
def stripe_fake(stripe_session_server: tuple[ContractServer, StripeFake]) -> Iterator[StripeFake]:
    """The shared server, emptied for this test; every request must have met the description by the end (tests
    send a wrong key on purpose)."""
    server, fake = stripe_session_server
    with server.isolated(allow_refused={"unauthorized"}):
        yield fake


@pytest.fixture
def second_stripe() -> Iterator[StripeFake]:
    """A second Stripe server of its own (a backup gateway)."""
    with stripe_contract_server() as (_server, fake):
        yield fake


def settings(fake: StripeFake | None = None, url: str | None = None, **overrides: Any) -> dict[str, Any]:
    return {
        "api_key": DEFAULT_API_KEY,
        "webhook_secret": WEBHOOK_SECRET,
        "api_base": url or (fake.server.url if fake else "http://127.0.0.1:9"),
        "timeout": 5,
        **overrides,
    }


def build(harness: ProviderHarness, **settings_: Any) -> StripeGateway:
    if "stripe" not in harness.host.provider_types:
        harness.add_plugin(hub_stripe, "stripe")
    return harness.build("stripe", settings_)


def payment(
    amount: str = "25.00",
    currency: str = "USD",
    method: str | None = "pm_card_visa",
    *,
    capture: bool = True,
    key: str | None = None,
    tenant: str = "demo",
) -> PaymentRequest:
    payment_id = f"pay_{secrets.token_hex(6)}"
    return PaymentRequest(
        id=payment_id,
        tenant=tenant,
        amount=Decimal(amount),
        currency=currency,
        order_id="A-1001",
        payment_method=method,
        description="Order A-1001",
        metadata={"channel": "web"},
        idempotency_key=key or f"key-{payment_id}",
        capture=capture,
    )


def webhook_request(body: bytes, header: str | None) -> WebhookRequest:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    return WebhookRequest(
        url="https://hub.example.com/api/integrations/webhooks/stripe", headers=headers, body=body, form={}, query={}
    )


# ---------------------------------------------------------------------------------------------------------------
# Conformance and settings


def test_stripe_meets_the_pay_contract(provider_harness: ProviderHarness, stripe_fake: StripeFake) -> None:
    check_provider_class(StripeGateway)
    provider = build(provider_harness, **settings(stripe_fake))
    results = run_contract(
        provider_harness,
        provider,
        succeeding_method="pm_card_visa",
        declined_method="pm_card_chargeDeclined",
        processing_method=PROCESSING_METHOD,
        outcome_unknown_method=ANSWER_LOST_METHOD,
    )
    assert results["pay"].status == "succeeded"
    assert results["health"].ok
    # Every create carried an idempotency key, and went to the one account.
    creates = stripe_fake.requests_by_key(DEFAULT_API_KEY, "PostPaymentIntents")
    assert creates and all(request.header("idempotency-key") for request in creates)


def test_settings_are_checked_at_start_up(provider_harness: ProviderHarness) -> None:
    provider_harness.add_plugin(hub_stripe, "stripe")
    with pytest.raises(ConfigError, match="api_key.*STRIPE_API_KEY"):
        provider_harness.build("stripe", {}, environ={})
    with pytest.raises(ConfigError, match="statement_descriptor"):
        provider_harness.build("stripe", {"api_key": "sk_test_x", "statement_descriptor": "x" * 23})
    with pytest.raises(ConfigError, match="api_base"):
        provider_harness.build("stripe", {"api_key": "sk_test_x", "api_base": "not a url"})
    from_env = provider_harness.build(
        "stripe", {}, environ={"STRIPE_API_KEY": "sk_test_env", "STRIPE_WEBHOOK_SECRET": "whsec_env"}
    )
    assert (from_env.settings["api_key"], from_env.webhook_secrets) == ("sk_test_env", ["whsec_env"])
    assert (from_env.settings["api_base"], from_env.settings["webhook_tolerance"]) == ("https://api.stripe.com", 300)


def test_building_the_provider_touches_no_network(provider_harness: ProviderHarness, stripe_fake: StripeFake) -> None:
    provider = build(provider_harness, **settings(stripe_fake))
    assert provider._client is None and stripe_fake.server.requests == []


# ---------------------------------------------------------------------------------------------------------------
# Payments on the wire


def test_a_payment_is_one_confirmed_payment_intent_with_key_and_metadata(
    provider_harness: ProviderHarness, stripe_fake: StripeFake
) -> None:
    provider = build(provider_harness, **settings(stripe_fake, statement_descriptor="HUB SHOP"))
    made = payment("10.50")
    result = provider_harness.call(provider, "pay", payment=made)
    assert (result.status, result.raw_status, result.amount, result.amount_captured) == (
        "succeeded",
        "succeeded",
        Decimal("10.50"),
        Decimal("10.50"),
    )
    [request] = stripe_fake.server.requests
    assert request.operation_id == "PostPaymentIntents"
    assert request.header("idempotency-key") == made.idempotency_key
    assert request.auth is not None and request.auth.token == DEFAULT_API_KEY
    body = request.body
    assert (body["amount"], body["currency"], body["confirm"], body["payment_method"]) == (
        1050,
        "usd",
        True,
        "pm_card_visa",
    )
    assert body["metadata"] == {
        "channel": "web",
        "hub_payment_id": made.id,
        "hub_tenant": "demo",
        "hub_idempotency_key": made.idempotency_key,
        "order_id": "A-1001",
    }
    assert body["description"] == "Order A-1001" and body["statement_descriptor_suffix"] == "HUB SHOP"
    assert "capture_method" not in body
    assert result.transaction_id == stripe_fake.intents()[0]["id"]


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("1500", "JPY", 1500),  # zero-decimal, as ISO 4217
        ("12.340", "KWD", 12340),  # three-decimal, last digit 0
        ("5.120", "BHD", 5120),
        ("5", "ISK", 500),  # ISO: no decimals; Stripe: still two-decimal
        ("7000", "MGA", 7000),  # ISO: two decimals; Stripe: zero-decimal
        ("0.99", "EUR", 99),
    ],
)
def test_amounts_go_in_stripes_minor_units_and_come_back_exactly(
    provider_harness: ProviderHarness, stripe_fake: StripeFake, amount: str, currency: str, minor: int
) -> None:
    provider = build(provider_harness, **settings(stripe_fake))
    result = provider_harness.call(provider, "pay", payment=payment(amount, currency))
    sent = stripe_fake.server.requests[-1].body
    assert (sent["amount"], sent["currency"]) == (minor, currency.lower())
    assert result.amount == Decimal(amount) and result.currency == currency
    refund = provider_harness.call(
        provider,
        "refund",
        refund=RefundRequest(
            id="rf-1", tenant="demo", transaction_id=result.transaction_id, amount=Decimal(amount), currency=currency
        ),
    )
    assert stripe_fake.server.requests[-1].body["amount"] == minor and refund.amount == Decimal(amount)


@pytest.mark.parametrize(("amount", "currency"), [("1.234", "KWD"), ("0.005", "JOD"), ("10.50", "MGA")])
def test_amounts_stripe_cannot_take_are_refused_before_sending(
    provider_harness: ProviderHarness, stripe_fake: StripeFake, amount: str, currency: str
) -> None:
    provider = build(provider_harness, **settings(stripe_fake))
    with pytest.raises(PermanentError) as refused:
        provider_harness.call(provider, "pay", payment=payment(amount, currency))
    assert refused.value.field == "amount" and amount in refused.value.message
    assert stripe_fake.server.requests == []


@pytest.mark.parametrize(
    ("method", "code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_visa_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card"),
    ],
)
def test_a_decline_carries_stripes_decline_code(
    provider_harness: ProviderHarness, stripe_fake: StripeFake, method: str, code: str
) -> None:
    provider = build(provider_harness, **settings(stripe_fake))
    made = payment(method=method)
    with pytest.raises(PermanentError) as declined:
        provider_harness.call(provider, "pay", payment=made)
    assert declined.value.provider_code == code and not isinstance(declined.value, NotFoundError)
    # The declined PaymentIntent is found as failed (requires_payment_method after a decline).
    found = provider_harness.call(
        provider,
        "payment_status",
        lookup=PaymentLookup(tenant="demo", payment_id=made.id, idempotency_key=made.idempotency_key),
    )
    assert (found.status, found.raw_status) == ("failed", "requires_payment_method")


def test_3ds_and_unknown_payment_methods(provider_harness: ProviderHarness, stripe_fake: StripeFake) -> None:
    provider = build(provider_harness, **settings(stripe_fake))
    action = provider_harness.call(provider, "pay", payment=payment(method="pm_card_authenticationRequired"))
    assert (action.status, action.raw_status) == ("requires_action", "requires_action")
    with pytest.raises(PermanentError) as unknown:
        provider_harness.call(provider, "pay", payment=payment(method="pm_does_not_exist"))
    assert unknown.value.provider_code == "resource_missing" and not isinstance(unknown.value, NotFoundError)
    assert unknown.value.field == "payment_method"


def test_an_authorisation_is_captured_in_part_and_refunds_follow_the_latest_charge(
    provider_harness: ProviderHarness, stripe_fake: StripeFake
) -> None:
    from hub.capabilities import CaptureRequest

    provider = build(provider_harness, **settings(stripe_fake))
    authorised = provider_harness.call(provider, "pay", payment=payment("40.00", capture=False))
    assert authorised.status == "requires_capture"
    assert stripe_fake.server.requests[-1].body["capture_method"] == "manual"
    captured = provider_harness.call(
        provider,
        "capture",
        capture=CaptureRequest(
            id="cap-1",
            tenant="demo",
            transaction_id=authorised.transaction_id,
            amount=Decimal("30.00"),
            currency="USD",
            idempotency_key="cap-key-1",
        ),
    )
    sent = stripe_fake.server.requests[-1]
    assert sent.body["amount_to_capture"] == 3000 and sent.header("idempotency-key") == "cap-key-1"
    assert (captured.status, captured.amount, captured.amount_captured) == (
        "succeeded",
        Decimal("40.00"),
        Decimal("30.00"),
    )

    def refund(amount: str | None, key: str) -> Any:
        return provider_harness.call(
            provider,
            "refund",
            refund=RefundRequest(
                id=f"rf-{key}",
                tenant="demo",
                transaction_id=authorised.transaction_id,
                amount=Decimal(amount) if amount else None,
                currency="USD",
                reason="requested_by_customer",
                idempotency_key=key,
            ),
        )

    first = refund("10.00", "rf-key-1")
    assert refund("10.00", "rf-key-1").refund_id == first.refund_id  # the same key: Stripe replays, no second refund
    assert len(stripe_fake.refunds()) == 1
    with pytest.raises(PermanentError) as over:
        refund("20.01", "rf-key-2")
    assert over.value.field == "amount" and "greater than unrefunded amount" in over.value.message
    lookup = PaymentLookup(tenant="demo", payment_id="x", transaction_id=authorised.transaction_id)
    found = provider_harness.call(provider, "payment_status", lookup=lookup)
    assert (found.status, found.amount_refunded, found.amount_captured) == (
        "partially_refunded",
        Decimal("10.00"),
        Decimal("30.00"),
    )
    assert refund(None, "rf-key-3").amount == Decimal("20.00")
    assert provider_harness.call(provider, "payment_status", lookup=lookup).status == "refunded"


def test_a_lost_answer_is_found_by_search_without_a_transaction_id(
    provider_harness: ProviderHarness, stripe_fake: StripeFake
) -> None:
    provider = build(provider_harness, **settings(stripe_fake))
    made = payment(method=ANSWER_LOST_METHOD)
    with pytest.raises(OutcomeUnknownError):
        provider_harness.call(provider, "pay", payment=made)
    with pytest.raises(OutcomeUnknownError):  # Stripe replays the saved 500 for the same key
        provider_harness.call(provider, "pay", payment=made)
    assert len(stripe_fake.intents()) == 1  # charged once
    by_id = provider_harness.call(provider, "payment_status", lookup=PaymentLookup(tenant="demo", payment_id=made.id))
    assert by_id.transaction_id == stripe_fake.intents()[0]["id"] and by_id.status == "succeeded"
    searched = stripe_fake.server.requests[-1]
    assert searched.operation_id == "GetPaymentIntentsSearch"
    assert searched.query["query"] == f"metadata['hub_tenant']:'demo' AND metadata['hub_payment_id']:'{made.id}'"
    # Another tenant finds nothing, even on the same account.
    assert (
        provider_harness.call(provider, "payment_status", lookup=PaymentLookup(tenant="acme", payment_id=made.id))
        is None
    )
    other = PaymentLookup(tenant="acme", payment_id=made.id, transaction_id=by_id.transaction_id)
    assert provider_harness.call(provider, "payment_status", lookup=other) is None


def test_unknown_transactions(provider_harness: ProviderHarness, stripe_fake: StripeFake) -> None:
    from hub.capabilities import CancelRequest, CaptureRequest

    provider = build(provider_harness, **settings(stripe_fake))
    lookup = PaymentLookup(tenant="demo", payment_id="p", transaction_id="pi_unknown")
    assert provider_harness.call(provider, "payment_status", lookup=lookup) is None
    with pytest.raises(NotFoundError):
        provider_harness.call(
            provider,
            "refund",
            refund=RefundRequest(id="r", tenant="demo", transaction_id="pi_unknown", amount=None, currency="USD"),
        )
    with pytest.raises(NotFoundError):
        provider_harness.call(
            provider,
            "capture",
            capture=CaptureRequest(id="c", tenant="demo", transaction_id="pi_unknown", amount=None, currency="USD"),
        )
    with pytest.raises(NotFoundError):
        provider_harness.call(
            provider, "cancel", cancel=CancelRequest(id="c", tenant="demo", transaction_id="pi_unknown")
        )


def test_a_rejected_key_is_a_configuration_error_without_the_key(
    provider_harness: ProviderHarness, stripe_fake: StripeFake
) -> None:
    provider = build(provider_harness, **settings(stripe_fake, api_key="sk_test_revoked_key"))
    with pytest.raises(ConfigurationError) as refused:
        provider_harness.call(provider, "pay", payment=payment())
    assert "sk_test_revoked_key" not in str(refused.value)
    health = provider_harness.call(provider, "health")
    assert health.status == "error" and "sk_test_revoked_key" not in health.message
    assert stripe_fake.intents() == []


# ---------------------------------------------------------------------------------------------------------------
# Transport and threads


def builder(harness: ProviderHarness) -> Any:
    return lambda url, timeout: build(harness, **settings(url=url, timeout=timeout))


def test_transport_errors_follow_stripes_failover_rule(provider_harness: ProviderHarness) -> None:
    raised = check_transport_errors(
        provider_harness,
        builder(provider_harness),
        call=lambda provider: provider_harness.call(provider, "pay", payment=payment()),
        sent_error=OutcomeUnknownError,
        server_error=OutcomeUnknownError,  # "treat the result of a 500 as indeterminate"
        error_body=STRIPE_ERROR_BODY,
    )
    assert raised["HTTP 429 with Retry-After: 7"].retry_after == 7
    assert type(raised["the service down"]) is TransientError


def test_stripe_should_retry_decides_a_5xx(provider_harness: ProviderHarness) -> None:
    from hub.testing.transport import Fault, FaultServer

    with FaultServer() as server:
        provider = build(provider_harness, **settings(url=server.url, timeout=2))
        cases = [
            (Fault(status=500, body=STRIPE_ERROR_BODY, headers={"Stripe-Should-Retry": "true"}), TransientError),
            (Fault(status=500, body=STRIPE_ERROR_BODY, headers={"Stripe-Should-Retry": "false"}), OutcomeUnknownError),
            (Fault(status=503, body=STRIPE_ERROR_BODY), OutcomeUnknownError),
            (
                Fault(status=503, body=STRIPE_ERROR_BODY, headers={"Retry-After": "3", "Stripe-Should-Retry": "false"}),
                OutcomeUnknownError,
            ),
            (Fault(status=409, body=STRIPE_ERROR_BODY), OutcomeUnknownError),
        ]
        for fault, expected in cases:
            server.reset(fault)
            with pytest.raises(expected) as raised:
                provider_harness.call(provider, "pay", payment=payment())
            assert type(raised.value) is expected, fault


def test_concurrent_payments_from_worker_threads(provider_harness: ProviderHarness, stripe_fake: StripeFake) -> None:
    results = check_concurrent_use(
        provider_harness,
        builder(provider_harness),
        stripe_fake.server.url,
        call=lambda provider, number: provider_harness.call(provider, "pay", payment=payment(f"{number + 1}.00")),
    )
    assert sorted(result.amount for result in results) == [Decimal(f"{n}.00") for n in range(1, 25)]
    assert {result.transaction_id for result in results} == {intent["id"] for intent in stripe_fake.intents()}


# ---------------------------------------------------------------------------------------------------------------
# Webhooks


def intent_object(fake_intent: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**fake_intent, **changes}


def test_webhook_signatures_valid_forged_tampered_stale_and_replayed(
    provider_harness: ProviderHarness, stripe_fake: StripeFake
) -> None:
    provider = build(provider_harness, **settings(stripe_fake))
    body = event("payment_intent.succeeded", {"id": "pi_123", "object": "payment_intent", "status": "succeeded"})

    def sign(*, timestamp: float, forged: bool) -> WebhookRequest:
        return webhook_request(body, sign_webhook(body, "whsec_forged" if forged else WEBHOOK_SECRET, int(timestamp)))

    [found] = check_webhook_signatures(provider_harness, provider, sign, tolerance=300)
    assert (found.reference, found.status, found.type) == ("pi_123", "succeeded", "payment_intent.succeeded")
    assert found.event_id == json.loads(body)["id"]
    with pytest.raises(SignatureError, match="missing"):
        provider_harness.call(provider, "handle_webhook", webhook=webhook_request(body, None))


def test_webhooks_verify_with_any_secret_of_a_rotation(
    provider_harness: ProviderHarness, stripe_fake: StripeFake
) -> None:
    provider = build(
        provider_harness,
        **settings(stripe_fake, webhook_secret=None, webhook_secrets=[OLD_WEBHOOK_SECRET, WEBHOOK_SECRET]),
    )
    body = event("payment_intent.canceled", {"id": "pi_9", "object": "payment_intent", "status": "canceled"})
    for secret in (OLD_WEBHOOK_SECRET, WEBHOOK_SECRET):
        [found] = provider_harness.call(
            provider, "handle_webhook", webhook=webhook_request(body, sign_webhook(body, secret))
        )
        assert found.status == "canceled"
    # During a rotation Stripe sends one v1 per secret; one matching is enough.
    now = int(time.time())
    old = sign_webhook(body, OLD_WEBHOOK_SECRET, now)
    other = sign_webhook(body, "whsec_unrelated", now).split(",")[1]
    both = f"{old.split(',')[0]},{other},{old.split(',')[1]}"
    assert provider_harness.call(provider, "handle_webhook", webhook=webhook_request(body, both))
    # The SDK's own check agrees with sign_webhook.
    import stripe

    assert stripe.Webhook.construct_event(body, sign_webhook(body, WEBHOOK_SECRET), WEBHOOK_SECRET).id


def test_webhook_events_map_to_the_hubs_statuses(provider_harness: ProviderHarness, stripe_fake: StripeFake) -> None:
    provider = build(provider_harness, **settings(stripe_fake))
    paid = provider_harness.call(provider, "pay", payment=payment("30.00"))
    intent = stripe_fake.intent(paid.transaction_id)
    charge = stripe_fake.charge(intent["latest_charge"])

    def handle(event_type: str, obj: dict[str, Any]) -> Any:
        body = event(event_type, obj)
        return provider_harness.call(
            provider, "handle_webhook", webhook=webhook_request(body, sign_webhook(body, WEBHOOK_SECRET))
        )

    cases = {
        "payment_intent.succeeded": ("succeeded", intent),
        "payment_intent.processing": ("processing", {**intent, "status": "processing"}),
        "payment_intent.amount_capturable_updated": ("requires_capture", {**intent, "status": "requires_capture"}),
        "payment_intent.canceled": ("canceled", {**intent, "status": "canceled"}),
        "payment_intent.payment_failed": (
            "failed",
            {
                **intent,
                "status": "requires_payment_method",
                "last_payment_error": {"decline_code": "insufficient_funds"},
            },
        ),
    }
    for event_type, (status, obj) in cases.items():
        [found] = handle(event_type, obj)
        assert (found.reference, found.status, found.type) == (paid.transaction_id, status, event_type)
    assert (
        handle("payment_intent.payment_failed", cases["payment_intent.payment_failed"][1])[0].details["decline_code"]
        == "insufficient_funds"
    )
    [partial] = handle("charge.refunded", {**charge, "amount_refunded": 1000, "refunded": False})
    assert (partial.reference, partial.status, partial.details["amount_refunded"]) == (
        paid.transaction_id,
        "partially_refunded",
        "10.00",
    )
    [full] = handle("charge.refunded", {**charge, "amount_refunded": 3000, "refunded": True})
    assert (full.status, full.details["amount_refunded"]) == ("refunded", "30.00")
    [disputed] = handle("charge.dispute.created", stripe_fake.dispute(paid.transaction_id))
    assert (disputed.reference, disputed.status) == (paid.transaction_id, "disputed")
    assert handle("customer.created", {"id": "cus_1", "object": "customer"}) == []


# ---------------------------------------------------------------------------------------------------------------
# Through the hub's REST API


def make_hub(tmp_path: Path, providers: dict[str, Any], **config: Any) -> RestHub:
    services = {"payment": {"providers": list(providers)}}
    return rest_hub(tmp_path, plugins=[(hub_stripe, "stripe")], providers=providers, services=services, **config)


def post_webhook(api: RestHub, provider: str, body: bytes, secret: str = WEBHOOK_SECRET, **sign: Any) -> Any:
    return api.client.post(
        f"{API}/webhooks/{provider}",
        data=body,
        headers={"Stripe-Signature": sign_webhook(body, secret, **sign), "Content-Type": "application/json"},
    )


def test_hub_pay_webhook_status_and_refunds(tmp_path: Path, stripe_fake: StripeFake) -> None:
    with make_hub(tmp_path, {"stripe": {"type": "stripe", **settings(stripe_fake, webhook_tolerance=300)}}) as api:
        created = api.post(
            f"{API}/payments",
            json={"amount": "50.00", "currency": "USD", "orderId": "A-77", "paymentMethod": PROCESSING_METHOD},
            headers={"Idempotency-Key": "order-A-77"},
        )
        assert created.status_code == 202, created.get_json()
        paid = created.get_json()["data"]
        assert (paid["status"], paid["gateway"]) == ("processing", "stripe")
        intent_id = paid["transactionId"]
        sent = stripe_fake.requests_by_key(DEFAULT_API_KEY, "PostPaymentIntents")[0]
        assert sent.body["metadata"]["hub_payment_id"] == paid["paymentId"] and sent.header("idempotency-key")

        # Refunds wait for the money.
        assert api.post(f"{API}/payments/{paid['paymentId']}/refunds", json={"amount": "5.00"}).status_code == 422

        # Stripe settles the debit and says so.
        settled = stripe_fake.settle(intent_id)
        body = event("payment_intent.succeeded", settled, event_id="evt_settled_1")
        accepted = post_webhook(api, "stripe", body)
        assert accepted.status_code == 200 and accepted.get_json()["data"] == {
            "received": 1,
            "duplicates": 0,
            "updated": 1,
        }
        forged = post_webhook(
            api, "stripe", event("payment_intent.canceled", {**settled, "status": "canceled"}), "whsec_x"
        )
        assert forged.status_code == 401
        stale = post_webhook(
            api,
            "stripe",
            event("payment_intent.canceled", {**settled, "status": "canceled"}),
            timestamp=int(time.time()) - 900,
        )
        assert stale.status_code == 401
        replayed = post_webhook(api, "stripe", body)
        assert replayed.get_json()["data"] == {"received": 1, "duplicates": 1, "updated": 0}

        view = api.get(f"{API}/payments/{paid['paymentId']}").get_json()["data"]
        assert (view["status"], view["transactionId"]) == ("succeeded", intent_id)
        # The payment.succeeded event was queued for the publish capability.
        events = [
            r
            for r in api.hub.list_records("demo", "event", None, 50, 0)
            if r.payload["eventType"] == "payment.succeeded"
        ]
        assert len(events) == 1 and events[0].payload["data"]["paymentId"] == paid["paymentId"]

        partial = api.post(f"{API}/payments/{paid['paymentId']}/refunds", json={"amount": "20.00"})
        assert partial.status_code == 201, partial.get_json()
        over = api.post(f"{API}/payments/{paid['paymentId']}/refunds", json={"amount": "30.01"})
        assert over.status_code == 422 and "amount" in json.dumps(over.get_json())
        assert len(stripe_fake.refunds()) == 1  # the hub refused it without asking Stripe
        rest = api.post(f"{API}/payments/{paid['paymentId']}/refunds", json={})
        assert rest.status_code == 201 and rest.get_json()["data"]["amount"] == 30.0
        view = api.get(f"{API}/payments/{paid['paymentId']}").get_json()["data"]
        assert (view["status"], view["amountRefunded"]) == ("refunded", 50.0)
        charge = stripe_fake.charge(stripe_fake.intent(intent_id)["latest_charge"])
        assert charge["amount_refunded"] == 5000

        # Stripe's charge.refunded after the fact changes nothing more; a dispute moves it on.
        assert post_webhook(api, "stripe", event("charge.refunded", charge)).status_code == 200
        disputed = post_webhook(api, "stripe", event("charge.dispute.created", stripe_fake.dispute(intent_id)))
        assert disputed.get_json()["data"]["updated"] == 1


def test_hub_timeout_after_the_charge_reconciles_on_the_same_gateway(
    tmp_path: Path, stripe_fake: StripeFake, second_stripe: StripeFake
) -> None:
    providers = {
        "primary": {"type": "stripe", **settings(stripe_fake, timeout=0.5)},
        "backup": {"type": "stripe", **settings(second_stripe, timeout=0.5)},
    }
    with make_hub(tmp_path, providers) as api:
        # Every answer to the create (the first try and the core's retry with the same key) arrives after the
        # client's 0.5 s timeout, though Stripe made the payment at the first.
        stripe_fake.server.delay_answers("PostPaymentIntents", 2.0, times=2)
        response = api.post(
            f"{API}/payments",
            json={"amount": "19.99", "currency": "EUR", "paymentMethod": "pm_card_visa"},
            headers={"Idempotency-Key": "checkout-42"},
        )
        assert response.status_code in (201, 202), response.get_json()
        paid = response.get_json()["data"]
        assert len(stripe_fake.intents()) == 1  # charged once, though no answer arrived in time
        intent = stripe_fake.intents()[0]
        creates = stripe_fake.requests_by_key(DEFAULT_API_KEY, "PostPaymentIntents")
        assert len(creates) == 2 and len({request.header("idempotency-key") for request in creates}) == 1
        # The hub found the payment through payment_status (the search by metadata), not by charging again.
        searches = stripe_fake.requests_by_key(DEFAULT_API_KEY, "GetPaymentIntentsSearch")
        assert searches and intent["metadata"]["hub_idempotency_key"] in searches[0].query["query"]
        view = api.get(f"{API}/payments/{paid['paymentId']}").get_json()["data"]
        assert (view["status"], view["transactionId"], view["gateway"]) == ("succeeded", intent["id"], "primary")
        assert second_stripe.server.requests == []  # never failed over


def test_hub_fails_over_from_a_stopped_stripe_to_the_backup(
    tmp_path: Path, dead_url: str, second_stripe: StripeFake
) -> None:
    providers = {
        "primary": {"type": "stripe", **settings(url=dead_url)},
        "backup": {"type": "stripe", **settings(second_stripe)},
    }
    with make_hub(tmp_path, providers) as api:
        response = api.post(
            f"{API}/payments", json={"amount": "8.00", "currency": "USD", "paymentMethod": "pm_card_visa"}
        )
        assert response.status_code == 201, response.get_json()
        assert response.get_json()["data"]["gateway"] == "backup"
        assert len(second_stripe.intents()) == 1


def test_a_tenant_with_its_own_stripe_key_pays_into_its_own_account(tmp_path: Path, stripe_fake: StripeFake) -> None:
    with make_hub(
        tmp_path,
        {"stripe": {"type": "stripe", **settings(stripe_fake)}},
        tenants={"acme": {"providers": {"stripe": {"api_key": OTHER_KEY}}}},
    ) as api:
        shared = api.post(
            f"{API}/payments", json={"amount": "3.00", "currency": "USD", "paymentMethod": "pm_card_visa"}
        )
        assert shared.status_code == 201, shared.get_json()
        acme_headers = {"Authorization": f"Bearer {api.hub.tokens.create('acme')[1]}", "X-Tenant-ID": "acme"}
        own = api.client.post(
            f"{API}/payments",
            json={"amount": "4.00", "currency": "USD", "paymentMethod": "pm_card_visa"},
            headers=acme_headers,
        )
        assert own.status_code == 201, own.get_json()
        refund = api.client.post(
            f"{API}/payments/{own.get_json()['data']['paymentId']}/refunds", json={}, headers=acme_headers
        )
        assert refund.status_code == 201, refund.get_json()
    assert [i["amount"] for i in stripe_fake.intents(DEFAULT_API_KEY)] == [300]
    assert [i["amount"] for i in stripe_fake.intents(OTHER_KEY)] == [400]
    assert {r.operation_id for r in stripe_fake.requests_by_key(OTHER_KEY)} == {"PostPaymentIntents", "PostRefunds"}
    assert stripe_fake.refunds(DEFAULT_API_KEY) == []


# ---------------------------------------------------------------------------------------------------------------
# The fake itself, as a user's test would drive it (the bare SDK)


def test_the_fake_keeps_idempotency_per_api_key_as_stripe_does(stripe_fake: StripeFake) -> None:
    import stripe

    def client(key: str) -> Any:
        return stripe.StripeClient(key, base_addresses={"api": stripe_fake.server.url}, max_network_retries=0)

    params = {"amount": 1200, "currency": "usd", "confirm": True, "payment_method": "pm_card_visa"}
    first = client(DEFAULT_API_KEY).v1.payment_intents.create(params=params, options={"idempotency_key": "k-1"})
    again = client(DEFAULT_API_KEY).v1.payment_intents.create(params=params, options={"idempotency_key": "k-1"})
    other_account = client(OTHER_KEY).v1.payment_intents.create(params=params, options={"idempotency_key": "k-1"})
    assert first.id == again.id != other_account.id
    assert stripe_fake.server.requests[1].status == 200 and len(stripe_fake.intents(DEFAULT_API_KEY)) == 1
    with pytest.raises(stripe.IdempotencyError):
        client(DEFAULT_API_KEY).v1.payment_intents.create(
            params={**params, "amount": 1300}, options={"idempotency_key": "k-1"}
        )
    with pytest.raises(stripe.InvalidRequestError) as hidden:  # accounts do not see each other's objects
        client(OTHER_KEY).v1.payment_intents.retrieve(first.id)
    assert hidden.value.http_status == 404
    declined = {**params, "payment_method": "pm_card_chargeDeclined"}
    for _ in range(2):  # a decline is saved and replayed too
        with pytest.raises(stripe.CardError) as error:
            client(DEFAULT_API_KEY).v1.payment_intents.create(params=declined, options={"idempotency_key": "k-2"})
        assert error.value.code == "card_declined"
    assert len(stripe_fake.intents(DEFAULT_API_KEY)) == 2
    with pytest.raises(stripe.AuthenticationError):
        client("sk_test_unknown").v1.payment_intents.retrieve(first.id)


def test_the_testing_module_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = "import sys, hub_stripe, hub_stripe.testing; print(sorted(m for m in ('stripe', 'pytest', 'hub.testing', 'werkzeug') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
