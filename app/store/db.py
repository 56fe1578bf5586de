"""Engine and sessions for the registry database, and bringing its schema up to date.

Two kinds of session: ``make_sessions(engine)`` for reads, and
``make_sessions(engine, writes=True)`` for transactions that write. On SQLite a writing
transaction takes the database's write lock when it begins (``BEGIN IMMEDIATE``), so
what it reads before writing (the number of queued jobs, a model's latest version)
cannot change under it; on PostgreSQL the registry locks what it reads explicitly.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, ExceptionContext, create_engine, event, inspect, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD_REVISION = "0005"  # the newest migration (tests/store/test_migrations.py keeps it so)
SQLITE_BEGIN = "charnn_sqlite_begin"  # an execution option: how SQLite transactions begin


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout.

    WAL lets the API read while a worker process writes; the busy timeout makes
    concurrent writers wait instead of failing with "database is locked". Every JSON
    column refuses NaN and infinities (which are not JSON: PostgreSQL rejects them and
    SQLite would hand them back to the API).
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            json_serializer=strict_json,
        )
        event.listen(engine, "connect", _refuse_read_only)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine, "handle_error", _reconnect_after_file_errors)
        return engine
    if url.startswith("postgresql"):
        # UTF-8 whatever the database was created with (a SQL_ASCII database hands psycopg
        # bytes, which SQLAlchemy cannot even read the server version from), and a connect
        # timeout so that a host that drops packets fails a try instead of hanging it.
        connect_args = {"client_encoding": "utf8", "connect_timeout": 10}
        return create_engine(
            url, pool_pre_ping=True, json_serializer=strict_json, connect_args=connect_args
        )
    return create_engine(url, pool_pre_ping=True, json_serializer=strict_json)


def strict_json(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


def _refuse_read_only(dbapi_connection: Any, _record: Any) -> None:
    """Refuse a connection that SQLite opened read-only because the file is.

    SQLite falls back to reading silently (even with ``mode=rw``), and the pool would
    keep that connection for good: a registry made writable again would go on refusing
    writes until a restart. Refused, the connection is tried afresh by the next request.
    (``access``, not a trial ``open``: closing any descriptor of the file would drop
    the locks SQLite holds on it through the others, and corrupt it.)
    """
    for _, name, path in dbapi_connection.execute("PRAGMA database_list").fetchall():
        if name == "main" and path and not os.access(path, os.W_OK):
            raise sqlite3.OperationalError(f"the registry {path} cannot be written")


# SQLITE_READONLY, SQLITE_IOERR, SQLITE_CANTOPEN (primary codes of the extended ones)
FILE_ERRORS = frozenset({8, 10, 14})


def _reconnect_after_file_errors(context: ExceptionContext) -> None:
    """A connection whose file went away or read-only is dropped, not pooled again."""
    code = getattr(context.original_exception, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in FILE_ERRORS:
        context.is_disconnect = True


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite would begin a transaction only at the first write, after the reads the
    # write depends on; _sqlite_begin begins each one itself (SQLAlchemy's recipe)
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


def make_sessions(engine: Engine, *, writes: bool = False) -> sessionmaker[Session]:
    """Sessions on ``engine``; ``writes``: SQLite takes its write lock as each begins."""
    if writes:
        engine = engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
    return sessionmaker(engine, expire_on_commit=False)


def applied_revision(engine: Engine) -> str | None:
    """The newest migration applied to this database; None for an empty one."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        revision: str | None = connection.execute(
            text("SELECT version_num FROM alembic_version")
        ).scalar()
        return revision


def upgrade_schema(engine: Engine) -> None:
    """Apply every migration not yet applied (an older store is upgraded, never lost).

    Alembic takes a third of a second to import, a tenth of a cold start: it is
    loaded only when there is something to apply.
    """
    if applied_revision(engine) == HEAD_REVISION:
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
