"""``hub db``: the database schema's migrations (Alembic, shipped in :mod:`hub.migrations`).

``hub db upgrade`` brings the database named by hub.yaml (``database_url``, else SQLite in ``data_dir``) to the
newest revision; run it before starting a new version of the hub on PostgreSQL. ``hub db current`` and
``hub db history`` say where it is and what exists; ``hub db revision -m ...`` writes a new migration from the
models (in a source checkout).
"""

from __future__ import annotations

import os
from typing import Any

import click


def _database(context: click.Context) -> Any:
    # Only the database: no plugin is loaded, so migrations run even when a provider or plugin is broken.
    # hub.cli is imported here, not at the top: hub.cli imports this module at its end to register ``db``.
    from hub.cli import _config, _quiet_logging
    from hub.records import Database, normalise_database_url

    _quiet_logging(context)
    config = _config(context)
    os.makedirs(config["data_dir"], exist_ok=True)
    return Database(normalise_database_url(config["database_url"], config["data_dir"]))


@click.group()
def db() -> None:
    """The database schema: upgrade it, show its revision and the migrations."""


@db.command()
@click.option("--revision", default="head", show_default=True, help="Revision to upgrade to.")
@click.pass_context
def upgrade(context: click.Context, revision: str) -> None:
    """Apply the migrations up to REVISION (a database from before migrations is adopted first)."""
    from hub import migrations

    database = _database(context)
    try:
        done = migrations.upgrade(database.engine, revision)
    finally:
        database.engine.dispose()
    if done.adopted:
        click.echo("existing tables (created before migrations) recorded at the newest revision")
    if done.before == done.after:
        click.echo(f"database already at {done.after}")
    else:
        click.echo(f"database upgraded from {done.before or 'empty'} to {done.after}")


@db.command()
@click.pass_context
def current(context: click.Context) -> None:
    """Print the database's schema revision."""
    from hub import migrations

    database = _database(context)
    try:
        with database.engine.connect() as connection:
            revision = migrations.current_revision(connection)
            predates = revision is None and migrations.predates_migrations(connection)
    finally:
        database.engine.dispose()
    if revision is None:
        click.echo("none (tables created before migrations: run 'hub db upgrade')" if predates else "none (empty database)")
    elif revision == migrations.head_revision():
        click.echo(f"{revision} (head)")
    else:
        click.echo(f"{revision} (behind {migrations.head_revision()}: run 'hub db upgrade')")


@db.command()
def history() -> None:
    """List the migrations, newest first."""
    from hub import migrations

    for script in migrations.history():
        click.echo(f"{script.revision}  {script.doc}")


@db.command()
@click.option("-m", "--message", required=True, help="What the migration does (it names the file).")
@click.pass_context
def revision(context: click.Context, message: str) -> None:
    """Write a migration for what the models have and the (upgraded) database lacks; review it before committing."""
    from hub import migrations

    database = _database(context)
    try:
        path = migrations.new_revision(database.engine, message)
    finally:
        database.engine.dispose()
    click.echo(path)
