"""The one function a worker process runs for a job, whoever started the process.

    run_job(job_id, owner, settings)

It rebuilds the dataset from the job's stored specification, resumes from the job's
latest checkpoint if there is one, trains, and after every epoch writes a
checkpoint and the epoch's metrics; within an epoch, every ``checkpoint_every_steps``
steps or CHARNN_PROGRESS_SECONDS seconds, a checkpoint and the job's step progress,
so a crash loses little of a long epoch. When training ends (its epochs, a budget, or
early stopping) it publishes the best validation epoch's weights as the model's next
version. The registry is the source of truth throughout: every
write is guarded by the worker's lease, so a worker that lost its job stops.

An attempt that fails ends in one of two ways:

- the job's own request is at fault (its data, its hyperparameters, a loss that
  diverges): every attempt would fail the same way, so the job ends failed at once
  with the reason, and its epoch checkpoints are removed;
- anything else may pass (the database unreachable, a full disk, the process
  killed): the attempt is released, its checkpoints kept to resume from, and the
  job is retried while it has attempts left (CHARNN_JOB_MAX_ATTEMPTS).
"""

from __future__ import annotations

import logging
import shutil
import time

import torch
from pydantic import ValidationError

from app.errors import LeaseLostError
from app.jobs.spec import JobSpec, build_dataset
from app.ml.checkpoint import (
    load_checkpoint,
    save_checkpoint,
)
from app.ml.data import Dataset
from app.ml.device import resolve_device
from app.ml.errors import (
    CheckpointError,
    ConfigurationError,
    DataError,
    DeviceUnavailableError,
    TrainingDivergedError,
    UnknownCharactersError,
    VocabularyError,
)
from app.ml.metrics import EpochMetrics, StepProgress
from app.ml.train import TrainingSession, train
from app.settings import Settings
from app.store.layout import StoreLayout
from app.store.publish import publish_checkpoint
from app.store.registry import Registry
from app.store.tables import JobStatus, utcnow

log = logging.getLogger("charnn.worker")

HEARTBEAT_SECONDS = 1.0
# failures of the job's own making: another attempt would fail the same way
DETERMINISTIC_ERRORS = (
    ValidationError,  # the stored request
    DataError,
    UnknownCharactersError,
    VocabularyError,
    ConfigurationError,
    DeviceUnavailableError,
    TrainingDivergedError,
)


class Heartbeat:
    """Tells the training loop to stop: cancelled, lease lost, or out of time.

    The registry is asked at most once per ``HEARTBEAT_SECONDS``, not at every step.
    """

    def __init__(self, registry: Registry, job_id: str, owner: str, deadline: float) -> None:
        self.registry, self.job_id, self.owner = registry, job_id, owner
        self.deadline = deadline  # time.time() by which the job must have ended
        self.last = 0.0
        self.cancelled = False
        self.lease_lost = False
        self.timed_out = False

    def should_stop(self) -> bool:
        now = time.monotonic()
        if time.time() > self.deadline:
            self.timed_out = True
        if now - self.last >= HEARTBEAT_SECONDS:
            self.last = now
            try:
                self.cancelled = self.registry.heartbeat(self.job_id, self.owner).cancel_requested
            except LeaseLostError:
                self.lease_lost = True
        return self.cancelled or self.lease_lost or self.timed_out


def run_job(job_id: str, owner: str, settings: Settings) -> JobStatus:
    """Run one attempt of a job to its end; returns the job's status afterwards.

    Raises what ended an attempt that may be retried, once the job is released.
    """
    registry = Registry.connect(settings.registry_url, migrate=False)
    layout = StoreLayout(settings.store_dir)
    try:
        return _run(registry, layout, job_id, owner, settings)
    except DETERMINISTIC_ERRORS as exc:
        log.warning("job %s failed: %s", job_id, exc)
        return _fail(registry, layout, job_id, owner, str(exc))
    except BaseException as exc:
        log.exception("job %s: attempt failed; retried if it has attempts left", job_id)
        registry.release_job(job_id, owner, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        registry.close()


def _fail(
    registry: Registry, layout: StoreLayout, job_id: str, owner: str, reason: str
) -> JobStatus:
    """End the job failed, and remove its checkpoints: nothing will resume from them."""
    registry.finish_job(job_id, owner, JobStatus.FAILED, reason)
    layout.remove_job(job_id)
    return JobStatus.FAILED


def _run(
    registry: Registry, layout: StoreLayout, job_id: str, owner: str, settings: Settings
) -> JobStatus:
    job = registry.get_job(job_id)
    spec = JobSpec.model_validate(job.request)
    dataset = build_dataset(spec, settings.store_dir)  # a stored one from the shared store
    device = resolve_device(job.device)
    session = _start_or_resume(registry, layout, job_id, owner, spec, dataset, device)
    started = (job.started_at or utcnow()).timestamp()  # the first attempt's start
    heartbeat = Heartbeat(registry, job_id, owner, started + settings.job_timeout_seconds)

    def on_epoch_end(session: TrainingSession, metrics: EpochMetrics) -> None:
        save_checkpoint(session.checkpoint(), layout.job_checkpoint(job_id, session.epoch))
        registry.record_epoch(job_id, owner, job.attempts, metrics.model_dump(mode="json"))
        layout.prune_job_checkpoints(job_id)
        log.info("job %s epoch %d/%d loss=%.4f", job_id, metrics.epoch, job.epochs, metrics.loss)

    def on_progress(session: TrainingSession, progress: StepProgress) -> None:
        path = layout.job_checkpoint(job_id, session.epoch, session.batch_in_epoch)
        save_checkpoint(session.checkpoint(), path)
        registry.record_progress(job_id, owner, progress.model_dump(mode="json"))
        layout.prune_job_checkpoints(job_id)

    outcome = train(
        session,
        on_epoch_end=on_epoch_end,
        on_progress=on_progress,
        should_stop=heartbeat.should_stop,
        progress_seconds=settings.progress_seconds,
    )
    if heartbeat.lease_lost:
        log.warning("job %s: lease lost, stopping without writing", job_id)
        return JobStatus(registry.get_job(job_id).status)
    if heartbeat.timed_out:
        reason = (
            f"ran longer than {settings.job_timeout_seconds} s "
            "(limit set by CHARNN_JOB_TIMEOUT_SECONDS)"
        )
        return _fail(registry, layout, job_id, owner, reason)
    if outcome.status == "cancelled":
        registry.finish_job(job_id, owner, JobStatus.CANCELLED, "cancelled on request")
        layout.remove_job(job_id)
        return JobStatus.CANCELLED
    final = session.checkpoint(with_training_state=False)  # the best epoch's weights
    log.info("job %s stopped: %s, best epoch %s", job_id, outcome.stop_reason, final.best_epoch)
    publish_checkpoint(registry, layout, spec.model_name, final, job_id=job_id, owner=owner)
    layout.remove_job(job_id)
    return JobStatus.SUCCEEDED


def _start_or_resume(
    registry: Registry,
    layout: StoreLayout,
    job_id: str,
    owner: str,
    spec: JobSpec,
    dataset: Dataset,
    device: torch.device,
) -> TrainingSession:
    """Resume from the newest checkpoint that verifies; start afresh if none does."""
    for _, path in reversed(layout.job_checkpoints(job_id)):
        try:
            checkpoint = load_checkpoint(path, with_training_state=True)
            session = TrainingSession.resume(checkpoint, dataset, device)
        except CheckpointError as exc:
            log.warning("job %s: removing unusable checkpoint %s: %s", job_id, path, exc)
            shutil.rmtree(path, ignore_errors=True)  # training there again writes it anew
            continue
        log.info(
            "job %s: resuming after epoch %d, batch %d",
            job_id,
            session.epoch,
            session.batch_in_epoch,
        )
        job = registry.get_job(job_id)
        if session.history and job.epoch < session.epoch:  # checkpointed but not yet recorded
            last = session.history[-1].model_dump(mode="json")
            registry.record_epoch(job_id, owner, job.attempts, last)
        return session
    return TrainingSession.start(spec.hyperparameters, dataset, device)
