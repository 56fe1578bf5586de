"""A job whose loss diverges fails once, clearly, and leaves nothing behind.

Against a real uvicorn, its job in a spawned worker, on SQLite and PostgreSQL.
SGD with learning_rate 10 and weight_decay 1 diverges for certain, whatever the data:
each step multiplies every weight by 1 - 10 x 1 = -9 before the gradient is added, so
the logits pass float32's range (3.4e38, 9^40) and the loss turns NaN or infinite on
the tutorial's "hello" -> "ohlol" (one step per epoch): at epoch 22 on some CPUs (a
product of two grown matrices overflows first), at epoch 41 on others (the kernels
differ), always between the two.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from app.store.layout import StoreLayout
from tests.conftest import LiveServer, hello_body

DIVERGENCE = re.compile(
    r"loss became (NaN|infinite) at epoch (\d+): the training diverged; lower "
    r"hyperparameters\.learning_rate \(or weight_decay\), or set hyperparameters\.grad_clip"
)


def diverging_body() -> dict[str, Any]:
    body = hello_body()
    body["model_name"] = "diverges"
    body["hyperparameters"] = {
        "optimizer": "sgd",
        "learning_rate": 10.0,
        "weight_decay": 1.0,
        "epochs": 60,
        "seed": 0,
    }
    return body


def test_a_diverging_job_fails_once_with_the_epoch_and_leaves_nothing_behind(
    start_server: Callable[..., LiveServer],
    database: dict[str, str],
    wait_for_job: Callable[..., dict[str, Any]],
) -> None:
    server = start_server(job_max_attempts=3, **database)
    job_id = server.http.post("/train", json=diverging_body()).json()["id"]

    job = wait_for_job(server.http, job_id, timeout=120)

    assert (job["status"], job["attempts"], job["failures"]) == ("failed", 1, 0)  # not retried
    diverged = DIVERGENCE.fullmatch(job["error"])
    assert diverged, job["error"]
    diverges_at = int(diverged[2])
    assert 20 <= diverges_at <= 45
    assert (job["epoch"], job["version"]) == (diverges_at - 1, None)
    # ?history= asks for the epochs explicitly, wherever they are left out by default
    raw = server.http.get(f"/jobs/{job_id}", params={"history": "true"}).text
    losses = [epoch["loss"] for epoch in json.loads(raw)["history"]]
    assert len(losses) == diverges_at - 1
    assert all(isinstance(loss, float) and math.isfinite(loss) for loss in losses)  # no null
    assert server.http.get("/models/diverges").status_code == 404
    layout = StoreLayout(server.store_dir)
    assert not layout.job_dir(job_id).exists()  # no checkpoint to resume from
    assert not layout.model_dir("diverges").exists()  # no version, not even half of one
    assert layout.staging_dirs() == []
