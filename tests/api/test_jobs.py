"""Jobs: GET /jobs (filters, pages), GET /jobs/{id}, its events, and cancelling.

Most tests share one service that runs one job at a time: "alpha" trains, "beta"
waits queued behind it, and a second "beta" was cancelled while it waited.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

Job = dict[str, Any]


@pytest.fixture(scope="module")
def jobs(
    tmp_path_factory: pytest.TempPathFactory,
    settings_for: Callable[..., Settings],
    long_job: Callable[..., Job],
    wait_for_job: Callable[..., Job],
) -> Iterator[tuple[TestClient, dict[str, Job]]]:
    """The service, and its jobs by name: alpha (running), beta (queued), gamma (cancelled)."""
    settings = settings_for(tmp_path_factory.mktemp("store"), max_concurrent_jobs=1)
    with TestClient(create_app(settings)) as client:
        alpha = client.post("/train", json=long_job("alpha", epochs=1000)).json()
        wait_for_job(client, alpha["id"], until={"running"})
        beta = client.post("/train", json=long_job("beta", epochs=1)).json()
        gamma = client.post("/train", json=long_job("beta", epochs=1)).json()
        client.post(f"/jobs/{gamma['id']}/cancel")
        yield client, {"alpha": alpha["id"], "beta": beta["id"], "gamma": gamma["id"]}


def listed(client: TestClient, query: str) -> tuple[list[str], int, int, int]:
    """(ids, total, limit, offset) of GET /jobs?query."""
    response = client.get(f"/jobs?{query}")
    assert response.status_code == 200, response.text
    page = response.json()
    return [job["id"] for job in page["items"]], page["total"], page["limit"], page["offset"]


def test_no_jobs_yet(client: TestClient) -> None:
    response = client.get("/jobs")

    assert response.status_code == 200
    assert response.json() == {"items": [], "total": 0, "limit": 50, "offset": 0}


def test_jobs_are_listed_newest_first(jobs: tuple[TestClient, dict[str, str]]) -> None:
    client, ids = jobs

    assert listed(client, "") == ([ids["gamma"], ids["beta"], ids["alpha"]], 3, 50, 0)


@pytest.mark.parametrize(
    ("status", "name"), [("running", "alpha"), ("queued", "beta"), ("cancelled", "gamma")]
)
def test_jobs_filtered_by_status(
    jobs: tuple[TestClient, dict[str, str]], status: str, name: str
) -> None:
    client, ids = jobs

    assert listed(client, f"status={status}") == ([ids[name]], 1, 50, 0)


def test_jobs_filtered_by_status_none_match(jobs: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = jobs

    assert listed(client, "status=succeeded") == ([], 0, 50, 0)


def test_jobs_filtered_by_model(jobs: tuple[TestClient, dict[str, str]]) -> None:
    client, ids = jobs

    assert listed(client, "model_name=beta") == ([ids["gamma"], ids["beta"]], 2, 50, 0)
    assert listed(client, "model_name=beta&status=queued") == ([ids["beta"]], 1, 50, 0)
    assert listed(client, "model_name=nobody") == ([], 0, 50, 0)


def test_jobs_in_pages(jobs: tuple[TestClient, dict[str, str]]) -> None:
    client, ids = jobs

    assert listed(client, "limit=2") == ([ids["gamma"], ids["beta"]], 3, 2, 0)
    assert listed(client, "limit=2&offset=2") == ([ids["alpha"]], 3, 2, 2)
    assert listed(client, "limit=2&offset=4") == ([], 3, 2, 4)


@pytest.mark.parametrize(
    ("query", "loc", "msg"),
    [
        (
            "status=done",
            ["query", "status"],
            "Input should be 'queued', 'running', 'succeeded', 'failed' or 'cancelled'",
        ),
        ("limit=0", ["query", "limit"], "Input should be greater than or equal to 1"),
        ("limit=501", ["query", "limit"], "Input should be less than or equal to 500"),
        ("offset=-1", ["query", "offset"], "Input should be greater than or equal to 0"),
        (
            "model_name=Beta",
            ["query", "model_name"],
            "String should match pattern '^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$'",
        ),
    ],
)
def test_bad_filters_are_refused(
    jobs: tuple[TestClient, dict[str, str]], query: str, loc: list[str], msg: str
) -> None:
    client, _ = jobs

    response = client.get(f"/jobs?{query}")

    assert response.status_code == 422
    assert [(e["loc"], e["msg"]) for e in response.json()["detail"]] == [(loc, msg)]


def test_a_job_waiting_in_the_queue(jobs: tuple[TestClient, dict[str, str]]) -> None:
    client, ids = jobs

    job = client.get(f"/jobs/{ids['beta']}").json()

    assert (job["status"], job["epoch"], job["epochs"], job["progress"]) == ("queued", 0, 1, 0.0)
    assert (job["attempts"], job["failures"], job["cancel_requested"]) == (0, 0, False)
    assert (job["started_at"], job["elapsed_seconds"], job["eta_seconds"]) == (None, None, None)
    assert (job["history"], job["version"], job["error"]) == ([], None, None)


def test_a_cancelled_job_reports_it(jobs: tuple[TestClient, dict[str, str]]) -> None:
    client, ids = jobs

    job = client.get(f"/jobs/{ids['gamma']}").json()

    assert (job["status"], job["cancel_requested"], job["attempts"]) == ("cancelled", True, 0)
    assert job["finished_at"] is not None


def test_cancelling_a_job_that_ended_is_a_conflict(jobs: tuple[TestClient, dict[str, str]]) -> None:
    client, ids = jobs

    response = client.post(f"/jobs/{ids['gamma']}/cancel")

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"job {ids['gamma']} already ended (cancelled); nothing to cancel"
    }


def test_the_events_of_an_ended_job_are_its_state_then_the_end(
    jobs: tuple[TestClient, dict[str, str]],
) -> None:
    client, ids = jobs

    with client.stream("GET", f"/jobs/{ids['gamma']}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        text = response.read().decode()

    job = client.get(f"/jobs/{ids['gamma']}").json()
    blocks = [block.split("\n") for block in text.strip().split("\n\n")]
    assert [lines[0] for lines in blocks] == ["event: job", "event: end"]
    assert [json.loads(lines[1].removeprefix("data: ")) for lines in blocks] == [job, job]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobs/0123456789abcdef0123456789abcdef"),
        ("GET", "/jobs/0123456789abcdef0123456789abcdef/events"),
        ("POST", "/jobs/0123456789abcdef0123456789abcdef/cancel"),
    ],
)
def test_an_unknown_job_is_not_found(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)

    assert response.status_code == 404
    assert response.json() == {"detail": "job '0123456789abcdef0123456789abcdef' does not exist"}


def test_cancelling_a_job_that_succeeded_is_a_conflict(
    client: TestClient, hello: Job, wait_for_job: Callable[..., Job]
) -> None:
    job = wait_for_job(client, client.post("/train", json=hello).json()["id"])
    assert job["status"] == "succeeded"

    response = client.post(f"/jobs/{job['id']}/cancel")

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"job {job['id']} already ended (succeeded); nothing to cancel"
    }
