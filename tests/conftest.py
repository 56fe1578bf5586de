"""Fixtures of the service's tests (tests/api, tests/store, tests/jobs).

Three kinds of client, each where it fits:

- ``client``: FastAPI's ``TestClient`` on ``create_app(Settings(...))``, entered as a
  context manager so the lifespan runs (registry, job runner, serving) for plain routes;
- ``httpx.AsyncClient`` over ``ASGITransport`` (see ``tests/api/test_concurrency.py``)
  where requests must really overlap;
- ``start_server``: a real uvicorn process on 127.0.0.1 with its own store, driven with
  httpx, for end-to-end flows (training in spawned workers, server-sent events, crashes).

The scaled-out deployment (``CHARNN_JOB_BACKEND=rq``) has its own: ``postgres_url`` (a fresh
PostgreSQL database per test module, on the server of ``CHARNN_TEST_PG_URL``),
``redis_server`` (a private ``redis-server`` per test module, never the shared one) and
``start_deployment`` (an API on the rq backend plus ``charnn worker`` processes);
``new_postgres_database`` and ``processes`` build other deployments (the compose file's).
They fail, never skip, where PostgreSQL or Redis cannot be had.

Every app here runs on the CPU with one torch thread per training worker, and its
runner polls often, so that tiny jobs (the tutorial's "hello" -> "ohlol") end in seconds.
"""

from __future__ import annotations

import os

# MKL computes differently on different CPU generations (AVX-512 vs AVX2 kernels); the
# tests assert exact numbers (the epoch where a diverging run overflows, for one), so they
# hold MKL to its AVX2 path on every machine: its "conditional numerical reproducibility".
# Set before MKL's first use; servers and workers the tests start inherit it.
os.environ.setdefault("MKL_CBWR", "AVX2")

import json  # noqa: E402
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from redis import Redis
from redis.exceptions import RedisError
from rq import Worker
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import OperationalError
from starlette.exceptions import StarletteDeprecationWarning

from app.main import create_app
from app.ml.checkpoint import Checkpoint
from app.ml.data import classify_dataset, pairs_dataset, text_dataset
from app.ml.hyperparameters import Hyperparameters
from app.ml.train import TrainingSession, train
from app.settings import Settings
from app.store.layout import StoreLayout, new_id
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
    # Starlette's TestClient says "Host: testserver"; a real server is called on 127.0.0.1
    "allowed_hosts": "127.0.0.1,localhost,testserver",
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


SURNAMES = [
    ("Nakamura", "Japanese"), ("Tanaka", "Japanese"), ("Sato", "Japanese"),
    ("Rossi", "Italian"), ("Bianchi", "Italian"), ("Romano", "Italian"),
    ("Ivanov", "Russian"), ("Petrov", "Russian"), ("Volkov", "Russian"),
]  # fmt: skip


@pytest.fixture(scope="session")
def surnames_model() -> Checkpoint:
    """A small classifier of ``SURNAMES`` by language (task classify), trained in this process."""
    hp = Hyperparameters(
        cell="gru", embedding_size=8, hidden_size=16, num_layers=1, bidirectional=True,
        learning_rate=0.02, epochs=30, validation_fraction=0.0, seed=0,
    )  # fmt: skip
    return train_in_process(hp, classify_dataset(SURNAMES))


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


def epoch_metrics(epoch: int, sample: str = "hello") -> dict[str, Any]:
    """What a worker records for an epoch (``Registry.record_epoch``), for written histories."""
    return {
        "epoch": epoch,
        "loss": 1.0 / epoch,
        "train_char_accuracy": 0.5,
        "train_seq_accuracy": 0.0,
        "val_loss": None,
        "val_char_accuracy": None,
        "val_seq_accuracy": None,
        "seconds": 0.25,
        "characters": 5,
        "sample_input": sample,
        "sample_prediction": sample[::-1],
    }


# --- waiting on jobs ------------------------------------------------------------------------


def wait_for_job(
    http: httpx.Client,
    job_id: str,
    until: Callable[[dict[str, Any]], bool] | Collection[str] = FINAL,
    timeout: float = 60.0,
    history: bool = False,
) -> dict[str, Any]:
    """Poll GET /jobs/{id} until ``until`` holds (a set of statuses, or a predicate);
    ``history=True`` reads the job with its history."""
    done = until if callable(until) else (lambda job: job["status"] in until)
    deadline = time.monotonic() + timeout
    params = {"history": "true"} if history else {}
    while True:
        response = http.get(f"/jobs/{job_id}", params=params)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if done(job):
            return job
        if job["status"] in FINAL or time.monotonic() > deadline:
            raise AssertionError(f"job never got there; it is now {json.dumps(job)[:2000]}")
        time.sleep(0.05)


@pytest.fixture(name="wait_for_job", scope="session")
def wait_for_job_fixture() -> Callable[..., dict[str, Any]]:
    """``wait_for_job(client, job_id, until=final statuses or predicate, timeout=60,
    history=False)``."""
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


def proc_status_mib(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of a process, in MiB, from /proc (VmRSS now, VmHWM its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


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


def charnn_environment(settings: dict[str, Any]) -> dict[str, str]:
    """This process's environment without its ``CHARNN_*``, plus ``settings`` as ``CHARNN_*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARNN_")}
    env.update({f"CHARNN_{k.upper()}": str(v) for k, v in settings.items()})
    return env


class LiveServer:
    """``uvicorn app.main:app`` in its own process group, on 127.0.0.1 and a free port.

    Its job workers are spawned into the same group, so ``stop`` can end them all.
    """

    def __init__(
        self, store_dir: Path, settings: dict[str, Any], log_path: Path, port: int | None = None
    ) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = charnn_environment({"store_dir": store_dir, **TEST_SETTINGS, **settings})
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
    """``start_server(store_dir=None, port=None, **settings)``: a ready real server; stopped
    after the test.

    ``settings`` are ``Settings`` fields, passed as ``CHARNN_*`` environment variables;
    give the ``store_dir`` of an earlier server to restart on its store, and its ``port``
    to restart it where its clients look for it.
    """
    servers: list[LiveServer] = []

    def start(
        store_dir: Path | None = None, port: int | None = None, **settings: Any
    ) -> LiveServer:
        log_path = tmp_path / f"server-{len(servers) + 1}.log"
        server = LiveServer(store_dir or tmp_path / "store", settings, log_path, port)
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def serve_models(
    tmp_path: Path, start_server: Callable[..., LiveServer]
) -> Callable[..., LiveServer]:
    """``serve_models({"hello": checkpoint}, versions=1, **settings)``: a ready real server on
    a fresh store holding these models, each published ``versions`` times."""

    def serve(models: dict[str, Checkpoint], versions: int = 1, **settings: Any) -> LiveServer:
        store = tmp_path / "store"
        for name, checkpoint in models.items():
            for _ in range(versions):
                publish_to(store, name, checkpoint)
        return start_server(store, **settings)

    return serve


# --- the scaled-out deployment: PostgreSQL, Redis, `charnn worker` processes ------------------

PG_ADMIN_URL = os.environ.get(
    "CHARNN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
LEASE_SECONDS = 3  # a killed worker's job is queued again within a few seconds


def pg_admin() -> Engine:
    """An autocommit engine on ``CHARNN_TEST_PG_URL``; the test fails (never skips) without it."""
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        engine.dispose()
        pytest.fail(
            f"PostgreSQL is not reachable through CHARNN_TEST_PG_URL={PG_ADMIN_URL}: {exc.orig}\n"
            "scripts/test.sh starts it where it is installed (scripts/services.sh)",
            pytrace=False,
        )
    return engine


@contextmanager
def postgres_database(owner: str | None = None, options: str = "") -> Iterator[str]:
    """A fresh, empty database ``charnn_test_<random>`` (dropped afterwards): its URL.
    ``options``: more of ``CREATE DATABASE``'s clauses (an encoding, say)."""
    name = f"charnn_test_{new_id()[:12]}"
    admin = pg_admin()
    try:
        with admin.connect() as connection:
            owned = f' OWNER "{owner}"' if owner else ""
            connection.execute(text(f'CREATE DATABASE "{name}"{owned} {options}'))
        try:
            yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def new_postgres_database() -> Callable[..., Any]:
    """``with new_postgres_database(owner=None) as url:`` a fresh database, dropped after."""
    return postgres_database


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test module: its SQLAlchemy URL."""
    with postgres_database() as url:
        yield url


class RedisServer:
    """A private ``redis-server`` on a free port without persistence: restarted, it is empty."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        command += ["--logfile", str(self.directory / "redis.log")]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        client = Redis.from_url(self.url)
        try:
            deadline = time.monotonic() + 10
            while self.process.poll() is None and time.monotonic() < deadline:
                with suppress(RedisError):
                    if client.ping():
                        return
                time.sleep(0.05)
        finally:
            client.close()
        log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
        pytest.fail(f"redis-server did not start on port {self.port}:\n{log}", pytrace=False)

    def stop(self) -> None:
        """SIGTERM: Redis exits at once, and saves nothing (no persistence)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def client(self) -> Redis:
        return Redis.from_url(self.url)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private Redis for this test module (the shared one is never flushed or restarted)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def charnn_command() -> list[str]:
    """The ``charnn`` command of this environment."""
    script = Path(sys.executable).with_name("charnn")
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


class ServiceProcess:
    """A command in its own process group, its output appended to a log file."""

    def __init__(
        self, command: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT
    ) -> None:
        self.command = command
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.process.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash or the kernel's OOM killer would."""
        self.process.kill()
        self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        stop_all([self], timeout)


def stop_all(processes: Collection[ServiceProcess], timeout: float = 10.0) -> None:
    """SIGTERM them all, then SIGKILL what is left after ``timeout`` (and their groups)."""
    for service in processes:
        if service.process.poll() is None:
            service.process.terminate()
    deadline = time.monotonic() + timeout
    for service in processes:
        try:
            service.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()
        with suppress(ProcessLookupError):
            os.killpg(service.pid, signal.SIGKILL)


def worker_pids(redis_url: str) -> set[int]:
    """Pids of the RQ workers registered in that Redis."""
    with Redis.from_url(redis_url) as connection:
        return {worker.pid for worker in Worker.all(connection=connection) if worker.pid}


def wait_for_workers(redis_url: str, workers: list[ServiceProcess], timeout: float = 60.0) -> None:
    """Until every one of ``workers`` has registered with the task queue."""
    deadline = time.monotonic() + timeout
    while not {w.pid for w in workers} <= worker_pids(redis_url):
        for worker in workers:
            if not worker.alive():
                code = worker.process.returncode
                raise AssertionError(f"a worker exited with {code}:\n{worker.log}")
        if time.monotonic() > deadline:
            raise AssertionError("workers never registered:\n" + "\n".join(w.log for w in workers))
        time.sleep(0.1)


class Deployment:
    """The scaled-out deployment on this machine: an API on the rq backend and its workers.

    Every process gets the same ``CHARNN_*`` settings: the test settings, the shared store,
    ``database_url``, ``redis_url`` and a short lease.
    """

    def __init__(self, directory: Path, database_url: str, redis_url: str, **settings: Any):
        self.directory = directory
        self.store_dir = directory / "store"
        self.database_url = database_url
        self.redis_url = redis_url
        self.settings: dict[str, Any] = {
            "store_dir": self.store_dir,
            **TEST_SETTINGS,
            "job_backend": "rq",
            "database_url": database_url,
            "redis_url": redis_url,
            "lease_seconds": LEASE_SECONDS,
            **settings,
        }
        self.api: LiveServer | None = None
        self.workers: list[ServiceProcess] = []
        self._registry: Registry | None = None

    @property
    def http(self) -> httpx.Client:
        assert self.api is not None, "start() the deployment first"
        return self.api.http

    def start(self, workers: int = 0, queue: str = "cpu") -> None:
        """The API and ``workers`` workers, started together (each imports torch)."""
        self.api = LiveServer(self.store_dir, self.settings, self.directory / "api.log")
        started = [self._spawn_worker(queue) for _ in range(workers)]
        self.api.wait_ready()
        wait_for_workers(self.redis_url, started)

    def _spawn_worker(self, queue: str) -> ServiceProcess:
        log_path = self.directory / f"worker-{len(self.workers) + 1}.log"
        env = charnn_environment(self.settings)
        worker = ServiceProcess([*charnn_command(), "worker", "--queue", queue], env, log_path)
        self.workers.append(worker)
        return worker

    def start_worker(self, queue: str = "cpu") -> ServiceProcess:
        worker = self._spawn_worker(queue)
        wait_for_workers(self.redis_url, [worker])
        return worker

    def live_workers(self, count: int) -> list[ServiceProcess]:
        """``count`` running CPU workers: those still alive, and new ones for the rest."""
        alive = [w for w in self.workers if w.alive() and "--queue cpu" in " ".join(w.command)]
        started = [self._spawn_worker("cpu") for _ in range(count - len(alive))]
        wait_for_workers(self.redis_url, started)
        return alive[:count] + started

    @property
    def registry(self) -> Registry:
        """The registry the deployment shares, read as a worker reads it."""
        if self._registry is None:
            self._registry = Registry.connect(self.database_url, migrate=False)
        return self._registry

    def stop(self) -> None:
        """Stop every process (again: nothing happens); before its database and Redis go."""
        stop_all(self.workers, timeout=10)
        if self.api is not None:
            self.api.stop()
        if self._registry is not None:
            self._registry.close()
            self._registry = None


@pytest.fixture(scope="module")
def start_deployment(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Deployment]]:
    """``start_deployment(database_url, redis_url, workers=0, **settings)``: a started
    ``Deployment`` (API ready, workers registered); everything stops after the module.

    Fixtures set up after this one (a database, a Redis) are torn down before it: a module
    fixture that yields a deployment should ``stop()`` it itself after the yield.
    """
    deployments: list[Deployment] = []

    def start(database_url: str, redis_url: str, workers: int = 0, **settings: Any) -> Deployment:
        directory = tmp_path_factory.mktemp("deployment")
        deployment = Deployment(directory, database_url, redis_url, **settings)
        deployments.append(deployment)
        deployment.start(workers)
        return deployment

    yield start
    for deployment in deployments:
        deployment.stop()


class Processes:
    """Starts commands as the deployment's processes do (``charnn`` is this environment's)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[ServiceProcess] = []

    @staticmethod
    def free_port() -> int:
        return free_port()

    @staticmethod
    def environment(env: dict[str, str]) -> dict[str, str]:
        """``env`` over this process's environment less its ``CHARNN_*`` (as an image's)."""
        return {k: v for k, v in os.environ.items() if not k.startswith("CHARNN_")} | env

    @staticmethod
    def resolve(command: list[str]) -> list[str]:
        return [*charnn_command(), *command[1:]] if command[0] == "charnn" else command

    def start(
        self, command: list[str], env: dict[str, str], cwd: Path, name: str = "process"
    ) -> ServiceProcess:
        log_path = self.directory / f"{name}-{len(self.started) + 1}.log"
        process = ServiceProcess(self.resolve(command), self.environment(env), log_path, cwd=cwd)
        self.started.append(process)
        return process

    def run(
        self, command: list[str], env: dict[str, str], cwd: Path
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.resolve(command),
            cwd=cwd,
            env=self.environment(env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    @staticmethod
    def wait_ready(process: ServiceProcess, url: str, timeout: float = 60.0) -> None:
        """Until ``url`` answers 200 (``process`` must not exit meanwhile)."""
        deadline = time.monotonic() + timeout
        while True:
            assert process.alive(), f"exited with {process.process.returncode}:\n{process.log}"
            with suppress(httpx.TransportError):
                if httpx.get(url, timeout=5).status_code == 200:
                    return
            assert time.monotonic() < deadline, f"{url} never answered 200:\n{process.log}"
            time.sleep(0.1)

    @staticmethod
    def wait_for_workers(redis_url: str, workers: list[ServiceProcess]) -> None:
        wait_for_workers(redis_url, workers)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Local processes of a deployment (logs in the test's directory); stopped after the test."""
    started = Processes(tmp_path)
    yield started
    stop_all(started.started)
