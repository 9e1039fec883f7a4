"""The streaming-STT WebSocket protocol of seed 003 (PROTOCOLS.md §2), a thin adapter over LiveSession.

Served at ``/stt`` on the main port and, with ``--stt-port 8765``, on every path of its own listener
(:func:`standalone_app`; seed clients connect to ``ws://localhost:8765``).

Wire format::

    server: {"type": "connected", "message": ..., "mode": "streaming"}       on connect
    client: {"command": "start"}  -> {"type": "session_started"}            optional: audio starts one too
    client: binary s16le 16 kHz mono frames of any size
    server: {"type": "partial", "text": ..., "is_final": false, "start": s, "lag": s}   while speaking
    server: {"type": "final", "text": ..., "is_final": true, "start": s, "end": s, "language": ...}
    client: {"command": "stop"}   -> remaining finals, then {"type": "session_ended"}
    (a new "start" or more audio then begins a new session on the same socket)

``start``/``end`` are seconds on the session's audio clock.  Query parameters: ``language`` (ISO or UI
code, ``auto``), ``model``, ``token``.  A wrong token: the socket is accepted, told
``{"type": "error"}`` and closed with 4401.  Invalid JSON, unknown commands, ``start`` during a
session, ``stop`` without one: ``{"type": "error", "message": ...}`` and the socket stays open.
A client that disappears mid-utterance has its session closed (decoder lease, tasks) at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.types import ASGIApp

from hearline import languages
from hearline.audio.raw_stream import RawStream
from hearline.live.session import Error, Final, Lag, LiveSession, Partial
from hearline.server.auth import is_authorized
from hearline.server.live_run import EventSink, LiveRun
from hearline.server.live_socket import (
    START_ERRORS,
    SocketSender,
    any_path_app,
    frame_error,
    open_live_session,
    refuse_handshake,
)

logger = logging.getLogger(__name__)

router = APIRouter()

CONNECTED_MESSAGE = "Connected to the Hearline streaming STT service"
UNAUTHORIZED = 4401
BAD_REQUEST = 4400


class _Connection(EventSink):
    """One socket: at most one LiveSession at a time, one task forwarding its events (to the ``on_*`` methods)."""

    def __init__(self, ws: WebSocket, language: str | None, model: str | None) -> None:
        self.ws = ws
        self.settings = ws.app.state.settings
        self.pool = ws.app.state.pool
        self.language = language
        self.model = model
        self.live: LiveRun | None = None
        self.sender = SocketSender(ws, "stt")
        self.pcm = RawStream("pcm", 2, 1, 16000)  # a sample split across frames is carried
        self._refused = False  # an implicit start failed: ignore audio until an explicit start
        self._lag = 0.0  # the session's last reported lag, sent with each partial

    async def send(self, message: dict[str, Any]) -> None:
        await self.sender.send(message)

    async def error(self, message: str) -> None:
        await self.send({"type": "error", "message": message})

    # -- session lifecycle ------------------------------------------------------------------
    async def start(self) -> bool:
        try:
            session = await open_live_session(self.pool, self.settings, self.model, self.language, door="stt")
        except START_ERRORS as exc:
            await self.error(str(exc))
            return False
        self._lag = 0.0
        self.live = LiveRun(session, self, "stt")
        await self.send({"type": "session_started"})
        return True

    @property
    def session(self) -> LiveSession | None:
        return self.live.session if self.live is not None else None

    async def stop(self) -> None:
        live, self.live = self.live, None
        if live is None:
            return
        self.pcm.finish()  # half a sample cannot be decoded; drop it
        await live.finish()  # every final is sent before session_ended
        await self.send({"type": "session_ended"})

    async def close(self) -> None:
        """The socket is gone: drop the session without flushing."""
        live, self.live = self.live, None
        if live is not None:
            await live.abandon()

    # -- events -> messages ----------------------------------------------------------------
    async def on_lag(self, event: Lag) -> None:
        self._lag = event.seconds

    async def on_partial(self, event: Partial) -> None:
        if event.text:
            await self.send({"type": "partial", "text": event.text, "is_final": False, "start": event.start,
                             "lag": self._lag})  # fmt: skip

    async def on_final(self, event: Final) -> None:
        if event.text:
            await self.send({"type": "final", "text": event.text, "is_final": True, "start": event.start,
                             "end": event.end, "language": event.language})  # fmt: skip

    async def on_error(self, event: Error) -> None:
        await self.error(event.message)

    # -- input ------------------------------------------------------------------------------
    async def on_audio(self, data: bytes) -> None:
        if self.session is None:
            if self._refused:
                return
            if not await self.start():
                self._refused = True
                return
        audio = self.pcm.push(data)
        if audio.size:
            assert self.session is not None
            await self.session.push(audio, 16000)

    async def on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            await self.error('invalid JSON; send {"command": "start"} or {"command": "stop"}')
            return
        command = message.get("command") if isinstance(message, dict) else None
        if command == "start":
            if self.session is not None:
                await self.error('a session is already started; send {"command": "stop"} first')
                return
            self._refused = False
            await self.start()
        elif command == "stop":
            if self.session is None:
                await self.error("no session is in progress")
                return
            await self.stop()
        else:
            await self.error(f'unknown command {command!r}; expected "start" or "stop"')


async def serve_stt(ws: WebSocket) -> None:
    settings = ws.app.state.settings
    if await refuse_handshake(ws, lambda r: {"type": "error", "message": r.message, "code": r.reason}):
        return  # full (--max-sessions) or draining: 503 + Retry-After before accept
    await ws.accept()
    if not is_authorized(ws, settings.api_key):
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await ws.send_text(json.dumps({"type": "error", "message": "unauthorized: missing or wrong API key"}))
            await ws.close(code=UNAUTHORIZED)
        return
    try:
        language = languages.engine_code(ws.query_params.get("language") or settings.language)
    except languages.UnknownLanguage as exc:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await ws.send_text(json.dumps({"type": "error", "message": str(exc)}))
            await ws.close(code=BAD_REQUEST)
        return
    conn = _Connection(ws, language, ws.query_params.get("model") or None)
    try:
        await conn.send({"type": "connected", "message": CONNECTED_MESSAGE, "mode": "streaming"})
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("bytes") is not None:
                if (error := frame_error(len(message["bytes"]))) is not None:
                    await conn.error(error)
                else:
                    await conn.on_audio(message["bytes"])
            elif message.get("text") is not None:
                await conn.on_text(message["text"])
    except (WebSocketDisconnect, RuntimeError, OSError) as exc:
        logger.debug("stt: connection ended: %s", exc)
    finally:
        await conn.close()


@router.websocket("/stt")
async def stt_endpoint(ws: WebSocket) -> None:
    await serve_stt(ws)


def standalone_app(main_app: Any) -> ASGIApp:
    """The same protocol on every path (``--stt-port 8765``), sharing the main app's state (pool, settings)."""
    return any_path_app(main_app, serve_stt)
