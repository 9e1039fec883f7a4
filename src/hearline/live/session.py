"""LiveSession: PCM in, events out.  (Interface fixed; implementation lands with the live issue.)

Every live protocol adapter (WhisperLiveKit /asr, port-8765 /stt, OpenAI Realtime, Vosk, captions)
drives one of these and translates its events into its own wire format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from hearline.engines.base import Word
from hearline.models.pool import ModelPool


@dataclass(frozen=True)
class LiveOptions:
    language: str | None = None  # ISO code; None: detect per utterance
    task: Literal["transcribe", "translate"] = "transcribe"
    prompt: str | None = None
    vad: bool = True  # False: utterances end only on end_utterance()/flush()/max length
    vad_threshold: float = 0.5
    silence_ms: int = 500  # endpoint after this much silence
    prefix_padding_ms: int = 300  # audio kept before detected speech onset
    max_utterance_s: float = 15.0  # forced split
    partial_interval_s: float = 0.5  # how often partial work is scheduled (re-decoding engines)


@dataclass(frozen=True)
class SpeechStarted:
    utterance_id: int
    start: float  # seconds on the session's audio clock
    type: Literal["speech_started"] = "speech_started"


@dataclass(frozen=True)
class Partial:
    utterance_id: int
    text: str  # whole not-yet-final text of the open utterance
    start: float
    committed: str = ""  # prefix of ``text`` that will not change any more (LocalAgreement)
    type: Literal["partial"] = "partial"


@dataclass(frozen=True)
class Final:
    utterance_id: int
    text: str
    start: float
    end: float
    words: list[Word] = field(default_factory=list)
    language: str | None = None
    type: Literal["final"] = "final"


@dataclass(frozen=True)
class Silence:
    start: float
    end: float
    type: Literal["silence"] = "silence"


@dataclass(frozen=True)
class Lag:
    seconds: float  # how far processing is behind the audio received
    type: Literal["lag"] = "lag"


@dataclass(frozen=True)
class Error:
    message: str
    fatal: bool = False
    type: Literal["error"] = "error"


Event = SpeechStarted | Partial | Final | Silence | Lag | Error


class LiveSession:
    """One live stream of audio.

    Usage by an adapter::

        session = LiveSession(pool, model_name, LiveOptions(language="en"))
        await session.start()                 # loads/resolves the model; raises UnknownModel etc.
        reader = asyncio.create_task(forward(session.events()))
        await session.push(samples, 16000)    # float32 mono at any rate; awaits when input is backlogged
        session.end_utterance()               # optional: force an endpoint now (Realtime commit)
        session.discard()                     # optional: drop the open utterance (Realtime clear)
        await session.flush()                 # end of audio: every pending final is emitted, then events() ends
        await session.close()                 # always, also on client disconnect; idempotent
    """

    def __init__(self, pool: ModelPool, model: str | None = None, options: LiveOptions | None = None) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def push(self, audio: np.ndarray, sample_rate: int = 16000) -> None:
        raise NotImplementedError

    def end_utterance(self) -> None:
        raise NotImplementedError

    def discard(self) -> None:
        raise NotImplementedError

    async def flush(self) -> None:
        raise NotImplementedError

    def events(self) -> AsyncIterator[Event]:
        raise NotImplementedError

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio received so far (the session's sample clock)."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError
