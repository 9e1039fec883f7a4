"""What a live session is configured with (LiveOptions) and what it emits (the events).

Apart from the session itself, so adapters and the session's parts share them without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hearline.engines.base import Word


@dataclass(frozen=True)
class LiveOptions:
    language: str | None = None  # ISO code; None: detect per utterance
    task: Literal["transcribe", "translate"] = "transcribe"
    prompt: str | None = None
    vad: bool = True  # False: utterances end only on end_utterance()/flush()/max length
    vad_threshold: float = 0.5
    silence_ms: int = 500  # endpoint after this much silence
    pause_ms: int = 150  # after this much silence the final is prepared, ahead of the endpoint (0: off)
    prefix_padding_ms: int = 300  # audio kept before detected speech onset
    max_utterance_s: float = 15.0  # forced split
    # Partial work further behind than this passes over the older audio (newest audio wins); the final
    # still covers it.  Only for policies that can (a second-pass final); 0: never skip.
    max_partial_behind_s: float = 0.6
    partial_interval_s: float = 0.5  # how often partial work is scheduled (re-decoding engines)
    policy: Literal["auto", "native", "local_agreement"] = "auto"  # auto: from engine capabilities


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
    words: list[Word] = field(default_factory=list)  # session clock; empty where the policy has no times
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
