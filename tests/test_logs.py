"""``CHARNN_LOG_FORMAT=json``: every line the service and its workers write is one JSON
object, uvicorn's start-up and access lines and rq's included, with the request id."""

from __future__ import annotations

import json
import subprocess
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import (
    TEST_SETTINGS,
    RedisServer,
    ServiceProcess,
    charnn_command,
    charnn_environment,
    free_port,
    hello_body,
)


def json_lines(output: str) -> list[dict[str, Any]]:
    """Every line of ``output`` as JSON (a line that is not fails the test, naming it)."""
    entries = []
    for line in output.splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}\n{output}") from None
    return entries


def wait_ready(http: httpx.Client, service: ServiceProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert service.alive(), service.log
        with suppress(httpx.TransportError):
            if http.get("/readyz").status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"never ready:\n{service.log}")


def test_charnn_serve_and_its_workers_log_json_lines(tmp_path: Path) -> None:
    port = free_port()
    settings = {"store_dir": tmp_path / "store", **TEST_SETTINGS, "log_format": "json"}
    command = [*charnn_command(), "serve", "--port", str(port)]
    service = ServiceProcess(command, charnn_environment(settings), tmp_path / "serve.log")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            wait_ready(http, service)
            http.get("/healthz", headers={"X-Request-ID": "trace-42"})
            job = http.post("/train", json=hello_body()).json()
            while http.get(f"/jobs/{job['id']}").json()["status"] in ("queued", "running"):
                time.sleep(0.2)
            predict = {"model_name": "hello", "inputs": ["hello"]}
            http.post("/predict", json=predict, headers={"X-Request-ID": "trace-43"})
    finally:
        service.stop()

    entries = json_lines(service.log)
    messages = [entry["message"] for entry in entries]
    assert any(m.startswith("Uvicorn running on http://127.0.0.1:") for m in messages)
    assert any(m.startswith("charnn ") and " ready: " in m for m in messages)
    access = [e for e in entries if e["logger"] == "uvicorn.access" and e["path"] == "/healthz"]
    assert access == [access[0]]
    assert (access[0]["request_id"], access[0]["method"], access[0]["status"]) == (
        "trace-42",
        "GET",
        200,
    )
    predict = [e for e in entries if e["logger"] == "uvicorn.access" and e["path"] == "/predict"]
    assert [(e["request_id"], e["status"]) for e in predict] == [("trace-43", 200)]
    # the training worker, a process of its own, writes the same lines
    worker = [e["message"] for e in entries if e["logger"] == "charnn.worker"]
    assert len([m for m in worker if " epoch " in m and " loss=" in m]) == 15
    assert any(m.endswith("stopped: completed, best epoch 15") for m in worker)
    assert "Shutting down" in messages  # and uvicorn's last words


def test_charnn_worker_logs_json_lines(tmp_path: Path, redis_server: RedisServer) -> None:
    settings = {
        "store_dir": tmp_path / "store",
        **TEST_SETTINGS,
        "job_backend": "rq",
        "redis_url": redis_server.url,
        "database_url": f"sqlite:///{tmp_path / 'registry.db'}",
        "log_format": "json",
    }
    worker = subprocess.run(
        [*charnn_command(), "worker", "--burst"],  # the queue is empty: it starts and stops
        env=charnn_environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert worker.returncode == 0, worker.stderr
    entries = json_lines(worker.stdout + worker.stderr)
    loggers = {entry["logger"] for entry in entries}
    assert {"charnn.queue", "rq.worker"} <= loggers, entries
