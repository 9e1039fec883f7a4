"""What every translator shares: the request, the two outcomes the worker reports, errors, language codes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from hearline import languages


class TranslatorUnavailable(RuntimeError):
    """The requested translation cannot be done with what is configured."""


class TranslationFailed(RuntimeError):
    """One translation call failed (server error, bad answer, timeout)."""


@dataclass(frozen=True)
class TranslationRequest:
    caption_id: int
    text: str
    source: str | None  # table or ISO code of the spoken language; None: unknown
    target: str  # table code
    audio: np.ndarray | None = None  # the final's audio, for the Whisper translator


@dataclass(frozen=True)
class Translation:
    """A final's translation, in caption order."""

    caption_id: int
    text: str
    source: str | None
    target: str
    translator: str


@dataclass(frozen=True)
class TranslationFailure:
    """A final that got no translation (the call failed or timed out); ``message`` is for people."""

    caption_id: int
    message: str


TranslationEvent = Translation | TranslationFailure


class Translator(ABC):
    name: str = ""

    @abstractmethod
    async def translate(self, request: TranslationRequest) -> str: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients/threads."""


def iso(code: str | None) -> str | None:
    """The ISO code of a table (or ISO) code; None for unknown/auto/none."""
    if not code or code.lower() in {languages.AUTO, languages.NONE}:
        return None
    try:
        return languages.engine_code(code)
    except languages.UnknownLanguage:
        return code.split("-")[0].lower()


def display(code: str | None) -> str:
    """A language's name for a prompt."""
    if not code:
        return "the detected language"
    try:
        lang = languages.lookup(code)
    except languages.UnknownLanguage:
        return code
    return lang.name
