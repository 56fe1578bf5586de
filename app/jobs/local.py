"""The embedded job runner: spawned worker processes owned by the service.

A thread claims queued jobs from the registry, oldest first, while fewer than
``max_concurrent_jobs`` run, and starts one spawned process per job (spawned, not
forked: forking a process that has loaded torch is unsafe). Worker processes die
with the service (Linux parent-death signal, and a check of the parent's pid), so
after a crash nothing trains on; on restart, jobs left running are queued again
and resume from their last epoch checkpoint.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

import torch

from app.errors import InvalidRequestError
from app.jobs.worker import run_job
from app.logs import configure_logging
from app.ml.device import resolve_device
from app.ml.errors import DeviceUnavailableError
from app.settings import Settings
from app.store.layout import new_id
from app.store.registry import Registry

log = logging.getLogger("charnn.runner")

PR_SET_PDEATHSIG = 1
RESTART_REASON = "the service stopped while this job ran; it resumes from its last checkpoint"


@dataclass
class RunningJob:
    process: BaseProcess
    owner: str


class LocalRunner:
    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.owner_prefix = f"local:{socket.gethostname()}:{os.getpid()}"
        self._running: dict[str, RunningJob] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="charnn-runner", daemon=True)
        self._context = multiprocessing.get_context("spawn")

    def start(self) -> None:
        resumed = self.registry.release_all_running(RESTART_REASON)
        if resumed:
            log.info("re-queued %d job(s) interrupted by a restart: %s", len(resumed), resumed)
        self._thread.start()

    def notify(self) -> None:
        """A job was queued: look now instead of at the next poll."""
        self._wake.set()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def check_device(self, device: str) -> None:
        # this machine runs the job: asking for a device it lacks is the request's fault
        # (422), unlike the rq backend's GPU workers being away for now (503)
        try:
            resolve_device(device)
        except DeviceUnavailableError as exc:
            raise InvalidRequestError("device", str(exc)) from exc

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming jobs, stop the workers, and queue their jobs again."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        for job_id, running in list(self._running.items()):
            running.process.terminate()
            running.process.join(timeout)
            if running.process.is_alive():
                running.process.kill()
                running.process.join()
            self.registry.release_job(job_id, running.owner, RESTART_REASON, count_failure=False)
        self._running.clear()

    # --- the loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._reap()
                self._fill()
            except Exception:  # e.g. the database is briefly unreachable: try again later
                log.exception("job runner iteration failed")
            self._wake.wait(self.settings.job_poll_seconds)
            self._wake.clear()

    def _fill(self) -> None:
        while len(self._running) < self.settings.max_concurrent_jobs:
            if self._stopping.is_set():
                return
            owner = f"{self.owner_prefix}:{new_id()[:8]}"
            job = self.registry.claim_next_job(owner)
            if job is None:
                return
            process = self._context.Process(
                target=worker_main,
                args=(job.id, owner, self.settings.for_workers(), os.getpid()),
                name=f"charnn-job-{job.id[:8]}",
            )
            process.start()
            self._running[job.id] = RunningJob(process, owner)
            log.info("job %s: attempt %d started in process %s", job.id, job.attempts, process.pid)

    def _reap(self) -> None:
        for job_id, running in list(self._running.items()):
            if running.process.is_alive():
                continue
            running.process.join()
            code = running.process.exitcode
            if code != 0:
                status = self.registry.release_job(
                    job_id, running.owner, f"the worker process exited with code {code}"
                )
                log.warning(
                    "job %s: worker exited with code %s; job is now %s", job_id, code, status
                )
            del self._running[job_id]
            self._wake.set()


# --- inside the worker process -------------------------------------------------------------


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when the service dies, and check it has not already."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def worker_main(job_id: str, owner: str, settings_values: dict[str, Any], parent_pid: int) -> None:
    """Entry point of a spawned worker process."""
    die_with_parent(parent_pid)
    settings = Settings(**settings_values)
    configure_logging(settings.log_level, settings.log_format == "json")
    torch.set_num_threads(settings.training_threads)
    try:
        run_job(job_id, owner, settings)
    except BaseException:
        sys.exit(1)  # run_job logged the failure and released the job
