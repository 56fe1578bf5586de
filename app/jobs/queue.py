"""The scaled-out backend: RQ on Redis feeding ``charnn worker`` processes anywhere.

The registry stays the source of truth; Redis only carries "job X is ready" messages.

- The API's dispatcher puts every queued job on its queue (CPU or GPU) and puts it
  there again whenever its message is gone (Redis restarted empty, a message was
  lost), so no queued job is ever lost. It also re-queues running jobs whose
  worker stopped sending heartbeats (the worker was killed).
- A worker claims the job in the registry before training: a duplicate message, or
  one for a job already taken, is skipped. Each attempt holds a lease that its
  heartbeats renew; a worker that lost its lease stops without writing.
- Messages are JSON (never pickle) and carry only the job id. Workers are RQ's
  ``SimpleWorker``: one job at a time, run in the worker process itself, so nothing
  forks after torch (or CUDA) has started.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.serializers import JSONSerializer

from app.jobs.worker import run_job
from app.ml.errors import DeviceUnavailableError
from app.settings import Settings, get_settings
from app.store.layout import new_id
from app.store.registry import Registry

log = logging.getLogger("charnn.queue")

PERFORM = "app.jobs.queue.perform"
DISPATCH_SECONDS = 2.0
# STARTED too: a worker has taken the message and is about to claim the job
WAITING = {RQStatus.QUEUED, RQStatus.SCHEDULED, RQStatus.DEFERRED, RQStatus.STARTED}


def queue_name(settings: Settings, device: str) -> str:
    return f"{settings.queue_name}-gpu" if device.startswith("cuda") else settings.queue_name


def connect(settings: Settings) -> Redis:
    return Redis.from_url(settings.redis_url, socket_timeout=10, health_check_interval=30)


class RQDispatcher:
    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.redis = connect(settings)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="charnn-dispatcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(10)
        self.redis.close()

    def notify(self) -> None:
        self._wake.set()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def check_device(self, device: str) -> None:
        if not device.startswith("cuda"):
            return
        name = queue_name(self.settings, device)
        if Worker.count(connection=self.redis, queue=Queue(name, connection=self.redis)) == 0:
            raise DeviceUnavailableError(
                f"this deployment has no GPU worker: nothing consumes queue {name!r}; start one "
                "with `charnn worker --queue gpu` on a GPU machine, or train on device 'cpu'"
            )

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.registry.release_stale(timedelta(seconds=self.settings.lease_seconds))
                self.dispatch()
            except RedisError as exc:  # Redis restarting: the registry keeps every job
                log.warning("task queue unreachable, will retry: %s", exc)
            except Exception:
                log.exception("dispatcher iteration failed")
            self._wake.wait(DISPATCH_SECONDS)
            self._wake.clear()

    def dispatch(self) -> int:
        """Give every queued job without a live message a new one; returns how many."""
        sent = 0
        for job in self.registry.queued_jobs():
            if job.queue_ref is not None and self._waiting(job.queue_ref):
                continue
            ref = f"{job.id}-{new_id()[:8]}"
            queue = Queue(
                queue_name(self.settings, job.device),
                connection=self.redis,
                serializer=JSONSerializer,
            )
            queue.enqueue(
                PERFORM,
                job.id,
                job_id=ref,
                # RQ's own limit is a backstop: the worker stops the job itself, cleanly
                job_timeout=self.settings.job_timeout_seconds + 600,
                result_ttl=24 * 3600,
                failure_ttl=7 * 24 * 3600,
                description=f"train {job.model_name} (charnn job {job.id})",
            )
            self.registry.set_queue_ref(job.id, ref)
            sent += 1
        return sent

    def _waiting(self, ref: str) -> bool:
        try:
            job = Job.fetch(ref, connection=self.redis, serializer=JSONSerializer)
        except NoSuchJobError:
            return False
        return job.get_status(refresh=False) in WAITING


# --- inside `charnn worker` -----------------------------------------------------------------


def perform(job_id: str) -> str:
    """The task a worker runs: claim the job, train it, report how it ended.

    An attempt that may be retried raises (RQ records it failed), its job released.
    """
    settings = get_settings()
    registry = Registry.connect(settings.registry_url, migrate=False)
    owner = f"rq:{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"
    try:
        claimed = registry.claim_job(job_id, owner)
    finally:
        registry.close()
    if claimed is None:
        return "skipped: the job is not queued (taken by another worker, or ended)"
    return run_job(job_id, owner, settings).value


class TrainingWorker(SimpleWorker):
    """RQ's ``SimpleWorker`` that registers itself again when Redis has forgotten it.

    Redis restarted empty (or failed over) drops every worker's registration, and RQ
    registers a worker only once, at start; but the API counts a queue's workers before
    it accepts a GPU job. The check costs one ``EXISTS`` per heartbeat.
    """

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        if pipeline is None and not self.connection.exists(self.key):
            log.warning(
                "worker %s: the task queue lost its registration; registering again", self.name
            )
            self.register_birth()  # type: ignore[no-untyped-call]
        super().heartbeat(timeout, pipeline)


def run_worker(settings: Settings, kind: str, burst: bool = False) -> None:
    """Consume the CPU or GPU queue until stopped."""
    redis = connect(settings)
    device = "cuda" if kind == "gpu" else "cpu"
    queue = Queue(queue_name(settings, device), connection=redis, serializer=JSONSerializer)
    worker = TrainingWorker([queue], connection=redis, serializer=JSONSerializer)
    log.info("worker %s consuming %s", worker.name, queue.name)
    worker.work(burst=burst, logging_level=settings.log_level.upper())
