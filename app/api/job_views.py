"""Reading jobs for the API: summaries without history unless asked, epochs a page at a time.

A job's history grows by one row an epoch, without bound; every read here costs what
it returns: the summary reads the durations of a running job's last five epochs (its
ETA), not the whole history.
"""

from __future__ import annotations

from app.schemas import EpochPage, JobList, JobPublic, epoch_public, job_public
from app.store.registry import Registry
from app.store.tables import JobRow, JobStatus


def recent_seconds(registry: Registry, jobs: list[JobRow]) -> dict[str, list[float]]:
    running = [job.id for job in jobs if job.status == JobStatus.RUNNING]
    return registry.recent_epoch_seconds_of(running)


def read_job(registry: Registry, job_id: str, *, history: bool = False) -> JobPublic:
    job = registry.get_job(job_id, history=history)
    seconds = recent_seconds(registry, [job]).get(job.id)
    return job_public(job, job.history if history else None, seconds)


def read_jobs(
    registry: Registry,
    *,
    status: JobStatus | None,
    model_name: str | None,
    limit: int,
    offset: int,
    history: bool = False,
) -> JobList:
    rows, total = registry.list_jobs(
        status=status, model_name=model_name, limit=limit, offset=offset, history=history
    )
    seconds = recent_seconds(registry, rows)
    items = [job_public(r, r.history if history else None, seconds.get(r.id)) for r in rows]
    return JobList(items=items, total=total, limit=limit, offset=offset)


def read_epochs(registry: Registry, job_id: str, *, after: int, limit: int) -> EpochPage:
    rows = registry.job_epochs(job_id, after=after, limit=limit)
    return EpochPage(
        items=[epoch_public(row) for row in rows],
        after=after,
        limit=limit,
        next_after=rows[-1].epoch if len(rows) == limit else None,
    )
