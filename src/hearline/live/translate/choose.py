"""Which translator a setting picks (``Settings.translator``; ``auto`` takes the first that applies)."""

from __future__ import annotations

from hearline.config import Settings
from hearline.live.translate.base import Translator, TranslatorUnavailable, iso
from hearline.live.translate.local import CTranslate2Translator, WhisperTranslator
from hearline.live.translate.remote import LibreTranslateTranslator, OpenAIChatTranslator
from hearline.models.pool import ModelPool


def translation_targets(settings: Settings, engine_translates: bool) -> frozenset[str] | None:
    """ISO codes :func:`make_translator` can translate into (None: any), so menus offer only those."""
    kind = settings.translator
    if kind == "none":
        return frozenset()
    if kind == "whisper" or (kind == "auto" and not settings.translate_model and not settings.translate_url):
        return frozenset({"en"}) if engine_translates else frozenset()
    return None


def make_translator(
    settings: Settings, pool: ModelPool, model: str | None, target: str, engine_translates: bool
) -> Translator:
    """The translator for ``target`` given the settings; raises :class:`TranslatorUnavailable`."""
    kind = settings.translator
    is_english = iso(target) == "en"
    if kind == "none":
        raise TranslatorUnavailable("translation is disabled (translator=none)")
    if kind == "whisper" or (kind == "auto" and is_english and engine_translates):
        if not is_english:
            raise TranslatorUnavailable("the Whisper translate task only translates into English")
        if not engine_translates:
            raise TranslatorUnavailable(f"model {model!r} has no translate task")
        return WhisperTranslator(pool, model)
    if kind == "ctranslate2" or (kind == "auto" and settings.translate_model and not settings.translate_url):
        if not settings.translate_model:
            raise TranslatorUnavailable("translator=ctranslate2 needs translate_model (a CTranslate2 model dir)")
        return CTranslate2Translator(settings.translate_model, threads=1)
    if kind in {"libretranslate", "openai"} or (kind == "auto" and settings.translate_url):
        if not settings.translate_url:
            raise TranslatorUnavailable(f"translator={kind} needs translate_url")
        if kind == "openai":
            return OpenAIChatTranslator(
                settings.translate_url,
                settings.translate_api_key,
                settings.translate_timeout_s,
                settings.translate_model,
            )
        return LibreTranslateTranslator(
            settings.translate_url, settings.translate_api_key, settings.translate_timeout_s
        )
    raise TranslatorUnavailable(
        "no translator configured: set HEARLINE_TRANSLATOR with HEARLINE_TRANSLATE_MODEL (ctranslate2) or "
        "HEARLINE_TRANSLATE_URL (libretranslate/openai); Whisper models translate into English by themselves"
    )
