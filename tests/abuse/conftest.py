"""Fixtures of the abuse tests: the hostile client's and the unlucky operator's cases."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def database(
    request: pytest.FixtureRequest, new_postgres_database: Callable[..., Any]
) -> Iterator[dict[str, str]]:
    """Settings that put a server's registry on SQLite (the store's default) or PostgreSQL."""
    if request.param == "sqlite":
        yield {}
        return
    with new_postgres_database() as url:
        yield {"database_url": url}
