"""The values passed to and returned from provider hooks, and the :class:`Provider` base class.

Everything here is plain data: a plugin needs nothing but these classes, :mod:`hub.errors` and the
``hookimpl`` marker to implement a provider.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, BinaryIO, ClassVar, NoReturn

from marshmallow import Schema
from requests.structures import CaseInsensitiveDict

from hub.errors import HubError, IncompleteUploadError, PayloadTooLargeError

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
PAYMENT_STATUSES = (
    "requires_action",
    "processing",
    "requires_capture",
    "succeeded",
    "failed",
    "canceled",
    "refunded",
    "partially_refunded",
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
    "refunded": 6,
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


# --- store ------------------------------------------------------------------------------------


@dataclass
class StoredFile:
    """A file the core asks a store provider to keep, and what ``store`` returns.

    ``key`` is tenant-prefixed and unique: ``<tenant>/<category>/<ms timestamp>-<random>-<name>``.
    """

    key: str
    tenant: str
    filename: str
    content_type: str
    category: str = "general"
    metadata: dict[str, str] = field(default_factory=dict)
    #: Bytes. When ``store`` is called: the length the client announced, or ``None`` when it is not known
    #: in advance (a chunked request body). Only a hint (pick a single PUT or a multipart upload): the
    #: stream is the truth, and the core checks the count when the stream ends.
    size: int | None = None
    #: SHA-256 (hex) of the content, computed by the core as the stream passes; ``None`` until it ended.
    checksum: str | None = None
    #: Filled by the provider: a permanent URL the file can be fetched from, if it has one.
    url: str | None = None


@dataclass
class StoredObject:
    """What a store provider holds under a key, as ``store_head`` reports it."""

    key: str
    #: Bytes stored.
    size: int
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    #: The SHA-256 (hex) the core computed at upload, when the provider kept it; ``None`` otherwise.
    checksum: str | None = None
    #: The provider's entity tag (an S3 or Azure ETag, a GCS generation), when it has one.
    etag: str | None = None
    updated_at: datetime | None = None


@dataclass
class PresignedUpload:
    """How a client uploads a file straight to the provider, as ``store_upload_url`` answers."""

    url: str
    #: ``PUT`` (send the bytes as the body) or ``POST`` (an HTML form: ``fields`` first, then ``file``).
    method: str = "PUT"
    #: Headers the client must send with a ``PUT`` (``Content-Type``, the provider's checksum headers).
    headers: dict[str, str] = field(default_factory=dict)
    #: Form fields a ``POST`` upload must carry before the file (an S3 presigned POST's policy).
    fields: dict[str, str] = field(default_factory=dict)
    expires_at: datetime | None = None


#: Bytes of an upload the core reads ahead of the provider: enough for content sniffing, and kept so that
#: a retry of a small upload can replay it even when its source cannot seek.
UPLOAD_HEAD_BYTES = 64 * 1024


class UploadStream(io.RawIOBase):
    """The readable, non-seekable binary stream a ``store`` provider receives.

    The core wraps the upload's source (a request body, a spooled multipart part, a file object or bytes
    from the Python API) in one of these. As the provider reads, it counts the bytes, computes their
    SHA-256 and enforces the size limit: ``read()`` raises :class:`~hub.errors.PayloadTooLargeError` past
    ``limit`` and :class:`~hub.errors.IncompleteUploadError` when the source ends before
    ``expected_size`` or breaks (the client went away). Once ``read()`` returned ``b""``, :attr:`size` and
    :attr:`checksum` are final.

    The core (not the provider) owns the stream and closes it (a file object given as ``source`` stays open:
    it is its opener's to close). :meth:`peek` and :meth:`rewind` are the core's: it sniffs the content type on the first bytes before calling the provider, and replays the
    stream for a retry when the source allows it.
    """

    def __init__(
        self,
        source: BinaryIO | Iterable[bytes],
        *,
        limit: int | None = None,
        expected_size: int | None = None,
        head_bytes: int = UPLOAD_HEAD_BYTES,
    ) -> None:
        super().__init__()
        # A file object stays its opener's to close (a request body, the caller's file); an iterable is
        # wrapped here, and closed with the stream.
        self._owns_source = not hasattr(source, "read")
        self._source: Any = IteratorStream(source) if self._owns_source else source  # type: ignore[arg-type]
        self.limit = limit
        self.expected_size = expected_size
        self._head_limit = head_bytes
        self._head = bytearray()  # the first bytes pulled from the source, kept for sniffing and replay
        self._pulled = 0  # bytes taken from the source (at its start offset + _pulled)
        self._position = 0  # bytes handed to the reader since the last rewind
        self._hash = hashlib.sha256()
        self._finished = False
        #: The error the stream raised to its reader, if any: the core reports it whatever the provider made of it.
        self.error: HubError | None = None
        try:
            self._start: int | None = self._source.tell() if self._source.seekable() else None
        except (AttributeError, OSError, ValueError):
            self._start = None

    # --- what a provider uses -------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    @property
    def size(self) -> int:
        """Bytes read so far; the file's size once :attr:`finished`."""
        return self._position

    @property
    def finished(self) -> bool:
        """Whether the reader reached the end (``read()`` returned ``b""``) without an error."""
        return self._finished

    @property
    def checksum(self) -> str | None:
        """SHA-256 (hex) of the content once :attr:`finished`, else ``None``."""
        return self._hash.hexdigest() if self._finished else None

    def readinto(self, buffer: Any) -> int:
        if self.error is not None:
            raise self.error
        if self.closed:
            raise ValueError("I/O operation on a closed upload stream")
        wanted = len(buffer)
        if wanted == 0:
            return 0
        # Bytes before len(_head) come from the kept head (after a peek or a rewind); the source always stands
        # right after what was handed out or kept, so the rest of a read continues from it.
        if self._position < len(self._head):
            chunk = bytes(self._head[self._position : self._position + wanted])
            if len(chunk) < wanted:
                chunk += self._pull(wanted - len(chunk))
        else:
            chunk = self._pull(wanted)  # the common case: no copy beyond the one into the reader's buffer
        if not chunk:
            if self.expected_size is not None and self._position < self.expected_size:
                self._fail(IncompleteUploadError(f"the upload ended after {self._position} of {self.expected_size} bytes"))
            self._finished = True
            return 0
        self._position += len(chunk)
        if self.limit is not None and self._position > self.limit:
            self._fail(PayloadTooLargeError(self.limit))
        if self.expected_size is not None and self._position > self.expected_size:
            self._fail(IncompleteUploadError(f"the upload is longer than the {self.expected_size} bytes it announced"))
        self._hash.update(chunk)
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        if not self.closed and self._owns_source:
            with contextlib.suppress(Exception):
                self._source.close()
        super().close()

    # --- what the core uses ---------------------------------------------------------------------

    def peek(self, size: int) -> bytes:
        """The first ``size`` bytes (fewer when the content is shorter), without consuming them."""
        size = min(size, self._head_limit)
        while len(self._head) < size and self._pulled == len(self._head):
            chunk = self._read_source(size - len(self._head))
            if not chunk:
                break
            self._head.extend(chunk)
            self._pulled += len(chunk)
        return bytes(self._head[:size])

    def rewind(self) -> bool:
        """Start again from the first byte, for another attempt; ``False`` when the source cannot go back
        (a request body read past :data:`UPLOAD_HEAD_BYTES`), or when the stream failed for the client's
        reason (too large, incomplete: another attempt would fail the same way)."""
        if self.error is not None or self.closed:
            return False
        if self._pulled != len(self._head):
            if self._start is None:
                return False
            try:
                self._source.seek(self._start + len(self._head))
            except (OSError, ValueError):
                return False
            self._pulled = len(self._head)
        self._position = 0
        self._hash = hashlib.sha256()
        self._finished = False
        return True

    # --- internals ------------------------------------------------------------------------------

    def _pull(self, wanted: int) -> bytes:
        chunk = self._read_source(wanted)
        if len(self._head) == self._pulled and len(self._head) < self._head_limit:
            self._head.extend(chunk[: self._head_limit - len(self._head)])
        self._pulled += len(chunk)
        return chunk

    def _read_source(self, wanted: int) -> bytes:
        try:
            chunk = self._source.read(wanted)
        except Exception as error:  # a dropped connection, a werkzeug ClientDisconnected, a broken iterator
            self._fail(IncompleteUploadError(f"the upload broke off after {self._pulled} bytes: {type(error).__name__}"))
        if chunk is None:  # a non-blocking source with nothing yet: not something an upload should be
            self._fail(IncompleteUploadError("the upload source returned no data (non-blocking?)"))
        return bytes(chunk)

    def _fail(self, error: HubError) -> NoReturn:
        self.error = error
        raise error


class IteratorStream(io.RawIOBase):
    """A readable binary file object over an iterable of ``bytes`` chunks.

    For a ``store_read`` whose SDK hands out an iterator (Azure's ``download_blob().chunks()``), and for
    feeding a generator to :class:`UploadStream`. ``close()`` closes the iterator when it can be closed.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._iterator = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = bytes(next(self._iterator))
            except StopIteration:
                return 0
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def close(self) -> None:
        if not self.closed:
            for closable in (self._iterator, self._chunks):
                close = getattr(closable, "close", None)
                if callable(close):
                    close()
        super().close()


class LimitedReader(io.RawIOBase):
    """At most ``length`` bytes of ``raw`` from its current position; ``close()`` closes ``raw``.

    For a ``store_read`` of a byte range on a file object that can seek but not stop (a local file): seek
    to the start, then ``LimitedReader(handle, end - start + 1)``.
    """

    def __init__(self, raw: BinaryIO, length: int) -> None:
        super().__init__()
        self._raw = raw
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        chunk = self._raw.read(min(len(buffer), self._left))
        if not chunk:
            return 0
        self._left -= len(chunk)
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


# --- publish ----------------------------------------------------------------------------------

#: Where a consumer group with no committed offset for a partition starts reading.
SUBSCRIPTION_STARTS = ("earliest", "latest")
#: What :func:`hub.hookspecs.reset_offsets` can move a group's committed offsets to.
OFFSET_RESETS = ("earliest", "latest", "timestamp", "explicit")


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

    @classmethod
    def from_envelope(
        cls, topic: str, envelope: Any, key: str | None = None, headers: dict[str, str] | None = None
    ) -> Event | None:
        """The event :meth:`envelope` published, or ``None`` when ``envelope`` is not one (a message some
        other producer wrote to the topic)."""
        if not isinstance(envelope, dict) or not {"id", "tenantId", "eventType", "data"} <= set(envelope):
            return None
        try:
            timestamp = datetime.fromisoformat(str(envelope.get("timestamp")))
        except ValueError:
            timestamp = utcnow()
        return cls(
            id=str(envelope["id"]),
            tenant=str(envelope["tenantId"]),
            topic=topic,
            event_type=str(envelope["eventType"]),
            data=envelope["data"] if isinstance(envelope["data"], dict) else {"value": envelope["data"]},
            key=key,
            headers=dict(headers or {}),
            timestamp=timestamp,
        )


@dataclass
class PublishResult:
    """Where one event was written. ``publish_batch`` returns one per event; an event of the batch the
    broker did not acknowledge has ``error`` set (see :meth:`failed`) and is published again by the core."""

    partition: int
    offset: str
    topic: str | None = None
    #: Only in ``publish_batch`` results: why this event was not written (``partition`` is then -1).
    error: str | None = None

    @classmethod
    def failed(cls, topic: str | None, error: str) -> PublishResult:
        return cls(partition=-1, offset="", topic=topic, error=error)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Subscription:
    """A consumer of one or more topics, run by the hub's worker for it (one process at a time).

    Frozen and hashable, so a provider can key its per-subscription consumer state by it.
    """

    #: The subscription's name in hub.yaml (``subscriptions.<name>``), unique in the hub.
    name: str
    tenant: str
    #: The consumer group id; always starts with ``<tenant>.`` or ``<tenant>-``.
    group: str
    topics: tuple[str, ...]
    #: ``earliest`` or ``latest``: where the group starts on a partition it has no committed offset for.
    start: str = "earliest"

    def __post_init__(self) -> None:
        if self.start not in SUBSCRIPTION_STARTS:
            raise ValueError(f"Subscription.start must be one of {', '.join(SUBSCRIPTION_STARTS)}")
        if not self.topics:
            raise ValueError("a Subscription needs at least one topic")


@dataclass
class ConsumedRecord:
    """One message ``consume`` returned. ``value`` is the decoded JSON value: for events the hub
    published, :meth:`Event.envelope`; :meth:`event` turns it back into an :class:`Event`."""

    topic: str
    partition: int
    offset: int
    value: Any
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: When the broker wrote it, if it says.
    timestamp: datetime | None = None

    @property
    def next_offset(self) -> PartitionOffset:
        """What to commit once this record is handled: the offset after it."""
        return PartitionOffset(self.topic, self.partition, self.offset + 1)

    def event(self) -> Event | None:
        return Event.from_envelope(self.topic, self.value, self.key, self.headers)


@dataclass(frozen=True)
class PartitionOffset:
    """A position in one partition. In ``commit`` and ``reset_offsets`` it is the *next* offset to
    consume (Kafka's convention): committing ``offset=8`` means records 0..7 are done."""

    topic: str
    partition: int
    offset: int


@dataclass
class PartitionLag:
    """A consumer group's progress in one partition: its committed offset (``None``: never committed),
    the partition's end offset (the offset the next record will get) and the difference."""

    topic: str
    partition: int
    committed: int | None
    end: int | None
    lag: int | None = None

    def __post_init__(self) -> None:
        if self.lag is None and self.end is not None:
            self.lag = max(self.end - (self.committed or 0), 0)


@dataclass
class GroupMember:
    """One live consumer in a group; ``assignment`` maps topic -> the partitions it reads."""

    member_id: str
    client_id: str | None = None
    host: str | None = None
    assignment: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class ConsumerGroup:
    """What ``consumer_groups`` returns for each group the broker knows."""

    group_id: str
    #: The broker's word: ``Stable``, ``Empty``, ``PreparingRebalance``, ``CompletingRebalance``, ``Dead``.
    state: str
    members: list[GroupMember] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    partitions: list[PartitionLag] = field(default_factory=list)

    @property
    def lag(self) -> int | None:
        """The total lag over the partitions that report one (``None`` when none does)."""
        known = [partition.lag for partition in self.partitions if partition.lag is not None]
        return sum(known) if known else None


@dataclass(frozen=True)
class OffsetReset:
    """Where ``reset_offsets`` moves a group's committed offsets in one topic.

    ``to`` is ``earliest`` (the first record still kept), ``latest`` (the end: skip everything),
    ``timestamp`` (the first record written at or after ``timestamp``; the end when there is none) or
    ``explicit`` (``offsets`` maps partition -> next offset to consume; other partitions stay as they are).
    """

    to: str
    timestamp: datetime | None = None
    offsets: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.to not in OFFSET_RESETS:
            raise ValueError(f"OffsetReset.to must be one of {', '.join(OFFSET_RESETS)}")
        if (self.to == "timestamp") != (self.timestamp is not None):
            raise ValueError("OffsetReset: give a timestamp with to='timestamp', and only then")
        if (self.to == "explicit") != bool(self.offsets):
            raise ValueError("OffsetReset: give offsets (partition -> offset) with to='explicit', and only then")
        if any(offset < 0 or partition < 0 for partition, offset in self.offsets.items()):
            raise ValueError("OffsetReset: partitions and offsets are >= 0")


# --- sync -------------------------------------------------------------------------------------

#: The primary key of inventory records: one level per SKU and location (and source).
INVENTORY_KEY = ("sku", "location")
#: The primary key of every other stream's records unless the provider names another.
DEFAULT_KEY = ("id",)
#: How a :class:`InventoryUpdate` changes a level: ``set`` it to ``quantity``, or ``adjust`` it by ``quantity``.
PUSH_MODES = ("set", "adjust")
#: The outcome of one pushed update, as for notify's recipients.
PUSH_STATUSES = ("sent", "failed", "retry")


@dataclass
class SyncRequest:
    """One page of a stream, asked for by the core's page loop.

    The core calls :func:`hub.hookspecs.sync` again with the returned ``cursor`` while the result says
    ``has_more``, storing each page and saving the cursor after it, per tenant, provider and stream.
    """

    id: str
    tenant: str
    #: The stream: ``inventory``, ``suppliers``, ``customers``, ``orders``, ``sales``, ``shipments``...
    data_type: str
    options: dict[str, Any] = field(default_factory=dict)
    #: Where to continue: the ``cursor`` of the previous page or run, exactly as the provider returned
    #: it; ``None`` means from the beginning (a first run, or a full resync).
    cursor: str | None = None
    #: The most records to return in this page (fewer is fine).
    page_size: int = 500


@dataclass
class SyncResult:
    """One page of records."""

    records: list[dict[str, Any]]
    #: Opaque position after the last record of this page, handed back as ``SyncRequest.cursor`` for
    #: the next page (or the next run, when ``has_more`` is false). ``None``: the source has no
    #: position, and the next run starts from the beginning again.
    cursor: str | None = None
    #: ``True`` when more records follow now: the core asks again with ``cursor``. ``False`` when
    #: the stream is read to its end for this run.
    has_more: bool = False
    #: The record fields that identify a record in this stream; empty means the default:
    #: :data:`INVENTORY_KEY` for ``inventory`` (always), :data:`DEFAULT_KEY` for every other stream.
    primary_key: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return len(self.records)


def primary_key_of(data_type: str, declared: tuple[str, ...] | list[str] = ()) -> tuple[str, ...]:
    """The primary key the core deduplicates ``data_type`` records by (see :attr:`SyncResult.primary_key`)."""
    if data_type == "inventory":
        return INVENTORY_KEY
    return tuple(declared) or DEFAULT_KEY


def record_key(record: dict[str, Any], key_fields: tuple[str, ...]) -> str:
    """The string a record is stored under: its key fields' values as a JSON list, or, for a record
    lacking one of them, ``#`` and a hash of its content (identical records then collapse into one)."""
    if all(record.get(name) is not None for name in key_fields):
        return json.dumps([str(record[name]) for name in key_fields], ensure_ascii=False, separators=(",", ":"))
    content = json.dumps(record, default=str, sort_keys=True, separators=(",", ":"))
    return "#" + hashlib.sha256(content.encode("utf-8")).hexdigest()


@dataclass
class InventoryUpdate:
    """One quantity change to send to the external system."""

    sku: str
    location: str
    #: The new level (``mode="set"``) or the change, positive or negative (``mode="adjust"``).
    quantity: int | float
    #: ``set`` or ``adjust`` (:data:`PUSH_MODES`).
    mode: str = "set"
    #: Why (``"received"``, ``"correction"``, ``"sale"``...), for sources that record a reason.
    reason: str | None = None
    #: The hub's id of this update, stable across retries (also when it is retried alone): use it as the
    #: system's idempotency key where there is one, so a retried ``adjust`` is applied once.
    id: str | None = None


@dataclass
class InventoryPush:
    """Quantity updates for one external system, from ``POST /inventory/updates`` or the facade."""

    #: The hub's id of the push (a later attempt with the updates left to retry has the same id).
    id: str
    tenant: str
    updates: list[InventoryUpdate]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class PushItemResult:
    """The outcome of one update: ``sent`` (applied), ``failed`` (refused for good: an unknown SKU or
    location, a quantity the system does not accept) or ``retry`` (not applied because of a transient
    problem: the core sends it again later)."""

    sku: str
    location: str
    status: str
    #: The level after the update, when the system says (the hub then records it as the new level).
    quantity: int | float | None = None
    error: str | None = None


@dataclass
class PushResult:
    """What ``sync_push`` returns: one :class:`PushItemResult` per update, in order."""

    results: list[PushItemResult]

    @property
    def sent(self) -> int:
        return sum(1 for result in self.results if result.status == "sent")

    @classmethod
    def cut_short(cls, push: InventoryPush, results: list[PushItemResult], error: Exception) -> PushResult:
        """For a provider that applies one update at a time and was stopped by ``error`` after
        ``len(results)`` of them: with nothing applied yet, raise ``error`` (a retry applies nothing
        twice); otherwise the rest are ``retry``, which the core sends again later."""
        if not any(result.status == "sent" for result in results):
            raise error from None
        logging.getLogger("hub.provider").warning(
            "push %s stopped after %d of %d update(s): %s", push.id, len(results), len(push.updates), error
        )
        rest = push.updates[len(results) :]
        retry = [PushItemResult(update.sku, update.location, "retry", error=str(error)) for update in rest]
        return cls([*results, *retry])


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
    ``status`` is the hub's word for it: ``delivered``, ``bounced``, ``failed``... for a delivery, one of
    :data:`PAYMENT_STATUSES` for a payment (keep the provider's own word in ``details["raw_status"]``, and
    the refunded total in ``details["amount_refunded"]`` when the event says it).
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
