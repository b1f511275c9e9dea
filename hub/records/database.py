"""The engine and sessions (SQLite by default, PostgreSQL by URL), and the queries several modules share."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from hub.records.base import utcnow
from hub.records.core import Record


def insert_ignoring_duplicates(session: Session, table: Any) -> Any:
    """An INSERT that skips rows whose key exists, in the session's dialect: a provider may reuse an id (a
    retried send, the same payment found again), and failing after the work was done would redo it."""
    return _insert_ignoring_duplicates_for(session.get_bind().dialect.name, table)


@functools.cache  # built once per dialect and table: it is on every send's and payment's path
def _insert_ignoring_duplicates_for(dialect: str, table: Any) -> Any:
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        return insert(table).prefix_with("IGNORE")  # MySQL/MariaDB
    return dialect_insert(table).on_conflict_do_nothing()


def normalise_database_url(url: str | None, data_dir: str) -> str:
    if not url:
        return f"sqlite:///{os.path.join(data_dir, 'hub.db')}"
    # Plain postgresql:// means psycopg2 to SQLAlchemy; we ship psycopg 3.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Database:
    """The engine and session factory, plus the few queries several modules share."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
            _serialise_sqlite_writers(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_all(self) -> None:
        """Make the schema ready at start-up: a fresh database gets its tables (recorded at the newest
        migration), a migrated one is checked to be current (see :func:`hub.migrations.prepare_schema`)."""
        from hub.migrations import prepare_schema  # Alembic is needed only here, and hub.migrations imports records

        prepare_schema(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self.sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def claim(self, record_id: str, lease_seconds: int) -> Record | None:
        """Atomically move a record to ``running`` for this worker; None if another worker holds it or
        it is already finished. This is what makes a job run once even if it was queued twice."""
        now = utcnow()
        with self.session() as session:
            claimed = session.execute(
                update(Record)
                .where(Record.id == record_id)
                .where(
                    (Record.status == "queued")
                    | ((Record.status == "running") & ((Record.lease_until.is_(None)) | (Record.lease_until < now)))
                )
                .values(status="running", lease_until=now + timedelta(seconds=lease_seconds), attempts=Record.attempts + 1)
                # The claimed row in the same round trip (one fewer statement for every job).
                .returning(Record)
            ).scalar_one_or_none()
            return claimed

    def unfinished(self, older_than_seconds: float = 0) -> list[str]:
        """Records that were accepted but not finished: queued ones, and running ones whose lease lapsed
        (their worker died). Used at start-up and periodically so nothing accepted is lost."""
        now = utcnow()
        cutoff = now - timedelta(seconds=older_than_seconds)
        with self.session() as session:
            rows = session.execute(
                select(Record.id).where(
                    # A queued record with a future lease is a retry scheduled for later.
                    ((Record.status == "queued") & (Record.updated_at <= cutoff) & ((Record.lease_until.is_(None)) | (Record.lease_until < now)))
                    | ((Record.status == "running") & (Record.lease_until < now))
                )
            )
            return [row[0] for row in rows]

    def leases_ending(self, within_seconds: float) -> list[tuple[str, float]]:
        """Running records whose lease ends within ``within_seconds``: (id, seconds left). A live worker keeps
        renewing its lease; a killed one's runs out, and the record can be taken over right then."""
        now = utcnow()
        with self.session() as session:
            rows = session.execute(
                select(Record.id, Record.lease_until).where(
                    (Record.status == "running") & (Record.lease_until >= now) & (Record.lease_until < now + timedelta(seconds=within_seconds))
                )
            )
            return [(record_id, (lease_until - now).total_seconds()) for record_id, lease_until in rows]

    def renew_lease(self, record_id: str, lease_seconds: float, attempt: int) -> bool:
        """Push a running record's lease forward; False when it is no longer this claim's (settled, or taken
        over: every claim counts an attempt, so ``attempt`` is the claim's fencing token)."""
        now = utcnow()
        with self.session() as session:
            renewed = session.execute(
                update(Record)
                .where(Record.id == record_id, Record.status == "running", Record.attempts == attempt)
                .values(lease_until=now + timedelta(seconds=lease_seconds))
            ).rowcount
        return bool(renewed)


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _serialise_sqlite_writers(engine: Engine) -> None:
    """SQLite has one writer at a time; a thread that finds the database locked sleeps in SQLite's busy
    handler (1, 2, 5... 100 ms steps), which under concurrency costs far more than the writes. So the
    threads of one process take turns with a lock from their first write statement until the driver's
    COMMIT or ROLLBACK has returned, and SQLite's own locking only arbitrates between processes."""
    lock = threading.Lock()
    holder = threading.local()  # a session's statements and its commit run on one thread
    dialect = engine.dialect

    def before_execute(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not getattr(holder, "writing", False) and statement.lstrip()[:7].upper().startswith(_WRITES):
            lock.acquire()
            holder.writing = True

    def released(end_transaction: Any) -> Any:
        def end(dbapi_connection: Any) -> None:
            try:
                end_transaction(dbapi_connection)
            finally:
                if getattr(holder, "writing", False):
                    holder.writing = False
                    lock.release()

        return end

    event.listen(engine, "before_cursor_execute", before_execute)
    # The engine's commit event fires before the driver's COMMIT: release only once it has returned.
    dialect.do_commit = released(dialect.do_commit)  # type: ignore[method-assign]
    dialect.do_rollback = released(dialect.do_rollback)  # type: ignore[method-assign]


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    # WAL lets the CLI, the API threads and the workers read while one writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Truncate the WAL after a checkpoint: under steady load it otherwise keeps its largest size for good.
    cursor.execute("PRAGMA journal_size_limit=16777216")
    cursor.close()
