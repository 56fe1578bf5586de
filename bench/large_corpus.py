"""Training from an uploaded corpus far larger than memory would like, with a time budget.

    .venv/bin/python -m bench.large_corpus               # about 8 minutes, 50 MB
    .venv/bin/python -m bench.large_corpus --quick       # 5 MB, short budgets: the harness

One run, side by side: a synthetic corpus (bench/corpus.py) is uploaded to a charnn server
as a dataset (streamed, `POST /datasets`); a text job trains the default text model from it
with a time budget (`max_seconds`), alternating with the plain PyTorch loop over the same
corpus for the same time (bench/raw.py), both on one pinned core with one torch thread.
Reported: the upload's time, the training worker's peak resident memory beside the corpus's
size, characters per second of the job against the loop, and the held-out bits per character
of the version the job made, scored through `POST /models/{name}/versions/{n}/evaluate`,
beside what knowing only the characters' frequencies would give.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import torch

from app.ml.hyperparameters import TEXT_DEFAULTS, Hyperparameters
from bench.corpus import write_corpus
from bench.processes import WorkerPeakMemory
from bench.raw import corpus_ids, plain_corpus_throughput
from bench.run import LOAD_CPU, ROOT, charnn_server

MODEL = "corpus"
UPLOAD_CHUNK = 1 << 20


def chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(UPLOAD_CHUNK):
            yield chunk


def upload(http: httpx.Client, url: str, path: Path) -> tuple[dict[str, Any], float]:
    """The dataset a streamed upload made, and the seconds it took (processing included)."""
    started = time.perf_counter()
    response = http.post(
        url + "/datasets",
        params={"kind": "text", "format": "text", "name": path.name},
        content=chunks(path),
        headers={"Content-Type": "text/plain; charset=utf-8"},
        timeout=600,
    )
    response.raise_for_status()
    return response.json(), time.perf_counter() - started


def finished(http: httpx.Client, url: str, job_id: str) -> dict[str, Any]:
    """The job once it has ended, with its history. Polled lightly, without the history:
    the server shares the worker's core."""
    while http.get(f"{url}/jobs/{job_id}").json()["status"] not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        time.sleep(2.0)
    return http.get(f"{url}/jobs/{job_id}", params={"history": "true"}).json()  # type: ignore[no-any-return]


def unigram_bits(path: Path) -> float:
    """Bits per character of the best guess that knows only each character's frequency."""
    counts = Counter(path.read_text(encoding="utf-8"))
    total = sum(counts.values())
    return -sum(n / total * math.log2(n / total) for n in counts.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 MB, short budgets, one run")
    parser.add_argument("--megabytes", type=float, default=None)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks-corpus.md")
    args = parser.parse_args()
    megabytes = args.megabytes or (5.0 if args.quick else 50.0)
    seconds, runs = (20.0, 1) if args.quick else (60.0, 3)
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    hp = Hyperparameters(**TEXT_DEFAULTS, validation_fraction=0.01, seed=0)
    http = httpx.Client(timeout=60)
    with tempfile.TemporaryDirectory(prefix="charnn-corpus-") as tmp:
        corpus = Path(tmp) / "corpus.txt"
        size = write_corpus(corpus, megabytes)
        ids, vocab = corpus_ids(corpus)
        results: dict[str, Any] = {"corpus_bytes": size, "unigram_bits": unigram_bits(corpus)}
        with charnn_server(Path(tmp) / "store", CHARNN_WORKER_TORCH_THREADS="1") as running:
            dataset, results["upload_s"] = upload(http, running.url, corpus)
            plain, steps, whole, peaks, anonymous, jobs = [], [], [], [], [], []
            for _ in range(runs):  # alternating, so a drift in speed touches both alike
                plain.append(plain_corpus_throughput(ids, vocab, hp, seconds))
                with WorkerPeakMemory(running.pid) as memory:
                    job = train(http, running.url, dataset["id"], hp, seconds)
                peaks.append(memory.peak_mib)
                anonymous.append(memory.peak_anonymous_mib)
                rates = job_rates(job)
                steps.append(rates[0])
                whole.append(rates[1])
                jobs.append(job)
                print(f"run: loop {plain[-1]:.0f}, job {rates} chars/s", flush=True)  # noqa: T201
            results.update(
                plain_cps=statistics.median(plain),
                job_steps_cps=statistics.median(steps),
                job_cps=statistics.median(whole),
                worker_peak_mib=max(peaks),
                worker_peak_anonymous_mib=max(anonymous),
                characters_trained=jobs[-1]["history"][-1]["characters"],
                version=jobs[-1]["version"],
                held_out=evaluate(http, running.url, jobs[-1], dataset["id"]),
                recorded=http.get(
                    f"{running.url}/models/{MODEL}/versions/{jobs[-1]['version']}"
                ).json()["validation"],
            )
    print(results)  # noqa: T201
    write_report(args.output, results, seconds=seconds, runs=runs, quick=args.quick)
    print(args.output.read_text())  # noqa: T201


def train(
    http: httpx.Client, url: str, dataset: str, hp: Hyperparameters, seconds: float
) -> dict[str, Any]:
    spec = {
        "model_name": MODEL,
        "dataset": dataset,
        "hyperparameters": {**hp.model_dump(mode="json"), "epochs": 1, "max_seconds": seconds},
        "device": "cpu",
    }
    response = http.post(url + "/train", json=spec)
    response.raise_for_status()
    job = finished(http, url, response.json()["id"])
    assert job["status"] == "succeeded", job
    return job


def job_rates(job: dict[str, Any]) -> tuple[float, float]:
    """Characters per second of a job: over its training steps' time alone (what the
    plain loop measures), and end to end, from the worker's start to the version published
    (the process's start, progress checkpoints, validation and publishing included)."""
    characters = sum(epoch["characters"] for epoch in job["history"])
    steps = sum(epoch["seconds"] for epoch in job["history"])
    started = datetime.fromisoformat(job["started_at"])
    finished = datetime.fromisoformat(job["finished_at"])
    return characters / steps, characters / (finished - started).total_seconds()


def evaluate(http: httpx.Client, url: str, job: dict[str, Any], dataset: str) -> dict[str, Any]:
    response = http.post(
        f"{url}/models/{MODEL}/versions/{job['version']}/evaluate",
        json={"dataset": dataset, "split": "validation"},
        timeout=600,
    )
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def write_report(path: Path, results: dict[str, Any], **run: Any) -> None:
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )
    command = " ".join(["python -m bench.large_corpus", *sys.argv[1:]])
    held, recorded = results["held_out"], results["recorded"]
    corpus_mib = results["corpus_bytes"] / 2**20
    ratio = results["job_steps_cps"] / results["plain_cps"]
    lines = [
        "# Benchmark: training from a large uploaded corpus",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine}, with `{command}`"
        + (" (--quick: checks the harness, not a measurement)." if run["quick"] else "."),
        "",
        f"A synthetic corpus of {results['corpus_bytes'] / 1e6:.1f} MB (`bench/corpus.py`) is "
        "uploaded as a dataset; the default text model (GRU 256 over 32-wide embeddings, "
        f"windows of 100, batches of 32) trains from it for `max_seconds` {run['seconds']:g}, "
        f"{run['runs']} times, alternating with a plain PyTorch loop over the same corpus for "
        "the same time (`bench/raw.py`: shuffled windows gathered from one tensor, Adam, "
        "cross-entropy). Both run on CPU 0 with one torch thread; numbers are medians.",
        "",
        "| what | value |",
        "|---|---|",
        f"| upload (`POST /datasets`, streamed, ids written) | {results['upload_s']:.1f} s |",
        f"| worker peak resident memory (VmHWM) | {results['worker_peak_mib']:.0f} MiB, "
        f"for a corpus of {corpus_mib:.0f} MiB (as padded int64 windows: "
        f"{corpus_mib * 16:,.0f} MiB) |",
        f"| of which anonymous at most (RssAnon: not the mapped corpus's pages) | "
        f"{results['worker_peak_anonymous_mib']:.0f} MiB |",
        f"| plain loop | {results['plain_cps']:,.0f} chars/s |",
        f"| job, training steps | {results['job_steps_cps']:,.0f} chars/s "
        f"(**{ratio:.2f}x** the loop) |",
        f"| job, end to end (worker start to version) | {results['job_cps']:,.0f} chars/s |",
        f"| characters read by the job in its budget | {results['characters_trained']:,} |",
        f"| held-out bits/char (`evaluate`, split validation) | "
        f"**{held['bits_per_character']:.3f}** over {held['characters']:,} characters "
        f"({held['seconds']:.1f} s) |",
        f"| held-out bits/char recorded at training time | {recorded['bits_per_char']:.3f} |",
        f"| knowing only character frequencies | {results['unigram_bits']:.3f} bits/char |",
        "",
        "The worker's memory does not grow with the corpus: windows are gathered from a "
        "memory map of the dataset's ids (`app/store/dataset_reader.py`), and only the pages "
        "read count in its resident memory, as file pages the kernel may drop (VmHWM counts "
        "them; RssAnon does not). Most of the rest is torch itself: a worker that has only "
        "imported its modules (torch among them) and built the model holds about 260 MiB.",
    ]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
