"""The event log's consumer-group state: committed offsets, group generations and live members.

One SQLite file beside the logs (``<directory>/consumer-offsets.db``), in WAL mode, shared by every hub
process that uses the same directory. Each operation opens its own short connection and writes inside
``BEGIN IMMEDIATE``, so two processes committing at once serialise on SQLite's lock instead of losing an
update.

* ``offsets``: per (group, topic, partition) the next offset to consume, plus the byte position of that
  line in the log file as a hint (checked before use), so a consumer resumes without counting lines.
* ``groups``: a ``generation`` bumped by every offset reset; a consumer that joined before it refuses to
  commit (its in-memory positions are stale) and starts over from the new offsets.
* ``members``: live consumers, with a heartbeat; a member unseen for ``session_timeout`` seconds is gone.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    group_id TEXT PRIMARY KEY,
    generation INTEGER NOT NULL DEFAULT 0,
    topics TEXT NOT NULL DEFAULT '[]',
    updated_at REAL
);
CREATE TABLE IF NOT EXISTS offsets (
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    byte_position INTEGER,
    committed_at REAL,
    PRIMARY KEY (group_id, topic, partition)
);
CREATE TABLE IF NOT EXISTS members (
    group_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    host TEXT,
    assignment TEXT NOT NULL DEFAULT '{}',
    last_seen REAL NOT NULL,
    PRIMARY KEY (group_id, member_id)
);
"""


@dataclass
class Committed:
    next_offset: int
    byte_position: int | None


@dataclass
class Member:
    group_id: str
    member_id: str
    host: str | None
    assignment: dict[str, list[int]]


class OffsetStore:
    def __init__(self, path: Path, session_timeout: float) -> None:
        self.path = path
        self.session_timeout = session_timeout
        self._ready = False

    @contextlib.contextmanager
    def connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One short connection; ``write`` takes SQLite's write lock at once (``BEGIN IMMEDIATE``), so a
        read-then-write inside it cannot interleave with another process's."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            if not self._ready:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.executescript(_SCHEMA)
                self._ready = True
            connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        finally:
            connection.close()

    # --- groups -----------------------------------------------------------------------------------

    @staticmethod
    def generation(connection: sqlite3.Connection, group_id: str) -> int:
        row = connection.execute("SELECT generation FROM groups WHERE group_id = ?", (group_id,)).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def touch_group(connection: sqlite3.Connection, group_id: str, topics: Iterable[str], *, bump: bool = False) -> int:
        """Create or update the group's row (adding ``topics``); ``bump`` starts a new generation."""
        row = connection.execute("SELECT generation, topics FROM groups WHERE group_id = ?", (group_id,)).fetchone()
        known = set(json.loads(row[1])) if row else set()
        generation = (int(row[0]) if row else 0) + (1 if bump else 0)
        connection.execute(
            "INSERT INTO groups (group_id, generation, topics, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (group_id) DO UPDATE SET generation = excluded.generation, topics = excluded.topics, "
            "updated_at = excluded.updated_at",
            (group_id, generation, json.dumps(sorted(known | set(topics))), time.time()),
        )
        return generation

    def groups(self) -> dict[str, list[str]]:
        with self.connect() as connection:
            rows = connection.execute("SELECT group_id, topics FROM groups ORDER BY group_id").fetchall()
            extra = connection.execute("SELECT DISTINCT group_id, topic FROM offsets").fetchall()
        groups = {group_id: list(json.loads(topics)) for group_id, topics in rows}
        for group_id, topic in extra:
            topics = groups.setdefault(group_id, [])
            if topic not in topics:
                topics.append(topic)
        return {group_id: sorted(topics) for group_id, topics in groups.items()}

    # --- offsets ----------------------------------------------------------------------------------

    @staticmethod
    def committed(
        connection: sqlite3.Connection, group_id: str, topics: Iterable[str] | None = None
    ) -> dict[tuple[str, int], Committed]:
        rows = connection.execute(
            "SELECT topic, partition, next_offset, byte_position FROM offsets WHERE group_id = ?", (group_id,)
        ).fetchall()
        wanted = set(topics) if topics is not None else None
        return {
            (topic, partition): Committed(next_offset, byte_position)
            for topic, partition, next_offset, byte_position in rows
            if wanted is None or topic in wanted
        }

    def all_committed(self) -> dict[str, dict[tuple[str, int], Committed]]:
        with self.connect() as connection:
            rows = connection.execute("SELECT group_id, topic, partition, next_offset, byte_position FROM offsets").fetchall()
        result: dict[str, dict[tuple[str, int], Committed]] = {}
        for group_id, topic, partition, next_offset, byte_position in rows:
            result.setdefault(group_id, {})[(topic, partition)] = Committed(next_offset, byte_position)
        return result

    @staticmethod
    def write_offsets(
        connection: sqlite3.Connection, group_id: str, offsets: Iterable[tuple[str, int, int, int | None]]
    ) -> None:
        """Write (topic, partition, next offset, byte position or None) rows."""
        now = time.time()
        connection.executemany(
            "INSERT INTO offsets (group_id, topic, partition, next_offset, byte_position, committed_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (group_id, topic, partition) DO UPDATE SET "
            "next_offset = excluded.next_offset, byte_position = excluded.byte_position, "
            "committed_at = excluded.committed_at",
            [(group_id, topic, partition, offset, position, now) for topic, partition, offset, position in offsets],
        )

    # --- members ----------------------------------------------------------------------------------

    @staticmethod
    def heartbeat(
        connection: sqlite3.Connection,
        group_id: str,
        member_id: str,
        host: str | None = None,
        assignment: dict[str, list[int]] | None = None,
    ) -> None:
        if assignment is None:
            connection.execute(
                "UPDATE members SET last_seen = ? WHERE group_id = ? AND member_id = ?", (time.time(), group_id, member_id)
            )
            return
        connection.execute(
            "INSERT INTO members (group_id, member_id, host, assignment, last_seen) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (group_id, member_id) DO UPDATE SET host = excluded.host, assignment = excluded.assignment, "
            "last_seen = excluded.last_seen",
            (group_id, member_id, host, json.dumps(assignment), time.time()),
        )

    @staticmethod
    def leave(connection: sqlite3.Connection, group_id: str, member_id: str) -> None:
        connection.execute("DELETE FROM members WHERE group_id = ? AND member_id = ?", (group_id, member_id))

    def live_members(
        self, connection: sqlite3.Connection, group_id: str | None = None, *, prune: bool = False
    ) -> list[Member]:
        """Members seen within the session timeout; ``prune`` (in a write transaction) also deletes the
        older rows, left by processes that died."""
        cutoff = time.time() - self.session_timeout
        if prune:
            connection.execute("DELETE FROM members WHERE last_seen < ?", (cutoff,))
        query = "SELECT group_id, member_id, host, assignment FROM members WHERE last_seen >= ?"
        parameters: tuple[object, ...] = (cutoff,)
        if group_id is not None:
            query += " AND group_id = ?"
            parameters += (group_id,)
        rows = connection.execute(query + " ORDER BY group_id, member_id", parameters).fetchall()
        return [Member(group, member, host, json.loads(assignment)) for group, member, host, assignment in rows]

