"""Request ids, structured logs and Prometheus metrics.

One pure ASGI middleware (cheap: two clock reads and one histogram observation per
request) tags every request with an id (the client's ``X-Request-ID`` or a new one),
returns it in the response, puts it on every log record made while handling the
request, and counts requests and their latency by route template.
"""

from __future__ import annotations

import contextvars
import json
import logging
import random
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series only double what a scrape has to read

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


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


class RegistryCollector(Collector):
    """Values read at scrape time: jobs by state, recent epoch durations, loaded models,
    the registry's statements so far and the open event streams."""

    def __init__(
        self,
        jobs_by_status: Any,
        epoch_seconds: Any,
        loaded_models: Any,
        statements: Any,
        event_streams: Any,
    ) -> None:
        self.jobs_by_status = jobs_by_status
        self.epoch_seconds = epoch_seconds
        self.loaded_models = loaded_models
        self.statements = statements
        self.event_streams = event_streams

    def collect(self) -> Iterable[Any]:
        jobs = GaugeMetricFamily("charnn_jobs", "Training jobs by status", labels=["status"])
        for status, count in self.jobs_by_status().items():
            jobs.add_metric([status], count)
        yield jobs
        seconds = sorted(self.epoch_seconds())
        buckets = [(str(b), sum(1 for s in seconds if s <= b)) for b in LATENCY_BUCKETS]
        yield HistogramMetricFamily(
            "charnn_epoch_seconds",
            "Duration of recent training epochs",
            buckets=[*buckets, ("+Inf", len(seconds))],
            sum_value=sum(seconds),
        )
        yield GaugeMetricFamily(
            "charnn_loaded_models", "Model versions loaded for serving", value=self.loaded_models()
        )
        # counted after this scrape's own two queries (jobs by status, epoch durations)
        yield CounterMetricFamily(
            "charnn_registry_statements",
            "SQL statements this process sent to the registry",
            value=self.statements(),
        )
        yield GaugeMetricFamily(
            "charnn_event_streams", "Job event streams open", value=self.event_streams()
        )


# --- logs -------------------------------------------------------------------------------------


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, json_format: bool) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        JsonFormatter()
        if json_format
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    logger = logging.getLogger("charnn")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
