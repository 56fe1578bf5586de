"""Jobs: list, read, page through epochs, follow as server-sent events, plot, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse

from app.api.auth import AdminAccess, ReadAccess
from app.api.deps import KnownJobDep, ServicesDep
from app.api.errors import AUTH_RESPONSES, error_responses
from app.api.job_views import read_epochs, read_job, read_jobs
from app.api.plots import job_plot_svg
from app.jobs.spec import ModelName
from app.schemas import EpochPage, JobList, JobPublic, epoch_public
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
        "event": {
            "enum": ["job", "epoch", "progress", "end"],
            "description": "job: the job's summary, first and whenever its status changes; "
            "epoch: one epoch, each sent once; progress: where a running job stands within "
            "its epoch, when that changes (not replayed on reconnecting); end: the job "
            "ended, and so does the stream.",
        },
        "id": {
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "On epoch events: the epoch. A client that reconnects sends the "
            "last one as Last-Event-ID and receives the epochs after it.",
        },
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/JobPublic"},
                    {"$ref": "#/components/schemas/EpochPublic"},
                    {"$ref": "#/components/schemas/StepProgress"},
                ]
            },
        },
    },
}
HistoryQuery = Annotated[
    bool, Query(description="Include every epoch's metrics (GET /jobs/{job_id}/epochs pages them).")
]
LastEventId = Annotated[
    int,
    Header(
        ge=0,
        le=2**31 - 1,
        description="The last epoch the client received: the stream sends the epochs after it.",
    ),
]


HISTORY_PAGE_MAX = 10  # jobs listed with their histories at once: each may be megabytes


@router.get("", response_model=JobList)
def list_jobs(
    services: ServicesDep,
    status: JobStatus | None = None,
    model_name: Annotated[ModelName | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    history: HistoryQuery = False,
) -> JobList:
    """Jobs, newest first, optionally filtered by status and model."""
    if history and limit > HISTORY_PAGE_MAX:
        message = (
            f"at most {HISTORY_PAGE_MAX} jobs a page with history=true (each may hold "
            f"{services.settings.max_epochs} epochs); page one job's history with "
            "GET /jobs/{id}/epochs"
        )
        raise RequestValidationError(
            [{"type": "invalid_request", "loc": ("query", "limit"), "msg": message, "input": limit}]
        )
    return read_jobs(
        services.registry,
        status=status,
        model_name=model_name,
        limit=limit,
        offset=offset,
        history=history,
    )


@router.get("/{job_id}", response_model=JobPublic, responses=NOT_FOUND)
def get_job(job_id: str, services: ServicesDep, history: HistoryQuery = False) -> JobPublic:
    """A job with its progress, timing and result (and its history, if asked)."""
    return read_job(services.registry, job_id, history=history)


@router.get("/{job_id}/epochs", response_model=EpochPage, responses=NOT_FOUND)
def job_epochs(
    job_id: KnownJobDep,
    services: ServicesDep,
    after: Annotated[int, Query(ge=0, le=2**31 - 1, description="Epochs after this one.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EpochPage:
    """A job's per-epoch metrics, a page at a time, in epoch order."""
    return read_epochs(services.registry, job_id, after=after, limit=limit)


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    dependencies=[AdminAccess],
    responses=error_responses(404, 409),
)
def cancel_job(job_id: str, services: ServicesDep) -> JobPublic:
    """Cancel a job: a queued one at once, a running one within one epoch."""
    services.registry.request_cancel(job_id)
    return read_job(services.registry, job_id)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": JOB_EVENT}}},
        **error_responses(404, 429),
    },
)
def job_events(
    job_id: KnownJobDep, services: ServicesDep, last_event_id: LastEventId = 0
) -> StreamingResponse:
    """Server-sent events: the job's summary, each epoch once, its status; ends when it ends."""
    services.events.admit()
    return StreamingResponse(
        services.events.stream(job_id, after=last_event_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/{job_id}/plot.svg",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {"schema": {"type": "string"}}}}, **NOT_FOUND},
)
def job_plot(job_id: str, services: ServicesDep) -> Response:
    """The job's loss and accuracy curves, one point per epoch, as an SVG image."""
    job = services.registry.job_summary(job_id).row
    history = [epoch_public(row) for row in services.registry.job_epochs(job.id)]
    svg = job_plot_svg(history, title=f"{job.model_name}, job {job.id[:8]}")
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-cache"})
