"""The notify contract: every declared channel delivers, results line up with recipients."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hub.capabilities import (
    Message,
    NotifyResult,
    Recipient,
    RecipientResult,
)

if TYPE_CHECKING:
    from hub.testing import ProviderHarness

from hub.testing.contracts.basics import (
    CONTRACT_TENANT,
    DEFAULT_ADDRESSES,
    NOTIFY_STATUSES,
    _expect,
    _require,
    _unique,
)


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
