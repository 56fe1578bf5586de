"""Whatever a client sends, the answer is a 4xx with a ``detail``, never a 500.

Bodies are sent as raw bytes, since Python's JSON parser (which FastAPI uses) also
takes ``NaN``, ``Infinity`` and lone surrogates such as ``"\\ud800"``, which a JSON
response cannot carry back.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from app.ml.checkpoint import Checkpoint

HELLO = '"model_name": "hello", "data": {"pairs": [{"input": "hello", "target": "ohlol"}]}'
BIG = "100000000000000000000"  # past any integer column

CASES = [
    # POST /train
    ("POST", "/train", "null"),
    ("POST", "/train", '"hello"'),
    ("POST", "/train", "{" + HELLO),
    ("POST", "/train", '{"model_name": "hello", "data": null}'),
    ("POST", "/train", '{"model_name": "hello", "data": "hello"}'),
    ("POST", "/train", '{"model_name": "hello", "data": {"pairs": null}}'),
    ("POST", "/train", '{"model_name": "hello", "data": {"pairs": [null]}}'),
    ("POST", "/train", '{"model_name": "hello", "data": {"pairs": [{"input": 5, "target": 6}]}}'),
    ("POST", "/train", '{"model_name": "hello", "data": {"pairs": [], "text": "abc"}}'),
    ("POST", "/train", '{"model_name": "hello", "data": {"text": "ab\\ud800ab"}}'),
    ("POST", "/train", '{"model_name": "h\\ud800", "data": {"text": "abab"}}'),
    ("POST", "/train", "{" + HELLO + ', "hyperparameters": null}'),
    ("POST", "/train", "{" + HELLO + ', "hyperparameters": {"learning_rate": NaN}}'),
    ("POST", "/train", "{" + HELLO + ', "hyperparameters": {"epochs": Infinity}}'),
    ("POST", "/train", "{" + HELLO + ', "hyperparameters": {"dropout": -Infinity}}'),
    ("POST", "/train", "{" + HELLO + ', "hyperparameters": {"hidden_size": ' + BIG + "}}"),
    ("POST", "/train", "{" + HELLO + ', "hyperparameters": {"seed": ' + BIG + "}}"),
    ("POST", "/train", "{" + HELLO + ', "vocab": {"input": ["ab"], "output": ["o"]}}'),
    ("POST", "/train", "{" + HELLO + ', "vocab": {"input": ["h", "h"], "output": ["o"]}}'),
    ("POST", "/train", "{" + HELLO + ', "vocab": {"input": [], "output": []}}'),
    ("POST", "/train", "{" + HELLO + ', "vocab": {"input": ["\\ud800"], "output": ["o"]}}'),
    ("POST", "/train", "{" + HELLO + ', "device": "tpu"}'),
    # POST /predict
    ("POST", "/predict", '{"model_name": "hello", "inputs": ["h\\ud800llo"]}'),
    ("POST", "/predict", '{"model_name": "hello", "inputs": ["\\u0000"]}'),
    ("POST", "/predict", '{"model_name": "hello", "inputs": [null]}'),
    ("POST", "/predict", '{"model_name": "hello", "inputs": ["hello"], "version": ' + BIG + "}"),
    ("POST", "/predict", '{"model_name": "hello", "inputs": ["hello"], "top_k": NaN}'),
    # POST /generate
    ("POST", "/generate", '{"model_name": "hello", "prompt": "he", "temperature": NaN}'),
    ("POST", "/generate", '{"model_name": "hello", "prompt": "he", "length": Infinity}'),
    ("POST", "/generate", '{"model_name": "hello", "prompt": "h\\ud800"}'),
    ("POST", "/generate", '{"model_name": "hello", "prompt": "he", "version": ' + BIG + "}"),
    # paths and queries
    ("GET", f"/jobs?offset={BIG}", None),
    ("GET", "/jobs?limit=NaN", None),
    ("GET", "/jobs/%00", None),
    ("GET", "/jobs/" + "a" * 5000, None),
    ("POST", "/jobs/..%2F..%2Fregistry.db/cancel", None),
    ("GET", "/models/..%2F..", None),
    ("GET", "/models/hello/versions/-1", None),
    ("GET", f"/models/hello/versions/{BIG}", None),
    ("DELETE", f"/models/hello/versions/{BIG}", None),
]


@pytest.mark.parametrize(("method", "path", "body"), CASES)
def test_no_input_yields_a_server_error(
    client: TestClient,
    publish: Callable[[str, Checkpoint], int],
    hello_model: Checkpoint,
    method: str,
    path: str,
    body: str | None,
) -> None:
    publish("hello", hello_model)

    response = client.request(
        method,
        path,
        content=body.encode() if body is not None else None,
        headers={"content-type": "application/json"},
    )

    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]


def test_a_lone_surrogate_is_named_escaped(
    client: TestClient, publish: Callable[[str, Checkpoint], int], hello_model: Checkpoint
) -> None:
    publish("hello", hello_model)

    response = client.post(
        "/predict",
        content=b'{"model_name": "hello", "inputs": ["h\\ud800llo"]}',
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["msg"] == "unknown character '\\ud800' at position 1; the vocabulary is 'ehlo'"
    assert error["input"] == "\\ud800"


def test_not_a_number_is_named_as_text(client: TestClient) -> None:
    response = client.post(
        "/generate",
        content=b'{"model_name": "hello", "prompt": "he", "temperature": NaN}',
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["loc"], error["input"]) == (["body", "temperature"], "nan")
