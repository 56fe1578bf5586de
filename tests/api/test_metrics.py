"""/metrics in Prometheus format, request ids, and structured logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest

from app.api.observability import JsonFormatter, RequestIdFilter, request_id
from app.ml.checkpoint import Checkpoint
from tests.conftest import TestClient


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
