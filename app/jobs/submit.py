"""Accepting a job: everything is checked before anything is queued."""

from __future__ import annotations

from app.errors import LimitExceededError
from app.jobs.runner import JobRunner
from app.jobs.spec import JobSpec, PairsData, build_dataset
from app.settings import Settings
from app.store.layout import new_id
from app.store.registry import Registry
from app.store.tables import JobRow


def check_limits(spec: JobSpec, settings: Settings) -> None:
    if isinstance(spec.data, PairsData) and len(spec.data.pairs) > settings.max_training_pairs:
        raise LimitExceededError(
            "data.pairs",
            f"{len(spec.data.pairs)} pairs, at most {settings.max_training_pairs} allowed",
            "CHARNN_MAX_TRAINING_PAIRS",
        )
    if spec.characters > settings.max_training_chars:
        raise LimitExceededError(
            "data",
            f"{spec.characters} characters, at most {settings.max_training_chars} allowed",
            "CHARNN_MAX_TRAINING_CHARS",
        )


def submit_job(spec: JobSpec, settings: Settings, registry: Registry, runner: JobRunner) -> JobRow:
    """Validate the data against its vocabulary and queue the job."""
    check_limits(spec, settings)
    build_dataset(spec)  # unknown characters, misaligned pairs: refused now, not in a worker
    device = spec.device or settings.device
    runner.check_device(device)  # a GPU job that nothing can run is refused now, not later
    job = registry.create_job(
        job_id=new_id(),
        model_name=spec.model_name,
        request=spec.model_dump(mode="json"),
        device=device,
        epochs=spec.hyperparameters.epochs,
        max_attempts=settings.job_max_attempts,
    )
    runner.notify()
    return job
