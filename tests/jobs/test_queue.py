"""The rq backend end to end: the deployment of docker-compose.yml, on this machine.

A real uvicorn API with ``CHARNN_JOB_BACKEND=rq``, a fresh PostgreSQL database as its
registry, a private ``redis-server`` as its task queue, and ``charnn worker`` processes
sharing one store directory; leases last ``LEASE_SECONDS`` so that a dead worker's job is
queued again within seconds. The deployment is started once for the module; each test
asks for the workers it needs (a killed one is replaced).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

Body = dict[str, Any]
LEASE_SECONDS = 3  # as the deployment fixture sets CHARNN_LEASE_SECONDS (tests/conftest.py)
DISPATCH_SECONDS = 2.0  # app.jobs.queue: how often the API's dispatcher looks


@pytest.fixture(scope="module")
def deployment(
    start_deployment: Callable[..., Any], postgres_url: str, redis_server: Any
) -> Iterator[Any]:
    deployment = start_deployment(postgres_url, redis_server.url, workers=2)
    yield deployment
    deployment.stop()  # while its database and Redis are still there


def owner_pid(owner: str | None) -> int:
    """The pid in a worker's lease owner token, ``rq:<host>:<pid>:<random>``."""
    assert owner is not None, "the job has no lease owner"
    kind, host, pid, _ = owner.split(":")
    assert (kind, host) == ("rq", socket.gethostname()), owner
    return int(pid)


def test_a_gpu_job_without_a_gpu_worker_is_refused_clearly(deployment: Any, hello: Body) -> None:
    response = deployment.http.post("/train", json={**hello, "device": "cuda"})

    assert response.status_code == 503
    assert response.json()["detail"] == (
        "this deployment has no GPU worker: nothing consumes queue 'charnn-gpu'; start one "
        "with `charnn worker --queue gpu` on a GPU machine, or train on device 'cpu'"
    )
    assert deployment.http.get("/jobs").json()["total"] == 0  # nothing was queued


def test_gpu_jobs_go_to_the_gpu_worker_which_is_found_again_after_redis_restarts(
    deployment: Any, redis_server: Any, hello: Body, wait_for_job: Callable[..., Body]
) -> None:
    cpu_workers = deployment.live_workers(2)
    gpu_worker = deployment.start_worker("gpu")
    http = deployment.http
    try:
        response = http.post("/train", json={**hello, "model_name": "gpu", "device": "cuda"})

        assert response.status_code == 202, response.text
        job = wait_for_job(http, response.json()["id"])
        assert f"charnn job {job['id']}" in gpu_worker.log
        assert not any(job["id"] in worker.log for worker in cpu_workers)
        if torch.cuda.is_available():
            assert (job["status"], job["version"]) == ("succeeded", 1)
        else:  # a GPU worker without a GPU: refused at once, and not tried again
            assert (job["status"], job["attempts"]) == ("failed", 1)
            assert "cuda" in job["error"].lower()

        redis_server.stop()  # it comes back empty: every worker's registration is gone
        time.sleep(1.0)
        redis_server.start()

        # the workers register again as they reconnect: GPU jobs are accepted again
        deadline = time.monotonic() + 15
        body = {**hello, "model_name": "gpu", "device": "cuda"}
        while (response := http.post("/train", json=body)).status_code != 202:
            assert response.status_code == 503, response.text
            assert time.monotonic() < deadline, response.text
            time.sleep(0.2)
        wait_for_job(http, response.json()["id"])
    finally:
        gpu_worker.stop()


def test_a_job_whose_worker_is_killed_mid_epoch_finishes_on_the_other_worker(
    deployment: Any, long_job: Callable[..., Body], wait_for_job: Callable[..., Body]
) -> None:
    workers = deployment.live_workers(2)
    http = deployment.http
    # about 0.6 s per epoch on one core
    job_id = http.post("/train", json=long_job("killed", 10, 16_000)).json()["id"]
    running = wait_for_job(http, job_id, until=lambda job: job["epoch"] >= 2)
    pid = owner_pid(deployment.registry.get_job(job_id).lease_owner)
    [victim] = [w for w in workers if w.pid == pid]
    [survivor] = [w for w in workers if w.pid != pid]
    # the middle of an epoch: half an epoch after the next one ended
    running = wait_for_job(
        http, job_id, until=lambda job: job["epoch"] > running["epoch"], history=True
    )
    time.sleep(running["history"][-1]["seconds"] / 2)

    victim.kill()

    job = wait_for_job(http, job_id, timeout=90, history=True)
    assert job["status"] == "succeeded", job["error"]
    assert (job["attempts"], job["failures"], job["error"]) == (2, 1, None)
    assert job["version"] == 1
    history = job["history"]
    assert [e["epoch"] for e in history] == list(range(1, 11))  # none twice, none missing
    attempts = [e["attempt"] for e in history]
    resumed_after = attempts.count(1)  # epochs the killed worker trained and checkpointed
    assert attempts == [1] * resumed_after + [2] * (10 - resumed_after)
    assert running["epoch"] <= resumed_after < 10
    for before, after in zip(running["history"], history, strict=False):
        assert after == before  # what the first attempt recorded stays as it was
    assert f"job {job_id}: resuming after epoch {resumed_after}" in survivor.log
    assert "resuming" not in victim.log
    versions = http.get("/models/killed").json()["versions"]
    assert [(v["version"], v["epochs"], v["job_id"]) for v in versions] == [(1, 10, job_id)]
    assert not (deployment.store_dir / "jobs" / job_id).exists()


def test_restarting_redis_empty_loses_no_queued_or_running_job(
    deployment: Any,
    redis_server: Any,
    long_job: Callable[..., Body],
    wait_for_job: Callable[..., Body],
) -> None:
    deployment.live_workers(2)
    http = deployment.http
    # about 3 s each on one core: two run while two wait on the queue
    names = [f"restart-{n}" for n in range(4)]
    job_ids = [http.post("/train", json=long_job(name, 10, 8000)).json()["id"] for name in names]
    deadline = time.monotonic() + 30
    while True:
        jobs = [deployment.registry.get_job(job_id) for job_id in job_ids]
        running = [job for job in jobs if job.status == "running" and job.epoch >= 1]
        waiting = [job for job in jobs if job.status == "queued" and job.queue_ref is not None]
        if (len(running), len(waiting)) == (2, 2):
            break
        assert time.monotonic() < deadline, [(j.status, j.epoch, j.queue_ref) for j in jobs]
        time.sleep(0.05)
    with redis_server.client() as redis:  # the waiting jobs' messages (named <job id>-<n>)
        messages = [ref.decode() for ref in redis.lrange("rq:queue:charnn", 0, -1)]
    assert {ref.partition("-")[0] for ref in messages} == {job.id for job in waiting}, (
        messages,
        [(j.id, j.status, j.queue_ref) for j in jobs],
    )

    redis_server.stop()  # no persistence: it comes back empty
    time.sleep(1.0)
    redis_server.start()

    with redis_server.client() as redis:  # the messages are gone
        assert not redis.exists(*(f"rq:job:{ref}" for ref in messages))
    done = [wait_for_job(http, job_id, timeout=90) for job_id in job_ids]
    assert [(job["status"], job["version"], job["error"]) for job in done] == [
        ("succeeded", 1, None)
    ] * 4
    assert [job["attempts"] for job in done] == [1] * 4  # none ran twice
    for name in names:
        versions = http.get(f"/models/{name}").json()["versions"]
        assert [v["version"] for v in versions] == [1]


def test_cancelling_a_job_running_on_a_worker_stops_it_within_an_epoch_for_good(
    deployment: Any, long_job: Callable[..., Body], wait_for_job: Callable[..., Body]
) -> None:
    deployment.live_workers(2)
    http = deployment.http
    # about a second per epoch on one core
    job_id = http.post("/train", json=long_job("cancelled", 50, 32_000)).json()["id"]
    running = wait_for_job(http, job_id, until=lambda job: job["epoch"] >= 1, history=True)
    asked = time.monotonic()

    response = http.post(f"/jobs/{job_id}/cancel")

    assert response.status_code == 200
    assert response.json()["cancel_requested"] is True
    job = wait_for_job(http, job_id, timeout=30)
    took = time.monotonic() - asked
    assert (job["status"], job["error"], job["version"]) == (
        "cancelled",
        "cancelled on request",
        None,
    )
    epoch_seconds = running["history"][-1]["seconds"]
    assert took < epoch_seconds + 3.0  # a heartbeat comes every second, during the epoch
    assert job["epoch"] <= running["epoch"] + 1
    assert not (deployment.store_dir / "jobs" / job_id).exists()
    # never retried: not after the lease would have run out, not by the dispatcher
    time.sleep(LEASE_SECONDS + DISPATCH_SECONDS + 0.5)
    later = http.get(f"/jobs/{job_id}").json()
    assert (later["status"], later["attempts"], later["failures"]) == ("cancelled", 1, 0)
    assert later["finished_at"] == job["finished_at"]
    assert http.get("/models/cancelled").status_code == 404


def test_a_worker_trains_on_a_dataset_it_reads_from_the_shared_store(
    deployment: Any, wait_for_job: Callable[..., Body]
) -> None:
    deployment.live_workers(2)
    http = deployment.http
    text = "the quick brown fox jumps over the lazy dog. " * 40
    dataset = http.post("/datasets", content=text.encode(), params={"name": "fox"}).json()
    hp = {"epochs": 2, "hidden_size": 16, "seq_len": 16, "seed": 0}

    response = http.post(
        "/train", json={"model_name": "fox-rq", "dataset": dataset["id"], "hyperparameters": hp}
    )
    job = wait_for_job(http, response.json()["id"], timeout=90, history=True)

    assert job["status"] == "succeeded", job["error"]  # the API trains nothing itself here
    assert 0.8 * len(text) < job["history"][-1]["characters"] < len(text)
    assert http.delete(f"/datasets/{dataset['id']}").status_code == 204
