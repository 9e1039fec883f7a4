"""Deepgram's listen API as data: query parameters in, ``Results``/``Metadata``/errors out (PROTOCOLS.md §8).

Pure functions, no sockets, so the live endpoint and ``POST /v1/listen`` share one reading of the
parameters and one shape of every message.  Clients hard-code Deepgram's model names (``nova-3``), so
those mean the server's default model; a name Hearline knows selects that model.
"""

from __future__ import annotations

import hashlib
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import hearline
from hearline import languages
from hearline.engines.base import Engine, Word

#: Deepgram's model families; clients send them by default, and they select the server's default model
DEEPGRAM_MODELS = (
    "nova", "enhanced", "base", "general", "flux", "phonecall", "meeting", "voicemail", "finance",
    "conversationalai", "video", "medical", "drivethru", "automotive", "atc",
)  # fmt: skip
#: encodings of raw audio (``sample_rate`` required); anything else is a container the decoder recognises
RAW_ENCODINGS = {"linear16": 2, "linear32": 4, "mulaw": 1, "alaw": 1}
CONTAINER_ENCODINGS = {"opus", "ogg-opus", "webm-opus"}
TRUE = {"true", "1", "yes"}
FALSE = {"false", "0", "no"}


class BadParams(ValueError):
    """A query parameter the server cannot honour: 400 before anything is opened."""


@dataclass(frozen=True)
class ListenParams:
    model: str | None = None  # None: the server's default model
    language: str | None = None  # engine code; None: detect
    encoding: str | None = None  # None: a container (WebM, Ogg, MP4, WAV) recognised from its bytes
    sample_rate: int | None = None
    channels: int = 1
    interim_results: bool = False
    endpointing_ms: int | None = None  # None: the server's setting
    endpointing: bool = True  # False: utterances end only on Finalize/CloseStream or maximum length
    utterance_end_ms: int | None = None
    vad_events: bool = False
    punctuate: bool = False
    keywords: list[str] = field(default_factory=list)
    utterances: bool = False  # pre-recorded only
    detect_language: bool = False  # pre-recorded only

    @property
    def prompt(self) -> str | None:
        """Keywords steer Whisper as its initial prompt (Deepgram's ``keywords``/``keyterm`` boost words)."""
        return ", ".join(self.keywords) or None


def _flag(query: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = query.get(name)
    if value is None or value == "":
        return default
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise BadParams(f"{name}={value!r} is not a boolean; use true or false")


def _int(query: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadParams(f"{name}={value!r} is not an integer") from None
    if not low <= number <= high:
        raise BadParams(f"{name}={number} is out of range ({low}..{high})")
    return number


def parse_params(query: Mapping[str, str], multi: Mapping[str, list[str]], known_model: Any) -> ListenParams:
    """Read Deepgram's query parameters; ``known_model(name)`` says whether Hearline has a model by that name.

    Unknown parameters are ignored (Deepgram adds them often); ones that would change the result in a
    way this server cannot (diarization, several channels transcribed apart) raise :class:`BadParams`.
    """
    for name in ("diarize", "multichannel"):
        if _flag(query, name):
            raise BadParams(f"{name}=true is not supported by this server")
    requested = query.get("model") or None
    model = requested
    if requested and not known_model(requested):
        if requested.split("-")[0].lower() not in DEEPGRAM_MODELS:
            raise BadParams(f"model {requested!r} not found; use a Deepgram model name or a Hearline model")
        model = None
    try:
        language = languages.engine_code(None if query.get("language") == "multi" else query.get("language"))
    except languages.UnknownLanguage as exc:
        raise BadParams(str(exc)) from None
    encoding = (query.get("encoding") or "").lower() or None
    if encoding is not None and encoding not in RAW_ENCODINGS and encoding not in CONTAINER_ENCODINGS:
        supported = ", ".join(sorted({*RAW_ENCODINGS, *CONTAINER_ENCODINGS}))
        raise BadParams(f"encoding={encoding!r} is not supported; use one of {supported}, or send a container")
    sample_rate = _int(query, "sample_rate", 1000, 384000)
    if encoding in RAW_ENCODINGS and sample_rate is None:
        raise BadParams(f"sample_rate is required with encoding={encoding}")
    endpointing = (query.get("endpointing") or "").lower()
    endpointing_on = endpointing not in FALSE
    endpointing_ms = _int(query, "endpointing", 0, 60000) if endpointing_on and endpointing not in TRUE else None
    keywords = [k.rsplit(":", 1)[0] for k in multi.get("keywords", []) + multi.get("keyterm", []) if k.strip()]
    return ListenParams(
        model=model,
        language=language,
        encoding=encoding,
        sample_rate=sample_rate,
        channels=_int(query, "channels", 1, 8) or 1,
        interim_results=_flag(query, "interim_results"),
        endpointing=endpointing_on,
        endpointing_ms=endpointing_ms,
        utterance_end_ms=_int(query, "utterance_end_ms", 0, 60000),
        vad_events=_flag(query, "vad_events"),
        punctuate=_flag(query, "punctuate") or _flag(query, "smart_format"),
        keywords=keywords,
        utterances=_flag(query, "utterances"),
        detect_language=_flag(query, "detect_language"),
    )


# -- messages -----------------------------------------------------------------------------------
def _plain(word: str) -> str:
    """Deepgram's ``word``: lower case without punctuation (``punctuated_word`` keeps the text's form)."""
    return "".join(ch for ch in word if not unicodedata.category(ch).startswith("P")).lower()


def word_json(word: Word) -> dict[str, Any]:
    text = word.word.strip()
    confidence = word.probability if word.probability is not None else 1.0
    return {
        "word": _plain(text),
        "start": round(word.start, 3),
        "end": round(word.end, 3),
        "confidence": round(confidence, 4),
        "punctuated_word": text,
    }


def alternative(text: str, words: list[Word], punctuate: bool) -> dict[str, Any]:
    """``channel.alternatives[0]``: engines without word probabilities report confidence 1.0."""
    probs = [w.probability for w in words if w.probability is not None]
    transcript = text.strip()
    if not punctuate:
        transcript = " ".join(p for p in (_plain(t) for t in transcript.split()) if p)
    return {
        "transcript": transcript,
        "confidence": round(sum(probs) / len(probs), 4) if probs else 1.0,
        "words": [word_json(w) for w in words],
    }


@dataclass
class Stream:
    """What one connection's messages share: the request id, the model's description, the audio hash."""

    engine_name: str
    engine_kind: str
    channels: int = 1
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat().replace("+00:00", "Z"))
    sha256: Any = field(default_factory=hashlib.sha256)

    @classmethod
    def for_engine(cls, engine: Engine, channels: int = 1) -> Stream:
        return cls(engine.name, engine.kind, channels)

    @property
    def model_uuid(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"hearline:{self.engine_name}"))

    @property
    def model_info(self) -> dict[str, str]:
        return {"name": self.engine_name, "version": hearline.__version__, "arch": self.engine_kind}

    def results(
        self,
        start: float,
        duration: float,
        alt: dict[str, Any],
        *,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
    ) -> dict[str, Any]:
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(max(0.0, duration), 3),
            "start": round(start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [alt]},
            "metadata": {"request_id": self.request_id, "model_info": self.model_info, "model_uuid": self.model_uuid},
        }

    def metadata(self, duration: float) -> dict[str, Any]:
        return {
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": self.sha256.hexdigest(),
            "created": self.created,
            "duration": round(duration, 3),
            "channels": self.channels,
            "models": [self.model_uuid],
            "model_info": {self.model_uuid: self.model_info},
        }

    def metadata_message(self, duration: float) -> dict[str, Any]:
        return {"type": "Metadata", **self.metadata(duration)}


def speech_started(timestamp: float) -> dict[str, Any]:
    return {"type": "SpeechStarted", "channel": [0], "timestamp": round(timestamp, 3)}


def utterance_end(last_word_end: float) -> dict[str, Any]:
    return {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": round(last_word_end, 3)}


def error_message(description: str, variant: str = "Error", message: str | None = None) -> dict[str, Any]:
    """A live error frame; ``SchemaError`` for client text Deepgram could not parse (with that text)."""
    body: dict[str, Any] = {"type": "Error", "variant": variant, "description": description}
    if message is not None:
        body["message"] = message[:1000]
    return body


#: REST/handshake error codes by status, as Deepgram names them in ``err_code``
ERR_CODES = {
    400: "Bad Request", 401: "INVALID_AUTH", 404: "Not Found", 413: "PAYLOAD_TOO_LARGE",
    429: "TOO_MANY_REQUESTS", 503: "SERVICE_UNAVAILABLE",
}  # fmt: skip


def http_error(status: int, message: str, request_id: str | None = None) -> dict[str, Any]:
    """Deepgram's REST (and refused-handshake) error body."""
    return {
        "err_code": ERR_CODES.get(status, "INTERNAL_SERVER_ERROR"),
        "err_msg": message,
        "request_id": request_id or str(uuid.uuid4()),
    }
