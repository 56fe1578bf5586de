"""POST /train: queue a training job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from app.api.auth import AdminAccess
from app.api.bodies import JsonBody, documented
from app.api.deps import ServicesDep
from app.api.errors import AUTH_RESPONSES, error_responses
from app.api.job_views import read_job
from app.jobs.submit import submit_job
from app.schemas import JobPublic, TrainRequest

router = APIRouter(
    tags=["training"],
    dependencies=[AdminAccess],
    responses={**AUTH_RESPONSES, **error_responses(400, 429, 503)},
)


@router.post(
    "/train",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    openapi_extra=documented(TrainRequest),
    responses={
        202: {
            "description": "The job, queued",
            "headers": {"Location": {"description": "/jobs/{id}", "schema": {"type": "string"}}},
        }
    },
)
def train(
    request: Annotated[TrainRequest, Depends(JsonBody(TrainRequest))],
    services: ServicesDep,
    response: Response,
) -> JobPublic:
    """Queue a training job; follow it at /jobs/{id} or /jobs/{id}/events."""
    job = submit_job(request, services.settings, services.registry, services.runner)
    response.headers["Location"] = f"/jobs/{job.id}"
    return read_job(services.registry, job.id)
