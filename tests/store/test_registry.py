"""The registry: jobs move between states only as their owner (lease) allows.

A job is claimed by one owner at a time; an owner whose lease was taken can write
nothing more; a failed attempt is retried until ``max_attempts``; a job publishes at
most one version, however often its completion is retried.

Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy.exc import InvalidRequestError, StatementError
from sqlalchemy.orm.exc import DetachedInstanceError

from app.errors import ConflictError, LeaseLostError, NotFoundError, QueueFullError
from app.store.layout import new_id
from app.store.registry import JobState, NewVersion, Registry
from app.store.tables import JobRow, JobStatus

METRICS: dict[str, Any] = {"loss": 0.5, "sample_prediction": "ohlol"}
T = TypeVar("T")


@pytest.fixture
def url(database_url: str) -> str:
    """An empty database, SQLite or PostgreSQL (tests/store/conftest.py)."""
    return database_url


@pytest.fixture
def registry(url: str) -> Iterator[Registry]:
    registry = Registry.connect(url)
    yield registry
    registry.close()


@pytest.fixture
def new_job(registry: Registry) -> Callable[..., JobRow]:
    def create(model_name: str = "hello", max_attempts: int = 3) -> JobRow:
        return registry.create_job(
            job_id=new_id(),
            model_name=model_name,
            request={"model_name": model_name, "hyperparameters": {"epochs": 15}},
            device="cpu",
            epochs=15,
            max_attempts=max_attempts,
        )

    return create


def a_version() -> NewVersion:
    return NewVersion(
        directory=new_id(),
        task="pairs",
        config={},
        hyperparameters={},
        vocab={},
        metrics=None,
        epochs=15,
        parameters=371,
        size_bytes=1000,
        sha256="0" * 64,
    )


def history(registry: Registry, job_id: str) -> list[tuple[int, int]]:
    return [(row.epoch, row.attempt) for row in registry.job_epochs(job_id)]


def race(url: str, count: int, action: Callable[[Registry], T]) -> list[T | Exception]:
    """``action`` in ``count`` threads at once, each with its own registry (connections)."""
    start = threading.Barrier(count)

    def one(_: int) -> T | Exception:
        registry = Registry.connect(url, migrate=False)
        start.wait()
        try:
            return action(registry)
        except Exception as exc:  # returned, for the test to look at
            return exc
        finally:
            registry.close()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


# --- claiming -----------------------------------------------------------------------------------


def test_the_oldest_queued_job_is_claimed_first(
    registry: Registry, new_job: Callable[..., JobRow]
) -> None:
    first, second = new_job(), new_job()

    claimed = [registry.claim_next_job("a"), registry.claim_next_job("b")]

    assert [job.id for job in claimed if job] == [first.id, second.id]
    assert registry.claim_next_job("c") is None
    job = registry.get_job(first.id)
    assert (job.status, job.lease_owner, job.attempts) == ("running", "a", 1)
    assert job.started_at is not None


def test_a_running_job_cannot_be_claimed_again(
    registry: Registry, new_job: Callable[..., JobRow]
) -> None:
    job = new_job()
    registry.claim_job(job.id, "a")

    assert registry.claim_job(job.id, "b") is None
    assert registry.get_job(job.id).lease_owner == "a"


def test_racing_claims_never_hand_one_job_to_two_owners(
    url: str, new_job: Callable[..., JobRow]
) -> None:
    jobs = {new_job().id for _ in range(40)}
    claims: list[tuple[str, str]] = []
    start = threading.Barrier(4)

    def claim_all(owner: str) -> None:
        registry = Registry.connect(url, migrate=False)  # each its own connections
        start.wait()
        try:
            while (job := registry.claim_next_job(owner)) is not None:
                claims.append((job.id, owner))
        finally:
            registry.close()

    threads = [threading.Thread(target=claim_all, args=(f"owner-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    claimed = [job_id for job_id, _ in claims]
    assert sorted(claimed) == sorted(jobs)  # every job once, none twice
    registry = Registry.connect(url, migrate=False)
    try:
        for job_id, owner in claims:
            assert registry.get_job(job_id).lease_owner == owner
    finally:
        registry.close()


def test_racing_submissions_never_queue_more_than_the_limit(url: str, registry: Registry) -> None:
    def submit(racer: Registry) -> JobRow:
        return racer.create_job(new_id(), "hello", {}, "cpu", 15, 3, max_queued=5)

    outcomes = race(url, 16, submit)

    queued = [o for o in outcomes if isinstance(o, JobRow)]
    refused = [o for o in outcomes if isinstance(o, QueueFullError)]
    assert (len(queued), len(refused)) == (5, 11)
    assert {str(e) for e in refused} == {
        "5 jobs are waiting already, at most 5 (limit set by CHARNN_MAX_QUEUED_JOBS); "
        "try again later"
    }
    assert registry.count_jobs(frozenset({JobStatus.QUEUED})) == 5


# --- the lease ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda r, job_id: r.heartbeat(job_id, "a"), id="heartbeat"),
        pytest.param(
            lambda r, job_id: r.record_epoch(job_id, "a", 1, {"epoch": 3, **METRICS}),
            id="record_epoch",
        ),
        pytest.param(
            lambda r, job_id: r.record_progress(job_id, "a", {"step": 7}), id="record_progress"
        ),
        pytest.param(
            lambda r, job_id: r.finish_job(job_id, "a", JobStatus.FAILED, "x"), id="finish_job"
        ),
        pytest.param(
            lambda r, job_id: r.publish_version("hello", a_version(), job_id=job_id, owner="a"),
            id="publish_version",
        ),
    ],
)
def test_a_worker_whose_lease_was_taken_can_write_nothing(
    registry: Registry, new_job: Callable[..., JobRow], write: Callable[[Registry, str], Any]
) -> None:
    job = new_job()
    registry.claim_job(job.id, "a")
    registry.release_job(job.id, None, "the worker running this job stopped responding")
    registry.claim_job(job.id, "b")

    with pytest.raises(LeaseLostError, match=f"^job {job.id} is no longer leased to a$"):
        write(registry, job.id)

    after = registry.get_job(job.id)
    assert (after.status, after.lease_owner, after.epoch, after.version) == (
        "running",
        "b",
        0,
        None,
    )
    assert registry.list_models() == []


def test_the_new_owner_writes_on(registry: Registry, new_job: Callable[..., JobRow]) -> None:
    job = new_job()
    registry.claim_job(job.id, "a")
    registry.record_epoch(job.id, "a", 1, {"epoch": 1, **METRICS})
    registry.release_job(job.id, None, "the worker running this job stopped responding")
    registry.claim_job(job.id, "b")

    registry.record_epoch(job.id, "b", 2, {"epoch": 2, **METRICS})

    assert history(registry, job.id) == [(1, 1), (2, 2)]
    assert registry.get_job(job.id).epoch == 2


def test_progress_within_an_epoch_is_polled_and_ends_with_the_epoch(
    registry: Registry, new_job: Callable[..., JobRow]
) -> None:
    job = new_job()
    registry.claim_job(job.id, "a")

    registry.record_progress(job.id, "a", {"step": 7, "epoch": 1})
    during = registry.job_state(job.id).progress
    registry.record_epoch(job.id, "a", 1, {"epoch": 1, **METRICS})

    assert during == {"step": 7, "epoch": 1}
    assert registry.job_state(job.id).progress is None


def test_an_epoch_trained_again_replaces_the_earlier_record(
    registry: Registry, new_job: Callable[..., JobRow]
) -> None:
    job = new_job()
    registry.claim_job(job.id, "a")
    registry.record_epoch(job.id, "a", 1, {"epoch": 1, **METRICS})
    registry.record_epoch(job.id, "a", 1, {"epoch": 2, **METRICS})
    registry.release_job(job.id, "a", "the service stopped", count_failure=False)
    registry.claim_job(job.id, "b")

    registry.record_epoch(job.id, "b", 2, {"epoch": 2, **METRICS, "loss": 0.25})

    assert history(registry, job.id) == [(1, 1), (2, 2)]
    assert registry.job_epochs(job.id)[1].metrics["loss"] == 0.25


def test_a_job_is_summed_up_without_its_data_or_history(
    registry: Registry, new_job: Callable[..., JobRow]
) -> None:
    job = new_job()
    registry.claim_job(job.id, "a")
    for epoch in (1, 2, 3):
        registry.record_epoch(job.id, "a", 1, {"epoch": epoch, **METRICS})

    with pytest.raises(InvalidRequestError, match="lazy='raise'"):
        _ = registry.get_job(job.id).history  # never loaded by accident
    summary = registry.job_summary(job.id, history=True)
    assert [row.epoch for row in summary.row.history] == [1, 2, 3]
    assert summary.hyperparameters == {"epochs": 15}
    [listed], total = registry.list_jobs(history=True)
    assert ([row.epoch for row in listed.row.history], total) == ([1, 2, 3], 1)
    with pytest.raises(InvalidRequestError, match="lazy='raise'"):
        _ = registry.job_summary(job.id).row.history
    with pytest.raises(DetachedInstanceError, match="'request'"):
        _ = registry.job_summary(job.id).row.request  # the data it was submitted with
    assert registry.job_state(job.id) == JobState(JobStatus.RUNNING, 3, 1, 0, False)


def test_epochs_are_read_after_an_epoch_and_up_to_a_limit(
    registry: Registry, new_job: Callable[..., JobRow]
) -> None:
    job = new_job()
    registry.claim_job(job.id, "a")
    for epoch in range(1, 8):
        registry.record_epoch(job.id, "a", 1, {"epoch": epoch, **METRICS, "seconds": epoch})

    assert [row.epoch for row in registry.job_epochs(job.id, after=2, limit=3)] == [3, 4, 5]
    assert [row.epoch for row in registry.job_epochs(job.id, after=5)] == [6, 7]
    assert registry.job_epochs(job.id, after=7) == []
    other = new_job()
    recent = registry.recent_epochs_of([job.id, other.id], last=3)
    assert [(e.attempt, e.seconds) for e in recent[job.id]] == [(1, 7.0), (1, 6.0), (1, 5.0)]
    assert recent[job.id][0].recorded_at >= recent[job.id][1].recorded_at
    assert recent[other.id] == []
    assert registry.recent_epochs_of([]) == {}


def test_statements_are_counted(registry: Registry, new_job: Callable[..., JobRow]) -> None:
    job = new_job()
    before = registry.statements.count

    registry.job_state(job.id)
    registry.job_epochs(job.id)

    assert registry.statements.count - before == 2


def test_stale_jobs_are_released(registry: Registry, new_job: Callable[..., JobRow]) -> None:
    job = new_job()
    registry.claim_job(job.id, "a")

    assert registry.release_stale(timedelta(hours=1)) == []
    assert registry.release_stale(timedelta(0)) == [job.id]

    after = registry.get_job(job.id)
    assert (after.status, after.failures, after.lease_owner) == ("queued", 1, None)
    assert after.error == "the worker running this job stopped responding"


# --- retries ------------------------------------------------------------------------------------


def test_a_failing_job_is_retried_until_max_attempts_then_fails_with_the_reason(
    registry: Registry, new_job: Callable[..., JobRow]
) -> None:
    job = new_job(max_attempts=3)
    outcomes = []
    for attempt in range(3):
        registry.claim_job(job.id, f"owner-{attempt}")
        status = registry.release_job(job.id, f"owner-{attempt}", "RuntimeError: boom")
        after = registry.get_job(job.id)
        outcomes.append((status, after.status, after.failures, after.error))

    assert outcomes == [
        ("queued", "queued", 1, "RuntimeError: boom"),
        ("queued", "queued", 2, "RuntimeError: boom"),
        ("failed", "failed", 3, "RuntimeError: boom (gave up after 3 failed attempts)"),
    ]
    failed = registry.get_job(job.id)
    assert (failed.attempts, failed.lease_owner) == (3, None)
    assert failed.finished_at is not None


def test_interruptions_are_not_failures(registry: Registry, new_job: Callable[..., JobRow]) -> None:
    job = new_job(max_attempts=1)
    for attempt in range(3):
        registry.claim_job(job.id, f"owner-{attempt}")
        registry.release_job(job.id, f"owner-{attempt}", "stopped", count_failure=False)

    after = registry.get_job(job.id)
    assert (after.status, after.attempts, after.failures) == ("queued", 3, 0)


def test_restarting_releases_every_running_job_without_a_failure(
    registry: Registry, new_job: Callable[..., JobRow]
) -> None:
    running, waiting = new_job(), new_job()
    registry.claim_job(running.id, "a")

    assert registry.release_all_running("the service stopped") == [running.id]

    statuses = [registry.get_job(job.id) for job in (running, waiting)]
    assert [(job.status, job.failures) for job in statuses] == [("queued", 0), ("queued", 0)]
    assert statuses[0].error == "the service stopped"


def test_only_the_owner_releases_a_job(registry: Registry, new_job: Callable[..., JobRow]) -> None:
    job = new_job()
    registry.claim_job(job.id, "a")

    assert registry.release_job(job.id, "b", "not mine") == "running"
    assert registry.get_job(job.id).lease_owner == "a"


def test_a_released_job_whose_cancel_was_asked_ends_cancelled(
    registry: Registry, new_job: Callable[..., JobRow]
) -> None:
    job = new_job()
    registry.claim_job(job.id, "a")
    registry.request_cancel(job.id)

    assert registry.release_job(job.id, "a", "RuntimeError: boom") == "cancelled"
    assert registry.get_job(job.id).finished_at is not None


# --- cancelling ---------------------------------------------------------------------------------


def test_a_queued_job_is_cancelled_at_once(
    registry: Registry, new_job: Callable[..., JobRow]
) -> None:
    job = registry.request_cancel(new_job().id)

    assert (job.status, job.cancel_requested) == ("cancelled", True)
    assert registry.claim_next_job("a") is None


def test_a_running_job_learns_of_its_cancel_at_its_next_heartbeat(
    registry: Registry, new_job: Callable[..., JobRow]
) -> None:
    job = new_job()
    registry.claim_job(job.id, "a")
    assert registry.heartbeat(job.id, "a").cancel_requested is False

    cancelled = registry.request_cancel(job.id)

    assert (cancelled.status, cancelled.cancel_requested) == ("running", True)
    assert registry.heartbeat(job.id, "a").cancel_requested is True


def test_an_ended_job_cannot_be_cancelled(
    registry: Registry, new_job: Callable[..., JobRow]
) -> None:
    job = new_job()
    registry.claim_job(job.id, "a")
    registry.finish_job(job.id, "a", JobStatus.FAILED, "DataError")

    with pytest.raises(ConflictError, match=rf"^job {job.id} already ended \(failed\); nothing"):
        registry.request_cancel(job.id)


def test_an_unknown_job_is_not_found(registry: Registry) -> None:
    with pytest.raises(NotFoundError, match="^job 'nope' does not exist$"):
        registry.get_job("nope")
    with pytest.raises(NotFoundError, match="^job 'nope' does not exist$"):
        registry.request_cancel("nope")


# --- versions -----------------------------------------------------------------------------------


def test_a_job_publishes_its_version_and_succeeds(
    registry: Registry, new_job: Callable[..., JobRow]
) -> None:
    job = new_job()
    registry.claim_job(job.id, "a")

    row = registry.publish_version("hello", a_version(), job_id=job.id, owner="a")

    after = registry.get_job(job.id)
    assert (row.version, row.job_id) == (1, job.id)
    assert (after.status, after.version, after.lease_owner, after.error) == (
        "succeeded",
        1,
        None,
        None,
    )


def test_publishing_twice_for_one_job_returns_the_same_version(
    registry: Registry, new_job: Callable[..., JobRow]
) -> None:
    job = new_job()
    registry.claim_job(job.id, "a")
    first = registry.publish_version("hello", a_version(), job_id=job.id, owner="a")

    again = registry.publish_version("hello", a_version(), job_id=job.id, owner="a")

    assert (again.version, again.directory) == (first.version, first.directory)
    assert [v.version for v in registry.get_model("hello").versions] == [1]


def test_versions_are_numbered_per_model(registry: Registry) -> None:
    numbers = [registry.publish_version(name, a_version()).version for name in "aab"]

    assert numbers == [1, 2, 1]
    assert registry.get_version("a").version == 2  # the latest when none is named
    assert registry.get_version("a", 1).version == 1


def test_racing_publishers_of_a_new_model_number_its_versions_in_turn(
    url: str, registry: Registry
) -> None:
    outcomes = race(url, 16, lambda racer: racer.publish_version("hello", a_version()).version)

    assert sorted(outcomes) == list(range(1, 17))  # (sorting an exception would fail)
    assert [v.version for v in registry.get_model("hello").versions] == list(range(1, 17))


def test_a_model_deleted_while_versions_are_published_loses_track_of_no_directory(
    url: str, registry: Registry
) -> None:
    first = registry.publish_version("hello", a_version()).directory
    roles = iter(["delete", *["publish"] * 15])

    def act(racer: Registry) -> list[str] | str:
        if next(roles) == "delete":
            return racer.delete_model("hello")
        return racer.publish_version("hello", a_version()).directory

    outcomes = race(url, 16, act)

    assert [o for o in outcomes if isinstance(o, Exception)] == []
    [deleted] = [o for o in outcomes if isinstance(o, list)]
    published = {first, *(o for o in outcomes if isinstance(o, str))}
    # each directory is either returned for removal or still named by a version
    assert published == set(deleted) | registry.known_directories("hello")
    assert set(deleted).isdisjoint(registry.known_directories("hello"))


def test_a_nan_is_never_stored(registry: Registry, new_job: Callable[..., JobRow]) -> None:
    job = new_job()
    registry.claim_job(job.id, "a")

    # (SQLite's driver wraps the serializer's ValueError; PostgreSQL's does not)
    nan = "Out of range float values are not JSON compliant"
    with pytest.raises((StatementError, ValueError), match=nan):
        registry.record_epoch(job.id, "a", 1, {**METRICS, "epoch": 1, "loss": float("nan")})

    assert history(registry, job.id) == []


def test_a_model_left_without_versions(registry: Registry) -> None:
    registry.publish_version("hello", a_version())
    registry.delete_version("hello", 1)

    with pytest.raises(NotFoundError, match="^model 'hello' has no versions yet$"):
        registry.get_version("hello")


def test_nothing_of_a_model_is_deleted_while_a_job_trains_it(
    registry: Registry, new_job: Callable[..., JobRow]
) -> None:
    registry.publish_version("hello", a_version())
    job = new_job("hello")
    message = f"^model 'hello' is being trained by job {job.id}; cancel the job or wait"

    with pytest.raises(ConflictError, match=message):
        registry.delete_model("hello")
    with pytest.raises(ConflictError, match=message):
        registry.delete_version("hello", 1)
    assert registry.get_version("hello", 1).version == 1


def test_deleting_a_model_returns_the_directories_to_remove(registry: Registry) -> None:
    directories = [registry.publish_version("hello", a_version()).directory for _ in range(2)]

    assert registry.delete_model("hello") == directories
    with pytest.raises(NotFoundError, match="^model 'hello' does not exist$"):
        registry.get_model("hello")


def test_a_postgresql_database_created_as_sql_ascii_serves_as_a_registry(
    new_postgres_database: Callable[..., Any],
) -> None:
    # Debian's initdb in a container with no locale makes SQL_ASCII databases; psycopg
    # hands such a database's text back as bytes unless the client asks for UTF-8
    ascii_only = "ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    with new_postgres_database(options=ascii_only) as url:
        registry = Registry.connect(url)
        try:
            registry.publish_version("héllo", a_version())
            assert registry.get_version("héllo").version == 1
        finally:
            registry.close()
