"""hub-paypal against a stateful PayPal (hub_paypal.testing.PayPalFake) that checks every request against PayPal's
official Orders v2 description, plus path items written from PayPal's API reference for the token, the payments
(authorization capture/void, capture refund) and webhook verification -- see hub_paypal/testing.py."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import hub_paypal
import pytest
import requests
from hub_paypal import PayPalGateway, paypal_amount
from hub_paypal.testing import (
    BACKUP_CLIENT_ID,
    BACKUP_CLIENT_SECRET,
    CLIENT_ID,
    CLIENT_SECRET,
    WEBHOOK_ID,
    PayPalFake,
    paypal_contract_server,
)

from hub.capabilities import PaymentLookup, PaymentRequest, RefundRequest, WebhookRequest
from hub.errors import (
    ConfigError,
    ConfigurationError,
    OutcomeUnknownError,
    PermanentError,
    SignatureError,
    TransientError,
)
from hub.testing import ProviderHarness
from hub.testing.contracts import check_provider_class, run_contract
from hub.testing.rest import RestHub, rest_hub
from hub.testing.transport import (
    Fault,
    FaultServer,
    check_concurrent_use,
    check_transport_errors,
    check_webhook_signatures,
)

API = "/api/integrations"


# ---------------------------------------------------------------------------------------------------------------
# Servers and builders


@pytest.fixture(scope="session")
def paypal_session() -> Iterator[PayPalFake]:
    with paypal_contract_server() as fake:
        yield fake


@pytest.fixture(scope="session")
def backup_session() -> Iterator[PayPalFake]:
    with paypal_contract_server() as fake:
        yield fake


@pytest.fixture
def paypal(paypal_session: PayPalFake) -> Iterator[PayPalFake]:
    """The shared fake, emptied; at teardown every request must have met the description (a wrong secret and
    expired tokens are sent on purpose: ``unauthorized`` is allowed)."""
    with paypal_session.server.isolated(allow_refused={"unauthorized"}):
        yield paypal_session


@pytest.fixture
def backup(backup_session: PayPalFake) -> Iterator[PayPalFake]:
    with backup_session.server.isolated(allow_refused={"unauthorized"}):
        yield backup_session


def settings(fake: PayPalFake | None = None, url: str | None = None, **overrides: Any) -> dict[str, Any]:
    return {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "api_base": url or (fake.url if fake else "http://127.0.0.1:9"),
        "webhook_id": WEBHOOK_ID,
        "cert_hosts": ["127.0.0.1"],
        "timeout": 5,
        **overrides,
    }


def build(harness: ProviderHarness, **settings_: Any) -> PayPalGateway:
    if "paypal" not in harness.host.provider_types:
        harness.add_plugin(hub_paypal, "paypal")
    return harness.build("paypal", settings_)


def payment(
    amount: str = "25.00", currency: str = "USD", method: str | None = "tok-visa", *, capture: bool = True, **extra: Any
) -> PaymentRequest:
    return PaymentRequest(
        id=extra.pop("id", f"pay_{secrets.token_hex(6)}"),
        tenant="demo",
        amount=Decimal(amount),
        currency=currency,
        order_id=extra.pop("order_id", f"order-{secrets.token_hex(4)}"),
        payment_method=method,
        description="Hub test",
        idempotency_key=extra.pop("idempotency_key", f"key-{secrets.token_hex(8)}"),
        capture=capture,
        **extra,
    )


def sent_units(fake: PayPalFake) -> list[dict[str, Any]]:
    return [r.body["purchase_units"][0] for r in fake.requests_to("orders.create") if r.status and r.status < 300]


# ---------------------------------------------------------------------------------------------------------------
# Conformance


def test_paypal_meets_the_pay_contract(provider_harness: ProviderHarness, paypal: PayPalFake) -> None:
    check_provider_class(PayPalGateway)
    provider = build(provider_harness, **settings(paypal))
    results = run_contract(
        provider_harness,
        provider,
        succeeding_method="tok-visa",
        declined_method="tok-declined",
        processing_method="tok-pending",
        outcome_unknown_method="tok-lost-answer",
    )
    assert results["pay"].status == "succeeded" and results["health"].ok
    # PayPal-Request-Id went with every call that moves money.
    money_moving = ("orders.create", "hub.authorizations.capture", "hub.authorizations.void", "hub.captures.refund")
    calls = [r for r in paypal.server.requests if r.operation_id in money_moving]
    assert calls and all(r.header("paypal-request-id") for r in calls)
    assert {r.operation_id for r in calls} == set(money_moving)
    assert paypal.server.state["tokens_issued"] <= 2  # cached (health asks for a fresh one)


def test_settings_are_checked_at_start_up(provider_harness: ProviderHarness) -> None:
    provider_harness.add_plugin(hub_paypal, "paypal")
    with pytest.raises(ConfigError, match="client_secret.*PAYPAL_CLIENT_SECRET"):
        provider_harness.build("paypal", {"client_id": "x"}, environ={})
    with pytest.raises(ConfigError, match="webhook_verification"):
        provider_harness.build("paypal", {**settings(), "webhook_verification": "trust-me"})
    from_env = provider_harness.build(
        "paypal",
        {},
        environ={"PAYPAL_CLIENT_ID": CLIENT_ID, "PAYPAL_CLIENT_SECRET": CLIENT_SECRET, "PAYPAL_WEBHOOK_ID": WEBHOOK_ID},
    )
    assert from_env.settings["client_secret"] == CLIENT_SECRET and from_env.settings["webhook_id"] == WEBHOOK_ID
    assert from_env.settings["api_base"] == "https://api-m.paypal.com"


def test_building_the_provider_touches_no_network(provider_harness: ProviderHarness, paypal: PayPalFake) -> None:
    build(provider_harness, **settings(paypal))
    assert paypal.server.requests == []


def test_an_invalid_body_really_is_refused_despite_the_js_incompatible_patterns() -> None:
    """Three ``pattern`` values of PayPal's file are not valid JavaScript unicode regexes (some validators then skip
    the whole body). Here each compiles (Python ``re``) and applies: the e-mail pattern is one of the three."""
    with paypal_contract_server() as fake:
        assert fake.server.document.skipped_patterns == set()
        token = requests.post(
            f"{fake.url}/v1/oauth2/token", data={"grant_type": "client_credentials"}, auth=(CLIENT_ID, CLIENT_SECRET)
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}", "PayPal-Request-Id": "r-1"}
        valid = {
            "intent": "CAPTURE",
            "purchase_units": [{"amount": {"currency_code": "USD", "value": "10.00"}}],
            "payment_source": {"paypal": {"vault_id": "tok-visa", "email_address": "payer@example.com"}},
        }
        assert requests.post(f"{fake.url}/v2/checkout/orders", json=valid, headers=headers).status_code == 201
        invalid_bodies = [
            {**valid, "intent": "BUY"},
            {"intent": "CAPTURE"},
            {**valid, "purchase_units": [{"amount": {"currency_code": "USD", "value": "ten"}}]},
            {**valid, "payment_source": {"card": {"vault_id": "not a vault id!"}}},
            {**valid, "payment_source": {"paypal": {"vault_id": "tok-visa", "email_address": "not-an-email"}}},
        ]
        for number, invalid in enumerate(invalid_bodies):
            answer = requests.post(
                f"{fake.url}/v2/checkout/orders",
                json=invalid,
                headers={**headers, "PayPal-Request-Id": f"bad-{number}"},
            )
            assert answer.status_code == 400, (invalid, answer.text)
            assert answer.json()["name"] == "INVALID_REQUEST" and answer.json()["details"][0]["issue"]
        # The path items written from the reference are checked as strictly.
        refund = requests.post(f"{fake.url}/v2/payments/captures/X/refund", json={"amout": {}}, headers=headers)
        assert refund.status_code == 400 and "amout" in refund.text
        assert len(fake.charges()) == 1


# ---------------------------------------------------------------------------------------------------------------
# Paying


def test_the_order_carries_amount_ids_and_the_vaulted_source(
    provider_harness: ProviderHarness, paypal: PayPalFake
) -> None:
    provider = build(provider_harness, **settings(paypal))
    request = payment("10.50", order_id="A-1001", idempotency_key="idem-1")
    result = provider_harness.call(provider, "pay", payment=request)
    assert (result.status, result.raw_status, result.amount, result.currency) == (
        "succeeded",
        "COMPLETED",
        Decimal("10.50"),
        "USD",
    )
    [create] = paypal.requests_to("orders.create")
    assert create.header("paypal-request-id") == "idem-1"
    assert create.header("prefer") == "return=representation"
    assert create.body["intent"] == "CAPTURE"
    assert create.body["payment_source"] == {"card": {"vault_id": "tok-visa"}}
    unit = create.body["purchase_units"][0]
    assert unit == {
        "reference_id": "A-1001",
        "invoice_id": "A-1001",
        "custom_id": request.id,
        "description": "Hub test",
        "amount": {"currency_code": "USD", "value": "10.50"},
    }
    [order] = paypal.charges()
    assert result.transaction_id == order["id"]
    assert result.details["capture_id"] == order["purchase_units"][0]["payments"]["captures"][0]["id"]


@pytest.mark.parametrize(
    ("amount", "currency", "wire"),
    [("1500", "JPY", "1500"), ("1.234", "KWD", "1.234"), ("1500", "HUF", "1500"), ("0.50", "EUR", "0.50")],
)
def test_amounts_go_in_the_currencys_decimals(
    provider_harness: ProviderHarness, paypal: PayPalFake, amount: str, currency: str, wire: str
) -> None:
    provider = build(provider_harness, **settings(paypal))
    result = provider_harness.call(provider, "pay", payment=payment(amount, currency))
    assert [u["amount"] for u in sent_units(paypal)] == [{"currency_code": currency, "value": wire}]
    assert result.amount == Decimal(amount) and result.currency == currency
    refund = provider_harness.call(
        provider,
        "refund",
        refund=RefundRequest("re-1", "demo", result.transaction_id, Decimal(amount), currency, idempotency_key="r1"),
    )
    assert refund.amount == Decimal(amount)
    assert paypal.requests_to("hub.captures.refund")[0].body["amount"] == {"currency_code": currency, "value": wire}


def test_an_amount_paypal_cannot_carry_is_refused_before_sending(
    provider_harness: ProviderHarness, paypal: PayPalFake
) -> None:
    provider = build(provider_harness, **settings(paypal))
    with pytest.raises(PermanentError) as refused:  # ISO 4217 gives HUF two decimals; PayPal takes none
        provider_harness.call(provider, "pay", payment=payment("10.50", "HUF"))
    assert refused.value.provider_code == "DECIMAL_PRECISION"
    assert paypal.requests_to("orders.create") == []
    assert paypal_amount(Decimal("7"), "jpy") == {"currency_code": "JPY", "value": "7"}


@pytest.mark.parametrize(
    ("method", "code"), [("tok-declined", "INSTRUMENT_DECLINED"), ("tok-refused", "TRANSACTION_REFUSED")]
)
def test_a_decline_carries_paypals_issue(
    provider_harness: ProviderHarness, paypal: PayPalFake, method: str, code: str
) -> None:
    provider = build(provider_harness, **settings(paypal))
    with pytest.raises(PermanentError) as declined:
        provider_harness.call(provider, "pay", payment=payment(method=method))
    assert declined.value.provider_code == code and "UNPROCESSABLE" not in declined.value.message
    assert "debug_id" in declined.value.message
    assert paypal.charges() == []


def test_a_declined_capture_in_a_created_order_is_a_decline(
    provider_harness: ProviderHarness, paypal: PayPalFake
) -> None:
    provider = build(provider_harness, **settings(paypal))
    with pytest.raises(PermanentError) as declined:
        provider_harness.call(provider, "pay", payment=payment(method="tok-capture-declined"))
    assert declined.value.provider_code == "5120"  # the processor's response code


def test_card_numbers_are_never_sent(provider_harness: ProviderHarness, paypal: PayPalFake) -> None:
    provider = build(provider_harness, **settings(paypal))
    with pytest.raises(PermanentError, match="vaulted payment token"):
        provider_harness.call(provider, "pay", payment=payment(method="4111 1111 1111 1111"))
    assert paypal.server.requests == []


def test_an_approved_order_is_captured_or_authorized_with_its_own_request_id(
    provider_harness: ProviderHarness, paypal: PayPalFake
) -> None:
    provider = build(provider_harness, **settings(paypal))
    charged = provider_harness.call(provider, "pay", payment=payment(method="tok-approve", idempotency_key="two-step"))
    assert charged.status == "succeeded"
    [capture] = paypal.requests_to("orders.capture")
    assert capture.header("paypal-request-id") == "two-step:capture"
    authorised = provider_harness.call(
        provider, "pay", payment=payment(method="tok-approve", capture=False, idempotency_key="two-step-auth")
    )
    assert authorised.status == "requires_capture" and authorised.details["authorization_id"]
    assert paypal.requests_to("orders.authorize")[0].header("paypal-request-id") == "two-step-auth:authorize"


def test_without_a_payment_source_the_payer_must_approve(provider_harness: ProviderHarness, paypal: PayPalFake) -> None:
    provider = build(provider_harness, **settings(paypal))
    result = provider_harness.call(provider, "pay", payment=payment(method=None))
    assert (result.status, result.raw_status) == ("requires_action", "CREATED")
    assert result.details["approve_url"].startswith("https://www.paypal.com/checkoutnow?token=")


def test_a_long_idempotency_key_is_hashed_to_paypals_limit(
    provider_harness: ProviderHarness, paypal: PayPalFake
) -> None:
    provider = build(provider_harness, **settings(paypal))
    key = "k" * 300
    first = provider_harness.call(provider, "pay", payment=payment(idempotency_key=key))
    again = provider_harness.call(provider, "pay", payment=payment(idempotency_key=key))
    assert first.transaction_id == again.transaction_id and len(paypal.charges()) == 1
    assert {len(r.header("paypal-request-id") or "") for r in paypal.requests_to("orders.create")} == {68}


# ---------------------------------------------------------------------------------------------------------------
# Lookups


def test_lookup_by_key_finds_the_order_by_replaying_the_create(
    provider_harness: ProviderHarness, paypal: PayPalFake
) -> None:
    provider = build(provider_harness, **settings(paypal))
    request = payment(idempotency_key="lost-answer-1")
    made = provider_harness.call(provider, "pay", payment=request)
    found = provider_harness.call(
        provider, "payment_status", lookup=PaymentLookup("demo", request.id, idempotency_key="lost-answer-1")
    )
    assert found.transaction_id == made.transaction_id and found.status == "succeeded"
    assert len(paypal.orders()) == 1  # the replay made nothing


def test_a_key_paypal_never_saw_is_no_payment_and_cannot_charge_later(
    provider_harness: ProviderHarness, paypal: PayPalFake
) -> None:
    provider = build(provider_harness, **settings(paypal))
    lookup = PaymentLookup("demo", "pay_never", idempotency_key="never-arrived", amount=Decimal("5.00"), currency="EUR")
    assert provider_harness.call(provider, "payment_status", lookup=lookup) is None
    [probe] = paypal.orders()
    assert probe["status"] == "CREATED" and "payments" not in probe["purchase_units"][0]  # nothing can be taken
    # The key now names the probe at PayPal: a late pay with it is refused rather than answered with the probe.
    with pytest.raises(PermanentError) as refused:
        provider_harness.call(provider, "pay", payment=payment(idempotency_key="never-arrived"))
    assert refused.value.provider_code == "IDEMPOTENCY_KEY_USED_BY_LOOKUP"
    assert paypal.charges() == []


# ---------------------------------------------------------------------------------------------------------------
# Tokens and transport


def test_the_token_is_cached_and_refreshed_once_when_paypal_refuses_it(
    provider_harness: ProviderHarness, paypal: PayPalFake
) -> None:
    provider = build(provider_harness, **settings(paypal))
    for _ in range(3):
        provider_harness.call(provider, "pay", payment=payment())
    assert paypal.server.state["tokens_issued"] == 1
    token_request = paypal.requests_to("hub.oauth2.token")[0]
    assert token_request.auth.username == CLIENT_ID and token_request.body == {"grant_type": "client_credentials"}

    paypal.expire_tokens()
    assert provider_harness.call(provider, "pay", payment=payment()).status == "succeeded"
    assert paypal.server.state["tokens_issued"] == 2
    assert len(paypal.charges()) == 4
    assert [r.status for r in paypal.requests_to("orders.create")][-2:] == [401, 201]


def test_refused_credentials_are_a_configuration_error_without_the_secret(
    provider_harness: ProviderHarness, paypal: PayPalFake
) -> None:
    provider = build(provider_harness, **settings(paypal, client_secret="wrong-secret-value"))
    with pytest.raises(ConfigurationError) as refused:
        provider_harness.call(provider, "pay", payment=payment())
    assert "wrong-secret-value" not in str(refused.value) and refused.value.provider_code == "invalid_client"
    health = provider_harness.call(provider, "health")
    assert health.status == "error" and "wrong-secret-value" not in health.message


def seeded(provider: PayPalGateway) -> PayPalGateway:
    """A gateway holding a token already, so the kit's fault servers answer the payment call itself."""
    provider._token, provider._token_expires = "A21AA-seeded-token", time.monotonic() + 3600
    return provider


def test_transport_errors_map_to_the_hubs_errors(provider_harness: ProviderHarness) -> None:
    """Down -> TransientError (fail over); too slow, dropped, 500/502 -> OutcomeUnknownError (PayPal: retry an
    INTERNAL_SERVER_ERROR with the same PayPal-Request-Id); 503/429 -> TransientError; 401/403 -> configuration."""

    def build_at(url: str, timeout: float) -> PayPalGateway:
        return seeded(build(provider_harness, **settings(url=url, timeout=timeout)))

    raised = check_transport_errors(
        provider_harness,
        build_at,
        call=lambda p: provider_harness.call(p, "pay", payment=payment(idempotency_key="transport")),
        sent_error=OutcomeUnknownError,
        server_error=OutcomeUnknownError,
    )
    assert isinstance(raised["the service down"], TransientError)
    assert not isinstance(raised["the service down"], OutcomeUnknownError)


def test_a_token_request_that_times_out_moved_no_money(provider_harness: ProviderHarness) -> None:
    with FaultServer(Fault(status=200, delay=1.5)) as slow:
        provider = build(provider_harness, **settings(url=slow.url, timeout=0.3))
        with pytest.raises(TransientError) as failed:
            provider_harness.call(provider, "pay", payment=payment())
    assert not isinstance(failed.value, OutcomeUnknownError) and failed.value.provider_code == "timeout"


def test_concurrent_payments_from_worker_threads(provider_harness: ProviderHarness, paypal: PayPalFake) -> None:
    def build_at(url: str, timeout: float) -> PayPalGateway:
        return build(provider_harness, **settings(url=url, timeout=timeout))

    results = check_concurrent_use(
        provider_harness,
        build_at,
        paypal.url,
        call=lambda provider, number: provider_harness.call(
            provider, "pay", payment=payment(f"{number + 1}.00", idempotency_key=f"thread-{number}")
        ),
    )
    assert len({r.transaction_id for r in results}) == 24 == len(paypal.charges())
    assert sorted(r.amount for r in results) == [Decimal(f"{n}.00") for n in range(1, 25)]
    assert paypal.server.state["tokens_issued"] == 1  # one fetch, shared by the threads


# ---------------------------------------------------------------------------------------------------------------
# Webhooks


def webhook_request(body: bytes, headers: dict[str, str]) -> WebhookRequest:
    return WebhookRequest(
        url="https://hub.example.com/api/integrations/webhooks/paypal", headers=headers, body=body, form={}, query={}
    )


@pytest.mark.parametrize("verification", ["api", "certificate"])
def test_webhook_signatures_valid_forged_tampered_stale(
    provider_harness: ProviderHarness, paypal: PayPalFake, verification: str
) -> None:
    provider = build(provider_harness, **settings(paypal, webhook_verification=verification))
    made = provider_harness.call(provider, "pay", payment=payment())
    event = paypal.capture_event(made.transaction_id)

    def sign(*, timestamp: float, forged: bool) -> WebhookRequest:
        return webhook_request(*paypal.sign_webhook(event, forged=forged, timestamp=timestamp, transmission_id="t-1"))

    [received] = check_webhook_signatures(provider_harness, provider, sign, tolerance=300)
    assert (received.event_id, received.reference, received.status, received.type) == (
        event["id"],
        made.transaction_id,
        "succeeded",
        "PAYMENT.CAPTURE.COMPLETED",
    )
    if verification == "api":
        assert paypal.server.state["verifications"] >= 3
    else:
        assert paypal.server.state.get("verifications") is None  # offline
        assert paypal.server.state["certificate_fetches"] == 1  # cached


def test_a_certificate_from_a_host_not_allowed_is_refused_unfetched(
    provider_harness: ProviderHarness, paypal: PayPalFake
) -> None:
    provider = build(
        provider_harness, **settings(paypal, webhook_verification="certificate", cert_hosts=["api.paypal.com"])
    )
    body, headers = paypal.sign_webhook({"id": "WH-1", "event_type": "PAYMENT.CAPTURE.COMPLETED", "resource": {}})
    with pytest.raises(SignatureError, match="cert_hosts"):
        provider_harness.call(provider, "handle_webhook", webhook=webhook_request(body, headers))
    headers["PAYPAL-CERT-URL"] = "https://evil.example.com/v1/notifications/certs/CERT-1"
    with pytest.raises(SignatureError):
        provider_harness.call(provider, "handle_webhook", webhook=webhook_request(body, headers))
    assert paypal.server.requests == []
    # An allowed host that serves no such certificate: refused as unverifiable.
    allowed = build(provider_harness, **settings(paypal, webhook_verification="certificate"))
    headers["PAYPAL-CERT-URL"] = f"{paypal.url}/v1/notifications/certs/CERT-unknown"
    with pytest.raises(SignatureError, match="no certificate"):
        provider_harness.call(allowed, "handle_webhook", webhook=webhook_request(body, headers))


def test_unsigned_webhooks_and_a_missing_webhook_id_are_refused(
    provider_harness: ProviderHarness, paypal: PayPalFake
) -> None:
    body, headers = paypal.sign_webhook({"id": "WH-2", "event_type": "PAYMENT.CAPTURE.COMPLETED", "resource": {}})
    provider = build(provider_harness, **settings(paypal))
    unsigned = {k: v for k, v in headers.items() if k != "PAYPAL-TRANSMISSION-SIG"}
    with pytest.raises(SignatureError, match="PAYPAL-TRANSMISSION-SIG"):
        provider_harness.call(provider, "handle_webhook", webhook=webhook_request(body, unsigned))
    without_id = build(provider_harness, **settings(paypal, webhook_id=None))
    with pytest.raises(SignatureError, match="webhook_id"):
        provider_harness.call(without_id, "handle_webhook", webhook=webhook_request(body, headers))


def test_refund_and_authorization_events_name_the_order(provider_harness: ProviderHarness, paypal: PayPalFake) -> None:
    provider = build(provider_harness, **settings(paypal))
    made = provider_harness.call(provider, "pay", payment=payment("30.00"))
    refund = provider_harness.call(
        provider, "refund", refund=RefundRequest("re-2", "demo", made.transaction_id, Decimal("10.00"), "USD")
    )
    event = paypal.refund_event(refund.refund_id)
    [partial] = provider_harness.call(provider, "handle_webhook", webhook=webhook_request(*paypal.sign_webhook(event)))
    assert (partial.reference, partial.status, partial.details["amount_refunded"]) == (
        made.transaction_id,
        "partially_refunded",
        "10.00",
    )
    rest = provider_harness.call(
        provider, "refund", refund=RefundRequest("re-3", "demo", made.transaction_id, None, "USD")
    )
    [full] = provider_harness.call(
        provider, "handle_webhook", webhook=webhook_request(*paypal.sign_webhook(paypal.refund_event(rest.refund_id)))
    )
    assert (full.status, full.details["amount_refunded"]) == ("refunded", "30.00")

    # A refund made in PayPal's dashboard carries no order id of the hub's: its capture is looked up.
    third = provider_harness.call(provider, "pay", payment=payment("5.00"))
    dashboard = paypal.refund_event(
        provider_harness.call(
            provider, "refund", refund=RefundRequest("re-4", "demo", third.transaction_id, None, "USD")
        ).refund_id
    )
    dashboard["resource"]["custom_id"] = "pay_made_elsewhere"
    [found] = provider_harness.call(
        provider, "handle_webhook", webhook=webhook_request(*paypal.sign_webhook(dashboard))
    )
    assert (found.reference, found.status) == (third.transaction_id, "refunded")

    other = {"id": "WH-unknown", "event_type": "BILLING.PLAN.CREATED", "resource": {"id": "P-1"}}
    assert provider_harness.call(provider, "handle_webhook", webhook=webhook_request(*paypal.sign_webhook(other))) == []


def test_a_dispute_names_the_capture_and_moves_its_order_to_disputed(
    provider_harness: ProviderHarness, paypal: PayPalFake
) -> None:
    provider = build(provider_harness, **settings(paypal))
    made = provider_harness.call(provider, "pay", payment=payment("19.99"))
    event = paypal.dispute_event(made.transaction_id)
    [disputed] = provider_harness.call(provider, "handle_webhook", webhook=webhook_request(*paypal.sign_webhook(event)))
    assert (disputed.event_id, disputed.reference, disputed.status) == (event["id"], made.transaction_id, "disputed")
    assert disputed.details["dispute_id"] == event["resource"]["dispute_id"]
    assert paypal.requests_to("hub.captures.get")[0].path_params["capture_id"] == made.details["capture_id"]


# ---------------------------------------------------------------------------------------------------------------
# Through the hub's REST API


def make_hub(tmp_path: Path, providers: dict[str, Any], services: list[str] | None = None) -> RestHub:
    """A hub with these PayPal gateways, and the built-in event log to publish ``payment.*`` events to."""
    return rest_hub(
        tmp_path,
        plugins=[(hub_paypal, "paypal")],
        providers={**providers, "events": {"type": "event-log"}},
        services={"payment": {"providers": services or list(providers)}, "kafka": {"providers": ["events"]}},
    )


def test_hub_pay_webhook_status_refunds(tmp_path: Path, paypal: PayPalFake) -> None:
    with make_hub(tmp_path, {"paypal": {"type": "paypal", **settings(paypal)}}) as api:
        paid = api.post(
            f"{API}/payments", {"amount": "30.00", "currency": "USD", "orderId": "A-7", "paymentMethod": "tok-pending"}
        )
        assert paid.status_code == 202, paid.get_json()
        data = paid.get_json()["data"]
        assert (data["status"], data["rawStatus"], data["gateway"]) == ("processing", "PENDING", "paypal")
        order_id, payment_id = data["transactionId"], data["paymentId"]
        assert paypal.charges()[0]["id"] == order_id

        paypal.settle(order_id)  # PayPal's review clears the capture and says so by webhook
        event = paypal.capture_event(order_id)
        body, headers = paypal.sign_webhook(event)
        hook = api.client.post(f"{API}/webhooks/paypal", data=body, headers=headers)
        assert hook.status_code == 200, hook.get_json()
        assert hook.get_json()["data"] == {"received": 1, "duplicates": 0, "updated": 1}
        replayed = api.client.post(f"{API}/webhooks/paypal", data=body, headers=headers)
        assert replayed.get_json()["data"] == {"received": 1, "duplicates": 1, "updated": 0}
        forged_body, forged_headers = paypal.sign_webhook(
            paypal.capture_event(order_id, "PAYMENT.CAPTURE.DECLINED"), forged=True
        )
        assert api.client.post(f"{API}/webhooks/paypal", data=forged_body, headers=forged_headers).status_code == 401
        stale_body, stale_headers = paypal.sign_webhook(
            paypal.capture_event(order_id, "PAYMENT.CAPTURE.DECLINED"), timestamp=time.time() - 900
        )
        assert api.client.post(f"{API}/webhooks/paypal", data=stale_body, headers=stale_headers).status_code == 401

        view = api.get(f"{API}/payments/{payment_id}").get_json()["data"]
        assert (view["status"], view["transactionId"]) == ("succeeded", order_id)
        [queued] = api.hub.list_records("demo", "event")
        assert queued.payload["eventType"] == "payment.succeeded" and queued.payload["data"]["paymentId"] == payment_id
        api.hub.run_record(queued.id)  # as a worker would
        assert api.hub.get_record(queued.id, "demo", "event").status == "succeeded"

        partial = api.post(f"{API}/payments/{payment_id}/refunds", {"amount": "10.00"})
        assert partial.status_code == 201, partial.get_json()
        too_much = api.post(f"{API}/payments/{payment_id}/refunds", {"amount": "20.01"})
        assert too_much.status_code == 422 and "amount" in too_much.get_json()["errors"]
        rest = api.post(f"{API}/payments/{payment_id}/refunds", {})
        assert rest.status_code == 201 and rest.get_json()["data"]["amount"] == 20.0
        view = api.get(f"{API}/payments/{payment_id}").get_json()["data"]
        assert (view["status"], view["amountRefunded"]) == ("refunded", 30.0)
        assert [r.body.get("amount") for r in paypal.requests_to("hub.captures.refund")] == [
            {"currency_code": "USD", "value": "10.00"},
            None,
        ]
        assert all(r.body["custom_id"] == order_id for r in paypal.requests_to("hub.captures.refund"))

        # A chargeback on another payment: the dispute names the capture; the hub's payment becomes disputed.
        other = api.post(f"{API}/payments", {"amount": "8.00", "currency": "USD", "paymentMethod": "tok-visa"})
        assert other.status_code == 201, other.get_json()
        other_id, other_order = other.get_json()["data"]["paymentId"], other.get_json()["data"]["transactionId"]
        dispute_body, dispute_headers = paypal.sign_webhook(paypal.dispute_event(other_order))
        disputed = api.client.post(f"{API}/webhooks/paypal", data=dispute_body, headers=dispute_headers)
        assert disputed.get_json()["data"] == {"received": 1, "duplicates": 0, "updated": 1}
        assert api.get(f"{API}/payments/{other_id}").get_json()["data"]["status"] == "disputed"
        assert "payment.disputed" in {r.payload["eventType"] for r in api.hub.list_records("demo", "event")}


def test_hub_timeout_after_the_order_reached_paypal_is_reconciled_never_failed_over(
    tmp_path: Path, paypal: PayPalFake, backup: PayPalFake
) -> None:
    providers = {
        "primary": {"type": "paypal", **settings(paypal, timeout=0.5)},
        "backup": {
            "type": "paypal",
            **settings(backup, client_id=BACKUP_CLIENT_ID, client_secret=BACKUP_CLIENT_SECRET),
        },
    }
    with make_hub(tmp_path, providers, ["primary", "backup"]) as api:
        paypal.server.delay_answers("orders.create", 2.0, times=2)  # the first try and its retry: answers lost
        paid = api.post(f"{API}/payments", {"amount": "42.00", "currency": "USD", "paymentMethod": "tok-visa"})
        data = paid.get_json()["data"]
        assert paid.status_code == 201, data
        assert (data["status"], data["outcomeUnknown"]) == ("succeeded", False)
        record = api.hub.get_record(data["paymentId"], "demo", "payment")
        assert [(a["provider"], a["outcome"]) for a in record.attempt_log] == [("primary", "failed")]
        [order] = paypal.charges()
        assert len(paypal.orders()) == 1  # one charge: the retry and the lookup replayed the create
        assert {r.header("paypal-request-id") for r in paypal.requests_to("orders.create")} == {data["paymentId"]}
        record = api.get(f"{API}/payments/{data['paymentId']}").get_json()["data"]
        assert (record["status"], record["transactionId"], record["gateway"]) == ("succeeded", order["id"], "primary")
        audit = [(e.provider, e.operation) for e in reversed(api.hub.audit_log("demo", service="payment"))]
        assert ("primary", "payment_status") in audit
        assert backup.server.requests == []


def test_hub_fails_over_from_a_paypal_that_is_down(tmp_path: Path, backup: PayPalFake, dead_url: str) -> None:
    providers = {
        "primary": {"type": "paypal", **settings(url=dead_url)},
        "backup": {"type": "paypal", **backup.gateway_settings(BACKUP_CLIENT_ID)},
    }
    with make_hub(tmp_path, providers, ["primary", "backup"]) as api:
        paid = api.post(f"{API}/payments", {"amount": "12.00", "currency": "EUR", "paymentMethod": "tok-visa"})
        assert paid.status_code == 201, paid.get_json()
        assert paid.get_json()["data"]["gateway"] == "backup"
        assert len(backup.charges(BACKUP_CLIENT_ID)) == 1
