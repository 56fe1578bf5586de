"""Refusals that must not cost what they refuse: a request refused before its body was
read closes the connection (or the server would read the rest only to find the next
request), and a registry whose disk is full answers 507, not "unreachable"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event

from app.main import create_app
from app.settings import Settings
from tests.conftest import long_text


def test_requests_whose_bodies_were_read_keep_their_connection(client: TestClient) -> None:
    # (a refusal before the body is read closes it: tests/abuse/test_imports.py, on a
    # real server, where a body arrives in pieces)
    read = client.post("/train", json={"model_name": "x"})  # read whole, then refused
    listed = client.get("/models")

    assert (read.status_code, listed.status_code) == (422, 200)
    assert "connection" not in read.headers
    assert "connection" not in listed.headers


def test_a_registry_whose_disk_is_full_answers_507(
    make_settings: Callable[..., Settings], hello: dict[str, Any], store_dir: Path
) -> None:
    with TestClient(create_app(make_settings())) as client:
        engine = client.app.state.services.registry.engine  # type: ignore[attr-defined]

        @event.listens_for(engine, "connect")
        def no_more_pages(connection: Any, _record: Any) -> None:
            # SQLite's own "disk full": the file may not grow past the pages it has
            connection.execute("PRAGMA max_page_count = 1")

        engine.dispose()  # connections from now on cannot grow the file
        hello["data"] = {"text": long_text(100_000)}  # the job's row needs new pages
        response = client.post("/train", json=hello)

    assert response.status_code == 507
    assert response.json() == {
        "detail": "the registry database's disk is full; free space, then try again"
    }
