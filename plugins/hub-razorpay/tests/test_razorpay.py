"""hub-razorpay against a stateful Razorpay server on 127.0.0.1 that checks every request against an OpenAPI
description of Razorpay's API written from its API reference (``razorpay_api.py``: Razorpay publishes none), and
through a whole hub's REST API."""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import hub_razorpay
import pytest
from hub_razorpay import RazorpayGateway, receipt_for

from hub.capabilities import CaptureRequest, PaymentLookup, PaymentRequest, RefundRequest, WebhookRequest
from hub.errors import (
    ConfigError,
    ConfigurationError,
    NotFoundError,
    OutcomeUnknownError,
    PermanentError,
    SignatureError,
)
from hub.testing import ProviderHarness
from hub.testing.contract_server import ContractServer
from hub.testing.contracts import check_health, check_provider_class, run_contract
from hub.testing.rest import rest_hub
from hub.testing.transport import check_concurrent_use, check_transport_errors, check_webhook_signatures

# The description and the fake live beside this file (pytest runs with --import-mode=importlib).
sys.path.insert(0, str(Path(__file__).parent))
from razorpay_api import (  # noqa: E402
    DECLINED,
    KEY_ID,
    KEY_SECRET,
    LOST,
    SPEC,
    SUCCESS,
    WEBHOOK_SECRET,
    RazorpayFake,
    razorpay_error_shaper,
    webhook_body,
    webhook_headers,
)

API = "/api/integrations"
BACKUP_KEY_ID = "rzp_test_hubBackup0002"
BACKUP_KEY_SECRET = "razorpay-backup-key-secret"


def start_fake(keys: dict[str, str] | None = None) -> tuple[ContractServer, RazorpayFake]:
    server = ContractServer(SPEC, error_shaper=razorpay_error_shaper)
    fake = RazorpayFake(server, keys)
    return server.start(), fake


@pytest.fixture(scope="session")
def razorpay_session() -> Iterator[tuple[ContractServer, RazorpayFake]]:
    server, fake = start_fake()
    yield server, fake
    server.stop()


@pytest.fixture
def razorpay(razorpay_session: tuple[ContractServer, RazorpayFake]) -> Iterator[RazorpayFake]:
    """The shared server, emptied for this test; at its end every request must have met the description."""
    server, fake = razorpay_session
    with server.isolated(allow_refused={"unauthorized"}):
        yield fake


@pytest.fixture
def backup_razorpay() -> Iterator[RazorpayFake]:
    server, fake = start_fake({BACKUP_KEY_ID: BACKUP_KEY_SECRET})
    with server.isolated():
        yield fake
    server.stop()


def settings(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "key_id": KEY_ID,
        "key_secret": KEY_SECRET,
        "webhook_secret": WEBHOOK_SECRET,
        "api_base": url,
        "timeout": 5,
        **overrides,
    }


def build(harness: ProviderHarness, url: str, **overrides: Any) -> RazorpayGateway:
    if "razorpay" not in harness.host.provider_types:
        harness.add_plugin(hub_razorpay, "razorpay")
    provider: RazorpayGateway = harness.build("razorpay", settings(url, **overrides))
    return provider


def payment(
    method: str | None = SUCCESS,
    amount: str = "25.00",
    currency: str = "USD",
    *,
    key: str | None = None,
    capture: bool = True,
    tenant: str = "demo",
) -> PaymentRequest:
    hub_id = f"pay-{secrets.token_hex(6)}"
    return PaymentRequest(
        id=hub_id,
        tenant=tenant,
        amount=Decimal(amount),
        currency=currency,
        order_id="A-1001",
        payment_method=method,
        idempotency_key=key or f"key-{secrets.token_hex(6)}",
        capture=capture,
    )


def pay(harness: ProviderHarness, provider: RazorpayGateway, request: PaymentRequest) -> Any:
    return harness.call(provider, "pay", payment=request)


def requests_of(fake: RazorpayFake, operation: str) -> list[Any]:
    return [request for request in fake.server.requests if request.operation_id == operation]


# ---------------------------------------------------------------------------------------------------------------
# The kit's checks


def test_razorpay_meets_the_whole_pay_contract_capturing_whole_authorisations(
    provider_harness: ProviderHarness, razorpay: RazorpayFake
) -> None:
    """Razorpay captures only the whole authorisation (its reference: the capture amount "should be equal to the
    order amount"), so the kit checks that a partial capture is refused and captures the whole."""
    check_provider_class(RazorpayGateway)
    provider = build(provider_harness, razorpay.server.url, timeout=0.5)
    run_contract(
        provider_harness,
        provider,
        succeeding_method=SUCCESS,
        declined_method=DECLINED,
        outcome_unknown_method=LOST,
        partial_capture=False,
    )
    assert requests_of(razorpay, "capturePayment")  # the whole capture went through
    assert check_health(provider_harness, provider).ok  # type: ignore[union-attr]


def test_an_authorisation_is_captured_whole_once_and_then_refundable(
    provider_harness: ProviderHarness, razorpay: RazorpayFake
) -> None:
    provider = build(provider_harness, razorpay.server.url)
    authorised = pay(provider_harness, provider, payment(capture=False))
    assert (authorised.status, authorised.raw_status) == ("requires_capture", "authorized")
    assert authorised.transaction_id.startswith("order_")
    [order_request] = requests_of(razorpay, "createOrder")
    assert order_request.body["payment"] == {"capture": "manual"}
    with pytest.raises(PermanentError, match="only captured payments"):
        harness_refund(provider_harness, provider, authorised.transaction_id, None)

    def capture(amount: Decimal | None, key: str = "cap-key") -> Any:
        request = CaptureRequest(
            id="cap-1",
            tenant="demo",
            transaction_id=authorised.transaction_id,
            amount=amount,
            currency="USD",
            idempotency_key=key,
        )
        return provider_harness.call(provider, "capture", capture=request)

    with pytest.raises(PermanentError, match="only the whole authorised amount"):
        capture(Decimal("10.00"))
    captured = capture(Decimal("25.00"))
    assert (captured.status, captured.amount_captured) == ("succeeded", Decimal("25.00"))
    assert requests_of(razorpay, "capturePayment")[-1].body == {"amount": 2500, "currency": "USD"}
    # The capture's key went into the order's notes first: a retry of it (its answer lost) returns the capture.
    assert requests_of(razorpay, "updateOrder")[-1].body["notes"]["hub_capture_key"] == receipt_for(
        "demo", "capture:cap-key"
    )
    again = capture(Decimal("25.00"))
    assert again.status == "succeeded" and len(requests_of(razorpay, "capturePayment")) == 1
    with pytest.raises(PermanentError, match="not authorized"):
        capture(None, key="another-capture")
    with pytest.raises(NotFoundError):
        provider_harness.call(
            provider,
            "capture",
            capture=CaptureRequest(
                id="c", tenant="demo", transaction_id="order_Unknown0000000", amount=None, currency="USD"
            ),
        )
    refund = harness_refund(provider_harness, provider, authorised.transaction_id, None)
    assert (refund.status, refund.amount) == ("succeeded", Decimal("25.00"))
    assert not hasattr(RazorpayGateway, "cancel")  # Razorpay has no void: uncaptured authorisations are refunded


def harness_refund(harness: ProviderHarness, provider: RazorpayGateway, transaction_id: str, amount: Any) -> Any:
    request = RefundRequest(
        id=f"ref-{secrets.token_hex(4)}",
        tenant="demo",
        transaction_id=transaction_id,
        amount=amount,
        currency="USD",
        idempotency_key=f"refund-{secrets.token_hex(4)}",
    )
    return harness.call(provider, "refund", refund=request)


def test_transport_errors_and_concurrent_use(provider_harness: ProviderHarness, razorpay: RazorpayFake) -> None:
    def builder(url: str, timeout: float) -> RazorpayGateway:
        return build(provider_harness, url, timeout=timeout)

    raised = check_transport_errors(
        provider_harness,
        builder,
        call=lambda provider: pay(provider_harness, provider, payment()),
        sent_error=OutcomeUnknownError,
        server_error=OutcomeUnknownError,
    )
    assert type(raised["the service down"]).__name__ == "TransientError"
    check_concurrent_use(
        provider_harness,
        builder,
        razorpay.server.url,
        call=lambda provider, number: pay(provider_harness, provider, payment(key=f"concurrent-{number}")),
    )
    assert len(razorpay.captured()) == 24 and len(razorpay.orders) == 24


def test_webhook_signatures(provider_harness: ProviderHarness, razorpay: RazorpayFake) -> None:
    provider = build(provider_harness, razorpay.server.url, webhook_tolerance=300)

    def sign(timestamp: float, forged: bool) -> WebhookRequest:
        entity = {"id": "pay_AbCdEfGhIjKlMn", "order_id": "order_AbCdEfGhIjKlMn", "amount": 2500, "currency": "USD"}
        body = webhook_body("payment.captured", {**entity, "status": "captured"}, created_at=timestamp)
        headers = webhook_headers(body, "evt-signed-1", "another-secret" if forged else WEBHOOK_SECRET)
        return WebhookRequest(
            url="https://hub.example.com/webhooks/razorpay", headers=headers, body=body, form={}, query={}
        )

    [event] = check_webhook_signatures(provider_harness, provider, sign, tolerance=300)
    assert (event.event_id, event.reference, event.status, event.type) == (
        "evt-signed-1",
        "order_AbCdEfGhIjKlMn",
        "succeeded",
        "payment.captured",
    )
    unsigned = sign(time.time(), False)
    with pytest.raises(SignatureError, match="missing"):
        provider_harness.call(
            provider,
            "handle_webhook",
            webhook=WebhookRequest(url=unsigned.url, headers={}, body=unsigned.body, form={}, query={}),
        )


# ---------------------------------------------------------------------------------------------------------------
# The provider's own behaviour


def test_a_decline_carries_razorpays_reason(provider_harness: ProviderHarness, razorpay: RazorpayFake) -> None:
    provider = build(provider_harness, razorpay.server.url)
    request = payment(DECLINED)
    with pytest.raises(PermanentError) as declined:
        pay(provider_harness, provider, request)
    assert declined.value.provider_code == "card_declined"
    assert "declined by your bank" in declined.value.message
    # Asked again with the same key: the same order and failed payment, no new order.
    with pytest.raises(PermanentError):
        pay(provider_harness, provider, request)
    assert len(razorpay.orders) == 1
    failed = provider_harness.call(
        provider,
        "payment_status",
        lookup=PaymentLookup(tenant="demo", payment_id=request.id, idempotency_key=request.idempotency_key),
    )
    assert (failed.status, failed.details["error_reason"]) == ("failed", "card_declined")


def test_the_order_carries_the_receipt_notes_and_a_retry_finds_it(
    provider_harness: ProviderHarness, razorpay: RazorpayFake
) -> None:
    provider = build(provider_harness, razorpay.server.url)
    request = payment(key="order-7")
    first = pay(provider_harness, provider, request)
    again = pay(provider_harness, provider, request)
    assert first.transaction_id == again.transaction_id and len(razorpay.orders) == 1
    [created] = requests_of(razorpay, "createOrder")
    assert created.body["receipt"] == receipt_for("demo", "order-7") and len(created.body["receipt"]) == 40
    assert created.body["notes"] == {
        "hub_payment_id": request.id,
        "hub_tenant": "demo",
        "order_id": "A-1001",
        "hub_payment_method": SUCCESS,
    }
    assert created.body["partial_payment"] is False
    # Another tenant's equal key is another receipt (receipts are unique per Razorpay account).
    assert receipt_for("other", "order-7") != created.body["receipt"]
    assert (
        provider_harness.call(
            provider,
            "payment_status",
            lookup=PaymentLookup(tenant="other", payment_id="p", transaction_id=first.transaction_id),
        )
        is None
    )
    with pytest.raises(PermanentError, match="another amount"):
        pay(provider_harness, provider, payment(key="order-7", amount="26.00"))


def test_a_checkout_payment_id_is_verified_and_captured(
    provider_harness: ProviderHarness, razorpay: RazorpayFake
) -> None:
    provider = build(provider_harness, razorpay.server.url)
    waiting = pay(provider_harness, provider, payment(None, capture=False))
    assert (waiting.status, waiting.details["key_id"]) == ("requires_action", KEY_ID)
    paid = razorpay.checkout(waiting.transaction_id)  # the customer pays in Checkout; manual capture
    result = pay(provider_harness, provider, payment(paid["id"]))
    assert (result.transaction_id, result.status, result.details["razorpay_payment_id"]) == (
        waiting.transaction_id,
        "succeeded",
        paid["id"],
    )
    assert len(razorpay.orders) == 1  # no second order for a payment that has one
    with pytest.raises(PermanentError, match="not 2600 USD"):
        pay(provider_harness, provider, payment(paid["id"], amount="26.00"))
    with pytest.raises(PermanentError, match="no payment"):
        pay(provider_harness, provider, payment("pay_Unknown0000000"))
    with pytest.raises(PermanentError, match="card numbers"):
        pay(provider_harness, provider, payment("4111 1111 1111 1111"))
    assert not any(b"4111 1111" in request.raw_body for request in razorpay.server.requests)


@pytest.mark.parametrize(
    ("amount", "currency", "minor", "refunded", "refunded_minor"),
    [
        ("1500", "JPY", 1500, "700", 700),
        ("12.340", "KWD", 12340, "2.120", 2120),
        ("10.50", "INR", 1050, "0.25", 25),
        ("7.250", "BHD", 7250, "7.250", 7250),
    ],
)
def test_amounts_on_the_wire(
    provider_harness: ProviderHarness,
    razorpay: RazorpayFake,
    amount: str,
    currency: str,
    minor: int,
    refunded: str,
    refunded_minor: int,
) -> None:
    provider = build(provider_harness, razorpay.server.url)
    result = pay(provider_harness, provider, payment(amount=amount, currency=currency))
    assert (result.amount, result.currency) == (Decimal(amount), currency)
    assert requests_of(razorpay, "createOrder")[-1].body["amount"] == minor
    refund = RefundRequest(
        id="r1", tenant="demo", transaction_id=result.transaction_id, amount=Decimal(refunded), currency=currency
    )
    done = provider_harness.call(provider, "refund", refund=refund)
    assert requests_of(razorpay, "refundPayment")[-1].body["amount"] == refunded_minor
    assert (done.amount, done.currency) == (Decimal(refunded), currency)


def test_a_third_kwd_decimal_is_refused_before_razorpay_is_asked(
    provider_harness: ProviderHarness, razorpay: RazorpayFake
) -> None:
    provider = build(provider_harness, razorpay.server.url)
    with pytest.raises(PermanentError, match="last of three decimals") as refused:
        pay(provider_harness, provider, payment(amount="1.234", currency="KWD"))
    assert refused.value.field == "amount"
    assert razorpay.server.requests == []


def test_settings_and_secrets(provider_harness: ProviderHarness) -> None:
    provider_harness.add_plugin(hub_razorpay, "razorpay")
    with pytest.raises(ConfigError, match="key_id"):
        provider_harness.build("razorpay", {"key_id": "nope", "key_secret": "s"})
    with pytest.raises(ConfigError, match="key_secret"):
        provider_harness.build("razorpay", {"key_id": KEY_ID}, environ={})
    from_env = provider_harness.build(
        "razorpay",
        {},
        environ={"RAZORPAY_KEY_ID": KEY_ID, "RAZORPAY_KEY_SECRET": "from-env", "RAZORPAY_WEBHOOK_SECRET": "wh"},
    )
    assert from_env.settings["api_base"] == "https://api.razorpay.com"
    assert (from_env.settings["key_secret"], from_env.settings["webhook_secret"]) == ("from-env", "wh")
    assert from_env.settings["webhook_tolerance"] == 90_000


def test_wrong_keys_are_a_configuration_error(provider_harness: ProviderHarness, razorpay: RazorpayFake) -> None:
    provider = build(provider_harness, razorpay.server.url, key_secret="wrong-secret")
    with pytest.raises(ConfigurationError) as refused:
        pay(provider_harness, provider, payment())
    assert "wrong-secret" not in str(refused.value)
    assert provider_harness.call(provider, "health").status == "error"


# ---------------------------------------------------------------------------------------------------------------
# Through the hub's REST API


def hub_for(tmp_path: Path, primary: RazorpayFake, backup: RazorpayFake | None = None, **config: Any) -> Any:
    providers: dict[str, Any] = {"primary": {"type": "razorpay", **settings(primary.server.url, timeout=0.5)}}
    order = ["primary"]
    if backup is not None:
        providers["backup"] = {
            "type": "razorpay",
            **settings(backup.server.url, key_id=BACKUP_KEY_ID, key_secret=BACKUP_KEY_SECRET),
        }
        order.append("backup")
    return rest_hub(
        tmp_path,
        plugins=[(hub_razorpay, "razorpay")],
        providers=providers,
        services={"payment": {"providers": order}},
        **config,
    )


def data(response: Any, status: int) -> Any:
    body = response.get_json()
    assert response.status_code == status, body
    return body["data"] if body.get("success", True) and "data" in body else body


def post_webhook(api: Any, body: bytes, headers: dict[str, str]) -> Any:
    return api.client.post(f"{API}/webhooks/primary", data=body, headers=headers)


def test_pay_then_checkout_webhook_status_and_refunds_through_the_hub(tmp_path: Path, razorpay: RazorpayFake) -> None:
    with hub_for(tmp_path, razorpay) as api:
        created = data(api.post(f"{API}/payments", json={"amount": "30.00", "currency": "INR", "orderId": "o-1"}), 201)
        assert (created["status"], created["gateway"]) == ("requires_action", "primary")
        order_id = created["transactionId"]
        assert order_id in razorpay.orders
        # The customer pays in Checkout; Razorpay captures it and posts payment.captured.
        paid = razorpay.checkout(order_id)
        body = webhook_body("payment.captured", paid)
        answer = data(post_webhook(api, body, webhook_headers(body, "evt_captured_1")), 200)
        assert answer["updated"] == 1
        view = data(api.get(f"{API}/payments/{created['paymentId']}"), 200)
        assert (view["status"], view["rawStatus"]) == ("succeeded", "captured")
        events = api.hub.list_records("demo", "event")
        assert [record.payload["eventType"] for record in events] == ["payment.succeeded"]
        assert events[0].payload["data"]["transactionId"] == order_id

        partial = data(api.post(f"{API}/payments/{created['paymentId']}/refunds", json={"amount": 10}), 201)
        assert partial["amount"] == 10.0
        over = data(api.post(f"{API}/payments/{created['paymentId']}/refunds", json={"amount": 25}), 422)
        assert "amount" in over["errors"]
        rest = data(api.post(f"{API}/payments/{created['paymentId']}/refunds", json={}), 201)
        assert rest["amount"] == 20.0
        assert [r["amount"] for r in razorpay.refunds.values()] == [1000, 2000]
        view = data(api.get(f"{API}/payments/{created['paymentId']}"), 200)
        assert view["status"] == "refunded"


def test_forged_stale_and_replayed_webhooks_through_the_hub(tmp_path: Path, razorpay: RazorpayFake) -> None:
    with hub_for(tmp_path, razorpay) as api:
        created = data(api.post(f"{API}/payments", json={"amount": "12.00", "currency": "INR"}), 201)
        order_id = created["transactionId"]
        paid = razorpay.checkout(order_id)
        body = webhook_body("payment.captured", {**paid, "status": "captured", "captured": True})

        forged = post_webhook(api, body, webhook_headers(body, "evt_1", secret="not-the-secret"))
        assert forged.status_code == 401
        stale_body = webhook_body("payment.captured", paid, created_at=time.time() - 100_000)
        assert post_webhook(api, stale_body, webhook_headers(stale_body, "evt_stale")).status_code == 401
        tampered = body.replace(b"captured", b"failed", 1)
        assert post_webhook(api, tampered, webhook_headers(body, "evt_1")).status_code == 401
        assert data(api.get(f"{API}/payments/{created['paymentId']}"), 200)["status"] == "requires_action"

        assert data(post_webhook(api, body, webhook_headers(body, "evt_1")), 200)["updated"] == 1
        replay = data(post_webhook(api, body, webhook_headers(body, "evt_1")), 200)
        assert (replay["duplicates"], replay["updated"]) == (1, 0)
        # The same event id with another (validly signed) body is a replay too: the core dedupes on the id.
        failed_body = webhook_body("payment.failed", {**paid, "status": "failed"})
        assert data(post_webhook(api, failed_body, webhook_headers(failed_body, "evt_1")), 200)["duplicates"] == 1
        assert data(api.get(f"{API}/payments/{created['paymentId']}"), 200)["status"] == "succeeded"

        dispute = {"id": "disp_AbCdEfGhIjKlMn", "entity": "dispute", "reason_code": "chargeback"}
        dispute_body = webhook_body("payment.dispute.created", paid, dispute=dispute)
        assert data(post_webhook(api, dispute_body, webhook_headers(dispute_body, "evt_2")), 200)["updated"] == 1
        assert data(api.get(f"{API}/payments/{created['paymentId']}"), 200)["status"] == "disputed"
        types = [record.payload["eventType"] for record in api.hub.list_records("demo", "event")]
        assert sorted(types) == ["payment.disputed", "payment.succeeded"]


def test_a_timeout_after_the_order_reached_razorpay_is_reconciled_never_failed_over(
    tmp_path: Path, razorpay: RazorpayFake, backup_razorpay: RazorpayFake
) -> None:
    razorpay.server.delay_answers("createOrder", 2.0)
    no_retry = {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05, "jitter": 0.01}
    with hub_for(tmp_path, razorpay, backup_razorpay, retry=no_retry) as api:
        response = api.post(
            f"{API}/payments",
            json={"amount": "40.00", "currency": "INR", "orderId": "o-9", "paymentMethod": SUCCESS},
            headers={"Idempotency-Key": "checkout-9"},
        )
        view = data(response, 201)
        assert (view["status"], view["gateway"]) == ("succeeded", "primary")
        assert view["transactionId"] in razorpay.orders
        audit = [(e.provider, e.operation, e.outcome) for e in reversed(api.hub.audit_log("demo", service="payment"))]
        assert audit == [("primary", "pay", "error"), ("primary", "payment_status", "success")]
    # One order, one charge on the primary; the backup was never asked.
    assert len(razorpay.orders) == 1 and len(razorpay.captured()) == 1
    assert [r.body["receipt"] for r in requests_of(razorpay, "createOrder")] == [receipt_for("demo", "checkout-9")]
    assert backup_razorpay.server.requests == []


def test_a_refund_whose_answer_was_lost_is_found_by_its_receipt_not_made_twice(
    provider_harness: ProviderHarness, razorpay: RazorpayFake
) -> None:
    provider = build(provider_harness, razorpay.server.url, timeout=0.5)
    paid = pay(provider_harness, provider, payment(amount="50.00", currency="INR"))
    request = RefundRequest(
        id="ref-1",
        tenant="demo",
        transaction_id=paid.transaction_id,
        amount=Decimal("20.00"),
        currency="INR",
        reason="damaged",
        idempotency_key="refund-key-1",
    )
    razorpay.server.delay_answers("refundPayment", 1.0)
    with pytest.raises(OutcomeUnknownError):
        provider_harness.call(provider, "refund", refund=request)
    again = provider_harness.call(provider, "refund", refund=request)
    [refund] = razorpay.refunds.values()
    assert (again.refund_id, again.amount, again.status) == (refund["id"], Decimal("20.00"), "succeeded")
    assert refund["receipt"] == receipt_for("demo", "refund:refund-key-1")
    assert refund["notes"] == {"hub_refund_id": "ref-1", "hub_tenant": "demo", "reason": "damaged"}
    status = provider_harness.call(
        provider,
        "payment_status",
        lookup=PaymentLookup(tenant="demo", payment_id="p", transaction_id=paid.transaction_id),
    )
    assert (status.status, status.amount_refunded) == ("partially_refunded", Decimal("20.00"))


def test_authorise_then_capture_through_the_hub(tmp_path: Path, razorpay: RazorpayFake) -> None:
    with hub_for(tmp_path, razorpay) as api:
        body = {"amount": "99.99", "currency": "INR", "paymentMethod": SUCCESS, "capture": False}
        authorised = data(api.post(f"{API}/payments", json=body), 201)
        assert (authorised["status"], authorised["rawStatus"]) == ("requires_capture", "authorized")
        payment_id = authorised["paymentId"]
        assert data(api.post(f"{API}/payments/{payment_id}/cancel", json={}), 422)["code"] == "unsupported"
        partial = data(api.post(f"{API}/payments/{payment_id}/capture", json={"amount": "50.00"}), 422)
        assert "whole authorised amount" in partial["message"]
        captured = data(api.post(f"{API}/payments/{payment_id}/capture", json={}), 200)
        assert (captured["status"], captured["amountCaptured"]) == ("succeeded", 99.99)
        assert [p["status"] for p in razorpay.payments.values()] == ["captured"]

        refund = data(api.post(f"{API}/payments/{payment_id}/refunds", json={"amount": "9.99"}), 201)
        assert refund["amount"] == 9.99
        [payment_entity] = razorpay.payments.values()
        [refund_entity] = razorpay.refunds.values()
        event = webhook_body("refund.processed", payment_entity, refund=refund_entity)
        assert data(post_webhook(api, event, webhook_headers(event, "evt_refund_1")), 200)["updated"] == 1
        view = data(api.get(f"{API}/payments/{payment_id}"), 200)
        assert (view["status"], view["amountRefunded"]) == ("partially_refunded", 9.99)


def test_webhook_events_map_onto_hub_statuses(provider_harness: ProviderHarness, razorpay: RazorpayFake) -> None:
    provider = build(provider_harness, razorpay.server.url)
    payment_entity = {
        "id": "pay_AbCdEfGhIjKlMn",
        "order_id": "order_AbCdEfGhIjKlMn",
        "amount": 5000,
        "currency": "INR",
        "status": "failed",
        "amount_refunded": 0,
        "error_code": "BAD_REQUEST_ERROR",
        "error_reason": "payment_failed",
    }

    def events(body: bytes, event_id: str = "evt_x") -> list[Any]:
        request = WebhookRequest(
            url="https://hub/x", headers=webhook_headers(body, event_id), body=body, form={}, query={}
        )
        result: list[Any] = provider_harness.call(provider, "handle_webhook", webhook=request)
        return result

    [failed] = events(webhook_body("payment.failed", payment_entity))
    assert (failed.reference, failed.status, failed.details["error_reason"]) == (
        "order_AbCdEfGhIjKlMn",
        "failed",
        "payment_failed",
    )
    authorised = {**payment_entity, "status": "authorized", "error_code": None, "error_reason": None}
    assert events(webhook_body("payment.authorized", authorised))[0].status == "requires_capture"
    order = {"id": "order_AbCdEfGhIjKlMn", "entity": "order", "status": "paid", "currency": "INR"}
    [paid] = events(webhook_body("order.paid", {**authorised, "status": "captured"}, order=order))
    assert (paid.reference, paid.status) == ("order_AbCdEfGhIjKlMn", "succeeded")
    refunded = {**authorised, "status": "refunded", "amount_refunded": 5000, "refund_status": "full"}
    [full] = events(webhook_body("refund.processed", refunded, refund={"id": "rfnd_AbCdEfGhIjKlMn"}))
    assert (full.status, full.details["amount_refunded"], full.details["razorpay_refund_id"]) == (
        "refunded",
        "50.00",
        "rfnd_AbCdEfGhIjKlMn",
    )
    assert events(webhook_body("refund.failed", refunded)) == []
    assert events(webhook_body("refund.created", None, refund={"id": "rfnd_AbCdEfGhIjKlMn"})) == []
    assert events(webhook_body("payment.captured", {**authorised, "order_id": None})) == []  # not an order's
    no_header = webhook_body("payment.captured", {**authorised, "status": "captured"})
    request = WebhookRequest(
        url="https://hub/x",
        headers={"X-Razorpay-Signature": webhook_headers(no_header, "e")["X-Razorpay-Signature"]},
        body=no_header,
        form={},
        query={},
    )
    [fallback] = provider_harness.call(provider, "handle_webhook", webhook=request)
    assert fallback.event_id.startswith("sha256:")  # stable for the same delivery, so still deduplicated


def test_a_checkout_paid_later_is_found_by_a_refresh(tmp_path: Path, razorpay: RazorpayFake) -> None:
    with hub_for(tmp_path, razorpay) as api:
        created = data(api.post(f"{API}/payments", json={"amount": "5.00", "currency": "INR"}), 201)
        assert created["status"] == "requires_action"
        razorpay.checkout(created["transactionId"])
        view = data(api.get(f"{API}/payments/{created['paymentId']}?refresh=true"), 200)
        assert (view["status"], view["amountCaptured"]) == ("succeeded", 5.0)
