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
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pytest
from marshmallow import Schema, fields

from hub import hookimpl
from hub.api import create_app
from hub.builtins.sandbox import SIGNATURE_HEADER, SandboxGateway, sign_webhook
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
    ValidationError,
)
from hub.manager import IntegrationManager
from hub.records import utcnow
from hub.resilience import allows_failover, is_retryable
from hub.testing import ProviderHarness
from hub.testing.contracts import check_pay, run_contract
from tests.conftest import API, base_config, data_of, error_of

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
    if not sandbox.database.exists():
        return 0  # the gateway never wrote anything
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


# --- through the core: the REST API and the Python facade -------------------------------------------


class LossySandbox(SandboxGateway):
    """The sandbox with two outages a gateway can have, switched per test: its status lookups failing
    (``lookups_down``), and the answers to refunds lost after the refund was made (``lose_refund_answers``)."""

    type_name = "lossy-sandbox"
    lookups_down: ClassVar[bool] = False
    lose_refund_answers: ClassVar[int] = 0

    @hookimpl
    def payment_status(self, lookup: PaymentLookup) -> PaymentResult | None:
        if LossySandbox.lookups_down:
            raise TransientError("status endpoint unreachable")
        return super().payment_status(lookup)

    @hookimpl
    def refund(self, refund: RefundRequest) -> RefundResult:
        made = super().refund(refund)
        if LossySandbox.lose_refund_answers:
            LossySandbox.lose_refund_answers -= 1
            raise OutcomeUnknownError("read timed out after the refund was sent")
        return made


class ChargeOnlyGateway(Provider):
    """A gateway that cannot authorise without capturing: it has no capture hook."""

    type_name = "charge-only"
    capability = "pay"

    @hookimpl
    def pay(self, payment: PaymentRequest) -> PaymentResult:
        return PaymentResult(f"co_{payment.id}", "succeeded", payment.amount, payment.currency)

    @hookimpl
    def refund(self, refund: RefundRequest) -> RefundResult:
        return RefundResult(f"re_{refund.id}", "succeeded", refund.amount or Decimal(0), refund.currency)

    @hookimpl
    def payment_status(self, lookup: PaymentLookup) -> PaymentResult | None:
        return None


class PayTestPlugin:
    @staticmethod
    @hookimpl
    def register_providers(register: Any) -> None:
        register(LossySandbox)
        register(ChargeOnlyGateway)
        register(MemoryGateway)


class Hub:
    """A hub with two sandbox gateways (each its own account: its own database), its client and a token."""

    def __init__(self, manager: IntegrationManager) -> None:
        self.manager = manager
        self.client = create_app(manager=manager).test_client()
        self.headers = {
            "Authorization": f"Bearer {manager.tokens.create('demo', 'pay-tests')[1]}",
            "X-Tenant-ID": "demo",
        }

    def gateway(self, name: str) -> Any:
        return self.manager.registry.slots[name].instance

    def post(self, path: str, body: dict[str, Any], status: int, **headers: str) -> dict[str, Any]:
        response = self.client.post(f"{API}{path}", json=body, headers={**self.headers, **headers})
        answer = response.get_json()
        assert response.status_code == status, answer
        return answer["data"] if answer["success"] else answer

    def get(self, path: str) -> dict[str, Any]:
        response = self.client.get(f"{API}{path}", headers=self.headers)
        assert response.status_code == 200, response.get_json()
        return response.get_json()["data"]


@pytest.fixture
def make_hub(tmp_path: Path) -> Iterator[Any]:
    made: list[IntegrationManager] = []

    def make(gateway_type: str = "sandbox", services: list[str] | None = None, **overrides: Any) -> Hub:
        LossySandbox.lookups_down, LossySandbox.lose_refund_answers = False, 0
        providers = {
            "primary": {
                "type": gateway_type,
                "database": "primary.db",
                "settle_after": 600,
                "webhook_secret": "whsec-primary",
            },
            "backup": {"type": "sandbox", "database": "backup.db"},
            "charge-only": {"type": "charge-only"},
            "says-pending": {"type": "memory-gateway", "flaw": "pending"},
        }
        config = base_config(
            tmp_path / f"var-{len(made)}",
            providers,
            {"payment": {"providers": services or ["primary", "backup"]}},
            **overrides,
        )
        manager = IntegrationManager(config, environ={}, entry_points=False, plugins=[(PayTestPlugin(), "pay-tests")])
        made.append(manager)
        return Hub(manager)

    yield make
    for manager in made:
        manager.close()


def test_payment_refunds(client: Any, headers: dict[str, str]) -> None:
    payment = data_of(
        client.post(f"{API}/payments", json={"amount": "30.00", "currency": "EUR", "orderId": "o-1"}, headers=headers),
        201,
    )
    assert (payment["status"], payment["rawStatus"], payment["amountCaptured"]) == ("succeeded", "succeeded", 30.0)
    partial = data_of(
        client.post(
            f"{API}/payments/{payment['paymentId']}/refunds", json={"amount": 10, "reason": "damaged"}, headers=headers
        ),
        201,
    )
    assert partial["success"] and partial["amount"] == 10.0 and partial["gateway"] == "sandbox"
    error = error_of(
        client.post(f"{API}/payments/{payment['paymentId']}/refunds", json={"amount": 25}, headers=headers), 422
    )
    assert error.get("code") == "amount_too_large" and "amount" in error["errors"]
    fetched = data_of(client.get(f"{API}/payments/{payment['paymentId']}", headers=headers))
    assert (fetched["status"], fetched["amountRefunded"]) == ("partially_refunded", 10.0)
    rest = data_of(
        client.post(f"{API}/refunds", json={"transactionId": payment["transactionId"]}, headers=headers), 201
    )
    assert rest["amount"] == 20.0
    fetched = data_of(client.get(f"{API}/payments/{payment['paymentId']}", headers=headers))
    assert len(fetched["refunds"]) == 2 and (fetched["status"], fetched["amountRefunded"]) == ("refunded", 30.0)
    data_of(client.get(f"{API}/refunds/{rest['refundId']}", headers=headers))
    error = error_of(client.post(f"{API}/payments/{payment['paymentId']}/refunds", json={}, headers=headers), 422)
    assert error["code"] == "payment_intent_unexpected_state"


def test_declined_card_is_a_422_with_the_provider_code_and_a_failed_record(
    client: Any, headers: dict[str, str]
) -> None:
    error = error_of(
        client.post(
            f"{API}/payments",
            json={"amount": 5, "currency": "USD", "paymentMethod": "4000000000000002"},
            headers=headers,
        ),
        422,
    )
    assert error["code"] == "card_declined"
    failed = data_of(client.get(f"{API}/payments?status=failed", headers=headers))["items"]
    assert len(failed) == 1 and "4000000000000002" not in json.dumps(failed)


def test_test_payment_with_an_unknown_gateway_names_the_field(client: Any, headers: dict[str, str]) -> None:
    body = error_of(
        client.post(
            f"{API}/test/payment", json={"amount": 10, "currency": "USD", "gateway": "stripe"}, headers=headers
        ),
        422,
    )
    assert "gateway" in body["errors"]


def test_outcome_unknown_is_retried_on_the_same_gateway_then_found_by_lookup_never_failed_over(make_hub: Any) -> None:
    hub = make_hub()
    paid = hub.post(
        "/payments",
        {"amount": "42.00", "currency": "USD", "orderId": "o-7", "paymentMethod": LOST_EVERY_TIME},
        201,
        **{"Idempotency-Key": "order-7"},
    )
    assert (paid["status"], paid["gateway"], paid["outcomeUnknown"]) == ("succeeded", "primary", False)
    primary, backup = hub.gateway("primary"), hub.gateway("backup")
    # Retried (attempts: 2) on the same gateway with the same key: one charge; the backup never saw it.
    assert payment_count(primary) == 1 and pay_requests(primary, paid["transactionId"]) == 2
    assert payment_count(backup) == 0
    record = hub.manager.get_record(paid["paymentId"], "demo", "payment")
    assert [(a["provider"], a["outcome"], a["retries"]) for a in record.attempt_log] == [("primary", "failed", 1)]
    operations = [
        (e.provider, e.operation, e.outcome) for e in reversed(hub.manager.audit_log("demo", service="payment"))
    ]
    assert operations == [("primary", "pay", "error"), ("primary", "payment_status", "success")]
    # The lookup used the key the gateway was given: the caller's Idempotency-Key.
    with sqlite3.connect(primary.database) as connection:
        assert connection.execute("SELECT idempotency_key FROM payments").fetchone() == ("order-7",)
    refund = hub.post(f"/payments/{paid['paymentId']}/refunds", {"amount": 2}, 201)
    assert refund["gateway"] == "primary"


def test_an_open_circuit_during_the_retries_does_not_fail_an_unknown_outcome_over(make_hub: Any) -> None:
    # fail_max 1: the first lost answer opens primary's circuit; the retry then meets the open circuit.
    hub = make_hub(circuit_breaker={"fail_max": 1, "reset_timeout": 60})
    paid = hub.post("/payments", {"amount": "9.00", "currency": "USD", "paymentMethod": LOST_EVERY_TIME}, 202)
    assert (paid["status"], paid["gateway"], paid["outcomeUnknown"]) == ("processing", "primary", True)
    assert payment_count(hub.gateway("primary")) == 1
    assert payment_count(hub.gateway("backup")) == 0


def test_unknown_outcome_stays_processing_until_the_reconciliation_job_finds_it(make_hub: Any) -> None:
    # A breaker that stays closed: this test is about the lookups, not about the circuit.
    hub = make_hub("lossy-sandbox", circuit_breaker={"fail_max": 100, "reset_timeout": 1})
    hub.manager.pay.reconciler.reconcile_first = timedelta(0)  # every check due at once
    LossySandbox.lookups_down = True
    paid = hub.post("/payments", {"amount": "15.00", "currency": "USD", "paymentMethod": LOST_EVERY_TIME}, 202)
    assert (paid["status"], paid["transactionId"], paid["outcomeUnknown"], paid["success"]) == (
        "processing",
        None,
        True,
        False,
    )
    assert "read timed out" in paid["error"]
    assert payment_count(hub.gateway("primary")) == 1  # the money moved: the hub must not call it failed
    assert payment_count(hub.gateway("backup")) == 0
    # Not refundable, not cancelable while its outcome is unknown.
    refused = hub.post(f"/payments/{paid['paymentId']}/refunds", {}, 422)
    assert refused["code"] == "payment_intent_unexpected_state"
    assert "outcome is not known" in hub.post(f"/payments/{paid['paymentId']}/cancel", {}, 422)["message"]

    assert hub.manager.pay.reconciler.reconcile_due() == 1  # the lookup still fails: still processing
    assert hub.get(f"/payments/{paid['paymentId']}")["status"] == "processing"
    LossySandbox.lookups_down = False
    assert hub.manager.pay.reconciler.reconcile_due() == 1
    settled = hub.get(f"/payments/{paid['paymentId']}")
    assert (settled["status"], settled["outcomeUnknown"], settled["error"]) == ("succeeded", False, None)
    assert settled["transactionId"].startswith("sbx_pi_") and settled["gateway"] == "primary"
    assert hub.manager.pay.reconciler.reconcile_due() == 0  # nothing left to look up
    assert hub.post(f"/payments/{paid['paymentId']}/refunds", {}, 201)["amount"] == 15.0


def test_a_request_lost_on_the_way_fails_only_after_the_grace_period(make_hub: Any) -> None:
    hub = make_hub()
    hub.manager.pay.reconciler.reconcile_first = timedelta(0)
    paid = hub.post("/payments", {"amount": "5.00", "currency": "USD", "paymentMethod": LOST_ON_THE_WAY}, 202)
    assert paid["status"] == "processing" and paid["gateway"] == "primary"
    assert payment_count(hub.gateway("backup")) == 0  # never failed over, though nothing was charged
    hub.manager.pay.reconciler.reconcile_due()
    assert hub.get(f"/payments/{paid['paymentId']}")["status"] == "processing"  # it may still arrive
    hub.manager.pay.reconciler.unknown_grace = timedelta(0)
    hub.manager.pay.reconciler.reconcile_due()
    failed = hub.get(f"/payments/{paid['paymentId']}")
    assert failed["status"] == "failed" and "nothing was charged" in failed["error"] and not failed["outcomeUnknown"]


def test_an_error_proving_nothing_was_charged_fails_over_to_the_next_gateway(make_hub: Any) -> None:
    hub = make_hub()
    # "processing_error" (a TransientError: nothing charged) on both accounts: retried, failed over, 503.
    failed = hub.post("/payments", {"amount": "3.00", "currency": "USD", "paymentMethod": "4000000000000119"}, 503)
    assert [(a["provider"], a["retries"]) for a in failed["attempts"]] == [("primary", 1), ("backup", 1)]
    [record] = hub.manager.list_records("demo", "payment")
    assert (
        record.status == "failed" and payment_count(hub.gateway("primary")) == payment_count(hub.gateway("backup")) == 0
    )


def test_a_processing_payment_is_not_refundable_and_webhooks_move_it_forwards_only(make_hub: Any) -> None:
    hub = make_hub()
    paid = hub.post("/payments", {"amount": "20.00", "currency": "USD", "paymentMethod": PROCESSING}, 202)
    assert (paid["status"], paid["rawStatus"], paid["success"], paid["outcomeUnknown"]) == (
        "processing",
        "processing",
        False,
        False,
    )
    refused = hub.post(f"/payments/{paid['paymentId']}/refunds", {"amount": 5}, 422)
    assert refused["code"] == "payment_intent_unexpected_state" and "processing" in refused["message"]
    primary = hub.gateway("primary")
    with sqlite3.connect(primary.database) as connection:
        assert connection.execute("SELECT COUNT(*) FROM refunds").fetchone() == (0,)  # the gateway was never asked

    with sqlite3.connect(primary.database) as connection:
        connection.execute("UPDATE payments SET settles_at = 0")  # the bank debit clears; the gateway says so
    body, signature = primary.webhook(paid["transactionId"], event_id="evt-1")
    assert hub.client.post(f"{API}/webhooks/primary", data=body, headers=signature).get_json()["data"]["updated"] == 1
    assert hub.get(f"/payments/{paid['paymentId']}")["status"] == "succeeded"
    late, late_signature = primary.webhook(paid["transactionId"], status="processing", event_id="evt-0")
    assert (
        hub.client.post(f"{API}/webhooks/primary", data=late, headers=late_signature).get_json()["data"]["updated"] == 1
    )
    view = hub.get(f"/payments/{paid['paymentId']}")
    assert view["status"] == "succeeded"  # the late event is kept in the history, and changes nothing
    assert [(e["eventId"], e["status"]) for e in view["events"]] == [("evt-1", "succeeded"), ("evt-0", "processing")]
    assert hub.post(f"/payments/{paid['paymentId']}/refunds", {"amount": 5}, 201)["amount"] == 5.0
    refunded, refunded_signature = primary.webhook(paid["transactionId"], event_id="evt-2")
    hub.client.post(f"{API}/webhooks/primary", data=refunded, headers=refunded_signature)
    assert hub.get(f"/payments/{paid['paymentId']}")["status"] == "partially_refunded"


def test_refresh_asks_the_gateway(make_hub: Any) -> None:
    hub = make_hub()
    paid = hub.post("/payments", {"amount": "7.00", "currency": "USD", "paymentMethod": PROCESSING}, 202)
    hub.gateway("primary").settings["settle_after"] = 0  # the bank debit clears
    with sqlite3.connect(hub.gateway("primary").database) as connection:
        connection.execute("UPDATE payments SET settles_at = 0")
    assert hub.get(f"/payments/{paid['paymentId']}")["status"] == "processing"  # stored state, no call
    refreshed = hub.get(f"/payments/{paid['paymentId']}?refresh=true")
    assert (refreshed["status"], refreshed["amountCaptured"]) == ("succeeded", 7.0)
    assert hub.manager.payment_status(paid["paymentId"], tenant_id="demo")["status"] == "succeeded"


def test_authorise_capture_part_refund_what_was_captured_and_cancel(make_hub: Any) -> None:
    hub = make_hub()
    authorised = hub.post("/payments", {"amount": "100.00", "currency": "USD", "capture": False}, 201)
    assert (authorised["status"], authorised["capture"], authorised["success"]) == ("requires_capture", False, True)
    payment_id = authorised["paymentId"]
    assert hub.post(f"/payments/{payment_id}/refunds", {}, 422)["code"] == "payment_intent_unexpected_state"
    assert hub.post(f"/payments/{payment_id}/capture", {"amount": "100.01"}, 422)["code"] == "amount_too_large"
    captured = hub.post(f"/payments/{payment_id}/capture", {"amount": "60.00"}, 200, **{"Idempotency-Key": "cap-1"})
    assert (captured["status"], captured["amount"], captured["amountCaptured"]) == ("succeeded", 100.0, 60.0)
    again = hub.client.post(
        f"{API}/payments/{payment_id}/capture",
        json={"amount": "60.00"},
        headers={**hub.headers, "Idempotency-Key": "cap-1"},
    )
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert hub.post(f"/payments/{payment_id}/capture", {}, 422)["code"] == "payment_intent_unexpected_state"
    # Only what was captured can be refunded, checked before the gateway is asked.
    assert hub.post(f"/payments/{payment_id}/refunds", {"amount": "60.01"}, 422)["code"] == "amount_too_large"
    assert hub.post(f"/payments/{payment_id}/refunds", {}, 201)["amount"] == 60.0
    assert hub.get(f"/payments/{payment_id}")["status"] == "refunded"

    # The Python facade: authorise, cancel, and a canceled payment cannot be captured.
    other = hub.manager.process_payment("30.00", "USD", capture=False, tenant_id="demo")
    canceled = hub.manager.cancel_payment(other["paymentId"], "out of stock", tenant_id="demo")
    assert canceled["status"] == "canceled" and canceled["success"] is False
    with pytest.raises(ValidationError):
        hub.manager.capture_payment(other["paymentId"], tenant_id="demo")
    third = hub.manager.process_payment("30.00", "USD", capture=False, tenant_id="demo")
    assert hub.manager.capture_payment(third["paymentId"], tenant_id="demo")["amountCaptured"] == 30.0
    with pytest.raises(ValidationError, match="cannot be canceled"):
        hub.manager.cancel_payment(third["paymentId"], tenant_id="demo")


def test_authorise_only_payments_go_only_to_gateways_that_can_capture(make_hub: Any) -> None:
    hub = make_hub(services=["charge-only", "primary"])
    assert hub.post("/payments", {"amount": "4.00", "currency": "USD"}, 201)["gateway"] == "charge-only"
    assert hub.post("/payments", {"amount": "4.00", "currency": "USD", "capture": False}, 201)["gateway"] == "primary"
    refused = hub.post(
        "/payments", {"amount": "4.00", "currency": "USD", "capture": False, "gateway": "charge-only"}, 422
    )
    assert "capture" in refused["errors"]
    charged = hub.post("/payments", {"amount": "4.00", "currency": "USD", "gateway": "charge-only"}, 201)
    assert "it is succeeded" in hub.post(f"/payments/{charged['paymentId']}/cancel", {}, 422)["message"]


def test_a_refund_whose_answer_was_lost_is_sent_again_with_its_key_and_counted_once(make_hub: Any) -> None:
    hub = make_hub("lossy-sandbox")
    hub.manager.pay.reconciler.reconcile_first = timedelta(0)
    paid = hub.post("/payments", {"amount": "50.00", "currency": "USD"}, 201)
    LossySandbox.lose_refund_answers = 2  # the first try and its retry: both answers lost
    pending = hub.post(f"/payments/{paid['paymentId']}/refunds", {"amount": "20.00"}, 202)
    assert pending["status"] == "processing"
    with sqlite3.connect(hub.gateway("primary").database) as connection:
        assert connection.execute("SELECT COUNT(*) FROM refunds").fetchone() == (1,)  # refunded once, answer lost
    assert hub.manager.pay.reconciler.reconcile_due() == 1
    done = hub.get(f"/refunds/{pending['refundId']}")
    assert (done["status"], done["amount"]) == ("succeeded", 20.0)
    with sqlite3.connect(hub.gateway("primary").database) as connection:
        assert connection.execute("SELECT COUNT(*) FROM refunds").fetchone() == (1,)  # the same key: no second refund
    view = hub.get(f"/payments/{paid['paymentId']}")
    assert (view["status"], view["amountRefunded"]) == ("partially_refunded", 20.0)


def test_a_payment_left_running_by_a_dead_process_is_looked_up_not_failed(make_hub: Any) -> None:
    hub = make_hub()
    runtime = hub.manager.runtime
    payload = {"amount": "11.00", "currency": "USD", "gateway": None, "order_id": "o-9", "capture": True}
    record = runtime.ledger.new("payment", "demo", "payment", payload, None, "running")
    assert record is not None
    # The process charged the card, then died before it could save the answer.
    charged = hub.gateway("primary").pay(payment(amount="11.00", key=record.id, tenant="demo", payment_id=record.id))
    runtime.ledger.save(record.id, lease_until=record.created_at - timedelta(minutes=1))
    assert hub.manager.recover_unfinished(older_than=0) == 1
    hub.manager.run_record(record.id)
    view = hub.get(f"/payments/{record.id}")
    assert (view["status"], view["transactionId"], view["gateway"]) == ("succeeded", charged.transaction_id, "primary")


def test_the_openapi_document_describes_capture_cancel_and_refresh(client: Any) -> None:
    document = client.get(f"{API}/openapi.json").get_json()
    paths = document["paths"]
    assert paths[f"{API}/payments/{{record_id}}/capture"]["post"]["requestBody"]
    assert paths[f"{API}/payments/{{record_id}}/cancel"]["post"]["operationId"] == "cancel_payment"
    refresh = [p for p in paths[f"{API}/payments/{{record_id}}"]["get"]["parameters"] if p["name"] == "refresh"]
    assert refresh and refresh[0]["in"] == "query"
    assert "202" in paths[f"{API}/payments"]["post"]["responses"]
    assert "capture" in document["components"]["schemas"]["Payment"]["properties"]


def test_a_status_outside_the_hub_set_is_kept_as_processing_and_never_refunded(make_hub: Any) -> None:
    hub = make_hub(services=["says-pending"])
    paid = hub.post("/payments", {"amount": "8.00", "currency": "USD"}, 202)
    assert (paid["status"], paid["rawStatus"], paid["success"]) == ("processing", "pending", False)  # not "succeeded"
    assert hub.post(f"/payments/{paid['paymentId']}/refunds", {}, 422)["code"] == "payment_intent_unexpected_state"


def test_the_reconciliation_job_backs_off_and_checks_each_payment_once(make_hub: Any) -> None:
    hub = make_hub("lossy-sandbox", circuit_breaker={"fail_max": 100, "reset_timeout": 1})
    LossySandbox.lookups_down = True
    paid = hub.post("/payments", {"amount": "6.00", "currency": "USD", "paymentMethod": LOST_EVERY_TIME}, 202)
    ledger = hub.manager.runtime.ledger
    assert hub.manager.pay.reconciler.reconcile_due() == 0  # the first check is a minute away
    waits = []
    for _ in range(3):
        ledger.save(paid["paymentId"], lease_until=utcnow() - timedelta(seconds=1))  # due now
        assert hub.manager.pay.reconciler.reconcile_due() == 1
        assert hub.manager.pay.reconciler.reconcile_due() == 0  # claimed: not checked twice
        waits.append(round((ledger.get(paid["paymentId"], "demo").lease_until - utcnow()) / timedelta(minutes=1)))
    assert waits == [2, 4, 8]  # doubling, up to an hour


# --- amounts in minor units, payment lists, payment.* events ------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("10.50", "USD", 1050), ("0.01", "EUR", 1), ("1500", "JPY", 1500), ("1.234", "KWD", 1234), ("7", "BHD", 7000)],
)
def test_amounts_convert_exactly_to_the_currency_minor_unit_and_back(amount: str, currency: str, minor: int) -> None:
    from hub.capabilities import from_minor_units, to_minor_units

    assert to_minor_units(Decimal(amount), currency) == minor
    back = from_minor_units(minor, currency)
    assert back == Decimal(amount) and isinstance(back, Decimal)
    assert str(from_minor_units(1050, "usd")) == "10.50" and str(from_minor_units(5, "JPY")) == "5"


def test_amount_conversion_refuses_what_the_currency_cannot_carry() -> None:
    from hub.capabilities import currency_exponent, to_minor_units

    with pytest.raises(ValueError, match="more decimal places than JPY"):
        to_minor_units(Decimal("10.5"), "JPY")
    with pytest.raises(ValueError, match="more decimal places than USD"):
        to_minor_units(Decimal("0.001"), "USD")
    with pytest.raises(ValueError, match="not an ISO 4217"):
        currency_exponent("ZZZ")
    with pytest.raises(ValueError, match="no minor unit"):
        currency_exponent("XAU")
    assert to_minor_units(Decimal("12.30"), "HUF", exponent=2) == 1230  # a gateway's own exponent wins


def test_the_api_checks_decimal_places_per_currency_and_names_the_field(make_hub: Any) -> None:
    hub = make_hub()
    yen = hub.post("/payments", {"amount": "10.5", "currency": "JPY", "paymentMethod": "4242424242424242"}, 422)
    assert "JPY amounts have no decimal places" in yen["errors"]["amount"][0]
    assert (
        hub.post("/payments", {"amount": "1500", "currency": "JPY", "paymentMethod": "4242424242424242"}, 201)["amount"]
        == 1500
    )
    dinar = hub.post("/payments", {"amount": "1.234", "currency": "KWD", "paymentMethod": "4242424242424242"}, 201)
    assert (dinar["amount"], dinar["currency"]) == (1.234, "KWD")
    too_fine = hub.post(f"/payments/{dinar['paymentId']}/refunds", {"amount": "0.0005"}, 422)
    assert "amount" in too_fine["errors"]
    cents = hub.post("/payments", {"amount": "10.00", "currency": "USD", "paymentMethod": "4242424242424242"}, 201)
    assert (
        "USD amounts have at most 2"
        in hub.post(f"/payments/{cents['paymentId']}/refunds", {"amount": "1.005"}, 422)["errors"]["amount"][0]
    )
    unknown = hub.post("/payments", {"amount": "1", "currency": "ZZZ", "paymentMethod": "4242424242424242"}, 422)
    assert "not an ISO 4217" in unknown["errors"]["currency"][0]


def test_the_payment_list_filters_by_status_gateway_order_and_time(make_hub: Any) -> None:
    hub = make_hub()
    first = hub.post(
        "/payments", {"amount": "5.00", "currency": "USD", "paymentMethod": "4242424242424242", "orderId": "A-1"}, 201
    )
    second = hub.post(
        "/payments",
        {
            "amount": "6.00",
            "currency": "USD",
            "paymentMethod": "4242424242424242",
            "orderId": "A-2",
            "gateway": "backup",
        },
        201,
    )
    hub.post(f"/payments/{second['paymentId']}/refunds", {}, 201)

    def ids(query: str) -> list[str]:
        return [item["paymentId"] for item in hub.get(f"/payments?{query}")["items"]]

    assert ids("orderId=A-1") == [first["paymentId"]]
    assert ids("gateway=backup") == [second["paymentId"]]
    assert ids("status=refunded") == [second["paymentId"]]
    assert ids("status=succeeded&gateway=primary") == [first["paymentId"]]
    assert set(ids("createdFrom=2000-01-01T00:00:00")) == {first["paymentId"], second["paymentId"]}
    assert ids("createdTo=2000-01-01T00:00:00Z") == []
    refused = hub.client.get(f"{API}/payments?createdFrom=yesterday", headers=hub.headers)
    assert refused.status_code == 422 and "createdFrom" in refused.get_json()["errors"]
    assert hub.client.get(f"{API}/payments?status=lost", headers=hub.headers).status_code == 422


def test_a_webhook_that_moves_a_payment_queues_one_payment_event_published_by_a_worker(make_hub: Any) -> None:
    hub = make_hub()
    paid = hub.post(
        "/payments", {"amount": "20.00", "currency": "USD", "paymentMethod": PROCESSING, "orderId": "O-7"}, 202
    )
    primary = hub.gateway("primary")
    with sqlite3.connect(primary.database) as connection:
        connection.execute("UPDATE payments SET settles_at = 0")
    body, signature = primary.webhook(paid["transactionId"], event_id="evt-settled")
    for _ in range(2):  # the gateway retries the webhook: one event, not two
        hub.client.post(f"{API}/webhooks/primary", data=body, headers=signature)
    disputed, disputed_signature = primary.webhook(paid["transactionId"], status="disputed", event_id="evt-dispute")
    hub.client.post(f"{API}/webhooks/primary", data=disputed, headers=disputed_signature)
    assert hub.get(f"/payments/{paid['paymentId']}")["status"] == "disputed"
    assert (
        hub.post(f"/payments/{paid['paymentId']}/refunds", {"amount": 1}, 422)["code"]
        == "payment_intent_unexpected_state"
    )

    events = hub.manager.list_records("demo", "event")
    assert sorted(event.payload["eventType"] for event in events) == ["payment.disputed", "payment.succeeded"]
    succeeded = next(event for event in events if event.payload["eventType"] == "payment.succeeded")
    assert succeeded.status == "queued" and succeeded.payload["topic"] == "payments"
    assert (
        succeeded.payload["data"].items()
        >= {
            "paymentId": paid["paymentId"],
            "status": "succeeded",
            "previousStatus": "processing",
            "orderId": "O-7",
            "amount": "20.00",
            "providerEventId": "evt-settled",
        }.items()
    )
    hub.manager.run_record(succeeded.id)  # as a worker does
    published = hub.manager.runtime.ledger.get(succeeded.id, "demo")
    assert published.status == "succeeded" and published.provider


def test_a_refund_in_flight_counts_against_what_is_left_so_refunds_never_exceed_the_capture(make_hub: Any) -> None:
    hub = make_hub("lossy-sandbox")
    paid = hub.post("/payments", {"amount": "10.00", "currency": "USD"}, 201)
    LossySandbox.lose_refund_answers = 2  # the refund of 6 is made, but the hub does not know yet
    pending = hub.post(f"/payments/{paid['paymentId']}/refunds", {"amount": "6.00"}, 202, **{"Idempotency-Key": "r-1"})
    assert pending["status"] == "processing"
    over = hub.post(f"/payments/{paid['paymentId']}/refunds", {"amount": "5.00"}, 422)
    assert over["code"] == "amount_too_large" and "4.00 left" in over["errors"]["amount"][0]
    # The same request again replays its own answer instead of counting itself as in flight.
    again = hub.post(f"/payments/{paid['paymentId']}/refunds", {"amount": "6.00"}, 202, **{"Idempotency-Key": "r-1"})
    assert again["refundId"] == pending["refundId"]
    assert hub.post(f"/payments/{paid['paymentId']}/refunds", {}, 201)["amount"] == 4.0  # the rest: 4, not 10
    nothing = hub.post(f"/payments/{paid['paymentId']}/refunds", {}, 422)
    assert "a refund of the rest is more than the 0.00 left" in nothing["errors"]["amount"][0]


def test_no_card_number_is_kept_in_the_hubs_records_audit_trail_or_logs(make_hub: Any, caplog: Any) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    hub = make_hub()
    card = "4242424242424242"
    paid = hub.post("/payments", {"amount": "12.00", "currency": "USD", "paymentMethod": card}, 201, **{"Idempotency-Key": "card-1"})
    declined = hub.post("/payments", {"amount": "12.00", "currency": "USD", "paymentMethod": "4000000000000002"}, 422)
    hub.post(f"/payments/{paid['paymentId']}/refunds", {"amount": "2.00"}, 201)
    assert declined["success"] is False
    data_dir = Path(hub.manager.config["data_dir"])
    hub_files = [path for path in data_dir.rglob("*") if path.is_file() and path.parent == data_dir]  # the hub's own files
    assert any(path.name.endswith(".db") for path in hub_files)
    for path in hub_files:
        content = path.read_bytes()
        for number in (card, "4000000000000002"):
            assert number.encode() not in content, f"{number} found in {path.name}"
    assert card not in caplog.text and "4000000000000002" not in caplog.text
    stored = hub.manager.runtime.ledger.get(paid["paymentId"], "demo")
    assert stored.payload["payment_method"] == "card ****4242"
