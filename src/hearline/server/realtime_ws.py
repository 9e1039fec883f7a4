"""OpenAI Realtime API, transcription sessions: ``/v1/realtime?intent=transcription``.

A thin adapter between the Realtime event protocol (beta ``transcription_session.*`` and GA
``session.*`` shapes; PROTOCOLS.md §5) and one :class:`~hearline.live.session.LiveSession`.

Mapping choices worth knowing when reading a client log:

- One *item* per utterance.  Its id is announced by ``input_audio_buffer.speech_started`` (server
  VAD) and reused by every later event for that utterance.
- Deltas stream while the person speaks, i.e. *before* ``input_audio_buffer.committed`` (OpenAI
  sends them after; clients key them by ``item_id``, which is already known from ``speech_started``).
- Deltas carry only words that have firmed up and always concatenate to the ``...completed``
  transcript (see :mod:`hearline.server.realtime_deltas`).
- With server VAD, ``speech_stopped`` + ``committed`` are sent when the session detects the endpoint
  (its ``Silence`` event; ``audio_end_ms`` is the end of speech on the audio clock) and
  ``completed`` follows when the final text is ready.  An utterance that ends otherwise (the
  pipeline's maximum utterance length, end of stream) is committed by the server when its final
  arrives; with ``turn_detection: null`` that is the only case besides the client's own commit.
- A client ``commit`` of audio in which no utterance has been reported yet is tied to the first
  utterance that starts before the commit point; if none does (server VAD heard no speech), the item
  completes with ``""`` once that is known: when a later utterance starts or the stream is replaced.
- Every commit (client or server) is followed by the user item it adds: ``conversation.item.created``
  when the client speaks the beta shape, ``conversation.item.added`` in the GA shape, whose
  ``conversation.item.done`` (the item with its transcript) follows ``...completed`` or ``...failed``
  -- GA clients that track items by added/done see each one finished.  The shape is the one of the
  client's last session update (before any: ``OpenAI-Beta: realtime=v1`` or not).
- ``...completed`` carries ``usage`` (``duration``: the utterance's seconds), which the SDK's types
  require.  With ``include: ["item.input_audio_transcription.logprobs"]`` it also carries ``logprobs``,
  one entry per word from the engine's word probabilities (the same numbers as the REST API's), and so
  does the delta that closes an item; deltas from partials have none, since partial hypotheses carry
  no word probabilities.
- A configuration change that alters how audio is segmented (turn detection, model, language,
  prompt, sample rate) ends the current stream: its pending finals are delivered, and the next
  audio starts a new :class:`LiveSession` whose clock continues where the old one stopped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import json
import logging
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from hearline import formats
from hearline.audio.decode import AudioDecodeError
from hearline.engines.base import EngineError, UnsupportedOption, Word
from hearline.live.session import Error, Final, LiveOptions, LiveSession, Partial, Silence, SpeechStarted
from hearline.models.resolve import UnknownModel
from hearline.server.auth import SUBPROTOCOL_PREFIX, is_authorized
from hearline.server.realtime_deltas import ItemText

logger = logging.getLogger(__name__)

router = APIRouter()

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"
MIN_COMMIT_MS = 100.0  # OpenAI refuses to commit less audio than this
CLOCK_SLACK_MS = 20.0  # the session clock trails the client's by the resampler's delay
PCM_RATE = 24000
G711_RATE = 8000
BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
GA_FORMATS = {v: k for k, v in BETA_FORMATS.items()}
UNSUPPORTED_EVENTS = {
    "response.create", "response.cancel", "conversation.item.create", "conversation.item.delete",
    "conversation.item.truncate", "conversation.item.retrieve", "output_audio_buffer.clear",
}  # fmt: skip
LOGPROBS_INCLUDE = "item.input_audio_transcription.logprobs"
INCLUDES = (LOGPROBS_INCLUDE,)
CLIENT_EVENTS = (
    "transcription_session.update, session.update, input_audio_buffer.append, "
    "input_audio_buffer.commit, input_audio_buffer.clear"
)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:22]}"


class RealtimeError(Exception):
    """A client mistake, answered with an ``error`` event; the connection stays open."""

    def __init__(self, message: str, *, code: str, param: str | None = None, type: str = INVALID_REQUEST) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.type = type


# -- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TurnDetection:
    type: str = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    def view(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SessionConfig:
    """What a transcription session has been told; rendered in either the beta or the GA shape."""

    audio_format: str = "pcm16"  # beta name: pcm16 | g711_ulaw | g711_alaw
    rate: int = PCM_RATE
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    noise_reduction: dict[str, Any] | None = None
    include: list[str] | None = None

    @property
    def logprobs(self) -> bool:
        """The client asked for ``logprobs`` on transcription deltas and completions."""
        return LOGPROBS_INCLUDE in (self.include or ())

    def transcription_view(self, default_model: str) -> dict[str, Any]:
        return {"model": self.model or default_model, "language": self.language, "prompt": self.prompt or ""}

    def beta_view(self, session_id: str, default_model: str) -> dict[str, Any]:
        return {
            "id": session_id,
            "object": "realtime.transcription_session",
            "expires_at": 0,
            "modalities": ["text"],
            "input_audio_format": self.audio_format,
            "input_audio_transcription": self.transcription_view(default_model),
            "turn_detection": self.turn_detection.view() if self.turn_detection else None,
            "input_audio_noise_reduction": self.noise_reduction,
            "include": self.include,
        }

    def ga_view(self, session_id: str, default_model: str) -> dict[str, Any]:
        audio_format: dict[str, Any] = {"type": BETA_FORMATS[self.audio_format]}
        if self.audio_format == "pcm16":
            audio_format["rate"] = self.rate
        return {
            "type": "transcription",
            "object": "realtime.transcription_session",
            "id": session_id,
            "expires_at": 0,
            "audio": {
                "input": {
                    "format": audio_format,
                    "transcription": self.transcription_view(default_model),
                    "noise_reduction": self.noise_reduction,
                    "turn_detection": self.turn_detection.view() if self.turn_detection else None,
                }
            },
            "include": self.include,
        }

    def live_options(self, max_utterance_s: float) -> LiveOptions:
        td = self.turn_detection
        return LiveOptions(
            language=self.language,
            prompt=self.prompt or None,
            vad=td is not None,
            vad_threshold=td.threshold if td else 0.5,
            silence_ms=td.silence_duration_ms if td else 500,
            prefix_padding_ms=td.prefix_padding_ms if td else 300,
            max_utterance_s=max_utterance_s,
        )


def _obj(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RealtimeError(f"Invalid type for '{param}': expected an object.", code="invalid_type", param=param)
    return value


def _opt_str(value: Any, param: str) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise RealtimeError(f"Invalid type for '{param}': expected a string.", code="invalid_type", param=param)


def _number(value: Any, param: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RealtimeError(
            f"Invalid value for '{param}': expected a number between {low:g} and {high:g}.",
            code="invalid_value",
            param=param,
        )
    return float(value)


def parse_turn_detection(value: Any, param: str, silence_default: int) -> TurnDetection | None:
    if value is None:
        return None
    data = _obj(value, param)
    kind = data.get("type", "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise RealtimeError(
            f"Invalid value: '{kind}'. Supported values are: 'server_vad' and 'semantic_vad'.",
            code="invalid_value",
            param=f"{param}.type",
        )
    # semantic_vad has no numeric knobs; it is served by the same energy-free Silero VAD endpointing.
    return TurnDetection(
        type=kind,
        threshold=_number(data.get("threshold", 0.5), f"{param}.threshold", 0.0, 1.0),
        prefix_padding_ms=int(_number(data.get("prefix_padding_ms", 300), f"{param}.prefix_padding_ms", 0, 10_000)),
        silence_duration_ms=int(
            _number(data.get("silence_duration_ms", silence_default), f"{param}.silence_duration_ms", 0, 10_000)
        ),
    )


def _apply_transcription(config: SessionConfig, value: Any, param: str) -> SessionConfig:
    if value is None:
        return config
    data = _obj(value, param)
    changes: dict[str, Any] = {}
    for key in ("model", "language", "prompt"):
        if key in data:
            changes[key] = _opt_str(data[key], f"{param}.{key}")
    return dataclasses.replace(config, **changes)


def _parse_include(value: Any, param: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RealtimeError(f"Invalid type for '{param}': expected an array of strings.", code="invalid_type",
                            param=param)  # fmt: skip
    for entry in value:
        if entry not in INCLUDES:
            raise RealtimeError(
                f"Invalid value: '{entry}'. Supported values are: {', '.join(repr(i) for i in INCLUDES)}.",
                code="invalid_value",
                param=param,
            )
    return list(value)


def _apply_noise(config: SessionConfig, value: Any, param: str) -> SessionConfig:
    # Accepted and echoed; the live pipeline's VAD already ignores background noise.
    return dataclasses.replace(config, noise_reduction=None if value is None else _obj(value, param))


def apply_beta_update(config: SessionConfig, session: dict[str, Any], silence_default: int) -> SessionConfig:
    """Merge a beta ``transcription_session.update`` ``session`` object into ``config``."""
    if "input_audio_format" in session:
        fmt = session["input_audio_format"]
        if fmt not in BETA_FORMATS:
            raise RealtimeError(
                f"Invalid value: '{fmt}'. Supported values are: 'pcm16', 'g711_ulaw', and 'g711_alaw'.",
                code="invalid_value",
                param="session.input_audio_format",
            )
        config = dataclasses.replace(config, audio_format=fmt, rate=PCM_RATE if fmt == "pcm16" else G711_RATE)
    if "input_audio_transcription" in session:
        config = _apply_transcription(config, session["input_audio_transcription"], "session.input_audio_transcription")
    if "turn_detection" in session:
        td = parse_turn_detection(session["turn_detection"], "session.turn_detection", silence_default)
        config = dataclasses.replace(config, turn_detection=td)
    if "input_audio_noise_reduction" in session:
        config = _apply_noise(config, session["input_audio_noise_reduction"], "session.input_audio_noise_reduction")
    if "include" in session:
        config = dataclasses.replace(config, include=_parse_include(session["include"], "session.include"))
    return config


def apply_ga_update(config: SessionConfig, session: dict[str, Any], silence_default: int) -> SessionConfig:
    """Merge a GA ``session.update`` ``session`` object (``type: transcription``) into ``config``."""
    audio = _obj(session.get("audio") or {}, "session.audio")
    audio_input = _obj(audio.get("input") or {}, "session.audio.input")
    if "format" in audio_input:
        fmt = _obj(audio_input["format"], "session.audio.input.format")
        kind = fmt.get("type", "audio/pcm")
        if kind not in GA_FORMATS:
            raise RealtimeError(
                f"Invalid value: '{kind}'. Supported values are: 'audio/pcm', 'audio/pcmu', and 'audio/pcma'.",
                code="invalid_value",
                param="session.audio.input.format.type",
            )
        rate = G711_RATE
        if kind == "audio/pcm":
            rate = int(_number(fmt.get("rate", PCM_RATE), "session.audio.input.format.rate", 8000, 48000))
        config = dataclasses.replace(config, audio_format=GA_FORMATS[kind], rate=rate)
    if "transcription" in audio_input:
        config = _apply_transcription(config, audio_input["transcription"], "session.audio.input.transcription")
    if "turn_detection" in audio_input:
        td = parse_turn_detection(audio_input["turn_detection"], "session.audio.input.turn_detection", silence_default)
        config = dataclasses.replace(config, turn_detection=td)
    if "noise_reduction" in audio_input:
        config = _apply_noise(config, audio_input["noise_reduction"], "session.audio.input.noise_reduction")
    if "include" in session:
        config = dataclasses.replace(config, include=_parse_include(session["include"], "session.include"))
    return config


# -- audio -----------------------------------------------------------------------------------------


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    magnitude = ((((u & 0x0F) << 3) + 0x84) << exponent) - 0x84
    return (np.where(u & 0x80, -magnitude, magnitude) / 32768.0).astype(np.float32)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return (np.where(a & 0x80, magnitude, -magnitude) / 32768.0).astype(np.float32)


G711_TABLES = {"g711_ulaw": _ulaw_table(), "g711_alaw": _alaw_table()}


class AudioInput:
    """Client audio bytes -> float32 samples; keeps an odd trailing PCM byte for the next append."""

    def __init__(self) -> None:
        self._carry = b""

    def reset(self) -> None:
        self._carry = b""

    def decode(self, data: bytes, audio_format: str) -> np.ndarray:
        table = G711_TABLES.get(audio_format)
        if table is not None:
            return table[np.frombuffer(data, dtype=np.uint8)]
        data = self._carry + data
        usable = len(data) - len(data) % 2
        self._carry = data[usable:]
        return np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0


# -- the connection --------------------------------------------------------------------------------


@dataclass
class _Stream:
    """One LiveSession plus the task forwarding its events; ``offset`` places its clock on the session's."""

    live: LiveSession
    forwarder: asyncio.Task[None]
    offset: float
    rate: int
    options: LiveOptions
    model: str | None


class RealtimeConnection:
    """State of one Realtime WebSocket: configuration, items, and the current live stream."""

    def __init__(self, websocket: WebSocket) -> None:
        self.ws = websocket
        state = websocket.app.state
        self.settings = state.settings
        self.pool = state.pool
        self.session_id = _new_id("sess")
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
        self.send_lock = asyncio.Lock()
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
    async def send(self, event_type: str, **payload: Any) -> None:
        event = {"type": event_type, "event_id": _new_id("event"), **payload}
        async with self.send_lock:
            if self.closed or self.ws.application_state != WebSocketState.CONNECTED:
                return
            try:
                await self.ws.send_text(json.dumps(event))
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                logger.debug("realtime client gone while sending %s: %s", event_type, exc)
                self.closed = True

    async def send_error(self, err: RealtimeError, client_event_id: Any = None) -> None:
        body: dict[str, Any] = {"type": err.type, "code": err.code, "message": err.message, "param": err.param}
        if client_event_id is not None:
            body["event_id"] = client_event_id
        await self.send("error", error=body)

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
        registry: set[RealtimeConnection] = _registry(self.ws)
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
            stream.forwarder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stream.forwarder
            await stream.live.close()

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
            session = _obj(event.get("session", {}), "session")
            new = apply_beta_update(self.config, session, self.settings.vad_silence_ms)
            await self._reconfigure(new)
            self.ga_shape = False
            await self.send("transcription_session.updated", session=self._session_view(True))
        elif kind == "session.update":
            session = _obj(event.get("session", {}), "session")
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
        audio_b64 = event.get("audio")
        if not isinstance(audio_b64, str):
            raise RealtimeError(
                "Missing required parameter: 'audio' (a base64 string).",
                code="missing_required_parameter",
                param="audio",
            )
        try:
            data = base64.b64decode(audio_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RealtimeError(
                "Invalid 'audio'. Expected base64-encoded audio bytes, but got an invalid value.",
                code="invalid_value",
                param="audio",
            ) from exc
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
            item = _new_id("item")
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
        live = LiveSession(self.pool, self.config.model, options)
        try:
            await live.start()
        except UnknownModel as exc:
            await live.close()
            raise RealtimeError(str(exc), code="model_not_found", param="model") from exc
        except UnsupportedOption as exc:  # e.g. a language the model does not know
            await live.close()
            self.start_failed = True
            raise RealtimeError(str(exc), code="unsupported_option", param="session") from exc
        except EngineError as exc:
            await live.close()
            logger.warning("realtime: could not start a live session: %s", exc)
            self.start_failed = True
            raise RealtimeError(str(exc), code="model_unavailable", type=SERVER_ERROR) from exc
        self.stream_no += 1
        forwarder = asyncio.create_task(
            self._forward(live, self.stream_no, self.clock_ms / 1000.0), name=f"realtime-forward-{self.session_id}"
        )
        self.stream = _Stream(live, forwarder, self.clock_ms / 1000.0, self.config.rate, options, self.config.model)
        return self.stream

    async def _retire_stream(self) -> None:
        """Deliver the current stream's pending finals, then drop it (config changed)."""
        stream, self.stream = self.stream, None
        if stream is None:
            return
        self.audio.reset()
        try:
            await stream.live.flush()
            await stream.forwarder
        finally:
            await stream.live.close()
        await self._complete_empty_commits(math.inf)

    async def _forward(self, live: LiveSession, stream_no: int, offset: float) -> None:
        try:
            async for event in live.events():
                if isinstance(event, SpeechStarted):
                    await self._on_speech_started(stream_no, event, offset)
                elif isinstance(event, Partial):
                    await self._on_partial(stream_no, event, offset)
                elif isinstance(event, Silence):
                    await self._on_silence(event, offset)
                elif isinstance(event, Final):
                    await self._on_final(stream_no, event, offset)
                elif isinstance(event, Error):
                    await self._on_error(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("realtime: live session failed")
            await self.send_error(
                RealtimeError("The transcription stream failed.", code="stream_failed", type=SERVER_ERROR)
            )

    async def _complete_empty_commits(self, before_ms: float) -> None:
        """Commits that covered no speech (no utterance began before them) are completed with ``""``."""
        while self.pending_commits and self.pending_commits[0][1] <= before_ms:
            item, _, committed_ms = self.pending_commits.popleft()
            self.committed.discard(item)
            await self._send_completed(item, "", committed_ms / 1000, [])

    async def _item_for(self, key: tuple[int, int], start_ms: float) -> tuple[str | None, bool]:
        """(item of an utterance, whether it is new), tying a first-seen utterance to its commit if any."""
        if key in self.discarded:
            return None, False
        item = self.utt_items.get(key)
        if item is not None:
            return item, False
        # The session clock trails the client's by the resampler delay: allow a few ms.
        await self._complete_empty_commits(start_ms + CLOCK_SLACK_MS)
        if self.pending_commits:
            item, _, _ = self.pending_commits.popleft()
            self.utt_items[key] = item
            return item, False
        item = self.open_item = _new_id("item")
        self.utt_items[key] = item
        return item, True

    async def _on_speech_started(self, stream_no: int, event: SpeechStarted, offset: float) -> None:
        # Events of utterances dropped by `clear` all come before the next utterance starts.
        self.discarded = {k for k in self.discarded if k[0] == stream_no and k[1] >= event.utterance_id}
        start_ms = (offset + event.start) * 1000
        item, new = await self._item_for((stream_no, event.utterance_id), start_ms)
        if item is not None and new and self.config.turn_detection is not None:
            await self.send("input_audio_buffer.speech_started", audio_start_ms=round(start_ms), item_id=item)

    async def _on_silence(self, event: Silence, offset: float) -> None:
        """VAD endpoint of the open utterance: speech stopped, and the server commits it (server VAD)."""
        item = self.open_item
        if item is None or self.config.turn_detection is None:
            return
        await self._auto_commit(item, (offset + event.start) * 1000)

    async def _auto_commit(self, item: str, end_ms: float) -> None:
        if self.open_item == item:
            self.open_item = None
            self.buffer_ms = max(0.0, self.clock_ms - end_ms)
        self.committed.add(item)
        if self.config.turn_detection is not None:
            await self.send("input_audio_buffer.speech_stopped", audio_end_ms=round(end_ms), item_id=item)
        await self._send_committed(item)

    async def _send_committed(self, item: str) -> None:
        """``input_audio_buffer.committed``, then the user item it adds to the conversation.

        GA sends ``conversation.item.added`` now and ``conversation.item.done`` once the transcript is
        known (see :meth:`_send_item_done`); beta sends ``conversation.item.created`` only.  The item has
        no transcript yet: that arrives with ``...completed`` and, in GA, in the ``done`` item.
        """
        previous, self.last_committed = self.last_committed, item
        await self.send("input_audio_buffer.committed", item_id=item, previous_item_id=previous)
        self.item_previous[item] = previous
        kind = "conversation.item.added" if self.ga_shape else "conversation.item.created"
        await self.send(kind, previous_item_id=previous, item=_user_item(item, None))

    async def _send_item_done(self, item: str, transcript: str | None) -> None:
        """GA: a committed item is final once its transcription completed (or failed)."""
        if item not in self.item_previous:
            return  # never committed (its stream failed first): no item was added
        previous = self.item_previous.pop(item)
        if self.ga_shape:
            await self.send("conversation.item.done", previous_item_id=previous, item=_user_item(item, transcript))

    async def _send_delta(self, item: str, delta: str, words: list[Word] | None) -> None:
        """A transcription delta; ``words`` (when the engine gave them for this text) carry the logprobs."""
        payload: dict[str, Any] = {"item_id": item, "content_index": 0, "delta": delta}
        if self.config.logprobs and words is not None:
            payload["logprobs"] = formats.word_logprobs(words)
        await self.send("conversation.item.input_audio_transcription.delta", **payload)

    async def _send_completed(self, item: str, transcript: str, seconds: float, words: list[Word]) -> None:
        payload: dict[str, Any] = {
            "item_id": item,
            "content_index": 0,
            "transcript": transcript,
            "usage": {"type": "duration", "seconds": round(max(0.0, seconds), 3)},
        }
        if self.config.logprobs:
            payload["logprobs"] = formats.word_logprobs(words)
        await self.send("conversation.item.input_audio_transcription.completed", **payload)
        await self._send_item_done(item, transcript)


    async def _on_partial(self, stream_no: int, event: Partial, offset: float) -> None:
        item, _ = await self._item_for((stream_no, event.utterance_id), (offset + event.start) * 1000)
        if item is None:
            return
        delta = self.sent_text.setdefault(item, ItemText()).partial(event.committed)
        if delta:
            # a Partial carries no word probabilities: its deltas have no logprobs (the closing delta
            # and ``completed`` do)
            await self._send_delta(item, delta, None)

    async def _on_final(self, stream_no: int, event: Final, offset: float) -> None:
        key = (stream_no, event.utterance_id)
        item, _ = await self._item_for(key, (offset + event.start) * 1000)
        self.utt_items.pop(key, None)
        if item is None:
            self.discarded.discard(key)
            return
        if item not in self.committed:
            # Ended without a VAD silence or a client commit (maximum length, end of stream).
            await self._auto_commit(item, (offset + event.end) * 1000)
        if self.open_item == item:
            self.open_item = None
        self.committed.discard(item)
        streamed = self.sent_text.pop(item, None) or ItemText()
        delta, transcript, first = streamed.final(event.text)
        if delta:
            # the closing delta's logprobs: the final's own words from where it takes over (the engines'
            # words match the text's whitespace-separated words one to one)
            await self._send_delta(item, delta, event.words[first:])
        await self._send_completed(item, transcript, event.end - event.start, event.words)

    async def _on_error(self, event: Error) -> None:
        if not event.fatal:
            await self.send_error(RealtimeError(event.message, code="transcription_error", type=SERVER_ERROR))
            return
        # The stream cannot go on: every item still waiting for text has failed.
        waiting = list(dict.fromkeys([*self.committed, *self.utt_items.values()]))
        for item in waiting:
            await self.send(
                "conversation.item.input_audio_transcription.failed",
                item_id=item,
                content_index=0,
                error={"type": "transcription_error", "code": "transcription_failed", "message": event.message,
                       "param": None},
            )  # fmt: skip
            await self._send_item_done(item, None)
        self.committed.clear()
        self.utt_items.clear()
        self.pending_commits.clear()
        self.open_item = None
        await self.send_error(RealtimeError(event.message, code="transcription_failed", type=SERVER_ERROR))
        self.closed = True
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await self.ws.close(code=1011)


def _user_item(item_id: str, transcript: str | None) -> dict[str, Any]:
    """The user message item of committed audio (the SDK's ``RealtimeConversationItemUserMessage``)."""
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": transcript}],
    }


def _registry(websocket: WebSocket) -> set[RealtimeConnection]:
    """Open Realtime connections of this app (tests and shutdown look at it)."""
    state = websocket.app.state
    registry = getattr(state, "realtime_connections", None)
    if registry is None:
        registry = state.realtime_connections = set()
    return registry


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    started = time.monotonic()
    connection = RealtimeConnection(websocket)
    try:
        await connection.run()
    finally:
        logger.debug("realtime session %s ended after %.1fs", connection.session_id, time.monotonic() - started)
