"""Killed at any moment (SIGKILL), the service leaves nothing that it would serve half-made.

A version's files are written under a staging name, renamed into place, verified, and
only then is its registry row committed; deleting commits the row's removal first, then
removes the files. So a crash leaves at most leftovers that nothing reads (staging
directories, orphan version directories, stale job checkpoints), which
``charnn store check --repair`` removes, and never a version whose files are missing
or partial.

Two kinds of test:

- at chosen points: a child process runs the app (or a worker) and SIGKILLs itself in the
  middle of writing a checkpoint's weights, just before a new version's commit, and
  halfway through removing a deleted version's files; the store it leaves is inspected;
- at random moments: a real server is SIGKILLed again and again while a client imports,
  deletes and predicts and a job trains; after every kill, the registry and the files
  agree, every listed version predicts and downloads whole, and every acknowledged
  import or delete holds.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.jobs.spec import JobSpec
from app.jobs.worker import run_job
from app.main import create_app
from app.ml.checkpoint import META_FILE, WEIGHTS_FILE, Checkpoint, save_checkpoint
from app.settings import Settings
from app.store.check import Kind, StoreReport, check_store
from app.store.layout import StoreLayout, new_id
from app.store.registry import Registry
from tests.conftest import settings_on

ROOT = Path(__file__).resolve().parents[2]
CRASH_LEFTOVERS = {Kind.ORPHAN, Kind.STAGING, Kind.STALE_JOB}  # what a crash may leave

# Runs in a child process: set the trap named by argv[1], then do what springs it.
CHILD = """
import os, signal, sys, warnings
from pathlib import Path

from app.main import create_app
from app.ml import checkpoint
from app.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

trap, store = sys.argv[1], Path(sys.argv[2])
settings = Settings(
    store_dir=store, device="cpu", worker_torch_threads=1, allowed_hosts="testserver"
)


def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


if trap == "writing weights":  # an import streams its files in
    from app.store.imports import StagedFile

    finish = StagedFile.finish

    def half_then_die(self):
        if self.path.name == checkpoint.WEIGHTS_FILE:
            os.truncate(self.path, self.size // 2)
            die()
        return finish(self)

    StagedFile.finish = half_then_die
if trap == "writing an epoch":
    write = checkpoint.write_file

    def half_then_die(path, data):
        if path.name == checkpoint.WEIGHTS_FILE and path.parent.name.startswith(".epoch-000003"):
            path.write_bytes(data[: len(data) // 2])
            die()
        return write(path, data)

    checkpoint.write_file = half_then_die
if trap == "writing an epoch":
    from app.jobs.worker import run_job
    from app.store.registry import Registry

    registry = Registry.connect(settings.registry_url, migrate=False)
    registry.claim_job(sys.argv[3], "crashing-worker")
    run_job(sys.argv[3], "crashing-worker", settings)
    sys.exit(3)
if trap == "removing files":
    import shutil

    def remove_half_then_die(path, *args, **kwargs):
        (Path(path) / checkpoint.WEIGHTS_FILE).unlink()
        die()

    shutil.rmtree = remove_half_then_die

with TestClient(create_app(settings)) as client:
    if trap == "committing":
        from sqlalchemy import event
        from sqlalchemy.orm import Session

        event.listen(Session, "before_commit", die)  # the version's rows are flushed, not committed
    if trap == "removing files":
        client.delete("/models/hello/versions/1")
    else:
        files = {
            "checkpoint": Path(sys.argv[3]).read_bytes(),
            "weights": Path(sys.argv[4]).read_bytes(),
        }
        client.post("/models/hello/versions", files=files)
sys.exit(3)  # the trap was never sprung
"""


def crash_child(trap: str, store: Path, *args: str) -> None:
    """Run ``CHILD`` with ``trap``; it must die of its own SIGKILL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARNN_")}
    command = [sys.executable, "-c", CHILD, trap, str(store), *args]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert result.returncode == -9, result.stderr.decode(errors="replace")[-3000:]


def inspect(store: Path) -> StoreReport:
    registry = Registry.connect(Settings(store_dir=store).registry_url, migrate=False)
    try:
        return check_store(registry, StoreLayout(store), min_age=0)
    finally:
        registry.close()


def left(report: StoreReport) -> list[tuple[Kind, str]]:
    return [(f.kind, str(f.path.relative_to(report.root))) for f in report.problems]


def export(checkpoint: Checkpoint, directory: Path) -> tuple[Path, Path]:
    save_checkpoint(checkpoint, directory)
    return directory / META_FILE, directory / WEIGHTS_FILE


# --- at chosen points ------------------------------------------------------------------------


@pytest.mark.parametrize("trap", ["writing weights", "committing"])
def test_an_import_killed_midway_leaves_no_new_version(
    store_dir: Path,
    publish: Callable[[str, Checkpoint], int],
    hello_model: Checkpoint,
    tmp_path: Path,
    trap: str,
) -> None:
    publish("hello", hello_model)
    (published,) = (store_dir / "models" / "hello").iterdir()
    meta, weights = export(hello_model, tmp_path / "export")

    crash_child(trap, store_dir, str(meta), str(weights))

    report = inspect(store_dir)
    (directory,) = set((store_dir / "models" / "hello").iterdir()) - {published}
    if trap == "writing weights":  # half a weights file, under its staging name
        assert directory.name.startswith(".")
        assert (directory / WEIGHTS_FILE).stat().st_size == weights.stat().st_size // 2
        assert left(report) == [(Kind.STAGING, f"models/hello/{directory.name}")]
    else:  # the files whole and verified, the row flushed but never committed
        assert sorted(p.name for p in directory.iterdir()) == [META_FILE, WEIGHTS_FILE]
        assert left(report) == [(Kind.ORPHAN, f"models/hello/{directory.name}")]
    with TestClient(create_app(settings_on(store_dir))) as client:
        versions = client.get("/models/hello").json()["versions"]
        predicted = client.post("/predict", json={"model_name": "hello", "inputs": ["hello"]})
    assert [v["version"] for v in versions] == [1]
    assert (predicted.status_code, predicted.json()["outputs"]) == (200, ["ohlol"])


def test_a_delete_killed_midway_leaves_an_orphan_never_a_version_without_files(
    store_dir: Path, publish: Callable[[str, Checkpoint], int], hello_model: Checkpoint
) -> None:
    publish("hello", hello_model)
    publish("hello", hello_model)
    (first, _) = sorted((store_dir / "models" / "hello").iterdir(), key=os.path.getmtime)

    crash_child("removing files", store_dir)

    assert sorted(p.name for p in first.iterdir()) == [META_FILE]  # half removed
    assert left(inspect(store_dir)) == [(Kind.ORPHAN, f"models/hello/{first.name}")]
    with TestClient(create_app(settings_on(store_dir))) as client:
        versions = client.get("/models/hello").json()["versions"]
        predicted = client.post("/predict", json={"model_name": "hello", "inputs": ["hello"]})
    assert [v["version"] for v in versions] == [2]
    assert (predicted.status_code, predicted.json()["version"]) == (200, 2)


def test_a_job_killed_while_writing_a_checkpoint_resumes_from_the_one_before(
    store_dir: Path, hello: dict[str, Any]
) -> None:
    settings = settings_on(store_dir)
    StoreLayout(store_dir).ensure()
    registry = Registry.connect(settings.registry_url)
    try:
        hello["hyperparameters"]["epochs"] = 6
        spec = JobSpec.model_validate(hello)
        job_id = new_id()
        registry.create_job(job_id, "hello", spec.model_dump(mode="json"), "cpu", 6, 3)

        crash_child("writing an epoch", store_dir, job_id)

        layout = StoreLayout(store_dir)
        (staging,) = [p for p in layout.job_dir(job_id).iterdir() if p.name.startswith(".")]
        assert left(inspect(store_dir)) == [(Kind.STAGING, f"jobs/{job_id}/{staging.name}")]
        assert [epoch for epoch, _ in layout.job_checkpoints(job_id)] == [1, 2]
        # the service starts again: the job is queued again and resumed
        registry.release_all_running("the service stopped")
        assert registry.claim_job(job_id, "next-worker") is not None
        run_job(job_id, "next-worker", settings)
        job = registry.get_job(job_id)
        history = registry.job_epochs(job_id)
    finally:
        registry.close()

    assert (job.status, job.version, job.attempts) == ("succeeded", 1, 2)
    assert [e.epoch for e in history] == [1, 2, 3, 4, 5, 6]
    assert [e.attempt for e in history] == [1, 1, 2, 2, 2, 2]
    assert inspect(store_dir).clean  # the resumed job swept its leftovers
    assert not layout.job_dir(job_id).exists()


# --- at random moments ------------------------------------------------------------------------

KILLS = 6
IMPORTED = ("m0", "m1")


class Traffic:
    """A client importing, deleting and predicting until told to stop (or the server dies).

    ``expected`` holds what the server acknowledged, name -> {version: created_at};
    a name whose request was cut off by the kill is ``uncertain`` until re-read.
    """

    def __init__(self, upload: dict[str, bytes], seed: int) -> None:
        self.upload = upload
        self.rng = random.Random(seed)
        self.expected: dict[str, dict[int, str]] = {name: {} for name in IMPORTED}
        self.uncertain: set[str] = set()
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, http: httpx.Client) -> None:
        self.stopping.clear()
        self.thread = threading.Thread(target=self.run, args=(http,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(30)

    def run(self, http: httpx.Client) -> None:
        while not self.stopping.is_set():
            name = self.rng.choice(IMPORTED)
            try:
                self.step(http, name)
            except httpx.TransportError:  # the server is gone: did it do what was asked?
                self.uncertain.add(name)
                return

    def step(self, http: httpx.Client, name: str) -> None:
        versions = self.expected[name]
        roll = self.rng.random()
        if not versions or (roll < 0.5 and len(versions) < 5):
            response = http.post(f"/models/{name}/versions", files=self.upload)
            if response.status_code != 201:
                self.failures.append(f"import {name}: {response.status_code} {response.text}")
                return
            versions[response.json()["version"]] = response.json()["created_at"]
        elif roll < 0.8:
            version = self.rng.choice(sorted(versions))
            self.deleted(http.delete(f"/models/{name}/versions/{version}"))
            del versions[version]
        elif roll < 0.85:
            self.deleted(http.delete(f"/models/{name}"))
            versions.clear()
        else:
            version = self.rng.choice(sorted(versions))
            body = {"model_name": name, "version": version, "inputs": ["hello"]}
            response = http.post("/predict", json=body)
            if response.status_code != 200:
                self.failures.append(f"predict {name} v{version}: {response.text}")

    def deleted(self, response: httpx.Response) -> None:
        if response.status_code != 204:
            self.failures.append(f"{response.request.url.path}: {response.text}")

    def resync(self, http: httpx.Client) -> None:
        """After a restart: what the server has is the truth again."""
        for name in IMPORTED:
            response = http.get(f"/models/{name}")
            listed = response.json()["versions"] if response.status_code == 200 else []
            self.expected[name] = {v["version"]: v["created_at"] for v in listed}
        self.uncertain.clear()


def training_job(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """The model's job that is queued or running; a new one if none is."""
    jobs = http.get("/jobs", params={"model_name": body["model_name"]}).json()["items"]
    active = [job for job in jobs if job["status"] in ("queued", "running")]
    if active:
        return dict(active[0])
    response = http.post("/train", json=body)
    assert response.status_code == 202, response.text
    return dict(response.json())


def progressed(job: dict[str, Any], epoch: int) -> bool:
    return job["epoch"] > epoch or job["status"] in ("succeeded", "failed", "cancelled")


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def kill_and_wait(server: Any) -> None:
    """SIGKILL the server, as a crash would; its workers die with it (parent-death signal)."""
    server.kill()
    deadline = time.monotonic() + 15
    while group_alive(server.pid):
        assert time.monotonic() < deadline, "the workers outlived their server"
        time.sleep(0.05)


def every_version_serves_whole_files(http: httpx.Client) -> list[str]:
    """Every listed version predicts, and its weights download whole; the failures."""
    failures = []
    for model in http.get("/models").json():
        for version in http.get(f"/models/{model['name']}").json()["versions"]:
            name, number = model["name"], version["version"]
            body = {"model_name": name, "version": number, "inputs": ["hello"]}
            if model["name"] == "trained":
                body["inputs"] = ["the quick"]
            predicted = http.post("/predict", json=body)
            if predicted.status_code != 200:
                failures.append(f"predict {name} v{number}: {predicted.text}")
            weights = http.get(f"/models/{name}/versions/{number}/files/{WEIGHTS_FILE}")
            if hashlib.sha256(weights.content).hexdigest() != version["sha256"]:
                failures.append(f"download {name} v{number}: not the recorded weights")
    return failures


def test_killed_again_and_again_the_registry_and_the_files_agree(
    start_server: Callable[..., Any],
    long_job: Callable[..., dict[str, Any]],
    hello_model: Checkpoint,
    tmp_path: Path,
) -> None:
    rng = random.Random(6)
    store = tmp_path / "store"
    meta, weights = export(hello_model, tmp_path / "export")
    upload = {"checkpoint": meta.read_bytes(), "weights": weights.read_bytes()}
    server = start_server(store_dir=store)
    traffic = Traffic(upload, seed=6)
    failures: list[str] = []
    for kill in range(KILLS):
        traffic.start(server.http)
        job = training_job(server.http, long_job("trained", epochs=24, characters=1500))
        # the kill falls while the job trains: most of that time goes to its checkpoints
        server.wait_for_job(job["id"], until=lambda j, e=job["epoch"]: progressed(j, e))
        time.sleep(rng.uniform(0.0, 1.0))

        kill_and_wait(server)
        traffic.stop()

        report = inspect(store)
        assert {f.kind for f in report.problems} <= CRASH_LEFTOVERS, left(report)
        server = start_server(store_dir=store)
        for name in set(IMPORTED) - traffic.uncertain:  # nothing acknowledged was lost
            response = server.http.get(f"/models/{name}")
            listed = response.json()["versions"] if response.status_code == 200 else []
            actual = {v["version"]: v["created_at"] for v in listed}
            if actual != traffic.expected[name]:
                failures.append(
                    f"after kill {kill + 1}: {name} has {actual}, "
                    f"acknowledged: {traffic.expected[name]}"
                )
        failures += every_version_serves_whole_files(server.http)
        traffic.resync(server.http)

    # stopped for good: the command repairs what the crashes left; the service serves on
    kill_and_wait(server)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARNN_")}
    env["CHARNN_STORE_DIR"] = str(store)
    repair = subprocess.run(
        [sys.executable, "-m", "app.cli", "store", "check", "--repair", "--min-age", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert inspect(store).clean
    server = start_server(store_dir=store)
    failures += every_version_serves_whole_files(server.http)
    jobs = server.http.get("/jobs").json()["items"]

    assert failures + traffic.failures == []
    assert [job for job in jobs if job["status"] == "failed" or job["failures"]] == []


# --- deleting a model while a version of it is imported ----------------------------------------


def test_deleting_a_model_spares_a_version_imported_meanwhile(
    client: TestClient,
    publish: Callable[[str, Checkpoint], int],
    hello_model: Checkpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    publish("hello", hello_model)
    meta, weights = export(hello_model, tmp_path / "export")
    verified, deleted = threading.Event(), threading.Event()
    commit = Registry.publish_version

    def commit_after_the_delete(self: Registry, *args: Any, **kwargs: Any) -> Any:
        verified.set()  # the import's files are in place and verified: only its row is missing
        deleted.wait(10)
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(Registry, "publish_version", commit_after_the_delete)
    files = {"checkpoint": meta.read_bytes(), "weights": weights.read_bytes()}
    imported: list[httpx.Response] = []
    importing = threading.Thread(
        target=lambda: imported.append(client.post("/models/hello/versions", files=files))
    )
    importing.start()
    assert verified.wait(10)

    assert client.delete("/models/hello").status_code == 204
    deleted.set()
    importing.join(10)

    (response,) = imported
    assert response.status_code == 201, response.text
    predicted = client.post("/predict", json={"model_name": "hello", "inputs": ["hello"]})
    assert (predicted.status_code, predicted.json()) == (
        200,
        {"model_name": "hello", "version": 1, "outputs": ["ohlol"], "details": None},
    )
