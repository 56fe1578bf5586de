"""End to end against a real uvicorn server on 127.0.0.1, with httpx.

The service trains in worker processes it spawns, streams job progress as server-sent
events, keeps answering predictions while it trains, and survives being killed in the
middle of a job: on restart the job resumes from its last epoch checkpoint.

``start_server(**settings)`` (tests/conftest.py) starts a server on its own store and
stops it, and every process it spawned, after the test. A server has ``http`` (an
``httpx.Client`` on its address), ``wait_for_job(job_id, until=...)``, ``events(job_id)``,
``workers()`` (pids of its training processes), ``kill()`` and ``store_dir``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

Body = dict[str, Any]
StartServer = Callable[..., Any]


def test_train_hello_follow_its_events_and_predict(start_server: StartServer, hello: Body) -> None:
    server = start_server()

    response = server.http.post("/train", json=hello)

    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["model_name"] == "hello"
    assert job["status"] in {"queued", "running"}  # the runner may claim it at once
    assert (job["epoch"], job["epochs"], job["version"], job["history"]) == (0, 15, None, None)

    events = server.events(job["id"])

    names = [name for name, _ in events]
    assert (names[0], names[-1]) == ("job", "end")
    assert set(names) == {"job", "epoch", "end"}
    assert all(data["history"] is None for name, data in events if name != "epoch")
    final = events[-1][1]
    assert final["status"] == "succeeded"
    assert (final["epoch"], final["progress"], final["version"]) == (15, 1.0, 1)
    assert (final["attempts"], final["failures"], final["error"]) == (1, 0, None)

    history = [data for name, data in events if name == "epoch"]  # each epoch once, in order
    assert history == server.http.get(f"/jobs/{job['id']}?history=true").json()["history"]
    assert [e["epoch"] for e in history] == list(range(1, 16))
    assert {e["attempt"] for e in history} == {1}
    recorded = [e["recorded_at"] for e in history]  # ISO 8601, UTC: sorted as text
    assert recorded == sorted(recorded)
    assert recorded[-1] <= final["finished_at"]
    assert history[-1]["loss"] < history[0]["loss"]
    last = history[-1]
    assert (last["sample_input"], last["sample_prediction"]) == ("hello", "ohlol")
    assert (last["train_char_accuracy"], last["train_seq_accuracy"]) == (1.0, 1.0)
    assert last["characters"] == 5
    assert last["val_loss"] is None  # a tenth of one pair holds nothing out

    response = server.http.post("/predict", json={"model_name": "hello", "inputs": ["hello"]})

    assert response.status_code == 200
    assert response.json() == {
        "model_name": "hello",
        "version": 1,
        "outputs": ["ohlol"],
        "details": None,
    }


def test_a_trained_model_and_its_version_are_listed(start_server: StartServer, hello: Body) -> None:
    server = start_server()
    job = server.wait_for_job(server.http.post("/train", json=hello).json()["id"], history=True)

    models = server.http.get("/models").json()
    model = server.http.get("/models/hello").json()
    version = server.http.get("/models/hello/versions/1").json()

    assert models == [
        {
            "name": "hello",
            "created_at": model["created_at"],
            "latest_version": 1,
            "version_count": 1,
        }
    ]
    assert model["versions"] == [version]
    assert version["model_name"] == "hello"
    assert (version["version"], version["task"], version["epochs"]) == (1, "pairs", 15)
    assert version["job_id"] == job["id"]
    assert version["vocab"] == {"input": ["e", "h", "l", "o"], "output": ["h", "l", "o"]}
    assert version["hyperparameters"] == {
        "architecture": "embedding_rnn",
        "cell": "rnn",
        "embedding_size": 10,
        "hidden_size": 8,
        "num_layers": 2,
        "bidirectional": False,
        "dropout": 0.0,
        "optimizer": "adam",
        "learning_rate": 0.05,
        "weight_decay": 0.0,
        "momentum": 0.0,
        "epochs": 15,
        "batch_size": 32,
        "grad_clip": None,
        "seq_len": 64,
        "validation_fraction": 0.1,
        "max_steps": None,
        "max_seconds": None,
        "lr_schedule": "constant",
        "warmup_steps": 0,
        "min_learning_rate": 0.0,
        "plateau_factor": 0.1,
        "plateau_patience": 2,
        "early_stopping_patience": None,
        "min_delta": 0.0,
        "checkpoint_every_steps": None,
        "seed": 0,
    }
    # one pair, none held out: the best epoch is the last, and there are no scores
    assert (version["best_epoch"], version["stop_reason"]) == (15, "completed")
    assert version["validation"] is None
    last_epoch = job["history"][-1]
    assert version["metrics"] == {
        k: v for k, v in last_epoch.items() if k not in ("attempt", "recorded_at")
    }
    # Embedding 4x10, two RNN layers (8x10 + 8x8 + 2x8, then 8x8 + 8x8 + 2x8), Linear 8x3 + 3
    assert version["parameters"] == 40 + 160 + 144 + 27 == 371
    files = [f for f in (server.store_dir / "models" / "hello").rglob("*") if f.is_file()]
    assert version["size_bytes"] == sum(f.stat().st_size for f in files)
    weights = next(f for f in files if f.name == "weights.safetensors")
    assert version["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_a_killed_server_resumes_the_job_from_its_last_epoch(
    start_server: StartServer, long_job: Callable[..., Body]
) -> None:
    server = start_server()
    job_id = server.http.post("/train", json=long_job("crash", epochs=16)).json()["id"]
    before = server.wait_for_job(job_id, until=lambda job: job["epoch"] >= 2, history=True)
    workers = server.workers()
    assert len(workers) == 1

    server.kill()

    # the worker dies with the server (parent-death signal): nothing trains on
    deadline = time.monotonic() + 10
    while any(pid in workers for pid in server.workers()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.workers() == []
    checkpoints = server.store_dir / "jobs" / job_id
    left = sorted(p.name for p in checkpoints.iterdir())
    time.sleep(1.0)
    assert sorted(p.name for p in checkpoints.iterdir()) == left

    restarted = start_server(store_dir=server.store_dir)
    job = restarted.wait_for_job(job_id, history=True)

    assert job["status"] == "succeeded"
    assert (job["attempts"], job["failures"], job["error"]) == (2, 0, None)
    epochs = [e["epoch"] for e in job["history"]]
    assert epochs == list(range(1, 17))  # no epoch trained twice, none missing
    first = {e["epoch"]: e for e in before["history"]}
    for epoch in job["history"][: len(first)]:
        assert epoch == first[epoch["epoch"]]  # what attempt 1 recorded stays as it was
    attempts = [e["attempt"] for e in job["history"]]
    assert attempts == sorted(attempts)
    assert attempts[0] == 1
    assert attempts[-1] == 2
    versions = restarted.http.get("/models/crash").json()["versions"]
    assert [(v["version"], v["epochs"], v["job_id"]) for v in versions] == [(1, 16, job_id)]
    assert not checkpoints.exists()


def test_predictions_keep_answering_while_a_job_trains(
    start_server: StartServer, hello: Body, long_job: Callable[..., Body]
) -> None:
    server = start_server(max_concurrent_jobs=2)
    hello_job = server.http.post("/train", json=hello).json()
    job_id = server.http.post("/train", json=long_job("busy", epochs=500)).json()["id"]
    server.wait_for_job(hello_job["id"])
    started = server.wait_for_job(job_id, until=lambda job: job["epoch"] >= 1)["epoch"]

    # predict until the job has trained two more epochs meanwhile
    answers, epoch, deadline = [], started, time.monotonic() + 60
    while epoch < started + 2 and time.monotonic() < deadline:
        response = server.http.post("/predict", json={"model_name": "hello", "inputs": ["hello"]})
        answers.append((response.status_code, response.json()["outputs"]))
        epoch = server.http.get(f"/jobs/{job_id}").json()["epoch"]

    assert epoch >= started + 2
    assert len(answers) >= 2
    assert answers == [(200, ["ohlol"])] * len(answers)
    assert server.http.get(f"/jobs/{job_id}").json()["status"] == "running"


def test_cancelling_a_running_job_stops_it_within_an_epoch(
    start_server: StartServer, long_job: Callable[..., Body]
) -> None:
    server = start_server()
    # about a second per epoch on one core
    job_id = server.http.post("/train", json=long_job("slow", 50, 32_000)).json()["id"]
    running = server.wait_for_job(job_id, until=lambda job: job["epoch"] >= 1)

    response = server.http.post(f"/jobs/{job_id}/cancel")

    assert response.status_code == 200
    assert response.json()["cancel_requested"] is True
    job = server.wait_for_job(job_id, timeout=30)
    assert job["status"] == "cancelled"
    assert job["error"] == "cancelled on request"
    assert job["epoch"] <= running["epoch"] + 2
    assert job["version"] is None
    assert server.http.get("/models/slow").status_code == 404
    assert not (server.store_dir / "jobs" / job_id).exists()


def test_cancelling_a_queued_job_ends_it_at_once(
    start_server: StartServer, hello: Body, long_job: Callable[..., Body]
) -> None:
    server = start_server(max_concurrent_jobs=1)
    server.http.post("/train", json=long_job("first", epochs=200))
    queued = server.http.post("/train", json=hello).json()
    assert queued["status"] == "queued"

    response = server.http.post(f"/jobs/{queued['id']}/cancel")

    assert response.status_code == 200
    job = response.json()
    assert (job["status"], job["cancel_requested"], job["attempts"]) == ("cancelled", True, 0)
    assert job["finished_at"] is not None
    assert job["started_at"] is None


def test_with_one_job_at_a_time_the_next_waits_queued_in_order(
    start_server: StartServer, hello: Body, long_job: Callable[..., Body]
) -> None:
    server = start_server(max_concurrent_jobs=1)
    first = server.http.post("/train", json=long_job("first", epochs=2)).json()
    second = server.http.post("/train", json={**hello, "model_name": "second"}).json()
    third = server.http.post("/train", json={**hello, "model_name": "third"}).json()

    running = server.wait_for_job(first["id"], until={"running"})
    assert running["status"] == "running"
    assert [second["status"], third["status"]] == ["queued", "queued"]
    assert server.http.get(f"/jobs/{second['id']}").json()["status"] == "queued"

    jobs = [server.wait_for_job(job["id"]) for job in (first, second, third)]

    assert [job["status"] for job in jobs] == ["succeeded"] * 3
    for earlier, later in zip(jobs, jobs[1:], strict=False):
        assert at(earlier["finished_at"]) <= at(later["started_at"])


def at(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp)
