"""publish: the hooks, the event log's consumer side, the conformance kit's check_publish, and leases.

No mocks: providers are built through :class:`hub.testing.ProviderHarness` as the core builds them; the event
log talks to real files and SQLite; leases to a real database, with a second process where it matters.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from marshmallow import Schema, fields
from sqlalchemy import select
from werkzeug.wrappers import Request, Response

import hub
from hub import hookimpl
from hub.api import create_app
from hub.capabilities import (
    ConsumedRecord,
    ConsumerGroup,
    Event,
    GroupMember,
    OffsetReset,
    PartitionLag,
    PartitionOffset,
    Provider,
    PublishResult,
    Subscription,
)
from hub.errors import ConfigError, InUseError, PermanentError, TransientError
from hub.manager import IntegrationManager
from hub.records import Database, Lease, normalise_database_url
from hub.runtime.leases import LeaseManager
from hub.testing import ProviderHarness
from hub.testing.contracts import check_publish, run_contract
from hub.testing.servers import WsgiServer
from tests.conftest import base_config

TENANT = "acme"
PACKAGE_ROOT = str(Path(hub.__file__).resolve().parent.parent)


def _event(topic: str = "orders", key: str | None = "SO-1", **data: Any) -> Event:
    return Event(id=uuid.uuid4().hex, tenant=TENANT, topic=topic, event_type="order.created", data=data, key=key)


def _subscription(
    name: str = "orders-to-erp", topics: tuple[str, ...] = ("orders",), start: str = "earliest"
) -> Subscription:
    return Subscription(name=name, tenant=TENANT, group=f"{TENANT}.{name}", topics=topics, start=start)


def _drain(
    harness: ProviderHarness, provider: Any, subscription: Subscription, *, batch: int = 100, timeout: float = 0.2
) -> list[ConsumedRecord]:
    """Consume until a call returns nothing."""
    records: list[ConsumedRecord] = []
    while chunk := harness.call(provider, "consume", subscription=subscription, max_records=batch, timeout=timeout):
        records += chunk
    return records


def _subprocess_environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))}


# --- data types ---------------------------------------------------------------------------------


def test_consumed_record_gives_back_the_published_event_and_its_next_offset() -> None:
    event = _event(sku="W-1")
    record = ConsumedRecord("orders", 2, 41, json.loads(json.dumps(event.envelope())), key="SO-1", headers={"a": "b"})
    again = record.event()
    assert again is not None
    assert (again.id, again.tenant, again.event_type, again.data, again.key) == (
        event.id,
        TENANT,
        "order.created",
        {"sku": "W-1"},
        "SO-1",
    )
    assert again.timestamp == event.timestamp
    assert record.next_offset == PartitionOffset("orders", 2, 42)
    assert ConsumedRecord("orders", 0, 0, {"not": "an envelope"}).event() is None
    assert ConsumedRecord("orders", 0, 0, "plain text").event() is None


def test_value_types_refuse_what_the_hooks_cannot_mean() -> None:
    with pytest.raises(ValueError, match="start"):
        Subscription("s", TENANT, "acme.s", ("orders",), start="beginning")
    with pytest.raises(ValueError, match="topic"):
        Subscription("s", TENANT, "acme.s", ())
    with pytest.raises(ValueError, match="timestamp"):
        OffsetReset("timestamp")
    with pytest.raises(ValueError, match="offsets"):
        OffsetReset("explicit")
    with pytest.raises(ValueError, match="offsets"):
        OffsetReset("earliest", offsets={0: 1})
    with pytest.raises(ValueError, match="one of"):
        OffsetReset("yesterday")
    assert PartitionLag("orders", 0, committed=3, end=10).lag == 7
    assert PartitionLag("orders", 0, committed=None, end=4).lag == 4  # never committed: everything is behind
    assert PartitionLag("orders", 0, committed=3, end=None).lag is None
    group = ConsumerGroup("acme.x", "Empty", partitions=[PartitionLag("a", 0, 1, 3), PartitionLag("a", 1, 0, None)])
    assert group.lag == 2 and ConsumerGroup("acme.y", "Empty").lag is None
    assert PublishResult.failed("orders", "broker said no") == PublishResult(-1, "", "orders", "broker said no")
    assert not PublishResult.failed("orders", "x").ok and PublishResult(0, "1").ok


# --- register_handlers -------------------------------------------------------------------------


def test_register_handlers_from_a_plugin_are_listed_and_bad_ones_reported(provider_harness: ProviderHarness) -> None:
    def reserve_stock(record: ConsumedRecord, subscription: Subscription) -> None:
        pass

    class HandlerPlugin:
        @hookimpl
        def register_handlers(self, register: Callable[..., None]) -> None:
            register("reserve-stock", reserve_stock)
            register("not-callable", "reserve_stock")

    class LaterPlugin:
        @hookimpl
        def register_handlers(self, register: Callable[..., None]) -> None:
            register("reserve-stock", print)

    host = provider_harness.host
    record = host.add_plugin(HandlerPlugin(), "handlers")
    assert host.handlers["reserve-stock"] == (reserve_stock, "handlers") and "not-callable" not in host.handlers
    assert record.handlers == ["reserve-stock"] and record.status == "failed" and "not-callable" in (record.error or "")
    assert "register_handlers" in record.hooks and record.to_dict()["handlers"] == ["reserve-stock"]
    host.add_plugin(LaterPlugin(), "later")
    assert host.handlers["reserve-stock"] == (print, "later")  # a later registration replaces an earlier one


# --- the kit: a correct in-memory broker passes, each defect fails ------------------------------


class MemoryBroker(Provider):
    """A single-partition broker in memory that keeps the whole publish contract."""

    type_name = "memory-broker"
    capability = "publish"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.logs: dict[str, list[tuple[Event, datetime]]] = {}
        self.committed: dict[tuple[str, str], int] = {}
        self.positions: dict[Subscription, dict[str, int]] = {}
        self.lock = threading.Lock()

    def _record(self, topic: str, offset: int) -> ConsumedRecord:
        event, written = self.logs[topic][offset]
        value = json.loads(json.dumps(event.envelope()))
        return ConsumedRecord(topic, 0, offset, value, event.key, dict(event.headers), written)

    @hookimpl
    def publish(self, event: Event) -> PublishResult:
        with self.lock:
            log = self.logs.setdefault(event.topic, [])
            log.append((event, datetime.now(UTC)))
            return PublishResult(0, str(len(log) - 1), event.topic)

    @hookimpl
    def publish_batch(self, events: list[Event]) -> list[PublishResult]:
        return [self.publish(event) for event in events]

    @hookimpl
    def consume(self, subscription: Subscription, max_records: int, timeout: float) -> list[ConsumedRecord]:
        with self.lock:
            positions = self.positions.get(subscription)
            if positions is None:
                positions = self.positions[subscription] = {}
                for topic in subscription.topics:
                    start = 0 if subscription.start == "earliest" else len(self.logs.get(topic, []))
                    positions[topic] = self.committed.setdefault((subscription.group, topic), start)
            return self._take(positions, max_records)

    def _take(self, positions: dict[str, int], max_records: int) -> list[ConsumedRecord]:
        records = []
        for topic, position in positions.items():
            available = len(self.logs.get(topic, []))
            while position < available and len(records) < max_records:
                records.append(self._record(topic, position))
                position += 1
            positions[topic] = position
        return records

    @hookimpl
    def commit(self, subscription: Subscription, offsets: list[PartitionOffset]) -> None:
        with self.lock:
            for offset in offsets:
                self.committed[(subscription.group, offset.topic)] = offset.offset

    @hookimpl
    def unsubscribe(self, subscription: Subscription) -> None:
        with self.lock:
            self.positions.pop(subscription, None)

    def _members(self, group: str) -> list[Subscription]:
        return [subscription for subscription in self.positions if subscription.group == group]

    @hookimpl
    def consumer_groups(self) -> list[ConsumerGroup]:
        with self.lock:
            groups: dict[str, list[PartitionLag]] = {}
            for (group, topic), offset in sorted(self.committed.items()):
                groups.setdefault(group, []).append(PartitionLag(topic, 0, offset, len(self.logs.get(topic, []))))
            return [
                ConsumerGroup(
                    group,
                    "Stable" if self._members(group) else "Empty",
                    [GroupMember(member.name) for member in self._members(group)],
                    sorted({lag.topic for lag in lags}),
                    lags,
                )
                for group, lags in groups.items()
            ]

    @hookimpl
    def reset_offsets(self, group: str, topic: str, to: OffsetReset) -> list[PartitionOffset]:
        with self.lock:
            if self._members(group):
                raise InUseError(f"group {group} has active members")
            log = self.logs.get(topic, [])
            if to.to == "earliest":
                offset = 0
            elif to.to == "latest":
                offset = len(log)
            elif to.to == "timestamp":
                assert to.timestamp is not None
                offset = next((n for n, (_, written) in enumerate(log) if written >= to.timestamp), len(log))
            else:
                if set(to.offsets) != {0} or to.offsets[0] > len(log):
                    raise PermanentError(f"no such position {to.offsets}")
                offset = to.offsets[0]
            self.committed[(group, topic)] = offset
            return [PartitionOffset(topic, 0, offset)]


class CommitIgnoringBroker(MemoryBroker):
    type_name = "commit-ignoring-broker"

    @hookimpl
    def commit(self, subscription: Subscription, offsets: list[PartitionOffset]) -> None:
        pass


class NoRedeliveryBroker(MemoryBroker):
    """Keeps its in-memory position across unsubscribe: uncommitted records are never delivered again."""

    type_name = "no-redelivery-broker"

    @hookimpl
    def unsubscribe(self, subscription: Subscription) -> None:
        pass


class GreedyBroker(MemoryBroker):
    type_name = "greedy-broker"

    @hookimpl
    def consume(self, subscription: Subscription, max_records: int, timeout: float) -> list[ConsumedRecord]:
        return super().consume(subscription, max_records + 1, timeout)


class KeepAliveAdvancingBroker(MemoryBroker):
    """Treats the keep-alive as a read of one record and drops it."""

    type_name = "keep-alive-advancing-broker"

    @hookimpl
    def consume(self, subscription: Subscription, max_records: int, timeout: float) -> list[ConsumedRecord]:
        records = super().consume(subscription, max(max_records, 1), timeout)
        return records if max_records else []


class StringValueBroker(MemoryBroker):
    """Hands the JSON text to the hub instead of the decoded value."""

    type_name = "string-value-broker"

    def _record(self, topic: str, offset: int) -> ConsumedRecord:
        record = super()._record(topic, offset)
        record.value = json.dumps(record.value)
        return record


class DictGroupsBroker(MemoryBroker):
    """The old contract: consumer groups as dicts."""

    type_name = "dict-groups-broker"

    @hookimpl
    def consumer_groups(self) -> list[ConsumerGroup]:
        return [{"groupId": group.group_id, "state": group.state} for group in super().consumer_groups()]  # type: ignore[misc]


class LaglessBroker(MemoryBroker):
    """Reports the groups but forgets the committed offsets."""

    type_name = "lagless-broker"

    @hookimpl
    def consumer_groups(self) -> list[ConsumerGroup]:
        groups = super().consumer_groups()
        for group in groups:
            group.partitions = [PartitionLag(lag.topic, lag.partition, None, lag.end) for lag in group.partitions]
        return groups


class EagerResetBroker(MemoryBroker):
    """Resets offsets under an active consumer's feet."""

    type_name = "eager-reset-broker"

    def _members(self, group: str) -> list[Subscription]:
        return []


class LatestIgnoringBroker(MemoryBroker):
    """Resets to 'latest' by doing nothing."""

    type_name = "latest-ignoring-broker"

    @hookimpl
    def reset_offsets(self, group: str, topic: str, to: OffsetReset) -> list[PartitionOffset]:
        if to.to == "latest":
            return [PartitionOffset(topic, 0, len(self.logs.get(topic, [])))]
        return super().reset_offsets(group, topic, to)


class ShortBatchBroker(MemoryBroker):
    type_name = "short-batch-broker"

    @hookimpl
    def publish_batch(self, events: list[Event]) -> list[PublishResult]:
        return super().publish_batch(events)[:-1]


class ConsumeOnlyBroker(MemoryBroker):
    """consume without commit and unsubscribe hooks: the hub could not run a subscription on it."""

    type_name = "consume-only-broker"

    def commit(self, subscription: Subscription, offsets: list[PartitionOffset]) -> None:  # noqa: D102 (no @hookimpl)
        raise AssertionError("never called: not a hook implementation")

    def unsubscribe(self, subscription: Subscription) -> None:
        raise AssertionError("never called: not a hook implementation")


BROKEN_BROKERS: list[tuple[type, str]] = [
    (CommitIgnoringBroker, "after commit of 3 records and unsubscribe"),
    (NoRedeliveryBroker, "after commit of 3 records and unsubscribe"),
    (GreedyBroker, "return at most max_records"),
    (KeepAliveAdvancingBroker, "the first reading of 5 records"),
    (StringValueBroker, "decoded from JSON"),
    (DictGroupsBroker, "not a ConsumerGroup"),
    (LaglessBroker, "shows a committed offset"),
    (EagerResetBroker, "while the group has an active consumer"),
    (LatestIgnoringBroker, "after a reset to latest"),
    (ShortBatchBroker, "return one per event"),
    (ConsumeOnlyBroker, "not commit()"),
]


@pytest.fixture
def brokers(provider_harness: ProviderHarness) -> ProviderHarness:
    provider_harness.add_provider_classes(MemoryBroker, *(broker for broker, _ in BROKEN_BROKERS))
    return provider_harness


def test_a_broker_keeping_the_contract_passes_check_publish(brokers: ProviderHarness) -> None:
    provider = brokers.build("memory-broker")
    results = run_contract(brokers, provider, topic="orders", wait=2, settle=0.1)
    assert results["publish"].partition == 0
    # The check exercised every hook: its group is there, moved to the end by the last reset.
    groups = {group.group_id: group for group in brokers.call(provider, "consumer_groups")}
    (contract_group,) = [group for group in groups.values() if group.group_id.startswith("contract-tests.")]
    assert contract_group.state == "Empty" and contract_group.lag == 0
    assert [lag.committed for lag in contract_group.partitions] == [5]


@pytest.mark.parametrize(("broker", "problem"), BROKEN_BROKERS, ids=[broker.type_name for broker, _ in BROKEN_BROKERS])
def test_check_publish_fails_a_broker_that_breaks_the_contract(
    brokers: ProviderHarness, broker: type, problem: str
) -> None:
    provider = brokers.build(broker.type_name)
    with pytest.raises(AssertionError, match=problem):
        check_publish(brokers, provider, "orders", wait=1, settle=0.1)


# --- the event log: consuming ------------------------------------------------------------------


def test_event_log_consumes_in_order_resumes_from_the_committed_offset_and_redelivers_the_rest(
    provider_harness: ProviderHarness,
) -> None:
    log = provider_harness.build("event-log", {"fsync": False})
    events = [_event(n=n) for n in range(6)]
    for event in events:
        provider_harness.call(log, "publish", event=event)
    subscription = _subscription()
    first = provider_harness.call(log, "consume", subscription=subscription, max_records=4, timeout=1)
    assert [(record.offset, record.value["data"]["n"]) for record in first] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert first[0].event() is not None and first[0].event().id == events[0].id  # type: ignore[union-attr]
    assert first[0].timestamp is not None and first[0].key == "SO-1"
    provider_harness.call(log, "commit", subscription=subscription, offsets=[first[1].next_offset])
    assert [record.offset for record in _drain(provider_harness, log, subscription)] == [
        4,
        5,
    ]  # the position, not the commit

    # A new instance (another process, after a restart) starts from the committed offset: 2 and 3 again.
    restarted = provider_harness.build("event-log", {"fsync": False})
    assert [record.offset for record in _drain(provider_harness, restarted, subscription)] == [2, 3, 4, 5]
    provider_harness.call(restarted, "commit", subscription=subscription, offsets=[PartitionOffset("orders", 0, 6)])
    provider_harness.call(restarted, "unsubscribe", subscription=subscription)
    assert _drain(provider_harness, restarted, subscription) == []
    provider_harness.call(restarted, "publish", event=_event(n=6))
    assert [record.offset for record in _drain(provider_harness, restarted, subscription)] == [6]


def test_event_log_consume_waits_for_records_up_to_the_timeout(provider_harness: ProviderHarness) -> None:
    log = provider_harness.build("event-log", {"fsync": False})
    subscription = _subscription()
    started = time.monotonic()
    assert provider_harness.call(log, "consume", subscription=subscription, max_records=10, timeout=0.3) == []
    assert 0.3 <= time.monotonic() - started < 1.5
    publisher = threading.Timer(0.2, lambda: provider_harness.call(log, "publish", event=_event(n=1)))
    publisher.start()
    started = time.monotonic()
    records = provider_harness.call(log, "consume", subscription=subscription, max_records=10, timeout=5)
    assert [record.value["data"] for record in records] == [{"n": 1}]
    assert time.monotonic() - started < 2  # woke up when the record came, not at the timeout
    publisher.join()


def test_event_log_reads_every_partition_and_every_topic_of_a_subscription(provider_harness: ProviderHarness) -> None:
    log = provider_harness.build("event-log", {"partitions": 3, "fsync": False})
    keys = [f"SKU-{n}" for n in range(12)]
    for key in keys:
        provider_harness.call(log, "publish", event=_event("orders", key=key, key_name=key))
    provider_harness.call(log, "publish", event=_event("returns", key="SKU-0", key_name="return"))
    subscription = _subscription(topics=("orders", "returns"))
    records = _drain(provider_harness, log, subscription, batch=5)
    assert sorted(record.value["data"]["key_name"] for record in records) == sorted([*keys, "return"])
    by_partition: dict[tuple[str, int], list[int]] = {}
    for record in records:
        by_partition.setdefault((record.topic, record.partition), []).append(record.offset)
    assert all(offsets == list(range(len(offsets))) for offsets in by_partition.values())  # in order, no gap
    assert {partition for topic, partition in by_partition if topic == "orders"} == {0, 1, 2}


def test_event_log_never_delivers_a_half_written_line(provider_harness: ProviderHarness) -> None:
    log = provider_harness.build("event-log", {"fsync": False})
    provider_harness.call(log, "publish", event=_event(n=0))
    path = log.directory / "orders-0.jsonl"
    whole = (path.read_text().splitlines()[0].replace('"offset":0', '"offset":1') + "\n").encode()
    subscription = _subscription()
    with path.open("ab") as handle:
        handle.write(whole[:20])  # a writer in the middle of its write
        handle.flush()
        assert [record.offset for record in _drain(provider_harness, log, subscription)] == [0]
        handle.write(whole[20:])
    assert [record.offset for record in _drain(provider_harness, log, subscription)] == [1]


def test_event_log_latest_start_is_committed_at_once_so_a_restart_skips_nothing(
    provider_harness: ProviderHarness,
) -> None:
    log = provider_harness.build("event-log", {"fsync": False})
    for n in range(3):
        provider_harness.call(log, "publish", event=_event(n=n))  # before the subscription existed
    subscription = _subscription(start="latest")
    assert _drain(provider_harness, log, subscription) == []
    provider_harness.call(log, "publish", event=_event(n=3))
    # The process dies before handling it: nothing was committed after the join...
    restarted = provider_harness.build("event-log", {"fsync": False})
    # ...yet the next process starts where the first joined, not at the (new) latest.
    assert [record.value["data"]["n"] for record in _drain(provider_harness, restarted, subscription)] == [3]


def test_event_log_resumes_from_a_byte_hint_and_checks_it(provider_harness: ProviderHarness) -> None:
    log = provider_harness.build("event-log", {"fsync": False})
    for n in range(50):
        provider_harness.call(log, "publish", event=_event(n=n, padding="x" * (n % 7)))
    subscription = _subscription()
    records = provider_harness.call(log, "consume", subscription=subscription, max_records=20, timeout=1)
    provider_harness.call(log, "commit", subscription=subscription, offsets=[records[-1].next_offset])
    database = log.directory / "consumer-offsets.db"
    with sqlite3.connect(database) as connection:
        ((offset, byte),) = connection.execute("SELECT next_offset, byte_position FROM offsets").fetchall()
    lines = (log.directory / "orders-0.jsonl").read_bytes().splitlines(keepends=True)
    assert (offset, byte) == (20, sum(len(line) for line in lines[:20]))

    def next_offset_after_restart() -> int:
        restarted = provider_harness.build("event-log", {"fsync": False})
        return provider_harness.call(restarted, "consume", subscription=subscription, max_records=1, timeout=1)[
            0
        ].offset

    assert next_offset_after_restart() == 20
    for wrong in (byte - 3, byte + len(lines[20]), 10**9, 0):  # mid-line, the next line, past the end, the start
        with sqlite3.connect(database) as connection:
            connection.execute("UPDATE offsets SET byte_position = ?", (wrong,))
        assert next_offset_after_restart() == 20, wrong  # a wrong hint is noticed; the lines are counted instead


def test_event_log_commits_and_groups_are_shared_with_another_process(provider_harness: ProviderHarness) -> None:
    log = provider_harness.build("event-log", {"directory": "events", "fsync": False})
    for n in range(4):
        provider_harness.call(log, "publish", event=_event(n=n))
    subscription = _subscription()
    provider_harness.call(log, "consume", subscription=subscription, max_records=10, timeout=1)
    provider_harness.call(log, "commit", subscription=subscription, offsets=[PartitionOffset("orders", 0, 3)])
    provider_harness.call(log, "unsubscribe", subscription=subscription)
    script = (
        "import json, sys\n"
        "from hub.builtins.event_log import EventLog\n"
        "from hub.capabilities import ProviderContext, Subscription, PartitionOffset\n"
        "log = EventLog('other', {'directory': 'events', 'partitions': 1, 'fsync': False, 'session_timeout': 10.0},"
        " ProviderContext(None, 'development', sys.argv[1]))\n"
        "subscription = Subscription('orders-to-erp', 'acme', 'acme.orders-to-erp', ('orders',))\n"
        "records = log.consume(subscription, 10, 1.0)\n"
        "log.commit(subscription, [records[-1].next_offset])\n"
        "print(json.dumps([record.offset for record in records]))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, provider_harness.data_dir],
        capture_output=True,
        text=True,
        env=_subprocess_environment(),
        timeout=60,
        check=True,
    )
    assert json.loads(completed.stdout) == [3]
    (group,) = provider_harness.call(log, "consumer_groups")
    assert group.group_id == "acme.orders-to-erp" and group.partitions == [PartitionLag("orders", 0, 4, 4, 0)]
    # The other process exited without unsubscribing: its member counts until its session times out.
    assert group.state == "Stable" and len(group.members) == 1 and group.members[0].assignment == {"orders": [0]}


# --- the event log: groups and resets ------------------------------------------------------------


def test_event_log_consumer_groups_show_members_committed_offsets_and_lag(provider_harness: ProviderHarness) -> None:
    log = provider_harness.build("event-log", {"partitions": 2, "fsync": False, "session_timeout": 0.5})
    assert provider_harness.call(log, "consumer_groups") == []
    for n in range(6):
        provider_harness.call(log, "publish", event=_event(key=f"k{n}", n=n))
    subscription = _subscription()
    records = provider_harness.call(log, "consume", subscription=subscription, max_records=100, timeout=1)
    last = {}
    for record in records[:4]:
        last[record.partition] = record.next_offset
    provider_harness.call(log, "commit", subscription=subscription, offsets=list(last.values()))
    (group,) = provider_harness.call(log, "consumer_groups")
    assert group.state == "Stable" and group.topics == ["orders"]
    assert [(member.host, member.assignment) for member in group.members] == [(os.uname().nodename, {"orders": [0, 1]})]
    ends = {partition: sum(1 for record in records if record.partition == partition) for partition in (0, 1)}
    assert {(lag.partition, lag.end) for lag in group.partitions} == set(ends.items())
    assert group.lag == 2 and sum(lag.committed or 0 for lag in group.partitions) == 4
    provider_harness.call(log, "unsubscribe", subscription=subscription)
    assert provider_harness.call(log, "consumer_groups")[0].state == "Empty"
    # A consumer that stops calling (a process that died) leaves the group once its session times out.
    provider_harness.call(log, "consume", subscription=subscription, max_records=0, timeout=0)
    assert provider_harness.call(log, "consumer_groups")[0].state == "Stable"
    time.sleep(0.7)
    assert provider_harness.call(log, "consumer_groups")[0].members == []


def test_event_log_resets_offsets_of_an_idle_group_only(provider_harness: ProviderHarness) -> None:
    log = provider_harness.build("event-log", {"fsync": False})
    for n in range(3):
        provider_harness.call(log, "publish", event=_event(n=n))
    middle = datetime.now(UTC)
    time.sleep(0.01)
    for n in range(3, 5):
        provider_harness.call(log, "publish", event=_event(n=n))
    subscription = _subscription()
    assert len(_drain(provider_harness, log, subscription)) == 5
    group = subscription.group

    def reset(to: OffsetReset) -> list[PartitionOffset]:
        return provider_harness.call(log, "reset_offsets", group=group, topic="orders", to=to)

    with pytest.raises(InUseError, match="active member"):
        reset(OffsetReset("earliest"))
    provider_harness.call(log, "unsubscribe", subscription=subscription)
    assert reset(OffsetReset("timestamp", timestamp=middle)) == [PartitionOffset("orders", 0, 3)]
    assert [record.offset for record in _drain(provider_harness, log, subscription)] == [3, 4]
    provider_harness.call(log, "unsubscribe", subscription=subscription)
    assert reset(OffsetReset("explicit", offsets={0: 1})) == [PartitionOffset("orders", 0, 1)]
    assert [record.offset for record in _drain(provider_harness, log, subscription)] == [1, 2, 3, 4]
    provider_harness.call(log, "unsubscribe", subscription=subscription)
    assert reset(OffsetReset("latest")) == [PartitionOffset("orders", 0, 5)]
    assert reset(OffsetReset("timestamp", timestamp=datetime.now(UTC) + timedelta(hours=1))) == [
        PartitionOffset("orders", 0, 5)
    ]
    with pytest.raises(PermanentError, match="past the end"):
        reset(OffsetReset("explicit", offsets={0: 6}))
    with pytest.raises(PermanentError, match="no partition 3"):
        reset(OffsetReset("explicit", offsets={3: 0}))
    # A group nobody consumed yet can be positioned before it starts.
    fresh = provider_harness.call(
        log, "reset_offsets", group="acme.fresh", topic="orders", to=OffsetReset("explicit", offsets={0: 4})
    )
    assert fresh == [PartitionOffset("orders", 0, 4)]
    assert [record.offset for record in _drain(provider_harness, log, _subscription("fresh"))] == [4]


def test_event_log_consumer_that_missed_a_reset_refuses_to_commit_and_starts_over(
    provider_harness: ProviderHarness,
) -> None:
    log = provider_harness.build("event-log", {"fsync": False, "session_timeout": 0.5})
    for n in range(4):
        provider_harness.call(log, "publish", event=_event(n=n))
    subscription = _subscription()
    assert len(_drain(provider_harness, log, subscription)) == 4
    time.sleep(0.7)  # stalled past its session: the group counts as idle, so an operator may reset it
    other = provider_harness.build("event-log", {"fsync": False, "session_timeout": 0.5})
    provider_harness.call(other, "reset_offsets", group=subscription.group, topic="orders", to=OffsetReset("earliest"))
    with pytest.raises(TransientError, match="were reset"):
        provider_harness.call(log, "commit", subscription=subscription, offsets=[PartitionOffset("orders", 0, 4)])
    assert [record.offset for record in _drain(provider_harness, log, subscription)] == [0, 1, 2, 3]


def test_event_log_publish_batch_writes_each_file_once_and_reports_a_file_it_could_not_write(
    provider_harness: ProviderHarness,
) -> None:
    log = provider_harness.build("event-log", {"partitions": 2, "fsync": False})
    keys = ["k0", "k1", "k2", "k3", "k4", "k5"]
    partitions = [log.partition_for("orders", key) for key in keys]
    assert set(partitions) == {0, 1}
    results = provider_harness.call(log, "publish_batch", events=[_event(key=key, key_name=key) for key in keys])
    assert [result.partition for result in results] == partitions and all(result.ok for result in results)
    for partition in (0, 1):
        offsets = [int(result.offset) for result in results if result.partition == partition]
        assert offsets == list(range(len(offsets)))

    # Partition 1's file cannot be opened (a directory stands in its way): its events fail, the others are written.
    (log.directory / "orders-1.jsonl").rename(log.directory / "saved")
    (log.directory / "orders-1.jsonl").mkdir()
    again = provider_harness.call(log, "publish_batch", events=[_event(key=key) for key in keys])
    assert [result.ok for result in again] == [partition == 0 for partition in partitions]
    assert all(result.partition == -1 and "directory" in (result.error or "") for result in again if not result.ok)
    only_failures = [_event(key=key) for key, partition in zip(keys, partitions, strict=True) if partition == 1]
    with pytest.raises(TransientError, match="nothing written"):
        provider_harness.call(log, "publish_batch", events=only_failures)
    with pytest.raises(PermanentError, match="invalid topic"):
        provider_harness.call(log, "publish_batch", events=[_event(key="k0"), _event(topic="bad topic")])
    assert provider_harness.call(log, "publish_batch", events=[]) == []


# --- leases ----------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Leases on the default SQLite file and on PostgreSQL (the scaled-out set-up; skipped without a server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def database(database_url: str, tmp_path: Path) -> Iterator[Database]:
    db = Database(normalise_database_url(database_url, str(tmp_path)))
    db.create_all()
    yield db
    db.engine.dispose()


@pytest.fixture
def managers(database: Database) -> Iterator[Callable[[], LeaseManager]]:
    made: list[LeaseManager] = []

    def make() -> LeaseManager:
        made.append(LeaseManager(database))
        return made[-1]

    yield make
    for manager in made:
        manager.close()


def test_a_lease_is_held_by_one_manager_until_released(managers: Callable[[], LeaseManager]) -> None:
    first, second = managers(), managers()
    lease = first.acquire("subscription:orders", ttl=5)
    assert lease is not None and lease.valid() and lease.token == 1
    assert second.acquire("subscription:orders", ttl=5) is None
    assert first.acquire("subscription:orders", ttl=5) is None  # not re-entrant either
    assert second.acquire("subscription:returns", ttl=5) is not None  # another name is another lease
    state = second.state("subscription:orders")
    assert state["held"] and state["owner"] == first.owner and not state["paused"]
    first.release(lease)
    assert not lease.valid()
    taken = second.acquire("subscription:orders", ttl=5)
    assert taken is not None and taken.token == 2  # a new token: the old holder cannot renew
    assert not first.renew(lease)


def test_a_lease_is_renewed_while_held_and_taken_over_once_it_expires(
    managers: Callable[[], LeaseManager], database: Database
) -> None:
    holder, other = managers(), managers()
    lease = holder.acquire("subscription:orders", ttl=0.6)
    assert lease is not None
    time.sleep(1.5)  # more than twice the ttl: the keeper renewed it meanwhile
    assert lease.valid() and other.acquire("subscription:orders", ttl=0.6) is None
    # The holder stops renewing (as a process that died would): after the ttl the other takes it.
    holder._held.clear()
    started = time.monotonic()
    while (taken := other.acquire("subscription:orders", ttl=0.6)) is None:
        assert time.monotonic() - started < 3
        time.sleep(0.05)
    assert 0.2 < time.monotonic() - started < 1.2
    assert not lease.valid()  # its local deadline passed too: it would stop before the other started
    assert not holder.renew(lease) and lease.lost.is_set()
    assert taken.valid()


def test_pausing_a_lease_stops_its_holder_and_keeps_everyone_out(managers: Callable[[], LeaseManager]) -> None:
    holder, other = managers(), managers()
    lease = holder.acquire("subscription:orders", ttl=3)
    assert lease is not None
    other.pause("subscription:orders")
    assert lease.lost.wait(2), "the holder's next renewal must fail"
    assert other.acquire("subscription:orders", ttl=3) is None and holder.acquire("subscription:orders", ttl=3) is None
    assert other.state("subscription:orders")["paused"] and other.state("subscription:orders")["held"]
    holder.release(lease)  # what its worker does once it stopped: now the row says nobody holds it
    assert not other.state("subscription:orders")["held"]
    other.pause("subscription:orders", paused=False)
    assert other.acquire("subscription:orders", ttl=3) is not None
    # Pausing a name nobody has used yet creates it paused.
    other.pause("subscription:new")
    assert holder.acquire("subscription:new", ttl=3) is None
    assert [state["name"] for state in holder.states("subscription:")] == ["subscription:new", "subscription:orders"]


def test_racing_managers_never_share_a_lease(database: Database) -> None:
    managers = [LeaseManager(database) for _ in range(8)]
    winners: list[str] = []
    barrier = threading.Barrier(len(managers))

    def race(manager: LeaseManager) -> None:
        barrier.wait()
        for _ in range(20):
            if manager.acquire("subscription:contended", ttl=30) is not None:
                winners.append(manager.owner)

    threads = [threading.Thread(target=race, args=(manager,)) for manager in managers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert len(winners) == 1
        with database.session() as session:
            row = session.get(Lease, "subscription:contended")
            assert row is not None and row.owner == winners[0] and row.token == 1
    finally:
        for manager in managers:
            manager.close()


def test_a_lease_held_by_a_killed_process_is_taken_over_within_its_ttl(
    database: Database, managers: Callable[[], LeaseManager]
) -> None:
    script = (
        "import sys, time\n"
        "from hub.records import Database\n"
        "from hub.runtime.leases import LeaseManager\n"
        "manager = LeaseManager(Database(sys.argv[1]))\n"
        "lease = manager.acquire('subscription:orders', ttl=1.5)\n"
        "print('held' if lease else 'refused', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, database.url],
        stdout=subprocess.PIPE,
        text=True,
        env=_subprocess_environment(),
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "held"
        other = managers()
        time.sleep(2)  # the other process keeps renewing: still refused after its ttl
        assert other.acquire("subscription:orders", ttl=1.5) is None
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        killed = time.monotonic()
        while other.acquire("subscription:orders", ttl=1.5) is None:
            assert time.monotonic() - killed < 5, "the lease of a dead process must expire"
            time.sleep(0.05)
        assert time.monotonic() - killed < 1.5 + 0.3
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# =================================================================================================
# Through the core: the publish service, its API and its subscription workers
# =================================================================================================

API = "/api/integrations"


class Receiver(WsgiServer):
    """A webhook receiver: keeps every POST (path, headers, JSON body); ``fail`` maps an event's
    ``data["n"]`` to how many times to answer it with an error status first (``-1``: always)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(name="subscription-receiver")
        self.lock = threading.Lock()
        self.deliveries: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.fail: dict[int, tuple[int, int]] = {}  # n -> (times, status)
        self.delay = delay

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = json.loads(request.get_data())
        number = (body.get("value") or {}).get("data", {}).get("n")
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            times, status = self.fail.get(number, (0, 200))
            if times:
                self.fail[number] = (times - 1 if times > 0 else times, status)
                return Response("refused", status=status)(environ, start_response)
            self.deliveries.append((request.path, dict(request.headers), body))
        return Response("ok")(environ, start_response)

    def numbers(self, path: str | None = None) -> list[int]:
        with self.lock:
            return [body["value"]["data"]["n"] for where, _, body in self.deliveries if path is None or where == path]

    def wait_for(self, count: int, path: str | None = None, timeout: float = 20.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while len(numbers := self.numbers(path)) < count:
            assert time.monotonic() < deadline, f"{len(numbers)} of {count} deliveries after {timeout} s: {numbers}"
            time.sleep(0.02)
        return numbers


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


def _webhook_subscription(url: str, **options: Any) -> dict[str, Any]:
    return {
        "tenant": "demo",
        "topics": ["orders"],
        "handler": {"type": "webhook", "url": url},
        "lease_seconds": 2,
        **options,
    }


class Hub:
    """An IntegrationManager with the API's test client and a token for tenant demo."""

    def __init__(self, manager: IntegrationManager) -> None:
        self.manager = manager
        self.client = create_app(manager=manager).test_client()
        self.headers = {
            "Authorization": f"Bearer {manager.tokens.create('demo', 'publish-tests')[1]}",
            "X-Tenant-ID": "demo",
        }

    def data(self, response: Any, status: int = 200) -> Any:
        body = response.get_json()
        assert response.status_code == status, body
        return body["data"]

    def get(self, path: str, status: int = 200) -> Any:
        return self.data(self.client.get(f"{API}{path}", headers=self.headers), status)

    def post(self, path: str, body: Any = None, status: int = 200, headers: dict[str, str] | None = None) -> Any:
        return self.data(
            self.client.post(f"{API}{path}", json=body, headers={**self.headers, **(headers or {})}), status
        )

    def publish(self, n: int, key: str = "SO-1", topic: str = "orders") -> dict[str, Any]:
        return self.post("/events", {"topic": topic, "eventType": "order.created", "data": {"n": n}, "key": key}, 201)

    def subscription(self, name: str) -> dict[str, Any]:
        return self.get(f"/events/subscriptions/{name}")

    def wait_until(self, condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
            time.sleep(0.05)


@pytest.fixture
def make_hub(tmp_path: Path) -> Iterator[Callable[..., Hub]]:
    made: list[IntegrationManager] = []

    def make(
        subscriptions: dict[str, Any] | None = None,
        *,
        workers: int = 1,
        plugins: tuple[tuple[object, str], ...] = (),
        **overrides: Any,
    ) -> Hub:
        config = base_config(tmp_path / "var", subscriptions=subscriptions or {}, **overrides)
        manager = IntegrationManager(config, environ={}, entry_points=False, plugins=plugins)
        made.append(manager)
        if workers:
            manager.start_workers(workers)
        return Hub(manager)

    yield make
    for manager in made:
        manager.close()


# --- publishing --------------------------------------------------------------------------------------


def test_events_and_consumer_groups(client: Any, headers: dict[str, str]) -> None:
    def data_of(response: Any, status: int = 200) -> Any:
        assert response.status_code == status, response.get_json()
        return response.get_json()["data"]

    first = data_of(
        client.post(
            f"{API}/events",
            json={"topic": "sales-events", "eventType": "sales.order.created", "data": {"orderId": "1"}, "key": "o1"},
            headers=headers,
        ),
        201,
    )
    second = data_of(
        client.post(
            f"{API}/events",
            json={"topic": "sales-events", "eventType": "sales.order.created", "data": {"orderId": "1"}, "key": "o1"},
            headers=headers,
        ),
        201,
    )
    assert first["partition"] == second["partition"] and int(second["offset"]) == int(first["offset"]) + 1
    assert data_of(client.get(f"{API}/events/{first['eventId']}", headers=headers))["topic"] == "sales-events"
    assert data_of(client.get(f"{API}/events/consumer-groups", headers=headers)) == {"groups": []}


def test_a_batch_is_published_in_one_round_trip_and_replayed_by_its_idempotency_key(
    make_hub: Callable[..., Hub],
) -> None:
    hub = make_hub(workers=0)
    events = [
        {"topic": "orders", "eventType": "order.created", "data": {"n": n}, "key": f"SO-{n % 2}"} for n in range(6)
    ]
    events.append({"topic": "returns", "eventType": "order.returned", "data": {"n": 6}})
    batch = hub.post("/events/batch", {"events": events}, 201, headers={"Idempotency-Key": "batch-1"})
    assert (batch["status"], batch["published"], batch["failed"]) == ("succeeded", 7, 0)
    assert [event["eventId"] for event in batch["events"]] == [f"{batch['batchId']}-{n}" for n in range(7)]
    assert all(event["status"] == "published" and event["provider"] == "eventlog" for event in batch["events"])
    by_key: dict[str | None, list[int]] = {}
    for event in batch["events"][:6]:
        by_key.setdefault(event["key"], []).append(int(event["offset"]))
    assert all(offsets == sorted(offsets) for offsets in by_key.values())
    again = hub.post("/events/batch", {"events": events}, 201, headers={"Idempotency-Key": "batch-1"})
    assert again == batch
    assert hub.get(f"/events/{batch['batchId']}") == batch
    # Each event went to the log once, with its own id, under the batch's.
    log = hub.manager.registry.instance("eventlog", "demo")
    published = [
        json.loads(line)["value"]
        for path in sorted(log.directory.glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert sorted(value["id"] for value in published) == sorted(event["eventId"] for event in batch["events"])
    bad = hub.client.post(
        f"{API}/events/batch",
        json={"events": [{"topic": "bad topic", "eventType": "a.b", "data": {}}]},
        headers=hub.headers,
    )
    assert bad.status_code == 422 and "events" in bad.get_json()["errors"]
    assert hub.client.post(f"{API}/events/batch", json={"events": []}, headers=hub.headers).status_code == 422


class PerEventBroker(Provider):
    """No publish_batch; refuses events whose data says so."""

    type_name = "per-event-broker"
    capability = "publish"

    @hookimpl
    def publish(self, event: Event) -> PublishResult:
        if event.data.get("refuse"):
            raise TransientError("broker busy")
        return PublishResult(0, event.id, event.topic)


class HalfBatchBroker(MemoryBroker):
    """Acknowledges only the even positions of each batch it is given."""

    type_name = "half-batch-broker"
    calls: ClassVar[list[int]] = []

    @hookimpl
    def publish_batch(self, events: list[Event]) -> list[PublishResult]:
        HalfBatchBroker.calls.append(len(events))
        return [
            self.publish(event) if index % 2 == 0 else PublishResult.failed(event.topic, "not acknowledged")
            for index, event in enumerate(events)
        ]


class BrokerPlugin:
    @hookimpl
    def register_providers(self, register: Callable[[type], None]) -> None:
        for broker in (PerEventBroker, HalfBatchBroker, MemoryBroker):
            register(broker)


def test_a_batch_without_the_batch_hook_or_half_acknowledged_is_partial_with_each_events_outcome(
    make_hub: Callable[..., Hub],
) -> None:
    events = [{"topic": "orders", "eventType": "order.created", "data": {"n": n, "refuse": n == 1}} for n in range(3)]
    hub = make_hub(
        workers=0,
        providers={"per-event": {"type": "per-event-broker"}, "half": {"type": "half-batch-broker"}},
        services={"kafka": {"providers": ["per-event"]}},
        tenants={"acme": {"services": {"kafka": {"providers": ["half"]}}}},
        plugins=((BrokerPlugin(), "brokers"),),
    )
    batch = hub.post("/events/batch", {"events": events}, 201)
    assert (batch["status"], batch["published"], batch["failed"]) == ("partial", 2, 1)
    assert [event["status"] for event in batch["events"]] == ["published", "failed", "published"]
    assert batch["events"][1]["error"] == "All providers for kafka failed: per-event: broker busy"
    assert hub.manager.get_record(batch["batchId"], "demo").status == "partial"
    # Not even one event published: the caller gets a 503, the record says failed.
    refused = hub.client.post(f"{API}/events/batch", json={"events": [events[1]]}, headers=hub.headers)
    assert refused.status_code == 503

    HalfBatchBroker.calls.clear()
    acme = {"Authorization": f"Bearer {hub.manager.tokens.create('acme', 't')[1]}", "X-Tenant-ID": "acme"}
    four = [{"topic": "orders", "eventType": "order.created", "data": {"n": n}} for n in range(4)]
    answer = hub.data(hub.client.post(f"{API}/events/batch", json={"events": four}, headers=acme), 201)
    # Round 1 acknowledged events 0 and 2; round 2 (1 and 3 only) acknowledged 1: event 3 failed.
    assert HalfBatchBroker.calls == [4, 2]
    assert [event["status"] for event in answer["events"]] == ["published", "published", "published", "failed"]
    assert answer["events"][3]["error"] == "not acknowledged"


def test_publish_events_and_consumer_groups_through_the_python_api(make_hub: Callable[..., Hub]) -> None:
    manager = make_hub(workers=0).manager
    batch = manager.publish_events(
        [{"topic": "orders", "eventType": "order.created", "data": {"n": 1}}], tenant_id="demo"
    )
    assert batch["published"] == 1
    assert manager.consumer_groups("demo") == []


# --- subscriptions in one process ------------------------------------------------------------------


def test_a_webhook_subscription_delivers_every_event_in_order_signed_and_commits(
    make_hub: Callable[..., Hub], receiver: Receiver
) -> None:
    secret = "whsec-subscription"
    hub = make_hub(
        {
            "orders-to-erp": _webhook_subscription(
                f"{receiver.url}/erp", handler={"type": "webhook", "url": f"{receiver.url}/erp", "secret": secret}
            )
        }
    )
    published = [hub.publish(n) for n in range(10)]
    assert receiver.wait_for(10) == list(range(10))
    path, headers, body = receiver.deliveries[0]
    assert path == "/erp" and body["subscription"] == "orders-to-erp" and body["groupId"] == "demo.orders-to-erp"
    assert body["value"]["id"] == published[0]["eventId"] and headers["X-Hub-Event-Id"] == published[0]["eventId"]
    assert headers["X-Hub-Delivery"] == f"orders:{body['partition']}:{body['offset']}"
    stamp, signature = (part.split("=", 1)[1] for part in headers["X-Hub-Signature"].split(","))
    raw = json.dumps(body, separators=(",", ":")).encode()
    assert signature == hmac.new(secret.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()

    def committed_all() -> bool:
        groups = hub.get("/events/consumer-groups")["groups"]
        return bool(groups) and groups[0]["lag"] == 0

    hub.wait_until(committed_all, what="lag 0")
    (group,) = hub.get("/events/consumer-groups")["groups"]
    assert (group["groupId"], group["subscription"], group["provider"], group["state"]) == (
        "demo.orders-to-erp",
        "orders-to-erp",
        "eventlog",
        "Stable",
    )
    assert sum(partition["committed"] or 0 for partition in group["partitions"]) == 10
    hub.wait_until(
        lambda: hub.subscription("orders-to-erp")["handledSinceStart"] == 10, what="the count in the lease's note"
    )
    view = hub.subscription("orders-to-erp")
    assert view["running"] and view["owner"] == hub.manager.publish.leases.owner and view["status"] == "running"
    assert (
        view["handler"] == f"webhook 127.0.0.1:{receiver.port}"
        and view["deadLetters"] == 0
        and view["source"] == "config"
    )
    assert [item["name"] for item in hub.get("/events/subscriptions")["subscriptions"]] == ["orders-to-erp"]
    other = {"Authorization": f"Bearer {hub.manager.tokens.create('acme', 't')[1]}", "X-Tenant-ID": "acme"}
    assert hub.client.get(f"{API}/events/subscriptions/orders-to-erp", headers=other).status_code == 404
    assert hub.data(hub.client.get(f"{API}/events/subscriptions", headers=other)) == {"subscriptions": []}


def test_a_failing_record_is_retried_then_dead_lettered_and_the_subscription_moves_on(
    make_hub: Callable[..., Hub], receiver: Receiver
) -> None:
    receiver.fail = {1: (2, 503), 2: (-1, 500), 3: (-1, 422)}  # 1 recovers; 2 never does; 3 is refused for good
    subscription = _webhook_subscription(
        f"{receiver.url}/erp",
        max_attempts=3,
        backoff={"initial": 0.05, "max": 0.2},
        dead_letter_topic="orders.dead-letters",
    )
    hub = make_hub({"orders-to-erp": subscription})
    for n in range(5):
        hub.publish(n)
    assert receiver.wait_for(3) == [0, 1, 4]  # in order; 2 and 3 skipped once given up
    hub.wait_until(lambda: len(hub.get("/events/dead-letters")["items"]) == 2, what="two dead letters")
    letters = {
        item["value"]["data"]["n"]: item for item in hub.get("/events/dead-letters?subscription=orders-to-erp")["items"]
    }
    assert letters[2]["attempts"] == 3 and "500" in letters[2]["error"]
    assert letters[3]["attempts"] == 1 and "422" in letters[3]["error"]  # a PermanentError: no retries
    assert letters[2]["published"]["topic"] == "orders.dead-letters" and letters[2]["groupId"] == "demo.orders-to-erp"
    log = hub.manager.registry.instance("eventlog", "demo")
    dead = [
        json.loads(line)["value"]
        for path in log.directory.glob("orders.dead-letters-*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert sorted(value["data"]["value"]["data"]["n"] for value in dead) == [2, 3]
    assert {value["type"] for value in dead} == {"hub.dead_letter"}
    hub.wait_until(
        lambda: hub.get("/events/consumer-groups")["groups"][0]["lag"] == 0, what="committed past the dead letters"
    )
    assert hub.subscription("orders-to-erp")["deadLetters"] == 2
    audit = hub.manager.audit_log("demo", outcome="dead")
    assert len(audit) == 2 and all(entry.operation == "dead_letter" for entry in audit)

    # The receiver is fixed for 2 (still refuses 3): a replay delivers 2 once and drops its dead letter.
    receiver.fail = {3: (-1, 422)}
    delivered = hub.post(f"/events/dead-letters/{letters[2]['id']}/replay")
    assert delivered == {"id": letters[2]["id"], "status": "delivered"} and receiver.numbers()[-1] == 2
    failed = hub.post(f"/events/dead-letters/{letters[3]['id']}/replay")
    assert failed["status"] == "failed" and "422" in failed["error"]
    remaining = hub.get("/events/dead-letters")["items"]
    assert [(item["id"], item["attempts"]) for item in remaining] == [(letters[3]["id"], 2)]
    assert (
        hub.client.post(f"{API}/events/dead-letters/{letters[2]['id']}/replay", headers=hub.headers).status_code == 404
    )


def test_a_registered_callable_handler_and_one_added_from_python_both_consume(make_hub: Callable[..., Hub]) -> None:
    seen: list[tuple[str, int]] = []
    failures = {"left": 2}

    def reserve_stock(record: ConsumedRecord, subscription: Subscription) -> None:
        if record.value["data"]["n"] == 0 and failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("stock service restarting")
        seen.append((subscription.name, record.value["data"]["n"]))

    class Handlers:
        @hookimpl
        def register_handlers(self, register: Callable[..., None]) -> None:
            register("reserve-stock", reserve_stock)

    subscription = {
        "tenant": "demo",
        "topics": ["orders"],
        "handler": {"type": "callable", "name": "reserve-stock"},
        "backoff": {"initial": 0.05, "max": 0.1},
    }
    hub = make_hub({"stock": subscription}, plugins=((Handlers(), "handlers"),))
    for n in range(3):
        hub.publish(n)
    hub.wait_until(lambda: len(seen) == 3, what="three records handled")
    assert seen == [("stock", 0), ("stock", 1), ("stock", 2)] and failures["left"] == 0  # retried, in order

    received: list[int] = []
    added = hub.manager.subscribe(
        "orders",
        "audit",
        lambda record, _: received.append(record.value["data"]["n"]),
        tenant_id="demo",
        start="latest",
        lease_seconds=2,
    )
    assert (added.name, added.group, added.topics, added.start) == ("demo.audit", "demo.audit", ("orders",), "latest")
    assert hub.subscription("demo.audit")["source"] == "python"
    # start="latest": it starts at the end as of its first consume, so wait until it has joined its group.
    hub.wait_until(
        lambda: any(group["groupId"] == "demo.audit" for group in hub.get("/events/consumer-groups")["groups"]),
        what="joined",
    )
    hub.publish(3)
    hub.wait_until(lambda: received == [3], what="the latest-only subscriber got the new event")
    assert hub.manager.unsubscribe("demo.audit") and not hub.manager.unsubscribe("demo.audit")
    hub.wait_until(
        lambda: not hub.manager.publish.leases.state("subscription:demo.audit")["held"], what="its worker stopped"
    )
    hub.publish(4)
    hub.wait_until(lambda: len(seen) == 5, what="the configured one still runs")
    assert received == [3]


def test_pausing_stops_deliveries_in_every_process_and_resuming_continues(
    make_hub: Callable[..., Hub], receiver: Receiver
) -> None:
    hub = make_hub({"orders-to-erp": _webhook_subscription(f"{receiver.url}/erp")})
    hub.publish(0)
    receiver.wait_for(1)
    paused = hub.post("/events/subscriptions/orders-to-erp/pause")
    assert paused["paused"]
    hub.wait_until(lambda: not hub.subscription("orders-to-erp")["running"], what="the worker stopped")
    assert hub.subscription("orders-to-erp")["status"] == "paused"
    hub.publish(1)
    time.sleep(1.0)
    assert receiver.numbers() == [0]
    assert not hub.post("/events/subscriptions/orders-to-erp/resume")["paused"]
    assert receiver.wait_for(2) == [0, 1]
    assert hub.client.post(f"{API}/events/subscriptions/nope/pause", headers=hub.headers).status_code == 404

    # POST /shutdown closes the providers: the worker stops (and frees the lease) until POST /initialize.
    admin = {
        "Authorization": f"Bearer {hub.manager.tokens.create('ops', 'admin', admin=True)[1]}",
        "X-Tenant-ID": "ops",
    }
    assert hub.client.post(f"{API}/shutdown", headers=admin).status_code == 200
    hub.wait_until(lambda: not hub.subscription("orders-to-erp")["running"], what="the worker stopped at shutdown")
    assert hub.client.post(f"{API}/initialize", headers=admin).status_code == 200
    hub.publish(2)
    assert receiver.wait_for(3) == [0, 1, 2]


def test_resetting_a_running_subscriptions_group_pauses_it_and_redelivers_from_the_new_offset(
    make_hub: Callable[..., Hub], receiver: Receiver
) -> None:
    hub = make_hub({"orders-to-erp": _webhook_subscription(f"{receiver.url}/erp")})
    offsets = [int(hub.publish(n)["offset"]) for n in range(4)]
    partition = hub.publish(4)["partition"]
    assert receiver.wait_for(5) == [0, 1, 2, 3, 4]
    hub.wait_until(lambda: hub.get("/events/consumer-groups")["groups"][0]["lag"] == 0, what="everything committed")
    reset = hub.post(
        "/events/consumer-groups/demo.orders-to-erp/reset",
        {"topic": "orders", "to": "explicit", "offsets": {str(partition): offsets[2]}},
    )
    assert reset["subscriptions"] == ["orders-to-erp"] and reset["provider"] == "eventlog"
    assert reset["offsets"] == [{"topic": "orders", "partition": partition, "offset": offsets[2]}]
    assert receiver.wait_for(8) == [0, 1, 2, 3, 4, 2, 3, 4]  # the worker resumed from the new offset
    assert not hub.subscription("orders-to-erp")["paused"]
    earliest = hub.post("/events/consumer-groups/demo.orders-to-erp/reset", {"topic": "orders", "to": "earliest"})
    assert {offset["offset"] for offset in earliest["offsets"]} == {0}
    assert receiver.wait_for(13)[8:] == [0, 1, 2, 3, 4]
    problems = [
        ({"topic": "orders", "to": "timestamp"}, 422, "timestamp"),
        ({"topic": "orders", "to": "explicit"}, 422, "offsets"),
        ({"topic": "orders", "to": "explicit", "offsets": {"9": 0}}, 422, "no partition 9"),
    ]
    for body, status, text in problems:
        answer = hub.client.post(
            f"{API}/events/consumer-groups/demo.orders-to-erp/reset", json=body, headers=hub.headers
        )
        assert answer.status_code == status and text in json.dumps(answer.get_json()), answer.get_json()
    assert (
        hub.client.post(
            f"{API}/events/consumer-groups/acme.orders/reset",
            json={"topic": "orders", "to": "earliest"},
            headers=hub.headers,
        ).status_code
        == 404
    )
    manual = hub.manager.reset_offsets("demo.manual", "orders", "latest", tenant_id="demo")
    assert manual["subscriptions"] == [] and {offset["offset"] for offset in manual["offsets"]} >= {offsets[-1] + 2}


def test_reset_offsets_refuses_a_group_with_a_consumer_outside_the_hub(
    make_hub: Callable[..., Hub], provider_harness: ProviderHarness
) -> None:
    hub = make_hub(workers=0)
    hub.publish(0)
    log = hub.manager.registry.instance("eventlog", "demo")
    outsider = Subscription("outsider", "demo", "demo.outsider", ("orders",))
    log.consume(outsider, 10, 0.1)  # a consumer the hub does not run: a live member of the group
    answer = hub.client.post(
        f"{API}/events/consumer-groups/demo.outsider/reset",
        json={"topic": "orders", "to": "earliest"},
        headers=hub.headers,
    )
    assert answer.status_code == 409 and "active member" in answer.get_json()["message"]
    log.unsubscribe(outsider)
    assert hub.post("/events/consumer-groups/demo.outsider/reset", {"topic": "orders", "to": "earliest"})["offsets"]


@pytest.mark.parametrize(
    ("subscription", "path", "reason"),
    [
        (
            {"tenant": "demo", "topics": ["orders"], "handler": {"type": "callable", "name": "missing"}},
            "subscriptions.s.handler.name",
            "no handler 'missing'",
        ),
        (
            {
                "tenant": "demo",
                "group": "acme.s",
                "topics": ["orders"],
                "handler": {"type": "webhook", "url": "http://127.0.0.1:9/x"},
            },
            "subscriptions.s.group",
            "'demo.'",
        ),
        (
            {
                "tenant": "demo",
                "provider": "outbox",
                "topics": ["orders"],
                "handler": {"type": "webhook", "url": "http://127.0.0.1:9/x"},
            },
            "subscriptions.s.provider",
            "cannot be subscribed to",
        ),
        (
            {
                "tenant": "demo",
                "provider": "nobody",
                "topics": ["orders"],
                "handler": {"type": "webhook", "url": "http://127.0.0.1:9/x"},
            },
            "subscriptions.s.provider",
            "no provider named",
        ),
        (
            {"tenant": "demo", "topics": ["bad topic"], "handler": {"type": "webhook", "url": "http://127.0.0.1:9/x"}},
            "subscriptions.s.topics.0",
            "letters",
        ),
    ],
)
def test_a_subscription_that_cannot_run_stops_start_up_naming_its_key(
    tmp_path: Path, subscription: dict[str, Any], path: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        IntegrationManager(
            base_config(tmp_path / "var", subscriptions={"s": subscription}), environ={}, entry_points=False
        ).close()
    assert raised.value.path == path and reason in str(raised.value), str(raised.value)


# --- two hub processes ---------------------------------------------------------------------------------

BATCH = 5


def _lease_owners(database: Database) -> dict[str, str | None]:
    with database.session() as session:
        return {
            row.name: row.owner for row in session.scalars(select(Lease).where(Lease.name.startswith("subscription:")))
        }


def _pid_of(owner: str | None) -> int | None:
    return int(owner.split(":")[1]) if owner else None


def _start_worker(config: Path, log_file: Path) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as output:
        return subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from hub.cli import main; main()",
                "--config",
                str(config),
                "worker",
                "--threads",
                "1",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=_subprocess_environment(),
        )


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(0.05)
    return value


def test_two_hub_processes_run_each_subscription_once_and_take_over_within_seconds_of_a_sigkill(
    tmp_path: Path, database_url: str
) -> None:
    count, lease_seconds = 300, 2
    receiver = Receiver(delay=0.01).start()
    config = tmp_path / "hub.yaml"
    subscription = {"tenant": "demo", "topics": ["orders"], "lease_seconds": lease_seconds, "batch_size": BATCH}
    config.write_text(
        json.dumps(
            {  # JSON is YAML
                "data_dir": str(tmp_path / "var"),
                "database_url": database_url if database_url.startswith("postgres") else None,
                "queue": {"backend": "sqlite", "workers": 1},
                "providers": {"eventlog": {"type": "event-log", "directory": "events", "fsync": False}},
                "services": {"kafka": {"providers": ["eventlog"]}},
                "subscriptions": {
                    name: {**subscription, "handler": {"type": "webhook", "url": f"{receiver.url}/{name}"}}
                    for name in ("orders-a", "orders-b")
                },
            }
        )
    )
    publisher = IntegrationManager(str(config), environ={}, entry_points=False)  # no workers: it only publishes
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for start in range(0, count, 100):
            publisher.publish_events(
                [
                    {"topic": "orders", "eventType": "order.created", "data": {"n": n}, "key": "SO-1"}
                    for n in range(start, start + 100)
                ],
                tenant_id="demo",
            )
        processes = [_start_worker(config, tmp_path / f"worker-{index}.log") for index in range(2)]
        pids = {process.pid for process in processes}
        database = publisher.db

        def both_held() -> dict[str, str | None] | None:
            found = _lease_owners(database)
            return found if len(found) == 2 and all(found.values()) else None

        owners = _wait(both_held, 30, "both leases held")
        assert {_pid_of(owner) for owner in owners.values()} <= pids  # each subscription held by one of them
        receiver.wait_for(60, "/orders-a", timeout=30)
        assert len(set(receiver.numbers("/orders-a"))) == len(
            receiver.numbers("/orders-a")
        )  # no duplicate while one runs it

        victim_pid = _pid_of(owners["subscription:orders-a"])
        victim = next(process for process in processes if process.pid == victim_pid)
        survivor = next(process for process in processes if process is not victim)
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        victim.wait(10)
        _wait(
            lambda: _pid_of(_lease_owners(database)["subscription:orders-a"]) == survivor.pid,
            15,
            "the survivor took orders-a over",
        )
        takeover = time.monotonic() - killed
        assert takeover < lease_seconds + 2.5, f"took {takeover:.1f} s"

        for name in ("orders-a", "orders-b"):
            receiver.wait_for(count, f"/{name}", timeout=90)
            _wait(
                lambda name=name: set(receiver.numbers(f"/{name}")) == set(range(count)),
                90,
                f"every event delivered to {name}",
            )
            delivered = receiver.numbers(f"/{name}")
            # In order: the first process's run, then the survivor from the last committed offset. The only
            # duplicates are the records the killed process had handled but not yet committed (one batch).
            restart = next(
                (index for index in range(1, len(delivered)) if delivered[index] <= delivered[index - 1]),
                len(delivered),
            )
            resumed_at = delivered[restart] if restart < len(delivered) else restart
            assert delivered == list(range(restart)) + list(range(resumed_at, count)), name
            duplicates = restart - resumed_at
            assert 0 <= duplicates <= BATCH, (name, duplicates)
            if name == "orders-b" and _pid_of(owners["subscription:orders-b"]) == survivor.pid:
                assert duplicates == 0  # the process that ran it never died
        # A graceful stop (SIGTERM) releases the leases at once instead of letting them expire.
        survivor.send_signal(signal.SIGTERM)
        survivor.wait(20)
        assert _lease_owners(database) == {"subscription:orders-a": None, "subscription:orders-b": None}
        print(
            f"takeover after SIGKILL: {takeover:.2f} s; duplicates: {[len(receiver.numbers(f'/{n}')) - count for n in ('orders-a', 'orders-b')]}"
        )
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        publisher.close()
        receiver.stop()


# --- CloudEvents envelopes and event schemas ------------------------------------------------------------------


def _refused(hub: Hub, body: dict[str, Any], path: str = "/events") -> dict[str, Any]:
    response = hub.client.post(f"{API}{path}", json=body, headers=hub.headers)
    answer = response.get_json()
    assert response.status_code == 422, answer
    return answer


def test_published_events_are_cloudevents_with_their_attributes_in_the_headers(make_hub: Callable[..., Hub]) -> None:
    from cloudevents.core.formats.json import JSONFormat

    hub = make_hub(workers=0)
    order = {"orderId": "SO-17", "customerId": "C-9", "totalAmount": 129.5, "currency": "USD", "status": "confirmed"}
    published = hub.post(
        "/events", {"topic": "sales-events", "eventType": "sales.order.created", "data": order, "key": "SO-17"}, 201
    )
    [record] = _drain_event_log(hub, "sales-events")
    event = JSONFormat().read(None, json.dumps(record.value).encode())  # the official SDK reads it as a CloudEvent 1.0
    assert event.get_id() == published["eventId"] and event.get_type() == "sales.order.created"
    assert event.get_source() == "/tenants/demo" and event.get_subject() == "SO-17"
    assert event.get_extension("tenant") == "demo" and event.get_data() == order
    assert event.get_dataschema() == "/api/integrations/events/schemas/sales.order.created/1"
    schema = hub.get("/events/schemas/sales.order.created/1")
    assert schema["origin"] == "builtin" and "orderId" in schema["schema"]["required"]
    assert record.headers["ce_id"] == published["eventId"] and record.headers["ce_type"] == "sales.order.created"
    assert record.headers["ce_tenant"] == "demo" and record.headers["content-type"] == "application/cloudevents+json"
    assert record.event() is not None and record.event().data == order


def _drain_event_log(hub: Hub, topic: str) -> list[ConsumedRecord]:
    slot = next(slot for slot in hub.manager.registry.slots.values() if slot.type_name == "event-log")
    files = sorted(slot.instance.directory.glob("*.jsonl"))
    topics = tuple(sorted({path.name.rsplit("-", 1)[0] for path in files if topic in path.name}))
    assert topics, [path.name for path in files]
    subscription = Subscription(
        name=f"read-{topic}", tenant="demo", topics=topics, group=f"demo.read-{topic}", start="earliest"
    )
    consume = hub.manager.runtime.host.hook_for(slot.instance, "consume")
    return consume(subscription=subscription, max_records=100, timeout=0.2)


def test_an_event_that_breaks_its_schema_is_a_422_naming_each_field(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub(workers=0)
    missing = _refused(
        hub, {"topic": "sales-events", "eventType": "sales.order.created", "data": {"customerId": "C-1"}}
    )
    assert missing["errors"] == {"data.orderId": ["'orderId' is a required property"]}
    wrong = {"orderId": "SO-1", "items": [{"sku": "A", "quantity": "two"}], "currency": "usd"}
    refused = hub.client.post(
        f"{API}/events/batch",
        json={
            "events": [
                {"topic": "t", "eventType": "order.placed", "data": {}},
                {"topic": "sales", "eventType": "sales.order.created", "data": wrong},
            ]
        },
        headers=hub.headers,
    )
    body = refused.get_json()
    assert refused.status_code == 422 and set(body["errors"]) == {
        "events.1.data.items.0.quantity",
        "events.1.data.currency",
    }, body
    assert hub.post(
        "/events", {"topic": "t", "eventType": "order.placed", "data": {"anything": 1}}, 201
    )  # no schema: unchecked
    unknown_version = _refused(
        hub, {"topic": "s", "eventType": "sales.order.created", "data": {"orderId": "1"}, "schemaVersion": 9}
    )
    assert "schemaVersion" in unknown_version["errors"]


def test_schema_versions_must_stay_backward_compatible_unless_marked_breaking() -> None:
    from hub.services.event_schemas import backward_incompatibilities

    v1 = {
        "type": "object",
        "required": ["sku"],
        "properties": {
            "sku": {"type": "string"},
            "qty": {"type": "integer", "minimum": 0},
            "unit": {"enum": ["ea", "kg"]},
        },
    }
    widened = {
        "type": "object",
        "required": ["sku"],
        "properties": {
            "sku": {"type": "string"},
            "qty": {"type": "number"},
            "unit": {"enum": ["ea", "kg", "lb"]},
            "note": {"type": "string", "format": "uri"},
        },
    }
    assert backward_incompatibilities(v1, widened) == []
    narrowed = {
        "type": "object",
        "required": ["sku", "location"],
        "additionalProperties": False,
        "properties": {
            "sku": {"type": "string", "maxLength": 20},
            "qty": {"type": "integer", "minimum": 1},
            "unit": {"enum": ["ea"]},
        },
    }
    problems = backward_incompatibilities(v1, narrowed)
    assert any("new required properties ['location']" in p for p in problems)
    assert any("closed to properties" in p for p in problems)
    assert any(p.startswith("sku: maxLength lowered") for p in problems)
    assert any(p.startswith("qty: minimum raised") for p in problems)
    assert any(p.startswith("unit: allowed values narrowed") for p in problems)
    assert backward_incompatibilities({"type": "number"}, {"type": "integer"}) != []


class SchemaPlugin:
    @hookimpl
    def register_event_schemas(self, register: Callable[..., None]) -> None:
        base = {"type": "object", "required": ["shipmentId"], "properties": {"shipmentId": {"type": "string"}}}
        register("shipment.dispatched", 1, base)
        register(
            "shipment.dispatched", 2, {**base, "properties": {**base["properties"], "carrier": {"type": "string"}}}
        )
        register("shipment.dispatched", 3, {**base, "required": ["shipmentId", "carrier"]})  # incompatible: skipped
        register("shipment.returned", 1, base)
        register("shipment.returned", 2, {**base, "required": ["shipmentId", "reason"]}, breaking=True)


def test_a_plugins_event_schemas_are_checked_for_compatibility_and_validate_its_events(
    make_hub: Callable[..., Hub], caplog: Any
) -> None:
    hub = make_hub(workers=0, plugins=((SchemaPlugin(), "shipping-schemas"),))
    listed = {(item["eventType"], item["version"]): item for item in hub.get("/events/schemas")["items"]}
    assert {("shipment.dispatched", 1), ("shipment.dispatched", 2), ("shipment.returned", 2)} <= set(listed)
    assert ("shipment.dispatched", 3) not in listed and listed[("shipment.returned", 2)]["breaking"] is True
    assert listed[("shipment.dispatched", 2)]["origin"] == "shipping-schemas"
    assert "not backward compatible with version 2" in caplog.text
    assert hub.post(
        "/events",
        {"topic": "ship", "eventType": "shipment.dispatched", "data": {"shipmentId": "S1", "carrier": "UPS"}},
        201,
    )
    bad = _refused(hub, {"topic": "ship", "eventType": "shipment.dispatched", "data": {"shipmentId": 7}})
    assert list(bad["errors"]) == ["data.shipmentId"]
    # The breaking version is the newest; an event may still name the old one.
    assert _refused(hub, {"topic": "ship", "eventType": "shipment.returned", "data": {"shipmentId": "S1"}})[
        "errors"
    ] == {"data.reason": ["'reason' is a required property"]}
    assert hub.post(
        "/events",
        {"topic": "ship", "eventType": "shipment.returned", "data": {"shipmentId": "S1"}, "schemaVersion": 1},
        201,
    )


def test_a_tenant_registers_its_own_versions_and_other_tenants_keep_the_shared_ones(
    make_hub: Callable[..., Hub],
) -> None:
    hub = make_hub(workers=0)
    path = "/events/schemas/sales.order.created/2"
    builtin = hub.get("/events/schemas/sales.order.created/1")["schema"]
    stricter = {**builtin, "required": ["orderId", "channel"]}
    refused = hub.client.put(f"{API}{path}", json={"schema": stricter}, headers=hub.headers)
    assert refused.status_code == 422 and "not backward compatible" in refused.get_json()["errors"]["schema"][0]
    wider = {**builtin, "properties": {**builtin["properties"], "channel": {"type": "string"}}}
    made = hub.client.put(f"{API}{path}", json={"schema": wider}, headers=hub.headers)
    assert made.status_code == 201 and made.get_json()["data"]["origin"] == "tenant"
    assert hub.client.put(f"{API}{path}", json={"schema": wider}, headers=hub.headers).status_code == 422  # exists
    invalid = hub.client.put(
        f"{API}/events/schemas/sales.order.created/3", json={"schema": {"type": "nothing"}}, headers=hub.headers
    )
    assert invalid.status_code == 422 and "not a valid JSON Schema" in invalid.get_json()["errors"]["schema"][0]
    published = hub.post(
        "/events", {"topic": "s", "eventType": "sales.order.created", "data": {"orderId": "1", "channel": "web"}}, 201
    )
    assert published["eventId"]
    other = hub.manager.tokens.create("acme", "publish-tests")[1]
    theirs = hub.client.get(
        f"{API}/events/schemas/sales.order.created/2",
        headers={"Authorization": f"Bearer {other}", "X-Tenant-ID": "acme"},
    )
    assert theirs.status_code == 404  # demo's own version is demo's


class CollectSettings(Schema):
    prefix = fields.String(required=True)
    limit = fields.Integer(load_default=10)


class CollectingHandlers:
    """A plugin with a configurable handler type: each subscription gets its own handler, built from its settings."""

    seen: ClassVar[list[tuple[str, str, str, int]]] = []

    @hookimpl
    def register_handler_types(self, register: Callable[..., None]) -> None:
        def factory(settings: dict[str, Any], context: Any) -> Callable[..., None]:
            def handle(record: ConsumedRecord, subscription: Subscription) -> None:
                assert context.hub() is not None  # the hub, for handlers that notify or publish
                CollectingHandlers.seen.append(
                    (context.subscription, context.tenant, settings["prefix"], settings["limit"])
                )

            handle.label = f"collect {settings['prefix']}"  # type: ignore[attr-defined]
            return handle

        register("collect", factory, CollectSettings)


def test_a_plugins_handler_type_is_configured_per_subscription_from_hub_yaml(
    make_hub: Callable[..., Hub], tmp_path: Path
) -> None:
    CollectingHandlers.seen = []
    subscriptions = {
        "orders-collect": {
            "topics": ["orders"],
            "tenant": "demo",
            "handler": {"type": "collect", "prefix": "so-", "limit": 3},
        }
    }
    hub = make_hub(subscriptions, plugins=((CollectingHandlers(), "collectors"),))
    hub.publish(1)
    hub.wait_until(lambda: CollectingHandlers.seen, what="the handler to run")
    assert CollectingHandlers.seen[0] == ("orders-collect", "demo", "so-", 3)
    assert hub.subscription("orders-collect")["handler"] == "collect so-"

    for handler, key in (
        ({"type": "collect"}, "subscriptions.bad.handler.prefix"),
        ({"type": "nothing"}, "subscriptions.bad.handler.type"),
    ):
        with pytest.raises(ConfigError) as refused:
            IntegrationManager(
                base_config(
                    tmp_path / f"var-{key[-4:]}",
                    subscriptions={"bad": {"topics": ["t"], "tenant": "demo", "handler": handler}},
                ),
                environ={},
                entry_points=False,
                plugins=((CollectingHandlers(), "collectors"),),
            )
        assert key in str(refused.value)


def _stock(item: str, old: int, new: int) -> dict[str, Any]:
    return {"itemId": item, "warehouseId": "WH-1", "oldQuantity": old, "newQuantity": new, "transactionType": "SALE"}


def test_stock_falling_below_its_threshold_alerts_once_per_crossing(make_hub: Callable[..., Hub]) -> None:
    subscriptions = {
        "low-stock": {
            "tenant": "demo",
            "topics": ["inventory-events"],
            "filter": {
                "event_types": ["inventory.stock.*"],
                "crosses_below": {"field": "newQuantity", "previous": "oldQuantity", "threshold": 10},
            },
            "handler": {
                "type": "notify",
                "channel": "email",
                "template": "low_stock_alert",
                "recipients": [{"email": "ops@example.com"}],
                "data_map": {"sku": "itemId", "location": "warehouseId", "current_stock": "newQuantity"},
                "data": {"threshold": 10},
            },
            "backoff": {"initial": 0.05, "max": 0.2},
        },
        "orders-forward": {
            "tenant": "demo",
            "topics": ["sales-events"],
            "filter": {
                "event_types": ["sales.order.created"],
                "where": [{"field": "totalAmount", "op": "gte", "value": 100}],
            },
            "handler": {"type": "publish", "topic": "big-orders"},
        },
    }
    hub = make_hub(subscriptions)
    for old, new in ((15, 12), (12, 8), (8, 5), (5, 20), (20, 3)):
        hub.post(
            "/events",
            {
                "topic": "inventory-events",
                "eventType": "inventory.stock.updated",
                "data": _stock("SKU-1", old, new),
                "key": "SKU-1",
            },
            201,
        )
    for total in (50, 150):
        hub.post(
            "/events",
            {
                "topic": "sales-events",
                "eventType": "sales.order.created",
                "data": {"orderId": f"SO-{total}", "totalAmount": total},
            },
            201,
        )

    def sent() -> list[Any]:
        return hub.manager.list_records("demo", "notification")

    hub.wait_until(lambda: len(sent()) >= 2, timeout=15, what="two alerts")
    hub.wait_until(
        lambda: (
            hub.manager.list_records("demo", "event", limit=100)
            and any(
                r.payload.get("topic") == "big-orders" for r in hub.manager.list_records("demo", "event", limit=100)
            )
        ),
        what="the forwarded order",
    )
    time.sleep(0.5)  # nothing more arrives: 12 -> 8 and 20 -> 3 cross, the others do not
    alerts = sent()
    assert len(alerts) == 2
    assert {alert.payload.get("template") for alert in alerts} == {"low_stock_alert"}
    forwarded = [
        r for r in hub.manager.list_records("demo", "event", limit=100) if r.payload.get("topic") == "big-orders"
    ]
    assert len(forwarded) == 1 and forwarded[0].payload["eventType"] == "sales.order.created"


def test_a_handlers_retry_after_stretches_the_wait_before_the_next_try(make_hub: Callable[..., Hub]) -> None:
    calls: list[float] = []

    def busy_once(record: ConsumedRecord, subscription: Subscription) -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise TransientError("receiver busy", retry_after=0.6)  # a 429's Retry-After, as hub.http reads it

    hub = make_hub()
    hub.manager.subscribe("orders", "busy", busy_once, tenant_id="demo", backoff=(0.01, 0.05))
    hub.publish(1)
    hub.wait_until(lambda: len(calls) >= 2, what="the second try")
    assert calls[1] - calls[0] >= 0.55  # not the subscription's 10 ms backoff


def test_a_subscription_defined_through_the_api_runs_in_every_process_until_deleted(
    make_hub: Callable[..., Hub], receiver: Receiver
) -> None:
    hub = make_hub(workers=0)
    body = {
        "name": "orders-api",
        "topics": ["orders"],
        "handler": {"type": "webhook", "url": f"{receiver.url}/api-made"},
        "backoff": {"initial": 0.05, "max": 0.2},
    }
    made = hub.post("/events/subscriptions", body, 201)
    assert made["name"] == "orders-api" and made["groupId"] == "demo.orders-api" and made["source"] == "api"
    conflict = hub.client.post(f"{API}/events/subscriptions", json=body, headers=hub.headers)
    assert conflict.status_code == 409
    bad = hub.client.post(
        f"{API}/events/subscriptions",
        json={**body, "name": "x", "handler": {"type": "notify", "channel": "fax"}},
        headers=hub.headers,
    )
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) <= {"handler.channel", "handler.template"}, (
        bad.get_json()
    )
    foreign = hub.client.post(
        f"{API}/events/subscriptions", json={**body, "name": "y", "tenant": "acme"}, headers=hub.headers
    )
    assert foreign.status_code == 422 and "tenant" in foreign.get_json()["errors"]

    # Another process (its own manager on the same database) picks it up and runs it.
    other = make_hub(workers=1)
    hub.publish(7)
    assert receiver.wait_for(1, "/api-made") == [7]
    assert other.subscription("orders-api")["source"] == "api"
    assert (
        hub.client.delete(f"{API}/events/subscriptions/orders-api", headers=hub.headers).get_json()["data"]["deleted"]
        is True
    )
    other.manager.publish._stored_synced_at = float("-inf")  # its next round looks again at once
    other.wait_until(lambda: "orders-api" not in other.manager.publish.specs, what="the other process to drop it")


def test_a_tenants_subscription_never_gets_another_tenants_events_on_a_shared_topic(
    make_hub: Callable[..., Hub], receiver: Receiver
) -> None:
    hub = make_hub()
    acme = {"Authorization": f"Bearer {hub.manager.tokens.create('acme', 'publish-tests')[1]}", "X-Tenant-ID": "acme"}
    made = hub.client.post(
        f"{API}/events/subscriptions",
        json={
            "name": "acme-orders",
            "topics": ["orders"],
            "handler": {"type": "webhook", "url": f"{receiver.url}/acme"},
        },
        headers=acme,
    )
    assert made.status_code == 201, made.get_json()
    hub.publish(1)  # demo's event on the shared topic
    mine = hub.client.post(
        f"{API}/events", json={"topic": "orders", "eventType": "order.created", "data": {"n": 2}}, headers=acme
    )
    assert mine.status_code == 201
    assert receiver.wait_for(1, "/acme") == [2]
    time.sleep(0.3)
    assert receiver.numbers("/acme") == [2]  # demo's event 1 was committed past, never delivered


def test_topics_are_listed_and_created_and_a_group_deleted_through_the_api(
    make_hub: Callable[..., Hub], receiver: Receiver
) -> None:
    hub = make_hub({"orders-to-erp": _webhook_subscription(f"{receiver.url}/erp")})
    made = hub.post("/events/topics", {"topic": "returns", "partitions": 2}, 201)
    assert made == {"topic": "returns", "provider": made["provider"], "created": True}
    assert hub.post("/events/topics", {"topic": "returns"}, 201)["created"] is False  # it exists: not an error
    hub.publish(1)
    receiver.wait_for(1)
    assert {"returns", "orders"} <= set(hub.get("/events/topics")["topics"])
    group = "demo.orders-to-erp"
    hub.wait_until(
        lambda: any(g["groupId"] == group for g in hub.get("/events/consumer-groups")["groups"]), what="the group"
    )
    deleted = hub.data(hub.client.delete(f"{API}/events/consumer-groups/{group}", headers=hub.headers))
    assert deleted["deleted"] is True and deleted["pausedSubscriptions"] == ["orders-to-erp"]
    assert group not in [g["groupId"] for g in hub.get("/events/consumer-groups")["groups"]]
    assert hub.subscription("orders-to-erp")["paused"] is True  # its offsets are gone: resumed, it starts over
    other = hub.client.delete(f"{API}/events/consumer-groups/acme.other", headers=hub.headers)
    assert other.status_code == 404  # not the tenant's
