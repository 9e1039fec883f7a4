"""OpenAI Realtime API, transcription sessions: ``/v1/realtime?intent=transcription``.

A thin adapter between the Realtime event protocol (beta ``transcription_session.*`` and GA
``session.*`` shapes; PROTOCOLS.md §5) and one :class:`~hearline.live.session.LiveSession`.
Event shapes live in :mod:`hearline.server.realtime_wire`; how utterances become items (and the
mapping choices worth knowing when reading a client log) in :mod:`hearline.server.realtime_items`.

A configuration change that alters how audio is segmented (turn detection, model, language,
prompt, sample rate) ends the current stream: its pending finals are delivered, and the next
audio starts a new :class:`LiveSession` whose clock continues where the old one stopped.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from hearline.audio.decode import AudioDecodeError
from hearline.live.session import LiveOptions, LiveSession
from hearline.models.resolve import UnknownModel
from hearline.server.auth import SUBPROTOCOL_PREFIX, is_authorized
from hearline.server.live_run import LiveRun
from hearline.server.live_socket import (
    START_ERRORS,
    CountedSession,
    SocketSender,
    StartFailure,
    connections,
    refusal_reason,
    refuse_handshake,
    start_failure,
)
from hearline.server.realtime_deltas import ItemText
from hearline.server.realtime_items import RealtimeItems
from hearline.server.realtime_wire import (
    CLIENT_EVENTS,
    INVALID_REQUEST,
    SERVER_ERROR,
    UNSUPPORTED_EVENTS,
    AudioInput,
    RealtimeError,
    SessionConfig,
    TurnDetection,
    append_audio,
    apply_beta_update,
    apply_ga_update,
    new_id,
    refusal_event,
    require_object,
)

__all__ = ["RealtimeConnection", "RealtimeError", "SessionConfig", "TurnDetection", "router"]

logger = logging.getLogger(__name__)

router = APIRouter()

MIN_COMMIT_MS = 100.0  # OpenAI refuses to commit less audio than this


# -- the connection --------------------------------------------------------------------------------


#: Realtime ``error`` (code, param) of a failed session start; busy ones name their reason
START_CODES = {
    StartFailure.UNKNOWN_MODEL: ("model_not_found", "model"),
    StartFailure.UNSUPPORTED: ("unsupported_option", "session"),  # e.g. a language the model does not know
    StartFailure.UNAVAILABLE: ("model_unavailable", None),
}


def _start_error(exc: BaseException, failure: StartFailure) -> RealtimeError:
    if failure is StartFailure.BUSY:  # full or draining since the handshake: audio waits for a new session.update
        return RealtimeError(str(exc), code=refusal_reason(exc), type=SERVER_ERROR)
    code, param = START_CODES[failure]
    kind = SERVER_ERROR if failure is StartFailure.UNAVAILABLE else INVALID_REQUEST
    return RealtimeError(str(exc), code=code, param=param, type=kind)


@dataclass
class _Stream:
    """One LiveSession plus the task forwarding its events; ``offset`` places its clock on the session's."""

    run: LiveRun
    offset: float
    rate: int
    options: LiveOptions
    model: str | None

    @property
    def live(self) -> LiveSession:
        return self.run.session


class RealtimeConnection(RealtimeItems):
    """State of one Realtime WebSocket: configuration, items, and the current live stream."""

    def __init__(self, websocket: WebSocket) -> None:
        self.ws = websocket
        state = websocket.app.state
        self.settings = state.settings
        self.pool = state.pool
        self.session_id = new_id("sess")
        headers = websocket.headers
        offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        self.subprotocols = offered
        self.beta = "realtime=v1" in headers.get("openai-beta", "") or "openai-beta.realtime-v1" in offered
        self.config = SessionConfig(
            model=websocket.query_params.get("model") or None,
            language=self.settings.language,
            turn_detection=TurnDetection(silence_duration_ms=self.settings.vad_silence_ms),
        )
        self.audio = AudioInput()
        self.stream: _Stream | None = None
        self.sender = SocketSender(websocket, "realtime")
        self.clock_ms = 0.0  # audio received on the session clock
        self.buffer_ms = 0.0  # audio not yet committed (what `commit` would commit)
        # items
        self.open_item: str | None = None  # item collecting audio now, not yet committed
        self.utt_items: dict[tuple[int, int], str] = {}  # (stream number, utterance id) -> item
        # (item, clock ms, committed ms) committed before any utterance
        self.pending_commits: deque[tuple[str, float, float]] = deque()
        self.committed: set[str] = set()  # committed, transcript not sent yet
        self.discarded: set[tuple[int, int]] = set()
        self.sent_text: dict[str, ItemText] = {}
        self.last_committed: str | None = None
        self.item_previous: dict[str, str | None] = {}  # committed item -> its previous item, until done
        # conversation item events in the GA shape (added/done) or the beta one (created): as the client
        # spoke last (its connection headers, then the shape of its last session update)
        self.ga_shape = not self.beta
        self.stream_no = 0
        self.start_failed = False  # the live session could not start with this configuration
        self.closed = False

    # -- plumbing ----------------------------------------------------------------------------
    def _session_view(self, beta: bool) -> dict[str, Any]:
        default = self.pool.default_name
        if beta:
            return self.config.beta_view(self.session_id, default)
        return self.config.ga_view(self.session_id, default)

    # -- lifecycle ---------------------------------------------------------------------------
    def _choose_subprotocol(self) -> str | None:
        """Browsers offer ``realtime`` plus the key as a subprotocol; the answer must be one they offered."""
        if "realtime" in self.subprotocols:
            return "realtime"
        others = [p for p in self.subprotocols if not p.startswith(SUBPROTOCOL_PREFIX)]
        return others[0] if others else None

    async def run(self) -> None:
        if await refuse_handshake(self.ws, lambda r: refusal_event(r.message, r.reason)):
            return  # full (--max-sessions) or draining: 503 + Retry-After before accept
        await self.ws.accept(subprotocol=self._choose_subprotocol())
        if not is_authorized(self.ws, self.settings.api_key):
            await self.send_error(
                RealtimeError("Incorrect API key provided.", code="invalid_api_key", param=None),
            )
            await self.ws.close(code=1008)
            return
        intent = self.ws.query_params.get("intent")
        if intent not in (None, "", "transcription"):
            await self.send_error(
                RealtimeError(
                    f"Unsupported intent '{intent}': this server only serves transcription sessions.",
                    code="invalid_value",
                    param="intent",
                )
            )
            await self.ws.close(code=1008)
            return
        if self.config.model:
            try:
                self.pool.resolve(self.config.model)
            except UnknownModel as exc:
                await self.send_error(RealtimeError(str(exc), code="model_not_found", param="model"))
                await self.ws.close(code=1008)
                return
        registry = connections(self.ws.app.state, "realtime")
        registry.add(self)
        try:
            created = "transcription_session.created" if self.beta else "session.created"
            await self.send(created, session=self._session_view(self.beta))
            await self._receive_loop()
        finally:
            registry.discard(self)
            await self._shutdown()

    async def _receive_loop(self) -> None:
        while not self.closed:
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await self.send_error(
                    RealtimeError(
                        "Binary frames are not supported; send JSON events as text frames.",
                        code="invalid_value",
                    )
                )
                continue
            await self._handle_text(text)

    async def _shutdown(self) -> None:
        """Client gone or session over: stop the stream without waiting for more inference."""
        self.closed = True
        stream, self.stream = self.stream, None
        if stream is not None:
            await stream.run.abandon()

    # -- client events -----------------------------------------------------------------------
    async def _handle_text(self, text: str) -> None:
        try:
            event = json.loads(text)
        except (ValueError, RecursionError) as exc:
            await self.send_error(
                RealtimeError(f"The server failed to parse the client event: {exc}", code="invalid_json")
            )
            return
        if not isinstance(event, dict):
            await self.send_error(RealtimeError("A client event must be a JSON object.", code="invalid_json"))
            return
        client_event_id = event.get("event_id")
        try:
            await self._dispatch(event)
        except RealtimeError as err:
            await self.send_error(err, client_event_id)

    async def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if not kind:
            raise RealtimeError("Missing required parameter: 'type'.", code="missing_required_parameter", param="type")
        if kind == "transcription_session.update":
            session = require_object(event.get("session", {}), "session")
            new = apply_beta_update(self.config, session, self.settings.vad_silence_ms)
            await self._reconfigure(new)
            self.ga_shape = False
            await self.send("transcription_session.updated", session=self._session_view(True))
        elif kind == "session.update":
            session = require_object(event.get("session", {}), "session")
            session_type = session.get("type")
            if session_type not in (None, "transcription"):
                raise RealtimeError(
                    f"Invalid value: '{session_type}'. This server only serves transcription sessions.",
                    code="invalid_value",
                    param="session.type",
                )
            if session_type is None and "audio" not in session:
                new = apply_beta_update(self.config, session, self.settings.vad_silence_ms)
                beta_shape = True
            else:
                new = apply_ga_update(self.config, session, self.settings.vad_silence_ms)
                beta_shape = False
            await self._reconfigure(new)
            self.ga_shape = not beta_shape
            await self.send("session.updated", session=self._session_view(beta_shape))
        elif kind == "input_audio_buffer.append":
            await self._append(event)
        elif kind == "input_audio_buffer.commit":
            await self._commit()
        elif kind == "input_audio_buffer.clear":
            await self._clear()
        elif kind in UNSUPPORTED_EVENTS:
            raise RealtimeError(
                f"'{kind}' is not supported in a transcription session.", code="invalid_value", param="type"
            )
        else:
            raise RealtimeError(
                f"Invalid value: '{kind}'. Supported values are: {CLIENT_EVENTS}.", code="invalid_value", param="type"
            )

    async def _reconfigure(self, new: SessionConfig) -> None:
        if new.model != self.config.model and new.model:
            try:
                self.pool.resolve(new.model)
            except UnknownModel as exc:
                param = "session.input_audio_transcription.model"
                raise RealtimeError(str(exc), code="model_not_found", param=param) from exc
        self.config = new
        self.start_failed = False
        self.audio.reset()  # an update is a sample boundary: no half sample survives it
        stream = self.stream
        if stream is None:
            return
        unchanged = (
            stream.options == new.live_options(self.settings.max_utterance_s)
            and stream.rate == new.rate
            and stream.model == new.model
        )
        if not unchanged:
            await self._retire_stream()

    async def _append(self, event: dict[str, Any]) -> None:
        data = append_audio(event)
        samples = self.audio.decode(data, self.config.audio_format)
        if samples.size == 0 or self.start_failed:
            return  # after a failed start the client has its error; audio waits for a new session.update
        stream = await self._ensure_stream()
        if stream is None:
            return
        ms = samples.size * 1000.0 / stream.rate
        self.clock_ms += ms
        self.buffer_ms += ms
        try:
            await stream.live.push(samples, stream.rate)
        except AudioDecodeError as exc:
            raise RealtimeError(str(exc), code="invalid_value", param="audio") from exc

    async def _commit(self) -> None:
        if self.buffer_ms < MIN_COMMIT_MS:
            raise RealtimeError(
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS:.0f}ms of audio, but buffer only has {self.buffer_ms:.2f}ms of audio.",
                code="input_audio_buffer_commit_empty",
            )
        item, self.open_item = self.open_item, None
        if item is None:
            # No utterance reported yet for this audio: the session may still be analysing it.  The
            # first utterance that starts before this point is this item (see _item_for).
            item = new_id("item")
            self.pending_commits.append((item, self.clock_ms, self.buffer_ms))
        self.buffer_ms = 0.0
        self.committed.add(item)
        await self._send_committed(item)
        if self.stream is not None:
            self.stream.live.end_utterance()

    async def _clear(self) -> None:
        if self.stream is not None:
            self.stream.live.discard()
        item, self.open_item = self.open_item, None
        if item is not None:
            for key, value in list(self.utt_items.items()):
                if value == item:
                    self.discarded.add(key)
                    del self.utt_items[key]
            self.sent_text.pop(item, None)
        self.buffer_ms = 0.0
        self.audio.reset()
        await self.send("input_audio_buffer.cleared")

    # -- the live stream ---------------------------------------------------------------------
    async def _ensure_stream(self) -> _Stream | None:
        if self.stream is not None:
            return self.stream
        options = self.config.live_options(self.settings.max_utterance_s)
        live = CountedSession(self.pool, self.config.model, options, door="realtime")
        try:
            await live.start()
        except START_ERRORS as exc:
            await live.close()
            failure = start_failure(exc)
            self.start_failed = failure is not StartFailure.UNKNOWN_MODEL  # a new session.update may fix the others
            if failure is StartFailure.UNAVAILABLE:
                logger.warning("realtime: could not start a live session: %s", exc)
            raise _start_error(exc, failure) from exc
        self.stream_no += 1
        run = LiveRun(live, self.stream_sink(self.stream_no, self.clock_ms / 1000.0), "realtime")
        self.stream = _Stream(run, self.clock_ms / 1000.0, self.config.rate, options, self.config.model)
        return self.stream

    async def _retire_stream(self) -> None:
        """Deliver the current stream's pending finals, then drop it (config changed)."""
        stream, self.stream = self.stream, None
        if stream is None:
            return
        self.audio.reset()
        await stream.run.finish()
        await self._complete_empty_commits(math.inf)


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    started = time.monotonic()
    connection = RealtimeConnection(websocket)
    try:
        await connection.run()
    finally:
        logger.debug("realtime session %s ended after %.1fs", connection.session_id, time.monotonic() - started)
