"""``run_job``: what a worker process does with a job, run here in the test's process.

The job is submitted as POST /train submits it and claimed as a runner claims it;
``run_job(job_id, owner, settings)`` then trains it to its end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from app.jobs.local import LocalRunner
from app.jobs.spec import JobSpec, build_dataset
from app.jobs.submit import submit_job
from app.jobs.worker import run_job
from app.ml.checkpoint import META_FILE, WEIGHTS_FILE, load_checkpoint, save_checkpoint
from app.ml.inference import Predictor
from app.ml.metrics import EpochMetrics
from app.ml.train import TrainingSession, train
from app.settings import Settings
from app.store.layout import StoreLayout, new_id
from app.store.registry import Registry
from app.store.tables import JobRow, JobStatus

CPU = torch.device("cpu")


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def layout(settings: Settings) -> StoreLayout:
    layout = StoreLayout(settings.store_dir)
    layout.ensure()
    return layout


@pytest.fixture
def registry(settings: Settings, layout: StoreLayout) -> Iterator[Registry]:
    registry = Registry.connect(settings.registry_url)
    yield registry
    registry.close()


@pytest.fixture
def submit(settings: Settings, registry: Registry) -> Callable[[dict[str, Any]], JobRow]:
    runner = LocalRunner(settings, registry)  # never started: it only vets the device here
    return lambda body: submit_job(JobSpec.model_validate(body), settings, registry, runner)


def test_a_job_publishes_one_verified_version_and_cleans_up(
    submit: Callable[[dict[str, Any]], JobRow],
    registry: Registry,
    layout: StoreLayout,
    settings: Settings,
    hello: dict[str, Any],
) -> None:
    job = submit(hello)
    registry.claim_job(job.id, "worker-1")

    assert run_job(job.id, "worker-1", settings) == JobStatus.SUCCEEDED

    done = registry.get_job(job.id)
    assert (done.status, done.version, done.epoch, done.error) == ("succeeded", 1, 15, None)
    epochs = [(e.epoch, e.attempt) for e in registry.job_epochs(job.id)]
    assert epochs == [(epoch, 1) for epoch in range(1, 16)]
    [version] = registry.get_model("hello").versions
    directory = layout.version_dir("hello", version.directory)
    assert sorted(p.name for p in directory.iterdir()) == [META_FILE, WEIGHTS_FILE]
    checkpoint = load_checkpoint(directory)  # hashes and shapes verified
    assert Predictor.from_checkpoint(checkpoint, CPU).predict(["hello"])[0].output == "ohlol"
    assert not layout.job_dir(job.id).exists()


def test_data_that_fails_the_same_way_every_time_fails_at_once(
    registry: Registry, layout: StoreLayout, settings: Settings, hello: dict[str, Any]
) -> None:
    # queued by an older service that let misaligned pairs through
    request = {**hello, "data": {"pairs": [{"input": "hello", "target": "ohlo"}]}}
    job = registry.create_job(new_id(), "hello", request, "cpu", epochs=15, max_attempts=3)
    registry.claim_job(job.id, "worker-1")

    assert run_job(job.id, "worker-1", settings) == JobStatus.FAILED

    failed = registry.get_job(job.id)
    assert failed.status == "failed"
    assert failed.error == (
        "pairs[0]: input has 5 characters but target has 4; "
        "aligned pairs map each input character to one output character"
    )
    assert (failed.attempts, failed.lease_owner) == (1, None)
    assert registry.claim_next_job("worker-2") is None  # not queued again
    assert registry.list_models() == []
    assert not layout.job_dir(job.id).exists()


def test_a_diverging_job_fails_at_once_and_leaves_no_checkpoint(
    submit: Callable[[dict[str, Any]], JobRow],
    registry: Registry,
    layout: StoreLayout,
    settings: Settings,
    hello: dict[str, Any],
) -> None:
    # SGD's weight decay multiplies every weight by 1 - 10 x 1 = -9 per step: NaN at epoch 22
    diverging = {"optimizer": "sgd", "learning_rate": 10.0, "weight_decay": 1.0, "epochs": 60}
    job = submit({**hello, "hyperparameters": {**diverging, "seed": 0}})
    registry.claim_job(job.id, "worker-1")

    assert run_job(job.id, "worker-1", settings) == JobStatus.FAILED

    failed = registry.get_job(job.id)
    assert failed.error is not None
    assert failed.error.startswith("loss became NaN at epoch 22: the training diverged; ")
    assert (failed.attempts, failed.failures, failed.epoch, failed.version) == (1, 0, 21, None)
    assert registry.claim_next_job("worker-2") is None  # not queued again
    assert registry.list_models() == []
    assert not layout.job_dir(job.id).exists()  # no checkpoint left to resume from
    assert layout.staging_dirs() == []


def test_a_failure_that_may_pass_releases_the_job_for_another_attempt(
    submit: Callable[[dict[str, Any]], JobRow],
    registry: Registry,
    layout: StoreLayout,
    settings: Settings,
    hello: dict[str, Any],
) -> None:
    job = submit(hello)
    registry.claim_job(job.id, "worker-1")
    layout.job_dir(job.id).write_text("")  # a file where the job's checkpoints go

    with pytest.raises(OSError, match="Not a directory"):
        run_job(job.id, "worker-1", settings)

    released = registry.get_job(job.id)
    assert (released.status, released.attempts, released.failures) == ("queued", 1, 1)
    assert released.error is not None
    assert released.error.startswith("NotADirectoryError: ")
    layout.job_dir(job.id).unlink()  # the disk is fixed: the next attempt succeeds
    registry.claim_job(job.id, "worker-2")
    assert run_job(job.id, "worker-2", settings) == JobStatus.SUCCEEDED


def test_a_job_cancelled_before_its_first_step_trains_nothing(
    submit: Callable[[dict[str, Any]], JobRow],
    registry: Registry,
    layout: StoreLayout,
    settings: Settings,
    hello: dict[str, Any],
) -> None:
    job = submit(hello)
    registry.claim_job(job.id, "worker-1")
    registry.request_cancel(job.id)

    assert run_job(job.id, "worker-1", settings) == JobStatus.CANCELLED

    cancelled = registry.get_job(job.id)
    assert (cancelled.status, cancelled.error, cancelled.epoch) == (
        "cancelled",
        "cancelled on request",
        0,
    )
    assert registry.list_models() == []
    assert not layout.job_dir(job.id).exists()


def test_a_resumed_job_ends_exactly_where_an_uninterrupted_one_would(
    submit: Callable[[dict[str, Any]], JobRow],
    registry: Registry,
    layout: StoreLayout,
    settings: Settings,
    hello: dict[str, Any],
) -> None:
    job = submit(hello)
    spec = JobSpec.model_validate(job.request)
    # attempt 1 trains four epochs, checkpointing each, then its service stops
    registry.claim_job(job.id, "worker-1")
    interrupted = TrainingSession.start(spec.hyperparameters, build_dataset(spec), CPU)

    def checkpoint(session: TrainingSession, metrics: EpochMetrics) -> None:
        save_checkpoint(session.checkpoint(), layout.job_checkpoint(job.id, session.epoch))
        registry.record_epoch(job.id, "worker-1", 1, metrics.model_dump(mode="json"))

    train(interrupted, on_epoch_end=checkpoint, should_stop=lambda: interrupted.epoch == 4)
    registry.release_job(job.id, "worker-1", "the service stopped", count_failure=False)
    registry.claim_job(job.id, "worker-2")

    assert run_job(job.id, "worker-2", settings) == JobStatus.SUCCEEDED

    assert [(e.epoch, e.attempt) for e in registry.job_epochs(job.id)] == [
        *((epoch, 1) for epoch in range(1, 5)),
        *((epoch, 2) for epoch in range(5, 16)),
    ]
    [version] = registry.get_model("hello").versions
    published = load_checkpoint(layout.version_dir("hello", version.directory))
    straight = TrainingSession.start(spec.hyperparameters, build_dataset(spec), CPU)
    train(straight)
    reference = straight.checkpoint().weights
    assert published.weights.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(published.weights[name], tensor), name
