"""The registry's tests run on both backends it supports: SQLite and PostgreSQL.

``database_url`` is an empty database for each test: a new SQLite file, or this module's
PostgreSQL database (``postgres_url``, created once per module) with its schema dropped
and created again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    url: str = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
    return url
