"""Many followers of a long job, against a real uvicorn: what an event stream costs.

A job of 4,000 epochs is written into the running server's registry as its worker
would write it (the history in one transaction, for speed; the new epochs one by one
with ``Registry.record_epoch``), under a lease owner the server's runner does not know,
so nothing trains. Twenty clients follow it at once. Each epoch reaches each client
once, in an event whose size does not depend on how long the history is; the server's
memory, its registry statements and its ``/healthz`` latency stay within bounds that the
old streams (the whole job, history included, in every event; a database poll per
stream four times a second) broke by far: 20 followers of a 4,000-epoch job took that
API from 435 to 821 MB and ``/healthz`` to seconds. The figures land in
``test-artifacts/event-streams.json``.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.client import Client
from app.settings import Settings
from app.store.layout import new_id
from app.store.registry import Registry
from app.store.tables import EpochRow, JobRow, JobStatus, utcnow
from tests.conftest import LiveServer, epoch_metrics, long_body, proc_status_mib

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
HISTORY = 4000  # epochs recorded before anyone follows
LIVE = 40  # epochs recorded while they follow
FOLLOWERS = 20
BURST = 30_000  # epochs recorded at once while one client does not read
WRITER = "abuse-test-writer"  # the lease owner of the job: the test, not a worker
SAMPLE = "the quick brown fox jumps over t"  # a text model's sample, 32 characters
POLL_SECONDS = 0.25  # CHARNN_EVENT_POLL_SECONDS, its default
STATEMENTS = "charnn_registry_statements_total"

# the bounds (see the module docstring for what the old streams cost)
MAX_EPOCH_EVENT_BYTES = 600
MAX_SUMMARY_EVENT_BYTES = 2000
MAX_RSS_GROWTH_MIB = 64.0
MAX_HEALTHZ_SECONDS = 1.0
SHUTDOWN_SECONDS = 5.0


def metric(http: httpx.Client, name: str) -> float:
    """A value of /metrics: ``charnn_registry_statements_total`` (SQL statements so far,
    the scrape's own included) or ``charnn_event_streams`` (streams open)."""
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"/metrics has no {name}")


class Follower(threading.Thread):
    """One SSE client: each event's name, id and size in bytes, until the stream ends."""

    def __init__(self, base_url: str, job_id: str, last_event_id: int | None = None) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.job_id = job_id
        self.headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
        self.events: list[tuple[str, int | None, int]] = []
        self.data: dict[str, list[dict[str, Any]]] = {"job": [], "end": []}
        self.status = 0
        self.failure: BaseException | None = None
        self.started_streaming = threading.Event()

    @property
    def last_epoch(self) -> int:
        ids = [i for name, i, _ in self.events if name == "epoch" and i is not None]
        return ids[-1] if ids else 0

    def run(self) -> None:
        try:
            self.follow()
        except BaseException as exc:  # reported by the test that joins the thread
            self.failure = exc

    def follow(self) -> None:
        timeout = httpx.Timeout(10.0, read=120.0)
        with (
            httpx.Client(base_url=self.base_url, timeout=timeout) as http,
            http.stream("GET", f"/jobs/{self.job_id}/events", headers=self.headers) as response,
        ):
            self.status = response.status_code
            self.started_streaming.set()
            fields: dict[str, str] = {}
            size = 0
            for line in response.iter_lines():
                if line.startswith(":"):
                    continue  # a keep-alive comment
                if line:
                    key, _, value = line.partition(": ")
                    fields[key] = value
                    size += len(line.encode()) + 1
                    continue
                if fields:
                    self.record(fields, size + 1)
                fields, size = {}, 0

    def record(self, fields: dict[str, str], size: int) -> None:
        name = fields["event"]
        self.events.append((name, int(fields["id"]) if "id" in fields else None, size))
        if name != "epoch":
            self.data[name].append(json.loads(fields["data"]))


class Probe(threading.Thread):
    """/healthz every 0.1 s, and the server's resident memory: the worst of each."""

    def __init__(self, server: LiveServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.rss: list[float] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.server.base_url, timeout=30.0) as http:
            while not self.stop.wait(0.1):
                started = time.perf_counter()
                assert http.get("/healthz").status_code == 200
                self.latencies.append(time.perf_counter() - started)
                self.rss.append(proc_status_mib(self.server.pid))


def wait_until(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def registry_of(
    start_server: Callable[..., LiveServer],
) -> Iterator[Callable[[LiveServer], Registry]]:
    """``registry_of(server)``: the test's own connection to a server's registry."""
    opened: list[Registry] = []

    def connect(server: LiveServer) -> Registry:
        registry = Registry.connect(Settings(store_dir=server.store_dir).registry_url)
        opened.append(registry)
        return registry

    yield connect
    for registry in opened:
        registry.close()


def running_job(registry: Registry, history: int) -> str:
    """A running job, leased to the test, with ``history`` epochs already recorded.

    Written as running at once: queued, the server's runner could claim it first.
    """
    job_id, epochs = new_id(), BURST + 100
    with Session(registry.engine) as session, session.begin():
        session.add(
            JobRow(
                id=job_id,
                model_name="long",
                status=JobStatus.RUNNING,
                request=long_body("long", epochs=epochs),
                device="cpu",
                epochs=epochs,
                attempts=1,
                max_attempts=3,
                lease_owner=WRITER,
                started_at=utcnow(),
            )
        )
    add_epochs(registry, job_id, range(1, history + 1))
    return job_id


def add_epochs(registry: Registry, job_id: str, epochs: range) -> None:
    """Epochs recorded in one transaction, as a worker would record them one by one."""
    with Session(registry.engine) as session, session.begin():
        session.add_all(
            EpochRow(job_id=job_id, epoch=epoch, attempt=1, metrics=epoch_metrics(epoch, SAMPLE))
            for epoch in epochs
        )
        session.execute(update(JobRow).where(JobRow.id == job_id).values(epoch=epochs[-1]))


def record(registry: Registry, job_id: str, epochs: range, pause: float = 0.0) -> None:
    for epoch in epochs:
        registry.record_epoch(job_id, WRITER, 1, epoch_metrics(epoch, SAMPLE))
        time.sleep(pause)


def joined(followers: list[Follower], timeout: float) -> None:
    for follower in followers:
        follower.join(timeout)
        assert not follower.is_alive(), "a stream did not end"
        assert follower.failure is None, repr(follower.failure)
        assert follower.status == 200


def report(figures: dict[str, Any]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "event-streams.json").write_text(json.dumps(figures, indent=2) + "\n")


def test_twenty_followers_of_a_long_job_cost_what_is_new(
    start_server: Callable[..., LiveServer], registry_of: Callable[[LiveServer], Registry]
) -> None:
    # the job runner looks for queued jobs rarely: its queries are not the streams'
    server = start_server(job_poll_seconds=30)
    registry = registry_of(server)
    job_id = running_job(registry, HISTORY)
    warm = Follower(server.base_url, job_id, last_event_id=HISTORY - 10)
    warm.start()  # the first stream loads the code every stream runs
    wait_until(lambda: warm.last_epoch == HISTORY, 60, "the warm-up stream")
    baseline = proc_status_mib(server.pid)
    probe = Probe(server)
    probe.start()

    followers = [Follower(server.base_url, job_id) for _ in range(FOLLOWERS)]
    for follower in followers:
        follower.start()
    wait_until(lambda: all(f.last_epoch == HISTORY for f in followers), 120, "the backlogs")
    after_backlogs = proc_status_mib(server.pid)
    assert metric(server.http, "charnn_event_streams") == FOLLOWERS + 1  # and the warm one
    before, started = metric(server.http, STATEMENTS), time.monotonic()
    record(registry, job_id, range(HISTORY + 1, HISTORY + LIVE + 1), pause=0.05)
    wait_until(lambda: all(f.last_epoch == HISTORY + LIVE for f in followers), 30, "live epochs")
    statements = metric(server.http, STATEMENTS) - before
    seconds = time.monotonic() - started
    registry.finish_job(job_id, WRITER, JobStatus.FAILED, "stopped by the test")
    joined([*followers, warm], timeout=30)
    probe.stop.set()
    probe.join()

    polls = seconds / POLL_SECONDS + 2
    epoch_sizes = [size for f in followers for name, _, size in f.events if name == "epoch"]
    first = [size for _, i, size in followers[0].events if i is not None and i <= LIVE]
    last = [size for _, i, size in followers[0].events if i is not None and i > HISTORY]
    summary_size = max(size for f in followers for name, _, size in f.events if name != "epoch")
    figures = {
        "followers": FOLLOWERS,
        "history_epochs": HISTORY,
        "live_epochs": LIVE,
        "epoch_event_bytes_max": max(epoch_sizes),
        "epoch_event_bytes_mean_first_40": sum(first) / len(first),
        "epoch_event_bytes_mean_last_40": sum(last) / len(last),
        "summary_event_bytes_max": summary_size,
        "rss_baseline_mib": round(baseline, 1),
        "rss_growth_max_mib": round(max(probe.rss) - baseline, 1),
        "rss_growth_after_backlogs_mib": round(after_backlogs - baseline, 1),
        "rss_growth_at_end_mib": round(probe.rss[-1] - baseline, 1),
        "healthz_max_seconds": round(max(probe.latencies), 3),
        "healthz_probes": len(probe.latencies),
        "live_phase_seconds": round(seconds, 2),
        "live_phase_registry_statements": statements,
        "registry_statements_per_second": round(statements / seconds, 1),
        "one_poller_per_follower_would_be_at_least": round(FOLLOWERS * polls),
    }
    report(figures)

    for follower in followers:
        names = [name for name, _, _ in follower.events]
        assert names == ["job"] + ["epoch"] * (HISTORY + LIVE) + ["end"], figures
        ids = [i for _, i, _ in follower.events[1:-1]]
        assert ids == list(range(1, HISTORY + LIVE + 1))  # each epoch once, in order
        assert follower.data["job"][0]["history"] is None
        assert follower.data["end"][0]["status"] == "failed"
    assert figures["epoch_event_bytes_max"] <= MAX_EPOCH_EVENT_BYTES, figures
    # independent of the history's length: epoch 4,001 costs what epoch 1 did, but for
    # its digits (the old events carried every earlier epoch: 1.5 MB at epoch 4,000)
    assert (
        figures["epoch_event_bytes_mean_last_40"]
        <= 1.1 * figures["epoch_event_bytes_mean_first_40"]
    ), figures
    assert summary_size <= MAX_SUMMARY_EVENT_BYTES, figures
    assert figures["rss_growth_max_mib"] <= MAX_RSS_GROWTH_MIB, figures
    assert figures["healthz_max_seconds"] <= MAX_HEALTHZ_SECONDS, figures
    # one poll (two statements: the state, the new epochs) per period for the job,
    # however many follow it; a poller per follower would send twenty times as many
    assert statements <= 2 * polls + 10, figures


def test_a_follower_that_reconnects_receives_only_the_epochs_it_missed(
    start_server: Callable[..., LiveServer], registry_of: Callable[[LiveServer], Registry]
) -> None:
    server = start_server()
    registry = registry_of(server)
    job_id = running_job(registry, 100)

    first = Follower(server.base_url, job_id, last_event_id=60)
    first.start()
    wait_until(lambda: first.last_epoch == 100, 30, "epochs 61-100")
    record(registry, job_id, range(101, 106))
    wait_until(lambda: first.last_epoch == 105, 30, "epochs 101-105")
    record(registry, job_id, range(106, 111))
    again = Follower(server.base_url, job_id, last_event_id=first.last_epoch)
    again.start()
    wait_until(lambda: again.last_epoch == 110, 30, "epochs 106-110")
    registry.finish_job(job_id, WRITER, JobStatus.SUCCEEDED)
    joined([first, again], timeout=30)

    assert [i for _, i, _ in first.events[1:-1]] == list(range(61, 111))
    assert [i for _, i, _ in again.events[1:-1]] == list(range(106, 111))
    assert [name for name, _, _ in again.events] == ["job"] + ["epoch"] * 5 + ["end"]


def test_a_reader_that_falls_behind_is_dropped_and_resumes_where_it_stopped(
    start_server: Callable[..., LiveServer], registry_of: Callable[[LiveServer], Registry]
) -> None:
    server = start_server()
    registry = registry_of(server)
    job_id = running_job(registry, 10)
    client = Client(server.base_url)
    events = client.follow(job_id)
    assert [next(events)[0] for _ in range(11)] == ["job"] + ["epoch"] * 10

    # ~11 MB of events while the client reads none: more than the sockets' buffers hold,
    # so the server's queue for it fills and the server drops it
    add_epochs(registry, job_id, range(11, BURST + 1))
    wait_until(lambda: "fell 256 events behind" in server.log, 60, "the reader to be dropped")
    registry.finish_job(job_id, WRITER, JobStatus.SUCCEEDED)
    rest = list(events)  # what the first stream held, then a second stream after it
    client.close()

    epochs = [data["epoch"] for name, data in rest if name == "epoch"]
    assert epochs == list(range(11, BURST + 1))  # none lost, none twice
    assert rest[-1][0] == "end"
    # each dropped stream was followed by a new one, which began with the summary (a
    # stream reading its backlog while the burst is published may be dropped too)
    drops = server.log.count("fell 256 events behind")
    assert [name for name, _ in rest].count("job") == drops >= 1


def test_a_server_stops_at_once_with_followers_attached(
    start_server: Callable[..., LiveServer], registry_of: Callable[[LiveServer], Registry]
) -> None:
    server = start_server()
    job_id = running_job(registry_of(server), 10)
    followers = [Follower(server.base_url, job_id) for _ in range(5)]
    for follower in followers:
        follower.start()
    wait_until(lambda: all(f.last_epoch == 10 for f in followers), 30, "the followers")

    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=30)
    took = time.monotonic() - started
    joined(followers, timeout=10)

    assert took <= SHUTDOWN_SECONDS, f"the server took {took:.1f} s to stop:\n{server.log}"
    # uvicorn re-raises the signal it handled once it is done: killed by it, or 0
    assert server.process.returncode in (0, -signal.SIGTERM), server.log
    for follower in followers:
        assert [name for name, _, _ in follower.events] == ["job"] + ["epoch"] * 10  # no end
