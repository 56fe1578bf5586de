"""Dependencies: the service container, and lookups that answer 404 for the handlers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.api.job_events import JobEvents
from app.api.limits import ConcurrencyLimit, RateLimiter
from app.api.observability import Metrics
from app.jobs.runner import JobRunner
from app.serving.cache import ModelCache
from app.serving.evaluation import Evaluator
from app.serving.service import Serving
from app.settings import Settings
from app.store.layout import StoreLayout
from app.store.registry import Registry


@dataclass
class Services:
    """Everything a request may need, built once at start-up (see ``app.main``)."""

    settings: Settings
    registry: Registry
    layout: StoreLayout
    runner: JobRunner
    cache: ModelCache
    serving: Serving
    metrics: Metrics
    limiter: RateLimiter
    imports: ConcurrencyLimit
    evaluator: Evaluator
    evaluations: ConcurrencyLimit
    dataset_uploads: ConcurrencyLimit
    events: JobEvents


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    # async: a plain def would cost every request a hop through the thread pool
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]


def known_job(job_id: str, services: ServicesDep) -> str:
    """The id of a job that exists, found by its few state columns (not its data)."""
    services.registry.job_state(job_id)
    return job_id


KnownJobDep = Annotated[str, Depends(known_job)]
