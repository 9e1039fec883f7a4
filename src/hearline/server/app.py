"""The application factory: one pool, one settings object, every protocol's router.

Nothing is created at import time; ``create_app`` builds everything so tests and extra listeners
(``--stt-port``, ``--vosk-port``, ``--captions-port``) can share one model pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from hearline import __version__
from hearline.config import Settings
from hearline.metrics import Metrics
from hearline.models.pool import ModelPool
from hearline.server import (
    asr_ws,
    captions,
    deepgram,
    models_api,
    monitoring,
    openai_rest,
    realtime_ws,
    stt_ws,
    vosk_ws,
    web,
)
from hearline.server.drain import OpenSocketsMiddleware
from hearline.server.errors import install_error_handlers
from hearline.server.monitoring import RestMetricsMiddleware
from hearline.server.origin_guard import OriginGuardMiddleware
from hearline.server.timeouts import TimeoutsMiddleware

logger = logging.getLogger(__name__)

PROTOCOL_ROUTERS = (openai_rest, models_api, asr_ws, stt_ws, realtime_ws, vosk_ws, deepgram, captions, web, monitoring)


def create_app(settings: Settings | None = None, pool: ModelPool | None = None, preload: bool = True) -> FastAPI:
    settings = settings or Settings()
    owns_pool = pool is None
    pool = pool or ModelPool(settings)
    if pool.metrics is None:  # a pool shared by several apps keeps the first one's metrics
        pool.metrics = Metrics()  # its own CollectorRegistry, never the process-wide default
    metrics = pool.metrics
    metrics.watch_work(pool.work_by_model)
    metrics.watch_batches(pool.batches_by_model)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_preload(pool)) if preload else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for hook in app.state.shutdown_hooks:
                await hook()
            if owns_pool:
                await pool.close()

    app = FastAPI(title="Hearline", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.pool = pool
    app.state.shutdown_hooks = []
    app.state.metrics = metrics  # GET /metrics renders metrics.registry
    install_error_handlers(app)  # also the HTTP API-key middleware; must stay inside CORS
    routes = [route for module in PROTOCOL_ROUTERS for route in module.router.routes]
    app.add_middleware(RestMetricsMiddleware, routes=routes)  # outside the key check: 401s are counted too
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            # "*" means any page may read responses: never with the user's credentials as well
            allow_credentials="*" not in settings.cors_origins,
        )
    app.add_middleware(OpenSocketsMiddleware)  # a drain closes them with 1001 after their finals
    app.add_middleware(OriginGuardMiddleware)  # outside CORS: a preflight passes, a foreign request does not
    app.add_middleware(TimeoutsMiddleware)
    app.add_middleware(CollapseSlashesMiddleware)  # outermost; seed 004 clients open ws://host:7100//asr
    for module in PROTOCOL_ROUTERS:
        app.include_router(module.router)
    return app


class CollapseSlashesMiddleware:
    """Treat ``//asr`` as ``/asr``: clients that join a base URL ending in ``/`` with ``/asr`` exist."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and "//" in scope.get("path", ""):
            scope = dict(scope)
            scope["path"] = re.sub("/{2,}", "/", scope["path"])
            if isinstance(scope.get("raw_path"), bytes):
                scope["raw_path"] = re.sub(b"/{2,}", b"/", scope["raw_path"])
        await self.app(scope, receive, send)


async def _preload(pool: ModelPool) -> None:
    """Load the default model in the background; /health answers "loading" until it is ready."""
    try:
        engine = await pool.get(None)
    except Exception:
        logger.exception("could not load the default model; requests naming another model still work")
        return
    if engine.kind == "pocketsphinx":
        logger.info("default model: bundled PocketSphinx (English); no other model is configured")
    else:
        logger.info("default model: %s (%s)", engine.name, engine.kind)
