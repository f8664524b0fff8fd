"""``create_app``: the FastAPI application, wired from a ``Config``."""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from salience import __version__
from salience.api import admin, compliance, memory, openai, people, safety, traces
from salience.api.body import BodySizeLimit
from salience.api.errors import install_error_handlers
from salience.services import Services
from salience.settings import Config
from salience.worker_process import ExtractionProcess

log = logging.getLogger("salience")


def create_app(
    config: Config,
    services: Services | None = None,
    run_worker: bool = True,
    extraction_process: ExtractionProcess | None = None,
) -> FastAPI:
    """The app; its background loops run with it when ``run_worker``. Extraction runs in
    ``extraction_process`` when given (what ``salience serve`` does by default), else inline."""
    services = services or Services.build(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await services.start(run_worker=run_worker, extraction_process=extraction_process)
        warm = getattr(services.embedder, "load", None)
        if warm is not None:
            await asyncio.to_thread(warm)
        # What is alive now (libraries, models, settings) lives as long as the process: out of the
        # garbage collector's full collections, which walk every object and held every reply
        # meanwhile (see MemoryCache._build).
        gc.freeze()
        for tenant in config.tenants.values():
            if not tenant.api_keys:
                log.warning("tenant %s has no API key configured: its requests will be refused", tenant.id)
            if tenant.upstream.resolved_transport == "echo":
                log.warning("tenant %s has no upstream configured: the built-in echo upstream answers", tenant.id)
        try:
            yield
        finally:
            await services.stop()

    app = FastAPI(title="salience", version=__version__, lifespan=lifespan)
    app.state.services = services
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=config.server.max_request_bytes)
    app.include_router(openai.router)
    app.include_router(memory.router)
    app.include_router(people.router)
    app.include_router(traces.router)
    app.include_router(safety.router)
    app.include_router(compliance.router)
    app.include_router(admin.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
