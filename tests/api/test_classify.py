"""Sequence classification through the API: train on labeled pairs, predict labels.

The data are surnames made by simple generative rules, one syllable inventory per
"language", so the test needs no download: a name's language shows in its syllables,
which a recurrent encoder reads and the majority class cannot.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.ml.checkpoint import Checkpoint
from app.settings import Settings

Body = dict[str, Any]
StartServer = Callable[..., Any]

SYLLABLES = {
    "Japanese": ["ka", "ki", "mu", "ra", "sa", "to", "na", "shi", "ya", "mo", "ta", "ro"],
    "Italian": ["ber", "lu", "cci", "gio", "van", "ni", "ros", "si", "ett", "del", "pa", "co"],
    "Russian": ["iv", "ov", "zh", "kov", "vich", "dr", "sky", "ev", "bor", "vol", "gr", "pet"],
}
ENDINGS = {"Japanese": ["", "o", "e"], "Italian": ["i", "o", "a"], "Russian": ["", "in", "a"]}


def surnames(count: int, seed: int) -> list[dict[str, str]]:
    """Labeled pairs: 2 or 3 syllables of one language and one of its endings."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        language = rng.choice(sorted(SYLLABLES))
        stem = "".join(rng.choices(SYLLABLES[language], k=rng.randint(2, 3)))
        name = (stem + rng.choice(ENDINGS[language])).capitalize()
        pairs.append({"input": name, "label": language})
    return pairs


def classify_body(pairs: list[dict[str, str]], **hyperparameters: Any) -> Body:
    values = {
        "cell": "gru",
        "embedding_size": 16,
        "hidden_size": 32,
        "num_layers": 1,
        "bidirectional": True,
        "learning_rate": 0.01,
        "epochs": 8,
        "seed": 0,
        **hyperparameters,
    }
    return {"model_name": "names", "data": {"pairs": pairs}, "hyperparameters": values}


def errors(response: Any) -> list[tuple[list[Any], str, str]]:
    """``(loc, msg, type)`` of each entry of a 422's detail."""
    assert response.status_code == 422, response.text
    return [(e["loc"], e["msg"], e["type"]) for e in response.json()["detail"]]


def test_a_classifier_trains_labels_names_and_beats_the_majority_class(
    start_server: StartServer,
) -> None:
    server = start_server()
    train_pairs, test_pairs = surnames(600, seed=1), surnames(150, seed=2)

    response = server.http.post("/train", json=classify_body(train_pairs))

    assert response.status_code == 202, response.text
    job = server.wait_for_job(response.json()["id"], history=True)
    assert job["status"] == "succeeded", job["error"]
    last = job["history"][-1]
    assert last["sample_prediction"] in SYLLABLES  # a label, not characters
    assert last["train_char_accuracy"] == last["train_seq_accuracy"]

    version = server.http.get("/models/names/versions/1").json()
    assert version["task"] == "classify"
    assert version["vocab"]["labels"] == ["Italian", "Japanese", "Russian"]
    assert "output" not in version["vocab"]
    assert version["config"]["head"] == "sequence"

    inputs = [pair["input"] for pair in test_pairs]
    response = server.http.post(
        "/predict", json={"model_name": "names", "inputs": inputs, "top_k": 3}
    )

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["details"] is None
    assert answer["outputs"] == [scores["label"] for scores in answer["labels"]]
    first = answer["labels"][0]
    assert [t["label"] for t in first["top_k"]][0] == first["label"]
    assert first["top_k"][0]["probability"] == first["probability"]
    assert sum(t["probability"] for t in first["top_k"]) == pytest.approx(1.0, abs=1e-5)
    truth = [pair["label"] for pair in test_pairs]
    accuracy = sum(a == b for a, b in zip(answer["outputs"], truth, strict=True)) / len(truth)
    majority = Counter(p["label"] for p in train_pairs).most_common(1)[0][0]
    baseline = sum(label == majority for label in truth) / len(truth)
    assert baseline < 0.45
    assert accuracy > 0.9, f"held-out accuracy {accuracy:.3f}, majority class {baseline:.3f}"

    plain = server.http.post("/predict", json={"model_name": "names", "inputs": ["Nakamura"]})
    assert plain.json()["labels"][0]["top_k"] == []  # top_k 0: the label and its probability
    assert plain.json()["labels"][0]["label"] == "Japanese"

    generate = server.http.post("/generate", json={"model_name": "names", "prompt": "Na"})
    assert generate.status_code == 422
    assert "this model is a classifier" in generate.json()["detail"]

    empty = server.http.post("/predict", json={"model_name": "names", "inputs": ["Sato", ""]})
    assert errors(empty) == [
        (
            ["body", "inputs", 1],
            "is empty; a classifier labels a sequence of at least one character",
            "invalid_data",
        )
    ]


# --- refusals, before any work is queued ---------------------------------------------------------

PAIRS = [{"input": "Sato", "label": "Japanese"}, {"input": "Rossi", "label": "Italian"}]


@pytest.fixture
def api(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(max_training_labels=2))) as client:
        yield client


def test_mixing_targets_and_labels_is_refused_naming_both(api: TestClient) -> None:
    pairs = [{"input": "ab", "target": "ba"}, {"input": "Sato", "label": "Japanese"}]

    [(loc, msg, kind)] = errors(api.post("/train", json=classify_body(pairs)))

    assert (loc, kind) == (["body"], "value_error")
    assert msg == (
        "Value error, data.pairs[0] has a 'target' (aligned pairs) and data.pairs[1] a "
        "'label' (classification); one job trains one task: give every pair a target, or "
        "every pair a label"
    )


def test_too_many_labels_names_the_limit_and_its_setting(api: TestClient) -> None:
    pairs = [*PAIRS, {"input": "Ivanov", "label": "Russian"}]

    assert errors(api.post("/train", json=classify_body(pairs))) == [
        (
            ["body", "data", "pairs"],
            "data.pairs: 3 distinct labels, at most 2 allowed (limit set by "
            "CHARNN_MAX_TRAINING_LABELS)",
            "limit_exceeded",
        )
    ]


@pytest.mark.parametrize(
    ("label", "problem"),
    [
        ("x" * 65, "has 65 characters; a label has 1 to 64"),
        ("", "has 0 characters; a label has 1 to 64"),
        ("Japa\nnese", "holds control characters or lone surrogates; a label is printable text"),
    ],
)
def test_a_bad_label_is_refused_naming_its_pair(api: TestClient, label: str, problem: str) -> None:
    pairs = [PAIRS[0], {"input": "Rossi", "label": label}]

    assert errors(api.post("/train", json=classify_body(pairs))) == [
        (["body", "data", "pairs", 1, "label"], problem, "invalid_data")
    ]


@pytest.mark.parametrize("architecture", ["rnn_cell", "rnn"])
def test_one_hot_architectures_are_refused_for_a_classifier(
    api: TestClient, architecture: str
) -> None:
    body = classify_body(PAIRS, bidirectional=False)
    body["hyperparameters"] = {"architecture": architecture}

    [(_, msg, _)] = errors(api.post("/train", json=body))

    assert f"hyperparameters.architecture {architecture!r} cannot classify" in msg


def test_a_vocabulary_for_labeled_pairs_needs_labels(api: TestClient) -> None:
    body = {**classify_body(PAIRS), "vocab": {"input": list("IORSaiost"), "output": ["a"]}}

    [(_, msg, _)] = errors(api.post("/train", json=body))

    assert msg == "Value error, vocab: labeled pairs need vocab.labels, not vocab.output"


def test_given_labels_may_name_labels_the_data_lacks(api: TestClient) -> None:
    vocab = {"input": sorted(set("SatoRossi")), "labels": ["Italian", "Japanese"]}
    body = {**classify_body(PAIRS[:1], epochs=1), "vocab": vocab}

    response = api.post("/train", json=body)

    assert response.status_code == 202, response.text


# --- the schema states what it can --------------------------------------------------------------


def test_the_schema_states_labeled_pairs_their_bounds_and_rules(
    make_settings: Callable[..., Settings],
) -> None:
    schemas = create_app(make_settings(max_training_pairs=50)).openapi()["components"]["schemas"]

    pairs = schemas["LabelsData"]["properties"]["pairs"]
    assert pairs["maxItems"] == 50
    pair = schemas["LabeledPair"]["properties"]
    assert (pair["label"]["minLength"], pair["label"]["maxLength"]) == (1, 64)
    assert pair["label"]["pattern"] == "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"
    rules = schemas["TrainRequest"]["allOf"]
    architecture = {"properties": {"architecture": {"const": "embedding_rnn"}}}
    assert {"hyperparameters": architecture} in [r.get("then", {}).get("properties") for r in rules]
    labels_given = {"properties": {"labels": {"type": "array"}}, "required": ["labels"]}
    output_given = {"properties": {"output": {"type": "array"}}, "required": ["output"]}
    assert schemas["Vocab"]["allOf"] == [
        {"if": labels_given, "then": {"not": output_given}, "else": output_given}
    ]
    answer = schemas["PredictResponse"]["properties"]["labels"]["anyOf"][0]["items"]
    assert answer == {"$ref": "#/components/schemas/LabelPredictionPublic"}


def test_a_classifier_downloads_and_imports_as_any_checkpoint(
    make_settings: Callable[..., Settings],
    surnames_model: Checkpoint,
    publish_model: Callable[[Path, str, Checkpoint], int],
) -> None:
    settings = make_settings()
    publish_model(settings.store_dir, "names", surnames_model)
    with TestClient(create_app(settings)) as api:
        files = "/models/names/versions/1/files"
        meta = api.get(f"{files}/checkpoint.json").content
        weights = api.get(f"{files}/weights.safetensors").content

        imported = api.post(
            "/models/names-copy/versions",
            files={
                "checkpoint": ("checkpoint.json", meta),
                "weights": ("weights.safetensors", weights),
            },
        )
        inputs = {"inputs": ["Sato", "Rossi", "Ivanov"], "top_k": 3}
        original = api.post("/predict", json={"model_name": "names", **inputs}).json()
        copy = api.post("/predict", json={"model_name": "names-copy", **inputs}).json()

    assert imported.status_code == 201, imported.text
    assert imported.json()["task"] == "classify"
    assert copy["labels"] == original["labels"]
    assert copy["outputs"] == ["Japanese", "Italian", "Russian"]
