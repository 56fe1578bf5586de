"""The embedded runner: spawned worker processes owned by the service.

Crashes (the server killed mid-job) are tested end to end in tests/api/test_end_to_end.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from app.jobs.local import RESTART_REASON
from app.main import create_app
from app.settings import Settings
from app.store.registry import Registry


def test_stopping_the_service_queues_its_running_job_again_without_a_failure(
    make_settings: Callable[..., Settings],
    long_job: Callable[..., dict[str, Any]],
    wait_for_job: Callable[..., dict[str, Any]],
) -> None:
    settings = make_settings()
    with TestClient(create_app(settings)) as client:
        job_id = client.post("/train", json=long_job("stopped", epochs=1000)).json()["id"]
        wait_for_job(client, job_id, until={"running"})

    registry = Registry.connect(settings.registry_url)
    try:
        job = registry.get_job(job_id)
    finally:
        registry.close()
    assert (job.status, job.attempts, job.failures, job.lease_owner) == ("queued", 1, 0, None)
    assert job.error == RESTART_REASON


def test_an_interrupted_job_runs_again_when_the_service_starts_again(
    make_settings: Callable[..., Settings],
    hello: dict[str, Any],
    wait_for_job: Callable[..., dict[str, Any]],
) -> None:
    settings = make_settings()
    with TestClient(create_app(settings)) as client:
        job_id = client.post("/train", json=hello).json()["id"]
        wait_for_job(client, job_id, until={"running"})

    with TestClient(create_app(settings)) as client:
        job = wait_for_job(client, job_id)

    assert (job["status"], job["attempts"], job["failures"], job["error"]) == (
        "succeeded",
        2,
        0,
        None,
    )
