"""Run every benchmark side by side and write docs/benchmarks.md.

    .venv/bin/python -m bench.run            # about 10 minutes
    .venv/bin/python -m bench.run --quick    # 2 s points, one run each: a smoke test

Servers run pinned to CPU 0 and the load generator (wrk) to CPU 1; every number is the
median of three runs, and the targets are ratios between numbers of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import torch

from app.ml.hyperparameters import Hyperparameters
from bench.fixtures import MEDIUM, TUTORIAL, BenchModel, medium_text, publish
from bench.raw import plain_training_throughput, raw_forward_throughput

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SERVER_CPU, LOAD_CPU = "0", "1"
SERVER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Running:
    url: str
    pid: int


@contextmanager
def server(argv: list[str], env: dict[str, str], ready: Callable[[str], bool]) -> Iterator[Running]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    full_env = {**os.environ, **SERVER_ENV, **env}
    cmd = ["taskset", "-c", SERVER_CPU, *[a.replace("{port}", str(port)) for a in argv]]
    process = subprocess.Popen(
        cmd,
        env=full_env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server {argv} did not start")
            time.sleep(0.05)
        yield Running(url, process.pid)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
        process.wait(10)


# One client for the harness: a new one per call builds an SSL context, tens of
# milliseconds of CPU on every poll of a server that is starting.
http = httpx.Client(timeout=30)


def answers(path: str, body: dict[str, object] | None = None) -> Callable[[str], bool]:
    def check(url: str) -> bool:
        try:
            if body is None:
                return http.get(url + path, timeout=1).status_code == 200
            return http.post(url + path, json=body, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def charnn_server(store: Path, **env: str) -> Iterator[Running]:
    argv = [
        PYTHON,
        "-m",
        "app.cli",
        "serve",
        "--port",
        "{port}",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    return server(
        argv, {"CHARNN_STORE_DIR": str(store), "CHARNN_DEVICE": "cpu", **env}, answers("/readyz")
    )


def reference_server(module: str, store: Path, body: dict[str, object]) -> Iterator[Running]:
    argv = [
        PYTHON,
        "-m",
        "uvicorn",
        f"bench.{module}:app",
        "--port",
        "{port}",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    return server(argv, {"BENCH_STORE": str(store)}, answers("/predict", body))


# --- load generation --------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    rps: float
    p50_ms: float
    p99_ms: float


def _percentile(out: str, label: str) -> str:
    """From wrk's latency distribution lines alone ("   50%  1.23ms"), not "98.50%"."""
    match = re.search(rf"^\s+{label}\s+(\S+)", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {label} latency in wrk's output:\n{out}")
    return match.group(1)


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if match is None:
        raise RuntimeError(f"unexpected wrk latency {value!r}")
    number, unit = match.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk(url: str, body: dict[str, object], concurrency: int, seconds: float) -> Load:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(json.dumps(body))}\n"
        )
    out = subprocess.run(
        [
            "taskset",
            "-c",
            LOAD_CPU,
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{int(seconds)}s",
            "--latency",
            "-s",
            script.name,
            url + "/predict",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)
    if "Non-2xx" in out:
        raise RuntimeError(f"errors under load:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50, p99 = _ms(_percentile(out, "50%")), _ms(_percentile(out, "99%"))
    return Load(rps, p50, p99)


def median_load(results: list[Load]) -> Load:
    return Load(
        statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
    )


# --- the benchmarks ---------------------------------------------------------------------------


def predict_body(model: BenchModel) -> dict[str, object]:
    return {"model_name": model.name, "inputs": [model.example_input]}


def serving(store: Path, seconds: float, runs: int) -> dict[str, dict[str, Load]]:
    """req/s and latency of charnn, the naive server and the echo ceiling, per model.

    The three servers run at once (idle ones cost nothing) and take turns under load,
    run by run, so that a drift in the machine's speed touches all three alike.
    """
    results: dict[str, dict[str, Load]] = {}
    for model in (TUTORIAL, MEDIUM):
        body = predict_body(model)
        with ExitStack() as stack:
            servers = {
                "charnn": stack.enter_context(charnn_server(store)),
                "naive": stack.enter_context(reference_server("naive_server", store, body)),
                "echo": stack.enter_context(reference_server("echo_server", store, body)),
            }
            for concurrency in (1, 32):
                for running in servers.values():
                    wrk(running.url, body, concurrency, min(2.0, seconds))  # warm-up
                loads: dict[str, list[Load]] = {name: [] for name in servers}
                for _ in range(runs):
                    for name, running in servers.items():
                        loads[name].append(wrk(running.url, body, concurrency, seconds))
                for name, measured in loads.items():
                    key = f"{name} c={concurrency}"
                    results.setdefault(model.name, {})[key] = median_load(measured)
                    print(model.name, key, results[model.name][key], flush=True)  # noqa: T201
    return results


def job_throughput(url: str, text: str, hp: Hyperparameters) -> float:
    """Characters per second of one /train job, end to end from epoch to epoch.

    Measured between the first and the last epoch's ``recorded_at``, so each epoch
    pays for everything the job does around it (metrics, checkpoint, registry); the
    first epoch, which pays torch's warm-up, is left out as the plain loop leaves it.
    """
    spec = {
        "model_name": "medium-train",
        "data": {"text": text},
        "hyperparameters": hp.model_dump(mode="json"),
        "device": "cpu",
    }
    job = http.post(url + "/train", json=spec).json()
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(1.0)
        job = http.get(f"{url}/jobs/{job['id']}").json()
    assert job["status"] == "succeeded", job
    job = http.get(f"{url}/jobs/{job['id']}", params={"history": "true"}).json()
    history = job["history"]
    seconds = datetime.fromisoformat(history[-1]["recorded_at"]) - datetime.fromisoformat(
        history[0]["recorded_at"]
    )
    return sum(e["characters"] for e in history[1:]) / seconds.total_seconds()


def training(store: Path, runs: int) -> dict[str, float]:
    """Characters per second: a /train job against a plain batched loop, same everything.

    The two alternate (loop, job, loop, job, ...) so that a drift in the machine's
    speed during the benchmark touches both alike.
    """
    text = medium_text(64 * 32 * 8)  # 8 batches of 32 windows of 64 per epoch
    hp = MEDIUM.hyperparameters.model_copy(update={"epochs": 6})
    plain_rates, job_rates = [], []
    with charnn_server(store, CHARNN_WORKER_TORCH_THREADS="1") as running:
        for _ in range(runs):
            plain_rates.append(plain_training_throughput(text, hp, threads=1))
            job_rates.append(job_throughput(running.url, text, hp))
    return {"plain": statistics.median(plain_rates), "job": statistics.median(job_rates)}


IMPORT_FLOOR = "import torch, fastapi, sqlalchemy, uvicorn, uvloop, httptools, typer"


def import_floor() -> float:
    """Seconds for a bare interpreter, pinned as the server is, to import the libraries
    charnn stands on: the part of a cold start that is not charnn's own."""
    started = time.perf_counter()
    subprocess.run(
        ["taskset", "-c", SERVER_CPU, PYTHON, "-c", IMPORT_FLOOR],
        env={**os.environ, **SERVER_ENV},
        check=True,
    )
    return time.perf_counter() - started


def startup(store: Path, runs: int) -> dict[str, float]:
    """Cold start to /readyz beside the import floor, and the first predict of a
    version not yet loaded."""
    cold, floor, first = [], [], []
    for _ in range(runs):
        floor.append(import_floor())
        started = time.perf_counter()
        with charnn_server(store) as running:
            url = running.url
            cold.append(time.perf_counter() - started)
            t = time.perf_counter()
            http.post(url + "/predict", json=predict_body(MEDIUM)).raise_for_status()
            first.append(time.perf_counter() - t)
    return {
        "cold_start_s": statistics.median(cold),
        "import_floor_s": statistics.median(floor),
        "first_predict_s": statistics.median(first),
    }


def memory(workdir: Path, versions: int = 20) -> float:
    """Resident memory of the API (MiB) with ``versions`` medium versions loaded."""
    store = workdir / "memory-store"
    publish(store, MEDIUM, versions)
    with charnn_server(store, CHARNN_MODEL_CACHE_SIZE=str(versions)) as running:
        for version in range(1, versions + 1):
            body = {**predict_body(MEDIUM), "version": version}
            http.post(running.url + "/predict", json=body).raise_for_status()
        status = Path(f"/proc/{running.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


# --- the report ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short points, one run each")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    seconds, runs = (2.0, 1) if args.quick else (10.0, 3)
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    # the harness itself keeps off the servers' core (in-process measurements move there
    # for their duration): its polling must not slow what it measures
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    with tempfile.TemporaryDirectory(prefix="charnn-bench-") as tmp:
        workdir = Path(tmp)
        store = workdir / "store"
        (tutorial_dir,) = publish(store, TUTORIAL)
        (medium_dir,) = publish(store, MEDIUM)
        raw = {
            m.name: {b: raw_forward_throughput(d, m.example_input, b, runs=3) for b in (1, 16)}
            for m, d in ((TUTORIAL, tutorial_dir), (MEDIUM, medium_dir))
        }
        print("raw", raw, flush=True)  # noqa: T201
        loads = serving(store, seconds, runs)
        train = training(workdir / "train-store", runs)
        print("train", train, flush=True)  # noqa: T201
        start = startup(store, runs)
        rss = memory(workdir)
    from bench.report import write_report

    write_report(
        args.output,
        raw=raw,
        loads=loads,
        train=train,
        start=start,
        rss_mib=rss,
        quick=args.quick,
        command=" ".join(["python -m bench.run", *sys.argv[1:]]),
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, torch {torch.__version__}",
    )
    print(args.output.read_text())  # noqa: T201


if __name__ == "__main__":
    main()
