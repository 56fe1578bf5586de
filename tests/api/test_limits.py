"""Every limit is a setting, and every refusal names the limit and the setting."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from app.main import create_app
from app.ml.checkpoint import Checkpoint
from app.ml.model import estimate_parameters
from app.settings import Settings
from tests.conftest import TestClient, long_body

PREDICT_KEY = "predict-key-0123456789abcdef"


@pytest.fixture
def limited(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    """``limited(**settings)``: a running service with those limits."""
    with ExitStack() as stack:
        yield lambda **settings: stack.enter_context(
            TestClient(create_app(make_settings(**settings)))
        )


def test_a_body_declared_too_large_is_refused_at_once(limited: Callable[..., TestClient]) -> None:
    client = limited(max_body_bytes=1024)

    response = client.post(
        "/predict", content=b"x" * 2000, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json() == {
        "detail": "request body larger than 1024 bytes (limit set by CHARNN_MAX_BODY_BYTES)"
    }


def test_a_streamed_body_is_counted_as_it_arrives(limited: Callable[..., TestClient]) -> None:
    client = limited(max_body_bytes=1024)
    chunks = (b'{"model_name": "hello", "inputs": ["' + b"h" * 600 + b'"]}' for _ in range(3))

    response = client.post("/predict", content=chunks, headers={"Content-Type": "application/json"})

    assert "content-length" not in response.request.headers  # sent chunked
    assert response.status_code == 413
    assert "CHARNN_MAX_BODY_BYTES" in response.json()["detail"]


@pytest.mark.parametrize(
    ("name", "value", "setting"),
    [
        ("hidden_size", 2048, "CHARNN_MAX_HIDDEN_SIZE"),
        ("num_layers", 6, "CHARNN_MAX_NUM_LAYERS"),
        ("embedding_size", 1000, "CHARNN_MAX_EMBEDDING_SIZE"),
        ("epochs", 20_000, "CHARNN_MAX_EPOCHS"),
        ("seq_len", 2048, "CHARNN_MAX_SEQ_LEN"),
        ("batch_size", 2048, "CHARNN_MAX_BATCH_SIZE"),
    ],
)
def test_each_hyperparameter_has_a_limit(
    client: TestClient, hello: dict[str, Any], name: str, value: int, setting: str
) -> None:
    hello["hyperparameters"][name] = value

    response = client.post("/train", json=hello)

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "hyperparameters", name]
    assert error["msg"].endswith(
        f"at most allowed (limit set by {setting})".replace(
            "at most allowed", error["msg"].split(", ")[-1].split(" (")[0]
        )
    )
    assert setting in error["msg"]


def test_the_total_cost_of_a_job_has_a_limit(limited: Callable[..., TestClient]) -> None:
    client = limited(max_training_cost=1e6)

    response = client.post("/train", json=long_body("costly", epochs=10))

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "hyperparameters"]
    assert "parameters x 8000 characters x 10 epochs" in error["msg"]
    assert "CHARNN_MAX_TRAINING_COST" in error["msg"]


def test_a_budget_bounds_what_a_job_costs(limited: Callable[..., TestClient]) -> None:
    """A job stopped by max_steps costs its steps' characters; one stopped by max_seconds,
    its time (itself bounded by CHARNN_JOB_TIMEOUT_SECONDS), whatever its epochs."""
    client = limited(max_training_cost=1e10)
    body = long_body("costly", epochs=10_000)  # windows of 64, 16 a step

    unbounded = client.post("/train", json=body)
    few_steps = client.post("/train", json=with_hyperparameters(body, max_steps=5))
    many_steps = client.post("/train", json=with_hyperparameters(body, max_steps=1000))
    timed = client.post("/train", json=with_hyperparameters(body, max_seconds=60))

    assert unbounded.status_code == many_steps.status_code == 422
    assert "or a budget (max_steps, max_seconds), bound it" in unbounded.text
    assert "1000 steps x 16 windows x 64 characters" in many_steps.text
    assert few_steps.status_code == timed.status_code == 202, timed.text


def with_hyperparameters(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**body, "hyperparameters": {**body["hyperparameters"], **changes}}


def test_a_full_queue_answers_429_with_retry_after(limited: Callable[..., TestClient]) -> None:
    client = limited(max_queued_jobs=1, max_concurrent_jobs=1)
    client.post("/train", json=long_body("first", epochs=200))  # runs (or waits)
    client.post("/train", json=long_body("second", epochs=200))  # waits

    responses = [client.post("/train", json=long_body("third", epochs=2)) for _ in range(2)]

    refused = [r for r in responses if r.status_code == 429]
    assert refused, [r.status_code for r in responses]
    assert refused[0].headers["Retry-After"] == "30"
    assert "CHARNN_MAX_QUEUED_JOBS" in refused[0].json()["detail"]


def test_a_key_predicting_too_fast_is_slowed_down(
    limited: Callable[..., TestClient],
    publish: Callable[[str, Checkpoint], int],
    hello_model: Checkpoint,
) -> None:
    publish("hello", hello_model)
    client = limited(api_keys=f"predict:{PREDICT_KEY}", predict_rate_per_key=1.0)
    body = {"model_name": "hello", "inputs": ["hello"]}
    headers = {"Authorization": f"Bearer {PREDICT_KEY}"}

    statuses = [client.post("/predict", json=body, headers=headers) for _ in range(4)]

    assert [r.status_code for r in statuses[:2]] == [200, 200]  # a burst of twice the rate
    assert statuses[-1].status_code == 429
    assert statuses[-1].headers["Retry-After"] == "1"
    assert "CHARNN_PREDICT_RATE_PER_KEY" in statuses[-1].json()["detail"]


def test_the_compute_of_a_predict_or_generate_has_a_limit(
    limited: Callable[..., TestClient],
    publish: Callable[[str, Checkpoint], int],
    hello_model: Checkpoint,
    fox_model: Checkpoint,
) -> None:
    publish("hello", hello_model)
    publish("fox", fox_model)
    hello, fox = (estimate_parameters(m.config) for m in (hello_model, fox_model))
    client = limited(max_inference_cost=100 * hello)  # 100 characters through "hello"

    ok = client.post("/predict", json={"model_name": "hello", "inputs": ["hello"] * 20})
    assert ok.status_code == 200
    too_much = {"model_name": "hello", "inputs": ["hello"] * 20 + ["h"]}
    refused = client.post("/predict", json=too_much)
    assert refused.status_code == 422
    (error,) = refused.json()["detail"]
    assert error["loc"] == ["body", "inputs"]
    assert f"101 characters through a model of {hello} parameters" in error["msg"]
    assert "CHARNN_MAX_INFERENCE_COST" in error["msg"]

    length = 100 * hello // fox  # "fox" is larger: it may write fewer characters
    body = {"model_name": "fox", "prompt": "the", "length": length}
    refused = client.post("/generate", json=body)
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "length"]
    body["length"] = length - 3
    assert client.post("/generate", json=body).status_code == 200


def test_a_job_past_its_wall_clock_limit_fails_with_the_reason(
    limited: Callable[..., TestClient], wait_for_job: Callable[..., dict[str, Any]]
) -> None:
    client = limited(job_timeout_seconds=2)
    job = client.post("/train", json=long_body("slow", epochs=1000)).json()

    ended = wait_for_job(client, job["id"], timeout=60)

    assert ended["status"] == "failed"
    assert ended["error"] == "ran longer than 2 s (limit set by CHARNN_JOB_TIMEOUT_SECONDS)"
    assert ended["version"] is None
