"""Pluggable translators for live finals (captions ``lang_to``, /asr ``target_language``).

Captions must never wait for translation, so finals go to a :class:`TranslationWorker` that reports typed
outcomes (:class:`Translation`, :class:`TranslationFailure`); each door puts them in its own wire format.
Only finals are translated.

Translators (``Settings.translator``; ``auto`` picks the first that applies):

- ``whisper``: the speech engine's own translate task (Whisper, into English only) re-run on the final's
  audio, through ``ModelPool.run``.
- ``ctranslate2``: an offline CTranslate2 translation model directory (``Settings.translate_model``):
  NLLB-200, M2M-100 or OPUS-MT converted with ``ct2-transformers-converter``, with its tokenizer beside it
  (``tokenizer.json`` for the ``tokenizers`` library, or SentencePiece ``source.spm``/``target.spm``/
  ``sentencepiece.bpe.model``).  The language-token convention is detected from the vocabulary:
  ``eng_Latn`` (NLLB), ``__en__`` (M2M-100), none (OPUS-MT, one pair per model).
- ``libretranslate``: ``POST {translate_url}/translate`` with ``{q, source, target, format}`` answering
  ``{translatedText}``.
- ``openai``: an OpenAI-compatible chat endpoint (a local LLM server): ``POST {translate_url}/chat/completions``
  with ``translate_model`` as the model.
"""

from hearline.live.translate.base import (
    Translation,
    TranslationEvent,
    TranslationFailed,
    TranslationFailure,
    TranslationRequest,
    Translator,
    TranslatorUnavailable,
)
from hearline.live.translate.choose import make_translator, translation_targets
from hearline.live.translate.local import NLLB_CODES, CTranslate2Translator, WhisperTranslator
from hearline.live.translate.remote import LibreTranslateTranslator, OpenAIChatTranslator, libretranslate_code
from hearline.live.translate.worker import TranslationWorker

__all__ = [
    "NLLB_CODES",
    "CTranslate2Translator",
    "LibreTranslateTranslator",
    "OpenAIChatTranslator",
    "Translation",
    "TranslationEvent",
    "TranslationFailed",
    "TranslationFailure",
    "TranslationRequest",
    "TranslationWorker",
    "Translator",
    "TranslatorUnavailable",
    "WhisperTranslator",
    "libretranslate_code",
    "make_translator",
    "translation_targets",
]
