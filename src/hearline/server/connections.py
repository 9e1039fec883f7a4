"""Limits on connections themselves, before any door sees a request (uvicorn's httptools protocol).

Two holes a request-level limit cannot close:

* **Trickled headers** (slowloris): uvicorn times out idle keep-alive connections but not a request whose
  headers never finish, so a client sending one header line a minute held its connection for good.  Here
  the headers of each request (a WebSocket handshake included) must be complete within
  ``header_timeout_s``; otherwise the server answers 408 and closes.
* **Held connections**: uvicorn's ``limit_concurrency`` answers HTTP requests 503 past the limit but lets
  every WebSocket upgrade through, so hundreds of held sockets (each door's session limit applies only once
  a session starts) were all accepted.  Here one count of open connections (HTTP and WebSocket alike, per
  listener) refuses both with 503 and ``Retry-After`` past ``max_connections``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hearline.server.errors import INVALID_REQUEST, APIError, envelope, error_response

logger = logging.getLogger(__name__)

#: seconds a client refused for too many connections is told to wait
CONNECTIONS_RETRY_S = 5


def _response(error: APIError) -> bytes:
    """``error`` as raw HTTP/1.1 bytes, for answers given before (or instead of) an ASGI request cycle."""
    payload = json.dumps(envelope(error.message, error.type, error.param, error.code)).encode()
    head = [f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}", "Content-Type: application/json"]
    head += [f"Content-Length: {len(payload)}", *(f"{k}: {v}" for k, v in (error.headers or {}).items())]
    return "\r\n".join([*head, "", ""]).encode("ascii") + payload


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and one connection count for HTTP and WebSocket.

    The limits are class attributes, so each listener gets its own subclass from :func:`protocol_class`.
    """

    header_timeout_s: float = 0.0
    max_connections: int = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()  # the first request's headers are due from the moment the connection opens

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # between requests uvicorn's keep-alive timeout applies; the next one's clock starts here

    def on_headers_complete(self) -> None:
        self._disarm()
        upgrading = self.parser.should_upgrade() and self._should_upgrade()
        if upgrading or not self._over_limit():
            super().on_headers_complete()  # an upgrade is decided in handle_websocket_upgrade
            return
        app, self.app = self.app, self._refusal_app  # the request cycle answers 503 instead of the app
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def handle_websocket_upgrade(self) -> None:
        if not self._over_limit():
            super().handle_websocket_upgrade()
            return
        refusal = self._refusal()
        logger.warning("%s: WebSocket refused: %s", _peer(self.client), refusal.message)
        self._count("max_connections")
        self.transport.write(_response(refusal))
        self.transport.close()

    def _over_limit(self) -> bool:
        return bool(self.max_connections) and len(self.connections) > self.max_connections

    def _count(self, reason: str) -> None:
        """In ``hearline_refusals_total`` of the app's pool (every listener shares the main app's state)."""
        pool = getattr(getattr(self.config.app, "state", None), "pool", None)
        if pool is not None and pool.metrics is not None:
            pool.metrics.refused(reason)

    def _arm(self) -> None:
        self._disarm()
        if self.header_timeout_s > 0:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        message = f"the request headers did not arrive within {self.header_timeout_s:g} s (--header-timeout)"
        logger.info("%s: %s", _peer(self.client), message)
        self._count("header_timeout")
        error = APIError(408, message, code="header_timeout", type=INVALID_REQUEST, headers={"Connection": "close"})
        self.transport.write(_response(error))
        self.transport.close()

    def _refusal(self) -> APIError:
        """The one answer past ``max_connections``: raw bytes for an upgrade, a response for HTTP."""
        message = (
            f"the server has its maximum of {self.max_connections} open connections (--max-connections); "
            "retry later or on another replica"
        )
        headers = {"Retry-After": str(CONNECTIONS_RETRY_S), "Connection": "close"}
        return APIError(503, message, code="too_many_connections", headers=headers)

    async def _refusal_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self._refusal()
        logger.warning("%s: %s %s refused: %s", _peer(self.client), scope["method"], scope["path"], refusal.message)
        self._count("max_connections")
        await error_response(refusal)(scope, receive, send)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"


def protocol_class(header_timeout_s: float, max_connections: int) -> type[LimitedHttpProtocol]:
    """The HTTP protocol class (uvicorn's ``http=``) enforcing these limits on one listener."""
    return type(
        "LimitedHttpProtocol",
        (LimitedHttpProtocol,),
        {"header_timeout_s": header_timeout_s, "max_connections": max_connections},
    )
