"""The registry: models, versions, jobs and their per-epoch history.

Every state change is one short transaction guarded by the state it expects
(``UPDATE ... WHERE status = 'queued'``), so the API, worker processes and several
API replicas can share one database without ever running a job twice or
publishing two versions for one job. Where a write depends on a count (the queue's
length, a model's latest version), the transaction first takes a lock that every
writer of that count takes: SQLite's write lock, taken as the transaction begins,
or on PostgreSQL an advisory lock (the queue) or the model's row (its versions).
Workers identify themselves with a lease owner token; a worker whose lease was
taken away can no longer write.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Select, event, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer, selectinload, sessionmaker

from app.errors import ConflictError, LeaseLostError, NotFoundError, QueueFullError
from app.store.db import make_engine, make_sessions, upgrade_schema
from app.store.tables import (
    ACTIVE_STATUSES,
    DatasetRow,
    EpochRow,
    JobRow,
    JobStatus,
    ModelRow,
    VersionRow,
    utcnow,
)

# PostgreSQL advisory lock held while a job is queued ("charnn" in hex, then 1)
QUEUE_LOCK = 0x636861726E6E0001


@dataclass(frozen=True)
class RecentEpoch:
    """An epoch as an ETA needs it: its attempt, when it was recorded, its training time."""

    attempt: int
    recorded_at: datetime
    seconds: float


@dataclass(frozen=True)
class NewVersion:
    """What the registry records about a checkpoint that is already on disk and verified."""

    directory: str
    task: str
    config: dict[str, Any]
    hyperparameters: dict[str, Any]
    vocab: dict[str, Any]
    metrics: dict[str, Any] | None
    epochs: int
    parameters: int
    size_bytes: int
    sha256: str
    best_epoch: int | None = None
    stop_reason: str | None = None
    validation: dict[str, Any] | None = None  # the best epoch's validation scores


@dataclass(frozen=True)
class StoredVersion:
    """Where a version's files are and what its weights hash to (``charnn store check``)."""

    model_name: str
    version: int
    directory: str
    sha256: str


@dataclass(frozen=True)
class JobControl:
    """What a running worker learns at each heartbeat."""

    cancel_requested: bool


@dataclass(frozen=True)
class JobState:
    """The few columns of a job whose change a follower hears about (``Registry.job_state``)."""

    status: JobStatus
    epoch: int
    attempts: int
    failures: int
    cancel_requested: bool
    progress: dict[str, Any] | None = None  # the latest step progress within an epoch


@dataclass(frozen=True)
class JobSummary:
    """A job's row without the data it was submitted with (megabytes, for a text job;
    reading ``row.request`` raises), and the hyperparameters taken from that data."""

    row: JobRow
    hyperparameters: dict[str, Any]


def _summaries(history: bool) -> Select[tuple[JobRow, Any]]:
    """Jobs without their data, with the hyperparameters out of it (a JSON path in SQL)."""
    options: list[Any] = [defer(JobRow.request, raiseload=True)]
    if history:
        options.append(selectinload(JobRow.history))
    return select(JobRow, JobRow.request["hyperparameters"]).options(*options)


class StatementCounter:
    """SQL statements an engine has sent: what reading the registry costs (``/metrics``)."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("BEGIN"):  # SQLite's transactions, begun by hand (db.py)
            return
        with self._lock:
            self.count += 1


class Registry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements = StatementCounter(engine)
        self._sessions: sessionmaker[Session] = make_sessions(engine)
        self._writes: sessionmaker[Session] = make_sessions(engine, writes=True)

    @classmethod
    def connect(cls, url: str, *, migrate: bool = True) -> Registry:
        engine = make_engine(url)
        if migrate:
            upgrade_schema(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with self._writes.begin() as session:
            yield session

    @staticmethod
    def _on_postgresql(session: Session) -> bool:
        return session.get_bind().dialect.name == "postgresql"

    # --- jobs: submitting and reading ----------------------------------------------------

    def create_job(
        self,
        job_id: str,
        model_name: str,
        request: dict[str, Any],
        device: str,
        epochs: int,
        max_attempts: int,
        *,
        max_queued: int | None = None,
        estimated_seconds: float | None = None,
        dataset_id: str | None = None,
    ) -> JobRow:
        """Queue a job; QueueFullError if ``max_queued`` jobs are waiting already."""
        job = JobRow(
            id=job_id,
            model_name=model_name,
            status=JobStatus.QUEUED,
            request=request,
            device=device,
            epochs=epochs,
            estimated_seconds=estimated_seconds,
            max_attempts=max_attempts,
            dataset_id=dataset_id,
        )
        with self._transaction() as session:
            if max_queued is not None:
                self._check_queue(session, max_queued)
            if dataset_id is not None and session.get(DatasetRow, dataset_id) is None:
                raise NotFoundError(f"dataset {dataset_id} not found (deleted meanwhile?)")
            session.add(job)
        return job

    def _check_queue(self, session: Session, max_queued: int) -> None:
        """Refuse a job beyond ``max_queued``, counting under a lock every submitter takes."""
        if self._on_postgresql(session):  # (SQLite's write lock is held already)
            session.execute(select(func.pg_advisory_xact_lock(QUEUE_LOCK)))
        waiting = self._count_jobs(session, frozenset({JobStatus.QUEUED}))
        if waiting >= max_queued:
            raise QueueFullError(waiting, max_queued)

    def get_job(self, job_id: str) -> JobRow:
        """A job with the data it was submitted with (a worker's read), without its history."""
        with self._sessions() as session:
            job = session.get(JobRow, job_id)
            if job is None:
                raise NotFoundError(f"job {job_id!r} does not exist")
            return job

    def job_summary(self, job_id: str, *, history: bool = False) -> JobSummary:
        """A job as the API shows it: never its data, its history only when asked for."""
        query = _summaries(history).where(JobRow.id == job_id)
        with self._sessions() as session:
            found = session.execute(query).one_or_none()
            if found is None:
                raise NotFoundError(f"job {job_id!r} does not exist")
            return JobSummary(*found)

    def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        model_name: str | None = None,
        limit: int = 50,
        offset: int = 0,
        history: bool = False,
    ) -> tuple[list[JobSummary], int]:
        """A page of jobs, newest first, and how many match; summaries as ``job_summary``."""
        where = []
        if status is not None:
            where.append(JobRow.status == status)
        if model_name is not None:
            where.append(JobRow.model_name == model_name)
        query = (
            _summaries(history)
            .where(*where)
            .order_by(JobRow.created_at.desc(), JobRow.id)
            .limit(limit)
            .offset(offset)
        )
        with self._sessions() as session:
            total = session.scalar(select(func.count()).select_from(JobRow).where(*where)) or 0
            return [JobSummary(*found) for found in session.execute(query)], total

    def job_state(self, job_id: str) -> JobState:
        """Six small columns of a job: what a follower polls (never its data or history)."""
        query = select(
            JobRow.status,
            JobRow.epoch,
            JobRow.attempts,
            JobRow.failures,
            JobRow.cancel_requested,
            JobRow.progress,
        ).where(JobRow.id == job_id)
        with self._sessions() as session:
            row = session.execute(query).one_or_none()
        if row is None:
            raise NotFoundError(f"job {job_id!r} does not exist")
        status, epoch, attempts, failures, cancel_requested, progress = row
        return JobState(JobStatus(status), epoch, attempts, failures, cancel_requested, progress)

    def job_epochs(
        self, job_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[EpochRow]:
        """A job's epochs numbered above ``after``, in order, at most ``limit`` of them."""
        query = (
            select(EpochRow)
            .where(EpochRow.job_id == job_id, EpochRow.epoch > after)
            .order_by(EpochRow.epoch)
            .limit(limit)
        )
        with self._sessions() as session:
            return list(session.scalars(query).all())

    def recent_epochs_of(
        self, job_ids: Collection[str], last: int = 6
    ) -> dict[str, list[RecentEpoch]]:
        """The last ``last`` epochs of each job, newest first (for ETAs), in one query."""
        if not job_ids:
            return {}
        rank = (
            func.row_number()
            .over(partition_by=EpochRow.job_id, order_by=EpochRow.epoch.desc())
            .label("rank")
        )
        ranked = (
            select(EpochRow.job_id, EpochRow.attempt, EpochRow.created_at, EpochRow.metrics, rank)
            .where(EpochRow.job_id.in_(list(job_ids)))
            .subquery()
        )
        query = (
            select(ranked.c.job_id, ranked.c.attempt, ranked.c.created_at, ranked.c.metrics)
            .where(ranked.c.rank <= last)
            .order_by(ranked.c.job_id, ranked.c.rank)
        )
        found: dict[str, list[RecentEpoch]] = {job_id: [] for job_id in job_ids}
        with self._sessions() as session:
            for job_id, attempt, recorded_at, metrics in session.execute(query):
                found[job_id].append(RecentEpoch(attempt, recorded_at, float(metrics["seconds"])))
        return found

    def jobs_by_status(self) -> dict[str, int]:
        with self._sessions() as session:
            rows = session.execute(select(JobRow.status, func.count()).group_by(JobRow.status))
            counts = {status.value: 0 for status in JobStatus}
            counts.update({str(status): int(count) for status, count in rows})
            return counts

    def last_epoch_id(self) -> int:
        """The highest row id of the epochs table (0 when empty)."""
        with self._sessions() as session:
            return session.scalar(select(func.max(EpochRow.id))) or 0

    def epoch_seconds_by_id(
        self, after: int, also: Collection[int] = (), limit: int = 10_000
    ) -> list[tuple[int, float]]:
        """``(row id, seconds)`` of the epochs with ids above ``after`` or in ``also``, by id."""
        wanted = EpochRow.id > after
        if also:
            wanted = or_(wanted, EpochRow.id.in_(list(also)))
        query = select(EpochRow.id, EpochRow.metrics).where(wanted).order_by(EpochRow.id)
        with self._sessions() as session:
            rows = session.execute(query.limit(limit)).all()
            return [(row_id, float(metrics["seconds"])) for row_id, metrics in rows]

    def count_jobs(self, statuses: frozenset[JobStatus]) -> int:
        with self._sessions() as session:
            return self._count_jobs(session, statuses)

    @staticmethod
    def _count_jobs(session: Session, statuses: frozenset[JobStatus]) -> int:
        query = select(func.count()).where(JobRow.status.in_(statuses))
        return session.scalar(query.select_from(JobRow)) or 0

    # --- jobs: running them ----------------------------------------------------------------

    def claim_next_job(self, owner: str) -> JobRow | None:
        """Move the oldest queued job to running under ``owner``; None if none waits."""
        with self._sessions() as session:
            candidates = session.scalars(
                select(JobRow.id)
                .where(JobRow.status == JobStatus.QUEUED)
                .order_by(JobRow.created_at, JobRow.id)
                .limit(8)
            ).all()
        for job_id in candidates:
            job = self.claim_job(job_id, owner)
            if job is not None:
                return job
        return None

    def claim_job(self, job_id: str, owner: str) -> JobRow | None:
        """Take a queued job; None if someone else took it first or it is not queued."""
        now = utcnow()
        with self._transaction() as session:
            result = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == JobStatus.QUEUED)
                .values(
                    status=JobStatus.RUNNING,
                    lease_owner=owner,
                    heartbeat_at=now,
                    attempts=JobRow.attempts + 1,
                    queue_ref=None,
                    started_at=func.coalesce(JobRow.started_at, now),
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            claimed = cast(CursorResult[Any], result).rowcount
        return self.get_job(job_id) if claimed else None

    def queued_jobs(self, limit: int = 1000) -> list[JobRow]:
        """Queued jobs, oldest first (the dispatcher hands them to the task queue)."""
        with self._sessions() as session:
            return list(
                session.scalars(
                    select(JobRow)
                    .where(JobRow.status == JobStatus.QUEUED)
                    .order_by(JobRow.created_at, JobRow.id)
                    .limit(limit)
                ).all()
            )

    def set_queue_ref(self, job_id: str, queue_ref: str) -> None:
        with self._transaction() as session:
            session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == JobStatus.QUEUED)
                .values(queue_ref=queue_ref)
                .execution_options(synchronize_session=False)
            )

    def _owned(self, session: Session, job_id: str, owner: str) -> JobRow:
        job = session.get(JobRow, job_id)
        if job is None or job.status != JobStatus.RUNNING or job.lease_owner != owner:
            raise LeaseLostError(f"job {job_id} is no longer leased to {owner}")
        return job

    def heartbeat(self, job_id: str, owner: str) -> JobControl:
        with self._transaction() as session:
            job = self._owned(session, job_id, owner)
            job.heartbeat_at = utcnow()
            return JobControl(cancel_requested=job.cancel_requested)

    def record_epoch(self, job_id: str, owner: str, attempt: int, metrics: dict[str, Any]) -> None:
        """Store one epoch's metrics (replacing a row left by an attempt that died)."""
        epoch = int(metrics["epoch"])
        with self._transaction() as session:
            job = self._owned(session, job_id, owner)
            existing = session.scalar(
                select(EpochRow).where(EpochRow.job_id == job_id, EpochRow.epoch == epoch)
            )
            if existing is not None:
                session.delete(existing)
                session.flush()
            session.add(EpochRow(job_id=job_id, epoch=epoch, attempt=attempt, metrics=metrics))
            job.epoch = epoch
            job.progress = None  # the epoch it told of is over
            job.heartbeat_at = utcnow()

    def record_progress(self, job_id: str, owner: str, progress: dict[str, Any]) -> None:
        """Store where the job stands within its epoch (its checkpoint is already written)."""
        with self._transaction() as session:
            job = self._owned(session, job_id, owner)
            job.progress = progress
            job.heartbeat_at = utcnow()

    def finish_job(
        self, job_id: str, owner: str, status: JobStatus, error: str | None = None
    ) -> None:
        with self._transaction() as session:
            job = self._owned(session, job_id, owner)
            job.status = status
            job.error = error
            job.lease_owner = None
            job.finished_at = utcnow()

    def release_job(
        self, job_id: str, owner: str | None, reason: str, *, count_failure: bool = True
    ) -> JobStatus:
        """An attempt ended without finishing: queue it again, or fail it if out of tries.

        ``owner=None`` releases whoever holds the lease (the holder is known dead).
        ``count_failure=False`` when the job was only interrupted (the service stopped),
        not at fault. A job whose cancellation was asked for ends cancelled instead.
        """
        with self._transaction() as session:
            job = session.get(JobRow, job_id)
            if job is None or job.status != JobStatus.RUNNING:
                return JobStatus(job.status) if job else JobStatus.FAILED
            if owner is not None and job.lease_owner != owner:
                return JobStatus(job.status)
            if count_failure:
                job.failures += 1
            if job.cancel_requested:
                job.status = JobStatus.CANCELLED
            elif job.failures >= job.max_attempts:
                job.status = JobStatus.FAILED
                job.error = f"{reason} (gave up after {job.failures} failed attempts)"
            else:
                job.status = JobStatus.QUEUED
                job.error = reason
            job.lease_owner = None
            if JobStatus(job.status).is_final:
                job.finished_at = utcnow()
            return JobStatus(job.status)

    def release_stale(self, older_than: timedelta) -> list[str]:
        """Release running jobs whose holder has not sent a heartbeat for ``older_than``."""
        cutoff: datetime = utcnow() - older_than
        with self._sessions() as session:
            stale = session.scalars(
                select(JobRow.id).where(
                    JobRow.status == JobStatus.RUNNING, JobRow.heartbeat_at < cutoff
                )
            ).all()
        for job_id in stale:
            self.release_job(job_id, None, "the worker running this job stopped responding")
        return list(stale)

    def release_all_running(self, reason: str) -> list[str]:
        """At start-up of the embedded runner: every running job lost its worker."""
        with self._sessions() as session:
            running = session.scalars(
                select(JobRow.id).where(JobRow.status == JobStatus.RUNNING)
            ).all()
        for job_id in running:
            self.release_job(job_id, None, reason, count_failure=False)
        return list(running)

    def request_cancel(self, job_id: str) -> JobRow:
        with self._transaction() as session:
            job = session.get(JobRow, job_id)
            if job is None:
                raise NotFoundError(f"job {job_id!r} does not exist")
            if JobStatus(job.status).is_final:
                raise ConflictError(f"job {job_id} already ended ({job.status}); nothing to cancel")
            if job.status == JobStatus.QUEUED:
                job.status = JobStatus.CANCELLED
                job.finished_at = utcnow()
            job.cancel_requested = True
        return self.get_job(job_id)

    # --- versions --------------------------------------------------------------------------

    def publish_version(
        self, model_name: str, new: NewVersion, *, job_id: str | None = None, owner: str = ""
    ) -> VersionRow:
        """Record a verified checkpoint as the next version of ``model_name``.

        With a job: the job must still be leased to ``owner`` and it ends succeeded in
        the same transaction. Publishing again for the same job returns the version it
        already made, so a retried completion never creates a second one.
        """
        with self._transaction() as session:
            job = None
            if job_id is not None:
                job = session.get(JobRow, job_id)
                if job is not None and job.version is not None:
                    return self._version_row(session, job.model_name, job.version)
                job = self._owned(session, job_id, owner)
            model = self._locked_model(session, model_name)
            latest = session.scalar(
                select(func.max(VersionRow.version)).where(VersionRow.model_id == model.id)
            )
            row = VersionRow(
                model_id=model.id, version=(latest or 0) + 1, job_id=job_id, **new.__dict__
            )
            session.add(row)
            session.flush()
            if job is not None:
                job.version = row.version
                job.status = JobStatus.SUCCEEDED
                job.error = None
                job.lease_owner = None
                job.finished_at = utcnow()
            return row

    def _locked_model(self, session: Session, name: str) -> ModelRow:
        """The model's row, created if it is new, locked until the transaction ends.

        Whoever numbers a model's next version, or deletes the model, holds this lock, so
        two publishers never read the same latest version. ``ON CONFLICT DO NOTHING``: a
        publisher that finds the row being created by another waits for it instead of
        failing; one that finds it deleted meanwhile creates it again.
        """
        insert = postgresql.insert if self._on_postgresql(session) else sqlite.insert
        while True:
            session.execute(insert(ModelRow).values(name=name).on_conflict_do_nothing())
            model = session.scalar(select(ModelRow).where(ModelRow.name == name).with_for_update())
            if model is not None:
                return model

    def _version_row(self, session: Session, model_name: str, version: int) -> VersionRow:
        row = session.scalar(
            select(VersionRow)
            .join(ModelRow)
            .where(ModelRow.name == model_name, VersionRow.version == version)
            .options(selectinload(VersionRow.model))
        )
        if row is None:
            raise NotFoundError(f"model {model_name!r} has no version {version}")
        return row

    def get_version(self, model_name: str, version: int | None = None) -> VersionRow:
        """A version of a model; the latest when ``version`` is None."""
        with self._sessions() as session:
            if version is None:
                model = self._model_row(session, model_name)
                if not model.versions:
                    raise NotFoundError(f"model {model_name!r} has no versions yet")
                row = model.versions[-1]
                row.model = model
                return row
            return self._version_row(session, model_name, version)

    # --- models ------------------------------------------------------------------------------

    def _model_row(self, session: Session, name: str, *, lock: bool = False) -> ModelRow:
        """The model with its versions; ``lock``: no version is published meanwhile."""
        query = select(ModelRow).where(ModelRow.name == name)
        if lock:
            query = query.with_for_update()
        model = session.scalar(query.options(selectinload(ModelRow.versions)))
        if model is None:
            raise NotFoundError(f"model {name!r} does not exist")
        return model

    def get_model(self, name: str) -> ModelRow:
        with self._sessions() as session:
            return self._model_row(session, name)

    def list_models(self) -> list[ModelRow]:
        with self._sessions() as session:
            return list(
                session.scalars(
                    select(ModelRow)
                    .options(selectinload(ModelRow.versions))
                    .order_by(ModelRow.name)
                ).all()
            )

    def _refuse_if_training(self, session: Session, name: str) -> None:
        active = session.scalar(
            select(JobRow.id).where(JobRow.model_name == name, JobRow.status.in_(ACTIVE_STATUSES))
        )
        if active is not None:
            raise ConflictError(
                f"model {name!r} is being trained by job {active}; "
                "cancel the job or wait for it to end"
            )

    def delete_model(self, name: str) -> list[str]:
        """Forget a model and its versions; returns their directories for removal."""
        with self._transaction() as session:
            self._refuse_if_training(session, name)
            model = self._model_row(session, name, lock=True)
            directories = [v.directory for v in model.versions]
            session.delete(model)
            return directories

    def delete_version(self, name: str, version: int) -> str:
        with self._transaction() as session:
            self._refuse_if_training(session, name)
            row = self._version_row(session, name, version)
            session.delete(row)
            return row.directory

    def known_directories(self, name: str) -> set[str]:
        with self._sessions() as session:
            query = select(VersionRow.directory).join(ModelRow).where(ModelRow.name == name)
            return set(session.scalars(query).all())

    # --- the store's inventory (charnn store check) ------------------------------------------

    def stored_versions(self) -> list[StoredVersion]:
        query = (
            select(ModelRow.name, VersionRow.version, VersionRow.directory, VersionRow.sha256)
            .join(ModelRow)
            .order_by(ModelRow.name, VersionRow.version)
        )
        with self._sessions() as session:
            return [StoredVersion(n, v, d, h) for n, v, d, h in session.execute(query)]

    def model_names(self) -> set[str]:
        with self._sessions() as session:
            return set(session.scalars(select(ModelRow.name)).all())

    def job_statuses(self, job_ids: Collection[str]) -> dict[str, JobStatus]:
        """The status of each of ``job_ids`` that the registry knows."""
        ids, found = sorted(job_ids), {}
        with self._sessions() as session:
            for start in range(0, len(ids), 500):  # bounded IN lists
                query = select(JobRow.id, JobRow.status).where(
                    JobRow.id.in_(ids[start : start + 500])
                )
                found.update({i: JobStatus(s) for i, s in session.execute(query)})
        return found

    def forget_version(self, stored: StoredVersion) -> bool:
        """Delete a version's row if it still names the same directory; False if it is gone.

        For repairing the store: unlike ``delete_version`` it does not wait for the
        model's jobs, since a version whose files are lost serves nobody.
        """
        with self._transaction() as session:
            row = session.scalar(
                select(VersionRow)
                .join(ModelRow)
                .where(
                    ModelRow.name == stored.model_name,
                    VersionRow.version == stored.version,
                    VersionRow.directory == stored.directory,
                )
            )
            if row is None:
                return False
            session.delete(row)
            return True

    # --- datasets -------------------------------------------------------------------------

    def add_dataset(self, row: DatasetRow) -> tuple[DatasetRow, bool]:
        """Register a dataset; (the registered row, created). The same id twice: the first."""
        try:
            with self._transaction() as session:
                session.add(row)
            return row, True
        except IntegrityError:  # the same upload, registered by another request in between
            return self.get_dataset(row.id), False

    def find_dataset(self, dataset_id: str) -> DatasetRow | None:
        with self._sessions() as session:
            return session.get(DatasetRow, dataset_id)

    def get_dataset(self, dataset_id: str) -> DatasetRow:
        found = self.find_dataset(dataset_id)
        if found is None:
            raise NotFoundError(f"dataset {dataset_id} not found")
        return found

    def list_datasets(self, *, limit: int = 50, offset: int = 0) -> tuple[list[DatasetRow], int]:
        """A page of datasets, newest first, and how many there are."""
        query = (
            select(DatasetRow)
            .order_by(DatasetRow.created_at.desc(), DatasetRow.id)
            .limit(limit)
            .offset(offset)
        )
        with self._sessions() as session:
            total = session.scalar(select(func.count()).select_from(DatasetRow)) or 0
            return list(session.scalars(query)), total

    def dataset_ids(self) -> set[str]:
        with self._sessions() as session:
            return set(session.scalars(select(DatasetRow.id)).all())

    def dataset_bytes(self) -> int:
        """The uploaded size of every stored dataset together."""
        with self._sessions() as session:
            return int(session.scalar(select(func.sum(DatasetRow.size_bytes))) or 0)

    def delete_dataset(self, dataset_id: str) -> None:
        """Forget a dataset; ConflictError while a queued or running job trains on it."""
        with self._transaction() as session:
            row = session.get(DatasetRow, dataset_id)
            if row is None:
                raise NotFoundError(f"dataset {dataset_id} not found")
            active = session.scalar(
                select(JobRow.id).where(
                    JobRow.dataset_id == dataset_id, JobRow.status.in_(ACTIVE_STATUSES)
                )
            )
            if active is not None:
                raise ConflictError(
                    f"dataset {dataset_id} is used by job {active}; "
                    "cancel the job or wait for it to end"
                )
            session.delete(row)
