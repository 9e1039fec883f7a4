"""Time limits on what a client sends, for every door on every listener (an ASGI middleware).

A live WebSocket from which no message arrived for ``live_idle_timeout_s`` (while the door waited for
one) is closed with 1008 and a reason saying so: an idle socket would otherwise keep a started session
and its buffers for good.  A request body that stops arriving for ``upload_timeout_s`` between two
chunks is answered 408 in the error envelope, so uploads trickled at a byte a second do not hold a
connection and a spooled file open.  WebSocket pings are answered below ASGI and do not count as
messages: a client that keeps a session must send something (audio, or its protocol's keep-alive).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hearline.server.errors import APIError, error_response

logger = logging.getLogger(__name__)

IDLE_CLOSE_CODE = 1008  # policy violation: a limit of this server; the reason names it


class TimeoutsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = scope["app"].state.settings if "app" in scope else None
        if scope["type"] == "websocket" and settings is not None and settings.live_idle_timeout_s > 0:
            idle = _IdleWebSocket(receive, send, settings.live_idle_timeout_s, scope.get("path", ""))
            await self.app(scope, idle.receive, send)
        elif scope["type"] == "http" and settings is not None and settings.upload_timeout_s > 0:
            body = _TimedBody(scope, receive, send, settings.upload_timeout_s)
            await self.app(scope, body.receive, body.send)
        else:
            await self.app(scope, receive, send)


class _IdleWebSocket:
    def __init__(self, receive: Receive, send: Send, timeout: float, path: str) -> None:
        self._receive, self._send, self._timeout, self._path = receive, send, timeout, path
        self._accepted = False
        self._closed = False

    async def receive(self) -> Message:
        if self._closed:
            return {"type": "websocket.disconnect", "code": IDLE_CLOSE_CODE}
        if not self._accepted:  # the handshake's "websocket.connect" is not a client message to time
            message = await self._receive()
            self._accepted = message["type"] == "websocket.connect"
            return message
        try:
            return await asyncio.wait_for(self._receive(), self._timeout)
        except TimeoutError:
            self._closed = True
        reason = f"no message for {self._timeout:g} s (the server's --live-idle-timeout)"
        logger.info("closing an idle WebSocket on %s: %s", self._path, reason)
        try:
            await self._send({"type": "websocket.close", "code": IDLE_CLOSE_CODE, "reason": reason})
        except (RuntimeError, OSError) as exc:  # the client went away meanwhile
            logger.debug("idle close not sent: %s", exc)
        return {"type": "websocket.disconnect", "code": IDLE_CLOSE_CODE}


class _TimedBody:
    def __init__(self, scope: Scope, receive: Receive, send: Send, timeout: float) -> None:
        self._scope, self._receive, self._send, self._timeout = scope, receive, send, timeout
        self._started = False  # the app began its response
        self._answered = False  # this middleware answered 408 in the app's place
        self._complete = False  # the whole body arrived: later receives wait for a disconnect (SSE), untimed

    async def receive(self) -> Message:
        if self._answered:
            return {"type": "http.disconnect"}
        if self._complete:
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), self._timeout)
        except TimeoutError:
            pass
        else:
            self._complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message
        logger.info(
            "%s %s: the request body stalled for %g s", self._scope["method"], self._scope["path"], self._timeout
        )
        if not self._started:
            self._answered = True
            error = APIError(
                408,
                f"the request body stopped arriving for {self._timeout:g} s (the server's --upload-timeout)",
                code="upload_timeout",
                headers={"Connection": "close"},
            )
            await error_response(error)(self._scope, self._receive, self._send)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self._answered:
            return  # the 408 went out; whatever the app says after its body vanished is dropped
        self._started = True
        await self._send(message)
