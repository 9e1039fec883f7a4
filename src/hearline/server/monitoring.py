"""Monitoring endpoints: ``GET /metrics`` (Prometheus text format) and ``GET /ready`` (readiness).

``/health`` (in :mod:`hearline.server.openai_rest`) is liveness; ``/ready`` answers 200 only when the
default model is loaded and the server is not draining (``pool.draining``), so a load balancer
sends traffic elsewhere meanwhile.  ``/ready`` is public like ``/health``; ``/metrics`` needs the API
key when one is set (Prometheus sends it with ``authorization: {credentials: KEY}``).

:class:`RestMetricsMiddleware` counts every HTTP request by route template and status, and the
refusals among them by reason.  The metrics themselves are defined in :mod:`hearline.metrics`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hearline.metrics import Metrics
from hearline.models.pool import ModelPool

logger = logging.getLogger(__name__)

router = APIRouter()

#: HTTP statuses counted as refusals, by reason
REFUSAL_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    403: "unauthorized",
    404: "not_found",
    413: "too_large",
    422: "bad_request",
    429: "busy",
    507: "insufficient_storage",
}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Every metric of this app in the Prometheus text exposition format."""
    app_metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(app_metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """200 ``ready`` when the default model is loaded and the server is not draining, else 503."""
    if request.app.state.pool.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    pool: ModelPool = request.app.state.pool
    try:
        loaded = pool.default_name in pool.loaded()
    except LookupError as exc:  # the configured default model does not exist
        return JSONResponse({"status": "error", "message": str(exc)}, status_code=503)
    if not loaded:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ready"})


class RestMetricsMiddleware:
    """Count HTTP requests by method, route template (``/v1/models/{model}``, not the path) and status.

    Sits outside the API-key middleware so 401s are counted too (under the route they were refused
    for); paths no route matches count as
    ``unmatched`` (a scanner cannot grow the label set).  An exception escaping the app counts as 500.
    """

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.routes = tuple(routes)  # the app's routes, to name a request refused before routing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._count(scope, status[0])

    def _count(self, scope: Scope, status: int) -> None:
        app_metrics: Metrics | None = getattr(scope["app"].state, "metrics", None)
        if app_metrics is None:
            return
        app_metrics.rest_request(scope["method"], self._endpoint(scope), status)
        reason = REFUSAL_REASONS.get(status)
        if reason is not None:
            app_metrics.refused(reason)

    def _endpoint(self, scope: Scope) -> str:
        """The route template that answered, or would have answered a request refused before routing (401)."""
        route = scope.get("route")
        if route is None:
            route = next((r for r in self.routes if r.matches(scope)[0] is not Match.NONE), None)
        return getattr(route, "path", None) or "unmatched"
