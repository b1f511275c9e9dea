"""Notifications: the message a notify provider delivers and what it answers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Recipient:
    """One addressee. ``address`` is what the channel uses: an email address, an E.164 phone number,
    or a chat destination (channel name or webhook key)."""

    address: str
    name: str | None = None
    #: The recipient's position in the whole notification: the same in every batch, retry and resume that
    #: carries it, so ``(notification_id, channel, index)`` names one recipient's message for good (a
    #: provider builds its per-recipient ``Message-ID`` or idempotency key from it). ``None``: not known.
    index: int | None = None


@dataclass
class Message:
    """A rendered notification ready to deliver on one channel to one or more recipients."""

    id: str
    tenant: str
    channel: str
    recipients: list[Recipient]
    text: str
    subject: str | None = None
    html: str | None = None
    #: Chat-only: structured blocks (Slack Block Kit) rendered from the template's chat variant.
    blocks: list[dict[str, Any]] | None = None
    template: str | None = None
    priority: str = "normal"
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The notification this batch belongs to (``id`` is the batch's own id, ``<notification>-<channel>-<n>``,
    #: stable across retries: use ``id`` as an idempotency key, these two to group or trace).
    notification_id: str | None = None
    #: The batch's position in the notification (0 for a small send); a bulk send has many batches.
    batch_index: int = 0


@dataclass
class RecipientResult:
    """The outcome for one recipient; ``status`` is ``"sent"``, ``"queued"`` (accepted by the
    provider for later delivery), ``"failed"`` (refused for good) or ``"retry"`` (not sent because of a
    transient problem: the core gives it to the next provider or tries again later)."""

    address: str
    status: str
    provider_message_id: str | None = None
    error: str | None = None


@dataclass
class NotifyResult:
    """What ``notify`` returns: one :class:`RecipientResult` per recipient, in order."""

    results: list[RecipientResult]
    #: The provider's id for the whole send, when it gives one.
    provider_message_id: str | None = None

    @property
    def sent(self) -> int:
        return sum(1 for result in self.results if result.status in ("sent", "queued"))

    @classmethod
    def cut_short(cls, message: Message, results: list[RecipientResult], error: Exception) -> NotifyResult:
        """For a provider that sends one recipient at a time and was stopped by ``error`` after
        ``len(results)`` of them: with nothing sent yet, raise ``error`` (a retry or the next provider
        sends nothing twice); otherwise the rest are ``retry``, which the core hands to the next provider."""
        if not any(result.status in ("sent", "queued") for result in results):
            raise error from None  # the provider's error is the whole story; an SDK's may quote credentials
        logging.getLogger("hub.provider").warning(
            "message %s stopped after %d of %d recipient(s): %s", message.id, len(results), len(message.recipients), error
        )
        unsent = message.recipients[len(results) :]
        return cls([*results, *(RecipientResult(recipient.address, "retry", error=str(error)) for recipient in unsent)])
