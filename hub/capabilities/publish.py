"""Events: what a broker publishes, consumes and commits, and its consumer groups."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hub.capabilities.common import to_dict, utcnow

#: Where a consumer group with no committed offset for a partition starts reading.
SUBSCRIPTION_STARTS = ("earliest", "latest")
#: What :func:`hub.hookspecs.reset_offsets` can move a group's committed offsets to.
OFFSET_RESETS = ("earliest", "latest", "timestamp", "explicit")


#: The CloudEvents version of every envelope the hub publishes.
CLOUDEVENTS_SPECVERSION = "1.0"
#: The content type of an envelope (CloudEvents' structured JSON mode).
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"


@dataclass
class Event:
    """One event, published as a CloudEvents 1.0 envelope (structured JSON mode; see :meth:`envelope`), with the
    envelope's attributes repeated in :attr:`headers` (``ce_id``, ``ce_type``... as in CloudEvents' Kafka binding)
    so a consumer can route without parsing the value."""

    id: str
    tenant: str
    topic: str
    #: CloudEvents ``type``: ``inventory.stock.updated``.
    event_type: str
    data: dict[str, Any]
    #: The message key (ordering per key); also the CloudEvents ``subject`` unless :attr:`subject` is set.
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=utcnow)
    #: CloudEvents ``source`` (a URI reference); ``/tenants/<tenant>`` when not set.
    source: str | None = None
    subject: str | None = None
    #: CloudEvents ``dataschema``: the URI of the JSON Schema the data was validated against, when one was.
    dataschema: str | None = None

    def attributes(self) -> dict[str, str]:
        """The CloudEvents context attributes (``tenant`` is the hub's extension attribute)."""
        attributes = {
            "specversion": CLOUDEVENTS_SPECVERSION,
            "id": self.id,
            "source": self.source or f"/tenants/{self.tenant}",
            "type": self.event_type,
            "time": self.timestamp.isoformat().replace("+00:00", "Z"),
            "datacontenttype": "application/json",
            "tenant": self.tenant,
        }
        subject = self.subject or self.key
        if subject:
            attributes["subject"] = subject
        if self.dataschema:
            attributes["dataschema"] = self.dataschema
        return attributes

    def envelope(self) -> dict[str, Any]:
        """The JSON document published: a CloudEvents 1.0 event in structured mode, ``data`` inside."""
        return {**self.attributes(), "data": self.data}

    def attribute_headers(self) -> dict[str, str]:
        """The attributes as message headers (``ce_<name>``, CloudEvents' Kafka binding) plus the content type."""
        return {**{f"ce_{name}": value for name, value in self.attributes().items()}, "content-type": CLOUDEVENTS_CONTENT_TYPE}

    @classmethod
    def from_envelope(
        cls, topic: str, envelope: Any, key: str | None = None, headers: dict[str, str] | None = None
    ) -> Event | None:
        """The event :meth:`envelope` published (or the hub's earlier envelope: ``tenantId``/``eventType``), or
        ``None`` when ``envelope`` is not one (a message some other producer wrote to the topic)."""
        if not isinstance(envelope, dict):
            return None
        if {"specversion", "id", "type"} <= set(envelope) and "tenant" in envelope:
            tenant, event_type, moment = envelope["tenant"], envelope["type"], envelope.get("time")
        elif {"id", "tenantId", "eventType", "data"} <= set(envelope):
            tenant, event_type, moment = envelope["tenantId"], envelope["eventType"], envelope.get("timestamp")
        else:
            return None
        try:
            timestamp = datetime.fromisoformat(str(moment).replace("Z", "+00:00"))
        except ValueError:
            timestamp = utcnow()
        data = envelope.get("data")
        return cls(
            id=str(envelope["id"]),
            tenant=str(tenant),
            topic=topic,
            event_type=str(event_type),
            data=data if isinstance(data, dict) else {"value": data},
            key=key,
            headers=dict(headers or {}),
            timestamp=timestamp,
            source=envelope.get("source"),
            subject=envelope.get("subject"),
            dataschema=envelope.get("dataschema"),
        )


@dataclass
class HandlerContext:
    """What a subscription handler factory (:func:`~hub.hookspecs.register_handler_types`) is told."""

    #: The subscription's name (``subscriptions.<name>``).
    subscription: str
    tenant: str
    #: ``hub()`` is the :class:`~hub.manager.IntegrationManager` the subscription runs in (for handlers that
    #: notify, publish or sync); call it when handling, not in the factory: the hub is still being built then.
    hub: Callable[[], Any]


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
        """The hub event this record holds (``None`` for another producer's message), parsed once: the tenant
        check, a filter and a handler all ask for it."""
        if "_event" not in self.__dict__:  # not a dataclass field: equality and asdict() stay the record's
            self.__dict__["_event"] = Event.from_envelope(self.topic, self.value, self.key, self.headers)
        return self.__dict__["_event"]

    def document(self, subscription: Subscription) -> dict[str, Any]:
        """The record as a JSON document for a receiver (what webhook handlers POST): where it came from, its key,
        headers and time, and its value (for a hub event, the CloudEvents envelope)."""
        return {
            "subscription": subscription.name,
            "groupId": subscription.group,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key,
            "headers": self.headers,
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
            "value": to_dict(self.value),
        }


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
class TopicSpec:
    """A topic to create (``create_topic``); ``None``: the broker's (or provider's) default."""

    name: str
    partitions: int | None = None
    replication_factor: int | None = None
    retention_ms: int | None = None


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
