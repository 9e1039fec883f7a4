"""What the captions service takes and gives: start requests, refusals, status and typed events.

The service knows nothing of SSE or answer codes: the captions door (``hearline.server.captions``) turns
these into its wire format.  Times are seconds on the capture's sample clock; a caption ``id`` numbers an
utterance, shared by its partials, its final and its translation.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hearline import languages
from hearline.live.translate import Translation, TranslationFailure


@dataclass(frozen=True)
class StartRequest:
    source: str = "system"
    model: str | None = None
    lang_from: str = languages.AUTO
    lang_to: str = languages.NONE
    device: str | None = None


class Refusal(enum.Enum):
    """Why a /start cannot be honoured (the door maps each to its answer code)."""

    BAD_SOURCE = enum.auto()
    UNKNOWN_LANGUAGE = enum.auto()
    UNSUPPORTED = enum.auto()  # the model cannot do the requested language
    UNKNOWN_MODEL = enum.auto()
    NO_AUDIO_DEVICE = enum.auto()
    MODEL_UNAVAILABLE = enum.auto()  # the model exists but could not be loaded
    STOPPED = enum.auto()  # a /stop arrived while this start was still loading or opening the device


class StartRefused(Exception):
    """A start request that fails validation; the running capture (if any) is left alone."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class CaptionsStatus:
    """The capture's settings: the running one, else the last one (``running`` false)."""

    running: bool
    source: str
    device: str
    model: str
    lang_from: str
    lang_to: str
    translator: str | None
    started_at: float


# -- events ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Caption:
    """A partial (``is_final`` false) or the final of utterance ``id``."""

    id: int
    start: float
    end: float
    text: str
    is_final: bool
    language: str | None


@dataclass(frozen=True)
class NoTranslation:
    """Captions started, but without the translation asked for (``message`` says why)."""

    message: str


@dataclass(frozen=True)
class TranslationSkipped:
    """The translation backlog was full: caption ``caption_id`` will not be translated."""

    caption_id: int


@dataclass(frozen=True)
class SessionProblem:
    message: str
    fatal: bool


@dataclass(frozen=True)
class AudioSkipped:
    """Captions fell behind the capture and dropped this much of the oldest audio."""

    seconds: float


@dataclass(frozen=True)
class CaptureLost:
    """The device went away; the service retries in ``retry_in`` seconds."""

    message: str
    device: str
    retry_in: float


@dataclass(frozen=True)
class CaptionsStopped:
    """/stop ended the capture (not a lost connection); the feed stays open for the next start."""


@dataclass(frozen=True)
class ServiceClosing:
    """The server is shutting down: the feed ends."""


CaptionEvent = (
    Caption
    | Translation
    | TranslationFailure
    | NoTranslation
    | TranslationSkipped
    | SessionProblem
    | AudioSkipped
    | CaptureLost
    | CaptionsStopped
    | ServiceClosing
)
