"""Contract checks: one function per capability, asserting what :mod:`hub.hookspecs` promises the core.

Each check takes a :class:`hub.testing.ProviderHarness` and a provider built with it, calls the
provider's hooks as the core would, and fails with an ``AssertionError`` that says what the plugin
must change. Each returns what it observed (the result of the main call) for further assertions.

* :func:`check_provider_class` -- the class attributes, hooks and settings schema.
* :func:`check_notify`, :func:`check_pay`, :func:`check_store`, :func:`check_publish`,
  :func:`check_sync` -- one capability each.
* :func:`check_health` -- the optional ``health`` hook.
* :func:`run_contract` -- all of the above that apply to a provider.

The checks talk to the provider for real: point the provider at a test account, a local emulator or a
mocked HTTP API (``responses``, ``respx``), never at production.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import io
import json
import random
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import requests
from marshmallow import Schema

from hub import hookspecs
from hub.capabilities import (
    CAPABILITIES,
    CHANNELS,
    PAYMENT_STATUSES,
    PUSH_STATUSES,
    CancelRequest,
    CaptureRequest,
    ConsumedRecord,
    ConsumerGroup,
    Event,
    GroupMember,
    HealthResult,
    InventoryPush,
    InventoryUpdate,
    Message,
    NotifyResult,
    OffsetReset,
    PartitionLag,
    PartitionOffset,
    PaymentLookup,
    PaymentRequest,
    PaymentResult,
    PresignedUpload,
    PublishResult,
    PushItemResult,
    PushResult,
    Recipient,
    RecipientResult,
    RefundRequest,
    RefundResult,
    StoredFile,
    StoredObject,
    Subscription,
    SyncRequest,
    SyncResult,
    UploadStream,
    primary_key_of,
    record_key,
    to_dict,
)
from hub.errors import InUseError, NotFoundError, OutcomeUnknownError, PermanentError, UnsupportedError
from hub.plugins import PROVIDER_HOOKS, REQUIRED_HOOKS

if TYPE_CHECKING:
    from hub.testing import ProviderHarness

__all__ = [
    "DEFAULT_ADDRESSES",
    "check_health",
    "check_notify",
    "check_pay",
    "check_provider_class",
    "check_publish",
    "check_store",
    "check_sync",
    "run_contract",
]

#: Recipients used when a check is not given any: reserved example domains and test numbers.
DEFAULT_ADDRESSES: dict[str, tuple[str, ...]] = {
    "email": ("contract-one@example.com", "contract-two@example.org"),
    "sms": ("+15005550006", "+14155550100"),
    "chat": ("#contract-tests", "#contract-tests-2"),
}

CONTRACT_TENANT = "contract-tests"
NOTIFY_STATUSES = ("sent", "queued", "failed", "retry")
HEALTH_STATUSES = ("success", "error")

_IMPL_ATTRIBUTE = f"{hookspecs.PROJECT_NAME}_impl"


def _label(provider: object) -> str:
    type_name = getattr(provider, "type_name", "") or type(provider).__name__
    return f"{type_name} provider {getattr(provider, 'name', '?')!r}"


def _require(condition: object, problem: str) -> None:
    # Not a bare assert: the checks must also fail under ``python -O``.
    if not condition:
        raise AssertionError(problem)


def _expect(condition: object, provider: object, problem: str) -> None:
    if not condition:
        raise AssertionError(f"{_label(provider)}: {problem}")


def _expect_error(
    expected: type[BaseException] | tuple[type[BaseException], ...],
    provider: object,
    action: str,
    function: Callable[[], Any],
) -> BaseException:
    """Run ``function`` and return the error it raised, failing unless it is an ``expected`` one."""
    names = " or ".join(cls.__name__ for cls in (expected if isinstance(expected, tuple) else (expected,)))
    try:
        outcome = function()
    except expected as error:
        return error
    except AssertionError:
        raise  # a failed check inside (a missing hook), already explained
    except Exception as error:
        raise AssertionError(
            f"{_label(provider)}: {action} raised {type(error).__name__}({error}); it must raise {names} "
            "(from hub.errors) so the core neither retries nor fails over"
        ) from error
    raise AssertionError(f"{_label(provider)}: {action} returned {outcome!r}; it must raise {names} (from hub.errors)")


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --- the class --------------------------------------------------------------------------------


def check_provider_class(provider_class: type) -> None:
    """The provider class declares what the core reads: ``type_name``, ``capability``, ``channels``
    (notify), the capability's required hooks decorated with ``@hookimpl``, hook signatures matching
    :mod:`hub.hookspecs`, a marshmallow ``settings_schema`` declaring every ``env_settings`` and
    ``secret_settings`` key."""
    name = provider_class.__name__
    type_name = getattr(provider_class, "type_name", "")
    _require(
        isinstance(type_name, str) and type_name.strip() == type_name and type_name,
        f"{name}: set type_name to the name users write as `type:` in hub.yaml (got {type_name!r})",
    )
    capability = getattr(provider_class, "capability", "")
    _require(
        capability in CAPABILITIES,
        f"{name}: capability must be one of {', '.join(CAPABILITIES)} (got {capability!r})",
    )
    if capability == "notify":
        channels = getattr(provider_class, "channels", ())
        _require(
            isinstance(channels, tuple | list) and channels,
            f"{name}: a notify provider must list the channels it delivers, e.g. channels = ('email',)",
        )
        unknown = [channel for channel in channels if channel not in CHANNELS]
        _require(not unknown, f"{name}: unknown channels {unknown}; channels are {', '.join(CHANNELS)}")

    for hook_name in REQUIRED_HOOKS[capability]:
        function = getattr(provider_class, hook_name, None)
        _require(function is not None, f"{name}: a {capability} provider must implement {hook_name}()")
        _require(
            hasattr(function, _IMPL_ATTRIBUTE),
            f"{name}.{hook_name}() is not decorated with @hookimpl (from hub import hookimpl): the hub would never call it",
        )
    for attribute in dir(provider_class):
        function = getattr(provider_class, attribute, None)
        decorated = hasattr(function, _IMPL_ATTRIBUTE)
        if attribute in PROVIDER_HOOKS and callable(function) and not decorated:
            raise AssertionError(
                f"{name}.{attribute}() looks like the {attribute} hook but is not decorated with @hookimpl: "
                "the hub would never call it"
            )
        if decorated and attribute not in PROVIDER_HOOKS:
            raise AssertionError(
                f"{name}.{attribute}() is decorated with @hookimpl but is not a provider hook "
                f"(provider hooks: {', '.join(PROVIDER_HOOKS)}); set-up hooks such as register_providers "
                "belong to the plugin module"
            )
        if decorated:
            _check_hook_signature(name, attribute, function)

    schema_class = getattr(provider_class, "settings_schema", None)
    env_settings = getattr(provider_class, "env_settings", {}) or {}
    secret_settings = getattr(provider_class, "secret_settings", ()) or ()
    _require(isinstance(env_settings, Mapping), f"{name}: env_settings must map setting -> environment variable")
    _require(
        isinstance(secret_settings, tuple | list | set | frozenset),
        f"{name}: secret_settings must be a tuple of setting names",
    )
    for setting, variable in env_settings.items():
        _require(
            isinstance(variable, str) and variable,
            f"{name}: env_settings[{setting!r}] must be the name of an environment variable (got {variable!r})",
        )
    if schema_class is None:
        declared: set[str] = set()
    else:
        _require(
            isinstance(schema_class, type) and issubclass(schema_class, Schema),
            f"{name}: settings_schema must be a marshmallow Schema class (got {schema_class!r})",
        )
        fields = schema_class().fields
        declared = set(fields) | {field.data_key for field in fields.values() if field.data_key}
    for kind, settings in (("env_settings", list(env_settings)), ("secret_settings", list(secret_settings))):
        undeclared = [setting for setting in settings if setting not in declared]
        _require(
            not undeclared,
            f"{name}: {kind} names {undeclared}, which settings_schema does not declare; the core refuses "
            "unknown settings, so declare every setting as a schema field",
        )


def _check_hook_signature(class_name: str, hook_name: str, function: Callable[..., Any]) -> None:
    spec = getattr(hookspecs, hook_name)
    expected = list(inspect.signature(spec).parameters)
    parameters = list(inspect.signature(function).parameters.values())
    if parameters and parameters[0].name == "self":
        parameters = parameters[1:]
    names = [parameter.name for parameter in parameters]
    unknown = [parameter for parameter in names if parameter not in expected]
    _require(
        not unknown,
        f"{class_name}.{hook_name}() takes {unknown}, which the hook does not pass; "
        f"its parameters must be named as in the hookspec: {hook_name}({', '.join(expected)})",
    )


# --- notify -----------------------------------------------------------------------------------


def check_notify(
    harness: ProviderHarness,
    provider: Any,
    channel: str | None = None,
    addresses: Sequence[str] | None = None,
    *,
    expect_sent: bool = True,
    tenant: str = CONTRACT_TENANT,
) -> NotifyResult:
    """``notify`` returns a ``NotifyResult`` with one ``RecipientResult`` per recipient, in order, with a
    known status (``failed`` ones carry an error, ``queued`` ones the provider's id for webhooks), and
    leaves the message it was given unchanged (the core retries with it).

    :param channel: one of the provider's channels (its first by default).
    :param addresses: valid recipients for that channel (:data:`DEFAULT_ADDRESSES` by default).
    :param expect_sent: also require that no recipient failed (pass ``False`` for addresses the
        provider is meant to refuse).
    """
    channels = tuple(getattr(provider, "channels", ()))
    channel = channel or (channels[0] if channels else "email")
    _expect(channel in channels, provider, f"channel {channel!r} is not among its channels {channels}")
    addresses = list(addresses) if addresses is not None else list(DEFAULT_ADDRESSES[channel])
    _require(addresses, "check_notify needs at least one address")
    message = Message(
        id=_unique("contract-message"),
        tenant=tenant,
        channel=channel,
        recipients=[Recipient(address, name=f"Contract Recipient {index}") for index, address in enumerate(addresses)],
        text="Conformance check from the integration hub's contract tests.",
        subject="Hub contract check" if channel == "email" else None,
        html="<p>Conformance check from the integration hub&#39;s contract tests.</p>" if channel == "email" else None,
        blocks=(
            [{"type": "section", "text": {"type": "plain_text", "text": "Hub contract check"}}]
            if channel == "chat"
            else None
        ),
        template="custom",
        metadata={"contract": "notify"},
    )
    original = copy.deepcopy(message)
    result = harness.call(provider, "notify", message=message)

    _expect(isinstance(result, NotifyResult), provider, f"notify() returned {result!r}, not a NotifyResult")
    _expect(message == original, provider, "notify() changed the Message it was given; the core reuses it on retry")
    _expect(isinstance(result.results, list), provider, "NotifyResult.results must be a list")
    _expect(
        len(result.results) == len(addresses),
        provider,
        f"notify() returned {len(result.results)} results for {len(addresses)} recipients: return exactly one "
        "RecipientResult per recipient, in the order of message.recipients",
    )
    for index, (address, outcome) in enumerate(zip(addresses, result.results, strict=True)):
        where = f"result {index}"
        _expect(isinstance(outcome, RecipientResult), provider, f"{where} is {outcome!r}, not a RecipientResult")
        _expect(
            outcome.address == address,
            provider,
            f"{where} is for {outcome.address!r} but recipient {index} is {address!r}: keep the order of message.recipients",
        )
        _expect(
            outcome.status in NOTIFY_STATUSES,
            provider,
            f"{where} has status {outcome.status!r}; use one of {', '.join(NOTIFY_STATUSES)}",
        )
        _expect(
            outcome.provider_message_id is None or isinstance(outcome.provider_message_id, str),
            provider,
            f"{where}: provider_message_id must be a string or None",
        )
        if outcome.status == "failed":
            _expect(outcome.error, provider, f"{where} failed without saying why: set RecipientResult.error")
            _expect(not expect_sent, provider, f"{where} failed for the valid address {address!r}: {outcome.error}")
        if outcome.status == "queued":
            _expect(
                outcome.provider_message_id,
                provider,
                f"{where} is queued without a provider_message_id: the core needs it to match the delivery webhook",
            )
    return result


# --- pay --------------------------------------------------------------------------------------


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
            order_id=_unique("contract-order"),
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
        _check_capture(harness, provider, charge, lookup, refund, amount, currency, tenant)
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
    captured = capture(transaction_id, part)
    _check_payment(provider, captured, "a partial capture", amount, currency)
    _expect(
        captured.status == "succeeded" and captured.amount_captured == part,
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


# --- store ------------------------------------------------------------------------------------

_MIB = 1024 * 1024
#: The chunk the generated large upload is made of (and read back in).
_STORE_CHUNK = 256 * 1024


class _WatchedUploadStream(UploadStream):
    """An :class:`UploadStream` that notes whether the provider asked for everything at once."""

    read_whole = False

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            self.read_whole = True
        return super().read(size)  # type: ignore[no-any-return]

    def readall(self) -> bytes:
        self.read_whole = True
        return super().readall()


class _GeneratedContent:
    """``size`` pseudo-random bytes, made chunk by chunk on demand (never held whole)."""

    def __init__(self, size: int, seed: str) -> None:
        self.size = size
        self.seed = seed

    def chunk(self, index: int) -> bytes:
        length = min(_STORE_CHUNK, self.size - index * _STORE_CHUNK)
        return random.Random(f"{self.seed}-{index}").randbytes(max(0, length))

    def chunks(self, limit: int | None = None) -> Iterator[bytes]:
        """The content's chunks in order, stopping after ``limit`` bytes when given."""
        produced = 0
        for index in range((self.size + _STORE_CHUNK - 1) // _STORE_CHUNK):
            chunk = self.chunk(index)
            if limit is not None:
                chunk = chunk[: max(0, limit - produced)]
            if not chunk:
                return
            produced += len(chunk)
            yield chunk

    def slice(self, first: int, last: int) -> bytes:
        """Bytes ``first`` to ``last``, inclusive."""
        parts = [self.chunk(index) for index in range(first // _STORE_CHUNK, last // _STORE_CHUNK + 1)]
        offset = first - (first // _STORE_CHUNK) * _STORE_CHUNK
        return b"".join(parts)[offset : offset + last - first + 1]

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for chunk in self.chunks():
            digest.update(chunk)
        return digest.hexdigest()


def _read_stream(provider: object, opened: Any, action: str, *, limit: int = 64 * _MIB) -> bytes:
    """Read what ``store_read`` returned, in chunks, closing it; fails for bytes or a non-file."""
    _expect(
        not isinstance(opened, bytes | bytearray) and callable(getattr(opened, "read", None)),
        provider,
        f"{action} returned {type(opened).__name__}; return a readable binary file object (read(size)), "
        "not the bytes: the core streams downloads",
    )
    parts: list[bytes] = []
    total = 0
    try:
        while chunk := opened.read(_STORE_CHUNK):
            _expect(isinstance(chunk, bytes | bytearray), provider, f"{action}: read() gave {type(chunk).__name__}")
            parts.append(bytes(chunk))
            total += len(chunk)
            _expect(total <= limit, provider, f"{action} gave more than the {limit} bytes expected")
    finally:
        close = getattr(opened, "close", None)
        if callable(close):
            close()
    return b"".join(parts)


def _hash_stream(provider: object, opened: Any, action: str) -> tuple[int, str]:
    """Size and SHA-256 of what ``store_read`` returned, read in chunks (for the large file)."""
    _expect(callable(getattr(opened, "read", None)), provider, f"{action} returned {type(opened).__name__}")
    digest = hashlib.sha256()
    size = 0
    try:
        while chunk := opened.read(_STORE_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    finally:
        close = getattr(opened, "close", None)
        if callable(close):
            close()
    return size, digest.hexdigest()


def check_store(
    harness: ProviderHarness,
    provider: Any,
    *,
    tenant: str = CONTRACT_TENANT,
    large_size: int = 16 * _MIB,
    memory_bound: int | None = None,
) -> StoredFile:
    """Every store hook, as the core calls it.

    ``store`` takes an :class:`~hub.capabilities.UploadStream`: binary and empty content round-trip, an
    existing key is overwritten, the key, content type and metadata are kept; a ``large_size`` stream
    (16 MiB, generated as it is read) is stored without asking for it whole (``read()`` without a size)
    and, when ``memory_bound`` is set (default: half of ``large_size``; ``0`` turns it off, for an SDK
    that buffers whole parts), without Python allocations above that bound. An upload that breaks
    off, or goes past the size limit, raises, and leaves nothing under its key (and an overwritten key
    as it was). ``store_read`` returns a file object, not bytes, with exact ``(first, last)`` ranges;
    ``store_head`` reports size, content type and metadata; missing keys raise ``NotFoundError``;
    ``store_delete`` returns ``True`` then ``False``. The optional ``store_url`` returns a URL or
    ``None``; the optional ``store_upload_url`` returns ``None`` or a ``PresignedUpload`` that really
    uploads (the check sends a file through it and finds it with ``store_head``).
    """
    metadata = {"origin": "contract-check", "uploadedBy": "hub"}

    def stored_file(key: str, content_type: str, size: int | None) -> StoredFile:
        return StoredFile(
            key=key,
            tenant=tenant,
            filename=key.rsplit("/", 1)[-1],
            content_type=content_type,
            category="contract",
            metadata=dict(metadata),
            size=size,
        )

    def new_key(filename: str) -> str:
        return f"{tenant}/contract/{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}-{filename}"

    def store_bytes(key: str, data: bytes, content_type: str) -> Any:
        stream = UploadStream(io.BytesIO(data), expected_size=len(data))
        with stream:
            result = harness.call(provider, "store", file=stored_file(key, content_type, len(data)), stream=stream)
        _expect(stream.finished, provider, "store() returned before reading the stream to its end")
        return result

    def read(key: str, byte_range: tuple[int, int | None] | None, limit: int = 64 * _MIB) -> bytes:
        action = f"store_read(byte_range={byte_range!r})"
        return _read_stream(provider, harness.call(provider, "store_read", key=key, byte_range=byte_range), action, limit=limit)

    def expect_missing(key: str, when: str) -> None:
        for hook_name, arguments in (("store_read", {"byte_range": None}), ("store_head", {})):
            _expect_error(
                NotFoundError,
                provider,
                f"{hook_name}() {when}",
                lambda hook_name=hook_name, arguments=arguments: harness.call(provider, hook_name, key=key, **arguments),
            )

    # Round trip of binary content, and what store() returns.
    key = new_key("report.bin")
    binary = bytes(range(256)) * 4 + b"\x00\r\n\xff"
    result = store_bytes(key, binary, "application/octet-stream")
    _expect(isinstance(result, StoredFile), provider, f"store() returned {result!r}, not the StoredFile")
    _expect(result.key == key, provider, f"store() changed the key to {result.key!r}; the core's key must be kept")
    _expect(
        result.content_type == "application/octet-stream",
        provider,
        f"store() returned content_type {result.content_type!r}, expected 'application/octet-stream'",
    )
    _expect(result.metadata == metadata, provider, f"store() returned metadata {result.metadata!r}, expected {metadata!r}")
    _expect(result.url is None or isinstance(result.url, str), provider, "StoredFile.url must be a string or None")
    _expect(read(key, None) == binary, provider, "store_read() did not return the bytes stored (binary content must round-trip)")

    # Byte ranges: (first, last), both inclusive; last=None is to the end.
    for first, last in ((0, 0), (1, 10), (len(binary) - 4, None), (5, len(binary) - 1), (0, None)):
        expected = binary[first : None if last is None else last + 1]
        got = read(key, (first, last))
        _expect(
            got == expected,
            provider,
            f"store_read(byte_range={(first, last)!r}) gave {len(got)} bytes, expected {len(expected)} "
            "(bytes first..last, both inclusive; last=None to the end)",
        )

    # store_head: what is stored, without reading it.
    head = harness.call(provider, "store_head", key=key)
    _expect(isinstance(head, StoredObject), provider, f"store_head() returned {head!r}, not a StoredObject")
    _expect(head.key == key, provider, f"store_head() reported key {head.key!r}, expected {key!r}")
    _expect(head.size == len(binary), provider, f"store_head() reported size {head.size!r}, expected {len(binary)}")
    _expect(
        head.content_type == "application/octet-stream",
        provider,
        f"store_head() reported content_type {head.content_type!r}; keep the content type store() was given",
    )
    _expect(head.metadata == metadata, provider, f"store_head() reported metadata {head.metadata!r}, expected {metadata!r}")
    _expect(
        head.checksum in (None, hashlib.sha256(binary).hexdigest()),
        provider,
        f"store_head() reported checksum {head.checksum!r}: the core's SHA-256, or None when it was not kept",
    )
    _expect(head.etag is None or isinstance(head.etag, str), provider, "StoredObject.etag must be a string or None")

    # Overwrite, then the empty file.
    replacement = b"second version\n"
    store_bytes(key, replacement, "text/plain")
    _expect(read(key, None) == replacement, provider, "storing again under the same key must overwrite the first content")
    _expect(
        harness.call(provider, "store_head", key=key).size == len(replacement),
        provider,
        "store_head() after an overwrite must report the new size",
    )
    empty_key = new_key("empty.txt")
    store_bytes(empty_key, b"", "text/plain")
    _expect(read(empty_key, None) == b"", provider, "an empty file did not round-trip")
    _expect(harness.call(provider, "store_head", key=empty_key).size == 0, provider, "store_head() of an empty file: size 0")
    harness.call(provider, "store_delete", key=empty_key)

    # A large upload, generated as it is read: the provider must stream it.
    _check_large_store(harness, provider, stored_file, new_key("large.bin"), large_size, memory_bound)

    # Broken uploads leave nothing behind.
    for label, stream_for in (
        (
            "an upload that broke off (IncompleteUploadError from read())",
            lambda content: UploadStream(content.chunks(limit=content.size - 1000), expected_size=content.size),
        ),
        (
            "an upload past the size limit (PayloadTooLargeError from read())",
            lambda content: UploadStream(content.chunks(), limit=content.size // 2),
        ),
    ):
        content = _GeneratedContent(3 * _MIB, f"broken-{uuid.uuid4().hex}")
        for target, before in ((new_key("broken.bin"), None), (key, replacement)):
            with stream_for(content) as stream:
                try:
                    outcome = harness.call(
                        provider, "store", file=stored_file(target, "application/octet-stream", content.size), stream=stream
                    )
                except Exception:  # any error will do: the core reports the stream's own
                    pass
                else:
                    raise AssertionError(
                        f"{_label(provider)}: store() of {label} returned {outcome!r}; let the stream's error "
                        "propagate (or raise your own): the upload did not complete"
                    )
            if before is None:
                expect_missing(target, f"after {label}: a partial object must never be visible under the key")
            else:
                _expect(
                    read(target, None) == before,
                    provider,
                    f"{label} over an existing key changed it; the old content must stay until an upload completes",
                )

    if harness.implements(provider, "store_url"):
        url = harness.call(provider, "store_url", key=key, expires_in=60)
        _expect(url is None or (isinstance(url, str) and url), provider, f"store_url() returned {url!r}; return a URL or None")
    if harness.implements(provider, "store_upload_url"):
        _check_upload_url(harness, provider, stored_file, new_key("direct.txt"))

    missing = new_key("missing.txt")
    expect_missing(missing, "of a missing key")
    _expect(harness.call(provider, "store_delete", key=key) is True, provider, "store_delete() of a stored key must return True")
    expect_missing(key, "after store_delete()")
    _expect(
        harness.call(provider, "store_delete", key=key) is False,
        provider,
        "store_delete() of a missing key must return False (not raise)",
    )
    return result


def _check_large_store(
    harness: ProviderHarness,
    provider: Any,
    stored_file: Callable[[str, str, int | None], StoredFile],
    key: str,
    size: int,
    memory_bound: int | None,
) -> None:
    content = _GeneratedContent(size, f"large-{uuid.uuid4().hex}")
    bound = size // 2 if memory_bound is None else memory_bound
    stream = _WatchedUploadStream(content.chunks())
    already_tracing = tracemalloc.is_tracing()
    if bound and not already_tracing:
        tracemalloc.start()
    try:
        if bound:
            tracemalloc.reset_peak()
            baseline = tracemalloc.get_traced_memory()[0]
        with stream:
            harness.call(provider, "store", file=stored_file(key, "application/octet-stream", None), stream=stream)
        peak = tracemalloc.get_traced_memory()[1] - baseline if bound else 0
    finally:
        if bound and not already_tracing:
            tracemalloc.stop()
    _expect(
        not stream.read_whole,
        provider,
        "store() called stream.read() without a size, holding the whole upload in memory; read it in chunks "
        "(shutil.copyfileobj(stream, target, 1024 * 1024), an SDK's upload_fileobj)",
    )
    _expect(stream.finished and stream.size == size, provider, f"store() read {stream.size} of the {size} bytes")
    _expect(
        not bound or peak <= bound,
        provider,
        f"store() of a {size // _MIB} MiB stream allocated {peak // _MIB} MiB at its peak (bound: {bound // _MIB} MiB); "
        "copy the stream in chunks instead of collecting it (pass memory_bound= to allow an SDK's part buffers)",
    )
    head = harness.call(provider, "store_head", key=key)
    _expect(head.size == size, provider, f"store_head() of the large file reported {head.size} bytes, expected {size}")
    opened = harness.call(provider, "store_read", key=key, byte_range=None)
    _expect(
        _hash_stream(provider, opened, "store_read() of the large file") == (size, content.sha256()),
        provider,
        "store_read() of the large file did not give back the bytes stored",
    )
    for first, last in ((_STORE_CHUNK - 10, _STORE_CHUNK + 10), (size // 2, size // 2 + 99_999), (size - 100, None)):
        expected = content.slice(first, size - 1 if last is None else last)
        opened = harness.call(provider, "store_read", key=key, byte_range=(first, last))
        got = _read_stream(provider, opened, f"store_read(byte_range={(first, last)!r})", limit=len(expected) + _STORE_CHUNK)
        _expect(got == expected, provider, f"store_read(byte_range={(first, last)!r}) of the large file gave the wrong bytes")
    _expect(harness.call(provider, "store_delete", key=key) is True, provider, "store_delete() of the large file")


def _check_upload_url(
    harness: ProviderHarness, provider: Any, stored_file: Callable[[str, str, int | None], StoredFile], key: str
) -> None:
    body = b"uploaded straight to the provider\n"
    presigned = harness.call(provider, "store_upload_url", file=stored_file(key, "text/plain", len(body)), expires_in=300)
    if presigned is None:
        return
    _expect(isinstance(presigned, PresignedUpload), provider, f"store_upload_url() returned {presigned!r}, not a PresignedUpload")
    _expect(
        isinstance(presigned.url, str) and presigned.url.startswith(("http://", "https://")),
        provider,
        f"PresignedUpload.url must be an http(s) URL (got {presigned.url!r})",
    )
    _expect(presigned.method in ("PUT", "POST"), provider, f"PresignedUpload.method must be PUT or POST (got {presigned.method!r})")
    if presigned.method == "PUT":
        response = requests.put(presigned.url, data=body, headers=presigned.headers, timeout=30)
    else:
        files = {"file": (key.rsplit("/", 1)[-1], body, "text/plain")}
        response = requests.post(presigned.url, data=presigned.fields, files=files, headers=presigned.headers, timeout=30)
    _expect(
        response.ok,
        provider,
        f"uploading through the PresignedUpload ({presigned.method}) was answered {response.status_code}: {response.text[:200]}",
    )
    head = harness.call(provider, "store_head", key=key)
    _expect(head.size == len(body), provider, f"store_head() after a presigned upload reported {head.size} bytes")
    _expect(
        _read_stream(provider, harness.call(provider, "store_read", key=key, byte_range=None), "store_read()") == body,
        provider,
        "store_read() after a presigned upload did not give back the bytes uploaded",
    )
    harness.call(provider, "store_delete", key=key)


# --- publish ----------------------------------------------------------------------------------


def check_publish(
    harness: ProviderHarness,
    provider: Any,
    topic: str = "contract-tests",
    *,
    key: str = "contract-key",
    tenant: str = CONTRACT_TENANT,
    consume_topic: str | None = None,
    wait: float = 30.0,
    settle: float = 1.0,
) -> PublishResult:
    """Every publish hook the provider implements, as the core and the subscription workers use them.

    * ``publish`` returns a ``PublishResult`` (partition ``int >= 0``, offset a non-empty ``str``); events
      with the same key land in the same partition at increasing offsets; an event without a key is accepted.
    * ``publish_batch`` (optional) returns one ``PublishResult`` per event, in order, with the same rules.
    * ``consume`` (optional; requires ``commit`` and ``unsubscribe``) on a fresh topic and group: returns
      ``ConsumedRecord`` objects, never more than ``max_records``, in order, with the published envelope, key and
      headers; a keep-alive (``max_records=0``) returns ``[]`` and loses nothing; after ``commit`` of the
      first records and ``unsubscribe``, the uncommitted records -- and only those -- are delivered again.
    * ``consumer_groups`` (optional) returns ``ConsumerGroup`` objects; after the round trip it shows the
      check's group with its committed offset and no lag.
    * ``reset_offsets`` (optional) to ``earliest``, ``explicit``, ``timestamp`` and ``latest`` moves what
      ``consume`` delivers next, and is refused with ``InUseError`` while the group has an active member.

    :param topic: where the publish checks write.
    :param consume_topic: the topic for the consume checks; a fresh one (``<topic>.consume-<random>``) by
        default, which the broker must create on first publish. It must be empty and used by nothing else.
    :param wait: seconds to wait for records the check expects (a broker's group join can take seconds).
    :param settle: seconds to keep consuming where the check expects nothing more (raise it for a broker
        whose group join takes longer, or the check cannot see a record delivered twice).
    """

    def publish(event_key: str | None, sequence: int) -> PublishResult:
        event = _contract_event(tenant, topic, event_key, sequence)
        result = harness.call(provider, "publish", event=event)
        _check_publish_result(provider, result, topic, "publish()")
        return result

    keyed = [publish(key, sequence) for sequence in range(3)]
    _check_one_partition_in_order(provider, keyed, "publish()")
    publish(None, 3)

    if harness.implements(provider, "publish_batch"):
        _check_publish_batch(harness, provider, topic, key, tenant)

    group: str | None = None
    stream: str | None = None
    if harness.implements(provider, "consume"):
        stream = consume_topic or f"{topic}.consume-{uuid.uuid4().hex[:10]}"
        group = f"{tenant}.{_unique('contract-group')}"
        _check_consume(harness, provider, stream, group, key, tenant, wait, settle)
    else:
        for hook_name in ("commit", "unsubscribe"):
            _expect(
                not harness.implements(provider, hook_name),
                provider,
                f"implements {hook_name}() but not consume(): the three come together",
            )

    if harness.implements(provider, "consumer_groups"):
        _check_consumer_groups(harness, provider, group, stream)
    if harness.implements(provider, "reset_offsets"):
        _expect(
            group is not None and stream is not None,
            provider,
            "implements reset_offsets() but not consume(): a reset only matters to consumers",
        )
        assert group is not None and stream is not None
        _check_reset_offsets(harness, provider, stream, group, key, tenant, wait, settle)
    return keyed[0]


def _contract_event(tenant: str, topic: str, key: str | None, sequence: int, check: str = "publish") -> Event:
    return Event(
        id=_unique("contract-event"),
        tenant=tenant,
        topic=topic,
        event_type="contract.check",
        data={"sequence": sequence, "amount": "12.50", "text": 'quotes " and\nnewlines'},
        key=key,
        headers={"x-contract": check},
    )


def _check_publish_result(provider: object, result: Any, topic: str, action: str) -> None:
    _expect(isinstance(result, PublishResult), provider, f"{action} returned {result!r}, not a PublishResult")
    _expect(result.error is None, provider, f"{action} returned an error ({result.error}) for an event it accepted")
    _expect(
        isinstance(result.partition, int) and not isinstance(result.partition, bool) and result.partition >= 0,
        provider,
        f"{action}: PublishResult.partition is {result.partition!r}; it must be an int >= 0",
    )
    _expect(
        isinstance(result.offset, str) and result.offset,
        provider,
        f"{action}: PublishResult.offset is {result.offset!r}; it must be a non-empty string",
    )
    _expect(result.topic in (None, topic), provider, f"{action}: PublishResult.topic is {result.topic!r}, expected {topic!r}")


def _check_one_partition_in_order(provider: object, results: Sequence[PublishResult], action: str) -> None:
    partitions = {result.partition for result in results}
    _expect(
        len(partitions) == 1,
        provider,
        f"{action}: events with the same key went to partitions {sorted(partitions)}: one key must map to one partition",
    )
    offsets = [result.offset for result in results]
    if all(offset.isdigit() for offset in offsets):
        _expect(
            [int(offset) for offset in offsets] == sorted({int(offset) for offset in offsets}),
            provider,
            f"{action}: offsets {offsets} for one partition do not increase",
        )
    else:
        _expect(len(set(offsets)) == len(offsets), provider, f"{action}: offsets {offsets} repeat for one partition")


def _check_publish_batch(harness: ProviderHarness, provider: Any, topic: str, key: str, tenant: str) -> None:
    events = [_contract_event(tenant, topic, key, sequence, "publish_batch") for sequence in range(3)]
    events.append(_contract_event(tenant, topic, None, 3, "publish_batch"))
    original = copy.deepcopy(events)
    results = harness.call(provider, "publish_batch", events=events)
    _expect(isinstance(results, list), provider, f"publish_batch() returned {results!r}, not a list")
    _expect(events == original, provider, "publish_batch() changed the events it was given; the core reuses them")
    _expect(
        len(results) == len(events),
        provider,
        f"publish_batch() returned {len(results)} results for {len(events)} events: return one per event, in order",
    )
    for result in results:
        _check_publish_result(provider, result, topic, "publish_batch()")
    _check_one_partition_in_order(provider, results[:3], "publish_batch()")
    empty = harness.call(provider, "publish_batch", events=[])
    _expect(empty == [], provider, f"publish_batch([]) returned {empty!r}, expected []")


def _envelope_json(event: Event) -> Any:
    return json.loads(json.dumps(to_dict(event.envelope())))


def _consume(harness: ProviderHarness, provider: Any, subscription: Subscription, max_records: int, timeout: float) -> list[ConsumedRecord]:
    records = harness.call(provider, "consume", subscription=subscription, max_records=max_records, timeout=timeout)
    _expect(isinstance(records, list), provider, f"consume() returned {records!r}, not a list")
    _expect(
        len(records) <= max_records,
        provider,
        f"consume(max_records={max_records}) returned {len(records)} records; return at most max_records",
    )
    for record in records:
        _expect(isinstance(record, ConsumedRecord), provider, f"consume() returned {record!r}, not a ConsumedRecord")
        _expect(
            isinstance(record.offset, int) and not isinstance(record.offset, bool) and record.offset >= 0,
            provider,
            f"ConsumedRecord.offset is {record.offset!r}; it must be an int >= 0",
        )
        _expect(isinstance(record.partition, int) and record.partition >= 0, provider, "ConsumedRecord.partition must be an int >= 0")
    return records


def _collect(
    harness: ProviderHarness,
    provider: Any,
    subscription: Subscription,
    count: int,
    wait: float,
    max_records: int = 10,
) -> list[ConsumedRecord]:
    """Consume until ``count`` records arrived or ``wait`` seconds passed (``count=0``: for ``wait`` seconds)."""
    records: list[ConsumedRecord] = []
    deadline = time.monotonic() + wait
    while (count == 0 or len(records) < count) and time.monotonic() < deadline:
        remaining = deadline - time.monotonic()
        records += _consume(harness, provider, subscription, max_records, max(0.05, min(1.0, remaining)))
    return records


def _describe_records(records: Sequence[ConsumedRecord]) -> str:
    return ", ".join(f"{record.topic}[{record.partition}]@{record.offset}" for record in records) or "none"


def _check_delivered(
    provider: object, records: Sequence[ConsumedRecord], expected: Sequence[Event], action: str
) -> None:
    """``records`` are exactly ``expected``, in order, with their envelope, key and headers."""
    ids = [record.event().id if record.event() else None for record in records]
    wanted = [event.id for event in expected]
    envelopes = [_envelope_json(event) for event in expected]
    for record in records:
        _expect(
            isinstance(record.value, dict) and record.value.get("id") in wanted or record.value in envelopes,
            provider,
            f"{action}: ConsumedRecord.value is {record.value!r}; it must be the published envelope, decoded from JSON",
        )
    _expect(
        ids == wanted,
        provider,
        f"{action}: consume() delivered {_describe_records(records)} (event ids {ids}), expected the events {wanted} "
        "in order",
    )
    for record, event in zip(records, expected, strict=True):
        _expect(record.topic == event.topic, provider, f"{action}: ConsumedRecord.topic is {record.topic!r}, not {event.topic!r}")
        _expect(
            record.value == _envelope_json(event),
            provider,
            f"{action}: ConsumedRecord.value is {record.value!r}; it must be the published envelope, decoded from JSON",
        )
        _expect(record.key == event.key, provider, f"{action}: ConsumedRecord.key is {record.key!r}, not {event.key!r}")
        _expect(
            isinstance(record.headers, dict) and all(record.headers.get(name) == value for name, value in event.headers.items()),
            provider,
            f"{action}: ConsumedRecord.headers {record.headers!r} lack the published headers {event.headers!r}",
        )
    offsets = [record.offset for record in records]
    _expect(offsets == sorted(set(offsets)), provider, f"{action}: offsets {offsets} within one partition must increase")


def _check_consume(
    harness: ProviderHarness,
    provider: Any,
    stream: str,
    group: str,
    key: str,
    tenant: str,
    wait: float,
    settle: float,
) -> None:
    for hook_name in ("commit", "unsubscribe"):
        _expect(
            harness.implements(provider, hook_name),
            provider,
            f"implements consume() but not {hook_name}(): the hub needs all three to run a subscription",
        )
    events = [_contract_event(tenant, stream, key, sequence, "consume") for sequence in range(5)]
    for event in events:
        _check_publish_result(provider, harness.call(provider, "publish", event=event), stream, "publish()")
    subscription = Subscription(name=_unique("contract-subscription"), tenant=tenant, group=group, topics=(stream,))
    try:
        first = _collect(harness, provider, subscription, 2, wait, max_records=2)
        _expect(len(first) >= 2, provider, f"consume() delivered {len(first)} of 5 published records within {wait:.0f} s")
        alive = harness.call(provider, "consume", subscription=subscription, max_records=0, timeout=0)
        _expect(alive == [], provider, f"consume(max_records=0) (a keep-alive) returned {alive!r}, expected []")
        rest = _collect(harness, provider, subscription, 5 - len(first), wait)
        delivered = first + rest
        _check_delivered(provider, delivered, events, "the first reading of 5 records")
        again = _collect(harness, provider, subscription, 0, settle)
        _expect(not again, provider, f"consume() delivered {_describe_records(again)} again without an unsubscribe")

        committed = delivered[2].next_offset
        _expect(
            committed == PartitionOffset(stream, delivered[2].partition, delivered[2].offset + 1),
            provider,
            "ConsumedRecord.next_offset must be the offset after the record",
        )
        harness.call(provider, "commit", subscription=subscription, offsets=[committed])
        harness.call(provider, "unsubscribe", subscription=subscription)
        redelivered = _collect(harness, provider, subscription, 2, wait)
        redelivered += _collect(harness, provider, subscription, 0, settle)
        _check_delivered(provider, redelivered, events[3:], "after commit of 3 records and unsubscribe")

        harness.call(provider, "commit", subscription=subscription, offsets=[redelivered[-1].next_offset])
        harness.call(provider, "unsubscribe", subscription=subscription)
        after_all = _collect(harness, provider, subscription, 0, settle)
        _expect(
            not after_all,
            provider,
            f"after committing every record, consume() delivered {_describe_records(after_all)} again",
        )
    finally:
        harness.call(provider, "unsubscribe", subscription=subscription)
        harness.call(provider, "unsubscribe", subscription=subscription)  # twice: not an error


def _check_consumer_groups(harness: ProviderHarness, provider: Any, group: str | None, stream: str | None) -> None:
    groups = harness.call(provider, "consumer_groups")
    _expect(isinstance(groups, list), provider, f"consumer_groups() returned {groups!r}, not a list")
    for found in groups:
        _expect(isinstance(found, ConsumerGroup), provider, f"consumer_groups() listed {found!r}, not a ConsumerGroup")
        _expect(isinstance(found.group_id, str) and found.group_id, provider, "ConsumerGroup.group_id must be non-empty")
        _expect(isinstance(found.state, str) and found.state, provider, f"group {found.group_id}: state must be non-empty")
        _expect(
            all(isinstance(member, GroupMember) for member in found.members),
            provider,
            f"group {found.group_id}: members must be GroupMember objects",
        )
        _expect(all(isinstance(name, str) for name in found.topics), provider, f"group {found.group_id}: topics must be strings")
        for lag in found.partitions:
            _expect(isinstance(lag, PartitionLag), provider, f"group {found.group_id}: partitions must be PartitionLag objects")
            _expect(lag.lag is None or lag.lag >= 0, provider, f"group {found.group_id}: lag {lag.lag} is negative")
    if group is None or stream is None:
        return
    ours = next((found for found in groups if found.group_id == group), None)
    _expect(ours is not None, provider, f"consumer_groups() does not list the group {group!r} that just committed offsets")
    assert ours is not None
    _expect(stream in ours.topics, provider, f"group {group}: topics {ours.topics} lack {stream!r}, which it consumed")
    lags = [lag for lag in ours.partitions if lag.topic == stream and lag.committed is not None]
    _expect(lags, provider, f"group {group}: no partition of {stream!r} shows a committed offset")
    _expect(sum(lag.committed or 0 for lag in lags) == 5, provider, f"group {group}: committed offsets {lags} do not add up to 5")
    _expect(all(lag.lag in (None, 0) for lag in lags), provider, f"group {group}: everything was committed, but lag is {lags}")


def _check_reset_offsets(
    harness: ProviderHarness,
    provider: Any,
    stream: str,
    group: str,
    key: str,
    tenant: str,
    wait: float,
    settle: float,
) -> None:
    # The events _check_consume published, read back from the start after the first reset.
    subscription = Subscription(name=_unique("contract-subscription"), tenant=tenant, group=group, topics=(stream,))

    def reset(to: OffsetReset) -> list[PartitionOffset]:
        moved = harness.call(provider, "reset_offsets", group=group, topic=stream, to=to)
        _expect(isinstance(moved, list), provider, f"reset_offsets(to={to.to!r}) returned {moved!r}, not a list")
        _expect(
            moved and all(isinstance(offset, PartitionOffset) and offset.topic == stream for offset in moved),
            provider,
            f"reset_offsets(to={to.to!r}) returned {moved!r}: list the new PartitionOffset of each partition moved",
        )
        return moved

    try:
        moved = reset(OffsetReset("earliest"))
        everything = _collect(harness, provider, subscription, 5, wait)
        everything += _collect(harness, provider, subscription, 0, settle)
        _expect(len(everything) == 5, provider, f"after a reset to earliest, consume() delivered {len(everything)} of 5 records")
        partition = everything[0].partition
        _expect(
            [offset.offset for offset in moved if offset.partition == partition] == [everything[0].offset],
            provider,
            f"reset to earliest returned {moved}, but the first record is at {everything[0].offset}",
        )
        harness.call(provider, "unsubscribe", subscription=subscription)

        moved = reset(OffsetReset("explicit", offsets={partition: everything[3].offset}))
        _expect(
            moved == [PartitionOffset(stream, partition, everything[3].offset)],
            provider,
            f"an explicit reset to offset {everything[3].offset} returned {moved}",
        )
        tail = _collect(harness, provider, subscription, 2, wait)
        tail += _collect(harness, provider, subscription, 0, settle)
        _expect(
            [record.offset for record in tail] == [record.offset for record in everything[3:]],
            provider,
            f"after an explicit reset to offset {everything[3].offset}, consume() delivered {_describe_records(tail)}",
        )
        _expect_error(
            InUseError,
            provider,
            "reset_offsets() while the group has an active consumer",
            lambda: harness.call(provider, "reset_offsets", group=group, topic=stream, to=OffsetReset("earliest")),
        )
        harness.call(provider, "unsubscribe", subscription=subscription)

        end = everything[-1].offset + 1
        for to in (OffsetReset("timestamp", timestamp=datetime.now(UTC) + timedelta(days=1)), OffsetReset("latest")):
            moved = reset(to)
            _expect(
                [offset.offset for offset in moved if offset.partition == partition] == [end],
                provider,
                f"reset_offsets(to={to.to!r}) past the last record returned {moved}, expected offset {end}",
            )
        moved = reset(OffsetReset("timestamp", timestamp=datetime.now(UTC) - timedelta(days=1)))
        _expect(
            [offset.offset for offset in moved if offset.partition == partition] == [everything[0].offset],
            provider,
            f"reset_offsets(to='timestamp') a day back returned {moved}, expected offset {everything[0].offset}",
        )
        reset(OffsetReset("latest"))
        nothing = _collect(harness, provider, subscription, 0, settle)
        _expect(not nothing, provider, f"after a reset to latest, consume() delivered {_describe_records(nothing)}")
    finally:
        harness.call(provider, "unsubscribe", subscription=subscription)


# --- sync -------------------------------------------------------------------------------------


def check_sync(
    harness: ProviderHarness,
    provider: Any,
    data_type: str,
    expect_min: int = 1,
    options: dict[str, Any] | None = None,
    *,
    page_size: int = 2,
    max_pages: int = 1000,
    push_updates: Sequence[InventoryUpdate] | None = None,
    read_back: bool = True,
    tenant: str = CONTRACT_TENANT,
) -> SyncResult:
    """``sync`` pages as the core pages it: from ``cursor=None`` to ``has_more=False`` with pages of at
    most ``page_size`` JSON-serialisable dict records (inventory ones with ``sku``, ``location`` and
    ``quantity``) and a cursor that moves on while ``has_more``; the same records (by primary key)
    whatever the page size; resuming from a page's cursor returns the rest; the final cursor returns
    nothing new; an unknown data type raises ``PermanentError`` (ideally ``UnsupportedError``, so the
    core tries the next source).

    For ``inventory`` and a provider with ``sync_push``: the push returns one ``PushItemResult`` per
    update, in order, each ``sent``, ``failed`` (with an error) or ``retry``. Without ``push_updates``
    the check sets the first record's quantity to 3 more, adjusts it by -1, expects both ``sent`` and
    (``read_back``) the new level in a sync from the final cursor, then sets it back.

    :param page_size: the small page size of the first pass (a second pass uses a large one).
    :param push_updates: updates to push instead of the default ones (then only their results are checked).
    :param read_back: check that pushed levels show in the next incremental sync; pass ``False`` for a
        system that applies updates later.
    :returns: every record read, deduplicated by primary key, with the final cursor.
    """
    _require(page_size >= 1, "check_sync: page_size must be at least 1")
    options = dict(options or {})

    def read(cursor: str | None, size: int, what: str) -> tuple[list[SyncResult], str | None]:
        pages: list[SyncResult] = []
        for _ in range(max_pages):
            request = SyncRequest(
                id=_unique("contract-sync"),
                tenant=tenant,
                data_type=data_type,
                options=dict(options),
                cursor=cursor,
                page_size=size,
            )
            page = harness.call(provider, "sync", request=request)
            _check_sync_page(provider, data_type, page, size, f"{what}, page {len(pages) + 1}")
            pages.append(page)
            if not page.has_more:
                return pages, page.cursor
            _expect(
                page.cursor is not None and page.cursor != cursor,
                provider,
                f"{what}, page {len(pages)}: has_more is true but the cursor did not move ({page.cursor!r}); "
                "the core would ask for the same page forever",
            )
            cursor = page.cursor
        raise AssertionError(f"{_label(provider)}: {what} still has_more after {max_pages} pages of {size}")

    pages, final_cursor = read(None, page_size, f"sync({data_type!r}) with page_size={page_size}")
    key_fields = primary_key_of(data_type, pages[0].primary_key)
    everything = _by_key(pages, key_fields)
    _expect(
        len(everything) >= expect_min,
        provider,
        f"sync({data_type!r}) returned {len(everything)} distinct records, expected at least {expect_min}",
    )
    large = max(100, page_size * 50)
    in_large_pages = _by_key(read(None, large, f"sync({data_type!r}) with page_size={large}")[0], key_fields)
    _expect(
        set(in_large_pages) == set(everything),
        provider,
        f"paging lost or invented records: pages of {page_size} gave {len(everything)} records, pages of {large} "
        f"gave {len(in_large_pages)}; differing keys: {sorted(set(in_large_pages) ^ set(everything))[:5]}",
    )
    if len(pages) > 1:
        rest = _by_key(read(pages[0].cursor, page_size, "resuming from the first page's cursor")[0], key_fields)
        resumed = set(_by_key(pages[:1], key_fields)) | set(rest)
        _expect(
            resumed == set(everything),
            provider,
            "resuming from the first page's cursor did not return the rest: a run interrupted after a page would "
            f"lose {sorted(set(everything) - resumed)[:5]}",
        )
    again = _by_key(read(final_cursor, page_size, "syncing again from the final cursor")[0], key_fields)
    new = sorted(set(again) - set(everything))
    _expect(not new, provider, f"syncing again from the final cursor returned records never seen before: {new[:5]}")

    unknown = _unique("contract-no-such-type")
    _expect_error(
        PermanentError,
        provider,
        f"sync() of the unknown data type {unknown!r}",
        lambda: harness.call(
            provider, "sync", request=SyncRequest(id=_unique("contract-sync"), tenant=tenant, data_type=unknown)
        ),
    )
    if data_type == "inventory" and harness.implements(provider, "sync_push"):
        _check_sync_push(
            harness,
            provider,
            list(everything.values()),
            final_cursor,
            push_updates,
            read_back,
            read,
            key_fields,
            tenant,
        )
    return SyncResult(list(everything.values()), cursor=final_cursor, has_more=False, primary_key=pages[0].primary_key)


def _check_sync_page(provider: object, data_type: str, page: Any, page_size: int, where: str) -> None:
    _expect(isinstance(page, SyncResult), provider, f"{where}: sync() returned {page!r}, not a SyncResult")
    _expect(isinstance(page.records, list), provider, f"{where}: SyncResult.records must be a list")
    _expect(
        len(page.records) <= page_size,
        provider,
        f"{where}: {len(page.records)} records for page_size={page_size}; return at most page_size and has_more=True",
    )
    _expect(isinstance(page.has_more, bool), provider, f"{where}: SyncResult.has_more must be True or False")
    _expect(
        page.cursor is None or isinstance(page.cursor, str),
        provider,
        f"{where}: SyncResult.cursor must be a string or None",
    )
    _expect(
        isinstance(page.primary_key, tuple | list) and all(isinstance(name, str) for name in page.primary_key),
        provider,
        f"{where}: SyncResult.primary_key must be a tuple of field names",
    )
    for index, record in enumerate(page.records):
        _expect(isinstance(record, dict), provider, f"{where}: record {index} is {type(record).__name__}, not a dict")
        if data_type == "inventory":
            missing = [name for name in ("sku", "location", "quantity") if name not in record]
            _expect(
                not missing,
                provider,
                f"{where}: inventory record {index} lacks {missing}: the core stores sku, location, quantity",
            )
    try:
        json.dumps(to_dict(page.records))
    except (TypeError, ValueError) as error:
        raise AssertionError(f"{_label(provider)}: {where}: records are not JSON-serialisable ({error})") from error


def _by_key(pages: Sequence[SyncResult], key_fields: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    return {record_key(record, key_fields): record for page in pages for record in page.records}


def _check_sync_push(
    harness: ProviderHarness,
    provider: Any,
    records: list[dict[str, Any]],
    final_cursor: str | None,
    push_updates: Sequence[InventoryUpdate] | None,
    read_back: bool,
    read: Callable[[str | None, int, str], tuple[list[SyncResult], str | None]],
    key_fields: tuple[str, ...],
    tenant: str,
) -> None:
    def push(updates: Sequence[InventoryUpdate], action: str) -> PushResult:
        request = InventoryPush(
            id=_unique("contract-push"), tenant=tenant, updates=list(updates), metadata={"contract": "sync"}
        )
        original = copy.deepcopy(request)
        result = harness.call(provider, "sync_push", push=request)
        _expect(
            isinstance(result, PushResult), provider, f"{action}: sync_push() returned {result!r}, not a PushResult"
        )
        _expect(
            request == original, provider, f"{action}: sync_push() changed the InventoryPush; the core retries with it"
        )
        _expect(
            isinstance(result.results, list) and len(result.results) == len(updates),
            provider,
            f"{action}: {len(getattr(result, 'results', []) or [])} results for {len(updates)} updates: return one "
            "PushItemResult per update, in the order of push.updates",
        )
        for index, (update, outcome) in enumerate(zip(updates, result.results, strict=True)):
            where = f"{action}, result {index}"
            _expect(isinstance(outcome, PushItemResult), provider, f"{where} is {outcome!r}, not a PushItemResult")
            _expect(
                (outcome.sku, outcome.location) == (update.sku, update.location),
                provider,
                f"{where} is for {(outcome.sku, outcome.location)} but update {index} is for "
                f"{(update.sku, update.location)}: keep the order of push.updates",
            )
            _expect(
                outcome.status in PUSH_STATUSES,
                provider,
                f"{where} has status {outcome.status!r}; use one of {', '.join(PUSH_STATUSES)}",
            )
            if outcome.status in ("failed", "retry"):
                _expect(
                    outcome.error, provider, f"{where} is {outcome.status} without saying why: set PushItemResult.error"
                )
        return result

    if push_updates is not None:
        push(push_updates, "pushing the given updates")
        return
    target = next(
        (r for r in records if isinstance(r.get("quantity"), int | float) and not isinstance(r["quantity"], bool)), None
    )
    _require(
        target is not None, f"check_sync: no inventory record with a numeric quantity to push to among {len(records)}"
    )
    assert target is not None
    sku, location, before = str(target["sku"]), str(target["location"]), target["quantity"]
    updates = [
        InventoryUpdate(sku, location, before + 3, "set", "contract check", id=_unique("contract-update")),
        InventoryUpdate(sku, location, -1, "adjust", id=_unique("contract-update")),
    ]
    result = push(updates, f"setting then adjusting {sku} at {location}")
    _expect(
        [outcome.status for outcome in result.results] == ["sent", "sent"],
        provider,
        f"setting then adjusting the existing {sku} at {location} gave {[o.status for o in result.results]}, "
        f"expected sent, sent ({[o.error for o in result.results]})",
    )
    final = result.results[1].quantity
    _expect(
        final is None or final == before + 2,
        provider,
        f"after set {before + 3} and adjust -1 the push says the level is {final}, expected {before + 2}",
    )
    try:
        if read_back:
            changed = _by_key(read(final_cursor, 1000, "syncing from the final cursor after the push")[0], key_fields)
            seen = changed.get(record_key(target, key_fields))
            _expect(
                seen is not None and seen.get("quantity") == before + 2,
                provider,
                f"after the push the next incremental sync shows {sku} at {location} as "
                f"{seen.get('quantity') if seen else 'absent'}, expected {before + 2}: a changed level must come "
                "after the cursor the last run ended with",
            )
    finally:
        restore = InventoryUpdate(sku, location, before, "set", "contract check: restore", id=_unique("contract-update"))
        push([restore], "restoring the level")


# --- health -----------------------------------------------------------------------------------


def check_health(harness: ProviderHarness, provider: Any) -> HealthResult | None:
    """The optional ``health`` hook returns a ``HealthResult`` with status ``success`` or ``error`` and a
    message, and never raises. Returns ``None`` when the provider does not implement it."""
    if not harness.implements(provider, "health"):
        return None
    try:
        result = harness.call(provider, "health")
    except Exception as error:
        raise AssertionError(
            f"{_label(provider)}: health() raised {type(error).__name__}({error}); return "
            "HealthResult('error', reason) instead"
        ) from error
    _expect(isinstance(result, HealthResult), provider, f"health() returned {result!r}, not a HealthResult")
    _expect(
        result.status in HEALTH_STATUSES,
        provider,
        f"health() status is {result.status!r}; use one of {', '.join(HEALTH_STATUSES)}",
    )
    _expect(isinstance(result.message, str) and result.message, provider, "health() must explain itself in message")
    return result


# --- everything -------------------------------------------------------------------------------


def run_contract(harness: ProviderHarness, provider: Any, **inputs: Any) -> dict[str, Any]:
    """Run every check that applies to ``provider``: the class, its capability's check, and health.

    ``inputs`` are the capability check's keyword arguments (``succeeding_method=`` for pay,
    ``topic=`` for publish, ``data_type=`` for sync, which is required). For notify every declared
    channel is checked unless ``channel=`` is given; ``addresses=`` may then be a mapping of channel ->
    addresses. Returns each check's result by name (``"notify:sms"``, ``"pay"``, ``"health"``...).
    """
    check_provider_class(type(provider))
    capability = provider.capability
    results: dict[str, Any] = {}
    check = _CAPABILITY_CHECKS[capability]
    accepted = set(inspect.signature(check).parameters) - {"harness", "provider"}
    unknown = sorted(set(inputs) - accepted)
    if unknown:
        raise TypeError(f"run_contract: {check.__name__} takes no {unknown} (it takes {sorted(accepted)})")
    if capability == "notify":
        inputs = dict(inputs)
        channels = [inputs.pop("channel")] if inputs.get("channel") else list(provider.channels)
        addresses = inputs.pop("addresses", None)
        for channel in channels:
            channel_addresses = addresses.get(channel) if isinstance(addresses, Mapping) else addresses
            results[f"notify:{channel}"] = check_notify(harness, provider, channel, channel_addresses, **inputs)
    elif capability == "sync":
        if "data_type" not in inputs:
            raise TypeError("run_contract: pass data_type= (a data type the sync provider offers)")
        results["sync"] = check(harness, provider, **inputs)
    else:
        results[capability] = check(harness, provider, **inputs)
    results["health"] = check_health(harness, provider)
    return results


_CAPABILITY_CHECKS: dict[str, Callable[..., Any]] = {
    "notify": check_notify,
    "pay": check_pay,
    "store": check_store,
    "publish": check_publish,
    "sync": check_sync,
}
