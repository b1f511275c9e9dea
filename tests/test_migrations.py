"""The schema's migrations (hub/migrations): the newest revision builds exactly what the models declare, on
SQLite and PostgreSQL; a database from before migrations is adopted; start-up records a fresh database at head;
``hub db`` drives it all from hub.yaml."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import inspect, text

from hub import migrations
from hub.cli import main
from hub.records import Base, Database, normalise_database_url


def differences(database: Database) -> list[Any]:
    """What autogenerate would write for this database: empty when its schema is what the models declare."""
    with database.engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "include_object": migrations.include_object, "version_table": migrations.VERSION_TABLE},
        )
        return compare_metadata(context, Base.metadata)


def revision_of(database: Database) -> str | None:
    with database.engine.connect() as connection:
        return migrations.current_revision(connection)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database(normalise_database_url(None, str(tmp_path)))
    yield database
    database.engine.dispose()


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[Database]:
    database = Database(normalise_database_url(postgres_url, ""))
    yield database
    database.engine.dispose()


@pytest.mark.parametrize("database_name", ["sqlite_db", "postgres_db"])
def test_the_migrations_build_what_the_models_declare(database_name: str, request: pytest.FixtureRequest) -> None:
    # Fails when a model (table, column, index, constraint) changes without a migration: write one with
    # ``hub db revision -m "..."`` and review it.
    database: Database = request.getfixturevalue(database_name)
    done = migrations.upgrade(database.engine)
    assert (done.before, done.after, done.adopted) == (None, migrations.head_revision(), False)
    assert differences(database) == []
    tables = set(inspect(database.engine).get_table_names())
    assert tables == set(Base.metadata.tables) | {migrations.VERSION_TABLE}
    # The comparison sees what it should: one index gone is one difference.
    with database.engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_record_status_lease"))
    assert [(diff[0], diff[1].name) for diff in differences(database)] == [("add_index", "ix_record_status_lease")]


def test_upgrading_again_changes_nothing(sqlite_db: Database) -> None:
    migrations.upgrade(sqlite_db.engine)
    again = migrations.upgrade(sqlite_db.engine)
    assert (again.before, again.after, again.adopted) == (migrations.head_revision(), migrations.head_revision(), False)


@pytest.mark.parametrize("database_name", ["sqlite_db", "postgres_db"])
def test_a_database_from_before_migrations_is_adopted(database_name: str, request: pytest.FixtureRequest) -> None:
    database: Database = request.getfixturevalue(database_name)
    Base.metadata.create_all(database.engine)  # what start-up did before migrations existed
    with database.engine.begin() as connection:
        connection.execute(text("INSERT INTO hub_webhook_events (provider, event_id, received_at) VALUES ('p', 'e1', CURRENT_TIMESTAMP)"))
        assert migrations.predates_migrations(connection)
    done = migrations.upgrade(database.engine)
    assert (done.before, done.after, done.adopted) == (None, migrations.head_revision(), True)
    assert differences(database) == []
    with database.engine.connect() as connection:
        assert connection.execute(text("SELECT event_id FROM hub_webhook_events")).scalars().all() == ["e1"]


def test_start_up_creates_a_fresh_database_at_the_newest_revision(sqlite_db: Database) -> None:
    sqlite_db.create_all()
    assert revision_of(sqlite_db) == migrations.head_revision()
    assert differences(sqlite_db) == []
    sqlite_db.create_all()  # the next start-up finds it current
    assert migrations.upgrade(sqlite_db.engine).before == migrations.head_revision()  # nothing left to apply


def test_start_up_leaves_a_database_from_before_migrations_for_upgrade_to_adopt(sqlite_db: Database) -> None:
    with sqlite_db.engine.begin() as connection:
        Base.metadata.tables["hub_records"].create(connection)  # an older hub's database: some tables missing
    sqlite_db.create_all()
    assert revision_of(sqlite_db) is None  # not stamped: its older tables may not be what 0001 says
    assert differences(sqlite_db) == []  # but its missing tables were created, as before migrations
    assert migrations.upgrade(sqlite_db.engine).adopted


def test_start_up_goes_on_with_a_revision_it_does_not_know(sqlite_db: Database, caplog: pytest.LogCaptureFixture) -> None:
    # A newer hub migrated the database (a rolling deploy): this one runs on, and says so.
    sqlite_db.create_all()
    with sqlite_db.engine.begin() as connection:
        connection.execute(text(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '9999'"))
    with caplog.at_level(logging.WARNING, "hub.migrations"):
        sqlite_db.create_all()
    assert "revision 9999 is unknown" in caplog.text


def test_the_first_revision_downgrades_to_an_empty_database(sqlite_db: Database) -> None:
    from alembic import command

    migrations.upgrade(sqlite_db.engine)
    with sqlite_db.engine.begin() as connection:
        command.downgrade(migrations.alembic_config(connection), "base")
    assert set(inspect(sqlite_db.engine).get_table_names()) == {migrations.VERSION_TABLE}


# --- hub db ------------------------------------------------------------------------------------------


def hub_db(config: Path, *args: str) -> Any:
    result = CliRunner().invoke(main, ["--config", str(config), "db", *args], env={"DATABASE_URL": None, "HUB_CONFIG": None})
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


@pytest.fixture
def config_for() -> Any:
    def write(folder: Path, database_url: str | None = None) -> Path:
        path = folder / "hub.yaml"
        path.write_text(yaml.safe_dump({"data_dir": str(folder / "var"), "database_url": database_url}))
        return path

    return write


def test_hub_db_upgrade_and_current_on_sqlite(tmp_path: Path, config_for: Any) -> None:
    config = config_for(tmp_path)
    head = migrations.head_revision()
    assert hub_db(config, "current") == "none (empty database)\n"
    assert hub_db(config, "upgrade") == f"database upgraded from empty to {head}\n"
    assert hub_db(config, "current") == f"{head} (head)\n"
    assert hub_db(config, "upgrade", "--revision", "head") == f"database already at {head}\n"
    assert hub_db(config, "history").startswith(f"{head}  ")
    database = Database(normalise_database_url(None, str(tmp_path / "var")))
    try:
        assert differences(database) == []
    finally:
        database.engine.dispose()


def test_hub_db_upgrade_adopts_a_postgresql_database_from_before_migrations(tmp_path: Path, postgres_url: str, config_for: Any) -> None:
    config = config_for(tmp_path, postgres_url)
    database = Database(normalise_database_url(postgres_url, ""))
    try:
        Base.metadata.create_all(database.engine)
        assert hub_db(config, "current") == "none (tables created before migrations: run 'hub db upgrade')\n"
        assert hub_db(config, "upgrade").splitlines() == [
            "existing tables (created before migrations) recorded at the newest revision",
            f"database upgraded from empty to {migrations.head_revision()}",
        ]
        assert revision_of(database) == migrations.head_revision()
    finally:
        database.engine.dispose()


def test_hub_db_fails_in_one_line_on_an_unknown_revision(tmp_path: Path, config_for: Any) -> None:
    result = CliRunner().invoke(main, ["--config", str(config_for(tmp_path)), "db", "upgrade", "--revision", "nope"], env={"DATABASE_URL": None})
    assert result.exit_code == 1
    assert result.output.startswith("hub: ") and "nope" in result.output and len(result.output.splitlines()) == 1
