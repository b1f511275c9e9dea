"""Failover between two real payment plugins: Stripe first, PayPal next, each against its contract server.

The hub moves a payment to the next gateway only when the first one proves nothing was charged (its server is
down: connection refused); when the first one may have charged (its answer arrives after the client's timeout) the
payment stays with it and is reconciled there, and the next gateway never hears of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

hub_stripe = pytest.importorskip("hub_stripe", reason="the hub-stripe plugin (pip install ./plugins/hub-stripe)")
hub_paypal = pytest.importorskip("hub_paypal", reason="the hub-paypal plugin (pip install ./plugins/hub-paypal)")

from hub_paypal.testing import PayPalFake, paypal_contract_server  # noqa: E402
from hub_stripe.testing import DEFAULT_API_KEY, StripeFake, stripe_contract_server  # noqa: E402

from hub.testing.contract_server import ContractServer  # noqa: E402
from hub.testing.rest import RestHub, rest_hub  # noqa: E402

PAYMENTS = "/api/integrations/payments"


@pytest.fixture
def gateways() -> Iterator[tuple[ContractServer, StripeFake, PayPalFake]]:
    with stripe_contract_server() as (stripe_server, stripe_fake), paypal_contract_server() as paypal:
        yield stripe_server, stripe_fake, paypal


def make_hub(tmp_path: Path, stripe_url: str, paypal: PayPalFake) -> RestHub:
    return rest_hub(
        tmp_path,
        plugins=[(hub_stripe, "stripe"), (hub_paypal, "paypal")],
        providers={
            "stripe": {"type": "stripe", "api_key": DEFAULT_API_KEY, "api_base": stripe_url, "timeout": 0.5},
            "paypal": {"type": "paypal", **paypal.gateway_settings()},
        },
        services={"payment": {"providers": ["stripe", "paypal"]}},
    )


def pay(api: RestHub, status: int, **body: Any) -> dict[str, Any]:
    response = api.post(PAYMENTS, json={"amount": "42.00", "currency": "EUR", "paymentMethod": "pm_card_visa", **body})
    answer = response.get_json()
    assert response.status_code == status, answer
    return answer["data"]


def test_stripe_down_fails_over_to_paypal_then_refunds_go_to_the_gateway_that_took_the_payment(
    tmp_path: Path, gateways: tuple[ContractServer, StripeFake, PayPalFake]
) -> None:
    stripe_server, stripe_fake, paypal = gateways
    with make_hub(tmp_path, stripe_server.url, paypal) as api:
        first = pay(api, 201, orderId="A-1")
        assert (first["gateway"], first["status"]) == ("stripe", "succeeded")
        assert len(stripe_fake.intents()) == 1 and paypal.orders() == []

        stripe_server.stop()  # connection refused: Stripe certainly charged nothing
        second = pay(api, 201, orderId="A-2")
        assert (second["gateway"], second["status"]) == ("paypal", "succeeded")
        [order] = paypal.orders()
        assert order["id"] == second["transactionId"] and order["purchase_units"][0]["amount"] == {
            "currency_code": "EUR",
            "value": "42.00",
        }
        record = api.hub.runtime.ledger.get(second["paymentId"], "demo")
        tried = [(attempt["provider"], attempt["outcome"]) for attempt in record.attempt_log]
        assert tried[0][0] == "stripe" and tried[-1] == ("paypal", "succeeded"), tried

        refund = api.post(f"{PAYMENTS}/{second['paymentId']}/refunds", json={"amount": "2.50"})
        assert refund.status_code == 201, refund.get_json()
        assert refund.get_json()["data"]["gateway"] == "paypal"
        # The first payment is Stripe's: with Stripe still down its refund fails and goes to no other gateway.
        refused = api.post(f"{PAYMENTS}/{first['paymentId']}/refunds", json={"amount": "1.00"})
        assert refused.status_code == 503, refused.get_json()
        assert len(paypal.orders()) == 1


def test_an_answer_lost_after_stripe_charged_is_reconciled_at_stripe_and_paypal_never_asked(
    tmp_path: Path, gateways: tuple[ContractServer, StripeFake, PayPalFake]
) -> None:
    stripe_server, stripe_fake, paypal = gateways
    with make_hub(tmp_path, stripe_server.url, paypal) as api:
        stripe_server.delay_answers("PostPaymentIntents", 2.0, times=2)  # the first try and the core's retry
        paid = pay(api, 201)
        assert (paid["gateway"], paid["status"]) == ("stripe", "succeeded"), paid
        [intent] = stripe_fake.intents()
        assert paid["transactionId"] == intent["id"]  # found by the lookup, not charged twice
        assert paypal.orders() == [] and not paypal.server.requests


def test_the_seeds_test_payment_picks_the_gateway_by_type(
    tmp_path: Path, gateways: tuple[ContractServer, StripeFake, PayPalFake]
) -> None:
    stripe_server, stripe_fake, paypal = gateways
    with make_hub(tmp_path, stripe_server.url, paypal) as api:
        for gateway, expected in (("paypal", "paypal"), ("stripe", "stripe"), (None, "stripe")):
            body = {"amount": 10.00, "currency": "USD", "orderId": "test_order_123", "paymentMethod": "pm_card_visa"}
            response = api.post("/api/integrations/test/payment", json={**body, **({"gateway": gateway} if gateway else {})})
            data = response.get_json()["data"]
            assert response.status_code == 200 and data["gateway"] == expected and data["status"] == "succeeded", data
        assert len(paypal.orders()) == 1 and len(stripe_fake.intents()) == 2
