"""POST /models/{name}/versions/{n}/evaluate against a real server: the numbers it answers
are those of a plain PyTorch loop written here, and of the training that made the version."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import safetensors.torch
import torch
from torch.nn import functional

from app.ml.checkpoint import Checkpoint
from app.ml.model import ModelConfig, build_model
from tests.conftest import SURNAMES, LiveServer, hello_body, long_text

ServeModels = Callable[..., LiveServer]
StartServer = Callable[..., LiveServer]

TEXT_JOB: dict[str, Any] = {
    "model_name": "words",
    "data": {"text": long_text(3000)},
    "hyperparameters": {
        "cell": "gru",
        "embedding_size": 8,
        "hidden_size": 32,
        "num_layers": 1,
        "epochs": 3,
        "seq_len": 40,
        "batch_size": 8,
        "validation_fraction": 0.2,
        "seed": 3,
    },
}
WORDS = ["abc", "bcad", "cabd", "dabca", "ab", "bca", "cdab", "abcd", "dcba", "bb", "acd", "dd"]
PAIRS_JOB: dict[str, Any] = {
    "model_name": "mirror",
    "data": {"pairs": [{"input": w, "target": w[::-1]} for w in WORDS * 2]},
    "hyperparameters": {
        "architecture": "rnn_cell",
        "epochs": 4,
        "batch_size": 5,
        "validation_fraction": 0.25,
        "seed": 4,
    },
}


# --- the offline computation: safetensors, the model class, cross_entropy(reduction="sum") ---


def offline_model(http: httpx.Client, name: str, version: int) -> tuple[torch.nn.Module, Any]:
    """The version's weights, downloaded and loaded into a freshly built model class."""
    files = f"/models/{name}/versions/{version}/files"
    meta = json.loads(http.get(f"{files}/checkpoint.json").content)
    weights = safetensors.torch.load(http.get(f"{files}/weights.safetensors").content)
    model = build_model(ModelConfig.model_validate(meta["config"]))
    model.load_state_dict(weights)
    return model.eval(), meta


def offline_score(
    model: torch.nn.Module, vocab: dict[str, list[str]], inputs: list[str], targets: list[str]
) -> dict[str, float]:
    """One sequence at a time, no padding: summed NLL, hits and whole-sequence hits."""
    stoi_in = {c: i for i, c in enumerate(vocab["input"])}
    stoi_out = {c: i for i, c in enumerate(vocab["output"])}
    nll, hits, whole = 0.0, 0, 0
    with torch.no_grad():
        for source, target in zip(inputs, targets, strict=True):
            ids = torch.tensor([[stoi_in[c] for c in source]])
            wanted = torch.tensor([stoi_out[c] for c in target])
            logits, _ = model(ids)  # (1, T, V), from a fresh state
            nll += float(functional.cross_entropy(logits[0], wanted, reduction="sum"))
            right = int((logits[0].argmax(-1) == wanted).sum())
            hits += right
            whole += right == len(target)
    characters = sum(map(len, targets))
    return {
        "nll": nll / characters,
        "char_accuracy": hits / characters,
        "seq_accuracy": whole / len(inputs),
        "characters": characters,
        "sequences": len(inputs),
        "nll_per_sequence": nll / len(inputs),
    }


def windows(text: str, seq_len: int) -> tuple[list[str], list[str]]:
    """Next-character windows of ``seq_len``, written out again here."""
    inputs, targets = [], []
    for start in range(0, len(text) - 1, seq_len):
        end = min(start + seq_len, len(text) - 1)
        inputs.append(text[start:end])
        targets.append(text[start + 1 : end + 1])
    return inputs, targets


def evaluate(http: httpx.Client, name: str, version: int, body: dict[str, Any]) -> httpx.Response:
    return http.post(f"/models/{name}/versions/{version}/evaluate", json=body)


def trained(server: LiveServer, body: dict[str, Any]) -> dict[str, Any]:
    """Train ``body`` through the API; the finished job, with its history."""
    response = server.http.post("/train", json=body)
    assert response.status_code == 202, response.text
    job = server.wait_for_job(response.json()["id"], timeout=120, history=True)
    assert job["status"] == "succeeded", job
    return job


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One server, three trained versions: words (text), mirror (rnn_cell pairs), hello."""
    directory = tmp_path_factory.mktemp("evaluate")
    server = LiveServer(directory / "store", {}, directory / "server.log")
    try:
        server.wait_ready()
        finished = {body["model_name"]: trained(server, body) for body in (TEXT_JOB, PAIRS_JOB)}
        finished["hello"] = trained(server, hello_body())
        yield server, finished
    finally:
        server.stop()


# --- the same numbers as the offline loop -------------------------------------------------


def test_text_scores_match_a_plain_pytorch_loop(jobs: Any) -> None:
    server, _ = jobs
    text = long_text(1234)[::-1]  # the same characters, unseen order
    answer = evaluate(server.http, "words", 1, {"data": {"text": text}})
    assert answer.status_code == 200, answer.text
    got = answer.json()

    model, meta = offline_model(server.http, "words", 1)
    seq_len = meta["hyperparameters"]["seq_len"]
    expected = offline_score(model, meta["vocab"], *windows(text, seq_len))

    assert got["model_name"] == "words"
    assert got["version"] == 1
    assert got["task"] == "text"
    assert got["source"] == "data"
    assert got["seq_len"] == seq_len == 40
    assert got["characters"] == expected["characters"] == len(text) - 1
    assert got["sequences"] == expected["sequences"] == math.ceil((len(text) - 1) / 40)
    assert got["nll"] == pytest.approx(expected["nll"], abs=1e-4)
    assert got["bits_per_character"] == pytest.approx(expected["nll"] / math.log(2), abs=1e-4)
    assert got["char_accuracy"] == pytest.approx(expected["char_accuracy"], abs=1e-9)
    assert got["seq_accuracy"] is None
    assert got["loss_per"] == "characters"
    assert got["loss"] == got["nll"]
    assert got["seconds"] >= 0


def test_pairs_scores_match_a_plain_pytorch_loop(jobs: Any) -> None:
    server, _ = jobs
    pairs = [("abcd", "dcba"), ("dcb", "bcd"), ("a", "a"), ("cabdab", "badbac"), ("bad", "dab")]
    body = {"data": {"pairs": [{"input": i, "target": t} for i, t in pairs]}}
    answer = evaluate(server.http, "mirror", 1, body)
    assert answer.status_code == 200, answer.text
    got = answer.json()

    model, meta = offline_model(server.http, "mirror", 1)
    expected = offline_score(model, meta["vocab"], [p[0] for p in pairs], [p[1] for p in pairs])

    assert got["task"] == "pairs"
    assert got["seq_len"] is None
    assert got["characters"] == expected["characters"] == 17
    assert got["sequences"] == 5
    assert got["nll"] == pytest.approx(expected["nll"], abs=1e-4)
    assert got["char_accuracy"] == pytest.approx(expected["char_accuracy"], abs=1e-9)
    assert got["seq_accuracy"] == pytest.approx(expected["seq_accuracy"], abs=1e-9)
    # rnn_cell trains on the NLL summed over each sequence: its loss is that, per sequence
    assert got["loss_per"] == "sequences"
    assert got["loss"] == pytest.approx(expected["nll_per_sequence"], abs=1e-4)


# --- the same numbers as training ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "held_out"),
    [("words", int(0.2 * math.ceil(2999 / 40))), ("mirror", int(0.25 * 24))],
)
def test_the_held_out_split_scores_the_best_epochs_validation(
    jobs: Any, name: str, held_out: int
) -> None:
    """Same windows, same weights (the best epoch's, which the version keeps): the val_loss
    that training recorded for that epoch, to 1e-4."""
    server, finished = jobs
    best_epoch = server.http.get(f"/models/{name}/versions/1").json()["best_epoch"]
    last = finished[name]["history"][best_epoch - 1]
    answer = evaluate(server.http, name, 1, {"split": "validation"})
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["source"] == "validation"
    assert got["loss"] == pytest.approx(last["val_loss"], abs=1e-4)
    assert got["char_accuracy"] == pytest.approx(last["val_char_accuracy"], abs=1e-9)
    assert got["sequences"] == held_out  # windows of text, or pairs


def test_the_hello_tutorial_scores_perfectly_on_its_training_data(jobs: Any) -> None:
    server, finished = jobs
    answer = evaluate(server.http, "hello", 1, {"data": hello_body()["data"]})
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["char_accuracy"] == 1.0
    assert got["seq_accuracy"] == 1.0
    assert (got["characters"], got["sequences"]) == (5, 1)
    # the last epoch's loss was measured before that epoch's one update; the weights
    # scored are after it, which improves the loss about as much as the update before did
    before, last = (epoch["loss"] for epoch in finished["hello"]["history"][-2:])
    assert last - 2 * (before - last) < got["nll"] < last


def test_a_version_trained_on_all_its_data_has_no_held_out_split(jobs: Any) -> None:
    server, _ = jobs
    answer = evaluate(server.http, "hello", 1, {"split": "validation"})
    assert answer.status_code == 409
    assert "has no held-out split" in answer.json()["detail"]


# --- refusals -----------------------------------------------------------------------------


def test_unknown_characters_are_named_with_their_positions(jobs: Any) -> None:
    server, _ = jobs
    answer = evaluate(server.http, "words", 1, {"data": {"text": "the fox?!"}})
    assert answer.status_code == 422
    errors = answer.json()["detail"]
    assert [e["loc"] for e in errors] == [["body", "data", "text"]] * 2
    assert [e["ctx"]["position"] for e in errors] == [7, 8]
    assert "unknown character '?' at position 7" in errors[0]["msg"]


def test_data_of_the_other_task_is_refused(jobs: Any) -> None:
    server, _ = jobs
    answer = evaluate(server.http, "words", 1, {"data": hello_body()["data"]})
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["body", "data"]
    assert "trained on text data: send data.text" in error["msg"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, "give either data"),
        ({"data": {"text": "ab"}, "split": "validation"}, "give either data"),
        ({"split": "training"}, "Input should be 'validation'"),
        ({"data": {"text": "a"}}, "at least 2 characters"),
    ],
)
def test_a_request_needs_one_source_of_examples(
    jobs: Any, body: dict[str, Any], problem: str
) -> None:
    server, _ = jobs
    answer = evaluate(server.http, "words", 1, body)
    assert answer.status_code == 422
    assert problem in json.dumps(answer.json())


def test_an_unknown_version_is_404(jobs: Any) -> None:
    server, _ = jobs
    assert evaluate(server.http, "words", 9, {"split": "validation"}).status_code == 404
    assert evaluate(server.http, "nothing", 1, {"split": "validation"}).status_code == 404


def test_an_imported_version_has_no_held_out_split(
    serve_models: ServeModels, hello_model: Checkpoint
) -> None:
    server = serve_models({"hello": hello_model}, max_evaluate_characters=12)
    answer = evaluate(server.http, "hello", 1, {"split": "validation"})
    assert answer.status_code == 409
    assert "no training data is stored with it" in answer.json()["detail"]

    # the bound is checked on the data's size, before anything is encoded or loaded
    pairs = [{"input": "hello", "target": "ohlol"}, {"input": "hel", "target": "ohl"}] * 2
    answer = evaluate(server.http, "hello", 1, {"data": {"pairs": pairs}})
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["body", "data"]
    assert "20 characters to score, at most 12" in error["msg"]
    assert "CHARNN_MAX_EVALUATE_CHARACTERS" in error["msg"]
    ok = evaluate(server.http, "hello", 1, {"data": {"pairs": pairs[:2]}})
    assert ok.status_code == 200, ok.text


def test_a_held_out_split_past_the_limit_is_refused_before_it_is_rebuilt(
    start_server: StartServer,
) -> None:
    server = start_server(max_evaluate_characters=50)
    body = {**TEXT_JOB, "data": {"text": long_text(400)}}
    body["hyperparameters"] = {**TEXT_JOB["hyperparameters"], "epochs": 1, "seq_len": 20}
    trained(server, body)

    answer = evaluate(server.http, "words", 1, {"split": "validation"})

    assert answer.status_code == 422
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["body", "split"]
    # 20 windows of 20 characters, a fifth held out
    assert "80 characters to score, at most 50" in error["msg"]
    assert "CHARNN_MAX_EVALUATE_CHARACTERS" in error["msg"]


def test_evaluations_at_once_are_bounded(serve_models: ServeModels, fox_model: Checkpoint) -> None:
    """One at a time (CHARNN_MAX_CONCURRENT_EVALUATIONS=1): of two long ones sent together,
    one scores and the other gets 429 at once; the service answers other requests all
    the while (scoring runs in a worker thread, never on the event loop)."""
    server = serve_models({"fox": fox_model}, max_concurrent_evaluations=1)
    text = ("the quick brown fox jumps over the lazy dog. " * 40_000)[:600_000]
    answers: list[httpx.Response] = []
    health: list[int] = []

    def score_a_long_text() -> None:
        with httpx.Client(base_url=server.base_url, timeout=120) as http:
            answers.append(evaluate(http, "fox", 1, {"data": {"text": text}}))

    threads = [threading.Thread(target=score_a_long_text) for _ in range(2)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        health.append(server.http.get("/healthz", timeout=1).status_code)
        time.sleep(0.05)
    for thread in threads:
        thread.join()

    ok, refused = sorted(answers, key=lambda answer: answer.status_code)
    assert ok.status_code == 200, ok.text
    assert ok.json()["characters"] == len(text) - 1
    assert refused.status_code == 429, refused.text
    assert "CHARNN_MAX_CONCURRENT_EVALUATIONS" in refused.json()["detail"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert len(health) > 1
    assert set(health) == {200}


def test_a_classifier_scores_one_label_per_sequence_as_a_plain_loop_does(
    serve_models: ServeModels, surnames_model: Checkpoint
) -> None:
    """For a classifier (task classify) every sequence is one scored target: its label."""
    server = serve_models({"surnames": surnames_model})
    pairs = [{"input": name, "label": label} for name, label in SURNAMES]

    answer = evaluate(server.http, "surnames", 1, {"data": {"pairs": pairs}})

    assert answer.status_code == 200, answer.text
    score = answer.json()
    model, meta = offline_model(server.http, "surnames", 1)
    labels = meta["vocab"]["labels"]
    stoi = {c: i for i, c in enumerate(meta["vocab"]["input"])}
    nll, hits = 0.0, 0
    with torch.no_grad():
        for name, label in SURNAMES:
            logits, _ = model(torch.tensor([[stoi[c] for c in name]]))  # (1, labels)
            wanted = torch.tensor([labels.index(label)])
            nll += float(functional.cross_entropy(logits, wanted, reduction="sum"))
            hits += int(logits.argmax(-1).item() == wanted.item())
    assert score["task"] == "classify"
    assert score["sequences"] == len(SURNAMES)
    assert score["nll"] == pytest.approx(nll / len(SURNAMES), abs=1e-4)
    assert score["seq_accuracy"] == pytest.approx(hits / len(SURNAMES))
    assert score["seq_accuracy"] > 0.9  # its own training data

    wrong_task = evaluate(server.http, "surnames", 1, {"data": {"text": "Nakamura"}})
    assert wrong_task.status_code == 422
    assert "data.pairs with a label each" in wrong_task.text


def test_an_uploaded_dataset_scores_whole_or_its_held_out_part(jobs: Any) -> None:
    """A version trained on an uploaded dataset: its held-out part is rebuilt from the store
    (the memory-mapped ids a worker reads), and the whole dataset scores as the same text
    sent inline does."""
    server, _ = jobs
    text = long_text(3000)
    uploaded = server.http.post("/datasets", content=text.encode(), params={"kind": "text"})
    assert uploaded.status_code in (200, 201), uploaded.text
    dataset = uploaded.json()["id"]
    body = {
        "model_name": "corpus",
        "dataset": dataset,
        "hyperparameters": TEXT_JOB["hyperparameters"],
    }
    trained(server, body)
    recorded = server.http.get("/models/corpus/versions/1").json()["validation"]

    held_out = evaluate(server.http, "corpus", 1, {"split": "validation"})
    named = evaluate(server.http, "corpus", 1, {"split": "validation", "dataset": dataset})
    whole = evaluate(server.http, "corpus", 1, {"dataset": dataset})
    inline = evaluate(server.http, "corpus", 1, {"data": {"text": text}})

    for answer in (held_out, named, whole, inline):
        assert answer.status_code == 200, answer.text
    # the version keeps its best epoch's weights, and the scores recorded for them
    assert held_out.json()["loss"] == pytest.approx(recorded["loss"], abs=1e-4)
    assert held_out.json()["bits_per_character"] == pytest.approx(
        recorded["bits_per_char"], abs=1e-4
    )
    assert (held_out.json()["source"], held_out.json()["dataset"]) == ("validation", dataset)
    assert named.json()["loss"] == held_out.json()["loss"]
    assert whole.json()["source"] == "dataset"
    assert whole.json()["nll"] == pytest.approx(inline.json()["nll"], abs=1e-6)
    assert whole.json()["characters"] == inline.json()["characters"] == len(text) - 1


def test_a_dataset_to_score_must_exist_and_fit_the_versions_task(jobs: Any) -> None:
    server, _ = jobs
    pairs = server.http.post(
        "/datasets", content=b"input,target\nabc,cba\n", params={"kind": "pairs"}
    ).json()["id"]
    # characters the version has never seen: the task is what is wrong, and said first
    foreign_pairs = server.http.post(
        "/datasets", content=b"input,target\nXYZ,ZYX\n", params={"kind": "pairs"}
    ).json()["id"]
    labels = server.http.post(
        "/datasets", content=b"input,label\nabc,x\n", params={"kind": "labels"}
    ).json()["id"]
    text = server.http.post("/datasets", content=b"abcabcabc").json()["id"]

    unknown = evaluate(server.http, "words", 1, {"dataset": "0" * 32})
    wrong_task = evaluate(server.http, "words", 1, {"dataset": pairs})
    wrong_tasks = [
        evaluate(server.http, "words", 1, {"dataset": foreign_pairs}),
        evaluate(server.http, "words", 1, {"dataset": labels}),
        evaluate(server.http, "mirror", 1, {"dataset": text}),
    ]
    with_data = evaluate(server.http, "words", 1, {"dataset": pairs, "data": {"text": "ab"}})

    assert unknown.status_code == 422
    assert "no dataset 00000000000000000000000000000000" in unknown.text
    assert wrong_task.status_code == 422
    assert "a pairs dataset; the version was trained on text data" in wrong_task.text
    assert [(r.status_code, r.json()["detail"][0]["loc"]) for r in wrong_tasks] == [
        (422, ["body", "dataset"])
    ] * 3
    assert [r.json()["detail"][0]["msg"] for r in wrong_tasks] == [
        "dataset: a pairs dataset; the version was trained on text data: give a text dataset",
        "dataset: a labels dataset; the version was trained on text data: give a text dataset",
        "dataset: a text dataset; the version was trained on pairs data: give a pairs dataset",
    ]
    assert with_data.status_code == 422
    assert "give either data" in with_data.text
