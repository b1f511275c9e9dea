"""Payments: the pay contract (hooks, statuses, the sandbox gateway, the conformance kit's ``check_pay``).

No mocks: the sandbox gateway is built through :class:`hub.testing.ProviderHarness` exactly as the core
builds it and keeps its payments in a real SQLite file; the broken gateways below are real providers with
one defect each, proving that ``check_pay`` catches it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from marshmallow import Schema, fields

from hub import hookimpl
from hub.builtins.sandbox import SIGNATURE_HEADER, sign_webhook
from hub.capabilities import (
    PAYMENT_STATUSES,
    CancelRequest,
    CaptureRequest,
    PaymentLookup,
    PaymentRequest,
    PaymentResult,
    Provider,
    RefundRequest,
    RefundResult,
    WebhookRequest,
    payment_status_supersedes,
)
from hub.errors import (
    ConfigurationError,
    NotFoundError,
    OutcomeUnknownError,
    PermanentError,
    SignatureError,
    TransientError,
    UnsupportedError,
)
from hub.resilience import allows_failover, is_retryable
from hub.testing import ProviderHarness
from hub.testing.contracts import check_pay, run_contract

TENANT = "acme"
LOST_EVERY_TIME = "4000000000000408"
LOST_ONCE = "4000000000001408"
LOST_ON_THE_WAY = "4000000000002408"
PROCESSING = "4000000000000202"


def payment(
    method: str | None = None,
    amount: str = "10.00",
    *,
    key: str | None = None,
    capture: bool = True,
    tenant: str = TENANT,
    order_id: str | None = None,
    payment_id: str | None = None,
) -> PaymentRequest:
    return PaymentRequest(
        id=payment_id or f"pay_{uuid.uuid4().hex[:12]}",
        tenant=tenant,
        amount=Decimal(amount),
        currency="USD",
        order_id=order_id,
        payment_method=method,
        idempotency_key=key,
        capture=capture,
    )


def refund(transaction_id: str, amount: str | None, tenant: str = TENANT) -> RefundRequest:
    return RefundRequest(
        id=uuid.uuid4().hex,
        tenant=tenant,
        transaction_id=transaction_id,
        amount=None if amount is None else Decimal(amount),
        currency="USD",
        idempotency_key=uuid.uuid4().hex,
    )


def capture(transaction_id: str, amount: str | None, key: str | None = None, tenant: str = TENANT) -> CaptureRequest:
    return CaptureRequest(
        id=uuid.uuid4().hex,
        tenant=tenant,
        transaction_id=transaction_id,
        amount=None if amount is None else Decimal(amount),
        currency="USD",
        idempotency_key=key or uuid.uuid4().hex,
    )


def cancel(transaction_id: str, tenant: str = TENANT) -> CancelRequest:
    return CancelRequest(id=uuid.uuid4().hex, tenant=tenant, transaction_id=transaction_id, reason="abandoned")


def lookup(tenant: str = TENANT, **names: Any) -> PaymentLookup:
    return PaymentLookup(tenant=tenant, payment_id=names.pop("payment_id", "pay_unknown"), **names)


def pay_requests(sandbox: Any, transaction_id: str) -> int:
    """How many pay() calls the sandbox received for one payment (the first and every retry with its key)."""
    with sqlite3.connect(sandbox.database) as connection:
        return connection.execute(
            "SELECT requests FROM payments WHERE transaction_id = ?", (transaction_id,)
        ).fetchone()[0]


def payment_count(sandbox: Any) -> int:
    with sqlite3.connect(sandbox.database) as connection:
        return connection.execute("SELECT COUNT(*) FROM payments").fetchone()[0]


# --- errors and statuses ----------------------------------------------------------------------


def test_outcome_unknown_is_retried_but_never_failed_over() -> None:
    error = OutcomeUnknownError("read timed out")
    assert isinstance(error, TransientError)
    assert is_retryable(error) and not allows_failover(error)
    # Only errors proving nothing happened move a payment to another gateway.
    assert allows_failover(TransientError("connection refused")) and allows_failover(ConfigurationError("bad key"))
    assert not allows_failover(PermanentError("declined"))


@pytest.mark.parametrize(
    ("current", "new", "moves"),
    [
        ("processing", "succeeded", True),
        ("requires_action", "processing", True),
        ("requires_capture", "succeeded", True),
        ("requires_capture", "canceled", True),
        ("succeeded", "partially_refunded", True),
        ("partially_refunded", "refunded", True),
        (None, "processing", True),
        ("succeeded", "processing", False),  # a late event
        ("refunded", "partially_refunded", False),
        ("failed", "succeeded", False),  # two ends: neither replaces the other
        ("succeeded", "failed", False),
        ("succeeded", "succeeded", False),
        ("processing", "pending", False),  # not a hub status
    ],
)
def test_payment_statuses_only_move_forwards(current: str | None, new: str, moves: bool) -> None:
    assert payment_status_supersedes(new, current) is moves


# --- the sandbox gateway ----------------------------------------------------------------------


def test_sandbox_every_answer_lost_charges_once_and_lookup_finds_it(provider_harness: ProviderHarness) -> None:
    sandbox = provider_harness.build("sandbox")
    request = payment(LOST_EVERY_TIME, key="order-7-attempt-1", order_id="order-7")
    for _ in range(3):  # the core's retries with the same idempotency key
        with pytest.raises(OutcomeUnknownError) as raised:
            provider_harness.call(sandbox, "pay", payment=request)
        assert raised.value.provider_code == "timeout" and not raised.value.failover
    assert payment_count(sandbox) == 1  # charged once, whatever the retries

    by_key = provider_harness.call(sandbox, "payment_status", lookup=lookup(idempotency_key="order-7-attempt-1"))
    assert by_key is not None and by_key.status == "succeeded" and by_key.amount == Decimal("10.00")
    assert pay_requests(sandbox, by_key.transaction_id) == 3
    by_id = provider_harness.call(sandbox, "payment_status", lookup=lookup(transaction_id=by_key.transaction_id))
    by_hub_id = provider_harness.call(sandbox, "payment_status", lookup=lookup(payment_id=request.id))
    by_order = provider_harness.call(
        sandbox, "payment_status", lookup=lookup(order_id="order-7", amount=Decimal("10.00"), currency="usd")
    )
    assert by_id == by_hub_id == by_order == by_key
    assert by_key.raw_status == "succeeded" and by_key.amount_captured == Decimal("10.00")


def test_sandbox_first_answer_lost_then_the_retry_gets_the_payment(provider_harness: ProviderHarness) -> None:
    sandbox = provider_harness.build("sandbox")
    request = payment(LOST_ONCE, key="k-once")
    with pytest.raises(OutcomeUnknownError):
        provider_harness.call(sandbox, "pay", payment=request)
    retried = provider_harness.call(sandbox, "pay", payment=request)
    assert retried.status == "succeeded"
    assert payment_count(sandbox) == 1 and pay_requests(sandbox, retried.transaction_id) == 2


def test_sandbox_request_lost_on_the_way_charges_nothing(provider_harness: ProviderHarness) -> None:
    sandbox = provider_harness.build("sandbox")
    request = payment(LOST_ON_THE_WAY, key="k-lost")
    with pytest.raises(OutcomeUnknownError):
        provider_harness.call(sandbox, "pay", payment=request)
    assert provider_harness.call(sandbox, "payment_status", lookup=lookup(idempotency_key="k-lost")) is None
    assert provider_harness.call(sandbox, "payment_status", lookup=lookup(payment_id=request.id)) is None


def test_sandbox_lookup_of_unknown_or_foreign_payments_is_none(provider_harness: ProviderHarness) -> None:
    sandbox = provider_harness.build("sandbox")
    made = provider_harness.call(sandbox, "pay", payment=payment(key="mine"))
    assert provider_harness.call(sandbox, "payment_status", lookup=lookup(transaction_id="sbx_pi_nope")) is None
    assert (
        provider_harness.call(sandbox, "payment_status", lookup=lookup("globex", transaction_id=made.transaction_id))
        is None
    )
    assert provider_harness.call(sandbox, "payment_status", lookup=lookup("globex", idempotency_key="mine")) is None


def test_sandbox_processing_payment_settles_later_and_cannot_be_refunded_before(
    provider_harness: ProviderHarness,
) -> None:
    sandbox = provider_harness.build("sandbox", {"settle_after": 0.3})
    made = provider_harness.call(sandbox, "pay", payment=payment(PROCESSING, key="slow"))
    assert (made.status, made.raw_status, made.amount_captured) == ("processing", "processing", None)
    with pytest.raises(PermanentError) as raised:
        provider_harness.call(sandbox, "refund", refund=refund(made.transaction_id, None))
    assert raised.value.provider_code == "payment_intent_unexpected_state"
    assert (
        provider_harness.call(sandbox, "payment_status", lookup=lookup(transaction_id=made.transaction_id)).status
        == "processing"
    )
    time.sleep(0.35)
    settled = provider_harness.call(sandbox, "payment_status", lookup=lookup(transaction_id=made.transaction_id))
    assert settled.status == "succeeded" and settled.amount_captured == Decimal("10.00")
    assert provider_harness.call(sandbox, "refund", refund=refund(made.transaction_id, None)).amount == Decimal("10.00")


def test_sandbox_processing_authorisation_settles_to_requires_capture(provider_harness: ProviderHarness) -> None:
    sandbox = provider_harness.build("sandbox", {"settle_after": 0})
    made = provider_harness.call(sandbox, "pay", payment=payment(PROCESSING, capture=False))
    settled = provider_harness.call(sandbox, "payment_status", lookup=lookup(transaction_id=made.transaction_id))
    assert settled.status == "requires_capture"


def test_sandbox_authorise_then_capture_part_and_refund_only_what_was_captured(
    provider_harness: ProviderHarness,
) -> None:
    sandbox = provider_harness.build("sandbox")
    authorised = provider_harness.call(sandbox, "pay", payment=payment("4242424242424242", "100.00", capture=False))
    assert (authorised.status, authorised.amount_captured) == ("requires_capture", None)
    with pytest.raises(PermanentError, match="only succeeded payments can be refunded"):
        provider_harness.call(sandbox, "refund", refund=refund(authorised.transaction_id, "1.00"))
    with pytest.raises(PermanentError) as too_much:
        provider_harness.call(sandbox, "capture", capture=capture(authorised.transaction_id, "100.01"))
    assert too_much.value.provider_code == "amount_too_large"

    captured = provider_harness.call(
        sandbox, "capture", capture=capture(authorised.transaction_id, "60.00", key="cap-1")
    )
    assert (captured.status, captured.amount, captured.amount_captured) == (
        "succeeded",
        Decimal("100.00"),
        Decimal("60.00"),
    )
    # A retry of the same capture (same key) answers again; another capture is refused.
    again = provider_harness.call(sandbox, "capture", capture=capture(authorised.transaction_id, "60.00", key="cap-1"))
    assert again.amount_captured == Decimal("60.00")
    with pytest.raises(PermanentError, match="requires_capture"):
        provider_harness.call(sandbox, "capture", capture=capture(authorised.transaction_id, None))

    with pytest.raises(PermanentError) as over:
        provider_harness.call(sandbox, "refund", refund=refund(authorised.transaction_id, "60.01"))
    assert over.value.provider_code == "amount_too_large"
    provider_harness.call(sandbox, "refund", refund=refund(authorised.transaction_id, "20.00"))
    status = provider_harness.call(sandbox, "payment_status", lookup=lookup(transaction_id=authorised.transaction_id))
    assert (status.status, status.raw_status, status.amount_refunded) == (
        "partially_refunded",
        "succeeded",
        Decimal("20.00"),
    )
    assert provider_harness.call(sandbox, "refund", refund=refund(authorised.transaction_id, None)).amount == Decimal(
        "40.00"
    )
    status = provider_harness.call(sandbox, "payment_status", lookup=lookup(transaction_id=authorised.transaction_id))
    assert status.status == "refunded" and status.amount_refunded == Decimal("60.00")


def test_sandbox_cancel_releases_an_authorisation_and_refuses_a_charge(provider_harness: ProviderHarness) -> None:
    sandbox = provider_harness.build("sandbox")
    authorised = provider_harness.call(sandbox, "pay", payment=payment(capture=False))
    canceled = provider_harness.call(sandbox, "cancel", cancel=cancel(authorised.transaction_id))
    assert canceled.status == "canceled"
    assert provider_harness.call(sandbox, "cancel", cancel=cancel(authorised.transaction_id)).status == "canceled"
    with pytest.raises(PermanentError):
        provider_harness.call(sandbox, "capture", capture=capture(authorised.transaction_id, None))

    action = provider_harness.call(sandbox, "pay", payment=payment("4000002500003155"))
    assert provider_harness.call(sandbox, "cancel", cancel=cancel(action.transaction_id)).status == "canceled"

    charged = provider_harness.call(sandbox, "pay", payment=payment())
    with pytest.raises(PermanentError, match="refund a succeeded one"):
        provider_harness.call(sandbox, "cancel", cancel=cancel(charged.transaction_id))
    with pytest.raises(NotFoundError):
        provider_harness.call(sandbox, "cancel", cancel=cancel(charged.transaction_id, tenant="globex"))
    with pytest.raises(NotFoundError):
        provider_harness.call(sandbox, "capture", capture=capture("sbx_pi_nope", None))


def test_sandbox_webhooks_are_signed_and_carry_the_hub_status(provider_harness: ProviderHarness) -> None:
    sandbox = provider_harness.build("sandbox", {"webhook_secret": "whsec-test"})
    made = provider_harness.call(sandbox, "pay", payment=payment())
    provider_harness.call(sandbox, "refund", refund=refund(made.transaction_id, "4.00"))
    body, headers = sandbox.webhook(made.transaction_id, event_id="evt-1")

    def request(body: bytes, headers: dict[str, str]) -> WebhookRequest:
        return WebhookRequest(
            url="http://hub.test/api/integrations/webhooks/sandbox", headers=headers, body=body, form={}, query={}
        )

    lower = {name.lower(): value for name, value in headers.items()}  # names compared case-insensitively
    [event] = provider_harness.call(sandbox, "handle_webhook", webhook=request(body, lower))
    assert (event.event_id, event.reference, event.status) == ("evt-1", made.transaction_id, "partially_refunded")
    assert event.details == {"raw_status": "succeeded", "amount_refunded": "4.00"}
    with pytest.raises(SignatureError):
        provider_harness.call(
            sandbox, "handle_webhook", webhook=request(body, {SIGNATURE_HEADER: sign_webhook("other", body)})
        )
    with pytest.raises(SignatureError):
        provider_harness.call(sandbox, "handle_webhook", webhook=request(body.replace(b"evt-1", b"evt-2"), headers))
    unsigned = provider_harness.build("sandbox")
    with pytest.raises(SignatureError, match="no webhook_secret"):
        provider_harness.call(unsigned, "handle_webhook", webhook=request(body, headers))


def test_sandbox_opens_a_database_from_before_the_new_columns(provider_harness: ProviderHarness) -> None:
    sandbox = provider_harness.build("sandbox")
    sandbox.database.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(sandbox.database) as connection:  # the first release's table, with one payment
        connection.execute(
            "CREATE TABLE payments (transaction_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, idempotency_key TEXT,"
            " amount TEXT NOT NULL, currency TEXT NOT NULL, status TEXT NOT NULL, order_id TEXT, details TEXT NOT NULL,"
            " created_at TEXT NOT NULL, UNIQUE (tenant, idempotency_key))"
        )
        connection.execute(
            "INSERT INTO payments VALUES ('sbx_pi_old', ?, 'old-key', '8.00', 'USD', 'succeeded', NULL, ?, '2024-01-01')",
            (TENANT, json.dumps({"sandbox": True})),
        )
    old = provider_harness.call(sandbox, "payment_status", lookup=lookup(transaction_id="sbx_pi_old"))
    assert old.status == "succeeded"
    assert provider_harness.call(sandbox, "refund", refund=refund("sbx_pi_old", None)).amount == Decimal("8.00")
    assert provider_harness.call(sandbox, "pay", payment=payment(capture=False)).status == "requires_capture"


def test_sandbox_meets_the_whole_pay_contract_with_every_optional_check(provider_harness: ProviderHarness) -> None:
    sandbox = provider_harness.build("sandbox", {"settle_after": 60})
    results = run_contract(
        provider_harness,
        sandbox,
        succeeding_method="4242424242424242",
        declined_method="4000000000000002",
        processing_method=PROCESSING,
        outcome_unknown_method=LOST_EVERY_TIME,
    )
    assert results["pay"].status == "succeeded" and results["health"].ok


# --- the conformance kit can fail: one defect per gateway ----------------------------------------


class MemoryGatewaySettings(Schema):
    #: The one thing this gateway gets wrong (empty: nothing; it then meets the contract).
    flaw = fields.String(load_default="")


class MemoryGateway(Provider):
    """A complete in-memory gateway; ``flaw`` breaks one rule of the contract."""

    type_name = "memory-gateway"
    capability = "pay"
    settings_schema = MemoryGatewaySettings
    payments: ClassVar[dict[str, dict[str, Any]]] = {}
    _lock = threading.Lock()

    def _flaw(self, name: str) -> bool:
        return self.settings["flaw"] == name

    def _result(self, stored: dict[str, Any]) -> PaymentResult:
        status = stored["status"]
        if status == "succeeded" and stored["refunded"] and not self._flaw("ignores-refunds"):
            status = "refunded" if stored["refunded"] >= stored["captured"] else "partially_refunded"
        return PaymentResult(
            stored["id"],
            status,
            stored["amount"],
            stored["currency"],
            raw_status=stored["status"],
            amount_captured=stored["captured"],
            amount_refunded=stored["refunded"],
        )

    def _stored(self, tenant: str, transaction_id: str) -> dict[str, Any]:
        stored = self.payments.get(transaction_id)
        if stored is None or stored["tenant"] != tenant:
            raise NotFoundError(f"no payment {transaction_id}")
        return stored

    @hookimpl
    def pay(self, payment: PaymentRequest) -> PaymentResult:
        if payment.payment_method == "declined":
            raise PermanentError("declined", provider_code="card_declined")
        with self._lock:
            for stored in self.payments.values():
                if (
                    stored["key"] == payment.idempotency_key
                    and stored["tenant"] == payment.tenant
                    and not self._flaw("charges-twice")
                ):
                    return self._result(stored)
            transaction_id = f"mem_{uuid.uuid4().hex[:12]}"
            status = "succeeded" if payment.capture else "requires_capture"
            if self._flaw("pending"):
                status = "pending"  # the hub's word is "processing"
            self.payments[transaction_id] = {
                "id": transaction_id,
                "tenant": payment.tenant,
                "key": payment.idempotency_key,
                "amount": payment.amount,
                "currency": payment.currency,
                "status": status,
                "captured": payment.amount if status == "succeeded" else None,
                "refunded": Decimal(0),
            }
            if payment.payment_method == "lost":
                error = TransientError if self._flaw("lost-is-transient") else OutcomeUnknownError
                raise error("read timed out")
            return self._result(self.payments[transaction_id])

    @hookimpl
    def payment_status(self, lookup: PaymentLookup) -> PaymentResult | None:
        with self._lock:
            if lookup.transaction_id is None:
                raise UnsupportedError("finds payments by transaction id only")
            stored = self.payments.get(lookup.transaction_id)
            if stored is None or stored["tenant"] != lookup.tenant:
                if self._flaw("invents-payments"):
                    return PaymentResult(lookup.transaction_id, "succeeded", Decimal("25.00"), "USD")
                return None
            return self._result(stored)

    @hookimpl
    def capture(self, capture: CaptureRequest) -> PaymentResult:
        with self._lock:
            stored = self._stored(capture.tenant, capture.transaction_id)
            if stored["status"] != "requires_capture":
                raise PermanentError("not capturable")
            amount = stored["amount"] if capture.amount is None else capture.amount
            if amount > stored["amount"]:
                raise PermanentError("more than authorised")
            if self._flaw("captures-everything"):
                amount = stored["amount"]
            stored.update(status="succeeded", captured=amount)
            return self._result(stored)

    @hookimpl
    def cancel(self, cancel: CancelRequest) -> PaymentResult:
        with self._lock:
            stored = self._stored(cancel.tenant, cancel.transaction_id)
            if stored["status"] not in ("requires_capture", "canceled") and not self._flaw("cancels-anything"):
                raise PermanentError("only an authorisation can be canceled")
            stored["status"] = "canceled"
            return self._result(stored)

    @hookimpl
    def refund(self, refund: RefundRequest) -> RefundResult:
        with self._lock:
            stored = self._stored(refund.tenant, refund.transaction_id)
            if stored["status"] != "succeeded" and not self._flaw("refunds-authorisations"):
                raise PermanentError("only a succeeded payment can be refunded")
            left = (stored["captured"] or stored["amount"]) - stored["refunded"]
            amount = left if refund.amount is None else refund.amount
            if amount > left or amount <= 0:
                raise PermanentError("more than is left", provider_code="amount_too_large")
            stored["refunded"] += amount
            return RefundResult(f"re_{uuid.uuid4().hex[:8]}", "succeeded", amount, refund.currency)


def test_a_complete_gateway_without_lookup_by_key_meets_the_contract(provider_harness: ProviderHarness) -> None:
    provider_harness.add_provider_classes(MemoryGateway)
    gateway = provider_harness.build("memory-gateway")
    check_pay(provider_harness, gateway, declined_method="declined", outcome_unknown_method="lost")


@pytest.mark.parametrize(
    ("flaw", "inputs", "complaint"),
    [
        ("pending", {}, "status 'pending' is not one of"),
        ("charges-twice", {}, "a second pay() with the same idempotency_key charged again"),
        ("invents-payments", {}, "payment_status() of an unknown transaction returned"),
        ("ignores-refunds", {}, "after a partial refund returned 'succeeded', expected 'partially_refunded'"),
        ("cancels-anything", {}, "cancelling a succeeded payment returned"),
        ("refunds-authorisations", {}, "refunding a payment not captured yet returned"),
        ("captures-everything", {}, "with amount_captured Decimal('25.00')"),
        ("lost-is-transient", {"outcome_unknown_method": "lost"}, "it must raise OutcomeUnknownError"),
    ],
)
def test_check_pay_fails_for_a_gateway_with_one_defect(
    provider_harness: ProviderHarness, flaw: str, inputs: dict[str, Any], complaint: str
) -> None:
    provider_harness.add_provider_classes(MemoryGateway)
    gateway = provider_harness.build("memory-gateway", {"flaw": flaw})
    with pytest.raises(AssertionError) as raised:
        check_pay(provider_harness, gateway, **inputs)
    assert complaint in str(raised.value)
    assert "memory-gateway provider" in str(raised.value)


def test_every_payment_status_is_documented_in_the_hook_reference() -> None:
    from pathlib import Path

    reference = (Path(__file__).resolve().parent.parent / "docs" / "hooks.md").read_text(encoding="utf-8")
    assert all(f"| `{status}`" in reference for status in PAYMENT_STATUSES)
