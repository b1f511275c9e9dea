"""The hub's schema migrations (Alembic), run from code: no alembic.ini, the scripts ship inside the package.

``hub db upgrade`` applies them (:func:`upgrade`). At start-up :func:`prepare_schema` creates the tables of a
fresh database directly and records it at the newest revision, so the embedded default needs no extra command;
a database whose revision is behind the code stops start-up with a clear message instead of failing later on a
missing column. A database created before migrations existed (tables, no version row) is adopted by
``hub db upgrade``: it is recorded at the initial revision, whose schema it has, and upgraded from there.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from hub.errors import HubError
from hub.records.base import Base

log = logging.getLogger("hub.migrations")

#: Prefixed like the hub's tables, so the hub can share a database (or schema) with an application using Alembic.
VERSION_TABLE = "hub_alembic_version"
#: The revision whose schema a database created by ``create_all`` before migrations existed has.
INITIAL_REVISION = "0001"
#: A table every hub database has had from the start: its presence without a version row means "adopt me".
ANCHOR_TABLE = "hub_records"
#: PostgreSQL advisory lock held while the schema is checked or changed, so two processes starting at once
#: on a fresh database do not both create it.
_PG_LOCK_KEY = 0x6875625F6462  # "hub_db"


class SchemaOutdatedError(HubError):
    """The database's schema revision is older than this hub's code."""


@dataclass(frozen=True)
class Upgraded:
    before: str | None
    after: str | None
    #: True when the database predated migrations and was recorded at the initial revision first.
    adopted: bool


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Autogenerate looks only at the hub's own tables: another application's tables in the same schema are
    not the hub's to drop."""
    if type_ == "table":
        return bool(name and name.startswith("hub_"))
    return True


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code: the scripts are this package's folder."""
    config = Config()
    config.set_main_option("script_location", os.path.dirname(os.path.abspath(__file__)))
    # Sequential, readable file names: versions/0002_add_something.py.
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache  # the scripts do not change while the process runs; start-up reads them once
def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = script_directory().get_current_head()
    assert head is not None, "hub/migrations/versions holds no revision"
    return head


def history() -> list[Script]:
    """Every revision, newest first."""
    return list(script_directory().walk_revisions())


def current_revision(connection: Connection) -> str | None:
    """The database's revision; None when it has no version row (empty, or created before migrations)."""
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def predates_migrations(connection: Connection) -> bool:
    """Tables from ``create_all`` but no version row: a database made before migrations existed."""
    return current_revision(connection) is None and inspect(connection).has_table(ANCHOR_TABLE)


def upgrade(engine: Engine, revision: str = "head") -> Upgraded:
    """Apply the migrations up to ``revision``, in one transaction where the database allows (PostgreSQL)."""
    with engine.begin() as connection:
        _lock(connection)
        before = current_revision(connection)
        adopted = before is None and inspect(connection).has_table(ANCHOR_TABLE)
        config = alembic_config(connection)
        if adopted:
            # Its tables exist already (every start-up ran create_all on it, so it has every table this code
            # declares): running the migrations would fail on the first CREATE TABLE. Tables it still lacks are
            # created, then it is recorded at the newest revision.
            Base.metadata.create_all(connection)
            command.stamp(config, "head")
            log.info("database predates migrations: recorded at revision %s", head_revision())
        command.upgrade(config, revision)
        return Upgraded(before, current_revision(connection), adopted)


def new_revision(engine: Engine, message: str) -> str:
    """Write ``versions/<next>_<message>.py`` with what the models have and the (upgraded) database lacks;
    for a source checkout. Returns the file's path."""
    with engine.begin() as connection:
        next_id = f"{int(head_revision()) + 1:04d}"
        scripts = command.revision(alembic_config(connection), message, autogenerate=True, rev_id=next_id)
    script_directory.cache_clear()
    created = scripts[0] if isinstance(scripts, list) else scripts
    assert created is not None
    return str(created.path)


def prepare_schema(engine: Engine) -> None:
    """At start-up: create a fresh database's tables and record it at the newest revision; check a migrated
    database is not behind the code. A database from before migrations keeps getting ``create_all`` (its
    missing tables created, as it always did) until ``hub db upgrade`` adopts it."""
    with engine.begin() as connection:
        _lock(connection)
        revision = current_revision(connection)
        if revision is None:
            existed = inspect(connection).has_table(ANCHOR_TABLE)
            Base.metadata.create_all(connection)
            if existed:
                log.info("database not under migrations yet: run 'hub db upgrade' to adopt it")
            else:
                # Created as the models say now, which is the newest revision: a later upgrade applies only newer ones.
                MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).stamp(script_directory(), "head")
            return
        head = head_revision()
        if revision == head:
            return
        try:
            script_directory().get_revision(revision)
        except CommandError:
            # Written by a newer hub (a rolling deploy, or a downgrade of the code): its schema is a superset.
            log.warning("database schema revision %s is unknown to this hub (newest known: %s)", revision, head)
            return
        raise SchemaOutdatedError(f"database schema is at revision {revision}, this hub needs {head}: run 'hub db upgrade'")


def _lock(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
