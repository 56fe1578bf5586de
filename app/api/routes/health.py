"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.auth import ReadAccess
from app.api.deps import ServicesDep
from app.api.errors import AUTH_RESPONSES, error_responses
from app.schemas import Health

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process answers (on the event loop itself: a thread hop would measure the pool)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(services: ServicesDep) -> Health | JSONResponse:
    """Registry reachable, store writable, job runner alive; 503 otherwise."""
    checks: dict[str, str] = {}
    try:
        services.registry.ping()
        checks["registry"] = "ok"
    except Exception as exc:
        checks["registry"] = f"unreachable: {type(exc).__name__}"
    problem = services.layout.write_problem()  # a plain def: off the event loop
    checks["store"] = f"not writable: {services.layout.root}: {problem}" if problem else "ok"
    checks["runner"] = "ok" if services.runner.is_alive() else "stopped"
    ready = all(v == "ok" for v in checks.values())
    health = Health(status="ready" if ready else "unavailable", checks=checks)
    if ready:
        return health
    return JSONResponse(health.model_dump(), status_code=503)


@router.get(
    "/metrics",
    response_class=Response,  # not PlainTextResponse: its refusals are JSON, as everywhere
    dependencies=[ReadAccess],
    responses={
        200: {
            "description": "The Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **AUTH_RESPONSES,
        **error_responses(503),
    },
)
def metrics(services: ServicesDep) -> Response:
    """Prometheus metrics: requests and latency by route, predictions, batches, jobs, models."""
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
