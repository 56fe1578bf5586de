"""/metrics in Prometheus format, request ids, and structured logs."""

from __future__ import annotations

import json
import logging
import platform
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session

from app import __version__
from app.api.observability import EpochDurations
from app.logs import JsonFormatter, RequestIdFilter, request_id
from app.ml.checkpoint import Checkpoint
from app.store.layout import new_id
from app.store.registry import Registry
from app.store.tables import EpochRow
from tests.conftest import TestClient, hello_body


def sample(text: str, name: str) -> float:
    """The value of the first sample line that starts with ``name``."""
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_metrics_count_requests_predictions_batches_and_models(
    client: TestClient, publish: Callable[[str, Checkpoint], int], hello_model: Checkpoint
) -> None:
    publish("hello", hello_model)
    for _ in range(3):
        client.post("/predict", json={"model_name": "hello", "inputs": ["hello", "hel"]})

    response = client.get("/metrics")

    text = response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    route = 'charnn_http_requests_total{method="POST",route="/predict",status="200"}'
    assert sample(text, route) == 3
    assert sample(text, 'charnn_predictions_total{model="hello"}') == 6
    assert sample(text, "charnn_predict_batch_size_count") == 3
    assert sample(text, "charnn_predict_batch_size_sum") == 6
    assert sample(text, 'charnn_jobs{status="queued"}') == 0
    assert sample(text, "charnn_loaded_models") == 1
    assert 'charnn_http_request_seconds_bucket{le="0.005",method="POST",route="/predict"}' in text


def test_process_python_and_build_info_are_exposed(client: TestClient) -> None:
    text = client.get("/metrics").text

    assert sample(text, "process_resident_memory_bytes") > 0
    assert sample(text, "process_cpu_seconds_total") > 0
    assert (
        f'python_info{{implementation="CPython",major="{platform.python_version_tuple()[0]}"'
        in text
    )
    build = next(line for line in text.splitlines() if line.startswith("charnn_build_info{"))
    assert f'version="{__version__}"' in build
    assert f'python="{platform.python_version()}"' in build
    assert 'torch="' in build
    assert build.endswith(" 1.0")


def test_epochs_are_counted_once_each_and_streams_have_no_latency(
    client: TestClient, wait_for_job: Callable[..., dict[str, Any]]
) -> None:
    job = client.post("/train", json=hello_body()).json()
    wait_for_job(client, job["id"])
    with client.stream("GET", f"/jobs/{job['id']}/events") as events:
        assert events.status_code == 200
        events.read()  # the job is over: the whole history, then the end

    first, second = client.get("/metrics").text, client.get("/metrics").text

    # a histogram, not a snapshot: each of the 15 epochs once, however often it is read
    assert sample(first, "charnn_epoch_seconds_count") == 15
    assert sample(second, "charnn_epoch_seconds_count") == 15
    assert sample(second, 'charnn_epoch_seconds_bucket{le="+Inf"}') == 15
    assert sample(second, "charnn_epoch_seconds_sum") == sample(first, "charnn_epoch_seconds_sum")
    # the stream lasted as long as its job: counted, but kept out of the latency histogram
    stream = 'charnn_http_streams_total{route="/jobs/{job_id}/events",status="200"}'
    assert sample(second, stream) == 1
    assert "/events" not in "".join(
        line for line in second.splitlines() if line.startswith("charnn_http_request")
    )


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    mine = client.get("/healthz", headers={"X-Request-ID": "trace-42"})
    fresh = client.get("/healthz")

    assert mine.headers["X-Request-ID"] == "trace-42"
    assert len(fresh.headers["X-Request-ID"]) == 16


def test_json_logs_carry_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    record = logging.LogRecord("charnn", logging.INFO, __file__, 1, "trained %s", ("hello",), None)
    token = request_id.set("trace-42")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id.reset(token)

    entry = json.loads(JsonFormatter().format(record))

    assert entry["message"] == "trained hello"
    assert entry["request_id"] == "trace-42"
    assert entry["level"] == "info"


# --- epoch durations, followed in the registry ----------------------------------------------


@pytest.fixture
def registry(postgres_url: str) -> Iterator[Registry]:
    """A PostgreSQL registry: where ids are taken in one order and committed in another."""
    registry = Registry.connect(postgres_url)
    yield registry
    registry.close()


def running_job(registry: Registry) -> str:
    job = registry.create_job(
        job_id=new_id(),
        model_name="hello",
        request={"model_name": "hello", "hyperparameters": {"epochs": 15}},
        device="cpu",
        epochs=15,
        max_attempts=1,
    )
    registry.claim_job(job.id, "worker")
    return job.id


def observed(durations: EpochDurations) -> tuple[float, float]:
    """``(count, sum)`` of the histogram, as a scrape reads it."""
    values = {s.name: s.value for family in durations.collect() for s in family.samples}
    return values["charnn_epoch_seconds_count"], values["charnn_epoch_seconds_sum"]


def record(registry: Registry, job_id: str, epoch: int, seconds: float) -> None:
    registry.record_epoch(job_id, "worker", 1, {"epoch": epoch, "loss": 0.5, "seconds": seconds})


def test_a_process_counts_the_epochs_recorded_since_it_started(registry: Registry) -> None:
    job_id = running_job(registry)
    record(registry, job_id, 1, 100.0)  # before this process: not its to count
    durations = EpochDurations(registry.epoch_seconds_by_id, registry.last_epoch_id())
    assert observed(durations) == (0, 0)

    record(registry, job_id, 2, 0.5)
    record(registry, job_id, 3, 0.25)

    assert observed(durations) == (2, 0.75)
    assert observed(durations) == (2, 0.75)  # read again: nothing twice


def test_an_epoch_committed_after_a_later_one_is_still_counted(
    registry: Registry, postgres_url: str
) -> None:
    first, second = running_job(registry), running_job(registry)
    durations = EpochDurations(registry.epoch_seconds_by_id, registry.last_epoch_id())
    with Session(registry.engine) as slow:  # a worker whose transaction is still open
        slow.add(EpochRow(job_id=first, epoch=1, attempt=1, metrics={"epoch": 1, "seconds": 2.0}))
        slow.flush()  # its id is taken...
        record(registry, second, 1, 1.0)  # ...a higher one commits first, and is scraped
        assert observed(durations) == (1, 1.0)
        slow.commit()

    assert observed(durations) == (2, 3.0)
    assert durations.gaps == {}


def test_an_id_that_never_commits_is_given_up_after_a_while(registry: Registry) -> None:
    first, second = running_job(registry), running_job(registry)
    now = [0.0]
    durations = EpochDurations(
        registry.epoch_seconds_by_id, registry.last_epoch_id(), clock=lambda: now[0]
    )
    with Session(registry.engine) as rolled_back:
        rolled_back.add(EpochRow(job_id=first, epoch=1, attempt=1, metrics={"seconds": 2.0}))
        rolled_back.flush()
        record(registry, second, 1, 1.0)
        assert observed(durations) == (1, 1.0)
        rolled_back.rollback()
    assert len(durations.gaps) == 1  # watched...

    now[0] = EpochDurations.GAP_SECONDS + 1
    assert observed(durations) == (1, 1.0)
    assert durations.gaps == {}  # ...then no more
