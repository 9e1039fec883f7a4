"""What the live doors share: opening a LiveSession with the server's segmentation settings.

Each door only chooses the model, language and prompt; silence and utterance length come from
``Settings`` in one place.  A session whose start fails is closed before the error propagates, so a
refused start holds no model lease; each door answers the error in its own wire shape.

Sessions opened here (and Realtime's, through :class:`CountedSession`) are counted in the pool's
metrics under their door: opened, open now, audio received.

Admission (``--max-sessions`` and the graceful drain) is decided here once, by :func:`admission_error`:

* at the handshake, before ``accept()``: :func:`refuse_handshake` answers HTTP 503 with ``Retry-After`` and
  a small body in the door's error shape (a load balancer retries another replica); Wyoming, which has no
  HTTP, answers its ``error`` event and closes (:func:`admission_refusal` gives it the same decision);
* again at :meth:`CountedSession.start`.  Several doors start their session only after the client's first
  message (``start``, a config, the first audio), so the handshake is a check, not a reservation: a client
  that passed it but finds the limit reached when its session starts (another one started meanwhile) gets
  :class:`SessionLimit`, a :class:`ServerBusy`, answered as the door's normal in-session busy error.
  Starts in flight are counted with the open sessions, so the limit is never exceeded.

Every WebSocket door writes through one :class:`SocketSender`: one message at a time (the forwarder and
the receive loop both answer), and a client that has gone is a ``False`` from ``send``, never an exception
in the middle of forwarding events.  A failed start is one :class:`StartFailure`, which each door maps to its
own code; the open connections of a door are in :func:`connections` (on ``app.state``).  A started session
and its forwarder are a :class:`~hearline.server.live_run.LiveRun`.

Each refusal is counted in ``hearline_refusals_total`` (``max_sessions``, ``draining``, ``busy``), and so is
a session closed for its length (``max_session_length``): ``--max-session-minutes`` after its start, a
WebSocket session gets the finals of what it sent (as in a drain) and is closed with 1008 and a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from hearline.config import Settings
from hearline.engines.base import EngineError, UnsupportedOption
from hearline.live.session import LiveOptions, LiveSession
from hearline.models.pool import ModelPool, ServerBusy, ServerDraining
from hearline.models.resolve import UnknownModel
from hearline.server.drain import OpenSocket, OpenSocketsMiddleware, current_socket, flush_and_forward
from hearline.server.origin_guard import OriginGuardMiddleware
from hearline.server.timeouts import TimeoutsMiddleware

logger = logging.getLogger(__name__)

#: start failures a door reports to its client (unknown model, unsupported option, load failure, busy)
START_ERRORS = (UnknownModel, EngineError, ServerBusy, OSError)
#: HTTP status of a handshake refused for capacity or drain (a load balancer retries another replica)
REFUSAL_STATUS = 503
#: seconds a client refused for ``--max-sessions`` is told to wait (``Retry-After``)
SESSION_LIMIT_RETRY_S = 2.0
#: largest binary audio frame a live door takes (vosk-server's limit too: websockets' default).  At the
#: lowest accepted rate that is two minutes of audio, so one frame's samples stay a few MB whatever its rate.
MAX_AUDIO_FRAME_BYTES = 1 << 20
#: close code of a session that reached ``--max-session-minutes`` (policy: a limit of this server)
SESSION_LIMIT_CLOSE_CODE = 1008


class SocketSender:
    """Sends JSON text frames on one WebSocket, one at a time, and remembers a client that has gone."""

    def __init__(self, ws: WebSocket, door: str) -> None:
        self.ws, self.door = ws, door
        self.gone = False
        self._lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> bool:
        """``True`` once the frame is written; ``False`` (and :attr:`gone`) for a client that has left."""
        async with self._lock:
            if self.gone or self.ws.application_state != WebSocketState.CONNECTED:
                self.gone = True
                return False
            try:
                await self.ws.send_text(json.dumps(message, ensure_ascii=False))
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                logger.debug("%s: client gone while sending: %s", self.door, exc)
                self.gone = True
                return False
            return True


class StartFailure(Enum):
    """Why a live session could not start, in the terms every door's error code is chosen from."""

    UNKNOWN_MODEL = "unknown_model"  # no such model (the client's name)
    UNSUPPORTED = "unsupported"  # the model cannot do what was asked (a language, translation)
    UNAVAILABLE = "unavailable"  # the model exists but cannot be loaded or downloaded now
    BUSY = "busy"  # full (--max-sessions), draining, or the model's queue is full


def start_failure(exc: BaseException) -> StartFailure:
    """The one classification of a :data:`START_ERRORS` exception."""
    if isinstance(exc, UnknownModel):
        return StartFailure.UNKNOWN_MODEL
    if isinstance(exc, UnsupportedOption):
        return StartFailure.UNSUPPORTED
    if isinstance(exc, ServerBusy):
        return StartFailure.BUSY
    return StartFailure.UNAVAILABLE


def connections(state: Any, door: str) -> set[Any]:
    """The open connections of ``door`` in this app (``app.state``): shutdown and leak tests look at them."""
    registry: dict[str, set[Any]] | None = getattr(state, "live_connections", None)
    if registry is None:
        registry = state.live_connections = {}
    return registry.setdefault(door, set())


def frame_error(size: int) -> str | None:
    """The error a door answers (in its shape) for a binary frame of ``size`` bytes, dropping it; None: fine."""
    if size <= MAX_AUDIO_FRAME_BYTES:
        return None
    return (
        f"a binary frame of {size} bytes is over the limit of {MAX_AUDIO_FRAME_BYTES} bytes (1 MiB); "
        "it was dropped: send the audio in smaller chunks"
    )


#: sessions of each pool between the admission check and their start's end (counted against the limit)
_starting: weakref.WeakKeyDictionary[ModelPool, weakref.WeakSet[Any]] = weakref.WeakKeyDictionary()


class SessionLimit(ServerBusy):
    """``--max-sessions`` live sessions are open (of one model: ``--max-sessions-per-model``): a new one goes
    to another replica or waits."""

    def __init__(self, limit: int, model: str | None = None) -> None:
        held = "the server has" if model is None else f"model {model!r} has"
        super().__init__(
            model or "default",
            retry_after=SESSION_LIMIT_RETRY_S,
            message=f"{held} its maximum of {limit} live sessions open; retry later or on another replica",
        )
        self.limit = limit


@dataclass(frozen=True)
class Refusal:
    """Why a new live session is turned away, in the terms every door's answer needs."""

    reason: str  # metrics label and error code: "max_sessions" | "draining"
    message: str
    retry_after: int  # whole seconds, for Retry-After

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


def _open_count(pool: ModelPool) -> int:
    return len(pool.live_sessions) + len(_starting.get(pool, ()))


def admission_error(pool: ModelPool, settings: Settings) -> ServerBusy | None:
    """The one admission decision: the error a new live session is refused with now, or None."""
    if pool.draining:
        return ServerDraining("default")
    limit = settings.max_sessions
    if limit > 0 and _open_count(pool) >= limit:
        return SessionLimit(limit)
    return None


def model_limit_error(pool: ModelPool, model: str) -> SessionLimit | None:
    """The per-model decision (``--max-sessions-per-model``) for a new session of ``model`` (canonical name)."""
    limit = 0
    for key, count in pool.settings.max_sessions_per_model.items():
        with contextlib.suppress(UnknownModel):  # a name no longer known limits nothing
            if key == model or pool.resolve(key).name == model:
                limit = count
                break
    starting = sum(1 for other in _starting.get(pool, ()) if getattr(other, "model_name", None) == model)
    if limit > 0 and pool.users_of(model, partials=False) + starting >= limit:
        return SessionLimit(limit, model)
    return None


def refusal_reason(exc: BaseException) -> str:
    """The metrics reason (and error code) of an admission or busy error."""
    if isinstance(exc, ServerDraining):
        return "draining"
    if isinstance(exc, SessionLimit):
        return "max_sessions"
    return "busy"


def _count_refusal(pool: ModelPool, reason: str) -> None:
    if pool.metrics is not None:
        pool.metrics.refused(reason)


def admission_refusal(pool: ModelPool, settings: Settings, *, count: bool = True) -> Refusal | None:
    """:func:`admission_error` as a :class:`Refusal` (counted in the metrics unless ``count`` is False)."""
    error = admission_error(pool, settings)
    if error is None:
        return None
    refusal = Refusal(refusal_reason(error), str(error), max(1, math.ceil(error.retry_after)))
    if count:
        _count_refusal(pool, refusal.reason)
    return refusal


async def refuse_handshake(ws: WebSocket, body: Callable[[Refusal], dict[str, Any]]) -> bool:
    """Before ``accept()``: True if the new session was refused with 503, ``Retry-After`` and ``body(refusal)``."""
    refusal = admission_refusal(ws.app.state.pool, ws.app.state.settings)
    if refusal is None:
        return False
    response = JSONResponse(body(refusal), status_code=REFUSAL_STATUS, headers=refusal.headers)
    with contextlib.suppress(RuntimeError, OSError):
        await ws.send_denial_response(response)
    return True


class CountedSession(LiveSession):
    """A LiveSession the pool's metrics count under ``door`` from a successful start until close."""

    def __init__(
        self, pool: ModelPool, model: str | None = None, options: LiveOptions | None = None, *, door: str
    ) -> None:
        super().__init__(pool, model, options)
        self.door = door
        self.model_name: str | None = None
        self._counted = False
        self._expiry: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.model_name = self.pool.resolve(self.model).name  # an unknown name fails here as in the start
        error = admission_error(self.pool, self.pool.settings) or model_limit_error(self.pool, self.model_name)
        if error is not None:
            _count_refusal(self.pool, refusal_reason(error))
            raise error
        starting = _starting.setdefault(self.pool, weakref.WeakSet())
        starting.add(self)
        try:
            await super().start()
        except ServerBusy:
            _count_refusal(self.pool, "busy")
            raise
        finally:
            starting.discard(self)
        if self.pool.metrics is not None and self.engine is not None:
            self.pool.metrics.session_opened(self.door, self.engine.name, self)
            self._counted = True
        self.pool.live_sessions.add(self)
        limit_s = self.pool.settings.max_session_minutes * 60
        socket = current_socket.get()
        if limit_s > 0 and socket is not None:
            self._expiry = asyncio.create_task(self._expire(limit_s, socket), name=f"session-limit-{self.door}")

    async def _expire(self, limit_s: float, socket: OpenSocket) -> None:
        """At ``--max-session-minutes``: the finals of what the client sent, then close 1008 (reconnect)."""
        await asyncio.sleep(limit_s)
        reason = f"the session reached the server's maximum length of {limit_s / 60:g} min (--max-session-minutes)"
        logger.info("closing a %s session: %s", self.door, reason)
        _count_refusal(self.pool, "max_session_length")
        await flush_and_forward([self])
        await socket.close(SESSION_LIMIT_CLOSE_CODE, reason)

    async def close(self) -> None:
        if self._expiry is not None and self._expiry is not asyncio.current_task():
            self._expiry.cancel()
        try:
            await super().close()
        finally:
            # counted against --max-sessions until its last job has ended, as the metrics count it
            self.pool.live_sessions.discard(self)
            if self._counted and self.pool.metrics is not None:
                self._counted = False
                self.pool.metrics.session_closed(self)


async def open_live_session(
    pool: ModelPool,
    settings: Settings,
    model: str | None,
    language: str | None,
    prompt: str | None = None,
    *,
    silence_ms: int | None = None,
    vad: bool = True,
    door: str = "other",
) -> LiveSession:
    """A started session, or the start's exception with nothing left open.

    ``silence_ms`` and ``vad`` are for doors whose protocol lets the client choose its endpointing;
    ``door`` names the protocol in the metrics (``stt``, ``asr``, ``vosk``, ``wyoming``, ``deepgram``).
    """
    options = LiveOptions(
        language=language,
        prompt=prompt,
        vad=vad,
        silence_ms=settings.vad_silence_ms if silence_ms is None else silence_ms,
        max_utterance_s=settings.max_utterance_s,
    )
    session = CountedSession(pool, model, options, door=door)
    try:
        await session.start()
    except BaseException:
        await session.close()
        raise
    return session


def any_path_app(main_app: Any, endpoint: Callable[[WebSocket], Awaitable[None]]) -> ASGIApp:
    """One door on every path of its own port (``--stt-port``, ``--vosk-port``), sharing the main app's state
    (pool, settings), its time limits, origin checks and drain."""
    app = Starlette(
        routes=[WebSocketRoute("/{path:path}", endpoint)],
        middleware=[
            Middleware(TimeoutsMiddleware),
            Middleware(OriginGuardMiddleware),
            Middleware(OpenSocketsMiddleware),
        ],
    )
    app.state = main_app.state
    return app
