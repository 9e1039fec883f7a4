"""Every HTTP error in OpenAI's envelope, plus the HTTP-only API-key check.

The official SDKs map the status code to an exception class and read ``body["error"]``, so every
failure path (our own checks, FastAPI validation, Starlette's 404/405, engine errors) must come out
as ``{"error": {"message", "type", "param", "code"}}`` with the right status.  WebSocket protocols
answer in their own shapes and do their own auth; this module only touches ``http`` scopes.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from hearline.audio.decode import AudioDecodeError, AudioTooLong
from hearline.engines.base import EngineError, ModelFilesMissing, UnsupportedOption
from hearline.languages import UnknownLanguage
from hearline.models.download import ModelUnavailable
from hearline.models.pool import ServerBusy
from hearline.models.resolve import UnknownModel
from hearline.server.auth import is_authorized

logger = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"

_TYPES = {
    400: INVALID_REQUEST,
    401: INVALID_REQUEST,
    403: INVALID_REQUEST,
    404: INVALID_REQUEST,
    405: INVALID_REQUEST,
    409: INVALID_REQUEST,
    413: INVALID_REQUEST,
    422: INVALID_REQUEST,
    429: "rate_limit_error",
}


class APIError(Exception):
    """Raised by REST endpoints for any client-visible failure; rendered by :func:`install_error_handlers`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "server_error")
        self.headers = headers


class UploadTooLarge(APIError):
    def __init__(self, limit_bytes: int) -> None:
        super().__init__(
            413,
            f"the uploaded file is larger than the server's limit of {limit_bytes / (1024 * 1024):g} MB",
            param="file",
            code="file_too_large",
        )


def envelope(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(
        envelope(exc.message, exc.type, exc.param, exc.code), status_code=exc.status, headers=exc.headers
    )


def to_api_error(exc: Exception) -> APIError:
    """Map a domain exception to the status and code a client can act on."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, UnknownModel):
        return APIError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, ModelUnavailable):  # known model, download failed: the server's problem, maybe transient
        return APIError(503, str(exc), type="server_error", param="model", code="model_unavailable")
    if isinstance(exc, ModelFilesMissing):
        return APIError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, AudioTooLong):
        return APIError(
            400, f"{exc}; send a shorter file (see --max-audio-minutes)", param="file", code="audio_too_long"
        )
    if isinstance(exc, AudioDecodeError):
        return APIError(400, f"could not decode the audio file: {exc}", param="file", code="invalid_audio")
    if isinstance(exc, UnsupportedOption):
        return APIError(400, str(exc), code="unsupported_option")
    if isinstance(exc, UnknownLanguage):
        return APIError(400, str(exc), param="language", code="unsupported_language")
    if isinstance(exc, ServerBusy):
        retry = max(1, math.ceil(exc.retry_after))
        return APIError(429, str(exc), code="server_busy", headers={"Retry-After": str(retry)})
    if isinstance(exc, EngineError):
        return APIError(500, f"the engine failed: {exc}", type="server_error", code="engine_error")
    return APIError(500, "internal server error", type="server_error")


async def _domain_handler(request: Request, exc: Exception) -> JSONResponse:
    api_error = to_api_error(exc)
    if api_error.status == 503:  # an operational condition with its own explanation: no traceback
        logger.warning("%s %s -> 503: %s", request.method, request.url.path, api_error.message)
    elif api_error.status >= 500:
        logger.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
    else:
        logger.info("%s %s -> %d: %s", request.method, request.url.path, api_error.status, api_error.message)
    return error_response(api_error)


async def _http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # registered for that class only
    status = exc.status_code
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if status == 404 and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path}"
    code = "not_found" if status == 404 else None
    return error_response(APIError(status, message, code=code, headers=getattr(exc, "headers", None)))


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # registered for that class only
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    message = first.get("msg", "invalid request")
    if param:
        message = f"{param}: {message}"
    return error_response(APIError(400, message, param=param, code="invalid_value"))


#: nginx's "client closed request": what the access log and the metrics show for work a client abandoned
CLIENT_CLOSED_STATUS = 499


async def _disconnect_handler(request: Request, exc: Exception) -> JSONResponse:
    # Nobody is listening any more (the upload broke off, or the client left and its work was stopped);
    # answer something so the ASGI cycle ends cleanly.
    logger.info("client disconnected during %s %s; its work was stopped", request.method, request.url.path)
    return error_response(APIError(CLIENT_CLOSED_STATUS, "client disconnected", code="client_disconnected"))


#: the exceptions :func:`to_api_error` maps to a specific status (doors with their own error shape catch these)
DOMAIN_ERRORS = (APIError, UnknownModel, ModelFilesMissing, AudioDecodeError, UnknownLanguage, ServerBusy, EngineError)


def install_error_handlers(app: FastAPI) -> None:
    """Register the envelope handlers and the API-key middleware.

    Call this before adding CORS middleware so CORS stays outermost: preflights are answered
    without a key and 401s still carry CORS headers.
    """
    for exc_class in DOMAIN_ERRORS:
        app.add_exception_handler(exc_class, _domain_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(ClientDisconnect, _disconnect_handler)
    app.add_exception_handler(Exception, _domain_handler)  # last resort: a 500 still in the envelope
    app.add_middleware(ApiKeyMiddleware)


#: how much of a rejected request's body is read and discarded before answering; answering with
#: unread bytes in the socket makes the kernel reset the connection and the client never sees the error
AUTH_DRAIN_BYTES = 8 * 1024 * 1024


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body, or :class:`UploadTooLarge` as soon as it passes ``limit`` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise UploadTooLarge(limit)
    return bytes(body)


async def drain_body(receive: Receive, limit: int) -> None:
    """Read and discard up to ``limit`` more request-body bytes (stop early at the end or a disconnect)."""
    seen = 0
    while seen <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


#: paths reachable without a key: the health and readiness probes and the browser pages (which then pass
#: ``token``); /metrics is not public: it needs the key when one is set (scrapers can send a bearer token)
PUBLIC_PATHS = frozenset({"/health", "/ready", "/", "/captions", "/captions/", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)


def is_public(method: str, path: str) -> bool:
    if method == "OPTIONS":
        return True  # CORS preflights never carry credentials
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class ApiKeyMiddleware:
    """Reject HTTP requests without the configured key (401 in the envelope); WebSockets pass through.

    Reads the key from ``app.state.settings`` on every request, so tests and the CLI configure it in
    one place.  WebSocket adapters call :func:`hearline.server.auth.is_authorized` themselves because
    each protocol reports auth failures in its own way.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = scope["app"].state.settings
        conn = HTTPConnection(scope)
        if (
            settings.api_key
            and not is_public(scope["method"], scope["path"])
            and not is_authorized(conn, settings.api_key)
        ):
            response = error_response(
                APIError(
                    401,
                    "missing or invalid API key; send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            )
            await drain_body(receive, AUTH_DRAIN_BYTES)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
