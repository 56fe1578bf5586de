"""Request ids, structured logs and Prometheus metrics.

One pure ASGI middleware (cheap: two clock reads and one histogram observation per
request) tags every request with an id (the client's ``X-Request-ID`` or a new one),
returns it in the response, puts it on every log record made while handling the
request, and counts requests and their latency by route template (event streams, which
last as long as a job, are counted apart: in a latency histogram they would read as the
slowest requests of all).
"""

from __future__ import annotations

import platform
import random
import time
from collections.abc import Callable, Collection, Iterable
from importlib.metadata import version as distribution_version
from typing import Any

from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__
from app.logs import request_id

disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series only double what a scrape has to read

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
EPOCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
# routes whose responses last as long as what they follow: no latency, a count of their own
STREAM_ROUTES = frozenset({"/jobs/{job_id}/events"})


class Metrics:
    """The service's own metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "charnn_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "charnn_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "charnn_predictions", "Sequences predicted", ["model"], registry=self.registry
        )
        self.batch_size = Histogram(
            "charnn_predict_batch_size",
            "Sequences per batched forward pass",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.streams = Counter(
            "charnn_http_streams",
            "Event streams ended (their durations are no request latency)",
            ["route", "status"],
            registry=self.registry,
        )
        # process_* (memory, CPU, open files) and python_info, as a default registry has
        self.registry.register(PROCESS_COLLECTOR)
        self.registry.register(PLATFORM_COLLECTOR)
        self.build_info = Gauge(
            "charnn_build_info",
            "Versions of this charnn, its Python and its torch (always 1)",
            ["version", "python", "torch"],
            registry=self.registry,
        )
        python = platform.python_version()
        self.build_info.labels(__version__, python, distribution_version("torch")).set(1)


# the methods labelled as themselves; under h11 any token is a method a client may send
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = valid_request_id(_header(scope, b"x-request-id"))
        token = request_id.set(rid)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            # a label value per method a client makes up would grow /metrics without end
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            if route in STREAM_ROUTES:
                self.metrics.streams.labels(route, str(status)).inc()
            else:
                self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
                self.metrics.requests.labels(method, route, str(status)).inc()
            request_id.reset(token)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


def valid_request_id(given: str | None) -> str:
    """The client's request id if it is usable in a header and a log line, else a new one.

    New ids need to be unique, not unguessable: the random module (reseeded in each
    forked worker) is ten times cheaper than uuid4's system call.
    """
    if given and given.isprintable():
        return given[:64]
    return f"{random.getrandbits(64):016x}"


class EpochDurations(Collector):
    """``charnn_epoch_seconds``: every epoch recorded in the registry, observed once.

    Epochs end in worker processes (spawned by the service, or rq workers on other
    machines) that serve no /metrics; the registry's epochs table is where they all
    meet. So each API process follows that table by row id: at each scrape it observes
    the rows it has not seen and moves its cursor past them. The histogram is a real,
    monotonic one, counting from the moment the process started (as any counter does).

    Every replica follows the same table, so each reports every epoch of the
    deployment: aggregate replicas with ``max``, not ``sum``.

    Ids come from a sequence, and under PostgreSQL a transaction may commit a lower id
    after a higher one has been seen. The ids skipped over are watched for
    ``GAP_SECONDS`` so that such a late epoch is still counted; after that a gap is an id
    that will never come (a rolled-back insert, or a retried epoch's replaced row).
    """

    GAP_SECONDS = 60.0
    # transactions in flight at once: about one per worker. More gaps than this are rows
    # gone for good (a deleted job's epochs), and must not make the query grow without end
    MAX_GAPS = 1_000

    def __init__(
        self,
        read: Callable[[int, Collection[int]], list[tuple[int, float]]],
        start_after: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read = read
        self.cursor = start_after
        self.gaps: dict[int, float] = {}  # id skipped over -> when to stop waiting for it
        self.clock = clock
        self.histogram = Histogram(
            "charnn_epoch_seconds",
            "Durations of the training epochs recorded since this process started",
            buckets=EPOCH_BUCKETS,
            registry=None,
        )

    def update(self) -> None:
        now = self.clock()
        self.gaps = {i: until for i, until in self.gaps.items() if until > now}
        for row_id, seconds in self.read(self.cursor, list(self.gaps)):
            self.histogram.observe(seconds)
            if row_id in self.gaps:
                del self.gaps[row_id]
                continue
            # the highest ids skipped over: a transaction still open took its id last
            for skipped in range(max(self.cursor + 1, row_id - self.MAX_GAPS), row_id):
                self.gaps[skipped] = now + self.GAP_SECONDS
            self.cursor = row_id
        if len(self.gaps) > self.MAX_GAPS:
            self.gaps = dict(sorted(self.gaps.items())[-self.MAX_GAPS :])

    def collect(self) -> Iterable[Any]:
        self.update()  # before the histogram is read, so a scrape sees every epoch so far
        return self.histogram.collect()


class RegistryCollector(Collector):
    """Values read at scrape time: jobs by state, loaded models, the registry's
    statements so far and the open event streams."""

    def __init__(
        self,
        jobs_by_status: Any,
        loaded_models: Any,
        statements: Any,
        event_streams: Any,
    ) -> None:
        self.jobs_by_status = jobs_by_status
        self.loaded_models = loaded_models
        self.statements = statements
        self.event_streams = event_streams

    def collect(self) -> Iterable[Any]:
        jobs = GaugeMetricFamily("charnn_jobs", "Training jobs by status", labels=["status"])
        for status, count in self.jobs_by_status().items():
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily(
            "charnn_loaded_models", "Model versions loaded for serving", value=self.loaded_models()
        )
        # counted after this scrape's own two queries (epoch durations, jobs by status)
        yield CounterMetricFamily(
            "charnn_registry_statements",
            "SQL statements this process sent to the registry",
            value=self.statements(),
        )
        yield GaugeMetricFamily(
            "charnn_event_streams", "Job event streams open", value=self.event_streams()
        )
