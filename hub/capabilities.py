"""The values passed to and returned from provider hooks, and the :class:`Provider` base class.

Everything here is plain data: a plugin needs nothing but these classes, :mod:`hub.errors` and the
``hookimpl`` marker to implement a provider.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

from marshmallow import Schema
from requests.structures import CaseInsensitiveDict

#: The five capabilities a provider can offer; each is one or more hooks in :mod:`hub.hookspecs`.
CAPABILITIES = ("notify", "pay", "store", "publish", "sync")

#: Notification channels. A ``notify`` provider says which of these it can deliver.
CHANNELS = ("email", "sms", "chat")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Provider:
    """Convenient base for provider classes (optional: any class with the same attributes works).

    The core builds one instance per configured provider (``providers.<name>`` in ``hub.yaml``) and,
    when a tenant overrides its settings, one more per such tenant. Subclasses set the class attributes
    and implement the capability's hooks as methods decorated with ``@hookimpl``.
    """

    #: The provider type users write as ``type:`` in hub.yaml (``"smtp"``, ``"stripe"``).
    type_name: ClassVar[str] = ""
    #: One of :data:`CAPABILITIES`.
    capability: ClassVar[str] = ""
    #: For ``notify`` providers: the channels it delivers (subset of :data:`CHANNELS`).
    channels: ClassVar[tuple[str, ...]] = ()
    #: The marshmallow schema of its settings; unknown keys are refused at start-up.
    settings_schema: ClassVar[type[Schema] | None] = None
    #: Setting name -> environment variable read when the setting is absent from hub.yaml.
    env_settings: ClassVar[dict[str, str]] = {}
    #: Setting names whose values are secrets: masked in logs, records and ``GET /services``.
    secret_settings: ClassVar[tuple[str, ...]] = ()
    #: One line for ``GET /plugins`` and the docs.
    description: ClassVar[str] = ""

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        #: The configured name (``providers.<name>``), unique in the hub.
        self.name = name
        self.settings = settings
        self.context = context
        self.log = logging.getLogger(f"hub.provider.{name}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


@dataclass
class ProviderContext:
    """What the core hands a provider when building it."""

    #: The tenant whose settings override this instance, or ``None`` for the shared instance.
    tenant: str | None
    #: ``"development"`` or ``"production"``: test-only providers refuse to run in production.
    mode: str
    #: Folder for the provider's local state (the hub's data directory).
    data_dir: str


# --- notify -----------------------------------------------------------------------------------


@dataclass
class Recipient:
    """One addressee. ``address`` is what the channel uses: an email address, an E.164 phone number,
    or a chat destination (channel name or webhook key)."""

    address: str
    name: str | None = None


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


# --- pay --------------------------------------------------------------------------------------


@dataclass
class PaymentRequest:
    id: str
    tenant: str
    amount: Decimal
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


@dataclass
class PaymentResult:
    #: The provider's id of the payment (``pi_...``), used later for refunds and webhooks.
    transaction_id: str
    #: ``succeeded``, ``pending``, ``requires_action`` or ``failed``.
    status: str
    amount: Decimal
    currency: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class RefundRequest:
    id: str
    tenant: str
    transaction_id: str
    amount: Decimal | None
    currency: str
    reason: str | None = None
    idempotency_key: str | None = None


@dataclass
class RefundResult:
    refund_id: str
    status: str
    amount: Decimal
    currency: str
    details: dict[str, Any] = field(default_factory=dict)


# --- store ------------------------------------------------------------------------------------


@dataclass
class StoredFile:
    """A file's metadata. ``key`` is tenant-prefixed and unique: ``<tenant>/<category>/<ts>-<rand>-<name>``."""

    key: str
    tenant: str
    filename: str
    content_type: str
    size: int
    checksum: str
    category: str = "general"
    metadata: dict[str, str] = field(default_factory=dict)
    #: Filled by the provider: a URL the file can be fetched from, if it has one.
    url: str | None = None


# --- publish ----------------------------------------------------------------------------------


@dataclass
class Event:
    id: str
    tenant: str
    topic: str
    event_type: str
    data: dict[str, Any]
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=utcnow)

    def envelope(self) -> dict[str, Any]:
        """The JSON document published: the event and its tenant, so every consumer sees whose it is."""
        return {
            "id": self.id,
            "tenantId": self.tenant,
            "eventType": self.event_type,
            "timestamp": self.timestamp.isoformat(),
            "data": self.data,
        }


@dataclass
class PublishResult:
    partition: int
    offset: str
    topic: str | None = None


# --- sync -------------------------------------------------------------------------------------


@dataclass
class SyncRequest:
    id: str
    tenant: str
    #: ``inventory``, ``suppliers``, ``customers``, ``orders``, ``sales``, ``shipments``, ``accounts``...
    data_type: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SyncResult:
    records: list[dict[str, Any]]
    #: Opaque position to resume from next time (a cursor or timestamp), when the source has one.
    cursor: str | None = None

    @property
    def count(self) -> int:
        return len(self.records)


# --- health and webhooks ----------------------------------------------------------------------


@dataclass
class HealthResult:
    #: ``"success"`` or ``"error"``, as in the API's health details.
    status: str
    message: str

    @property
    def ok(self) -> bool:
        return self.status == "success"


@dataclass
class WebhookRequest:
    """An HTTP request a provider sent to ``POST /api/integrations/webhooks/<provider>``."""

    url: str
    #: Looked up case-insensitively (``headers["x-twilio-signature"]`` finds ``X-Twilio-Signature``), as
    #: HTTP header names are; iterating gives the names as sent.
    headers: Mapping[str, str]
    body: bytes
    form: dict[str, str]
    query: dict[str, str]

    def __post_init__(self) -> None:
        if not isinstance(self.headers, CaseInsensitiveDict):
            self.headers = CaseInsensitiveDict(dict(self.headers))


@dataclass
class WebhookEvent:
    """One delivery/payment status change found in a webhook.

    ``reference`` is the provider id the hub recorded (``provider_message_id`` or ``transaction_id``);
    ``status`` is the hub's word for it: ``delivered``, ``bounced``, ``failed``, ``succeeded``,
    ``refunded``...
    """

    event_id: str
    reference: str
    status: str
    type: str = ""
    recipient: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def to_dict(value: Any) -> Any:
    """Plain-JSON form of the dataclasses above (Decimal -> str, datetime -> ISO 8601)."""
    if hasattr(value, "__dataclass_fields__"):
        value = asdict(value)
    if isinstance(value, dict):
        return {key: to_dict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_dict(item) for item in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value
