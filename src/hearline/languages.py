"""The language table (seed 000's, shipped as package data) and the mappings built on it.

Clients name languages three ways: ISO-639-1 (``en``), the table's UI codes (``zh-Hans``, ``yue-Hant``)
and, in OpenAI's verbose JSON, full lower-case English names (``english``).  This module converts
between them so no other module needs to know.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

AUTO = "auto"
NONE = "n/a"

# Whisper's own names where the table's display name differs.
_WHISPER_NAME_OVERRIDES = {"zh": "chinese", "yue": "cantonese"}


class UnknownLanguage(ValueError):
    def __init__(self, code: str) -> None:
        super().__init__(f"unknown language code {code!r}; see GET /v1/languages for the supported codes")
        self.code = code


@dataclass(frozen=True)
class Language:
    code: str
    name: str
    displayName: str | None
    whisperCode: str | None
    whisperPrompt: str | None
    bingCode: str | None
    googleCode: str | None

    def as_dict(self) -> dict[str, str | None]:
        return dict(self.__dict__)


@cache
def table() -> tuple[Language, ...]:
    raw = resources.files("hearline.data").joinpath("languages.json").read_text(encoding="utf-8")
    return tuple(Language(**row) for row in json.loads(raw))


@cache
def _by_code() -> dict[str, Language]:
    return {lang.code.lower(): lang for lang in table()}


def lookup(code: str) -> Language:
    """A table entry by UI code (case-insensitive); ISO codes such as ``zh`` or ``yue`` also resolve."""
    key = code.strip().lower()
    found = _by_code().get(key)
    if found is not None:
        return found
    for lang in table():
        if lang.whisperCode and lang.whisperCode.lower() == key:
            return lang
    raise UnknownLanguage(code)


def engine_code(code: str | None) -> str | None:
    """The ISO code an engine takes for a UI or ISO code; ``None`` for auto-detection."""
    if code is None or code.strip().lower() in {"", AUTO}:
        return None
    lang = lookup(code)
    if lang.whisperCode is None:
        raise UnknownLanguage(code)
    return lang.whisperCode


def prompt_for(code: str | None) -> str | None:
    """The initial prompt that steers Whisper into the right script (zh-Hans vs zh-Hant, yue-*)."""
    if code is None or code.strip().lower() in {"", AUTO}:
        return None
    return lookup(code).whisperPrompt


@cache
def whisper_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for lang in table():
        if lang.whisperCode and lang.whisperCode not in names:
            names[lang.whisperCode] = _WHISPER_NAME_OVERRIDES.get(lang.whisperCode, lang.name.lower())
    return names


def full_name(code: str | None) -> str | None:
    """``en`` -> ``english`` (OpenAI verbose_json); unknown codes come back unchanged."""
    if not code:
        return None
    return whisper_names().get(code.split("-")[0].lower(), code)
