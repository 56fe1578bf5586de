"""POST /train: queue a training job."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status

from app.api.auth import AdminAccess
from app.api.bodies import JsonBody, documented
from app.api.deps import ServicesDep, services_of
from app.api.errors import AUTH_RESPONSES, error_responses
from app.api.job_views import read_job
from app.jobs.submit import HYPERPARAMETER_LIMITS, submit_job
from app.schemas import JobPublic, TrainRequest

router = APIRouter(
    tags=["training"],
    dependencies=[AdminAccess],
    responses={**AUTH_RESPONSES, **error_responses(400, 429, 503)},
)


def training_limits(request: Request) -> dict[str, Any]:
    """The largest hyperparameters this service trains: the text defaults stay within
    them, as the schema's defaults do (a field left out is never refused)."""
    settings = services_of(request).settings
    limits = {name: getattr(settings, setting) for name, setting in HYPERPARAMETER_LIMITS.items()}
    return {"hyperparameter_limits": limits}


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
    request: Annotated[TrainRequest, Depends(JsonBody(TrainRequest, training_limits))],
    services: ServicesDep,
    response: Response,
) -> JobPublic:
    """Queue a training job; follow it at /jobs/{id} or /jobs/{id}/events."""
    job = submit_job(request, services.settings, services.registry, services.runner)
    response.headers["Location"] = f"/jobs/{job.id}"
    return read_job(services.registry, job.id)
