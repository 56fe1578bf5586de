"""POST /predict is served by a bare ASGI handler (``app.api.fast_predict``) while the
service runs, with the FastAPI route behind it for everything it hands back.

The contract: a client cannot tell the two apart. Each request below is sent twice to
the same running app, once with the fast path on and once with it switched off (the
route alone), and the two answers must match: status, body and headers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import CharnnApp, create_app
from app.ml.checkpoint import Checkpoint
from tests.conftest import settings_on

KEY = "predict-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}"}

# (description, keyword arguments for TestClient.post("/predict", ...)), where "headers"
# add to (or, as None, remove from) HEADERS and "chunks" is a body sent in pieces

REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("an answer", {"json": {"model_name": "hello", "inputs": ["hello", "hell", ""]}}),
    ("a given version", {"json": {"model_name": "hello", "version": 1, "inputs": ["hello"]}}),
    (
        "details",
        {"json": {"model_name": "hello", "inputs": ["hel"], "top_k": 2, "return_probabilities": 1}},
    ),
    ("an unknown character", {"json": {"model_name": "hello", "inputs": ["hellx", "aa"]}}),
    ("an unknown model", {"json": {"model_name": "nope", "inputs": ["hello"]}}),
    ("an unknown version", {"json": {"model_name": "hello", "version": 9, "inputs": ["hello"]}}),
    ("too many inputs", {"json": {"model_name": "hello", "inputs": ["h"] * 5}}),
    ("too long an input", {"json": {"model_name": "hello", "inputs": ["h" * 17]}}),
    ("a field error", {"json": {"model_name": "hello", "inputs": []}}),
    ("an unknown field", {"json": {"model_name": "hello", "inputs": ["h"], "extra": 1}}),
    ("not an object", {"json": ["hello"]}),
    (
        "broken JSON",
        {"content": b'{"model_name": ', "headers": {"content-type": "application/json"}},
    ),
    ("not UTF-8", {"content": b'{"a": "\xff"}', "headers": {"content-type": "application/json"}}),
    ("no content type", {"content": b'{"model_name": "hello", "inputs": ["hello"]}'}),
    ("a form", {"data": {"model_name": "hello"}}),
    ("a body over the limit", {"json": {"model_name": "hello", "inputs": ["h" * 1100]}}),
    (
        "a streamed body over the limit",
        {
            "chunks": [b'{"model_name": "hello", "inputs": ["', b"h" * 1100, b'"]}'],
            "headers": {"content-type": "application/json"},
        },
    ),
    (
        "a streamed body",
        {
            "chunks": [b'{"model_name": "hello", ', b'"inputs": ["hello"]}'],
            "headers": {"content-type": "application/json; charset=utf-8"},
        },
    ),
    (
        "no key",
        {"json": {"model_name": "hello", "inputs": ["hello"]}, "headers": {"Authorization": None}},
    ),
    (
        "a wrong key",
        {
            "json": {"model_name": "hello", "inputs": ["h"]},
            "headers": {"Authorization": "Bearer x"},
        },
    ),
    (
        "another scheme",
        {"json": {"model_name": "hello", "inputs": ["h"]}, "headers": {"Authorization": "Basic x"}},
    ),
    ("a classifier's labels", {"json": {"model_name": "names", "inputs": ["Sato", "Rossi"]}}),
    (
        "a classifier's top k",
        {
            "json": {
                "model_name": "names",
                "inputs": ["Ivanov"],
                "top_k": 5,
                "return_probabilities": 1,
            }
        },
    ),
    ("an empty input to a classifier", {"json": {"model_name": "names", "inputs": ["Sato", ""]}}),
    (
        "a request id",
        {
            "json": {"model_name": "hello", "inputs": ["hello"]},
            "headers": {"X-Request-ID": "abc-123"},
        },
    ),
]


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory,
    hello_model: Checkpoint,
    surnames_model: Checkpoint,
    publish_model: Callable[[Path, str, Checkpoint], int],
) -> Iterator[tuple[CharnnApp, TestClient]]:
    store = tmp_path_factory.mktemp("store")
    publish_model(store, "hello", hello_model)
    publish_model(store, "names", surnames_model)
    settings = settings_on(
        store,
        api_keys=f"predict:{KEY},admin:{ADMIN_KEY}",  # type: ignore[arg-type]
        max_predict_inputs=4,
        max_input_length=16,
        max_body_bytes=1024,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        yield app, client


def post(client: TestClient, request: dict[str, Any]) -> Any:
    kwargs = dict(request)
    headers = {**HEADERS, **kwargs.pop("headers", {})}
    kwargs["headers"] = {k: v for k, v in headers.items() if v is not None}
    if "chunks" in kwargs:
        kwargs["content"] = iter(kwargs.pop("chunks"))  # chunked: no Content-Length
    return client.post("/predict", **kwargs)


def answer(client: TestClient, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
    response = post(client, request)
    headers = {k: v for k, v in response.headers.items() if k not in ("date", "x-request-id")}
    return response.status_code, response.content, headers


@pytest.mark.parametrize("request_", [r for _, r in REQUESTS], ids=[d for d, _ in REQUESTS])
def test_the_fast_path_answers_as_the_route_does(
    app: tuple[CharnnApp, TestClient], request_: dict[str, Any]
) -> None:
    charnn, client = app
    fast_path = charnn.fast_predict
    assert fast_path is not None, "the fast path is installed while the service runs"
    fast = answer(client, request_)
    charnn.fast_predict = None
    try:
        route = answer(client, request_)
    finally:
        charnn.fast_predict = fast_path
    assert fast == route


def test_every_answer_carries_a_request_id(app: tuple[CharnnApp, TestClient]) -> None:
    _, client = app
    ids = set()
    for _, request in REQUESTS:
        ids.add(post(client, request).headers["x-request-id"])
    assert "abc-123" in ids  # the client's own, echoed
    assert len(ids) == len(REQUESTS)  # and a new one for everyone else


def test_the_fast_path_counts_in_the_metrics(app: tuple[CharnnApp, TestClient]) -> None:
    _, client = app

    def served(status: str) -> float:
        metrics = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).text
        line = f'charnn_http_requests_total{{method="POST",route="/predict",status="{status}"}}'
        return next((float(s.split()[-1]) for s in metrics.splitlines() if s.startswith(line)), 0)

    before_ok, before_404 = served("200"), served("404")
    client.post("/predict", json={"model_name": "hello", "inputs": ["hello"]}, headers=HEADERS)
    client.post("/predict", json={"model_name": "nope", "inputs": ["hello"]}, headers=HEADERS)
    assert (served("200"), served("404")) == (before_ok + 1, before_404 + 1)


def test_the_fast_path_is_removed_at_shutdown(
    tmp_path: Path, hello_model: Checkpoint, publish_model: Callable[[Path, str, Checkpoint], int]
) -> None:
    publish_model(tmp_path, "hello", hello_model)
    app = create_app(settings_on(tmp_path))
    assert app.fast_predict is None  # nothing to serve with before start-up
    with TestClient(app):
        assert app.fast_predict is not None
    assert app.fast_predict is None
