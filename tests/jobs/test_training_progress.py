"""Jobs that stop when they should, report within epochs, and resume within an epoch.

A worker killed (SIGKILL) midway through an epoch resumes from its last step checkpoint
and makes the very version an uninterrupted job makes; budgets and early stopping end
a job succeeded, with the best epoch's weights; a long epoch shows its progress in
GET /jobs/{id} and the event stream, and is cancelled within seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.jobs.spec import JobSpec
from app.jobs.worker import run_job
from app.ml.checkpoint import WEIGHTS_FILE
from app.settings import Settings
from app.store.check import check_store
from app.store.layout import StoreLayout, new_id
from app.store.registry import Registry
from tests.conftest import LiveServer, settings_on

ROOT = Path(__file__).resolve().parents[2]
WORDS = ["abc", "bcad", "cabd", "dabca", "ab", "bca", "cdab", "abcd", "dcba", "bb", "acd", "dd"]
# 48 pairs, 12 held out, 36 trained on in batches of 2: 18 steps an epoch
PAIRS = [{"input": w * k, "target": (w * k)[::-1]} for w in WORDS for k in (1, 2, 3, 4)]
PAIRS_JOB: dict[str, Any] = {
    "model_name": "mirror",
    "data": {"pairs": PAIRS},
    "hyperparameters": {
        "num_layers": 2,
        "dropout": 0.2,
        "batch_size": 2,
        "validation_fraction": 0.25,
        "epochs": 2,
        "checkpoint_every_steps": 4,
        "seed": 3,
    },
}

# Runs in a child process: a worker that dies (SIGKILL) when it records its 3rd report
# within an epoch, its checkpoint written; as a crash would.
CHILD = """
import os, signal, sys
from pathlib import Path

from app.jobs.worker import run_job
from app.ml.checkpoint import WEIGHTS_FILE
from app.settings import Settings
from app.store.check import check_store
from app.store.registry import Registry

settings = Settings(store_dir=Path(sys.argv[1]), device="cpu", worker_torch_threads=1)
reports = 0
record = Registry.record_progress


def record_then_die(self, *args, **kwargs):
    global reports
    reports += 1
    if reports == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return record(self, *args, **kwargs)


Registry.record_progress = record_then_die
registry = Registry.connect(settings.registry_url, migrate=False)
registry.claim_job(sys.argv[2], "doomed-worker")
run_job(sys.argv[2], "doomed-worker", settings)
sys.exit(3)  # never reached
"""


def queue(registry: Registry, body: dict[str, Any]) -> str:
    spec = JobSpec.model_validate(body)
    job_id = new_id()
    epochs = spec.hyperparameters.epochs
    registry.create_job(job_id, spec.model_name, spec.model_dump(mode="json"), "cpu", epochs, 3)
    return job_id


def run_to_end(registry: Registry, job_id: str, settings: Settings, owner: str) -> None:
    registry.release_all_running("the worker died")
    assert registry.claim_job(job_id, owner) is not None
    run_job(job_id, owner, settings)


@pytest.mark.parametrize("newest", ["whole", "corrupted"])
def test_a_worker_killed_mid_epoch_resumes_to_the_same_version(
    store_dir: Path, newest: str
) -> None:
    settings = settings_on(store_dir, worker_torch_threads=1)
    StoreLayout(store_dir).ensure()
    registry = Registry.connect(settings.registry_url)
    try:
        straight = queue(registry, PAIRS_JOB)
        run_to_end(registry, straight, settings, "steady-worker")
        killed = queue(registry, PAIRS_JOB)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHARNN_")}
        command = [sys.executable, "-c", CHILD, str(store_dir), killed]
        child = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=300)
        assert child.returncode == -9, child.stderr.decode(errors="replace")[-3000:]
        # reports at steps 4, 8, 12 of epoch 1 (18 steps): killed recording the third,
        # its checkpoint written, the one before pruned
        names = [p.name for _, p in StoreLayout(store_dir).job_checkpoints(killed)]
        assert names == [f"epoch-000000-batch-{step:09d}" for step in (4, 8, 12)]
        assert registry.get_job(killed).progress is not None  # step 8's report
        # what a running job keeps is no leftover: `charnn store check` finds nothing
        assert check_store(registry, StoreLayout(store_dir), min_age=0).clean
        if newest == "corrupted":  # resumed from step 8 instead: exactly as well
            weights = store_dir / "jobs" / killed / names[-1] / WEIGHTS_FILE
            weights.write_bytes(weights.read_bytes()[:-1] + b"!")
        run_to_end(registry, killed, settings, "next-worker")
        first, second = registry.get_job(straight), registry.get_job(killed)
        versions = [registry.get_version("mirror", job.version or 0) for job in (first, second)]
        epochs = [registry.job_epochs(job_id) for job_id in (straight, killed)]
    finally:
        registry.close()

    assert (second.status, second.attempts) == ("succeeded", 2)
    assert versions[0].sha256 == versions[1].sha256  # the same weights, bit for bit
    same = ("loss", "val_loss", "bits_per_char", "learning_rate", "steps", "characters")
    assert [[e.metrics[k] for k in same] for e in epochs[0]] == [
        [e.metrics[k] for k in same] for e in epochs[1]
    ]
    assert versions[1].best_epoch in (1, 2)
    assert versions[1].stop_reason == "completed"


def test_a_budget_ends_a_job_succeeded_with_a_version(
    start_server: Callable[..., LiveServer],
) -> None:
    server = start_server()
    budgets = {
        "max-steps": {"max_steps": 5},
        "early": {"early_stopping_patience": 1, "min_delta": 1000.0, "epochs": 50},
    }
    jobs = {}
    for name, budget in budgets.items():
        body = {**PAIRS_JOB, "model_name": name}
        body["hyperparameters"] = {**PAIRS_JOB["hyperparameters"], **budget}
        body["hyperparameters"]["checkpoint_every_steps"] = 10
        response = server.http.post("/train", json=body)
        assert response.status_code == 202, response.text
        jobs[name] = response.json()["id"]

    for name, job_id in jobs.items():
        job = server.wait_for_job(job_id, timeout=120, history=True)
        assert job["status"] == "succeeded", job["error"]
        version = server.http.get(f"/models/{name}/versions/{job['version']}").json()
        best = job["history"][version["best_epoch"] - 1]
        assert version["validation"] == {
            "loss": best["val_loss"],
            "bits_per_char": None,  # pairs
            "char_accuracy": best["val_char_accuracy"],
            "seq_accuracy": best["val_seq_accuracy"],
        }
        if name == "max-steps":
            assert version["stop_reason"] == "max_steps"
            assert [e["steps"] for e in job["history"]] == [5]
        else:  # epoch 1 is the best a min_delta of 1000 lets be; epoch 2 does no better
            assert (version["stop_reason"], version["best_epoch"]) == ("early_stopping", 1)
            assert version["epochs"] == 2


def test_a_long_epoch_reports_progress_and_is_cancelled_within_seconds(
    start_server: Callable[..., LiveServer], long_job: Callable[..., dict[str, Any]]
) -> None:
    server = start_server(min_checkpoint_every_steps=1, event_poll_seconds=0.1)
    body = long_job("long-epoch", epochs=1, characters=400_000)  # a minute and more
    body["hyperparameters"]["checkpoint_every_steps"] = 5
    job_id = server.http.post("/train", json=body).json()["id"]
    events: list[tuple[str, str]] = []
    cancelled_at = 0.0
    timeout = httpx.Timeout(10.0, read=60.0)
    with server.http.stream("GET", f"/jobs/{job_id}/events", timeout=timeout) as stream:
        name = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, line.removeprefix("data: ")))
                if name == "progress" and not cancelled_at:
                    shown = server.http.get(f"/jobs/{job_id}").json()
                    cancelled_at = time.monotonic()
                    assert server.http.post(f"/jobs/{job_id}/cancel").status_code == 200
    ended = time.monotonic()

    progress = [data for name, data in events if name == "progress"]
    assert progress
    assert shown["step_progress"]["step"] >= 5
    assert shown["step_progress"]["bits_per_char"] > 0  # text
    assert 0 < shown["step_progress"]["epoch_fraction"] < 1
    assert shown["step_progress"]["chars_per_second"] > 0
    assert 0 < shown["progress"] < 1
    # no epoch ended yet: the time left is the epoch's so far over the share of it done,
    # times the share left
    step = shown["step_progress"]
    left = step["seconds"] / step["epoch_fraction"] * (1 - step["epoch_fraction"])
    assert shown["eta_seconds"] == pytest.approx(left)
    assert events[-1][0] == "end"
    assert server.http.get(f"/jobs/{job_id}").json()["status"] == "cancelled"
    assert ended - cancelled_at < 5


def test_stopping_rules_are_checked_before_a_job_is_queued(
    client: TestClient, hello: dict[str, Any]
) -> None:
    refusals = {
        "early_stopping_patience": (
            {"early_stopping_patience": 2, "validation_fraction": 0.0},
            ["body", "hyperparameters"],
            "early_stopping_patience needs validation data",
        ),
        "too-few-to-hold-out": (
            {"early_stopping_patience": 2, "validation_fraction": 0.2},
            ["body", "hyperparameters", "validation_fraction"],
            "0.2 of 1 examples holds none out",
        ),
        "max_seconds": (
            {"max_seconds": 2_000_000.0},
            ["body", "hyperparameters", "max_seconds"],
            "CHARNN_JOB_TIMEOUT_SECONDS",
        ),
        "checkpoint_every_steps": (
            {"checkpoint_every_steps": 1},
            ["body", "hyperparameters", "checkpoint_every_steps"],
            "at least 10 allowed (each report writes a checkpoint) (limit set by "
            "CHARNN_MIN_CHECKPOINT_EVERY_STEPS)",
        ),
    }
    for given, loc, words in refusals.values():
        body = {**hello, "hyperparameters": {**hello["hyperparameters"], **given}}

        response = client.post("/train", json=body)

        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"][: len(loc)] == loc
        assert words in error["msg"]
