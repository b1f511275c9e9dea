"""Publish provider ``event-log``: an append-only event log in local JSON-lines files.

A stand-in for Kafka when the hub runs alone: one file per topic and partition
(``<directory>/<topic>-<partition>.jsonl``), one event per line, the offset being the line's zero-based
index. Events with the same key go to the same partition (crc32 of the key), so their order holds as it
would on a broker.

Writers take an exclusive ``flock`` on the file and compare its size with the size they last wrote, so
offsets stay right after a restart and with several hub processes writing the same directory.

Subscriptions consume from it too (``consume``/``commit``/``unsubscribe``): a consumer reads complete lines
from its position in each partition file (a half-written last line is left for later), and consumer
groups' committed offsets live in ``consumer-offsets.db`` beside the logs (see
:mod:`hub.builtins.event_log_offsets`). Every member of a group reads every partition: the hub's lease
makes sure one process consumes a subscription at a time.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import re
import secrets
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ClassVar

from marshmallow import Schema, fields, validate

from hub import hookimpl
from hub.builtins.event_log_offsets import OffsetStore
from hub.builtins.local_files import directory_health, resolve_in_data_dir
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
    utcnow,
)
from hub.errors import InUseError, PermanentError, TransientError

# Kafka's own rule, so a topic that works here also works on a real broker.
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")

_READ_CHUNK = 1 << 20
#: Consumers read smaller pieces: a batch of records rarely needs a megabyte.
_CONSUME_CHUNK = 1 << 16
_OFFSET_PREFIX = re.compile(rb'\{"offset":(\d+),')
#: How often a consumer refreshes its heartbeat and checks whether its group's offsets were reset.
_HEARTBEAT_SECONDS = 1.0
#: How long ``consume`` sleeps between looks at the files while it waits for records.
_POLL_SECONDS = 0.05


class EventLogSettings(Schema):
    directory = fields.String(load_default="events", validate=validate.Length(min=1))
    partitions = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1024))
    #: fsync after each event: an acknowledged event survives a power cut. Off trades that for speed.
    fsync = fields.Boolean(load_default=True)
    #: Seconds after its last heartbeat (a ``consume`` call) that a consumer counts as gone.
    session_timeout = fields.Float(load_default=10.0, validate=validate.Range(min=0.5))


@dataclass
class _LogFile:
    """What this process knows about one topic-partition file."""

    path: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Lines in the file (the next offset) as of ``size`` bytes; recounted when the size moved.
    lines: int = 0
    size: int = 0


@dataclass
class _LineCount:
    """A consumer's view of a file's end (no truncation, unlike a writer's :class:`_LogFile`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    size: int = 0
    lines: int = 0
    end: int = 0


@dataclass
class _Position:
    """The next offset a consumer reads in one partition, and the byte its line starts at."""

    offset: int
    byte: int | None
    #: Whether ``byte`` is known to be where line ``offset`` starts (a committed hint is checked first).
    verified: bool


@dataclass
class _Consumer:
    """One subscription's consumer in this process."""

    subscription: Subscription
    member_id: str
    #: The group's generation when it joined; a reset since makes its positions stale.
    generation: int
    positions: dict[tuple[str, int], _Position]
    #: (host, assignment) written with each heartbeat.
    member_info: tuple[str, dict[str, list[int]]]
    #: (topic, partition, next offset) -> byte position, for the records the last consume returned.
    hints: dict[tuple[str, int, int], int] = field(default_factory=dict)
    heartbeat_at: float = 0.0
    rotation: int = 0

    def byte_hint(self, offset: PartitionOffset) -> int | None:
        hint = self.hints.get((offset.topic, offset.partition, offset.offset))
        position = self.positions.get((offset.topic, offset.partition))
        if hint is None and position is not None and position.verified and position.offset == offset.offset:
            hint = position.byte
        return hint


#: Topics longer than this are stored under a shortened name: Kafka allows 249 characters, a file name 255
#: bytes, and ``-<partition>.jsonl`` (and a temporary file's affixes) must fit beside it.
_LONGEST_FILE_TOPIC = 200


def _file_stem(topic: str) -> str:
    """The topic's part of its files' names: the topic, or for a long one its start and a hash ('~' is not
    a topic character, so a shortened name never equals a real topic)."""
    if len(topic) <= _LONGEST_FILE_TOPIC:
        return topic
    return f"{topic[:_LONGEST_FILE_TOPIC - 17]}~{hashlib.sha256(topic.encode()).hexdigest()[:16]}"


def validate_topic(topic: str) -> None:
    if not isinstance(topic, str) or not _TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
        raise PermanentError(
            f"event-log: invalid topic name {topic!r}: use 1-249 characters among letters, digits, '.', '_' and '-'"
        )


class EventLog(Provider):
    type_name = "event-log"
    capability = "publish"
    settings_schema: ClassVar[type[Schema]] = EventLogSettings
    description = "Appends events to local JSON-lines files, one per topic and partition."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self.directory = resolve_in_data_dir(settings["directory"], context.data_dir)
        self.partitions: int = settings["partitions"]
        self.fsync: bool = settings["fsync"]
        self._files: dict[Path, _LogFile] = {}
        self._files_lock = threading.Lock()
        self._round_robin: dict[str, Iterator[int]] = {}
        self.offsets = OffsetStore(self.directory / "consumer-offsets.db", settings.get("session_timeout", 10.0))
        self._consumers: dict[Subscription, _Consumer] = {}
        self._consumers_lock = threading.Lock()
        self._ends: dict[Path, _LineCount] = {}

    def log_path(self, topic: str, partition: int) -> Path:
        validate_topic(topic)
        return self.directory / f"{_file_stem(topic)}-{partition}.jsonl"

    def partition_for(self, topic: str, key: str | None) -> int:
        if self.partitions == 1:
            return 0
        if key is not None:
            # crc32, not hash(): the same key must map to the same partition in every process and run.
            return zlib.crc32(key.encode("utf-8")) % self.partitions
        with self._files_lock:
            counter = self._round_robin.setdefault(topic, itertools.cycle(range(self.partitions)))
            return next(counter)

    def _log_file(self, path: Path) -> _LogFile:
        with self._files_lock:
            log_file = self._files.get(path)
            if log_file is None:
                log_file = self._files[path] = _LogFile(path)
            return log_file

    # --- publishing -------------------------------------------------------------------------------

    @hookimpl
    def publish(self, event: Event) -> PublishResult:
        validate_topic(event.topic)
        return self._append(event.topic, self.partition_for(event.topic, event.key), [event])[0]

    @hookimpl
    def publish_batch(self, events: list[Event]) -> list[PublishResult]:
        for event in events:
            validate_topic(event.topic)  # an invalid topic refuses the whole batch before anything is written
        by_file: dict[tuple[str, int], list[int]] = {}
        for index, event in enumerate(events):
            by_file.setdefault((event.topic, self.partition_for(event.topic, event.key)), []).append(index)
        results: list[PublishResult] = [PublishResult.failed(event.topic, "not written") for event in events]
        errors: list[OSError] = []
        for (topic, partition), indexes in by_file.items():
            try:
                written = self._append(topic, partition, [events[index] for index in indexes])
            except OSError as error:  # this file only: the others' events are written
                errors.append(error)
                for index in indexes:
                    results[index] = PublishResult.failed(topic, f"event-log: {error.strerror or error}")
                continue
            for index, result in zip(indexes, written, strict=True):
                results[index] = result
        if events and len(errors) == len(by_file):
            raise TransientError(f"event-log: nothing written: {errors[0].strerror or errors[0]}")
        return results

    def _append(self, topic: str, partition: int, events: list[Event]) -> list[PublishResult]:
        """Append ``events`` to one partition file under its flock, with one write and one fsync."""
        log_file = self._log_file(self.log_path(topic, partition))
        self.directory.mkdir(parents=True, exist_ok=True)
        with log_file.lock, open(log_file.path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
            _catch_up(log_file, handle)
            first = log_file.lines
            published_at = utcnow().isoformat()
            lines = []
            for number, event in enumerate(events):
                # "offset" first: a consumer checks a resumed position by this prefix (see _offset_at).
                record = {
                    "offset": first + number,
                    "partition": partition,
                    "key": event.key,
                    "headers": event.headers,
                    "value": event.envelope(),
                    "published_at": published_at,
                }
                # json.dumps escapes newlines inside strings, so one event is always exactly one line.
                lines.append((json.dumps(record, separators=(",", ":"), default=str) + "\n").encode("utf-8"))
            data = b"".join(lines)
            handle.write(data)
            handle.flush()
            if self.fsync:
                os.fsync(handle.fileno())
            log_file.lines += len(events)
            log_file.size += len(data)
        return [PublishResult(partition=partition, offset=str(first + n), topic=topic) for n in range(len(events))]

    # --- consuming --------------------------------------------------------------------------------

    @hookimpl
    def consume(self, subscription: Subscription, max_records: int, timeout: float) -> list[ConsumedRecord]:
        for topic in subscription.topics:
            validate_topic(topic)
        consumer = self._consumer(subscription)
        if time.monotonic() - consumer.heartbeat_at >= _HEARTBEAT_SECONDS:
            consumer = self._heartbeat(consumer)
        if max_records <= 0:
            return []  # a keep-alive: the heartbeat above is all it asks for
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            records = self._read_available(consumer, max_records)
            remaining = deadline - time.monotonic()
            if records or remaining <= 0:
                return records
            time.sleep(min(_POLL_SECONDS, remaining))

    @hookimpl
    def commit(self, subscription: Subscription, offsets: list[PartitionOffset]) -> None:
        for position in offsets:
            validate_topic(position.topic)
            if position.partition < 0 or position.offset < 0:
                raise PermanentError(f"event-log: cannot commit {position}: partitions and offsets are >= 0")
        with self._consumers_lock:
            consumer = self._consumers.get(subscription)
        rows = [(o.topic, o.partition, o.offset, consumer.byte_hint(o) if consumer else None) for o in offsets]
        stale = False
        with self.offsets.connect(write=True) as connection:
            if consumer is not None:
                stale = self.offsets.generation(connection, subscription.group) != consumer.generation
            if not stale:
                self.offsets.write_offsets(connection, subscription.group, rows)
                if consumer is not None:
                    self.offsets.heartbeat(connection, subscription.group, consumer.member_id, *consumer.member_info)
                    consumer.heartbeat_at = time.monotonic()
        if stale:
            self._drop(subscription)
            raise TransientError(
                f"event-log: the offsets of group {subscription.group!r} were reset after this consumer joined; "
                "consume again from the new offsets"
            )

    @hookimpl
    def unsubscribe(self, subscription: Subscription) -> None:
        self._drop(subscription)

    def _drop(self, subscription: Subscription) -> None:
        with self._consumers_lock:
            consumer = self._consumers.pop(subscription, None)
        if consumer is not None:
            with self.offsets.connect(write=True) as connection:
                self.offsets.leave(connection, subscription.group, consumer.member_id)

    def _consumer(self, subscription: Subscription) -> _Consumer:
        with self._consumers_lock:
            consumer = self._consumers.get(subscription)
        return consumer if consumer is not None else self._join(subscription)

    def _join(self, subscription: Subscription) -> _Consumer:
        """Join the group: positions from its committed offsets, or ``start`` -- committed at once, so a
        restart resumes there rather than resolving ``latest`` again."""
        assignment = {topic: self._partitions(topic) for topic in subscription.topics}
        member = f"{socket.gethostname()}:{os.getpid()}:{self.name}:{secrets.token_hex(3)}"
        positions: dict[tuple[str, int], _Position] = {}
        starts: list[tuple[str, int, int, int | None]] = []
        with self.offsets.connect(write=True) as connection:
            generation = self.offsets.touch_group(connection, subscription.group, subscription.topics)
            committed = self.offsets.committed(connection, subscription.group, subscription.topics)
            for topic, partitions in assignment.items():
                for partition in partitions:
                    found = committed.get((topic, partition))
                    if found is not None:
                        positions[(topic, partition)] = _Position(found.next_offset, found.byte_position, verified=False)
                        continue
                    offset, byte = (0, 0) if subscription.start == "earliest" else self._end(self.log_path(topic, partition))
                    positions[(topic, partition)] = _Position(offset, byte, verified=True)
                    starts.append((topic, partition, offset, byte))
            self.offsets.write_offsets(connection, subscription.group, starts)
            self.offsets.live_members(connection, subscription.group, prune=True)
            consumer = _Consumer(subscription, member, generation, positions, member_info=(socket.gethostname(), assignment))
            self.offsets.heartbeat(connection, subscription.group, member, *consumer.member_info)
        consumer.heartbeat_at = time.monotonic()
        with self._consumers_lock:
            self._consumers[subscription] = consumer
        return consumer

    def _heartbeat(self, consumer: _Consumer) -> _Consumer:
        subscription = consumer.subscription
        with self.offsets.connect(write=True) as connection:
            current = self.offsets.generation(connection, subscription.group) == consumer.generation
            if current:
                self.offsets.heartbeat(connection, subscription.group, consumer.member_id, *consumer.member_info)
        if current:
            consumer.heartbeat_at = time.monotonic()
            return consumer
        self.log.info("offsets of group %s were reset: starting from the new ones", subscription.group)
        self._drop(subscription)
        return self._join(subscription)

    def _read_available(self, consumer: _Consumer, max_records: int) -> list[ConsumedRecord]:
        keys = list(consumer.positions)
        records: list[ConsumedRecord] = []
        hints: dict[tuple[str, int, int], int] = {}
        for step in range(len(keys)):  # rotate the first partition so none is starved
            if len(records) >= max_records:
                break
            key = keys[(consumer.rotation + step) % len(keys)]
            records += self._read_partition(key, consumer.positions[key], max_records - len(records), hints)
        consumer.rotation += 1
        if records:
            consumer.hints = hints
        return records

    def _read_partition(
        self, key: tuple[str, int], position: _Position, limit: int, hints: dict[tuple[str, int, int], int]
    ) -> list[ConsumedRecord]:
        topic, partition = key
        path = self.log_path(topic, partition)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return []
        if not position.verified and not self._place(path, position):
            return []
        if position.byte is None or size <= position.byte:
            return []
        records: list[ConsumedRecord] = []
        with open(path, "rb") as handle:
            handle.seek(position.byte)
            pending = b""
            while len(records) < limit and (chunk := handle.read(_CONSUME_CHUNK)):
                pending += chunk
                start = 0
                while len(records) < limit and (newline := pending.find(b"\n", start)) != -1:
                    # Only complete lines: a last line without its newline is still being written.
                    records.append(self._record(path, topic, partition, position.offset, pending[start:newline]))
                    position.offset += 1
                    position.byte += newline + 1 - start
                    hints[(topic, partition, position.offset)] = position.byte
                    start = newline + 1
                pending = pending[start:]
        return records

    def _record(self, path: Path, topic: str, partition: int, offset: int, line: bytes) -> ConsumedRecord:
        try:
            data = json.loads(line)
            written_offset = data["offset"]
        except (ValueError, KeyError, TypeError):
            raise PermanentError(f"event-log: line {offset} of {path.name} is not an event") from None
        if written_offset != offset:
            raise PermanentError(f"event-log: line {offset} of {path.name} says offset {written_offset}: edited by hand?")
        published = data.get("published_at")
        return ConsumedRecord(
            topic=topic,
            partition=partition,
            offset=offset,
            value=data.get("value"),
            key=data.get("key"),
            headers=dict(data.get("headers") or {}),
            timestamp=datetime.fromisoformat(published) if published else None,
        )

    def _place(self, path: Path, position: _Position) -> bool:
        """Find where line ``position.offset`` starts: the committed byte hint when it checks out, else by
        counting lines. False while the file does not have that many lines yet."""
        with open(path, "rb") as handle:
            if position.byte is not None and _hint_matches(handle, position.byte, position.offset):
                position.verified = True
                return True
        byte = _byte_of(path, position.offset)
        if byte is None:
            return False
        position.byte, position.verified = byte, True
        return True

    # --- groups -----------------------------------------------------------------------------------

    @hookimpl
    def consumer_groups(self) -> list[ConsumerGroup]:
        if not self.offsets.path.exists():
            return []
        groups = self.offsets.groups()
        committed = self.offsets.all_committed()
        with self.offsets.connect() as connection:
            members = self.offsets.live_members(connection)
        result = []
        for group_id, topics in groups.items():
            group_members = [
                GroupMember(member.member_id, client_id=self.name, host=member.host, assignment=member.assignment)
                for member in members
                if member.group_id == group_id
            ]
            offsets = committed.get(group_id, {})
            partitions = []
            for topic in topics:
                numbers = set(self._partitions(topic)) | {number for (name, number) in offsets if name == topic}
                for number in sorted(numbers):
                    found = offsets.get((topic, number))
                    end, _ = self._end(self.log_path(topic, number))
                    partitions.append(PartitionLag(topic, number, found.next_offset if found else None, end))
            state = "Stable" if group_members else "Empty"
            result.append(ConsumerGroup(group_id, state, group_members, list(topics), partitions))
        return result

    @hookimpl
    def reset_offsets(self, group: str, topic: str, to: OffsetReset) -> list[PartitionOffset]:
        validate_topic(topic)
        partitions = self._partitions(topic)
        with self.offsets.connect(write=True) as connection:
            active = self.offsets.live_members(connection, group, prune=True)
            if active:
                raise InUseError(
                    f"event-log: consumer group {group!r} has {len(active)} active member(s); stop its consumers first"
                )
            targets = [(topic, number, *self._reset_target(topic, number, to)) for number in self._reset_partitions(partitions, to)]
            self.offsets.write_offsets(connection, group, targets)
            self.offsets.touch_group(connection, group, [topic], bump=True)
        return [PartitionOffset(topic, number, offset) for _, number, offset, _ in targets]

    @hookimpl
    def delete_consumer_group(self, group: str) -> bool:
        if not self.offsets.path.exists():
            return False
        with self.offsets.connect(write=True) as connection:
            active = self.offsets.live_members(connection, group, prune=True)
            if active:
                raise InUseError(f"event-log: consumer group {group!r} has {len(active)} active member(s); stop its consumers first")
            deleted = connection.execute("DELETE FROM groups WHERE group_id = ?", (group,)).rowcount
            deleted += connection.execute("DELETE FROM offsets WHERE group_id = ?", (group,)).rowcount
        return deleted > 0

    @hookimpl
    def list_topics(self) -> list[str]:
        names = set()
        for path in self.directory.glob("*.jsonl"):
            stem, _, number = path.name[: -len(".jsonl")].rpartition("-")
            if number.isdigit() and stem:
                names.add(stem)  # a very long topic shows as its shortened file name (with "~")
        return sorted(names)

    @hookimpl
    def create_topic(self, topic: TopicSpec) -> bool:
        validate_topic(topic.name)
        existed = any(self.log_path(topic.name, number).exists() for number in self._partitions(topic.name))
        for number in range(max(topic.partitions or self.partitions, 1)):
            self.log_path(topic.name, number).touch(exist_ok=True)
        return not existed

    def _reset_partitions(self, partitions: list[int], to: OffsetReset) -> list[int]:
        if to.to != "explicit":
            return partitions
        unknown = sorted(set(to.offsets) - set(partitions))
        if unknown:
            raise PermanentError(f"event-log: no partition {unknown[0]} (the topic has {len(partitions)})")
        return sorted(to.offsets)

    def _reset_target(self, topic: str, partition: int, to: OffsetReset) -> tuple[int, int | None]:
        path = self.log_path(topic, partition)
        end, end_byte = self._end(path)
        if to.to == "earliest":
            return 0, 0
        if to.to == "latest":
            return end, end_byte
        if to.to == "explicit":
            offset = to.offsets[partition]
            if offset > end:
                raise PermanentError(f"event-log: offset {offset} is past the end of partition {partition} ({end})")
            return offset, _byte_of(path, offset)
        assert to.timestamp is not None
        return _first_at_or_after(path, to.timestamp) or (end, end_byte)

    # --- files ------------------------------------------------------------------------------------

    def _partitions(self, topic: str) -> list[int]:
        """The topic's partitions: the configured count, or more if files for more exist (another
        process configured more)."""
        prefix = f"{_file_stem(topic)}-"
        highest = self.partitions - 1
        for path in self.directory.glob(f"{prefix}*.jsonl"):
            number = path.name[len(prefix) : -len(".jsonl")]
            if number.isdigit():
                highest = max(highest, int(number))
        return list(range(highest + 1))

    def _end(self, path: Path) -> tuple[int, int]:
        """(complete lines, byte where the last complete line ends) of a log file, counted incrementally."""
        with self._files_lock:
            count = self._ends.setdefault(path, _LineCount())
        with count.lock:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                return 0, 0
            if size < count.size:  # replaced behind our back: count again
                count.size = count.lines = count.end = 0
            if size != count.size:
                with open(path, "rb") as handle:
                    handle.seek(count.end)
                    position = count.end
                    while chunk := handle.read(_READ_CHUNK):
                        count.lines += chunk.count(b"\n")
                        newline = chunk.rfind(b"\n")
                        if newline != -1:
                            count.end = position + newline + 1
                        position += len(chunk)
                count.size = position
            return count.lines, count.end

    @hookimpl
    def health(self) -> HealthResult:
        return directory_health(self.directory, "event log")


def _catch_up(log_file: _LogFile, handle: IO[bytes]) -> None:
    """Bring ``log_file.lines`` up to date with the file on disk (called holding the flock).

    The first call after start-up counts the whole file; later calls count only what another process
    appended. A last line without its newline is the remains of a writer that crashed mid-write (it was
    never acknowledged): it is cut off so the next event starts on its own line.
    """
    size = os.fstat(handle.fileno()).st_size
    if size == log_file.size:
        return
    if size < log_file.size:  # truncated or replaced behind our back: count again from the start
        log_file.lines, log_file.size = 0, 0
    handle.seek(log_file.size)
    position, last_newline_end = log_file.size, log_file.size
    while chunk := handle.read(_READ_CHUNK):
        log_file.lines += chunk.count(b"\n")
        newline = chunk.rfind(b"\n")
        if newline != -1:
            last_newline_end = position + newline + 1
        position += len(chunk)
    if last_newline_end < size:
        os.ftruncate(handle.fileno(), last_newline_end)
    log_file.size = last_newline_end


def _offset_at(handle: IO[bytes], byte: int) -> int | None:
    """The offset written at the start of the line beginning at ``byte``, or None (no complete line)."""
    handle.seek(byte)
    match = _OFFSET_PREFIX.match(handle.read(32))
    return int(match.group(1)) if match else None


def _hint_matches(handle: IO[bytes], byte: int, offset: int) -> bool:
    """Whether line ``offset`` starts at ``byte``: the line there says so, or (at the end of the file) the
    line before it is ``offset - 1``."""
    size = os.fstat(handle.fileno()).st_size
    if byte == 0 or byte > size:
        return byte == 0 and offset == 0
    handle.seek(byte - 1)
    if handle.read(1) != b"\n":
        return False
    found = _offset_at(handle, byte)
    if found is not None:
        return found == offset
    window = 4096
    while True:  # find the start of the line that ends at byte - 1
        start = max(0, byte - 1 - window)
        handle.seek(start)
        newline = handle.read(byte - 1 - start).rfind(b"\n")
        if newline != -1 or start == 0:
            return _offset_at(handle, start + newline + 1 if newline != -1 else 0) == offset - 1
        window *= 2


def _byte_of(path: Path, offset: int) -> int | None:
    """Where line ``offset`` of ``path`` starts, counting newlines; None if it has fewer complete lines."""
    if offset == 0:
        return 0
    seen, position = 0, 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_READ_CHUNK):
                count = chunk.count(b"\n")
                if seen + count >= offset:
                    cut = -1
                    for _ in range(offset - seen):
                        cut = chunk.index(b"\n", cut + 1)
                    return position + cut + 1
                seen += count
                position += len(chunk)
    except FileNotFoundError:
        return None
    return None


def _first_at_or_after(path: Path, timestamp: datetime) -> tuple[int, int] | None:
    """(offset, byte) of the first event published at or after ``timestamp``, or None."""
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    try:
        with open(path, "rb") as handle:
            byte = 0
            for offset, line in enumerate(handle):
                if not line.endswith(b"\n"):
                    return None
                published = json.loads(line).get("published_at")
                if published and datetime.fromisoformat(published) >= timestamp:
                    return offset, byte
                byte += len(line)
    except FileNotFoundError:
        return None
    return None


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(EventLog)
