"""A sweep of the hardened service as a hostile client and an unlucky operator would try it.

Each test here reproduces one finding against a real server: it answered 500 (or hung, or
grew) before its fix, and answers a 4xx that names the field (or stays bounded) after.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from app.ml.checkpoint import META_FILE, WEIGHTS_FILE, Checkpoint, save_checkpoint
from app.ml.data import text_dataset
from app.ml.hyperparameters import Hyperparameters
from tests.conftest import LiveServer, proc_status_mib, train_in_process

NOT_UTF8 = b"\xff\xfe{not json"


@pytest.fixture
def hello_server(hello_model: Checkpoint, serve_models: Callable[..., LiveServer]) -> LiveServer:
    return serve_models({"hello": hello_model})


CONTENT_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]


def test_a_body_that_is_neither_json_nor_utf8_is_refused_with_a_422(
    hello_server: LiveServer,
) -> None:
    """Before: 500 (FastAPI's encoder decoded the echoed bytes as strict UTF-8)."""
    for path in ["/predict", "/generate", "/train"]:
        for content_type in CONTENT_TYPES:
            answer = hello_server.http.post(
                path, content=NOT_UTF8, headers={"content-type": content_type}
            )
            assert answer.status_code == 422, (path, content_type, answer.text)
            [error] = answer.json()["detail"]
            assert error["loc"] == ["body"]
            assert error["input"] == NOT_UTF8.decode("utf-8", "backslashreplace")
    assert "Traceback" not in hello_server.log


@pytest.fixture(scope="module")
def big_model() -> Checkpoint:
    """An LSTM of 3.2 M parameters (12.7 MB of weights), trained for one short epoch."""
    hp = Hyperparameters(cell="lstm", hidden_size=512, num_layers=2, epochs=1, seq_len=8, seed=0)
    return train_in_process(hp, text_dataset("hello world " * 8, hp.seq_len))


def test_versions_served_one_after_another_stay_within_the_model_cache(
    big_model: Checkpoint, serve_models: Callable[..., LiveServer]
) -> None:
    """CHARNN_MODEL_CACHE_SIZE bounds the versions a server holds, whatever clients ask for.

    Before: each version's batcher kept its predictor after the LRU dropped it, so a client
    that asked for version 1, 2, ... N in turn made the server hold all N (measured: +85 MiB
    for 8 versions of 12.1 MiB, with a cache of one). After: +32 MiB for 16 versions (the
    one loaded, the one loading, the allocator's slack), the same for 8.
    """
    versions = 16
    server = serve_models({"big": big_model}, versions=versions, model_cache_size=1)
    weights_mib = sum(t.numel() * t.element_size() for t in big_model.weights.values()) / 2**20
    body = {"model_name": "big", "inputs": ["hello"], "version": 1}
    assert server.http.post("/predict", json=body).status_code == 200
    before = proc_status_mib(server.pid)
    for version in range(1, versions + 1):
        answer = server.http.post("/predict", json={**body, "version": version})
        assert answer.status_code == 200, answer.text
    grown = proc_status_mib(server.pid) - before
    assert grown < 4 * weights_mib, f"{grown:.0f} MiB for {versions} versions of {weights_mib:.1f}"


def test_request_methods_a_client_makes_up_add_no_metric_series(
    monkeypatch: pytest.MonkeyPatch, start_server: Callable[..., LiveServer]
) -> None:
    """Before: under uvicorn's h11 protocol (``--http h11``, or no httptools installed) any
    token is a method, and each one a client made up added 17 series to /metrics (a
    histogram and a counter): unbounded label values. After: they count as ``OTHER``."""
    monkeypatch.setenv("UVICORN_HTTP", "h11")
    server = start_server()
    made_up = [f"X{n}" for n in range(20)]
    for method in made_up:
        assert server.http.request(method, "/models").status_code == 405
    metrics = server.http.get("/metrics").text
    assert not [m for m in made_up if f'method="{m}"' in metrics]
    assert 'charnn_http_requests_total{method="OTHER",route="/models",status="405"} 20.0' in metrics


@pytest.mark.parametrize("epoch", [2**31, 2**63])
def test_an_import_declaring_more_epochs_than_the_registry_can_count_is_a_422(
    tmp_path: Path,
    hello_model: Checkpoint,
    start_server: Callable[..., LiveServer],
    epoch: int,
) -> None:
    """Before: 2**63 answered 500 on SQLite (OverflowError at the insert), 2**31 was stored
    on SQLite and answered 500 on PostgreSQL (``versions.epochs`` is a 32-bit integer)."""
    save_checkpoint(hello_model, tmp_path / "export")
    meta = json.loads((tmp_path / "export" / META_FILE).read_text())
    meta["epoch"] = epoch
    weights = (tmp_path / "export" / WEIGHTS_FILE).read_bytes()
    server = start_server()
    answer = server.http.post(
        "/models/odd/versions",
        files={"checkpoint": (META_FILE, json.dumps(meta)), "weights": (WEIGHTS_FILE, weights)},
    )
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["detail"]
    assert error["loc"] == ["body", "checkpoint"]
    assert "epoch: Input should be less than or equal to 2147483647" in error["msg"]
    assert list((server.store_dir / "models").iterdir()) == []


def test_a_download_racing_the_deletion_of_its_version_is_a_404(
    hello_model: Checkpoint, serve_models: Callable[..., LiveServer]
) -> None:
    """Before: a download that found the version's row, then not its files (deleted in
    between), answered 503 "the stored checkpoint failed verification" and logged an error,
    as if the store were damaged (1 in about 400 downloads racing a delete; a FileResponse
    that lost its file between the route and its own stat answered 500)."""
    rounds = 12
    server = serve_models({"hello": hello_model}, versions=rounds)
    answers: Counter[int] = Counter()

    def download(version: int, until: float) -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            while time.monotonic() < until:
                for filename in (META_FILE, WEIGHTS_FILE):
                    url = f"/models/hello/versions/{version}/files/{filename}"
                    answers[http.get(url).status_code] += 1

    for version in range(1, rounds + 1):
        until = time.monotonic() + 0.6
        threads = [threading.Thread(target=download, args=(version, until)) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        assert server.http.delete(f"/models/hello/versions/{version}").status_code == 204
        for thread in threads:
            thread.join()
    assert set(answers) == {200, 404}, answers
    assert "failed verification" not in server.log
