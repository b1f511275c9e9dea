"""Payments: requests, results, lookups, captures, cancels and refunds, the one status set, and amounts in a
currency's minor units."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import Any

#: The one status vocabulary of payments, whatever the gateway calls them. A provider maps its own word
#: onto one of these and keeps its own in :attr:`PaymentResult.raw_status`.
#:
#: * ``requires_action`` -- the customer must do something (3-D Secure, a redirect to the wallet).
#: * ``processing`` -- the gateway accepted it and will settle it later (bank debits, reviews); no money
#:   can be refunded yet. The core also uses it for a payment whose outcome is not known yet.
#: * ``requires_capture`` -- authorised (``capture=False``), waiting for :func:`~hub.hookspecs.capture`.
#: * ``succeeded`` -- the money was taken.
#: * ``failed`` -- nothing was taken and nothing will be (declined, expired, abandoned).
#: * ``canceled`` -- an authorisation or pending payment was cancelled; nothing was taken.
#: * ``partially_refunded`` / ``refunded`` -- succeeded, then part / all of it was refunded.
#: * ``disputed`` -- the customer's bank disputes (charges back) a payment that succeeded; set by webhooks.
PAYMENT_STATUSES = (
    "requires_action",
    "processing",
    "requires_capture",
    "succeeded",
    "failed",
    "canceled",
    "refunded",
    "partially_refunded",
    "disputed",
)

#: Statuses a payment can be refunded from (only up to what was captured and not yet refunded).
REFUNDABLE_STATUSES = ("succeeded", "partially_refunded")

#: How far along its life a status is: an update to an earlier stage (a late ``processing`` webhook after
#: ``succeeded``) is stale and ignored. Statuses of one rank are alternative ends and do not replace each other.
PAYMENT_STATUS_RANK: dict[str, int] = {
    "requires_action": 1,
    "processing": 2,
    "requires_capture": 3,
    "succeeded": 4,
    "failed": 4,
    "canceled": 4,
    "partially_refunded": 5,
    "disputed": 6,
    "refunded": 7,
}


def payment_status_supersedes(new: str, current: str | None) -> bool:
    """Whether a payment in ``current`` status moves to ``new`` (an update from a webhook or a lookup).

    Moves only forwards: ``processing`` -> ``succeeded`` -> ``partially_refunded`` -> ``refunded``; never back
    (a late ``processing`` after ``succeeded``), never between two ends (``failed`` does not become
    ``canceled``). Unknown statuses never supersede anything."""
    if new not in PAYMENT_STATUS_RANK:
        return False
    if current not in PAYMENT_STATUS_RANK:
        return True
    return PAYMENT_STATUS_RANK[new] > PAYMENT_STATUS_RANK[current]


@cache
def currency_exponent(currency: str) -> int:
    """How many decimal places ``currency``'s minor unit has, per ISO 4217 (the ``iso4217`` package's data):
    2 for USD and EUR, 0 for JPY and KRW, 3 for KWD, BHD, JOD, OMR and TND.

    :raises ValueError: not an ISO 4217 code, or one without a minor unit (gold, XAU)."""
    from iso4217 import Currency

    try:
        exponent = Currency(currency.upper()).exponent
    except (ValueError, KeyError):
        raise ValueError(f"{currency!r} is not an ISO 4217 currency code") from None
    if exponent is None:
        raise ValueError(f"{currency.upper()} has no minor unit: it is not a currency payments are made in")
    return exponent


def to_minor_units(amount: Decimal, currency: str, exponent: int | None = None) -> int:
    """``amount`` (major units) as an integer count of the currency's minor units, exactly:
    ``to_minor_units(Decimal("10.50"), "USD") == 1050``, ``("1500", "JPY") -> 1500``, ``("1.234", "KWD") -> 1234``.

    :param exponent: the provider's own decimal places where it differs from ISO 4217 (a gateway that counts
        some currency in hundredths although ISO gives it none); ``None``: ISO 4217's.
    :raises ValueError: the amount has more decimal places than the currency has (never rounded away)."""
    places = currency_exponent(currency) if exponent is None else exponent
    scaled = Decimal(amount).scaleb(places)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} has more decimal places than {currency.upper()} has ({places})")
    return int(scaled)


def from_minor_units(value: int | str, currency: str, exponent: int | None = None) -> Decimal:
    """The inverse of :func:`to_minor_units`: ``from_minor_units(1050, "USD") == Decimal("10.50")``."""
    places = currency_exponent(currency) if exponent is None else exponent
    return Decimal(int(value)).scaleb(-places).quantize(Decimal(1).scaleb(-places))


@dataclass
class PaymentRequest:
    """A payment to make. The hub's ``id`` and the ``idempotency_key`` stay the same on every retry."""

    id: str
    tenant: str
    #: In major units (``Decimal("10.00")``), never a float.
    amount: Decimal
    #: Upper-case ISO 4217 code.
    currency: str
    #: The caller's reference for the order being paid.
    order_id: str | None = None
    #: A provider payment-method token or test card number.
    payment_method: str | None = None
    customer: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Pass it to the provider's own idempotency mechanism so a retried call never charges twice.
    idempotency_key: str | None = None
    #: ``True``: take the money now. ``False``: authorise only; the payment ends ``requires_capture`` and
    #: :func:`~hub.hookspecs.capture` takes it later (or :func:`~hub.hookspecs.cancel` releases it).
    capture: bool = True


@dataclass
class PaymentResult:
    """A payment as the provider knows it: what :func:`~hub.hookspecs.pay`, ``payment_status``, ``capture``
    and ``cancel`` return."""

    #: The provider's id of the payment (``pi_...``), used later for refunds, captures and webhooks.
    transaction_id: str
    #: One of :data:`PAYMENT_STATUSES`.
    status: str
    #: The amount of the payment (authorised or charged), in major units.
    amount: Decimal
    currency: str
    #: The provider's own word for the status (Stripe ``requires_payment_method``, PayPal ``COMPLETED``).
    raw_status: str | None = None
    #: How much was taken: less than ``amount`` after a partial capture. ``None``: all of ``amount`` once
    #: ``succeeded``, nothing before.
    amount_captured: Decimal | None = None
    #: How much was refunded so far, when the provider says (a lookup after refunds made elsewhere).
    amount_refunded: Decimal | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class PaymentLookup:
    """Which payment :func:`~hub.hookspecs.payment_status` should find. ``transaction_id`` is set when the hub
    knows it; when it does not (the answer to ``pay`` was lost) the provider searches by ``idempotency_key``,
    ``payment_id`` (sent as ``metadata["hub_payment_id"]``) or ``order_id``, as it can."""

    tenant: str
    #: The hub's payment id (``PaymentRequest.id``).
    payment_id: str
    transaction_id: str | None = None
    idempotency_key: str | None = None
    order_id: str | None = None
    #: The payment's amount and currency, to tell apart several payments for one order.
    amount: Decimal | None = None
    currency: str | None = None


@dataclass
class CaptureRequest:
    """Take (all or part of) an authorised payment (status ``requires_capture``)."""

    id: str
    tenant: str
    transaction_id: str
    #: ``None``: the whole authorised amount. Less than that: a partial capture; the rest is released.
    amount: Decimal | None
    currency: str
    idempotency_key: str | None = None


@dataclass
class CancelRequest:
    """Cancel a payment that has not taken money: an authorisation, or one that requires action or is
    processing. Cancelling a succeeded payment is refused (refund it instead)."""

    id: str
    tenant: str
    transaction_id: str
    reason: str | None = None
    idempotency_key: str | None = None


@dataclass
class RefundRequest:
    id: str
    tenant: str
    transaction_id: str
    #: ``None``: everything not yet refunded.
    amount: Decimal | None
    currency: str
    reason: str | None = None
    idempotency_key: str | None = None


@dataclass
class RefundResult:
    refund_id: str
    #: ``succeeded``, ``processing`` (the gateway settles it later) or ``failed``.
    status: str
    amount: Decimal
    currency: str
    details: dict[str, Any] = field(default_factory=dict)
