"""Models and their versions: GET /models, GET /models/{name}, GET and DELETE of either.

Versions here are published into the test's store as a finished job publishes them
(``publish(model_name, checkpoint)``); training through the API is in test_end_to_end.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.ml.checkpoint import Checkpoint

Publish = Callable[[str, Checkpoint], int]


def version_dirs(store_dir: Path, name: str) -> list[Path]:
    return sorted((store_dir / "models" / name).iterdir())


def test_no_models_yet(client: TestClient) -> None:
    response = client.get("/models")

    assert response.status_code == 200
    assert response.json() == []


def test_models_are_listed_by_name_with_their_latest_version(
    client: TestClient, publish: Publish, hello_model: Checkpoint, fox_model: Checkpoint
) -> None:
    publish("hello", hello_model)
    publish("hello", hello_model)
    publish("fox", fox_model)

    models = client.get("/models").json()

    assert [(m["name"], m["latest_version"], m["version_count"]) for m in models] == [
        ("fox", 1, 1),
        ("hello", 2, 2),
    ]


def test_a_model_shows_every_version_oldest_first(
    client: TestClient, publish: Publish, hello_model: Checkpoint
) -> None:
    publish("hello", hello_model)
    publish("hello", hello_model)

    model = client.get("/models/hello").json()

    assert model["name"] == "hello"
    assert [v["version"] for v in model["versions"]] == [1, 2]


def test_a_version_describes_its_checkpoint(
    client: TestClient, publish: Publish, hello_model: Checkpoint
) -> None:
    publish("hello", hello_model)

    response = client.get("/models/hello/versions/1")

    assert response.status_code == 200
    version = response.json()
    assert (version["model_name"], version["version"], version["task"]) == ("hello", 1, "pairs")
    assert version["vocab"] == {"input": ["e", "h", "l", "o"], "output": ["h", "l", "o"]}
    assert version["config"] == {
        "architecture": "embedding_rnn",
        "cell": "rnn",
        "input_size": 4,
        "output_size": 3,
        "embedding_size": 10,
        "hidden_size": 8,
        "num_layers": 2,
        "bidirectional": False,
        "dropout": 0.0,
    }
    assert version["hyperparameters"]["seed"] == 0
    assert version["metrics"]["sample_prediction"] == "ohlol"
    assert (version["epochs"], version["parameters"], version["job_id"]) == (15, 371, None)
    assert version["size_bytes"] > 0
    assert len(version["sha256"]) == 64


@pytest.mark.parametrize(
    ("path", "status", "detail"),
    [
        ("/models/nope", 404, "model 'nope' does not exist"),
        ("/models/nope/versions/1", 404, "model 'nope' has no version 1"),
        ("/models/hello/versions/2", 404, "model 'hello' has no version 2"),
    ],
)
def test_unknown_models_and_versions_are_not_found(
    client: TestClient,
    publish: Publish,
    hello_model: Checkpoint,
    path: str,
    status: int,
    detail: str,
) -> None:
    publish("hello", hello_model)

    response = client.get(path)

    assert (response.status_code, response.json()) == (status, {"detail": detail})


@pytest.mark.parametrize(
    ("path", "loc", "msg"),
    [
        (
            "/models/Hello",
            ["path", "name"],
            "String should match pattern '^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$'",
        ),
        ("/models/" + "a" * 65, ["path", "name"], "String should have at most 64 characters"),
        (
            "/models/hello/versions/0",
            ["path", "version"],
            "Input should be greater than or equal to 1",
        ),
        (
            "/models/hello/versions/latest",
            ["path", "version"],
            "Input should be a valid integer, unable to parse string as an integer",
        ),
    ],
    ids=["uppercase", "too long", "version 0", "version not a number"],
)
def test_malformed_names_and_versions_are_refused(
    client: TestClient, path: str, loc: list[str], msg: str
) -> None:
    for method in ("GET", "DELETE"):
        response = client.request(method, path)

        assert response.status_code == 422
        assert [(e["loc"], e["msg"]) for e in response.json()["detail"]] == [(loc, msg)]


# --- deleting -------------------------------------------------------------------------------------


def test_a_deleted_version_is_gone(
    client: TestClient, publish: Publish, hello_model: Checkpoint, store_dir: Path
) -> None:
    publish("hello", hello_model)
    publish("hello", hello_model)
    assert len(version_dirs(store_dir, "hello")) == 2

    response = client.delete("/models/hello/versions/1")

    assert (response.status_code, response.content) == (204, b"")
    assert client.get("/models/hello/versions/1").status_code == 404
    assert [v["version"] for v in client.get("/models/hello").json()["versions"]] == [2]
    assert len(version_dirs(store_dir, "hello")) == 1
    assert client.delete("/models/hello/versions/1").json() == {
        "detail": "model 'hello' has no version 1"
    }


def test_predictions_move_to_the_previous_version_when_the_latest_is_deleted(
    client: TestClient, publish: Publish, hello_model: Checkpoint
) -> None:
    publish("hello", hello_model)
    publish("hello", hello_model)
    assert (
        client.post("/predict", json={"model_name": "hello", "inputs": ["hello"]}).json()["version"]
        == 2
    )

    client.delete("/models/hello/versions/2")

    response = client.post("/predict", json={"model_name": "hello", "inputs": ["hello"]})
    assert (response.status_code, response.json()["version"]) == (200, 1)


def test_a_deleted_model_is_gone(
    client: TestClient, publish: Publish, hello_model: Checkpoint, store_dir: Path
) -> None:
    publish("hello", hello_model)
    publish("hello", hello_model)

    response = client.delete("/models/hello")

    assert (response.status_code, response.content) == (204, b"")
    assert client.get("/models/hello").json() == {"detail": "model 'hello' does not exist"}
    assert client.get("/models/hello/versions/2").status_code == 404
    assert client.get("/models").json() == []
    assert not (store_dir / "models" / "hello").exists()
    again = client.delete("/models/hello")
    assert (again.status_code, again.json()) == (404, {"detail": "model 'hello' does not exist"})


def test_a_deleted_model_no_longer_predicts(
    client: TestClient, publish: Publish, hello_model: Checkpoint
) -> None:
    publish("hello", hello_model)
    assert (
        client.post("/predict", json={"model_name": "hello", "inputs": ["hello"]}).status_code
        == 200
    )

    client.delete("/models/hello")

    response = client.post("/predict", json={"model_name": "hello", "inputs": ["hello"]})
    assert (response.status_code, response.json()) == (
        404,
        {"detail": "model 'hello' does not exist"},
    )


@pytest.mark.parametrize("path", ["/models/hello", "/models/hello/versions/1"])
def test_nothing_of_a_model_is_deleted_while_a_job_trains_it(
    client: TestClient, publish: Publish, hello_model: Checkpoint, hello: dict[str, Any], path: str
) -> None:
    publish("hello", hello_model)
    job = client.post("/train", json=hello).json()

    response = client.delete(path)

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"model 'hello' is being trained by job {job['id']}; "
        "cancel the job or wait for it to end"
    }
    assert client.get("/models/hello/versions/1").status_code == 200
