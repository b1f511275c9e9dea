"""The pay contract: charge, look up, capture, cancel, refund, and the outcome-unknown case."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from hub.capabilities import (
    PAYMENT_STATUSES,
    CancelRequest,
    CaptureRequest,
    PaymentLookup,
    PaymentRequest,
    PaymentResult,
    RefundRequest,
    RefundResult,
)
from hub.errors import NotFoundError, OutcomeUnknownError, PermanentError, UnsupportedError

if TYPE_CHECKING:
    from hub.testing import ProviderHarness

from hub.testing.contracts.basics import (
    CONTRACT_TENANT,
    _expect,
    _expect_error,
    _label,
    _unique,
)


def check_pay(
    harness: ProviderHarness,
    provider: Any,
    *,
    succeeding_method: str | None = None,
    declined_method: str | None = None,
    processing_method: str | None = None,
    outcome_unknown_method: str | None = None,
    amount: Decimal = Decimal("25.00"),
    currency: str = "USD",
    tenant: str = CONTRACT_TENANT,
    partial_capture: bool = True,
) -> PaymentResult:
    """Every pay hook the provider implements, as the core uses it.

    * ``pay`` charges the requested ``Decimal`` amount, returns a ``transaction_id`` and a status from
      :data:`~hub.capabilities.PAYMENT_STATUSES`; a repeated idempotency key returns the same payment.
    * ``payment_status`` finds it by ``transaction_id`` (and by idempotency key, or raises
      ``UnsupportedError``), returns ``None`` for a payment that does not exist, and follows refunds
      (``partially_refunded``, then ``refunded``).
    * ``refund`` works partially, then for the rest (``amount=None``); more than is left, a fully refunded
      payment or an unknown transaction raise ``PermanentError`` (``NotFoundError`` for the last).
    * ``capture`` (when implemented): a ``capture=False`` payment is ``requires_capture``, cannot be refunded,
      is captured in part (never above the authorisation, never twice) and refunds only what was captured.
    * ``cancel`` (when implemented): cancels an authorisation (then not capturable), refuses a succeeded payment.

    :param succeeding_method: a payment method the provider charges at once (``None``: none given).
    :param declined_method: a payment method the provider declines; skipped when ``None``.
    :param processing_method: a payment method the provider leaves ``processing`` (settled later); the check
        requires that such a payment cannot be refunded. Skipped when ``None``.
    :param outcome_unknown_method: a payment method whose answer the provider's test mode loses after
        charging: ``pay`` must raise ``OutcomeUnknownError`` and ``payment_status`` find the payment by its
        idempotency key. Skipped when ``None``.
    :param amount: at least 0.05 in ``currency``; the refunds take 40% of it, then the rest.
    :param partial_capture: ``False`` for a gateway that captures only the whole authorisation (Razorpay): a
        partial ``capture`` must then raise ``PermanentError`` and a whole one (``amount=None``) succeed.
    """
    amount = Decimal(amount)
    idempotency_key = _unique("contract-pay")
    payment_id = _unique("contract-payment")

    def payment_request(
        method: str | None, key: str, *, capture: bool = True, hub_id: str | None = None
    ) -> PaymentRequest:
        return PaymentRequest(
            id=hub_id or _unique("contract-payment"),
            tenant=tenant,
            amount=amount,
            currency=currency,
            # One order per idempotency key: a retry with the same key is the same request, as the core sends it
            # (Stripe and Square refuse a key reused with other parameters).
            order_id=f"contract-order-{key}",
            payment_method=method,
            customer={"email": "contract-one@example.com"},
            description="Hub contract check",
            metadata={"contract": "pay"},
            idempotency_key=key,
            capture=capture,
        )

    def charge(method: str | None = succeeding_method, key: str = idempotency_key, *, capture: bool = True) -> Any:
        return harness.call(provider, "pay", payment=payment_request(method, key, capture=capture, hub_id=payment_id))

    def lookup(**names: Any) -> Any:
        return harness.call(provider, "payment_status", lookup=PaymentLookup(tenant=tenant, **names))

    result = charge()
    _check_payment(provider, result, "pay()", amount, currency)
    _expect(
        result.status == "succeeded",
        provider,
        f"paying with succeeding_method={succeeding_method!r} gave status {result.status!r}; "
        "pass a payment method the provider charges at once",
    )
    _expect(
        result.amount_captured in (None, amount),
        provider,
        f"a payment charged at once has amount_captured {result.amount_captured!r}; leave it None or {amount!r}",
    )

    repeated = charge()
    _expect(
        isinstance(repeated, PaymentResult) and repeated.transaction_id == result.transaction_id,
        provider,
        "a second pay() with the same idempotency_key charged again "
        f"({getattr(repeated, 'transaction_id', repeated)!r} after {result.transaction_id!r}): "
        "pass payment.idempotency_key to the provider's idempotency mechanism",
    )

    found = lookup(payment_id=payment_id, transaction_id=result.transaction_id)
    _check_payment(provider, found, "payment_status() by transaction_id", amount, currency)
    _expect(
        found.transaction_id == result.transaction_id and found.status == "succeeded",
        provider,
        f"payment_status() of the payment just made returned {found.transaction_id!r} {found.status!r}, "
        f"expected {result.transaction_id!r} 'succeeded'",
    )
    _check_lookup_by_key(provider, lookup, result.transaction_id, payment_id, idempotency_key)
    missing = lookup(payment_id=_unique("contract-payment"), transaction_id=_unique("contract-unknown-transaction"))
    _expect(
        missing is None,
        provider,
        f"payment_status() of an unknown transaction returned {missing!r}; return None: the core then knows "
        "nothing was charged",
    )

    if harness.implements(provider, "cancel"):
        _expect_error(
            PermanentError,
            provider,
            "cancelling a succeeded payment",
            lambda: harness.call(provider, "cancel", cancel=_cancel_request(tenant, result.transaction_id)),
        )

    def refund(refund_amount: Decimal | None, transaction_id: str = result.transaction_id) -> Any:
        request = RefundRequest(
            id=_unique("contract-refund"),
            tenant=tenant,
            transaction_id=transaction_id,
            amount=refund_amount,
            currency=currency,
            reason="requested_by_customer",
            idempotency_key=_unique("contract-refund-key"),
        )
        return harness.call(provider, "refund", refund=request)

    partial = (amount * Decimal("0.4")).quantize(Decimal("0.01"))
    rest = amount - partial
    first = refund(partial)
    _check_refund(provider, first, partial, currency, "a partial refund")

    over_refund = _expect_error(
        PermanentError,
        provider,
        f"refunding {rest + Decimal('0.01')} when {rest} is left",
        lambda: refund(rest + Decimal("0.01")),
    )
    _expect(
        not isinstance(over_refund, NotFoundError),
        provider,
        "refunding more than is left raised NotFoundError, but the payment exists: raise PermanentError",
    )
    _expect_status(
        provider,
        lookup(payment_id=payment_id, transaction_id=result.transaction_id),
        "partially_refunded",
        "after a partial refund",
    )
    second = refund(None)
    _check_refund(provider, second, rest, currency, "refunding the rest (amount=None)")
    _expect(first.refund_id != second.refund_id, provider, "two refunds returned the same refund_id")
    _expect_status(
        provider,
        lookup(payment_id=payment_id, transaction_id=result.transaction_id),
        "refunded",
        "after refunding everything",
    )
    _expect_error(PermanentError, provider, "refunding a fully refunded payment", lambda: refund(Decimal("0.01")))
    _expect_error(
        (NotFoundError, PermanentError),
        provider,
        "refunding an unknown transaction",
        lambda: refund(None, transaction_id=_unique("contract-unknown-transaction")),
    )

    if declined_method is not None:
        declined = _expect_error(
            PermanentError,
            provider,
            f"paying with {declined_method!r}",
            lambda: charge(declined_method, _unique("contract-declined")),
        )
        _expect(
            getattr(declined, "provider_code", None),
            provider,
            "a declined payment must set PermanentError(provider_code=...) to the provider's decline code",
        )

    if processing_method is not None:
        processing = charge(processing_method, _unique("contract-processing"))
        _check_payment(provider, processing, f"paying with {processing_method!r}", amount, currency)
        _expect(
            processing.status == "processing",
            provider,
            f"paying with processing_method={processing_method!r} gave status {processing.status!r}, not 'processing'",
        )
        _expect_error(
            PermanentError,
            provider,
            "refunding a processing payment",
            lambda: refund(None, transaction_id=processing.transaction_id),
        )

    if outcome_unknown_method is not None:
        _check_outcome_unknown(provider, charge, lookup, outcome_unknown_method, amount, currency)

    if harness.implements(provider, "capture"):
        _check_capture(harness, provider, charge, lookup, refund, amount, currency, tenant, partial_capture)
    return result


def _check_payment(provider: object, result: Any, action: str, amount: Decimal, currency: str) -> None:
    _expect(isinstance(result, PaymentResult), provider, f"{action} returned {result!r}, not a PaymentResult")
    _expect(
        isinstance(result.transaction_id, str) and result.transaction_id,
        provider,
        f"{action}: PaymentResult.transaction_id must be the provider's (non-empty) payment id",
    )
    _expect(
        result.status in PAYMENT_STATUSES,
        provider,
        f"{action}: status {result.status!r} is not one of {PAYMENT_STATUSES}; map the provider's word onto "
        "one of these and keep it in raw_status",
    )
    _expect(
        result.raw_status is None or (isinstance(result.raw_status, str) and result.raw_status),
        provider,
        f"{action}: raw_status must be the provider's own status (a string) or None",
    )
    _expect(
        isinstance(result.amount, Decimal) and result.amount == amount,
        provider,
        f"{action}: PaymentResult.amount is {result.amount!r}; it must be the requested Decimal {amount!r} (never a float)",
    )
    _expect(
        isinstance(result.currency, str) and result.currency.upper() == currency.upper(),
        provider,
        f"{action}: PaymentResult.currency is {result.currency!r}, expected {currency!r}",
    )
    for name in ("amount_captured", "amount_refunded"):
        value = getattr(result, name)
        _expect(value is None or isinstance(value, Decimal), provider, f"{action}: {name} must be a Decimal or None")


def _expect_status(provider: object, result: Any, status: str, when: str) -> None:
    _expect(
        isinstance(result, PaymentResult) and result.status == status,
        provider,
        f"payment_status() {when} returned {getattr(result, 'status', result)!r}, expected {status!r}",
    )


def _check_lookup_by_key(
    provider: object, lookup: Callable[..., Any], transaction_id: str, payment_id: str, idempotency_key: str
) -> None:
    """Without a transaction id (pay's answer was lost) the provider finds the payment by idempotency key, or
    says it cannot search that way; an unknown key is no payment."""
    try:
        by_key = lookup(payment_id=payment_id, idempotency_key=idempotency_key)
    except UnsupportedError:
        return
    except AssertionError:
        raise
    except Exception as error:
        raise AssertionError(
            f"{_label(provider)}: payment_status() by idempotency key raised {type(error).__name__}({error}); "
            "find the payment, or raise UnsupportedError when the provider cannot search by key"
        ) from error
    _expect(
        isinstance(by_key, PaymentResult) and by_key.transaction_id == transaction_id,
        provider,
        f"payment_status() by idempotency key returned {by_key!r}, expected the payment {transaction_id!r}",
    )
    nothing = lookup(payment_id=_unique("contract-payment"), idempotency_key=_unique("contract-unknown-key"))
    _expect(nothing is None, provider, f"payment_status() of an unknown idempotency key returned {nothing!r}, not None")


def _check_outcome_unknown(
    provider: object,
    charge: Callable[..., Any],
    lookup: Callable[..., Any],
    method: str,
    amount: Decimal,
    currency: str,
) -> None:
    key = _unique("contract-outcome-unknown")
    _expect_error(
        OutcomeUnknownError, provider, f"paying with {method!r} (an answer lost)", lambda: charge(method, key)
    )
    try:
        found = lookup(payment_id=_unique("contract-payment"), idempotency_key=key)
    except UnsupportedError:
        return  # found later by a webhook
    _check_payment(provider, found, "payment_status() after a lost answer", amount, currency)


def _check_capture(
    harness: ProviderHarness,
    provider: Any,
    charge: Callable[..., Any],
    lookup: Callable[..., Any],
    refund: Callable[..., Any],
    amount: Decimal,
    currency: str,
    tenant: str,
    partial_capture: bool = True,
) -> None:
    def capture(transaction_id: str, capture_amount: Decimal | None) -> Any:
        request = CaptureRequest(
            id=_unique("contract-capture"),
            tenant=tenant,
            transaction_id=transaction_id,
            amount=capture_amount,
            currency=currency,
            idempotency_key=_unique("contract-capture-key"),
        )
        return harness.call(provider, "capture", capture=request)

    authorised = charge(key=_unique("contract-authorise"), capture=False)
    _check_payment(provider, authorised, "pay(capture=False)", amount, currency)
    _expect(
        authorised.status == "requires_capture",
        provider,
        f"pay() with capture=False gave status {authorised.status!r}; an authorisation is 'requires_capture'",
    )
    transaction_id = authorised.transaction_id
    _expect_status(
        provider,
        lookup(payment_id=_unique("p"), transaction_id=transaction_id),
        "requires_capture",
        "of an authorisation",
    )
    _expect_error(
        PermanentError,
        provider,
        "refunding a payment not captured yet",
        lambda: refund(None, transaction_id=transaction_id),
    )
    _expect_error(
        PermanentError,
        provider,
        "capturing more than was authorised",
        lambda: capture(transaction_id, amount + Decimal("0.01")),
    )
    part = (amount * Decimal("0.6")).quantize(Decimal("0.01"))
    if not partial_capture:
        _expect_error(
            PermanentError,
            provider,
            f"capturing {part} of {amount} (the gateway captures only the whole authorisation)",
            lambda: capture(transaction_id, part),
        )
        part = amount
        captured = capture(transaction_id, None)
    else:
        captured = capture(transaction_id, part)
    _check_payment(provider, captured, "a capture", amount, currency)
    _expect(
        captured.status == "succeeded" and captured.amount_captured in ((part,) if partial_capture else (None, part)),
        provider,
        f"capturing {part} returned status {captured.status!r} with amount_captured {captured.amount_captured!r}; "
        f"expected 'succeeded' and Decimal({str(part)!r})",
    )
    _expect_status(
        provider, lookup(payment_id=_unique("p"), transaction_id=transaction_id), "succeeded", "after a capture"
    )
    _expect_error(PermanentError, provider, "capturing a payment twice", lambda: capture(transaction_id, None))
    _expect_error(
        PermanentError,
        provider,
        f"refunding more than the {part} captured",
        lambda: refund(part + Decimal("0.01"), transaction_id=transaction_id),
    )
    _check_refund(provider, refund(None, transaction_id=transaction_id), part, currency, "refunding a partial capture")
    _expect_error(
        (NotFoundError, PermanentError),
        provider,
        "capturing an unknown transaction",
        lambda: capture(_unique("contract-unknown-transaction"), None),
    )

    if harness.implements(provider, "cancel"):
        other = charge(key=_unique("contract-authorise"), capture=False)
        canceled = harness.call(provider, "cancel", cancel=_cancel_request(tenant, other.transaction_id))
        _check_payment(provider, canceled, "cancel()", amount, currency)
        _expect(
            canceled.status == "canceled", provider, f"cancel() returned status {canceled.status!r}, not 'canceled'"
        )
        _expect_status(
            provider, lookup(payment_id=_unique("p"), transaction_id=other.transaction_id), "canceled", "after cancel()"
        )
        _expect_error(
            PermanentError, provider, "capturing a canceled payment", lambda: capture(other.transaction_id, None)
        )


def _cancel_request(tenant: str, transaction_id: str) -> CancelRequest:
    return CancelRequest(
        id=_unique("contract-cancel"),
        tenant=tenant,
        transaction_id=transaction_id,
        reason="requested_by_customer",
        idempotency_key=_unique("contract-cancel-key"),
    )


def _check_refund(provider: object, result: Any, amount: Decimal, currency: str, action: str) -> None:
    _expect(isinstance(result, RefundResult), provider, f"{action} returned {result!r}, not a RefundResult")
    _expect(isinstance(result.refund_id, str) and result.refund_id, provider, f"{action}: refund_id must be non-empty")
    _expect(
        isinstance(result.amount, Decimal) and result.amount == amount,
        provider,
        f"{action} returned amount {result.amount!r}, expected Decimal({str(amount)!r})",
    )
    _expect(
        isinstance(result.currency, str) and result.currency.upper() == currency.upper(),
        provider,
        f"{action} returned currency {result.currency!r}, expected {currency!r}",
    )
