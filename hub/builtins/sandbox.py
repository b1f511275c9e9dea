"""Pay provider ``sandbox``: a development payment gateway that behaves like a provider's test mode.

The payment method decides the outcome, using Stripe's documented test cards so the same numbers work
here and against Stripe's test mode:

=================== ===================================================================
payment_method      outcome
=================== ===================================================================
(none)              succeeded
4242424242424242    succeeded (also 5555555555554444, ``pm_card_visa``, ``pm_card_mastercard``)
4000000000000002    declined: PermanentError, provider_code ``card_declined``
4000000000009995    declined: PermanentError, provider_code ``insufficient_funds``
4000000000000069    declined: PermanentError, provider_code ``expired_card``
4000000000000119    TransientError, provider_code ``processing_error`` (no charge made)
4000002500003155    status ``requires_action`` (3-D Secure)
=================== ===================================================================

Payments and refunds are kept in a SQLite file in the data directory, so refunds work across restarts
and a repeated idempotency key returns the first result instead of charging again. Amounts are stored
as decimal strings, never floats. It refuses to start in production mode.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from marshmallow import Schema, fields, validate

from hub import hookimpl
from hub.builtins.local_files import resolve_in_data_dir
from hub.capabilities import (
    HealthResult,
    PaymentRequest,
    PaymentResult,
    Provider,
    ProviderContext,
    RefundRequest,
    RefundResult,
    utcnow,
)
from hub.errors import ConfigurationError, NotFoundError, PermanentError, TransientError

PRODUCTION_REFUSAL = "the sandbox gateway is for development and tests; it is disabled in production mode"


@dataclass(frozen=True)
class CardBehaviour:
    #: ``None`` for a card that is refused; otherwise the payment's status.
    status: str | None
    brand: str = "visa"
    error_code: str | None = None
    error_message: str | None = None
    transient: bool = False


_SUCCEEDS = CardBehaviour("succeeded")
_DECLINED = CardBehaviour(None, error_code="card_declined", error_message="Your card was declined.")

#: Stripe's test cards (https://docs.stripe.com/testing) and the matching test PaymentMethod tokens.
TEST_CARDS: dict[str, CardBehaviour] = {
    "4242424242424242": _SUCCEEDS,
    "pm_card_visa": _SUCCEEDS,
    "5555555555554444": CardBehaviour("succeeded", brand="mastercard"),
    "pm_card_mastercard": CardBehaviour("succeeded", brand="mastercard"),
    "4000000000000002": _DECLINED,
    "pm_card_chargeDeclined": _DECLINED,
    "4000000000009995": CardBehaviour(
        None, error_code="insufficient_funds", error_message="Your card has insufficient funds."
    ),
    "pm_card_chargeDeclinedInsufficientFunds": CardBehaviour(
        None, error_code="insufficient_funds", error_message="Your card has insufficient funds."
    ),
    "4000000000000069": CardBehaviour(None, error_code="expired_card", error_message="Your card has expired."),
    "pm_card_chargeDeclinedExpiredCard": CardBehaviour(
        None, error_code="expired_card", error_message="Your card has expired."
    ),
    "4000000000000119": CardBehaviour(
        None,
        error_code="processing_error",
        error_message="An error occurred while processing your card. Try again in a little bit.",
        transient=True,
    ),
    "pm_card_chargeDeclinedProcessingError": CardBehaviour(
        None,
        error_code="processing_error",
        error_message="An error occurred while processing your card. Try again in a little bit.",
        transient=True,
    ),
    "4000002500003155": CardBehaviour("requires_action"),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    transaction_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    idempotency_key TEXT,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    order_id TEXT,
    details TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (tenant, idempotency_key)
);
CREATE TABLE IF NOT EXISTS refunds (
    refund_id TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL REFERENCES payments (transaction_id),
    tenant TEXT NOT NULL,
    idempotency_key TEXT,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    reason TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (tenant, idempotency_key)
);
"""

_IDEMPOTENCY_MISMATCH = (
    "Keys for idempotent requests can only be used with the same parameters they were first used with."
)


class SandboxSettings(Schema):
    #: SQLite file for payments and refunds; relative to the hub's data directory.
    database = fields.String(load_default="sandbox-payments.db", validate=validate.Length(min=1))


class SandboxGateway(Provider):
    type_name = "sandbox"
    capability = "pay"
    settings_schema: ClassVar[type[Schema]] = SandboxSettings
    description = "Development payment gateway driven by Stripe's test card numbers; refused in production."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        if context.mode == "production":
            raise ConfigurationError(PRODUCTION_REFUSAL)
        super().__init__(name, settings, context)
        self.database = resolve_in_data_dir(settings["database"], context.data_dir)
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A connection per call (sqlite3 connections must not be shared between threads) holding a
        write lock from the start, so two refunds cannot both see the same remaining amount."""
        self._ensure_schema()
        with closing(sqlite3.connect(self.database, timeout=30, isolation_level=None)) as connection:
            connection.row_factory = sqlite3.Row
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                self.database.parent.mkdir(parents=True, exist_ok=True)
                with closing(sqlite3.connect(self.database, timeout=30)) as connection:
                    connection.executescript(_SCHEMA)
                self._schema_ready = True

    # --- pay -------------------------------------------------------------------------------------

    @hookimpl
    def pay(self, payment: PaymentRequest) -> PaymentResult:
        amount = _positive_amount(payment.amount)
        currency = _currency(payment.currency)
        method = _normalise_method(payment.payment_method)
        behaviour = _behaviour(method)
        if behaviour.status is None:
            error_class = TransientError if behaviour.transient else PermanentError
            raise error_class(behaviour.error_message or "Your card was declined.", provider_code=behaviour.error_code)
        with self._transaction() as connection:
            if payment.idempotency_key:
                earlier = connection.execute(
                    "SELECT * FROM payments WHERE tenant = ? AND idempotency_key = ?",
                    (payment.tenant, payment.idempotency_key),
                ).fetchone()
                if earlier is not None:
                    if Decimal(earlier["amount"]) != amount or earlier["currency"] != currency:
                        raise PermanentError(_IDEMPOTENCY_MISMATCH, provider_code="idempotency_error")
                    return _payment_result(earlier)
            details: dict[str, Any] = {"sandbox": True, "brand": behaviour.brand}
            if method and method.isdigit():
                details["last4"] = method[-4:]
            if behaviour.status == "requires_action":
                details["next_action"] = "use_stripe_sdk"
            transaction_id = f"sbx_pi_{uuid.uuid4().hex[:24]}"
            connection.execute(
                "INSERT INTO payments (transaction_id, tenant, idempotency_key, amount, currency, status, order_id,"
                " details, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    transaction_id,
                    payment.tenant,
                    payment.idempotency_key,
                    str(amount),
                    currency,
                    behaviour.status,
                    payment.order_id,
                    json.dumps(details),
                    utcnow().isoformat(),
                ),
            )
            row = connection.execute("SELECT * FROM payments WHERE transaction_id = ?", (transaction_id,)).fetchone()
        self.log.info("sandbox: payment %s %s (%s %s)", transaction_id, behaviour.status, amount, currency)
        return _payment_result(row)

    @hookimpl
    def refund(self, refund: RefundRequest) -> RefundResult:
        with self._transaction() as connection:
            payment = connection.execute(
                "SELECT * FROM payments WHERE transaction_id = ? AND tenant = ?",
                (refund.transaction_id, refund.tenant),
            ).fetchone()
            if payment is None:
                # Another tenant's payment is as unknown as one that never existed.
                raise NotFoundError(f"No such payment: {refund.transaction_id!r}", provider_code="resource_missing")
            if refund.idempotency_key:
                earlier = connection.execute(
                    "SELECT * FROM refunds WHERE tenant = ? AND idempotency_key = ?",
                    (refund.tenant, refund.idempotency_key),
                ).fetchone()
                if earlier is not None:
                    if earlier["transaction_id"] != refund.transaction_id:
                        raise PermanentError(_IDEMPOTENCY_MISMATCH, provider_code="idempotency_error")
                    return _refund_result(earlier)
            if payment["status"] != "succeeded":
                raise PermanentError(
                    f"This payment has status {payment['status']!r}; only succeeded payments can be refunded.",
                    provider_code="payment_intent_unexpected_state",
                )
            if refund.currency and refund.currency.upper() != payment["currency"]:
                raise PermanentError(
                    f"Refund currency {refund.currency.upper()} differs from the payment's {payment['currency']}.",
                    provider_code="currency_mismatch",
                )
            refunded = sum(
                (
                    Decimal(row["amount"])
                    for row in connection.execute(
                        "SELECT amount FROM refunds WHERE transaction_id = ?", (refund.transaction_id,)
                    )
                ),
                Decimal(0),
            )
            remaining = Decimal(payment["amount"]) - refunded
            if remaining <= 0:
                raise PermanentError(
                    f"Payment {refund.transaction_id} has already been refunded.",
                    provider_code="charge_already_refunded",
                )
            amount = remaining if refund.amount is None else _positive_amount(refund.amount)
            if amount > remaining:
                raise PermanentError(
                    f"Refund amount ({amount} {payment['currency']}) is greater than the unrefunded amount on the"
                    f" payment ({remaining} {payment['currency']}).",
                    provider_code="amount_too_large",
                )
            refund_id = f"sbx_re_{uuid.uuid4().hex[:24]}"
            connection.execute(
                "INSERT INTO refunds (refund_id, transaction_id, tenant, idempotency_key, amount, currency, reason,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    refund_id,
                    refund.transaction_id,
                    refund.tenant,
                    refund.idempotency_key,
                    str(amount),
                    payment["currency"],
                    refund.reason,
                    utcnow().isoformat(),
                ),
            )
            row = connection.execute("SELECT * FROM refunds WHERE refund_id = ?", (refund_id,)).fetchone()
        self.log.info("sandbox: refund %s of %s (%s %s)", refund_id, refund.transaction_id, amount, payment["currency"])
        return _refund_result(row, remaining_after=remaining - amount)

    @hookimpl
    def health(self) -> HealthResult:
        try:
            self._ensure_schema()
            with closing(sqlite3.connect(self.database, timeout=5)) as connection:
                connection.execute("SELECT COUNT(*) FROM payments").fetchone()
        except (sqlite3.Error, OSError) as error:
            return HealthResult("error", f"sandbox: database {self.database} is not usable: {error}")
        return HealthResult("success", "sandbox gateway ready (test mode: no real money moves)")


def _positive_amount(value: Any) -> Decimal:
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise PermanentError(f"Invalid amount {value!r}.", provider_code="parameter_invalid_decimal") from None
    if not amount.is_finite() or amount <= 0:
        raise PermanentError("The amount must be greater than zero.", provider_code="amount_too_small")
    return amount


def _currency(value: str) -> str:
    if not isinstance(value, str) or len(value) != 3 or not value.isalpha():
        raise PermanentError(
            f"Invalid currency {value!r}: use a three-letter ISO code.", provider_code="invalid_currency"
        )
    return value.upper()


def _normalise_method(method: str | None) -> str | None:
    if method is None:
        return None
    compact = method.replace(" ", "").replace("-", "")
    return compact if compact.isdigit() else method.strip()


def _behaviour(method: str | None) -> CardBehaviour:
    if not method:
        return _SUCCEEDS
    if method in TEST_CARDS:
        return TEST_CARDS[method]
    if method.isdigit():
        # What a provider's test mode says about a real card number.
        return CardBehaviour(
            None,
            error_code="card_declined",
            error_message="Your card was declined. Your request was in test mode, but used a non test card.",
        )
    return CardBehaviour(None, error_code="resource_missing", error_message=f"No such PaymentMethod: {method!r}")


def _payment_result(row: sqlite3.Row) -> PaymentResult:
    return PaymentResult(
        transaction_id=row["transaction_id"],
        status=row["status"],
        amount=Decimal(row["amount"]),
        currency=row["currency"],
        details=json.loads(row["details"]),
    )


def _refund_result(row: sqlite3.Row, remaining_after: Decimal | None = None) -> RefundResult:
    details: dict[str, Any] = {"sandbox": True, "transaction_id": row["transaction_id"]}
    if remaining_after is not None:
        details["remaining"] = str(remaining_after)
    return RefundResult(
        refund_id=row["refund_id"],
        status="succeeded",
        amount=Decimal(row["amount"]),
        currency=row["currency"],
        details=details,
    )


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(SandboxGateway)
