"""The FastAPI application: ``uvicorn app.main:app`` or ``create_app(settings)``."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from app import __version__
from app.api.auth import AccessControl, Authorizer
from app.api.deps import Services
from app.api.docs import install_docs
from app.api.errors import ERROR_RESPONSES, install_error_handlers
from app.api.fast_predict import FastPredict
from app.api.guard import RequestGuard, RequestGuardMiddleware
from app.api.job_events import JobEvents
from app.api.limits import BodySizeLimit, CloseUnreadBodies, ConcurrencyLimit, RateLimiter
from app.api.observability import (
    EpochDurations,
    Metrics,
    ObservabilityMiddleware,
    RegistryCollector,
)
from app.api.openapi import install_openapi, operation_id
from app.api.routes import datasets, health, jobs, models, predict, train
from app.api.routes.playground import install_playground
from app.cpus import available_cpus
from app.jobs.runner import make_runner
from app.logs import configure_logging
from app.ml.device import limit_threads, resolve_device
from app.serving.cache import ModelCache
from app.serving.evaluation import Evaluator
from app.serving.service import Serving
from app.settings import Settings, get_settings
from app.startup import wait_for_dependencies
from app.store.check import remove_staging_leftovers
from app.store.layout import StoreLayout
from app.store.registry import Registry

log = logging.getLogger("charnn")


def build_services(settings: Settings, metrics: Metrics) -> Services:
    layout = StoreLayout(settings.store_dir)
    layout.ensure()
    remove_staging_leftovers(layout)  # half-written checkpoints from a crash, long dead
    registry = Registry.connect(settings.registry_url)
    cache = ModelCache(layout, resolve_device(settings.device), settings.model_cache_size)
    return Services(
        settings=settings,
        registry=registry,
        layout=layout,
        runner=make_runner(settings, registry),
        cache=cache,
        serving=Serving(settings, registry, cache, on_batch=metrics.batch_size.observe),
        metrics=metrics,
        limiter=RateLimiter(settings.predict_rate_per_key),
        imports=ConcurrencyLimit(
            settings.max_concurrent_imports, "imports", "CHARNN_MAX_CONCURRENT_IMPORTS"
        ),
        evaluator=Evaluator(settings, registry, cache),
        evaluations=ConcurrencyLimit(
            settings.max_concurrent_evaluations,
            "evaluations",
            "CHARNN_MAX_CONCURRENT_EVALUATIONS",
        ),
        dataset_uploads=ConcurrencyLimit(
            settings.max_concurrent_dataset_uploads,
            "dataset uploads",
            "CHARNN_MAX_CONCURRENT_DATASET_UPLOADS",
        ),
        events=JobEvents(registry, settings.event_poll_seconds, settings.max_event_streams),
    )


class CharnnApp(FastAPI):
    """FastAPI, with ``POST /predict`` served by ``FastPredict`` while the service runs.

    The route stays registered: it documents the endpoint, and it answers every
    request that the fast path hands back to it (all the refusals).
    """

    fast_predict: FastPredict | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_predict
        if (
            fast is not None
            and scope["type"] == "http"
            and scope["path"] == "/predict"
            and scope["method"] == "POST"
        ):
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> CharnnApp:
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: CharnnApp) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.log_format == "json")
        # in containers the database and Redis may start after the API
        wait_for_dependencies(settings, redis=settings.job_backend == "rq")
        limit_threads(available_cpus())  # for inference; training workers set their own
        services = build_services(settings, metrics)
        app.state.services = services
        registry = services.registry
        metrics.registry.register(
            EpochDurations(registry.epoch_seconds_by_id, start_after=registry.last_epoch_id())
        )
        metrics.registry.register(
            RegistryCollector(
                services.registry.jobs_by_status,
                lambda: len(services.cache),
                lambda: services.registry.statements.count,
                lambda: len(services.events.followers),
            )
        )
        services.runner.start()
        release_signals = services.events.close_on_exit_signals()
        app.fast_predict = FastPredict(
            partial(FastAPI.__call__, app),  # the full stack, ending in the /predict route
            services,
            app.state.guard,
            app.state.authorizer,
            app.exception_handlers,
        )
        # everything loaded so far lives as long as the process: keep it out of the
        # collector's way, or each full collection walks torch's objects (tail latency)
        gc.collect()
        gc.freeze()
        log.info("charnn %s ready: store %s", __version__, services.layout.root)
        try:
            yield
        finally:
            services.events.close()
            release_signals()
            app.fast_predict = None
            services.runner.stop()
            services.serving.close()
            services.registry.close()

    app = CharnnApp(
        title="charnn",
        version=__version__,
        summary="Train and serve character-level recurrent networks.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    install_error_handlers(app)
    app.state.authorizer = Authorizer(settings)
    app.state.guard = RequestGuard(settings.host_names)
    # the last added runs first: observe -> guard -> authorize -> limit the body -> route,
    # so nothing reads a body before the Host, the Origin and the key are settled
    app.add_middleware(
        BodySizeLimit,
        max_body_bytes=settings.max_body_bytes,
        max_import_bytes=settings.max_import_bytes + settings.max_import_meta_bytes,
        max_dataset_bytes=settings.max_dataset_bytes,
    )
    routers = [module.router for module in (predict, health, train, jobs, models, datasets)]
    keyed_routes = [route for router in routers for route in router.routes]
    app.add_middleware(AccessControl, routes=keyed_routes, authorizer=app.state.authorizer)
    app.add_middleware(RequestGuardMiddleware, guard=app.state.guard)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
    app.add_middleware(CloseUnreadBodies)  # outermost: it sees every refusal
    # routes are matched in order: predict, the hot path, first; the static mounts last
    for router in routers:
        app.include_router(router, responses=ERROR_RESPONSES)
    install_openapi(app, settings)
    install_docs(app)
    install_playground(app)
    return app


app = create_app()
