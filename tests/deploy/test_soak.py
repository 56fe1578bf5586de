"""A bounded soak: 30 training jobs in sequence on one long-lived worker while predict
traffic runs. Every job ends in a final state, no prediction fails, and memory stays flat.

The budget: after the first 5 jobs have warmed everything up, the worker's resident
memory may grow by at most 64 MiB over the next 25 jobs, and the API's by at most 64 MiB.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import proc_status_mib

JOBS = 30
WARM_UP_JOBS = 5
BUDGET_MIB = 64.0
FINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def deployment(
    start_deployment: Callable[..., Any], postgres_url: str, redis_server: Any
) -> Iterator[Any]:
    deployment = start_deployment(postgres_url, redis_server.url, workers=1)
    yield deployment
    deployment.stop()


class PredictTraffic:
    """Predicts "hello" in a loop until stopped; counts answers and failures."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.stop = threading.Event()
        self.answers = 0
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        body = {"model_name": "hello", "inputs": ["hello"]}
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            while not self.stop.is_set() and self.answers < 100_000:
                response = http.post("/predict", json=body)
                if response.status_code != 200 or response.json()["outputs"] != ["ohlol"]:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
                self.answers += 1


def test_thirty_jobs_under_predict_traffic_end_well_in_flat_memory(
    deployment: Any, hello: dict[str, Any], wait_for_job: Callable[..., dict[str, Any]]
) -> None:
    first = deployment.http.post("/train", json=hello).json()
    assert wait_for_job(deployment.http, first["id"], timeout=120)["status"] == "succeeded"
    traffic = PredictTraffic(deployment.api.base_url)
    traffic.thread.start()
    [worker] = deployment.workers
    memory: dict[str, list[float]] = {"worker": [], "api": []}

    statuses = []
    for number in range(1, JOBS + 1):
        body = {**hello, "model_name": "soak", "hyperparameters": {"epochs": 5, "seed": number}}
        job = deployment.http.post("/train", json=body).json()
        statuses.append(wait_for_job(deployment.http, job["id"], timeout=120)["status"])
        if number in (WARM_UP_JOBS, JOBS):
            memory["worker"].append(proc_status_mib(worker.pid))
            memory["api"].append(proc_status_mib(deployment.api.pid))
    traffic.stop.set()
    traffic.thread.join(30)

    artifacts = Path(__file__).resolve().parents[2] / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "soak.json").write_text(
        json.dumps({"jobs": JOBS, "predictions": traffic.answers, "rss_mib": memory}, indent=2)
    )
    assert set(statuses) <= FINAL
    assert statuses.count("succeeded") == JOBS
    assert deployment.http.get("/models/soak").json()["versions"][-1]["version"] == JOBS
    assert traffic.answers > JOBS
    assert traffic.failures == []
    for process, (warm, last) in memory.items():
        assert last - warm <= BUDGET_MIB, f"{process} grew {last - warm:.1f} MiB"
