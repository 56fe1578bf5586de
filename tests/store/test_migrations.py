"""The registry's schema comes from its Alembic migrations, applied at connection time.

On SQLite and on PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from app.store.db import HEAD_REVISION, MIGRATIONS, applied_revision, make_engine, upgrade_schema
from app.store.tables import Base


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An empty database, SQLite or PostgreSQL (tests/store/conftest.py)."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head() -> str:
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


def applied(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.scalars(text("SELECT version_num FROM alembic_version")))


def test_an_empty_database_gets_every_table(engine: Engine) -> None:
    upgrade_schema(engine)

    tables = set(inspect(engine).get_table_names())
    assert tables == {"alembic_version", "models", "versions", "jobs", "job_epochs", "datasets"}
    assert applied(engine) == [head()]


def test_the_migrations_build_what_the_tables_declare(engine: Engine) -> None:
    upgrade_schema(engine)

    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        columns = {c["name"]: c for c in inspector.get_columns(table.name)}
        assert set(columns) == set(table.columns.keys()), table.name
        for column in table.columns:
            assert columns[column.name]["nullable"] == column.nullable, (table.name, column.name)


def test_upgrading_twice_changes_nothing(engine: Engine) -> None:
    upgrade_schema(engine)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO models (name, created_at) VALUES ('hello', '2026-01-01 00:00:00')")
        )

    upgrade_schema(engine)

    assert applied(engine) == [head()]
    with engine.connect() as connection:
        assert list(connection.scalars(text("SELECT name FROM models"))) == ["hello"]


def test_an_older_store_is_upgraded_without_losing_its_jobs(engine: Engine) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(
            text(
                "INSERT INTO jobs (id, model_name, status, request, device, epochs, epoch, "
                "attempts, max_attempts, cancel_requested, created_at, updated_at) VALUES "
                "('0123456789abcdef0123456789abcdef', 'hello', 'queued', '{}', 'cpu', 15, 0, "
                "0, 3, FALSE, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )

    upgrade_schema(engine)

    assert applied(engine) == [head()]
    with engine.connect() as connection:
        row = connection.execute(text("SELECT model_name, failures, queue_ref FROM jobs")).one()
    assert tuple(row) == ("hello", 0, None)


def test_the_head_revision_the_service_checks_for_is_the_newest_migration(engine: Engine) -> None:
    # the service skips Alembic when the database is at HEAD_REVISION: a new migration
    # must move it, or the migration would never be applied
    assert head() == HEAD_REVISION
    assert applied_revision(engine) is None
    upgrade_schema(engine)
    assert applied_revision(engine) == HEAD_REVISION
