"""Publish provider ``kafka``: events to Apache Kafka (or any broker speaking its protocol) with kafka-python 3.x.

* **publish** -- one :class:`kafka.KafkaProducer` per provider instance, shared by every thread, built on first
  use under a lock: ``acks=all`` and the idempotent producer (the broker drops the producer's own retries, so a
  retried request never writes a record twice), batching by ``linger_ms``/``batch_size``/``compression_type``.
  The value is the event's CloudEvents envelope as JSON (structured mode), the key the event's key (ordering per
  key: one key, one partition), and every ``event.headers`` entry -- with the ``ce_*`` attribute headers of
  CloudEvents' Kafka binding where the event lacks them -- travels as a Kafka header.
* **consume/commit/unsubscribe** -- one :class:`kafka.KafkaConsumer` per subscription (name and group), with
  ``enable_auto_commit`` off: the hub commits after its handler. A keep-alive (``max_records=0``) pauses the
  partitions, polls and resumes. A rebalance listener commits what the hub handled before partitions are taken
  away, and a commit for partitions this consumer lost is refused (the hub consumes again from the committed
  offsets). A partition without a committed offset starts at the subscription's ``start`` and that position is
  committed at once.
* **consumer_groups/reset_offsets** -- :class:`kafka.KafkaAdminClient` (``list_groups``, ``describe_groups``,
  ``list_group_offsets``, ``list_partition_offsets``, ``alter_group_offsets``). A reset is refused while the group
  has members, as Kafka requires, and writes exact offsets with ``alter_group_offsets``.
* Topics are created on first use (``create_topics``) with the configured partitions, replication and retention.

kafka-python is imported inside the provider, never at module import: start-up stays fast.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from hub import hookimpl
from hub.capabilities import (
    ConsumedRecord,
    ConsumerGroup,
    Event,
    GroupMember,
    HealthResult,
    OffsetReset,
    PartitionLag,
    PartitionOffset,
    Provider,
    ProviderContext,
    PublishResult,
    Subscription,
    TopicSpec,
    to_dict,
)
from hub.errors import ConfigurationError, InUseError, PermanentError, ProviderError, TransientError

__version__ = "0.1.0"

#: Kafka's rule for topic names (``kafka.common.internals.Topic``).
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
#: Group states in which a group has no live members (an offset reset is allowed).
_IDLE_STATES = frozenset({"Empty", "Dead"})

ACKS = {"all": "all", "1": 1, "0": 0}
COMPRESSION = ("none", "gzip", "snappy", "lz4", "zstd")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaSettings(Schema):
    """``providers.<name>`` settings of a ``kafka`` provider."""

    #: ``host:port[,host:port...]``; env ``KAFKA_BOOTSTRAP_SERVERS``.
    bootstrap_servers = fields.String(required=True, validate=validate.Regexp(r"^[^,\s]+(,[^,\s]+)*$"))
    client_id = fields.String(load_default="integration-hub", validate=validate.Length(min=1, max=200))
    # --- security
    security_protocol = fields.String(load_default="PLAINTEXT", validate=validate.OneOf(SECURITY_PROTOCOLS))
    sasl_mechanism = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(SASL_MECHANISMS))
    sasl_username = fields.String(load_default=None, allow_none=True)
    sasl_password = fields.String(load_default=None, allow_none=True)
    ssl_cafile = fields.String(load_default=None, allow_none=True)
    ssl_certfile = fields.String(load_default=None, allow_none=True)
    ssl_keyfile = fields.String(load_default=None, allow_none=True)
    ssl_password = fields.String(load_default=None, allow_none=True)
    ssl_check_hostname = fields.Boolean(load_default=True)
    # --- producer
    acks = fields.String(load_default="all", validate=validate.OneOf(list(ACKS)))
    enable_idempotence = fields.Boolean(load_default=True)
    linger_ms = fields.Integer(load_default=5, validate=validate.Range(min=0, max=60_000))
    batch_size = fields.Integer(load_default=16384, validate=validate.Range(min=0, max=64 * 1024 * 1024))
    compression_type = fields.String(load_default="none", validate=validate.OneOf(COMPRESSION))
    max_request_size = fields.Integer(load_default=1048576, validate=validate.Range(min=1024))
    #: How long one request to a broker may take before the client retries it.
    request_timeout_ms = fields.Integer(load_default=30_000, validate=validate.Range(min=100))
    #: How long a record may take from ``send`` to its acknowledgement, retries included.
    delivery_timeout_ms = fields.Integer(load_default=30_000, validate=validate.Range(min=100))
    #: How long ``send`` waits for topic metadata (an unreachable broker fails after this).
    max_block_ms = fields.Integer(load_default=10_000, validate=validate.Range(min=0))
    #: How long building a client waits for the first broker connection.
    bootstrap_timeout_ms = fields.Integer(load_default=10_000, validate=validate.Range(min=100))
    # --- topics
    #: Put before every topic name on the broker (an environment's or a tenant instance's namespace).
    topic_prefix = fields.String(load_default="", validate=validate.Regexp(r"^[a-zA-Z0-9._-]{0,100}$"))
    #: Create a missing topic on first use (otherwise the broker's ``auto.create.topics.enable`` decides).
    create_topics = fields.Boolean(load_default=True)
    #: Partitions and replication factor of topics it creates; ``None``: the broker's defaults.
    topic_partitions = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1, max=10_000))
    topic_replication_factor = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(min=1, max=32)
    )
    #: ``retention.ms`` of topics it creates; ``None``: the broker's default.
    topic_retention_ms = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=-1))
    # --- consumers
    session_timeout_ms = fields.Integer(load_default=45_000, validate=validate.Range(min=1000))
    heartbeat_interval_ms = fields.Integer(load_default=3_000, validate=validate.Range(min=100))
    max_poll_interval_ms = fields.Integer(load_default=300_000, validate=validate.Range(min=1000))
    #: How long the broker may hold a fetch for more data: the idle part of a subscription's latency.
    fetch_max_wait_ms = fields.Integer(load_default=500, validate=validate.Range(min=0, max=30_000))

    @validates_schema
    def _consistent(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("enable_idempotence", True) and data.get("acks", "all") != "all":
            raise ValidationError({"acks": ["the idempotent producer needs acks: all (or enable_idempotence: false)"]})
        protocol = data.get("security_protocol", "PLAINTEXT")
        if protocol.startswith("SASL_"):
            for key in ("sasl_mechanism", "sasl_username", "sasl_password"):
                if not data.get(key):
                    raise ValidationError({key: [f"required with security_protocol {protocol}"]})
        if data.get("heartbeat_interval_ms", 3000) >= data.get("session_timeout_ms", 45000):
            raise ValidationError({"heartbeat_interval_ms": ["must be lower than session_timeout_ms"]})


@dataclass
class _ConsumerState:
    """One subscription's consumer in this process."""

    consumer: Any
    listener: Any
    #: Partitions whose start position still has to be committed (assigned without a committed offset).
    unstarted: set[Any] = field(default_factory=set)
    #: Per partition, the next offset the hub asked to commit and the one known durable.
    handled: dict[Any, int] = field(default_factory=dict)
    durable: dict[Any, int] = field(default_factory=dict)
    #: How many times the rebalance listener committed handled offsets before partitions moved.
    revoke_commits: int = 0


class Kafka(Provider):
    type_name = "kafka"
    capability = "publish"
    settings_schema: ClassVar[type[Schema]] = KafkaSettings
    env_settings: ClassVar[dict[str, str]] = {
        "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
        "sasl_username": "KAFKA_SASL_USERNAME",
        "sasl_password": "KAFKA_SASL_PASSWORD",
        "ssl_password": "KAFKA_SSL_PASSWORD",
    }
    secret_settings: ClassVar[tuple[str, ...]] = ("sasl_username", "sasl_password", "ssl_password")
    description = "Publishes to and consumes from Apache Kafka (kafka-python), with consumer groups."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self.prefix: str = settings["topic_prefix"]
        self._producer: Any = None
        self._admin: Any = None
        self._clients_lock = threading.Lock()
        self._admin_lock = threading.Lock()
        self._known_topics: set[str] = set()
        self._broker_names: dict[str, str] = {}
        self._consumers: dict[tuple[str, str], _ConsumerState] = {}
        self._consumers_lock = threading.Lock()

    # --- clients -----------------------------------------------------------------------------------

    def connection_config(self) -> dict[str, Any]:
        """What every kafka-python client of this provider is given: brokers, identity, security, timeouts."""
        settings = self.settings
        config: dict[str, Any] = {
            "bootstrap_servers": settings["bootstrap_servers"].split(","),
            "client_id": settings["client_id"],
            "security_protocol": settings["security_protocol"],
            "request_timeout_ms": settings["request_timeout_ms"],
            "bootstrap_timeout_ms": settings["bootstrap_timeout_ms"],
        }
        if settings["security_protocol"].startswith("SASL_"):
            config.update(
                sasl_mechanism=settings["sasl_mechanism"],
                sasl_plain_username=settings["sasl_username"],
                sasl_plain_password=settings["sasl_password"],
            )
        if settings["security_protocol"].endswith("SSL"):
            config.update(
                ssl_cafile=settings["ssl_cafile"],
                ssl_certfile=settings["ssl_certfile"],
                ssl_keyfile=settings["ssl_keyfile"],
                ssl_password=settings["ssl_password"],
                ssl_check_hostname=settings["ssl_check_hostname"],
            )
        return config

    def producer_config(self) -> dict[str, Any]:
        settings = self.settings
        return {
            **self.connection_config(),
            "acks": ACKS[settings["acks"]],
            "enable_idempotence": settings["enable_idempotence"],
            "linger_ms": settings["linger_ms"],
            "batch_size": settings["batch_size"],
            "compression_type": None if settings["compression_type"] == "none" else settings["compression_type"],
            "max_request_size": settings["max_request_size"],
            "delivery_timeout_ms": max(
                settings["delivery_timeout_ms"], settings["request_timeout_ms"] + settings["linger_ms"]
            ),
            "max_block_ms": settings["max_block_ms"],
            # At most 5 in flight keeps the idempotent producer's ordering guarantee.
            "max_in_flight_requests_per_connection": 5,
        }

    def consumer_config(self, subscription: Subscription) -> dict[str, Any]:
        settings = self.settings
        config = self.connection_config()
        return {
            **config,
            "client_id": f"{settings['client_id']}:{subscription.name}",
            "group_id": subscription.group,
            "enable_auto_commit": False,
            "auto_offset_reset": subscription.start,
            "session_timeout_ms": settings["session_timeout_ms"],
            "heartbeat_interval_ms": settings["heartbeat_interval_ms"],
            "max_poll_interval_ms": settings["max_poll_interval_ms"],
            "fetch_max_wait_ms": settings["fetch_max_wait_ms"],
            # A poll may wait up to the hub's timeout; a request must be allowed longer than that.
            "request_timeout_ms": max(settings["request_timeout_ms"], settings["session_timeout_ms"] + 5000),
        }

    def producer(self) -> Any:
        """The provider's one producer, shared by every thread (kafka-python's producer is thread-safe)."""
        with self._clients_lock:
            if self._producer is None:
                from kafka import KafkaProducer

                try:
                    self._producer = KafkaProducer(**self.producer_config())
                except Exception as error:
                    raise self._error(error, "connecting the producer") from None
            return self._producer

    def admin(self) -> Any:
        """The provider's admin client, made on first use. (Methods, not properties: the plugin manager looks at
        every attribute of a provider when registering it, and a property would connect then.)"""
        with self._clients_lock:
            if self._admin is None:
                from kafka import KafkaAdminClient

                try:
                    admin = KafkaAdminClient(**self.connection_config())
                except Exception as error:
                    raise self._error(error, "connecting the admin client") from None
                # The hub never reads a group's authorized operations; some brokers (Tansu) set bits kafka-python
                # cannot decode, which makes describe_groups fail. Keep them undecoded.
                if hasattr(admin, "_process_acl_operations"):
                    admin._process_acl_operations = lambda result: result
                self._admin = admin
            return self._admin

    def _admin_call(self, action: str, call: Callable[[Any], Any]) -> Any:
        admin = self.admin()
        try:
            with self._admin_lock:
                return call(admin)
        except ProviderError:
            raise
        except Exception as error:
            raise self._error(error, action) from None

    # --- topics ------------------------------------------------------------------------------------

    def broker_topic(self, topic: str) -> str:
        """The topic's name on the broker (with ``topic_prefix``), checked against Kafka's rule."""
        known = self._broker_names.get(topic)
        if known is not None:
            return known
        name = f"{self.prefix}{topic}"
        if not isinstance(topic, str) or not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
            raise PermanentError(
                f"kafka: invalid topic name {topic!r}: use 1-249 characters among letters, digits, '.', '_' and '-'",
                provider_code="invalid_topic",
            )
        if len(self._broker_names) < 10_000:  # a cache, bounded: topics are few in practice
            self._broker_names[topic] = name
        return name

    def hub_topic(self, broker_topic: str) -> str | None:
        """The hub's name of a broker topic, or ``None`` for a topic outside ``topic_prefix``."""
        return broker_topic[len(self.prefix) :] if broker_topic.startswith(self.prefix) else None

    @hookimpl
    def list_topics(self) -> list[str]:
        """The hub's topics on the broker (those under ``topic_prefix``, without it)."""
        names = self._admin_call("listing topics", lambda admin: admin.list_topics())
        return sorted(topic for name in names if (topic := self.hub_topic(name)) and not name.startswith("__"))

    @hookimpl
    def create_topic(self, topic: TopicSpec) -> bool:
        return self.make_topic(topic.name, topic.partitions, topic.replication_factor, topic.retention_ms)

    def make_topic(
        self,
        topic: str,
        partitions: int | None = None,
        replication_factor: int | None = None,
        retention_ms: int | None = None,
    ) -> bool:
        """Create ``topic`` (the hub's name); ``False`` if it existed. Defaults: the provider's ``topic_*``."""
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        name = self.broker_topic(topic)
        settings = self.settings
        partitions = partitions or settings["topic_partitions"] or -1
        replication = replication_factor or settings["topic_replication_factor"] or -1
        retention = retention_ms if retention_ms is not None else settings["topic_retention_ms"]
        configs = {"retention.ms": str(retention)} if retention is not None else {}
        new_topic = NewTopic(name, partitions, replication, topic_configs=configs)
        try:
            self._admin_call(f"creating topic {topic}", lambda admin: admin.create_topics([new_topic]))
        except PermanentError as error:
            if (
                isinstance(error.__context__, TopicAlreadyExistsError)
                or error.provider_code == "TopicAlreadyExistsError"
            ):
                self._known_topics.add(name)
                return False
            raise
        self._known_topics.add(name)
        return True

    def ensure_topics(self, names: Iterable[str]) -> None:
        """Create the broker topics in ``names`` that do not exist yet (with ``create_topics`` on)."""
        missing = {name for name in names if name not in self._known_topics}
        if not missing or not self.settings["create_topics"]:
            return
        existing = set(self._admin_call("listing topics", lambda admin: admin.list_topics()))
        self._known_topics |= existing & missing
        for name in sorted(missing - existing):
            self.make_topic(name[len(self.prefix) :])

    # --- publishing --------------------------------------------------------------------------------

    def record_for(self, event: Event) -> tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]:
        """(broker topic, key, value, headers) of the record ``event`` becomes."""
        topic = self.broker_topic(event.topic)
        value = json.dumps(event.envelope(), separators=(",", ":"), default=_json_value).encode("utf-8")
        headers = {str(name): str(item) for name, item in event.headers.items()}
        # The CloudEvents Kafka binding (ce_id, ce_type, ce_tenant..., content-type) where the event lacks them:
        # the core puts them in event.headers already; an event built elsewhere (a plugin, a test) gets them too.
        if "ce_id" not in headers or "content-type" not in headers:  # the core's events carry them: skip the work
            for name, item in event.attribute_headers().items():
                headers.setdefault(name, item)
        key = event.key.encode("utf-8") if event.key is not None else None
        return topic, key, value, [(name, item.encode("utf-8")) for name, item in headers.items()]

    def _send(self, event: Event, producer: Any = None) -> Any:
        topic, key, value, headers = self.record_for(event)
        return (producer or self.producer()).send(topic, value=value, key=key, headers=headers)

    def _wait_timeout(self) -> float:
        settings = self.settings
        return (settings["delivery_timeout_ms"] + settings["request_timeout_ms"] + settings["linger_ms"]) / 1000 + 1

    @hookimpl
    def publish(self, event: Event) -> PublishResult:
        topic = self.broker_topic(event.topic)
        self.ensure_topics([topic])
        try:
            metadata = self._send(event).get(timeout=self._wait_timeout())
        except ProviderError:
            raise
        except Exception as error:
            raise self._error(error, f"publishing to {event.topic}") from None
        return PublishResult(partition=metadata.partition, offset=str(metadata.offset), topic=event.topic)

    @hookimpl
    def publish_batch(self, events: list[Event]) -> list[PublishResult]:
        if not events:
            return []
        topics = {self.broker_topic(event.topic) for event in events}  # an invalid topic refuses the whole batch
        self.ensure_topics(topics)
        producer = self.producer()
        futures: list[Any] = []
        errors: list[ProviderError | None] = []
        for event in events:
            try:
                futures.append(self._send(event, producer))
                errors.append(None)
            except Exception as error:  # not even queued (no metadata in max_block_ms, too large): this one fails
                futures.append(None)
                errors.append(self._error(error, f"publishing to {event.topic}"))
        try:
            producer.flush(timeout=self._wait_timeout())
        except Exception as error:  # a flush that timed out: each future below says which records made it
            self.log.warning("kafka: flush of a batch of %d did not finish: %s", len(events), error)
        results: list[PublishResult] = []
        for index, (event, future) in enumerate(zip(events, futures, strict=True)):
            if future is None:
                results.append(PublishResult.failed(event.topic, str(errors[index])))
                continue
            try:
                metadata = future.get(timeout=1.0 if future.is_done else self._wait_timeout())
            except Exception as error:
                errors[index] = self._error(error, f"publishing to {event.topic}")
                results.append(PublishResult.failed(event.topic, str(errors[index])))
                continue
            results.append(PublishResult(partition=metadata.partition, offset=str(metadata.offset), topic=event.topic))
        if all(not result.ok for result in results):
            first = next(error for error in errors if error is not None)
            raise first
        return results

    # --- consuming ---------------------------------------------------------------------------------

    @staticmethod
    def _key(subscription: Subscription) -> tuple[str, str]:
        return subscription.name, subscription.group

    def _state(self, subscription: Subscription) -> _ConsumerState:
        with self._consumers_lock:
            state = self._consumers.get(self._key(subscription))
        return state if state is not None else self._join(subscription)

    def _join(self, subscription: Subscription) -> _ConsumerState:
        from kafka import KafkaConsumer

        topics = [self.broker_topic(topic) for topic in subscription.topics]
        self.ensure_topics(topics)
        try:
            consumer = KafkaConsumer(**self.consumer_config(subscription))
        except Exception as error:
            raise self._error(error, f"joining group {subscription.group}") from None
        state = _ConsumerState(consumer=consumer, listener=None)
        state.listener = _rebalance_listener(self, state)
        consumer.subscribe(topics=topics, listener=state.listener)
        with self._consumers_lock:
            self._consumers[self._key(subscription)] = state
        return state

    @hookimpl
    def consume(self, subscription: Subscription, max_records: int, timeout: float) -> list[ConsumedRecord]:
        state = self._state(subscription)
        consumer = state.consumer
        try:
            if max_records <= 0:
                # A keep-alive while the hub retries a record: stay in the group, move nothing.
                assigned = consumer.assignment()
                if assigned:
                    consumer.pause(*assigned)
                try:
                    consumer.poll(timeout_ms=0)
                finally:
                    if assigned:
                        consumer.resume(*(tp for tp in assigned if tp in consumer.assignment()))
                self._commit_start_positions(state)
                return []
            batches = consumer.poll(timeout_ms=int(max(timeout, 0.0) * 1000), max_records=max_records)
            try:
                self._commit_start_positions(state, batches)
            except Exception:
                # The records fetched are not returned: move back to them, so the next call returns them.
                for tp, messages in batches.items():
                    if messages:
                        consumer.seek(tp, messages[0].offset)
                raise
        except ProviderError:
            raise
        except Exception as error:
            raise self._error(error, f"consuming for {subscription.name}") from None
        records: list[ConsumedRecord] = []
        for tp, messages in batches.items():
            topic = self.hub_topic(tp.topic) or tp.topic
            for message in messages:
                records.append(self._consumed(topic, message))
        return records[:max_records]

    def _consumed(self, topic: str, message: Any) -> ConsumedRecord:
        try:
            value = json.loads(message.value) if message.value is not None else None
        except ValueError:
            value = message.value.decode("utf-8", errors="replace")  # another producer's text: handed over as is
        headers = {name: (item or b"").decode("utf-8", errors="replace") for name, item in message.headers or []}
        timestamp = (
            datetime.fromtimestamp(message.timestamp / 1000, UTC)
            if message.timestamp and message.timestamp > 0
            else None
        )
        return ConsumedRecord(
            topic=topic,
            partition=message.partition,
            offset=message.offset,
            value=value,
            key=message.key.decode("utf-8", errors="replace") if message.key is not None else None,
            headers=headers,
            timestamp=timestamp,
        )

    def _commit_start_positions(self, state: _ConsumerState, batches: dict[Any, list[Any]] | None = None) -> None:
        """Commit where newly assigned partitions without a committed offset start, so a restart resumes there
        rather than resolving ``latest`` again (a record published in between would be skipped). For a partition
        whose first records this poll returned, that is the first record's offset -- never the position after
        them, which would lose them if the process died before the hub handled them."""
        if not state.unstarted:
            return
        from kafka.structs import OffsetAndMetadata

        consumer = state.consumer
        assigned = consumer.assignment()
        pending = {tp for tp in state.unstarted if tp in assigned}
        state.unstarted -= pending
        offsets = {}
        for tp in pending:
            if consumer.committed(tp) is None:
                returned = (batches or {}).get(tp)
                start = returned[0].offset if returned else consumer.position(tp)
                offsets[tp] = OffsetAndMetadata(start, "", -1)
        if offsets:
            try:
                consumer.commit(offsets)
            except Exception:
                state.unstarted |= set(offsets)  # tried again on the next call
                raise
            state.durable.update({tp: meta.offset for tp, meta in offsets.items()})

    @hookimpl
    def commit(self, subscription: Subscription, offsets: list[PartitionOffset]) -> None:
        from kafka.structs import OffsetAndMetadata, TopicPartition

        with self._consumers_lock:
            state = self._consumers.get(self._key(subscription))
        if state is None:
            raise TransientError(f"kafka: subscription {subscription.name} is not consuming here; consume again")
        consumer = state.consumer
        wanted = {}
        for position in offsets:
            if position.partition < 0 or position.offset < 0:
                raise PermanentError(f"kafka: cannot commit {position}: partitions and offsets are >= 0")
            tp = TopicPartition(self.broker_topic(position.topic), position.partition)
            wanted[tp] = position.offset
        if not wanted:
            return
        lost = [tp for tp in wanted if tp not in consumer.assignment()]
        if lost:
            raise TransientError(
                f"kafka: group {subscription.group} rebalanced and this consumer lost "
                f"{', '.join(f'{tp.topic}[{tp.partition}]' for tp in lost)}; consume again from the committed offsets"
            )
        state.handled.update(wanted)
        try:
            consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in wanted.items()})
        except Exception as error:
            raise self._error(error, f"committing for {subscription.name}", transient=True) from None
        state.durable.update(wanted)

    @hookimpl
    def unsubscribe(self, subscription: Subscription) -> None:
        with self._consumers_lock:
            state = self._consumers.pop(self._key(subscription), None)
        if state is not None:
            self._close_consumer(state)

    def _close_consumer(self, state: _ConsumerState, finish_join: bool = True) -> None:
        consumer = state.consumer
        try:
            if finish_join and not consumer.assignment() and consumer.subscription():
                # Still joining: finish the join first, so the LeaveGroup names a member the broker knows and the
                # group rebalances at once (a member leaving mid-join otherwise lingers; on Tansu the group then
                # never settles). Records fetched meanwhile are dropped: nothing is committed here.
                deadline = time.monotonic() + self.settings["session_timeout_ms"] / 1000
                while not consumer.assignment() and time.monotonic() < deadline:
                    consumer.poll(timeout_ms=200, max_records=1)
        except Exception as error:  # leaving anyway
            self.log.debug("kafka: finishing a join before leaving failed: %s", error)
        try:
            state.consumer.close(autocommit=False)  # leaves the group: its partitions move at once
        except Exception as error:
            self.log.warning("kafka: closing a consumer failed: %s", error)

    # --- groups ------------------------------------------------------------------------------------

    def describe_groups(self, group_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not group_ids:
            return {}
        return self._admin_call("describing consumer groups", lambda admin: admin.describe_groups(group_ids))

    def _partitions(self, broker_topics: Iterable[str]) -> dict[str, list[int]]:
        names = sorted(set(broker_topics))
        if not names:
            return {}
        described = self._admin_call("describing topics", lambda admin: admin.describe_topics(names))
        return {
            topic["name"]: sorted(partition["partition_index"] for partition in topic.get("partitions") or [])
            for topic in described
            if not topic.get("error_code")
        }

    def _offsets(self, specs: dict[Any, Any]) -> dict[Any, int]:
        """ListOffsets for each partition; a partition for which the broker found nothing (a timestamp after the
        last record: offset and timestamp -1) is left out."""
        if not specs:
            return {}
        found = self._admin_call("listing partition offsets", lambda admin: admin.list_partition_offsets(specs))
        result = {}
        for tp in specs:
            answer = found.get(tp)
            if answer is None or answer.offset < 0:
                continue
            if isinstance(specs[tp], int) and specs[tp] >= 0 and answer.timestamp is not None and answer.timestamp < 0:
                continue  # a timestamp lookup that matched no record (some brokers answer offset 0 here)
            result[tp] = answer.offset
        return result

    @hookimpl
    def consumer_groups(self) -> list[ConsumerGroup]:
        from kafka.admin import OffsetSpec
        from kafka.structs import TopicPartition

        listed = self._admin_call("listing consumer groups", lambda admin: admin.list_groups())
        ids = sorted({group["group_id"] for group in listed if group.get("protocol_type") in ("consumer", "", None)})
        if not ids:
            return []
        described = self.describe_groups(ids)
        committed = self._group_offsets(ids)
        groups: list[tuple[str, str, list[GroupMember], dict[str, dict[int, int | None]]]] = []
        for group_id in ids:
            info = described.get(group_id) or {}
            members = [_member(self, member) for member in info.get("members") or []]
            per_topic: dict[str, dict[int, int | None]] = {}
            for tp, meta in (committed.get(group_id) or {}).items():
                if meta is not None and meta.offset >= 0:
                    per_topic.setdefault(tp.topic, {})[tp.partition] = meta.offset
            for member in info.get("members") or []:
                for topic in _assigned_topics(member):
                    per_topic.setdefault(topic, {})
            per_topic = {topic: parts for topic, parts in per_topic.items() if self.hub_topic(topic) is not None}
            groups.append((group_id, info.get("group_state") or "Unknown", members, per_topic))
        partitions = self._partitions(topic for *_, per_topic in groups for topic in per_topic)
        tps = {TopicPartition(topic, number) for topic, numbers in partitions.items() for number in numbers}
        # ListOffsets LATEST: the partition's end (the high watermark) on Kafka.
        ends = self._offsets(dict.fromkeys(tps, OffsetSpec.LATEST))
        result = []
        for group_id, state, members, per_topic in groups:
            lags = []
            for topic in sorted(per_topic):
                for number in sorted(set(partitions.get(topic, [])) | set(per_topic[topic])):
                    lags.append(
                        PartitionLag(
                            self.hub_topic(topic) or topic,
                            number,
                            per_topic[topic].get(number),
                            ends.get(TopicPartition(topic, number)),
                        )
                    )
            topics = [self.hub_topic(topic) or topic for topic in sorted(per_topic)]
            result.append(ConsumerGroup(group_id, state, members, topics, lags))
        return result

    def _group_offsets(self, ids: list[str]) -> dict[str, dict[Any, Any]]:
        """Committed offsets of several groups: one OffsetFetch (v8+, Kafka 3.0+), else one per group."""
        try:
            return self._admin_call("listing group offsets", lambda admin: admin.list_group_offsets(ids))
        except ProviderError as error:
            if error.provider_code != "UnsupportedVersionError" or len(ids) == 1:
                raise
        found: dict[str, dict[Any, Any]] = {}
        for group_id in ids:
            found.update(
                self._admin_call("listing group offsets", lambda admin, g=group_id: admin.list_group_offsets(g))
            )
        return found

    def _active_members(self, group: str) -> int:
        info = self.describe_groups([group]).get(group) or {}
        if info.get("error") and "GroupIdNotFound" not in str(info["error"]):
            raise TransientError(f"kafka: describing group {group} failed: {info['error']}")
        members = info.get("members") or []
        if info.get("group_state") in _IDLE_STATES:
            return 0
        return len(members)

    @hookimpl
    def reset_offsets(self, group: str, topic: str, to: OffsetReset) -> list[PartitionOffset]:
        from kafka.admin import OffsetSpec, OffsetTimestamp
        from kafka.structs import OffsetAndMetadata, TopicPartition

        name = self.broker_topic(topic)
        active = self._active_members(group)
        if active:
            raise InUseError(f"kafka: consumer group {group!r} has {active} active member(s); stop its consumers first")
        partitions = self._partitions([name]).get(name)
        if not partitions:
            raise PermanentError(f"kafka: no topic {topic!r} on the broker", provider_code="unknown_topic")
        if to.to == "explicit":
            unknown = sorted(set(to.offsets) - set(partitions))
            if unknown:
                raise PermanentError(f"kafka: no partition {unknown[0]} in {topic} (it has {len(partitions)})")
            partitions = sorted(to.offsets)
        tps = [TopicPartition(name, number) for number in partitions]
        ends = self._offsets(dict.fromkeys(tps, OffsetSpec.LATEST))
        if to.to == "earliest":
            targets = self._offsets(dict.fromkeys(tps, OffsetSpec.EARLIEST))
        elif to.to == "latest":
            targets = ends
        elif to.to == "timestamp":
            assert to.timestamp is not None
            stamp = to.timestamp if to.timestamp.tzinfo else to.timestamp.replace(tzinfo=UTC)
            found = self._offsets(dict.fromkeys(tps, OffsetTimestamp(int(stamp.timestamp() * 1000))))
            targets = {tp: found[tp] if tp in found else ends[tp] for tp in tps}  # no record at or after it: the end
        else:
            targets = {}
            for tp in tps:
                offset = to.offsets[tp.partition]
                if offset > ends[tp]:
                    raise PermanentError(
                        f"kafka: offset {offset} is past the end of {topic}[{tp.partition}] ({ends[tp]})"
                    )
                targets[tp] = offset
        offsets = {tp: OffsetAndMetadata(targets[tp], "", -1) for tp in tps}
        outcome = self._admin_call(
            f"resetting offsets of {group}", lambda admin: admin.alter_group_offsets(group, offsets)
        )
        for tp, error in (outcome or {}).items():
            error_name = getattr(error, "__name__", str(error))
            if error_name == "NoError":
                continue
            if error_name in ("UnknownMemberIdError", "RebalanceInProgressError", "IllegalGenerationError"):
                raise InUseError(f"kafka: consumer group {group!r} has active members; stop its consumers first")
            raise self._error(error(), f"resetting offsets of {group} in {topic}[{tp.partition}]")
        return [PartitionOffset(topic, tp.partition, targets[tp]) for tp in tps]

    @hookimpl
    def delete_consumer_group(self, group: str) -> bool:
        """Delete a consumer group with its committed offsets (Kafka refuses while it has members)."""
        if self._active_members(group):
            raise InUseError(f"kafka: consumer group {group!r} has active members; stop its consumers first")
        answer = self._admin_call(f"deleting group {group}", lambda admin: admin.delete_groups([group]))
        outcome = answer.get(group) if isinstance(answer, dict) else dict(answer).get(group)
        if outcome in ("GroupIdNotFoundError",):
            return False
        if outcome == "NonEmptyGroupError":
            raise InUseError(f"kafka: consumer group {group!r} has active members; stop its consumers first")
        if outcome != "OK":
            raise PermanentError(f"kafka: deleting group {group} failed: {outcome}")
        return True

    # --- health and close --------------------------------------------------------------------------

    def _reachable(self, timeout: float = 2.0) -> str | None:
        """The first bootstrap server accepting a TCP connection, or ``None`` (keeps ``health`` fast when the
        brokers are down: building a client would wait ``bootstrap_timeout_ms``)."""
        import socket

        for server in self.settings["bootstrap_servers"].split(","):
            host, _, port = server.rpartition(":")
            try:
                with socket.create_connection((host.strip("[]") or server, int(port or 9092)), timeout=timeout):
                    return server
            except (OSError, ValueError):
                continue
        return None

    @hookimpl
    def health(self) -> HealthResult:
        if self._admin is None and self._reachable() is None:
            return HealthResult("error", "kafka: no bootstrap server accepts connections")
        try:
            cluster = self._admin_call("describing the cluster", lambda admin: admin.describe_cluster())
        except ProviderError as error:
            return HealthResult("error", error.message)
        brokers = cluster.get("brokers") or []
        return HealthResult("success", f"kafka: {len(brokers)} broker(s), cluster {cluster.get('cluster_id')}")

    @hookimpl
    def close(self) -> None:
        with self._consumers_lock:
            states = list(self._consumers.values())
            self._consumers.clear()
        for state in states:
            self._close_consumer(state)
        with self._clients_lock:
            producer, admin = self._producer, self._admin
            self._producer = self._admin = None
            self._known_topics.clear()
        if producer is not None:
            try:
                producer.flush(timeout=self._wait_timeout())
            except Exception as error:
                self.log.warning("kafka: flush at close did not finish: %s", error)
            producer.close(timeout=5)
        if admin is not None:
            try:
                admin.close()
            except Exception as error:
                self.log.warning("kafka: closing the admin client failed: %s", error)

    # --- errors ------------------------------------------------------------------------------------

    def _error(self, error: BaseException, action: str, *, transient: bool = False) -> ProviderError:
        """The hub's error for a kafka-python one (never a credential in the message)."""
        return map_error(error, action, transient=transient)


def map_error(error: BaseException, action: str, *, transient: bool = False) -> ProviderError:
    """kafka-python's error -> the hub's: authentication -> ConfigurationError; topic authorization, invalid topic,
    too large -> PermanentError; anything else (unreachable, timed out, not acknowledged) -> TransientError. With
    ``transient``, everything but a configuration problem is transient (a commit refused after a rebalance)."""
    from kafka import errors as kafka_errors

    if isinstance(error, ProviderError):
        return error
    code = type(error).__name__
    text = str(error).strip() or code
    message = f"kafka: {action}: {text}"[:500]
    configuration = (
        kafka_errors.SaslAuthenticationFailedError,
        kafka_errors.UnsupportedSaslMechanismError,
        kafka_errors.IllegalSaslStateError,
        kafka_errors.ClusterAuthorizationFailedError,
        kafka_errors.GroupAuthorizationFailedError,
        kafka_errors.TransactionalIdAuthorizationFailedError,
    )
    if isinstance(error, configuration) or "authentication" in text.lower() and "fail" in text.lower():
        return ConfigurationError(f"kafka: {action}: {code} (check the credentials and ACLs)", provider_code=code)
    permanent = (
        kafka_errors.TopicAuthorizationFailedError,
        kafka_errors.InvalidTopicError,
        kafka_errors.MessageSizeTooLargeError,
        kafka_errors.TopicAlreadyExistsError,
        kafka_errors.InvalidPartitionsError,
        kafka_errors.InvalidReplicationFactorError,
        kafka_errors.PolicyViolationError,
        kafka_errors.InvalidConfigurationError,
    )
    if isinstance(error, permanent) and not transient:
        return PermanentError(message, provider_code=code)
    if isinstance(error, ValueError | TypeError | AssertionError) and not transient:
        # kafka-python refuses before sending (a record over max_request_size is a MessageSizeTooLargeError above).
        return PermanentError(message, provider_code=code)
    return TransientError(message, provider_code=code)


def _json_value(value: Any) -> Any:
    """What ``json.dumps`` cannot write itself, as :func:`hub.capabilities.to_dict` writes it (Decimal -> str,
    datetime -> ISO 8601, dataclasses -> dicts); anything else as ``str``."""
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "__dataclass_fields__"):
        return to_dict(value)
    return str(value)


def _assigned_topics(member: dict[str, Any]) -> list[str]:
    assignment = member.get("member_assignment")
    topics = getattr(assignment, "assigned_partitions", None) or getattr(assignment, "partitions", None)
    if isinstance(assignment, dict):
        topics = assignment.get("assigned_partitions") or assignment.get("partitions")
    found = []
    for item in topics or []:
        name = item.get("topic") if isinstance(item, dict) else getattr(item, "topic", None)
        if name:
            found.append(name)
    return found


def _member(provider: Kafka, member: dict[str, Any]) -> GroupMember:
    assignment: dict[str, list[int]] = {}
    raw = member.get("member_assignment")
    items = raw.get("assigned_partitions") if isinstance(raw, dict) else getattr(raw, "assigned_partitions", None)
    for item in items or []:
        topic = item.get("topic") if isinstance(item, dict) else getattr(item, "topic", None)
        numbers = item.get("partitions") if isinstance(item, dict) else getattr(item, "partitions", None)
        hub_topic = provider.hub_topic(topic) if topic else None
        if hub_topic is not None:
            assignment[hub_topic] = sorted(numbers or [])
    return GroupMember(
        member_id=member.get("member_id") or "",
        client_id=member.get("client_id") or None,
        host=member.get("client_host") or None,
        assignment=assignment,
    )


def _rebalance_listener(provider: Kafka, state: _ConsumerState) -> Any:
    """The rebalance listener of one subscription's consumer (built lazily: kafka-python is imported only once a
    consumer exists).

    kafka-python 3.x runs listeners on its I/O loop: a blocking ``consumer.commit`` there would wait for the loop it
    runs on, so the listener is the async kind and awaits the coordinator's commit coroutine (kafka-python's own
    pre-rebalance auto-commit does the same).
    """
    from kafka import AsyncConsumerRebalanceListener
    from kafka.structs import OffsetAndMetadata

    def forget(partitions: Any) -> None:
        for tp in partitions:
            state.handled.pop(tp, None)
            state.durable.pop(tp, None)
            state.unstarted.discard(tp)

    class Listener(AsyncConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked: Any) -> None:
            # Still the partitions' owner: make durable what the hub handled and asked to commit, before they move.
            pending = {
                tp: OffsetAndMetadata(offset, "", -1)
                for tp, offset in state.handled.items()
                if tp in revoked and state.durable.get(tp) != offset
            }
            commit = getattr(getattr(state.consumer, "_coordinator", None), "_commit_offsets_sync_async", None)
            if pending and commit is not None:
                try:
                    await commit(pending)
                    state.durable.update({tp: meta.offset for tp, meta in pending.items()})
                    state.revoke_commits += 1
                except Exception as error:  # the new owner reads them again: at-least-once, nothing lost
                    provider.log.warning("kafka: commit on revoke failed: %s", error)
            elif pending:
                provider.log.warning("kafka: this kafka-python cannot commit on revoke; the new owner re-reads")
            forget(revoked)

        async def on_partitions_lost(self, lost: Any) -> None:
            forget(lost)  # no longer the owner: committing now could overwrite the new owner's position

        async def on_partitions_assigned(self, assigned: Any) -> None:
            state.unstarted |= set(assigned)

    return Listener()


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(Kafka)


__all__ = ["Kafka", "KafkaSettings", "map_error", "register_providers"]
