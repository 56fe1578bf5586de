"""What the API needs from a job backend, whichever runs the jobs."""

from __future__ import annotations

from typing import Protocol

from app.jobs.local import LocalRunner
from app.jobs.queue import RQDispatcher
from app.settings import Settings
from app.store.registry import Registry


class JobRunner(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def notify(self) -> None:
        """A job was queued."""

    def is_alive(self) -> bool: ...

    def check_device(self, device: str) -> None:
        """Refuse now a job that no worker of this backend can run: InvalidRequestError for a
        device this deployment lacks, DeviceUnavailableError (503) for one that is away."""


def make_runner(settings: Settings, registry: Registry) -> JobRunner:
    if settings.job_backend == "rq":
        return RQDispatcher(settings, registry)
    return LocalRunner(settings, registry)
