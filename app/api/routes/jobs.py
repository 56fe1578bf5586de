"""Jobs: list, read, follow as server-sent events, plot, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.api.auth import AdminAccess, ReadAccess
from app.api.deps import JobDep, ServicesDep
from app.api.errors import AUTH_RESPONSES, error_responses
from app.api.plots import job_plot_svg
from app.jobs.spec import ModelName
from app.schemas import JobList, JobPublic, job_public
from app.store.registry import Registry
from app.store.tables import JobStatus

router = APIRouter(
    prefix="/jobs",
    tags=["jobs"],
    dependencies=[ReadAccess],
    responses={**AUTH_RESPONSES, **error_responses(503)},
)
NOT_FOUND = error_responses(404)

# one server-sent event (Open API 3.1: the schema of an event stream describes each event)
JOB_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": ["job", "end"], "description": "end: the job ended; the stream too."},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/JobPublic"},
        },
    },
}
EVENT_POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0


@router.get("", response_model=JobList)
def list_jobs(
    services: ServicesDep,
    status: JobStatus | None = None,
    model_name: Annotated[ModelName | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> JobList:
    """Jobs, newest first, optionally filtered by status and model."""
    rows, total = services.registry.list_jobs(
        status=status, model_name=model_name, limit=limit, offset=offset
    )
    return JobList(items=[job_public(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobPublic, responses=NOT_FOUND)
def get_job(job: JobDep) -> JobPublic:
    """A job with its progress, per-epoch history, timing and result."""
    return job_public(job)


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    dependencies=[AdminAccess],
    responses=error_responses(404, 409),
)
def cancel_job(job: JobDep, services: ServicesDep) -> JobPublic:
    """Cancel a job: a queued one at once, a running one within one epoch."""
    return job_public(services.registry.request_cancel(job.id))


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"schema": JOB_EVENT}}}, **NOT_FOUND},
)
def job_events(job: JobDep, services: ServicesDep) -> StreamingResponse:
    """Server-sent events: a ``job`` event whenever the job changes; ends when it ends."""
    return StreamingResponse(
        follow_job(services.registry, job.id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def follow_job(registry: Registry, job_id: str) -> AsyncIterator[str]:
    last_seen = None
    quiet = 0.0
    while True:
        job = await run_in_threadpool(registry.get_job, job_id)
        public = job_public(job)
        seen = (public.status, public.epoch, public.attempts, public.cancel_requested)
        if seen != last_seen:
            last_seen, quiet = seen, 0.0
            yield f"event: job\ndata: {public.model_dump_json()}\n\n"
        elif quiet >= KEEPALIVE_SECONDS:
            quiet = 0.0
            yield ": keep-alive\n\n"
        if public.status.is_final:
            yield f"event: end\ndata: {public.model_dump_json()}\n\n"
            return
        await asyncio.sleep(EVENT_POLL_SECONDS)
        quiet += EVENT_POLL_SECONDS


@router.get(
    "/{job_id}/plot.svg",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {"schema": {"type": "string"}}}}, **NOT_FOUND},
)
def job_plot(job: JobDep) -> Response:
    """The job's loss and accuracy curves, one point per epoch, as an SVG image."""
    svg = job_plot_svg(job_public(job).history, title=f"{job.model_name}, job {job.id[:8]}")
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-cache"})
