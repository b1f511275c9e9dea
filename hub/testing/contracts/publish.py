"""The publish contract: publish (and batches), consume and commit, groups and offset resets."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from hub.capabilities import (
    ConsumedRecord,
    ConsumerGroup,
    Event,
    GroupMember,
    OffsetReset,
    PartitionLag,
    PartitionOffset,
    PublishResult,
    Subscription,
    to_dict,
)
from hub.errors import InUseError

if TYPE_CHECKING:
    from hub.testing import ProviderHarness

from hub.testing.contracts.basics import (
    CONTRACT_TENANT,
    _expect,
    _expect_error,
    _unique,
)


def check_publish(
    harness: ProviderHarness,
    provider: Any,
    topic: str = "contract-tests",
    *,
    key: str = "contract-key",
    tenant: str = CONTRACT_TENANT,
    consume_topic: str | None = None,
    wait: float = 30.0,
    settle: float = 1.0,
) -> PublishResult:
    """Every publish hook the provider implements, as the core and the subscription workers use them.

    * ``publish`` returns a ``PublishResult`` (partition ``int >= 0``, offset a non-empty ``str``); events
      with the same key land in the same partition at increasing offsets; an event without a key is accepted.
    * ``publish_batch`` (optional) returns one ``PublishResult`` per event, in order, with the same rules.
    * ``consume`` (optional; requires ``commit`` and ``unsubscribe``) on a fresh topic and group: returns
      ``ConsumedRecord`` objects, never more than ``max_records``, in order, with the published envelope, key and
      headers; a keep-alive (``max_records=0``) returns ``[]`` and loses nothing; after ``commit`` of the
      first records and ``unsubscribe``, the uncommitted records -- and only those -- are delivered again.
    * ``consumer_groups`` (optional) returns ``ConsumerGroup`` objects; after the round trip it shows the
      check's group with its committed offset and no lag.
    * ``reset_offsets`` (optional) to ``earliest``, ``explicit``, ``timestamp`` and ``latest`` moves what
      ``consume`` delivers next, and is refused with ``InUseError`` while the group has an active member.

    :param topic: where the publish checks write.
    :param consume_topic: the topic for the consume checks; a fresh one (``<topic>.consume-<random>``) by
        default, which the broker must create on first publish. It must be empty and used by nothing else.
    :param wait: seconds to wait for records the check expects (a broker's group join can take seconds).
    :param settle: seconds to keep consuming where the check expects nothing more (raise it for a broker
        whose group join takes longer, or the check cannot see a record delivered twice).
    """

    def publish(event_key: str | None, sequence: int) -> PublishResult:
        event = _contract_event(tenant, topic, event_key, sequence)
        result = harness.call(provider, "publish", event=event)
        _check_publish_result(provider, result, topic, "publish()")
        return result

    keyed = [publish(key, sequence) for sequence in range(3)]
    _check_one_partition_in_order(provider, keyed, "publish()")
    publish(None, 3)

    if harness.implements(provider, "publish_batch"):
        _check_publish_batch(harness, provider, topic, key, tenant)

    group: str | None = None
    stream: str | None = None
    if harness.implements(provider, "consume"):
        stream = consume_topic or f"{topic}.consume-{uuid.uuid4().hex[:10]}"
        group = f"{tenant}.{_unique('contract-group')}"
        _check_consume(harness, provider, stream, group, key, tenant, wait, settle)
    else:
        for hook_name in ("commit", "unsubscribe"):
            _expect(
                not harness.implements(provider, hook_name),
                provider,
                f"implements {hook_name}() but not consume(): the three come together",
            )

    if harness.implements(provider, "consumer_groups"):
        _check_consumer_groups(harness, provider, group, stream)
    if harness.implements(provider, "reset_offsets"):
        _expect(
            group is not None and stream is not None,
            provider,
            "implements reset_offsets() but not consume(): a reset only matters to consumers",
        )
        assert group is not None and stream is not None
        _check_reset_offsets(harness, provider, stream, group, key, tenant, wait, settle)
    return keyed[0]


def _contract_event(tenant: str, topic: str, key: str | None, sequence: int, check: str = "publish") -> Event:
    return Event(
        id=_unique("contract-event"),
        tenant=tenant,
        topic=topic,
        event_type="contract.check",
        data={"sequence": sequence, "amount": "12.50", "text": 'quotes " and\nnewlines'},
        key=key,
        headers={"x-contract": check},
    )


def _check_publish_result(provider: object, result: Any, topic: str, action: str) -> None:
    _expect(isinstance(result, PublishResult), provider, f"{action} returned {result!r}, not a PublishResult")
    _expect(result.error is None, provider, f"{action} returned an error ({result.error}) for an event it accepted")
    _expect(
        isinstance(result.partition, int) and not isinstance(result.partition, bool) and result.partition >= 0,
        provider,
        f"{action}: PublishResult.partition is {result.partition!r}; it must be an int >= 0",
    )
    _expect(
        isinstance(result.offset, str) and result.offset,
        provider,
        f"{action}: PublishResult.offset is {result.offset!r}; it must be a non-empty string",
    )
    _expect(
        result.topic in (None, topic),
        provider,
        f"{action}: PublishResult.topic is {result.topic!r}, expected {topic!r}",
    )


def _check_one_partition_in_order(provider: object, results: Sequence[PublishResult], action: str) -> None:
    partitions = {result.partition for result in results}
    _expect(
        len(partitions) == 1,
        provider,
        f"{action}: events with the same key went to partitions {sorted(partitions)}: one key must map to one partition",
    )
    offsets = [result.offset for result in results]
    if all(offset.isdigit() for offset in offsets):
        _expect(
            [int(offset) for offset in offsets] == sorted({int(offset) for offset in offsets}),
            provider,
            f"{action}: offsets {offsets} for one partition do not increase",
        )
    else:
        _expect(len(set(offsets)) == len(offsets), provider, f"{action}: offsets {offsets} repeat for one partition")


def _check_publish_batch(harness: ProviderHarness, provider: Any, topic: str, key: str, tenant: str) -> None:
    events = [_contract_event(tenant, topic, key, sequence, "publish_batch") for sequence in range(3)]
    events.append(_contract_event(tenant, topic, None, 3, "publish_batch"))
    original = copy.deepcopy(events)
    results = harness.call(provider, "publish_batch", events=events)
    _expect(isinstance(results, list), provider, f"publish_batch() returned {results!r}, not a list")
    _expect(events == original, provider, "publish_batch() changed the events it was given; the core reuses them")
    _expect(
        len(results) == len(events),
        provider,
        f"publish_batch() returned {len(results)} results for {len(events)} events: return one per event, in order",
    )
    for result in results:
        _check_publish_result(provider, result, topic, "publish_batch()")
    _check_one_partition_in_order(provider, results[:3], "publish_batch()")
    empty = harness.call(provider, "publish_batch", events=[])
    _expect(empty == [], provider, f"publish_batch([]) returned {empty!r}, expected []")


def _envelope_json(event: Event) -> Any:
    return json.loads(json.dumps(to_dict(event.envelope())))


def _consume(
    harness: ProviderHarness, provider: Any, subscription: Subscription, max_records: int, timeout: float
) -> list[ConsumedRecord]:
    records = harness.call(provider, "consume", subscription=subscription, max_records=max_records, timeout=timeout)
    _expect(isinstance(records, list), provider, f"consume() returned {records!r}, not a list")
    _expect(
        len(records) <= max_records,
        provider,
        f"consume(max_records={max_records}) returned {len(records)} records; return at most max_records",
    )
    for record in records:
        _expect(isinstance(record, ConsumedRecord), provider, f"consume() returned {record!r}, not a ConsumedRecord")
        _expect(
            isinstance(record.offset, int) and not isinstance(record.offset, bool) and record.offset >= 0,
            provider,
            f"ConsumedRecord.offset is {record.offset!r}; it must be an int >= 0",
        )
        _expect(
            isinstance(record.partition, int) and record.partition >= 0,
            provider,
            "ConsumedRecord.partition must be an int >= 0",
        )
    return records


def _collect(
    harness: ProviderHarness,
    provider: Any,
    subscription: Subscription,
    count: int,
    wait: float,
    max_records: int = 10,
) -> list[ConsumedRecord]:
    """Consume until ``count`` records arrived or ``wait`` seconds passed (``count=0``: for ``wait`` seconds)."""
    records: list[ConsumedRecord] = []
    deadline = time.monotonic() + wait
    while (count == 0 or len(records) < count) and time.monotonic() < deadline:
        remaining = deadline - time.monotonic()
        records += _consume(harness, provider, subscription, max_records, max(0.05, min(1.0, remaining)))
    return records


def _describe_records(records: Sequence[ConsumedRecord]) -> str:
    return ", ".join(f"{record.topic}[{record.partition}]@{record.offset}" for record in records) or "none"


def _check_delivered(
    provider: object, records: Sequence[ConsumedRecord], expected: Sequence[Event], action: str
) -> None:
    """``records`` are exactly ``expected``, in order, with their envelope, key and headers."""
    ids = [record.event().id if record.event() else None for record in records]
    wanted = [event.id for event in expected]
    envelopes = [_envelope_json(event) for event in expected]
    for record in records:
        _expect(
            isinstance(record.value, dict) and record.value.get("id") in wanted or record.value in envelopes,
            provider,
            f"{action}: ConsumedRecord.value is {record.value!r}; it must be the published envelope, decoded from JSON",
        )
    _expect(
        ids == wanted,
        provider,
        f"{action}: consume() delivered {_describe_records(records)} (event ids {ids}), expected the events {wanted} "
        "in order",
    )
    for record, event in zip(records, expected, strict=True):
        _expect(
            record.topic == event.topic,
            provider,
            f"{action}: ConsumedRecord.topic is {record.topic!r}, not {event.topic!r}",
        )
        _expect(
            record.value == _envelope_json(event),
            provider,
            f"{action}: ConsumedRecord.value is {record.value!r}; it must be the published envelope, decoded from JSON",
        )
        _expect(record.key == event.key, provider, f"{action}: ConsumedRecord.key is {record.key!r}, not {event.key!r}")
        _expect(
            isinstance(record.headers, dict)
            and all(record.headers.get(name) == value for name, value in event.headers.items()),
            provider,
            f"{action}: ConsumedRecord.headers {record.headers!r} lack the published headers {event.headers!r}",
        )
    offsets = [record.offset for record in records]
    _expect(
        offsets == sorted(set(offsets)), provider, f"{action}: offsets {offsets} within one partition must increase"
    )


def _check_consume(
    harness: ProviderHarness,
    provider: Any,
    stream: str,
    group: str,
    key: str,
    tenant: str,
    wait: float,
    settle: float,
) -> None:
    for hook_name in ("commit", "unsubscribe"):
        _expect(
            harness.implements(provider, hook_name),
            provider,
            f"implements consume() but not {hook_name}(): the hub needs all three to run a subscription",
        )
    events = [_contract_event(tenant, stream, key, sequence, "consume") for sequence in range(5)]
    for event in events:
        _check_publish_result(provider, harness.call(provider, "publish", event=event), stream, "publish()")
    subscription = Subscription(name=_unique("contract-subscription"), tenant=tenant, group=group, topics=(stream,))
    try:
        first = _collect(harness, provider, subscription, 2, wait, max_records=2)
        _expect(
            len(first) >= 2, provider, f"consume() delivered {len(first)} of 5 published records within {wait:.0f} s"
        )
        alive = harness.call(provider, "consume", subscription=subscription, max_records=0, timeout=0)
        _expect(alive == [], provider, f"consume(max_records=0) (a keep-alive) returned {alive!r}, expected []")
        rest = _collect(harness, provider, subscription, 5 - len(first), wait)
        delivered = first + rest
        _check_delivered(provider, delivered, events, "the first reading of 5 records")
        again = _collect(harness, provider, subscription, 0, settle)
        _expect(not again, provider, f"consume() delivered {_describe_records(again)} again without an unsubscribe")

        committed = delivered[2].next_offset
        _expect(
            committed == PartitionOffset(stream, delivered[2].partition, delivered[2].offset + 1),
            provider,
            "ConsumedRecord.next_offset must be the offset after the record",
        )
        harness.call(provider, "commit", subscription=subscription, offsets=[committed])
        harness.call(provider, "unsubscribe", subscription=subscription)
        redelivered = _collect(harness, provider, subscription, 2, wait)
        redelivered += _collect(harness, provider, subscription, 0, settle)
        _check_delivered(provider, redelivered, events[3:], "after commit of 3 records and unsubscribe")

        harness.call(provider, "commit", subscription=subscription, offsets=[redelivered[-1].next_offset])
        harness.call(provider, "unsubscribe", subscription=subscription)
        after_all = _collect(harness, provider, subscription, 0, settle)
        _expect(
            not after_all,
            provider,
            f"after committing every record, consume() delivered {_describe_records(after_all)} again",
        )
    finally:
        harness.call(provider, "unsubscribe", subscription=subscription)
        harness.call(provider, "unsubscribe", subscription=subscription)  # twice: not an error


def _check_consumer_groups(harness: ProviderHarness, provider: Any, group: str | None, stream: str | None) -> None:
    groups = harness.call(provider, "consumer_groups")
    _expect(isinstance(groups, list), provider, f"consumer_groups() returned {groups!r}, not a list")
    for found in groups:
        _expect(isinstance(found, ConsumerGroup), provider, f"consumer_groups() listed {found!r}, not a ConsumerGroup")
        _expect(
            isinstance(found.group_id, str) and found.group_id, provider, "ConsumerGroup.group_id must be non-empty"
        )
        _expect(
            isinstance(found.state, str) and found.state, provider, f"group {found.group_id}: state must be non-empty"
        )
        _expect(
            all(isinstance(member, GroupMember) for member in found.members),
            provider,
            f"group {found.group_id}: members must be GroupMember objects",
        )
        _expect(
            all(isinstance(name, str) for name in found.topics),
            provider,
            f"group {found.group_id}: topics must be strings",
        )
        for lag in found.partitions:
            _expect(
                isinstance(lag, PartitionLag),
                provider,
                f"group {found.group_id}: partitions must be PartitionLag objects",
            )
            _expect(lag.lag is None or lag.lag >= 0, provider, f"group {found.group_id}: lag {lag.lag} is negative")
    if group is None or stream is None:
        return
    ours = next((found for found in groups if found.group_id == group), None)
    _expect(
        ours is not None, provider, f"consumer_groups() does not list the group {group!r} that just committed offsets"
    )
    assert ours is not None
    _expect(stream in ours.topics, provider, f"group {group}: topics {ours.topics} lack {stream!r}, which it consumed")
    lags = [lag for lag in ours.partitions if lag.topic == stream and lag.committed is not None]
    _expect(lags, provider, f"group {group}: no partition of {stream!r} shows a committed offset")
    _expect(
        sum(lag.committed or 0 for lag in lags) == 5,
        provider,
        f"group {group}: committed offsets {lags} do not add up to 5",
    )
    _expect(
        all(lag.lag in (None, 0) for lag in lags),
        provider,
        f"group {group}: everything was committed, but lag is {lags}",
    )


def _check_reset_offsets(
    harness: ProviderHarness,
    provider: Any,
    stream: str,
    group: str,
    key: str,
    tenant: str,
    wait: float,
    settle: float,
) -> None:
    # The events _check_consume published, read back from the start after the first reset.
    subscription = Subscription(name=_unique("contract-subscription"), tenant=tenant, group=group, topics=(stream,))

    def reset(to: OffsetReset) -> list[PartitionOffset]:
        moved = harness.call(provider, "reset_offsets", group=group, topic=stream, to=to)
        _expect(isinstance(moved, list), provider, f"reset_offsets(to={to.to!r}) returned {moved!r}, not a list")
        _expect(
            moved and all(isinstance(offset, PartitionOffset) and offset.topic == stream for offset in moved),
            provider,
            f"reset_offsets(to={to.to!r}) returned {moved!r}: list the new PartitionOffset of each partition moved",
        )
        return moved

    try:
        moved = reset(OffsetReset("earliest"))
        everything = _collect(harness, provider, subscription, 5, wait)
        everything += _collect(harness, provider, subscription, 0, settle)
        _expect(
            len(everything) == 5,
            provider,
            f"after a reset to earliest, consume() delivered {len(everything)} of 5 records",
        )
        partition = everything[0].partition
        _expect(
            [offset.offset for offset in moved if offset.partition == partition] == [everything[0].offset],
            provider,
            f"reset to earliest returned {moved}, but the first record is at {everything[0].offset}",
        )
        harness.call(provider, "unsubscribe", subscription=subscription)

        moved = reset(OffsetReset("explicit", offsets={partition: everything[3].offset}))
        _expect(
            moved == [PartitionOffset(stream, partition, everything[3].offset)],
            provider,
            f"an explicit reset to offset {everything[3].offset} returned {moved}",
        )
        tail = _collect(harness, provider, subscription, 2, wait)
        tail += _collect(harness, provider, subscription, 0, settle)
        _expect(
            [record.offset for record in tail] == [record.offset for record in everything[3:]],
            provider,
            f"after an explicit reset to offset {everything[3].offset}, consume() delivered {_describe_records(tail)}",
        )
        _expect_error(
            InUseError,
            provider,
            "reset_offsets() while the group has an active consumer",
            lambda: harness.call(provider, "reset_offsets", group=group, topic=stream, to=OffsetReset("earliest")),
        )
        harness.call(provider, "unsubscribe", subscription=subscription)

        end = everything[-1].offset + 1
        for to in (OffsetReset("timestamp", timestamp=datetime.now(UTC) + timedelta(days=1)), OffsetReset("latest")):
            moved = reset(to)
            _expect(
                [offset.offset for offset in moved if offset.partition == partition] == [end],
                provider,
                f"reset_offsets(to={to.to!r}) past the last record returned {moved}, expected offset {end}",
            )
        moved = reset(OffsetReset("timestamp", timestamp=datetime.now(UTC) - timedelta(days=1)))
        _expect(
            [offset.offset for offset in moved if offset.partition == partition] == [everything[0].offset],
            provider,
            f"reset_offsets(to='timestamp') a day back returned {moved}, expected offset {everything[0].offset}",
        )
        reset(OffsetReset("latest"))
        nothing = _collect(harness, provider, subscription, 0, settle)
        _expect(not nothing, provider, f"after a reset to latest, consume() delivered {_describe_records(nothing)}")
    finally:
        harness.call(provider, "unsubscribe", subscription=subscription)
