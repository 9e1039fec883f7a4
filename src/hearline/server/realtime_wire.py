"""Realtime wire model: the shapes of client and server events (PROTOCOLS.md §5), no sockets.

Session configuration and its validation, the server events' payloads, and the input audio formats,
kept apart from the connection (:mod:`hearline.server.realtime_ws`) so they read and test alone.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hearline import formats
from hearline.audio.decode import g711_to_float
from hearline.audio.raw_stream import RawStream
from hearline.engines.base import Word
from hearline.live.session import LiveOptions

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"
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


def new_id(prefix: str) -> str:
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


def require_object(value: Any, param: str) -> dict[str, Any]:
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
    data = require_object(value, param)
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
    data = require_object(value, param)
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
    return dataclasses.replace(config, noise_reduction=None if value is None else require_object(value, param))


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
    audio = require_object(session.get("audio") or {}, "session.audio")
    audio_input = require_object(audio.get("input") or {}, "session.audio.input")
    if "format" in audio_input:
        fmt = require_object(audio_input["format"], "session.audio.input.format")
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


#: the Realtime API's G.711 format names -> the decoder's
G711_FORMATS = {"g711_ulaw": "mulaw", "g711_alaw": "alaw"}


class AudioInput:
    """Client audio bytes -> float32 samples; keeps an odd trailing PCM byte for the next append."""

    def __init__(self) -> None:
        self._pcm = RawStream("pcm", 2, 1, PCM_RATE)

    def reset(self) -> None:
        self._pcm.finish()

    def decode(self, data: bytes, audio_format: str) -> np.ndarray:
        if audio_format in G711_FORMATS:
            return g711_to_float(data, G711_FORMATS[audio_format])
        return self._pcm.push(data)


# -- server event payloads -------------------------------------------------------------------------


def user_item(item_id: str, transcript: str | None) -> dict[str, Any]:
    """The user message item of committed audio (the SDK's ``RealtimeConversationItemUserMessage``)."""
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": transcript}],
    }


def error_body(err: RealtimeError, client_event_id: Any = None) -> dict[str, Any]:
    """The ``error`` object of an ``error`` event; ``event_id`` names the client event at fault."""
    body: dict[str, Any] = {"type": err.type, "code": err.code, "message": err.message, "param": err.param}
    if client_event_id is not None:
        body["event_id"] = client_event_id
    return body


def refusal_event(message: str, code: str) -> dict[str, Any]:
    """A refused handshake's body (503): an ``error`` event, whose ``error`` is also OpenAI's REST error object."""
    error = RealtimeError(message, code=code, type=SERVER_ERROR)
    return {"type": "error", "event_id": new_id("event"), "error": error_body(error)}


def delta_payload(item: str, delta: str, words: list[Word] | None, logprobs: bool) -> dict[str, Any]:
    """A transcription delta; ``words`` (when the engine gave them for this text) carry the logprobs."""
    payload: dict[str, Any] = {"item_id": item, "content_index": 0, "delta": delta}
    if logprobs and words is not None:
        payload["logprobs"] = formats.word_logprobs(words)
    return payload


def completed_payload(item: str, transcript: str, seconds: float, words: list[Word], logprobs: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "item_id": item,
        "content_index": 0,
        "transcript": transcript,
        "usage": {"type": "duration", "seconds": round(max(0.0, seconds), 3)},
    }
    if logprobs:
        payload["logprobs"] = formats.word_logprobs(words)
    return payload


# -- client event payloads -------------------------------------------------------------------------


def append_audio(event: dict[str, Any]) -> bytes:
    """The audio bytes of an ``input_audio_buffer.append`` event."""
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
    return data
