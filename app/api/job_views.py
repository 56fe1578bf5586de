"""Reading jobs for the API: summaries without history unless asked, epochs a page at a time.

A job's history grows by one row an epoch, without bound, and the data it was submitted
with may be megabytes; every read here costs what it returns: a summary reads neither
(only the hyperparameters out of the data, and when a running job's last six epochs were
recorded, for its ETA).
"""

from __future__ import annotations

from app.schemas import EpochPage, JobList, JobPublic, epoch_public, job_public
from app.store.registry import JobSummary, RecentEpoch, Registry
from app.store.tables import JobStatus


def recent_epochs(registry: Registry, jobs: list[JobSummary]) -> dict[str, list[RecentEpoch]]:
    running = [job.row.id for job in jobs if job.row.status == JobStatus.RUNNING]
    return registry.recent_epochs_of(running)


def public(job: JobSummary, history: bool, recent: dict[str, list[RecentEpoch]]) -> JobPublic:
    row = job.row
    epochs = row.history if history else None
    return job_public(row, job.hyperparameters, epochs, recent.get(row.id))


def read_job(registry: Registry, job_id: str, *, history: bool = False) -> JobPublic:
    job = registry.job_summary(job_id, history=history)
    return public(job, history, recent_epochs(registry, [job]))


def read_jobs(
    registry: Registry,
    *,
    status: JobStatus | None,
    model_name: str | None,
    limit: int,
    offset: int,
    history: bool = False,
) -> JobList:
    jobs, total = registry.list_jobs(
        status=status, model_name=model_name, limit=limit, offset=offset, history=history
    )
    recent = recent_epochs(registry, jobs)
    items = [public(job, history, recent) for job in jobs]
    return JobList(items=items, total=total, limit=limit, offset=offset)


def read_epochs(registry: Registry, job_id: str, *, after: int, limit: int) -> EpochPage:
    rows = registry.job_epochs(job_id, after=after, limit=limit)
    return EpochPage(
        items=[epoch_public(row) for row in rows],
        after=after,
        limit=limit,
        next_after=rows[-1].epoch if len(rows) == limit else None,
    )
