"""Fixtures of the service's tests (tests/api, tests/store, tests/jobs).

Three kinds of client, each where it fits:

- ``client``: FastAPI's ``TestClient`` on ``create_app(Settings(...))``, entered as a
  context manager so the lifespan runs (registry, job runner, serving) for plain routes;
- ``httpx.AsyncClient`` over ``ASGITransport`` (see ``tests/api/test_concurrency.py``)
  where requests must really overlap;
- ``start_server``: a real uvicorn process on 127.0.0.1 with its own store, driven with
  httpx, for end-to-end flows (training in spawned workers, server-sent events, crashes).

Every app here runs on the CPU with one torch thread per training worker, and its
runner polls often, so that tiny jobs (the tutorial's "hello" -> "ohlol") end in seconds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Collection, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from starlette.exceptions import StarletteDeprecationWarning

from app.main import create_app
from app.ml.checkpoint import Checkpoint
from app.ml.data import pairs_dataset, text_dataset
from app.ml.hyperparameters import Hyperparameters
from app.ml.train import TrainingSession, train
from app.settings import Settings
from app.store.layout import StoreLayout
from app.store.publish import publish_checkpoint
from app.store.registry import Registry

with warnings.catch_warnings():
    # Starlette asks for httpx2 and warns when its TestClient runs on httpx; the tests
    # import it once here, so warnings stay errors everywhere else.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
FINAL = frozenset({"succeeded", "failed", "cancelled"})
TEST_SETTINGS: dict[str, Any] = {
    "device": "cpu",
    "job_poll_seconds": 0.1,
    "worker_torch_threads": 1,
}

# --- request bodies ---------------------------------------------------------------------------


def hello_body() -> dict[str, Any]:
    """The tutorial: learn "hello" -> "ohlol" (its last model, seed 0; 15 epochs suffice)."""
    return {
        "model_name": "hello",
        "data": {"pairs": [{"input": "hello", "target": "ohlol"}]},
        "hyperparameters": {"epochs": 15, "seed": 0},
    }


def long_text(characters: int) -> str:
    """Deterministic English-like text, for jobs that must run for a while."""
    rng = random.Random(0)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "cat"]
    text = ""
    while len(text) < characters:
        text += rng.choice(words) + " "
    return text[:characters]


def long_body(model_name: str, epochs: int, characters: int = 8000) -> dict[str, Any]:
    """A next-character GRU (hidden 256) over ``characters`` of text.

    On one core an epoch takes about 0.3 s per 8000 characters.
    """
    return {
        "model_name": model_name,
        "data": {"text": long_text(characters)},
        "hyperparameters": {
            "cell": "gru",
            "embedding_size": 16,
            "hidden_size": 256,
            "num_layers": 1,
            "epochs": epochs,
            "seq_len": 64,
            "batch_size": 16,
            "validation_fraction": 0.0,
            "seed": 0,
        },
    }


@pytest.fixture
def hello() -> dict[str, Any]:
    """A POST /train body: the tutorial's "hello" -> "ohlol"."""
    return hello_body()


@pytest.fixture(scope="session")
def long_job() -> Callable[..., dict[str, Any]]:
    """``long_job(model_name, epochs, characters=8000)``: a POST /train body that runs a while."""
    return long_body


# --- trained models, without a job --------------------------------------------------------------

FOX_TEXT = "the quick brown fox jumps over the lazy dog. " * 4


def train_in_process(hyperparameters: Hyperparameters, dataset: Any) -> Checkpoint:
    session = TrainingSession.start(hyperparameters, dataset, torch.device("cpu"))
    train(session)
    return session.checkpoint(with_training_state=False)


@pytest.fixture(scope="session")
def hello_model() -> Checkpoint:
    """The tutorial's model trained on "hello" -> "ohlol", in this process (a tenth of a second)."""
    return train_in_process(Hyperparameters(epochs=15, seed=0), pairs_dataset([("hello", "ohlol")]))


@pytest.fixture(scope="session")
def fox_model() -> Checkpoint:
    """A small next-character model of ``FOX_TEXT``, which ``/generate`` can continue."""
    hp = Hyperparameters(hidden_size=32, num_layers=1, epochs=30, seq_len=16, seed=0)
    return train_in_process(hp, text_dataset(FOX_TEXT, hp.seq_len))


def publish_to(store_dir: Path, model_name: str, checkpoint: Checkpoint) -> int:
    """Publish ``checkpoint`` as the next version of ``model_name``, as a finished job does."""
    layout = StoreLayout(store_dir)
    layout.ensure()
    registry = Registry.connect(Settings(store_dir=store_dir).registry_url)
    try:
        return publish_checkpoint(registry, layout, model_name, checkpoint).version
    finally:
        registry.close()


@pytest.fixture(scope="session")
def publish_model() -> Callable[[Path, str, Checkpoint], int]:
    """``publish_model(store_dir, model_name, checkpoint) -> version``."""
    return publish_to


@pytest.fixture
def publish(store_dir: Path) -> Callable[[str, Checkpoint], int]:
    """``publish(model_name, checkpoint) -> version`` in this test's store."""
    return lambda model_name, checkpoint: publish_to(store_dir, model_name, checkpoint)


# --- waiting on jobs ------------------------------------------------------------------------


def wait_for_job(
    http: httpx.Client,
    job_id: str,
    until: Callable[[dict[str, Any]], bool] | Collection[str] = FINAL,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Poll GET /jobs/{id} until ``until`` holds (a set of statuses, or a predicate)."""
    done = until if callable(until) else (lambda job: job["status"] in until)
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if done(job):
            return job
        if job["status"] in FINAL or time.monotonic() > deadline:
            raise AssertionError(f"job never got there; it is now {json.dumps(job)[:2000]}")
        time.sleep(0.05)


@pytest.fixture(name="wait_for_job", scope="session")
def wait_for_job_fixture() -> Callable[..., dict[str, Any]]:
    """``wait_for_job(client, job_id, until=final statuses or predicate, timeout=60)``."""
    return wait_for_job


def read_events(http: httpx.Client, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Follow GET /jobs/{id}/events to its end: ``[(event name, JSON data), ...]``."""
    events: list[tuple[str, dict[str, Any]]] = []
    name = "message"
    timeout = httpx.Timeout(10.0, read=60.0)
    with http.stream("GET", f"/jobs/{job_id}/events", timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


# --- in-process apps --------------------------------------------------------------------------


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


def settings_on(store_dir: Path, **overrides: Any) -> Settings:
    return Settings(**{"store_dir": store_dir, **TEST_SETTINGS, **overrides})


@pytest.fixture(scope="session")
def settings_for() -> Callable[..., Settings]:
    """``settings_for(store_dir, **overrides)``: test settings on that store."""
    return settings_on


@pytest.fixture
def make_settings(store_dir: Path) -> Callable[..., Settings]:
    """``make_settings(**overrides)``: test settings on this test's own store."""
    return lambda **overrides: settings_on(store_dir, **overrides)


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """A TestClient on a fresh store; the lifespan runs (and stops the job runner after)."""
    with TestClient(create_app(make_settings())) as test_client:
        yield test_client


# --- a real server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def live_processes(pgid: int) -> list[int]:
    """Pids of the processes in process group ``pgid`` that still run (zombies excluded)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(stat.parent.name))
    return found


def command_line(pid: int) -> str:
    with suppress(OSError):
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


class LiveServer:
    """``uvicorn app.main:app`` in its own process group, on 127.0.0.1 and a free port.

    Its job workers are spawned into the same group, so ``stop`` can end them all.
    """

    def __init__(self, store_dir: Path, settings: dict[str, Any], log_path: Path) -> None:
        self.store_dir = store_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHARNN_")}
        values = {"store_dir": store_dir, **TEST_SETTINGS, **settings}
        env.update({f"CHARNN_{k.upper()}": str(v) for k, v in values.items()})
        command = [sys.executable, "-m", "uvicorn", "app.main:app"]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, shared by its workers
            )
        self.pid = self.process.pid
        self.http = httpx.Client(base_url=self.base_url, timeout=30.0)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the server exited with {self.process.returncode}:\n{self.log}"
                )
            with suppress(httpx.TransportError):
                if self.http.get("/readyz").status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"the server never became ready:\n{self.log}")

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def workers(self) -> list[int]:
        """Pids of its live training workers (spawned processes)."""
        return [
            pid
            for pid in live_processes(self.pid)
            if pid != self.pid and "spawn_main" in command_line(pid)
        ]

    def wait_for_job(self, job_id: str, **kwargs: Any) -> dict[str, Any]:
        return wait_for_job(self.http, job_id, **kwargs)

    def events(self, job_id: str) -> list[tuple[str, dict[str, Any]]]:
        return read_events(self.http, job_id)

    def kill(self) -> None:
        """SIGKILL the server process alone, as a crash would."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown), SIGKILL if it hangs; then end whatever is left."""
        self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """``start_server(store_dir=None, **settings)``: a ready real server; stopped after the test.

    ``settings`` are ``Settings`` fields, passed as ``CHARNN_*`` environment variables;
    give the ``store_dir`` of an earlier server to restart on its store.
    """
    servers: list[LiveServer] = []

    def start(store_dir: Path | None = None, **settings: Any) -> LiveServer:
        log_path = tmp_path / f"server-{len(servers) + 1}.log"
        server = LiveServer(store_dir or tmp_path / "store", settings, log_path)
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()
