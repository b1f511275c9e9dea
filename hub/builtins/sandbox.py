"""Pay provider ``sandbox``: a development payment gateway that behaves like a provider's test mode.

It implements the whole pay contract: ``pay`` (charge now, or authorise only with ``capture=False``),
``payment_status`` (by transaction id, idempotency key, hub payment id or order id), ``capture`` (all or
part of an authorisation), ``cancel``, ``refund`` and signed webhooks. The payment method decides the
outcome, using Stripe's documented test cards so the same numbers work here and against Stripe's test mode,
plus a few cards of its own for what Stripe's test mode cannot produce on demand (lost answers):

=================== ===========================================================================
payment_method      outcome
=================== ===========================================================================
(none)              succeeded (``requires_capture`` with ``capture=False``)
4242424242424242    succeeded (also 5555555555554444, ``pm_card_visa``, ``pm_card_mastercard``)
4000000000000002    declined: PermanentError, provider_code ``card_declined``
4000000000009995    declined: PermanentError, provider_code ``insufficient_funds``
4000000000000069    declined: PermanentError, provider_code ``expired_card``
4000000000000119    TransientError, provider_code ``processing_error`` (no charge made)
4000002500003155    status ``requires_action`` (3-D Secure)
4000000000000202    status ``processing``; settles (``succeeded``, or ``requires_capture``) on the first
                    lookup ``settle_after`` seconds later
4000000000000408    **outcome unknown**: the charge is made, but every answer to ``pay`` is lost
                    (OutcomeUnknownError, provider_code ``timeout``); ``payment_status`` finds it
4000000000001408    outcome unknown once: the charge is made and the first answer lost; a retry with
                    the same idempotency key gets the payment
4000000000002408    outcome unknown, nothing charged (the request was lost on the way):
                    ``payment_status`` finds no payment
=================== ===========================================================================

Payments and refunds are kept in a SQLite file in the data directory, so refunds work across restarts
and a repeated idempotency key returns the first result instead of charging again. Amounts are stored
as decimal strings, never floats. With ``webhook_secret`` set it accepts webhooks signed with it
(``Sandbox-Signature: <hex HMAC-SHA256 of the body>``); :meth:`SandboxGateway.webhook` builds one for a
payment's current state, as a gateway would send it. It refuses to start in production mode.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import threading
import time
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
    CancelRequest,
    CaptureRequest,
    HealthResult,
    PaymentLookup,
    PaymentRequest,
    PaymentResult,
    Provider,
    ProviderContext,
    RefundRequest,
    RefundResult,
    WebhookEvent,
    WebhookRequest,
    utcnow,
)
from hub.errors import (
    ConfigurationError,
    NotFoundError,
    OutcomeUnknownError,
    PermanentError,
    SignatureError,
    TransientError,
)

PRODUCTION_REFUSAL = "the sandbox gateway is for development and tests; it is disabled in production mode"
SIGNATURE_HEADER = "Sandbox-Signature"

#: ``lost_answers`` meaning "every answer to pay is lost".
ALWAYS = -1


@dataclass(frozen=True)
class CardBehaviour:
    #: ``None`` for a card that is refused; otherwise the payment's status.
    status: str | None
    brand: str = "visa"
    error_code: str | None = None
    error_message: str | None = None
    transient: bool = False
    #: How many answers to ``pay`` for this payment are lost after it was made (``ALWAYS``: all of them).
    lost_answers: int = 0
    #: The request is lost before the gateway records anything: outcome unknown, nothing charged.
    lost_on_the_way: bool = False


_SUCCEEDS = CardBehaviour("succeeded")
_DECLINED = CardBehaviour(None, error_code="card_declined", error_message="Your card was declined.")
_INSUFFICIENT = CardBehaviour(None, error_code="insufficient_funds", error_message="Your card has insufficient funds.")
_EXPIRED = CardBehaviour(None, error_code="expired_card", error_message="Your card has expired.")
_PROCESSING_ERROR = CardBehaviour(
    None,
    error_code="processing_error",
    error_message="An error occurred while processing your card. Try again in a little bit.",
    transient=True,
)

#: Stripe's test cards (https://docs.stripe.com/testing) and the matching test PaymentMethod tokens, then the
#: sandbox's own cards for asynchronous settlement and lost answers.
TEST_CARDS: dict[str, CardBehaviour] = {
    "4242424242424242": _SUCCEEDS,
    "pm_card_visa": _SUCCEEDS,
    "5555555555554444": CardBehaviour("succeeded", brand="mastercard"),
    "pm_card_mastercard": CardBehaviour("succeeded", brand="mastercard"),
    "4000000000000002": _DECLINED,
    "pm_card_chargeDeclined": _DECLINED,
    "4000000000009995": _INSUFFICIENT,
    "pm_card_chargeDeclinedInsufficientFunds": _INSUFFICIENT,
    "4000000000000069": _EXPIRED,
    "pm_card_chargeDeclinedExpiredCard": _EXPIRED,
    "4000000000000119": _PROCESSING_ERROR,
    "pm_card_chargeDeclinedProcessingError": _PROCESSING_ERROR,
    "4000002500003155": CardBehaviour("requires_action"),
    "4000000000000202": CardBehaviour("processing"),
    "4000000000000408": CardBehaviour("succeeded", lost_answers=ALWAYS),
    "4000000000001408": CardBehaviour("succeeded", lost_answers=1),
    "4000000000002408": CardBehaviour("succeeded", lost_on_the_way=True),
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

#: Columns added after the first release: added to an older database file when it is opened.
_ADDED_PAYMENT_COLUMNS = {
    "hub_payment_id": "TEXT",
    "capture_method": "TEXT NOT NULL DEFAULT 'automatic'",
    "amount_captured": "TEXT",
    "capture_key": "TEXT",
    "requests": "INTEGER NOT NULL DEFAULT 1",
    "lost_answers": "INTEGER NOT NULL DEFAULT 0",
    "settles_at": "REAL",
}

_IDEMPOTENCY_MISMATCH = (
    "Keys for idempotent requests can only be used with the same parameters they were first used with."
)
_LOST_ANSWER = "sandbox: read timed out after the request was sent (test card {card}); the outcome is unknown"


class SandboxSettings(Schema):
    #: SQLite file for payments and refunds; relative to the hub's data directory.
    database = fields.String(load_default="sandbox-payments.db", validate=validate.Length(min=1))
    #: Seconds after which a ``processing`` payment (card 4000000000000202) settles, seen on the next lookup.
    settle_after = fields.Float(load_default=2.0, validate=validate.Range(min=0))
    #: Shared secret of signed webhooks; without it webhooks are refused.
    webhook_secret = fields.String(load_default=None, allow_none=True)


class SandboxGateway(Provider):
    type_name = "sandbox"
    capability = "pay"
    settings_schema: ClassVar[type[Schema]] = SandboxSettings
    secret_settings = ("webhook_secret",)
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
                    present = {row[1] for row in connection.execute("PRAGMA table_info(payments)")}
                    for column, declaration in _ADDED_PAYMENT_COLUMNS.items():
                        if column not in present:
                            connection.execute(f"ALTER TABLE payments ADD COLUMN {column} {declaration}")
                    connection.commit()
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
        if behaviour.lost_on_the_way:
            raise OutcomeUnknownError(_LOST_ANSWER.format(card=method), provider_code="timeout")
        lose_answer = False
        with self._transaction() as connection:
            earlier = None
            if payment.idempotency_key:
                earlier = connection.execute(
                    "SELECT * FROM payments WHERE tenant = ? AND idempotency_key = ?",
                    (payment.tenant, payment.idempotency_key),
                ).fetchone()
            if earlier is not None:
                if Decimal(earlier["amount"]) != amount or earlier["currency"] != currency:
                    raise PermanentError(_IDEMPOTENCY_MISMATCH, provider_code="idempotency_error")
                lose_answer = earlier["lost_answers"] != 0
                connection.execute(
                    "UPDATE payments SET requests = requests + 1, lost_answers = CASE WHEN lost_answers > 0"
                    " THEN lost_answers - 1 ELSE lost_answers END WHERE transaction_id = ?",
                    (earlier["transaction_id"],),
                )
                row = self._settled(connection, earlier["transaction_id"])
            else:
                transaction_id = self._insert_payment(connection, payment, amount, currency, method, behaviour)
                lose_answer = behaviour.lost_answers != 0
                if behaviour.lost_answers > 0:
                    connection.execute(
                        "UPDATE payments SET lost_answers = lost_answers - 1 WHERE transaction_id = ?",
                        (transaction_id,),
                    )
                row = self._settled(connection, transaction_id)
                self.log.info("sandbox: payment %s %s (%s %s)", transaction_id, row["status"], amount, currency)
        if lose_answer:
            # Committed above: the money moved, only the answer is lost.
            raise OutcomeUnknownError(_LOST_ANSWER.format(card=method), provider_code="timeout")
        return self._payment_result(row)

    def _insert_payment(
        self,
        connection: sqlite3.Connection,
        payment: PaymentRequest,
        amount: Decimal,
        currency: str,
        method: str | None,
        behaviour: CardBehaviour,
    ) -> str:
        details: dict[str, Any] = {"sandbox": True, "brand": behaviour.brand}
        if method and method.isdigit():
            details["last4"] = method[-4:]
        if behaviour.status == "requires_action":
            details["next_action"] = "use_stripe_sdk"
        status = behaviour.status or "failed"
        if status == "succeeded" and not payment.capture:
            status = "requires_capture"
        transaction_id = f"sbx_pi_{uuid.uuid4().hex[:24]}"
        connection.execute(
            "INSERT INTO payments (transaction_id, tenant, idempotency_key, amount, currency, status, order_id,"
            " details, created_at, hub_payment_id, capture_method, amount_captured, requests, lost_answers,"
            " settles_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
            (
                transaction_id,
                payment.tenant,
                payment.idempotency_key,
                str(amount),
                currency,
                status,
                payment.order_id,
                json.dumps(details),
                utcnow().isoformat(),
                payment.id,
                "automatic" if payment.capture else "manual",
                str(amount) if status == "succeeded" else None,
                behaviour.lost_answers,
                time.time() + self.settings["settle_after"] if status == "processing" else None,
            ),
        )
        return transaction_id

    def _settled(self, connection: sqlite3.Connection, transaction_id: str) -> sqlite3.Row:
        """The payment row, after settling a ``processing`` payment whose time has come (as a gateway's
        asynchronous payment would have settled by then)."""
        row = connection.execute("SELECT * FROM payments WHERE transaction_id = ?", (transaction_id,)).fetchone()
        if row["status"] == "processing" and row["settles_at"] is not None and time.time() >= row["settles_at"]:
            automatic = row["capture_method"] == "automatic"
            connection.execute(
                "UPDATE payments SET status = ?, amount_captured = ?, settles_at = NULL WHERE transaction_id = ?",
                (
                    "succeeded" if automatic else "requires_capture",
                    row["amount"] if automatic else None,
                    transaction_id,
                ),
            )
            row = connection.execute("SELECT * FROM payments WHERE transaction_id = ?", (transaction_id,)).fetchone()
        return row

    def _refunded(self, connection: sqlite3.Connection, transaction_id: str) -> Decimal:
        return sum(
            (
                Decimal(row["amount"])
                for row in connection.execute("SELECT amount FROM refunds WHERE transaction_id = ?", (transaction_id,))
            ),
            Decimal(0),
        )

    def _payment_result(self, row: sqlite3.Row, refunded: Decimal | None = None) -> PaymentResult:
        raw_status = row["status"]
        captured = Decimal(row["amount_captured"]) if row["amount_captured"] is not None else None
        status = raw_status
        if raw_status == "succeeded" and refunded and captured:
            # Like Stripe: the payment stays "succeeded" at the gateway; the hub's word says what was refunded.
            status = "refunded" if refunded >= captured else "partially_refunded"
        return PaymentResult(
            transaction_id=row["transaction_id"],
            status=status,
            amount=Decimal(row["amount"]),
            currency=row["currency"],
            raw_status=raw_status,
            amount_captured=captured,
            amount_refunded=refunded,
            details=json.loads(row["details"]),
        )

    # --- payment_status ----------------------------------------------------------------------------

    @hookimpl
    def payment_status(self, lookup: PaymentLookup) -> PaymentResult | None:
        with self._transaction() as connection:
            row = _find_payment(connection, lookup)
            if row is None:
                return None
            row = self._settled(connection, row["transaction_id"])
            refunded = self._refunded(connection, row["transaction_id"])
        return self._payment_result(row, refunded)

    # --- capture and cancel -------------------------------------------------------------------------

    @hookimpl
    def capture(self, capture: CaptureRequest) -> PaymentResult:
        with self._transaction() as connection:
            row = self._own_payment(connection, capture.tenant, capture.transaction_id)
            if (
                row["status"] == "succeeded"
                and capture.idempotency_key
                and row["capture_key"] == capture.idempotency_key
            ):
                return self._payment_result(row, self._refunded(connection, row["transaction_id"]))  # a retry
            if row["status"] != "requires_capture":
                raise PermanentError(
                    f"This payment has status {row['status']!r}; only a payment with status 'requires_capture'"
                    " can be captured.",
                    provider_code="payment_intent_unexpected_state",
                )
            authorised = Decimal(row["amount"])
            amount = authorised if capture.amount is None else _positive_amount(capture.amount)
            if capture.currency and capture.currency.upper() != row["currency"]:
                raise PermanentError(
                    f"Capture currency {capture.currency.upper()} differs from the payment's {row['currency']}.",
                    provider_code="currency_mismatch",
                )
            if amount > authorised:
                raise PermanentError(
                    f"The capture amount ({amount} {row['currency']}) is greater than the authorised amount"
                    f" ({authorised} {row['currency']}).",
                    provider_code="amount_too_large",
                )
            connection.execute(
                "UPDATE payments SET status = 'succeeded', amount_captured = ?, capture_key = ? WHERE transaction_id = ?",
                (str(amount), capture.idempotency_key, row["transaction_id"]),
            )
            row = self._settled(connection, row["transaction_id"])
        self.log.info("sandbox: captured %s of %s", amount, row["transaction_id"])
        return self._payment_result(row, Decimal(0))

    @hookimpl
    def cancel(self, cancel: CancelRequest) -> PaymentResult:
        with self._transaction() as connection:
            row = self._own_payment(connection, cancel.tenant, cancel.transaction_id)
            if row["status"] not in ("canceled", "requires_capture", "requires_action", "processing"):
                raise PermanentError(
                    f"This payment has status {row['status']!r}; only a payment that has taken no money can be"
                    " canceled (refund a succeeded one).",
                    provider_code="payment_intent_unexpected_state",
                )
            connection.execute(
                "UPDATE payments SET status = 'canceled', settles_at = NULL WHERE transaction_id = ?",
                (row["transaction_id"],),
            )
            row = self._settled(connection, row["transaction_id"])
        self.log.info("sandbox: canceled %s", row["transaction_id"])
        return self._payment_result(row)

    def _own_payment(self, connection: sqlite3.Connection, tenant: str, transaction_id: str) -> sqlite3.Row:
        row = connection.execute(
            "SELECT transaction_id FROM payments WHERE transaction_id = ? AND tenant = ?", (transaction_id, tenant)
        ).fetchone()
        if row is None:
            # Another tenant's payment is as unknown as one that never existed.
            raise NotFoundError(f"No such payment: {transaction_id!r}", provider_code="resource_missing")
        return self._settled(connection, transaction_id)

    # --- refund ------------------------------------------------------------------------------------

    @hookimpl
    def refund(self, refund: RefundRequest) -> RefundResult:
        with self._transaction() as connection:
            payment = self._own_payment(connection, refund.tenant, refund.transaction_id)
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
            captured = Decimal(payment["amount_captured"] or payment["amount"])
            remaining = captured - self._refunded(connection, refund.transaction_id)
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

    # --- webhooks ----------------------------------------------------------------------------------

    @hookimpl
    def handle_webhook(self, webhook: WebhookRequest) -> list[WebhookEvent]:
        secret = self.settings.get("webhook_secret")
        if not secret:
            raise SignatureError("sandbox: no webhook_secret is configured, so no webhook can be verified")
        signature = next((value for name, value in webhook.headers.items() if name.lower() == "sandbox-signature"), "")
        if not hmac.compare_digest(signature, sign_webhook(secret, webhook.body)):
            raise SignatureError("sandbox: webhook signature does not verify")
        try:
            event = json.loads(webhook.body)
            return [
                WebhookEvent(
                    event_id=str(event["id"]),
                    reference=str(event["transaction_id"]),
                    status=str(event["status"]),
                    type=str(event.get("type", "")),
                    details={
                        "raw_status": event.get("raw_status", event["status"]),
                        **({"amount_refunded": event["amount_refunded"]} if "amount_refunded" in event else {}),
                    },
                )
            ]
        except (ValueError, KeyError, TypeError) as error:
            raise PermanentError(f"sandbox: malformed webhook body ({error})") from None

    def webhook(
        self, transaction_id: str, *, status: str | None = None, event_id: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """The signed webhook the gateway sends for ``transaction_id`` in its current state (``status``
        overrides the status, to test stale or odd events): ``(body, headers)`` to POST to
        ``/webhooks/<provider name>``."""
        secret = self.settings.get("webhook_secret")
        if not secret:
            raise ConfigurationError("sandbox: set webhook_secret to send webhooks")
        with self._transaction() as connection:
            if (
                connection.execute("SELECT 1 FROM payments WHERE transaction_id = ?", (transaction_id,)).fetchone()
                is None
            ):
                raise NotFoundError(f"No such payment: {transaction_id!r}", provider_code="resource_missing")
            row = self._settled(connection, transaction_id)
            result = self._payment_result(row, self._refunded(connection, transaction_id))
        event = {
            "id": event_id or f"sbx_evt_{uuid.uuid4().hex[:24]}",
            "type": f"payment.{status or result.status}",
            "transaction_id": transaction_id,
            "status": status or result.status,
            "raw_status": result.raw_status,
            "amount_refunded": str(result.amount_refunded or 0),
        }
        body = json.dumps(event).encode()
        return body, {SIGNATURE_HEADER: sign_webhook(secret, body), "Content-Type": "application/json"}

    @hookimpl
    def health(self) -> HealthResult:
        try:
            self._ensure_schema()
            with closing(sqlite3.connect(self.database, timeout=5)) as connection:
                connection.execute("SELECT COUNT(*) FROM payments").fetchone()
        except (sqlite3.Error, OSError) as error:
            return HealthResult("error", f"sandbox: database {self.database} is not usable: {error}")
        return HealthResult("success", "sandbox gateway ready (test mode: no real money moves)")


def sign_webhook(secret: str, body: bytes) -> str:
    """The ``Sandbox-Signature`` of a webhook body: hex HMAC-SHA256 with the shared secret."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _find_payment(connection: sqlite3.Connection, lookup: PaymentLookup) -> sqlite3.Row | None:
    """The payment ``lookup`` names, searched as a gateway can: by its id when given (and nothing else);
    otherwise by the idempotency key, then the hub's payment id, then the order id (the latest payment of
    the order with that amount and currency)."""

    def latest(column: str, value: str) -> list[sqlite3.Row]:
        return connection.execute(
            f"SELECT * FROM payments WHERE tenant = ? AND {column} = ? ORDER BY created_at DESC",
            (lookup.tenant, value),
        ).fetchall()

    if lookup.transaction_id:
        return next(iter(latest("transaction_id", lookup.transaction_id)), None)
    for column, value in (("idempotency_key", lookup.idempotency_key), ("hub_payment_id", lookup.payment_id)):
        if value and (rows := latest(column, value)):
            return rows[0]
    if lookup.order_id:
        for row in latest("order_id", lookup.order_id):
            if lookup.amount is not None and Decimal(row["amount"]) != Decimal(lookup.amount):
                continue
            if lookup.currency and row["currency"] != lookup.currency.upper():
                continue
            return row
    return None


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
