"""GET /jobs/{job_id}/plot.svg, and the pure SVG renderer behind it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient  # first imported, warnings handled, in conftest

from app.api.plots import job_plot_svg
from app.main import create_app
from app.ml.metrics import EpochMetrics
from app.settings import Settings

SVG = "{http://www.w3.org/2000/svg}"
PAIRS = [
    {"input": "hello", "target": "ohlol"},
    {"input": "olleh", "target": "lolho"},
    {"input": "hole", "target": "olho"},
    {"input": "helo", "target": "ohlo"},
]


WaitForJob = Callable[..., dict[str, Any]]


@pytest.fixture
def one_job_at_a_time(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """A client whose service trains one job at a time: the next one waits, queued."""
    settings = make_settings(max_concurrent_jobs=1, max_epochs=100_000)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def train(client: TestClient, epochs: int, **hyperparameters: Any) -> str:
    request = {
        "model_name": "plotted",
        "data": {"pairs": PAIRS},
        "hyperparameters": {"architecture": "rnn_cell", "epochs": epochs, "seed": 1}
        | hyperparameters,
    }
    response = client.post("/train", json=request)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def parse(svg_text: str) -> ET.Element:
    root = ET.fromstring(svg_text)
    assert root.tag == f"{SVG}svg"
    return root


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def curves(root: ET.Element) -> dict[str, list[str]]:
    """Each curve's class -> its polyline's points."""
    found = {}
    for group in root.iter(f"{SVG}g"):
        classes = group.get("class", "").split()
        if classes[:1] == ["curve"]:
            (line,) = group.iter(f"{SVG}polyline")
            found[classes[1]] = line.get("points", "").split()
    return found


def test_plot_of_a_finished_job(client: TestClient, wait_for_job: WaitForJob) -> None:
    job_id = train(client, epochs=6, validation_fraction=0.25)
    job = wait_for_job(client, job_id)
    assert job["status"] == "succeeded", job["error"]

    response = client.get(f"/jobs/{job_id}/plot.svg")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    root = parse(response.text)
    lines = curves(root)
    assert set(lines) == {"loss", "train-accuracy", "val-loss", "val-accuracy"}
    assert all(len(points) == 6 for points in lines.values())
    labels = texts(root)
    assert {"epoch", "loss", "accuracy"} <= set(labels)
    assert {"train char accuracy", "val char accuracy", "val loss"} <= set(labels)
    assert f"plotted, job {job_id[:8]}" in labels
    assert {"0%", "100%", "1", "6"} <= set(labels)


def test_plot_of_an_unknown_job_is_404(client: TestClient) -> None:
    response = client.get("/jobs/nope/plot.svg")

    assert response.status_code == 404
    assert response.json() == {"detail": "job 'nope' does not exist"}


def test_plot_of_a_job_with_no_epochs_yet(
    one_job_at_a_time: TestClient, wait_for_job: WaitForJob
) -> None:
    client = one_job_at_a_time
    running = train(client, epochs=100_000)  # holds the one slot while the next job waits
    queued = train(client, epochs=5)
    try:
        assert client.get(f"/jobs/{queued}").json()["status"] == "queued"

        response = client.get(f"/jobs/{queued}/plot.svg")

        assert response.status_code == 200
        root = parse(response.text)
        assert "No epochs yet" in texts(root)
        assert curves(root) == {}
        assert "no epochs yet" in (root.findtext(f"{SVG}title") or "")
    finally:
        for job_id in (queued, running):
            client.post(f"/jobs/{job_id}/cancel")
        for job_id in (queued, running):
            assert wait_for_job(client, job_id)["status"] == "cancelled"


def epoch(n: int, loss: float, accuracy: float) -> EpochMetrics:
    # constructed, not validated: a NaN is refused now, but one recorded before is served
    return EpochMetrics.model_construct(
        epoch=n,
        loss=loss,
        train_char_accuracy=accuracy,
        train_seq_accuracy=0.0,
        sample_input="a<b",
        sample_prediction="b&a",
        seconds=0.01,
        characters=3,
    )


def test_svg_escapes_text_and_skips_values_it_cannot_draw() -> None:
    history = [epoch(1, 2.2, 0.5), epoch(2, float("nan"), 0.75), epoch(3, 0.5, 1.0)]

    svg_text = job_plot_svg(history, title='<script>alert("x")</script> & co')

    root = parse(svg_text)
    assert "<script>" not in svg_text
    assert '<script>alert("x")</script> & co' in texts(root)
    lines = curves(root)
    assert set(lines) == {"loss", "train-accuracy"}  # no validation data: no validation curves
    assert len(lines["loss"]) == 2  # the NaN epoch is left out
    assert len(lines["train-accuracy"]) == 3
    assert "2.5" in texts(root)  # the loss axis tops out at a round number above 2.2
