"""POST /predict and POST /generate: answers, and every way a request can be refused.

The store holds "hello" (aligned pairs, "hello" -> "ohlol") and "fox" (plain text),
published as finished jobs publish them. Limits are set small so that passing them
is cheap: 4 inputs, 16 characters each, 100 generated characters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.ml.checkpoint import Checkpoint
from tests.conftest import settings_on

LIMITS = {"max_predict_inputs": 4, "max_input_length": 16, "max_generate_length": 100}


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory,
    hello_model: Checkpoint,
    fox_model: Checkpoint,
    publish_model: Callable[[Path, str, Checkpoint], int],
) -> Iterator[TestClient]:
    store = tmp_path_factory.mktemp("store")
    publish_model(store, "hello", hello_model)
    publish_model(store, "fox", fox_model)
    settings = settings_on(store, **LIMITS)
    with TestClient(create_app(settings)) as client:
        yield client


def predict(api: TestClient, **body: Any) -> tuple[int, Any]:
    response = api.post("/predict", json={"model_name": "hello", **body})
    return response.status_code, response.json()


def generate(api: TestClient, **body: Any) -> tuple[int, Any]:
    response = api.post("/generate", json={"model_name": "fox", **body})
    return response.status_code, response.json()


# --- predict ----------------------------------------------------------------------------------


def test_predict_maps_each_input_to_its_output(api: TestClient) -> None:
    assert predict(api, inputs=["hello", "hell", ""]) == (
        200,
        {"model_name": "hello", "version": 1, "outputs": ["ohlol", "ohlo", ""], "details": None},
    )


def test_predict_a_given_version(api: TestClient) -> None:
    status, body = predict(api, version=1, inputs=["hello"])

    assert status == 200
    assert (body["version"], body["outputs"]) == (1, ["ohlol"])


def test_predict_with_probabilities_and_top_k(api: TestClient) -> None:
    status, body = predict(api, inputs=["hello"], return_probabilities=True, top_k=2)

    assert status == 200
    [detail] = body["details"]
    assert len(detail["probabilities"]) == 5
    assert all(0.5 < p <= 1 for p in detail["probabilities"])
    assert [[c["character"] for c in position][0] for position in detail["top_k"]] == list("ohlol")
    for position, chosen in zip(detail["top_k"], detail["probabilities"], strict=True):
        assert len(position) == 2
        assert position[0]["probability"] == pytest.approx(chosen)
        assert position[0]["probability"] >= position[1]["probability"]


def test_unknown_characters_are_named_one_by_one_with_their_position(api: TestClient) -> None:
    status, body = predict(api, inputs=["hexlo", "hello", "hzllq"])

    assert status == 422
    assert body == {
        "detail": [
            {
                "loc": ["body", "inputs", 0],
                "msg": "unknown character 'x' at position 2; the vocabulary is 'ehlo'",
                "type": "unknown_character",
                "input": "x",
                "ctx": {"position": 2, "input_index": 0},
            },
            {
                "loc": ["body", "inputs", 2],
                "msg": "unknown character 'z' at position 1; the vocabulary is 'ehlo'",
                "type": "unknown_character",
                "input": "z",
                "ctx": {"position": 1, "input_index": 2},
            },
            {
                "loc": ["body", "inputs", 2],
                "msg": "unknown character 'q' at position 4; the vocabulary is 'ehlo'",
                "type": "unknown_character",
                "input": "q",
                "ctx": {"position": 4, "input_index": 2},
            },
        ]
    }


def test_too_many_inputs_names_the_limit_and_its_setting(api: TestClient) -> None:
    assert predict(api, inputs=["hello"] * 5) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "inputs"],
                    "msg": "inputs: 5 inputs, at most 4 allowed "
                    "(limit set by CHARNN_MAX_PREDICT_INPUTS)",
                    "type": "limit_exceeded",
                }
            ]
        },
    )


def test_too_long_an_input_names_the_limit_and_its_setting(api: TestClient) -> None:
    assert predict(api, inputs=["hello", "hello" * 4]) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "inputs", 1],
                    "msg": "inputs[1]: 20 characters, at most 16 allowed "
                    "(limit set by CHARNN_MAX_INPUT_LENGTH)",
                    "type": "limit_exceeded",
                }
            ]
        },
    )


def test_an_unknown_model_is_not_found(api: TestClient) -> None:
    assert predict(api, model_name="nope", inputs=["hello"]) == (
        404,
        {"detail": "model 'nope' does not exist"},
    )


def test_an_unknown_version_is_not_found(api: TestClient) -> None:
    assert predict(api, version=2, inputs=["hello"]) == (
        404,
        {"detail": "model 'hello' has no version 2"},
    )


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        pytest.param({"inputs": []}, ["body", "inputs"], "too_short", id="no inputs"),
        pytest.param({}, ["body", "inputs"], "missing", id="inputs missing"),
        pytest.param({"inputs": "hello"}, ["body", "inputs"], "list_type", id="not a list"),
        pytest.param({"inputs": [5]}, ["body", "inputs", 0], "string_type", id="not a string"),
        pytest.param(
            {"inputs": ["a"], "version": 0}, ["body", "version"], "greater_than_equal", id="v0"
        ),
        pytest.param(
            {"inputs": ["a"], "top_k": 65}, ["body", "top_k"], "less_than_equal", id="top_k"
        ),
        pytest.param(
            {"inputs": ["a"], "temperature": 1},
            ["body", "temperature"],
            "extra_forbidden",
            id="unknown field",
        ),
        pytest.param(
            {"inputs": ["a"], "model_name": "Hello"},
            ["body", "model_name"],
            "string_pattern_mismatch",
            id="uppercase name",
        ),
    ],
)
def test_malformed_predict_requests_are_refused(
    api: TestClient, body: dict[str, Any], loc: list[Any], kind: str
) -> None:
    status, answer = predict(api, **body)

    assert status == 422
    assert [(e["loc"], e["type"]) for e in answer["detail"]] == [(loc, kind)]


# --- generate ---------------------------------------------------------------------------------


def test_generate_continues_a_prompt(api: TestClient) -> None:
    status, body = generate(api, prompt="the quick", length=30, temperature=0)

    assert status == 200
    assert (body["model_name"], body["version"]) == ("fox", 1)
    assert body["text"].startswith("the quick")
    assert len(body["text"]) == len("the quick") + 30


def test_generate_with_a_seed_repeats_itself(api: TestClient) -> None:
    first = generate(api, prompt="the", length=40, temperature=1.0, seed=7)
    second = generate(api, prompt="the", length=40, temperature=1.0, seed=7)

    assert first[0] == 200
    assert first == second


def test_generate_on_a_model_trained_on_pairs_is_refused(api: TestClient) -> None:
    assert generate(api, model_name="hello", prompt="hel") == (
        422,
        {
            "detail": "this model was trained on aligned pairs, which map inputs to outputs; "
            "generation needs a model trained on text"
        },
    )


def test_generate_unknown_prompt_characters_are_named(api: TestClient) -> None:
    status, body = generate(api, prompt="the QUICK")

    assert status == 422
    assert [(e["loc"], e["ctx"]["position"], e["input"]) for e in body["detail"]] == [
        (["body", "prompt"], 4, "Q"),
        (["body", "prompt"], 5, "U"),
        (["body", "prompt"], 6, "I"),
        (["body", "prompt"], 7, "C"),
        (["body", "prompt"], 8, "K"),
    ]


def test_generate_too_long_names_the_limit_and_its_setting(api: TestClient) -> None:
    assert generate(api, prompt="the", length=101) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "length"],
                    "msg": "length: 101 characters asked for, at most 100 "
                    "(limit set by CHARNN_MAX_GENERATE_LENGTH)",
                    "type": "limit_exceeded",
                }
            ]
        },
    )


def test_generate_too_long_a_prompt_names_the_limit_and_its_setting(api: TestClient) -> None:
    assert generate(api, prompt="the quick brown fox") == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "prompt"],
                    "msg": "prompt: 19 characters, at most 16 allowed "
                    "(limit set by CHARNN_MAX_INPUT_LENGTH)",
                    "type": "limit_exceeded",
                }
            ]
        },
    )


def test_generate_from_an_unknown_model_is_not_found(api: TestClient) -> None:
    assert generate(api, model_name="nope", prompt="the") == (
        404,
        {"detail": "model 'nope' does not exist"},
    )
