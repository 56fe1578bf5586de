"""Limits and names hold under concurrency, against a real uvicorn on SQLite and PostgreSQL.

Requests really overlap here: one thread per request, released together by a barrier,
each with its own connection to the server. What is checked is what the database
allows, not what the server's threads happen to interleave: the queue limit and the
next version number are decided in one locked transaction.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.ml.checkpoint import META_FILE, WEIGHTS_FILE, Checkpoint, save_checkpoint
from tests.conftest import LiveServer, hello_body, long_body

SUBMISSIONS = 50
QUEUE_LIMIT = 5
IMPORTS = 20


def all_at_once(count: int, send: Callable[[httpx.Client, int], httpx.Response], base_url: str):
    """``send(client, i)`` for i in range(count), each in its own thread, released together."""
    barrier = threading.Barrier(count)

    def one(i: int) -> httpx.Response:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            barrier.wait()
            return send(client, i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_50_concurrent_submissions_queue_exactly_the_limit(
    start_server: Callable[..., LiveServer],
    database: dict[str, str],
    wait_for_job: Callable[..., dict[str, Any]],
) -> None:
    server = start_server(max_queued_jobs=QUEUE_LIMIT, max_concurrent_jobs=1, **database)
    # the runner's only slot is taken by a long job, so whatever is accepted now waits
    busy = server.http.post("/train", json=long_body("busy", epochs=5000)).json()
    wait_for_job(server.http, busy["id"], until={"running"})

    responses = all_at_once(
        SUBMISSIONS,
        lambda client, i: client.post("/train", json={**hello_body(), "model_name": f"m{i}"}),
        server.base_url,
    )

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {202: QUEUE_LIMIT, 429: SUBMISSIONS - QUEUE_LIMIT}
    refused = [r for r in responses if r.status_code == 429]
    assert {r.headers["Retry-After"] for r in refused} == {"30"}
    assert {r.json()["detail"] for r in refused} == {
        f"{QUEUE_LIMIT} jobs are waiting already, at most {QUEUE_LIMIT} "
        "(limit set by CHARNN_MAX_QUEUED_JOBS); try again later"
    }
    queued = server.http.get("/jobs", params={"status": "queued"}).json()
    assert queued["total"] == QUEUE_LIMIT
    accepted = {r.json()["id"] for r in responses if r.status_code == 202}
    assert {job["id"] for job in queued["items"]} == accepted


@pytest.fixture
def checkpoint_files(tmp_path: Path, hello_model: Checkpoint) -> dict[str, bytes]:
    """The two files of a checkpoint, as a client uploads them."""
    directory = tmp_path / "export"
    save_checkpoint(hello_model, directory)
    return {
        "checkpoint": (directory / META_FILE).read_bytes(),
        "weights": (directory / WEIGHTS_FILE).read_bytes(),
    }


def test_20_concurrent_imports_get_20_consecutive_versions(
    start_server: Callable[..., LiveServer],
    database: dict[str, str],
    checkpoint_files: dict[str, bytes],
) -> None:
    # all of them admitted at once (CHARNN_MAX_CONCURRENT_IMPORTS), all racing for a number
    server = start_server(max_concurrent_imports=IMPORTS, **database)

    responses = all_at_once(
        IMPORTS,
        lambda client, _: client.post("/models/imported/versions", files=checkpoint_files),
        server.base_url,
    )

    assert Counter(r.status_code for r in responses) == {201: IMPORTS}
    assert sorted(r.json()["version"] for r in responses) == list(range(1, IMPORTS + 1))
    listed = server.http.get("/models/imported").json()
    assert [v["version"] for v in listed["versions"]] == list(range(1, IMPORTS + 1))
    directories = list((server.store_dir / "models" / "imported").iterdir())
    assert len(directories) == IMPORTS  # one directory per version, none left over
