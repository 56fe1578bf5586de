"""A sweep of the hardened service as a hostile client and an unlucky operator would try it.

Each test here reproduces one finding against a real server: it answered 500 (or hung, or
grew) before its fix, and answers a 4xx that names the field (or stays bounded) after.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from app.ml.checkpoint import Checkpoint
from tests.conftest import LiveServer

NOT_UTF8 = b"\xff\xfe{not json"


@pytest.fixture
def hello_server(
    tmp_path: Path,
    hello_model: Checkpoint,
    publish_model: Callable[[Path, str, Checkpoint], int],
    start_server: Callable[..., LiveServer],
) -> LiveServer:
    store = tmp_path / "store"
    publish_model(store, "hello", hello_model)
    return start_server(store)


CONTENT_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]


def test_a_body_that_is_neither_json_nor_utf8_is_refused_with_a_422(
    hello_server: LiveServer,
) -> None:
    """Before: 500 (FastAPI's encoder decoded the echoed bytes as strict UTF-8)."""
    for path in ["/predict", "/generate", "/train"]:
        for content_type in CONTENT_TYPES:
            answer = hello_server.http.post(
                path, content=NOT_UTF8, headers={"content-type": content_type}
            )
            assert answer.status_code == 422, (path, content_type, answer.text)
            [error] = answer.json()["detail"]
            assert error["loc"] == ["body"]
            assert error["input"] == NOT_UTF8.decode("utf-8", "backslashreplace")
    assert "Traceback" not in hello_server.log
