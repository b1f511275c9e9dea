"""Publish provider ``event-log``: an append-only event log in local JSON-lines files.

A stand-in for Kafka when the hub runs alone: one file per topic and partition
(``<directory>/<topic>-<partition>.jsonl``), one event per line, the offset being the line's zero-based
index. Events with the same key go to the same partition (crc32 of the key), so their order holds as it
would on a broker.

Writers take an exclusive ``flock`` on the file and compare its size with the size they last wrote, so
offsets stay right after a restart and with several hub processes writing the same directory.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

from marshmallow import Schema, fields, validate

from hub import hookimpl
from hub.builtins.local_files import directory_health, resolve_in_data_dir
from hub.capabilities import Event, HealthResult, Provider, ProviderContext, PublishResult, utcnow
from hub.errors import PermanentError

# Kafka's own rule, so a topic that works here also works on a real broker.
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")

_READ_CHUNK = 1 << 20


class EventLogSettings(Schema):
    directory = fields.String(load_default="events", validate=validate.Length(min=1))
    partitions = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1024))
    #: fsync after each event: an acknowledged event survives a power cut. Off trades that for speed.
    fsync = fields.Boolean(load_default=True)


@dataclass
class _LogFile:
    """What this process knows about one topic-partition file."""

    path: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Lines in the file (the next offset) as of ``size`` bytes; recounted when the size moved.
    lines: int = 0
    size: int = 0


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

    def log_path(self, topic: str, partition: int) -> Path:
        validate_topic(topic)
        return self.directory / f"{topic}-{partition}.jsonl"

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

    @hookimpl
    def publish(self, event: Event) -> PublishResult:
        validate_topic(event.topic)
        partition = self.partition_for(event.topic, event.key)
        log_file = self._log_file(self.log_path(event.topic, partition))
        self.directory.mkdir(parents=True, exist_ok=True)
        with log_file.lock, open(log_file.path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
            _catch_up(log_file, handle)
            offset = log_file.lines
            record = {
                "offset": offset,
                "partition": partition,
                "key": event.key,
                "headers": event.headers,
                "value": event.envelope(),
                "published_at": utcnow().isoformat(),
            }
            # json.dumps escapes newlines inside strings, so one event is always exactly one line.
            line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode("utf-8")
            handle.write(line)
            handle.flush()
            if self.fsync:
                os.fsync(handle.fileno())
            log_file.lines += 1
            log_file.size += len(line)
        return PublishResult(partition=partition, offset=str(offset), topic=event.topic)

    @hookimpl
    def consumer_groups(self) -> list[dict[str, Any]]:
        # Nothing consumes a local log through the hub.
        return []

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


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(EventLog)
