"""Without an API key, only this machine's own clients and pages may drive the server.

With no key the server cannot tell a user's client from a web page the user happens to open, which can
send cross-site POSTs and WebSockets to ``localhost`` (cross-site request forgery) or reach it through a
hostname it controls (DNS rebinding).  So, when no key is set:

* bound to loopback, the ``Host`` header must name loopback (``localhost``, ``*.localhost``, a loopback
  address): a rebinding page's requests carry its own hostname;
* WebSocket handshakes and requests that change something (any method but GET/HEAD/OPTIONS, and
  ``/start`` / ``/stop``) are refused when they come from a page elsewhere: an ``Origin`` that is not this
  server's, not on this machine (a loopback host, e.g. a web app of the user's own on another port) and not
  one of ``--cors-origins``, or no ``Origin`` but ``Sec-Fetch-Site: cross-site``.

Clients that are not browsers send neither header and pass.  With a key, the key decides (a page cannot
know it).  Refusals are 403 in the error envelope (a WebSocket handshake gets the HTTP 403 itself).
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from hearline.config import Settings
from hearline.server.errors import APIError, error_response

logger = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
STATE_CHANGING_GETS = frozenset({"/start", "/stop"})  # seed 000's captions control answers GET too


def is_loopback_name(host: str) -> bool:
    """``localhost``, a ``.localhost`` name or a loopback address (port and IPv6 brackets stripped)."""
    name = _hostname(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _hostname(host: str) -> str:
    return (urlsplit("//" + host).hostname or "").rstrip(".").lower()


def refusal(scope: Scope, settings: Settings) -> str | None:
    """Why this request or handshake is refused (None: it passes)."""
    if settings.api_key:
        return None
    headers = Headers(scope=scope)
    host = headers.get("host")
    if host and is_loopback_name(settings.host) and not is_loopback_name(host):
        return f"the Host {host[:100]!r} is not this machine: the server listens on loopback only"
    changing = (
        scope["type"] == "websocket"
        or scope.get("method", "GET") not in SAFE_METHODS
        or scope.get("path") in STATE_CHANGING_GETS
    )
    if not changing:
        return None
    origin = headers.get("origin")
    if origin is None:
        if headers.get("sec-fetch-site") == "cross-site":
            return "a cross-site request from a web page"
        return None
    allowed = list(settings.cors_origins or [])
    if "*" in allowed or origin in allowed:
        return None
    page = urlsplit(origin)
    if page.scheme in ("http", "https") and (
        (host is not None and page.netloc.lower() == host.lower()) or is_loopback_name(page.netloc)
    ):
        return None  # this server's own page, or a page served from this machine
    return f"a request from the web page origin {origin[:100]!r}, which is not this server's"


class OriginGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or "app" not in scope:
            await self.app(scope, receive, send)
            return
        reason = refusal(scope, scope["app"].state.settings)
        if reason is None:
            await self.app(scope, receive, send)
            return
        logger.warning("refused %s %s: %s", scope["type"], scope.get("path"), reason)
        message = f"refused {reason}; without --api-key only this machine's clients and pages may use the server"
        response = error_response(APIError(403, message, code="forbidden_origin"))
        if scope["type"] == "http":
            await response(scope, receive, send)
            return
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 403, "headers": response.raw_headers})
            await send({"type": "websocket.http.response.body", "body": response.body})
        else:
            await send({"type": "websocket.close", "code": 1008})
