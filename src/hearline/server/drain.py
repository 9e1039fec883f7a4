"""Graceful drain on SIGTERM: finish what clients already sent, then stop.

A load balancer or Kubernetes stops a replica with SIGTERM.  Stopping at once would cut every live
session before the final of its open utterance.  The first signal instead turns ``/ready`` to 503,
refuses new live sessions, and flushes every open one (its utterance is closed as if the client had
stopped, so each door sends the finals of all audio it received), then closes every WebSocket with
1001 (going away: reconnect elsewhere) rather than uvicorn's 1012 at shutdown; uvicorn's own shutdown
lets REST requests in flight finish.  ``--drain-timeout`` bounds it; a second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Iterable
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

FORWARD_WAIT_S = 0.05  # how often the drain looks whether the doors have sent the flushed finals
GOING_AWAY = 1001


class OpenSocket:
    """An accepted WebSocket the server may close itself (drain, a session's maximum length)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.closed = False

    async def close(self, code: int = GOING_AWAY, reason: str = "server shutting down") -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(RuntimeError, OSError):  # the client left meanwhile
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


#: the WebSocket the current task serves (set by :class:`OpenSocketsMiddleware`; None outside one)
current_socket: contextvars.ContextVar[OpenSocket | None] = contextvars.ContextVar("current_socket", default=None)


async def flush_and_forward(sessions: Iterable[Any]) -> None:
    """Close each session's open utterance and wait until its door has read (and sent) every event."""
    sessions = list(sessions)
    await asyncio.gather(*(session.flush() for session in sessions), return_exceptions=True)
    while any(s.events_waiting for s in sessions):
        await asyncio.sleep(FORWARD_WAIT_S)
    await asyncio.sleep(FORWARD_WAIT_S)  # the last send leaves the socket


def open_sockets(state: Any) -> set[OpenSocket]:
    """The accepted WebSockets of every listener sharing ``state`` (the main app's)."""
    sockets: set[OpenSocket] | None = getattr(state, "open_sockets", None)
    if sockets is None:
        sockets = state.open_sockets = set()
    return sockets


class OpenSocketsMiddleware:
    """Keeps each accepted WebSocket in :func:`open_sockets` until it closes, for the drain to close."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or "app" not in scope:
            await self.app(scope, receive, send)
            return
        sockets = open_sockets(scope["app"].state)
        entry = OpenSocket(send)
        current_socket.set(entry)  # this task's context: the door's code (and its session) sees it

        async def tracked(message: Message) -> None:
            if entry.closed:
                return  # the drain closed it: the door's late sends have no socket to go to
            if message["type"] == "websocket.accept":
                sockets.add(entry)
            elif message["type"] == "websocket.close":
                entry.closed = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            sockets.discard(entry)


async def drain(app: Any, timeout: float) -> None:
    """Refuse new sessions and flush the open ones, within ``timeout`` seconds."""
    pool = app.state.pool
    pool.draining = True
    sessions = list(pool.live_sessions)
    logger.info("draining: %d live session(s) get the finals of what they sent", len(sessions))
    try:
        async with asyncio.timeout(timeout):
            await flush_and_forward(sessions)
    except TimeoutError:
        logger.warning("drain: not every session finished within %.0f s", timeout)
    sockets = list(open_sockets(app.state))
    await asyncio.gather(*(socket.close() for socket in sockets))
    logger.info("drain: %d WebSocket(s) closed with %d (going away)", len(sockets), GOING_AWAY)


class DrainingServer(uvicorn.Server):
    """The main uvicorn server: the first SIGTERM/SIGINT drains before shutting down, a second one exits."""

    def __init__(self, config: uvicorn.Config, drain_timeout: float) -> None:
        super().__init__(config)
        self.drain_timeout = drain_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or self._drain is not None or self.should_exit:
            self.force_exit = True  # a second signal (or one before serving): no more waiting
            super().handle_exit(sig, frame)
            return
        self._captured_signals.append(sig)
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain = asyncio.create_task(self._drain_then_exit(), name="hearline-drain")

    async def _drain_then_exit(self) -> None:
        try:
            await drain(self.config.app, self.drain_timeout)
        except Exception:  # a failed drain must still let the server stop
            logger.exception("drain failed; shutting down")
        finally:
            self.should_exit = True
