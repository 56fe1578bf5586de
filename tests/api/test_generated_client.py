"""A client generated from /openapi.json by openapi-python-client reads well and works.

The schema is the contract for every client we do not write ourselves: this one is
generated from a live server's schema, imported, and drives the tutorial end to end
(train, follow by polling, predict, then generate with a text model) through functions
named after the operation ids.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import LiveServer, hello_body

# openapi-python-client and the ruff it formats with, in a virtual environment of their own
# (scripts/install.sh dev): the tool pins an older typer than charnn's
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("CHARNN_TOOLS_VENV", ROOT / ".venv-tools")) / "bin"
# image/svg+xml (the job's plot) is a type the tool cannot read: it gets the bytes
TOOL_CONFIG = {"content_type_overrides": {"image/svg+xml": "application/octet-stream"}}


@pytest.fixture
def generated(tmp_path: Path, start_server: Callable[..., LiveServer]) -> Iterator[Any]:
    """``(client package, a client for the live server)``; the package off sys.path after."""
    server = start_server()
    schema, config = tmp_path / "openapi.json", tmp_path / "config.json"
    schema.write_text(server.http.get("/openapi.json").text)
    config.write_text(json.dumps(TOOL_CONFIG))
    output = tmp_path / "client"
    result = subprocess.run(
        [BIN / "openapi-python-client", "generate", "--path", schema, "--config", config]
        + ["--output-path", output],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout, result.stdout  # every operation generated whole
    sys.path.insert(0, str(output))
    try:
        package = importlib.import_module("charnn_client")
        with package.Client(server.base_url, raise_on_unexpected_status=True) as client:
            yield package, client
    finally:
        sys.path.remove(str(output))
        for name in [name for name in sys.modules if name.split(".")[0] == "charnn_client"]:
            del sys.modules[name]


def operation(tag: str, name: str) -> ModuleType:
    return importlib.import_module(f"charnn_client.api.{tag}.{name}")


def test_the_modules_are_named_after_the_operations(generated: Any) -> None:
    package, _client = generated
    root = Path(package.__file__).parent / "api"
    modules = {path.relative_to(root).as_posix() for path in root.glob("*/*.py")}

    assert {
        "training/train.py",
        "jobs/get_job.py",
        "jobs/list_jobs.py",
        "jobs/cancel_job.py",
        "predict/predict.py",
        "predict/generate.py",
        "models/get_model.py",
        "models/import_version.py",
    } <= modules
    assert importlib.import_module("charnn_client.models").VersionImport  # the multipart body


def follow(client: Any, job_id: str, timeout: float = 30.0) -> Any:
    """The job once it has ended, polled through ``get_job``."""
    get_job = operation("jobs", "get_job")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get_job.sync(job_id, client=client)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout} s")


def train(client: Any, body: dict[str, Any]) -> Any:
    models = importlib.import_module("charnn_client.models")
    job = operation("training", "train").sync(
        client=client, body=models.TrainRequest.from_dict(body)
    )
    assert isinstance(job, models.JobPublic), job
    return follow(client, job.id)


def test_the_generated_client_trains_follows_predicts_and_generates(generated: Any) -> None:
    _package, client = generated
    models = importlib.import_module("charnn_client.models")

    job = train(client, hello_body())
    assert job.status == "succeeded", job.error
    predicted = operation("predict", "predict").sync(
        client=client, body=models.PredictRequest(model_name="hello", inputs=["hello"])
    )
    assert predicted.outputs == ["ohlol"]

    text = {"model_name": "abc", "data": {"text": "abcabcabcabc" * 20}}
    text["hyperparameters"] = {"hidden_size": 16, "epochs": 20, "seed": 0}
    assert train(client, text).status == "succeeded"
    generated_text = operation("predict", "generate").sync(
        client=client,
        body=models.GenerateRequest(model_name="abc", prompt="abc", length=9, temperature=0),
    )
    assert generated_text.text == "abc" + "abcabcabc"  # the prompt, continued
