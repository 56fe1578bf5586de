"""PostgreSQL goes away for a few seconds: the API says 503 meanwhile and recovers by itself.

The registry runs on a private PostgreSQL cluster started for this module (tests/postgres.py),
so stopping it disturbs no one. The deployment is the scaled-out one: an API on the rq
backend (a private Redis) and a ``charnn worker`` that is training a job when the database
goes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.postgres import PrivateCluster, running_cluster

Body = dict[str, Any]
DOWN_SECONDS = 4.0  # longer than the lease (3 s): the job's worker loses it meanwhile
UNREACHABLE = "the registry database is unreachable; try again shortly"


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def deployment(
    start_deployment: Callable[..., Any], cluster: PrivateCluster, redis_server: Any
) -> Iterator[Any]:
    deployment = start_deployment(cluster.url, redis_server.url, workers=1)
    yield deployment
    deployment.stop()


def assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.json() == {"detail": UNREACHABLE}


def test_while_the_database_is_down_the_api_answers_503_and_then_recovers_by_itself(
    deployment: Any,
    cluster: PrivateCluster,
    hello: Body,
    long_job: Callable[..., Body],
    wait_for_job: Callable[..., Body],
) -> None:
    http = deployment.http
    job_id = http.post("/train", json=long_job("outage", 12, 8000)).json()["id"]
    wait_for_job(http, job_id, until=lambda job: job["epoch"] >= 1)

    cluster.stop()
    try:
        went = time.monotonic()
        answers = 0
        while time.monotonic() - went < DOWN_SECONDS:
            for path in ("/models", "/jobs", f"/jobs/{job_id}", "/models/outage"):
                assert_unavailable(http.get(path))
            assert_unavailable(http.post("/train", json=hello))
            ready = http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["status"] == "unavailable"
            assert ready.json()["checks"]["registry"].startswith("unreachable: ")
            assert http.get("/healthz").status_code == 200  # alive, only not ready
            answers += 1
            time.sleep(0.2)
        assert answers >= 5
    finally:
        cluster.start()

    deadline = time.monotonic() + 20
    while (ready := http.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, ready.text
        time.sleep(0.1)
    assert ready.json()["status"] == "ready"
    assert http.get("/models").status_code == 200
    # the job that lost its worker's lease meanwhile resumes, and nothing is trained twice
    job = wait_for_job(http, job_id, timeout=90, history=True)
    assert (job["status"], job["version"], job["error"]) == ("succeeded", 1, None)
    assert [e["epoch"] for e in job["history"]] == list(range(1, 13))
    # attempt 1 failed at its first heartbeat without a database; attempt 2 resumed it
    assert (job["attempts"], job["failures"]) == (2, 1)
    assert {e["attempt"] for e in job["history"]} == {1, 2}
    # and new work is accepted, trained and served
    trained = wait_for_job(http, http.post("/train", json=hello).json()["id"])
    assert trained["status"] == "succeeded"
    response = http.post("/predict", json={"model_name": "hello", "inputs": ["hello"]})
    assert response.json()["outputs"] == ["ohlol"]
