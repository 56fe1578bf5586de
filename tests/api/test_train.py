"""POST /train: a job is queued only once everything about it has been checked.

Refusals answer 422 in FastAPI's shape, ``{"detail": [{"loc", "msg", "type"}, ...]}``,
with ``loc`` naming the field (``["body", "data", "pairs", 1]`` is ``data.pairs[1]``).
Nothing refused is queued.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

Body = dict[str, Any]


def errors(response: Any) -> list[tuple[list[Any], str, str]]:
    """``(loc, msg, type)`` of each entry of a 422's detail."""
    assert response.status_code == 422, response.text
    return [(e["loc"], e["msg"], e["type"]) for e in response.json()["detail"]]


def with_hyperparameters(hello: Body, **values: Any) -> Body:
    return {**hello, "hyperparameters": {**hello["hyperparameters"], **values}}


def test_a_job_is_accepted_and_queued(client: TestClient, hello: Body) -> None:
    response = client.post("/train", json=hello)

    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] in {"queued", "running"}  # the runner may claim it at once
    assert client.get(f"/jobs/{job['id']}").json()["model_name"] == "hello"
    assert job["hyperparameters"]["epochs"] == 15
    assert job["hyperparameters"]["architecture"] == "embedding_rnn"  # the defaults fill in


# --- defaults that fit the data -----------------------------------------------------------------


def test_text_left_without_hyperparameters_gets_a_gru_sized_for_text(client: TestClient) -> None:
    text = "the quick brown fox jumps over the lazy dog. " * 400  # 18,000 characters
    body = {"model_name": "fox", "data": {"text": text}}

    hyperparameters = client.post("/train", json=body).json()["hyperparameters"]

    assert {k: hyperparameters[k] for k in TEXT_CHOICES} == {
        "architecture": "embedding_rnn",
        "cell": "gru",
        "embedding_size": 32,
        "hidden_size": 256,
        "num_layers": 1,
        "learning_rate": 0.003,
        "batch_size": 32,
        "seq_len": 100,
        "epochs": 189,  # about 3.4 million characters read: 3,400,000 / 18,000
    }


TEXT_CHOICES = [
    "architecture",
    "cell",
    "embedding_size",
    "hidden_size",
    "num_layers",
    "learning_rate",
    "batch_size",
    "seq_len",
    "epochs",
]


def test_given_hyperparameters_win_over_the_text_defaults(client: TestClient) -> None:
    given = {"cell": "lstm", "hidden_size": 32, "epochs": 3, "seed": 0}
    body = {"model_name": "fox", "data": {"text": "abcab" * 10}, "hyperparameters": given}

    hyperparameters = client.post("/train", json=body).json()["hyperparameters"]

    assert {k: hyperparameters[k] for k in given} == given
    assert hyperparameters["embedding_size"] == 32  # what was left out: the text default
    assert hyperparameters["batch_size"] == 32


def test_text_given_dropout_gets_two_layers_for_it_to_act_between(client: TestClient) -> None:
    # the schema's rule (dropout: num_layers >= 2) holds for the fields left out
    body = {"model_name": "fox", "data": {"text": "abcab"}, "hyperparameters": {"dropout": 0.2}}

    hyperparameters = client.post("/train", json=body).json()["hyperparameters"]

    assert (hyperparameters["dropout"], hyperparameters["num_layers"]) == (0.2, 2)


def test_text_defaults_stay_within_the_services_limits(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(max_hidden_size=32, max_seq_len=64, max_epochs=5)
    body = {"model_name": "fox", "data": {"text": "abcab" * 10}}

    with TestClient(create_app(settings)) as client:
        response = client.post("/train", json=body)

    assert response.status_code == 202, response.text
    hyperparameters = response.json()["hyperparameters"]
    assert {k: hyperparameters[k] for k in ("hidden_size", "seq_len", "epochs")} == {
        "hidden_size": 32,
        "seq_len": 64,
        "epochs": 5,
    }


def test_pairs_keep_the_tutorials_defaults(client: TestClient) -> None:
    body = {"model_name": "hello", "data": {"pairs": [{"input": "hello", "target": "ohlol"}]}}

    hyperparameters = client.post("/train", json=body).json()["hyperparameters"]

    assert {k: hyperparameters[k] for k in TEXT_CHOICES} == {
        "architecture": "embedding_rnn",
        "cell": "rnn",
        "embedding_size": 10,
        "hidden_size": 8,
        "num_layers": 2,
        "learning_rate": 0.05,
        "batch_size": 32,
        "seq_len": 64,
        "epochs": 15,
    }


def test_a_job_stores_the_hyperparameters_its_architecture_used(
    client: TestClient, hello: Body, wait_for_job: Callable[..., Body]
) -> None:
    # the tutorial's first model: one cell over one-hot inputs, as wide as the vocabulary
    body = with_hyperparameters(hello, architecture="rnn_cell", hidden_size=8, num_layers=2)

    accepted = client.post("/train", json=body).json()
    wait_for_job(client, accepted["id"])
    version = client.get("/models/hello/versions/1").json()

    used = {"hidden_size": None, "embedding_size": None, "num_layers": 1}
    assert {k: accepted["hyperparameters"][k] for k in used} == used
    assert {k: version["hyperparameters"][k] for k in used} == used
    assert version["config"]["hidden_size"] == 3  # o, h, l
    assert version["config"]["embedding_size"] is None


# --- the data -----------------------------------------------------------------------------------


def test_unknown_characters_in_the_data_against_a_given_vocab(
    client: TestClient, hello: Body
) -> None:
    vocab = {"input": ["h", "e", "l"], "output": ["o", "h", "l"]}

    response = client.post("/train", json={**hello, "vocab": vocab})

    assert response.json()["detail"] == [
        {
            "loc": ["body", "data", "pairs", 0, "input"],
            "msg": "unknown character 'o' at position 4; the vocabulary is 'hel'",
            "type": "unknown_character",
            "input": "o",
            "ctx": {"position": 4, "input_index": 0},
        }
    ]
    assert response.status_code == 422


def test_unknown_characters_in_text_against_a_given_vocab(client: TestClient, hello: Body) -> None:
    body = {
        **hello,
        "data": {"text": "abcab!"},
        "vocab": {"input": list("abc"), "output": list("abc")},
    }

    assert errors(client.post("/train", json=body)) == [
        (
            ["body", "data", "text"],
            "unknown character '!' at position 5; the vocabulary is 'abc'",
            "unknown_character",
        )
    ]


def test_pairs_of_different_lengths_name_the_pair(client: TestClient, hello: Body) -> None:
    pairs = [{"input": "hello", "target": "ohlol"}, {"input": "hi", "target": "ohh"}]

    assert errors(client.post("/train", json={**hello, "data": {"pairs": pairs}})) == [
        (
            ["body", "data", "pairs", 1],
            "input has 2 characters but target has 3; "
            "aligned pairs map each input character to one output character",
            "invalid_data",
        )
    ]


def test_an_empty_list_of_pairs(client: TestClient, hello: Body) -> None:
    response = client.post("/train", json={**hello, "data": {"pairs": []}})

    # "pairs" twice: the second names the kind of data (pydantic's union tag)
    assert errors(response) == [
        (
            ["body", "data", "pairs", "pairs"],
            "List should have at least 1 item after validation, not 0",
            "too_short",
        )
    ]


def test_missing_data(client: TestClient) -> None:
    response = client.post("/train", json={"model_name": "hello"})

    message = (
        "Value error, give the training data either inline as 'data' or as the id of an "
        "uploaded 'dataset', exactly one of them"
    )
    assert errors(response) == [(["body"], message, "value_error")]


def test_data_that_is_neither_pairs_nor_text(client: TestClient, hello: Body) -> None:
    response = client.post("/train", json={**hello, "data": {"lines": ["hello"]}})

    assert errors(response) == [
        (
            ["body", "data"],
            "data needs either 'pairs' (aligned pairs with a target, or sequences with a "
            "label) or 'text' (plain text)",
            "data_kind",
        )
    ]


def test_text_too_short_to_learn_from(client: TestClient, hello: Body) -> None:
    response = client.post("/train", json={**hello, "data": {"text": "a"}})

    assert errors(response) == [
        (
            ["body", "data", "text", "text"],
            "String should have at least 2 characters",
            "string_too_short",
        )
    ]


MANY = "".join(chr(0x4E00 + i) for i in range(1500))  # 1500 distinct CJK characters


@pytest.mark.parametrize(
    ("data", "loc", "msg"),
    [
        (
            {"text": MANY},
            ["body", "data", "text"],
            "1500 distinct characters in the text; a vocabulary holds at most 1024",
        ),
        (
            {"pairs": [{"input": MANY, "target": "a" * 1500}]},
            ["body", "data", "pairs"],
            "1500 distinct characters in the inputs; a vocabulary holds at most 1024",
        ),
        (
            {"pairs": [{"input": "a" * 1500, "target": MANY}]},
            ["body", "data", "pairs"],
            "1500 distinct characters in the targets; a vocabulary holds at most 1024",
        ),
    ],
    ids=["text", "pair-inputs", "pair-targets"],
)
def test_more_distinct_characters_than_a_vocabulary_holds(
    client: TestClient, hello: Body, data: Body, loc: list[str], msg: str
) -> None:
    response = client.post("/train", json={**hello, "data": data})

    assert errors(response) == [(loc, msg, "invalid_data")]


def test_a_given_vocabulary_larger_than_the_limit(client: TestClient, hello: Body) -> None:
    vocab = {"input": list(MANY), "output": list("hlo")}

    response = client.post("/train", json={**hello, "vocab": vocab})

    assert errors(response) == [
        (
            ["body", "vocab", "input"],
            "List should have at most 1024 items after validation, not 1500",
            "too_long",
        )
    ]


NOT_UNICODE = "Input should be a valid string, unable to parse raw data as a unicode string"


@pytest.mark.parametrize(
    ("data", "vocab", "loc", "msg"),
    [
        ('{"text": "ab\\ud800ab"}', "null", ["body", "data", "text", "text"], NOT_UNICODE),
        (
            '{"pairs": [{"input": "h\\udc00", "target": "oh"}]}',
            "null",
            ["body", "data", "pairs", "pairs", 0, "input"],
            NOT_UNICODE,
        ),
        (
            '{"text": "abab"}',
            '{"input": ["a", "b", "\\udc00"], "output": ["a"]}',
            ["body", "vocab", "input"],
            "Value error, lone surrogates are not characters of any text: ['\\udc00']",
        ),
    ],
    ids=["text", "pair", "vocab"],
)
def test_lone_surrogates_are_refused_where_they_are(
    client: TestClient, data: str, vocab: str, loc: list[Any], msg: str
) -> None:
    # JSON's \udXXX escapes decode to lone surrogates, which no text can hold
    body = f'{{"model_name": "hello", "data": {data}, "vocab": {vocab}}}'

    response = client.post("/train", content=body, headers={"Content-Type": "application/json"})

    assert [(where, message) for where, message, _ in errors(response)] == [(loc, msg)]
    assert client.get("/jobs").json()["total"] == 0


def test_a_text_vocab_must_read_what_it_writes(client: TestClient, hello: Body) -> None:
    body = {**hello, "data": {"text": "abab"}, "vocab": {"input": ["a", "b"], "output": ["b", "a"]}}

    assert errors(client.post("/train", json=body)) == [
        (
            ["body", "vocab"],
            "a text model reads its own output: input and output must match",
            "invalid_data",
        )
    ]


# --- hyperparameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "loc", "msg"),
    [
        pytest.param(
            {"hidden_size": -1},
            ["body", "hyperparameters", "hidden_size"],
            "Input should be greater than or equal to 1",
            id="negative hidden size",
        ),
        pytest.param(
            {"epochs": 0},
            ["body", "hyperparameters", "epochs"],
            "Input should be greater than or equal to 1",
            id="no epochs",
        ),
        pytest.param(
            {"learning_rate": 0},
            ["body", "hyperparameters", "learning_rate"],
            "Input should be greater than 0",
            id="zero learning rate",
        ),
        pytest.param(
            {"architecture": "transformer"},
            ["body", "hyperparameters", "architecture"],
            "Input should be 'rnn_cell', 'rnn' or 'embedding_rnn'",
            id="unknown architecture",
        ),
        pytest.param(
            {"architecture": "rnn_cell", "bidirectional": True},
            ["body", "hyperparameters"],
            "Value error, bidirectional needs architecture 'embedding_rnn' "
            "(got 'rnn_cell', whose hidden state is its output)",
            id="bidirectional rnn_cell",
        ),
        pytest.param(
            {"num_layers": 1, "dropout": 0.5},
            ["body", "hyperparameters"],
            "Value error, dropout acts between recurrent layers: use num_layers >= 2 with "
            "architecture 'rnn' or 'embedding_rnn', or set dropout to 0",
            id="dropout with one layer",
        ),
        pytest.param(
            {"epochz": 3},
            ["body", "hyperparameters", "epochz"],
            "Extra inputs are not permitted",
            id="unknown field",
        ),
    ],
)
def test_nonsense_hyperparameters(
    client: TestClient, hello: Body, values: Body, loc: list[Any], msg: str
) -> None:
    response = client.post("/train", json=with_hyperparameters(hello, **values))

    assert [(e["loc"], e["msg"]) for e in response.json()["detail"]] == [(loc, msg)]
    assert response.status_code == 422


def test_bidirectional_is_refused_on_text(client: TestClient, hello: Body) -> None:
    body = with_hyperparameters({**hello, "data": {"text": "abab"}}, bidirectional=True)

    assert errors(client.post("/train", json=body)) == [
        (
            ["body"],
            "Value error, hyperparameters.bidirectional would let a text model read the "
            "character it must predict; use it with aligned pairs only",
            "value_error",
        )
    ]


def test_an_unknown_top_level_field(client: TestClient, hello: Body) -> None:
    response = client.post("/train", json={**hello, "epochs": 3})

    assert errors(response) == [
        (["body", "epochs"], "Extra inputs are not permitted", "extra_forbidden")
    ]


# --- model names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "msg"),
    [
        ("Hello", "String should match pattern '^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$'"),
        ("../x", "String should match pattern '^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$'"),
        ("-hello", "String should match pattern '^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$'"),
        ("hello world", "String should match pattern '^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$'"),
        ("", "String should have at least 1 character"),
        ("a" * 65, "String should have at most 64 characters"),
    ],
    ids=["uppercase", "path", "leading dash", "space", "empty", "too long"],
)
def test_bad_model_names(client: TestClient, hello: Body, name: str, msg: str) -> None:
    response = client.post("/train", json={**hello, "model_name": name})

    assert [(e["loc"], e["msg"]) for e in response.json()["detail"]] == [
        (["body", "model_name"], msg)
    ]


def test_a_name_of_64_characters_is_fine(client: TestClient, hello: Body) -> None:
    assert client.post("/train", json={**hello, "model_name": "a" * 64}).status_code == 202


# --- malformed bodies and limits ------------------------------------------------------------------


def test_malformed_json(client: TestClient) -> None:
    response = client.post(
        "/train", content=b'{"model_name": "hello", ', headers={"content-type": "application/json"}
    )

    assert errors(response) == [(["body", 24], "JSON decode error", "json_invalid")]


def test_a_body_that_is_not_an_object(client: TestClient) -> None:
    response = client.post("/train", json=["hello", "ohlol"])

    assert errors(response) == [
        (
            ["body"],
            "Input should be a valid dictionary or object to extract fields from",
            "model_attributes_type",
        )
    ]


@pytest.fixture
def small_limits(make_settings: Callable[..., Settings]) -> Any:
    settings = make_settings(max_training_pairs=2, max_training_chars=12)
    with TestClient(create_app(settings)) as client:
        yield client


def test_too_many_pairs_names_the_limit_and_its_setting(
    small_limits: TestClient, hello: Body
) -> None:
    pairs = [{"input": "ab", "target": "ba"}] * 3

    assert errors(small_limits.post("/train", json={**hello, "data": {"pairs": pairs}})) == [
        (
            ["body", "data", "pairs"],
            "data.pairs: 3 pairs, at most 2 allowed (limit set by CHARNN_MAX_TRAINING_PAIRS)",
            "limit_exceeded",
        )
    ]


def test_too_much_text_names_the_limit_and_its_setting(
    small_limits: TestClient, hello: Body
) -> None:
    body = {**hello, "data": {"text": "the quick brown fox"}}

    assert errors(small_limits.post("/train", json=body)) == [
        (
            ["body", "data"],
            "data: 19 characters, at most 12 allowed (limit set by CHARNN_MAX_TRAINING_CHARS)",
            "limit_exceeded",
        )
    ]


def test_pairs_padded_to_the_longest_count_against_the_limit(
    small_limits: TestClient, hello: Body
) -> None:
    pairs = [{"input": "abcdefgh", "target": "bcdefgha"}, {"input": "a", "target": "b"}]

    assert errors(small_limits.post("/train", json={**hello, "data": {"pairs": pairs}})) == [
        (
            ["body", "data", "pairs"],
            "data.pairs: 2 pairs padded to the longest (8 characters) make 16 characters, "
            "at most 12 allowed (limit set by CHARNN_MAX_TRAINING_CHARS)",
            "limit_exceeded",
        )
    ]


def test_nothing_refused_is_queued(client: TestClient, hello: Body) -> None:
    client.post("/train", json={**hello, "model_name": "Bad"})
    client.post("/train", json={**hello, "data": {"pairs": [{"input": "ab", "target": "a"}]}})

    assert client.get("/jobs").json()["total"] == 0
