"""The FastAPI application: ``uvicorn app.main:app`` or ``create_app(settings)``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.api.deps import Services
from app.api.docs import install_docs
from app.api.errors import install_error_handlers
from app.api.routes import health, jobs, models, predict, train
from app.jobs.runner import make_runner
from app.ml.device import resolve_device
from app.serving.cache import ModelCache
from app.serving.service import Serving
from app.settings import Settings, get_settings
from app.store.layout import StoreLayout
from app.store.registry import Registry

log = logging.getLogger("charnn")


def build_services(settings: Settings) -> Services:
    layout = StoreLayout(settings.store_dir)
    layout.ensure()
    registry = Registry.connect(settings.registry_url)
    cache = ModelCache(layout, resolve_device(settings.device), settings.model_cache_size)
    return Services(
        settings=settings,
        registry=registry,
        layout=layout,
        runner=make_runner(settings, registry),
        cache=cache,
        serving=Serving(settings, registry, cache),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings)
        app.state.services = services
        services.runner.start()
        log.info("charnn %s ready: store %s", __version__, services.layout.root)
        try:
            yield
        finally:
            services.runner.stop()
            await services.serving.close()
            services.registry.close()

    app = FastAPI(
        title="charnn",
        version=__version__,
        summary="Train and serve character-level recurrent networks.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    install_docs(app)
    for module in (train, jobs, models, predict, health):
        app.include_router(module.router)
    return app


app = create_app()
