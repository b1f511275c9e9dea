"""Alembic's environment for the hub: run by :mod:`hub.migrations` (``hub db ...``), never through alembic.ini.

The caller hands over an open connection in ``config.attributes["connection"]``, so migrations run on the hub's
own engine (with its SQLite pragmas) and inside the caller's transaction.
"""

from __future__ import annotations

from alembic import context

from hub.migrations import VERSION_TABLE, include_object
from hub.records import Base

config = context.config
options = {
    "target_metadata": Base.metadata,
    "version_table": VERSION_TABLE,
    "include_object": include_object,
    "compare_type": True,
}

connection = config.attributes["connection"]
# SQLite cannot ALTER most things in place: batch mode copies the table instead.
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite", **options)
with context.begin_transaction():
    context.run_migrations()
