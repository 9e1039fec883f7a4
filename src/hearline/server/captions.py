"""Seed 000's "AI Hear" captions protocol: ``/start``, ``/stop``, ``/events`` (SSE), plus ``/v1/languages``.

``GET|POST /start`` takes ``source`` (``system`` | ``microphone``, default ``system``), ``device`` (optional
source name from ``hearline devices``), ``model`` (catalog name or absolute path; default: the server's
default model), ``lang_from`` (``auto`` or a table code), ``lang_to`` (``n/a`` or a table code), as query
parameters, form fields or a JSON body.  ``/start`` while running restarts with the new settings; a
request that fails validation leaves the running capture alone.

Both ``/start`` and ``/stop`` answer ``{"code", "message", "data"}``; ``data`` is the capture's settings
``{"running", "source", "device", "model", "lang_from", "lang_to", "translator", "started_at"}``.

======  ======  ==================================================================================
code    HTTP    meaning
======  ======  ==================================================================================
0       200     success (``/stop`` when nothing runs is also 0, message ``not running``)
40001   400     unknown ``source``
40002   400     unknown language code in ``lang_from`` / ``lang_to``
40003   400     the model cannot do that (e.g. ``lang_from=de`` with an English-only model)
40004   400     a body that is not a JSON object or a form (malformed, nested too deep, over 64 KiB)
40101   401     missing/wrong API key (when the server has one)
40401   404     unknown model name or path
40901   409     a ``/stop`` arrived while this ``/start`` was still loading the model or opening the device
50301   503     no audio device: no sound server reachable, or ``device`` does not exist
50302   503     the model exists but could not be loaded (files missing, load failure)
50303   503     ``/events`` only: ``HEARLINE_CAPTIONS_MAX_SUBSCRIBERS`` streams are open already (``Retry-After``)
======  ======  ==================================================================================

``GET /events`` streams ``open`` (once, with the current settings and subscriber count), ``captions``,
``translate``, ``error``, ``ping`` (every ``ping_interval_s`` without other traffic) and ``close`` (server
shutting down, or this subscriber was dropped for being too slow).  ``captions``/``translate``/``error``
carry SSE ids; reconnecting with ``Last-Event-ID`` (header, or ``last_event_id`` query parameter) replays
the bounded backlog after that id.  Payloads are described in ``hearline.server.captions_sse``.

Serve this on the seed's port with ``hearline serve --captions-port 35123`` (``standalone_app``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from hearline import languages
from hearline.live.captions_events import CaptionsStatus, Refusal, StartRefused, StartRequest
from hearline.live.translate import translation_targets
from hearline.server.auth import is_authorized
from hearline.server.captions_sse import Message, SSECaptionService
from hearline.server.errors import UploadTooLarge, read_body
from hearline.server.origin_guard import OriginGuardMiddleware
from hearline.server.timeouts import TimeoutsMiddleware

logger = logging.getLogger(__name__)

router = APIRouter()

START_FIELDS = ("source", "device", "model", "lang_from", "lang_to")

# The documented answer codes (table above): code and HTTP status of each refusal.
OK = 0
BAD_BODY = 40004
TOO_MANY_SUBSCRIBERS = 50303
SUBSCRIBER_RETRY_S = 5
MAX_BODY_BYTES = 64 * 1024  # /start takes five short fields
UNAUTHORIZED = 40101
REFUSALS: dict[Refusal, tuple[int, int]] = {
    Refusal.BAD_SOURCE: (40001, 400),
    Refusal.UNKNOWN_LANGUAGE: (40002, 400),
    Refusal.UNSUPPORTED: (40003, 400),
    Refusal.UNKNOWN_MODEL: (40401, 404),
    Refusal.NO_AUDIO_DEVICE: (50301, 503),
    Refusal.MODEL_UNAVAILABLE: (50302, 503),
    Refusal.STOPPED: (40901, 409),
}


def get_service(state: Any) -> SSECaptionService:
    """The process's captions service on ``app.state`` (created on first use; stopped at shutdown)."""
    service: SSECaptionService | None = getattr(state, "captions", None)
    if service is None:
        service = SSECaptionService(state.settings, state.pool)
        state.captions = service
        hooks = getattr(state, "shutdown_hooks", None)
        if hooks is not None:
            hooks.append(service.shutdown)
    return service


def status_data(status: CaptionsStatus | None) -> dict[str, Any]:
    """The ``data`` of an answer (and of ``open``): the capture's settings."""
    if status is None:
        return {"running": False}
    return {
        "running": status.running,
        "source": status.source,
        "device": status.device,
        "model": status.model,
        "lang_from": status.lang_from,
        "lang_to": status.lang_to,
        "translator": status.translator,
        "started_at": status.started_at,
    }


def _answer(code: int, message: str, data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "data": data}, status_code=status)


def _unauthorized() -> JSONResponse:
    return _answer(UNAUTHORIZED, "invalid or missing API key", None, 401)


def _service(request: Request) -> SSECaptionService:
    return get_service(request.app.state)


class BadBody(ValueError):
    """A /start body that cannot be read as its parameters."""


async def _body(request: Request) -> bytes:
    try:
        return await read_body(request, MAX_BODY_BYTES)
    except UploadTooLarge as exc:
        raise BadBody(f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB") from exc


async def _params(request: Request) -> dict[str, str]:
    """Query parameters, overridden by a form or JSON body on POST."""
    params = {k: v for k, v in request.query_params.items() if k in START_FIELDS}
    if request.method != "POST":
        return params
    ctype = request.headers.get("content-type", "")
    if "multipart/form-data" in ctype:
        try:
            form = await request.form(max_files=0, max_fields=64)
        except (MultiPartException, HTTPException) as exc:
            raise BadBody(f"the request body is not a valid form: {getattr(exc, 'message', None) or exc}") from exc
        params.update({k: v for k, v in form.items() if k in START_FIELDS and isinstance(v, str)})
        return params
    raw = await _body(request)
    if "application/json" in ctype:
        try:
            body = json.loads(raw) if raw.strip() else {}
        except RecursionError as exc:  # "[[[[..."
            raise BadBody("the request body is not valid JSON: nested too deep") from exc
        except ValueError as exc:  # JSONDecodeError, bad UTF-8
            raise BadBody(f"the request body is not valid JSON: {str(exc)[:200]}") from exc
        if not isinstance(body, dict):
            raise BadBody("the request body must be a JSON object of parameters")
        params.update({k: str(v) for k, v in body.items() if k in START_FIELDS and v is not None})
    elif "x-www-form-urlencoded" in ctype:
        try:
            fields = urllib.parse.parse_qsl(raw.decode(), strict_parsing=bool(raw), max_num_fields=64)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadBody(f"the request body is not a valid form: {exc}") from exc
        params.update({k: v for k, v in fields if k in START_FIELDS})
    elif raw.strip():
        raise BadBody(f"unsupported body type {ctype or 'none'!r}; send JSON, a form, or query parameters")
    return params


@router.api_route("/start", methods=["GET", "POST"])
async def start(request: Request) -> JSONResponse:
    if not is_authorized(request, request.app.state.settings.api_key):
        return _unauthorized()
    try:
        params = await _params(request)
    except BadBody as exc:
        logger.info("captions /start refused (%d): %s", BAD_BODY, exc)
        return _answer(BAD_BODY, str(exc), status_data(_service(request).status()), 400)
    start_request = StartRequest(
        source=params.get("source") or "system",
        model=params.get("model") or None,
        lang_from=params.get("lang_from") or languages.AUTO,
        lang_to=params.get("lang_to") or languages.NONE,
        device=params.get("device") or None,
    )
    try:
        message, status = await _service(request).start(start_request)
    except StartRefused as exc:
        code, http_status = REFUSALS[exc.reason]
        logger.info("captions /start refused (%d): %s", code, exc.message)
        return _answer(code, exc.message, status_data(_service(request).status()), http_status)
    return _answer(OK, message, status_data(status))


@router.api_route("/stop", methods=["GET", "POST"])
async def stop(request: Request) -> JSONResponse:
    if not is_authorized(request, request.app.state.settings.api_key):
        return _unauthorized()
    message, status = await _service(request).stop()
    return _answer(OK, message, status_data(status))


@router.get("/v1/languages")
async def list_languages(request: Request, model: str | None = None) -> JSONResponse:
    """The language table for the model in use (``?model=``, else the default): ``lang_from`` where that model
    recognizes the language, ``lang_to`` where the configured translator can produce it."""
    pool = request.app.state.pool
    engine = await pool.get(model)  # unknown or unavailable models answer in the REST error envelope
    caps = engine.capabilities
    targets = translation_targets(request.app.state.settings, caps.translate)
    rows = []
    for lang in languages.table():
        row: dict[str, Any] = lang.as_dict()
        if lang.code == languages.AUTO:
            usage = ["lang_from"]  # a one-language model simply uses its language
        elif lang.code == languages.NONE:
            usage = ["lang_to"]
        else:
            usage, iso = [], languages.engine_code(lang.code)
            if caps.languages is None or iso in caps.languages:
                usage.append("lang_from")
            if targets is None or iso in targets:
                usage.append("lang_to")
        if usage:
            row["usage"] = usage
            rows.append(row)
    return JSONResponse({"object": "list", "model": engine.name, "data": rows})


def _last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if raw is None:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        return None


@router.get("/events")
async def events(request: Request) -> Any:
    if not is_authorized(request, request.app.state.settings.api_key):
        return _unauthorized()
    service = _service(request)
    settings = request.app.state.settings
    if service.hub.subscribers >= settings.captions_max_subscribers:
        limit = settings.captions_max_subscribers
        logger.info("captions /events refused: %d subscribers already", limit)
        answer = _answer(TOO_MANY_SUBSCRIBERS, f"{limit} subscribers are connected, the most this server takes; "
                         "retry later", None, 503)  # fmt: skip
        answer.headers["Retry-After"] = str(SUBSCRIBER_RETRY_S)
        return answer
    ping_s = max(0.05, float(settings.ping_interval_s))
    sub, replay = service.hub.subscribe(_last_event_id(request))
    opened = Message(
        None,
        "open",
        {"message": "connected", "subscribers": service.hub.subscribers, "last_id": service.hub.last_id,
         "data": status_data(service.status())},
    )  # fmt: skip

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 2000\n\n" + opened.encode()
            for message in replay:
                yield message.encode()
            while True:
                try:
                    message = await asyncio.wait_for(sub.queue.get(), timeout=ping_s)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield Message(None, "ping", {"time": time.time()}).encode()
                    continue
                yield message.encode()
                if message.event == "close" and message.id is None:  # shutdown; /stop's close keeps the stream
                    return
                if sub.dropped and sub.queue.empty():
                    yield Message(None, "close", {"message": "dropped: too slow"}).encode()
                    return
        finally:
            service.hub.unsubscribe(sub)
            logger.debug("captions subscriber left (%d remain)", service.hub.subscribers)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"},
    )


def standalone_app(main_app: FastAPI) -> FastAPI:
    """These routes alone (``--captions-port 35123``), sharing ``main_app.state`` (settings, pool, service).

    Serve it on the same event loop as the main app: the captions service and its queues are asyncio
    objects.  The main app's lifespan owns shutdown (its hooks stop the capture).
    """
    app = FastAPI(title="Hearline captions", docs_url=None, redoc_url=None, openapi_url=None)
    app.state = main_app.state
    settings = main_app.state.settings
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    app.add_middleware(OriginGuardMiddleware)
    app.add_middleware(TimeoutsMiddleware)
    app.include_router(router)
    return app
