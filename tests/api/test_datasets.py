"""Datasets: uploaded once (the body is the file), trained on by id.

Plain routes through the TestClient on a fresh store; training from a dataset through a
real server, whose worker processes read the dataset from the store.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.ml.hyperparameters import text_defaults
from app.settings import Settings
from app.store.corpus import TEXT_IDS

Body = dict[str, Any]
StartServer = Callable[..., Any]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the service's own loop, as under uvicorn


FOX = "the quick brown fox jumps over the lazy dog. " * 20


def upload(
    client: Any, content: bytes | str, headers: dict[str, str] | None = None, **params: str
) -> Any:
    body = content.encode() if isinstance(content, str) else content
    return client.post("/datasets", content=body, params=params, headers=headers)


def test_a_text_upload_is_described_and_stored_as_ids(client: TestClient) -> None:
    response = upload(client, "hello hello", name="greetings")

    assert response.status_code == 201
    dataset = response.json()
    assert response.headers["location"] == f"/datasets/{dataset['id']}"
    assert dataset["sha256"] == hashlib.sha256(b"hello hello").hexdigest()
    assert (dataset["kind"], dataset["format"], dataset["name"]) == ("text", "text", "greetings")
    assert (dataset["size_bytes"], dataset["characters"], dataset["vocab_size"]) == (11, 11, 5)
    assert client.get(f"/datasets/{dataset['id']}").json() == dataset
    store = client.app.state.services.settings.store_dir  # type: ignore[attr-defined]
    ids = np.fromfile(store / "datasets" / dataset["id"] / TEXT_IDS, dtype="<u2")
    assert "".join(" ehlo"[i] for i in ids) == "hello hello"  # ids in the sorted vocabulary


def test_the_same_upload_twice_is_the_same_dataset(client: TestClient) -> None:
    first = upload(client, FOX)
    second = upload(client, FOX)

    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json() == first.json()
    assert client.get("/datasets").json()["total"] == 1
    assert upload(client, FOX, kind="pairs").status_code == 422  # another kind: not read as text


def test_utf8_is_decoded_across_chunks_and_a_bad_byte_is_named_by_offset(
    client: TestClient,
) -> None:
    text = "héllo wörld ✓ " * 400_000  # 6.4 MB: more than one read chunk, ✓ split across one
    assert upload(client, text).json()["characters"] == len(text)

    response = upload(client, b"good text\n\xffbad")

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert "not UTF-8: byte 10" in response.json()["detail"][0]["msg"]


def test_pairs_are_checked_row_by_row_naming_the_line(client: TestClient) -> None:
    ok = upload(client, "input,target\nhello,ohlol\nabc,bca\n", kind="pairs")
    assert ok.status_code == 201
    assert (ok.json()["examples"], ok.json()["characters"], ok.json()["format"]) == (2, 8, "csv")

    misaligned = upload(client, "hello,ohlol\nab,abc\n", kind="pairs")
    empty = upload(client, '{"input": "", "target": ""}\n', kind="pairs", format="jsonl")
    three = upload(client, "a\tb\tc\n", kind="labels", format="tsv")

    assert misaligned.status_code == empty.status_code == three.status_code == 422
    assert misaligned.json()["detail"][0]["loc"] == ["body", "line 2"]
    assert "input has 2 characters but target has 3" in misaligned.json()["detail"][0]["msg"]
    assert empty.json()["detail"][0]["msg"] == "input is empty"
    assert three.json()["detail"][0]["msg"] == "expected 2 columns, got 3"


def test_labels_rows_keep_their_labels(client: TestClient) -> None:
    rows = '{"input": "Nakamura", "label": "Japanese"}\n{"input": "Smith", "label": "English"}\n'

    dataset = upload(client, rows, kind="labels", format="jsonl").json()

    assert (dataset["examples"], dataset["labels"], dataset["format"]) == (2, 2, "jsonl")


def test_a_form_upload_is_refused_with_what_to_send_instead(client: TestClient) -> None:
    response = client.post("/datasets", files={"file": ("fox.txt", FOX.encode())})

    assert response.status_code == 415
    assert "send the file itself as the body" in response.json()["detail"]
    assert client.get("/datasets").json()["total"] == 0


def test_text_must_be_read_as_text(client: TestClient) -> None:
    response = upload(client, "a,b\n", kind="text", format="csv")

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "format"]


def test_an_upload_over_its_limit_is_refused_before_and_while_reading(
    make_settings: Callable[..., Settings],
) -> None:
    with TestClient(create_app(make_settings(max_dataset_bytes=4096))) as small:
        declared = upload(small, "x" * 5000)

        def chunks() -> Iterator[bytes]:  # no Content-Length: stopped once past the limit
            yield from [b"y" * 1000] * 10

        streamed = small.post("/datasets", content=chunks())

        assert declared.status_code == streamed.status_code == 413
        assert "CHARNN_MAX_DATASET_BYTES" in declared.json()["detail"]
        assert small.get("/datasets").json()["total"] == 0
        store = small.app.state.services.settings.store_dir  # type: ignore[attr-defined]
        assert [p.name for p in (store / "datasets").iterdir()] == []  # nothing left behind


def test_the_store_holds_at_most_max_datasets_bytes(
    make_settings: Callable[..., Settings],
) -> None:
    with TestClient(create_app(make_settings(max_datasets_bytes=2048))) as small:
        assert upload(small, "a" * 1500).status_code == 201

        response = upload(small, "b" * 1000)

        assert response.status_code == 413
        assert "CHARNN_MAX_DATASETS_BYTES" in response.json()["detail"]


def test_unknown_and_malformed_ids(client: TestClient) -> None:
    assert client.get(f"/datasets/{'0' * 32}").status_code == 404
    assert client.delete(f"/datasets/{'0' * 32}").status_code == 404
    assert client.get("/datasets/not-an-id").status_code == 422


def test_training_asks_for_data_or_a_dataset_exactly_once(client: TestClient, hello: Body) -> None:
    dataset = upload(client, FOX).json()["id"]

    both = client.post("/train", json={**hello, "dataset": dataset})
    unknown = client.post("/train", json={"model_name": "fox", "dataset": "f" * 32})

    assert both.status_code == unknown.status_code == 422
    assert "exactly one of them" in both.text
    assert unknown.json()["detail"][0]["loc"] == ["body", "dataset"]


def test_a_given_vocabulary_must_cover_the_dataset(client: TestClient) -> None:
    dataset = upload(client, FOX).json()["id"]
    vocab = {"input": list("the quick"), "output": list("the quick")}

    response = client.post("/train", json={"model_name": "fox", "dataset": dataset, "vocab": vocab})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "vocab"]
    assert "does not cover the dataset's characters" in response.json()["detail"][0]["msg"]


def test_a_vocabulary_for_rows_is_checked_against_the_dataset_it_names(
    client: TestClient,
) -> None:
    pairs = upload(client, "input,target\nabc,xyz\nbca,yzx\n", kind="pairs").json()["id"]
    labels = upload(client, "input,label\nabc,x\nbca,y\n", kind="labels").json()["id"]
    hp = {"architecture": "embedding_rnn", "epochs": 1}

    def train(dataset: str, vocab: dict[str, list[str]]) -> Any:
        body = {"model_name": "rows", "dataset": dataset, "vocab": vocab, "hyperparameters": hp}
        return client.post("/train", json=body)

    fits = train(labels, {"input": list("abc"), "labels": ["x", "y"]})
    short_input = train(pairs, {"input": list("ab"), "output": list("xyz")})
    short_labels = train(labels, {"input": list("abc"), "labels": ["x"]})
    output_for_labels = train(labels, {"input": list("abc"), "output": list("xy")})

    assert fits.status_code == 202, fits.text  # a labels dataset takes vocab.labels
    assert [r.status_code for r in (short_input, short_labels, output_for_labels)] == [422] * 3
    assert [r.json()["detail"][0]["loc"] for r in (short_input, short_labels)] == [
        ["body", "vocab"]
    ] * 2
    assert short_input.json()["detail"][0]["msg"] == (
        "input does not cover the dataset's characters 'c'"
    )
    assert short_labels.json()["detail"][0]["msg"] == (
        "labels does not cover the dataset's labels ['y']"
    )
    assert output_for_labels.json()["detail"][0]["loc"] == ["body", "dataset"]
    assert output_for_labels.json()["detail"][0]["msg"] == (
        "dataset: a labels dataset; vocab: labeled pairs need vocab.labels, not vocab.output"
    )


def test_a_rule_that_needs_the_datasets_kind_is_a_422_naming_it(client: TestClient) -> None:
    dataset = upload(client, FOX).json()["id"]
    hp = {"epochs": 1, "bidirectional": True}

    response = client.post(
        "/train", json={"model_name": "fox", "dataset": dataset, "hyperparameters": hp}
    )

    assert response.status_code == 422  # was a 500: only the dataset says it is text
    assert response.json()["detail"][0]["loc"] == ["body", "dataset"]
    assert response.json()["detail"][0]["msg"].startswith(
        "dataset: a text dataset; hyperparameters.bidirectional would let a text model read"
    )


def test_train_from_a_dataset_then_generate_and_delete_it(start_server: StartServer) -> None:
    server = start_server()
    dataset = upload(server.http, FOX).json()
    hp = {"epochs": 3, "hidden_size": 32, "seq_len": 16, "seed": 0}
    response = server.http.post(
        "/train", json={"model_name": "fox", "dataset": dataset["id"], "hyperparameters": hp}
    )
    assert response.status_code == 202, response.text
    job = response.json()

    busy = server.http.delete(f"/datasets/{dataset['id']}")  # queued or running: in use
    done = server.wait_for_job(job["id"], timeout=120)

    assert job["dataset"] == dataset["id"]
    assert busy.status_code == 409
    assert job["id"] in busy.json()["detail"]
    assert done["status"] == "succeeded", done["error"]
    assert done["history"] is None
    last = server.http.get(f"/jobs/{job['id']}?history=true").json()["history"][-1]
    assert 0.8 * len(FOX) < last["characters"] < len(FOX)  # the dataset, less what is held out
    generated = server.http.post(
        "/generate", json={"model_name": "fox", "prompt": "the ", "length": 20, "seed": 0}
    )
    assert generated.status_code == 200, generated.text
    assert set(generated.json()["text"]) <= set(FOX)
    assert server.http.delete(f"/datasets/{dataset['id']}").status_code == 204
    assert server.http.get(f"/datasets/{dataset['id']}").status_code == 404


def test_rows_of_a_dataset_are_held_to_the_limits_of_inline_pairs(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(max_training_pairs=2, max_training_labels=1)
    with TestClient(create_app(settings)) as small:
        three = upload(small, "ab,ba\nabc,cba\nx,y\n", kind="pairs").json()["id"]
        one = upload(small, "Smith,English\n", kind="labels").json()["id"]
        two = upload(small, "Smith,English\nRossi,Italian\n", kind="labels").json()["id"]

        too_many = small.post("/train", json={"model_name": "swap", "dataset": three})
        classifier = small.post("/train", json={"model_name": "names", "dataset": one})
        too_many_labels = small.post("/train", json={"model_name": "names", "dataset": two})

    assert too_many.status_code == too_many_labels.status_code == 422
    assert too_many.json()["detail"][0]["loc"] == ["body", "dataset"]
    assert "3 rows, at most 2 allowed" in too_many.json()["detail"][0]["msg"]
    assert classifier.status_code == 202, classifier.text  # labels rows train a classifier
    assert too_many_labels.json()["detail"][0]["loc"] == ["body", "dataset"]
    assert "2 distinct labels, at most 1 allowed" in too_many_labels.json()["detail"][0]["msg"]


def test_only_an_admin_key_uploads_and_it_is_asked_before_the_body_is_read(
    make_settings: Callable[..., Settings],
) -> None:
    admin, reader = "admin-key-0123456789abcdef", "predict-key-0123456789abcdef"
    settings = make_settings(api_keys=f"admin:{admin},predict:{reader}", max_dataset_bytes=4096)
    with TestClient(create_app(settings)) as keyed:
        # over the size limit too: the key is settled first, so the refusal is about it
        refused = upload(keyed, "x" * 5000, headers={"Authorization": f"Bearer {reader}"})
        uploaded = keyed.post(
            "/datasets", content=FOX.encode(), headers={"Authorization": f"Bearer {admin}"}
        )

    assert refused.status_code == 403
    assert refused.json() == {"detail": "this API key lacks the 'admin' scope"}
    assert uploaded.status_code == 201


@pytest.mark.anyio
async def test_uploads_past_the_concurrency_limit_get_429_at_once(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(max_concurrent_dataset_uploads=1))
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:  # holds the one slot until released
        yield FOX.encode()
        await release.wait()
        yield b"the end."

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
            first = asyncio.create_task(api.post("/datasets", content=slow_body()))
            while not app.state.services.dataset_uploads.active:
                await asyncio.sleep(0.01)
            refused = await api.post("/datasets", content=b"another text")
            release.set()
            done = await first

    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "5"
    assert "CHARNN_MAX_CONCURRENT_DATASET_UPLOADS" in refused.json()["detail"]
    assert done.status_code == 201


def test_a_text_dataset_gets_the_text_defaults_for_its_size(client: TestClient) -> None:
    dataset = upload(client, FOX).json()["id"]

    response = client.post("/train", json={"model_name": "fox", "dataset": dataset})

    assert response.status_code == 202, response.text
    job = response.json()
    client.post(f"/jobs/{job['id']}/cancel")
    assert job["hyperparameters"] == {
        **job["hyperparameters"],
        **text_defaults(len(FOX)),  # as inline text of the same length gets them
    }
    assert job["estimated_seconds"] > 0
