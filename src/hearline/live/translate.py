"""Pluggable translators for caption finals (``lang_to``).

Captions must never wait for translation, so the captions service hands finals to a
:class:`TranslationWorker`: a bounded queue drained by one task, in caption order, each call bounded by a
timeout; a full queue skips the oldest request with an error event.  Only finals are translated.

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

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from hearline import languages
from hearline.config import Settings
from hearline.engines.base import TranscribeOptions
from hearline.models.pool import ModelPool

logger = logging.getLogger(__name__)


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


class Translator(ABC):
    name: str = ""

    @abstractmethod
    async def translate(self, request: TranslationRequest) -> str: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients/threads."""


def _iso(code: str | None) -> str | None:
    if not code or code.lower() in {languages.AUTO, languages.NONE}:
        return None
    try:
        return languages.engine_code(code)
    except languages.UnknownLanguage:
        return code.split("-")[0].lower()


def _display(code: str | None) -> str:
    if not code:
        return "the detected language"
    try:
        lang = languages.lookup(code)
    except languages.UnknownLanguage:
        return code
    return lang.name


# -- Whisper's own translate task ----------------------------------------------------------------
class WhisperTranslator(Translator):
    """Into English with the speech model itself (Whisper's translate task) on the final's audio."""

    name = "whisper"

    def __init__(self, pool: ModelPool, model: str | None) -> None:
        self.pool = pool
        self.model = model

    async def translate(self, request: TranslationRequest) -> str:
        if request.audio is None or request.audio.size == 0:
            raise TranslationFailed("no audio kept for this caption")
        engine = await self.pool.get(self.model)
        options = TranscribeOptions(language=_iso(request.source), task="translate")
        transcript = await self.pool.run(engine, engine.transcribe, request.audio, options, reject_when_full=False)
        return transcript.text.strip()


# -- CTranslate2 ---------------------------------------------------------------------------------
# FLORES-200 codes (NLLB) for the table's languages; the table's zh-Hant/yue-* choose the script.
NLLB_CODES = {
    "en": "eng_Latn", "zh": "zho_Hans", "zh-hans": "zho_Hans", "zh-hant": "zho_Hant", "de": "deu_Latn",
    "es": "spa_Latn", "ru": "rus_Cyrl", "ko": "kor_Hang", "fr": "fra_Latn", "ja": "jpn_Jpan", "pt": "por_Latn",
    "tr": "tur_Latn", "pl": "pol_Latn", "ca": "cat_Latn", "nl": "nld_Latn", "ar": "arb_Arab", "sv": "swe_Latn",
    "it": "ita_Latn", "id": "ind_Latn", "hi": "hin_Deva", "fi": "fin_Latn", "vi": "vie_Latn", "he": "heb_Hebr",
    "uk": "ukr_Cyrl", "el": "ell_Grek", "ms": "zsm_Latn", "cs": "ces_Latn", "ro": "ron_Latn", "da": "dan_Latn",
    "hu": "hun_Latn", "ta": "tam_Taml", "no": "nob_Latn", "th": "tha_Thai", "ur": "urd_Arab", "hr": "hrv_Latn",
    "bg": "bul_Cyrl", "lt": "lit_Latn", "mi": "mri_Latn", "ml": "mal_Mlym", "cy": "cym_Latn", "sk": "slk_Latn",
    "te": "tel_Telu", "fa": "pes_Arab", "lv": "lvs_Latn", "bn": "ben_Beng", "sr": "srp_Cyrl", "az": "azj_Latn",
    "sl": "slv_Latn", "kn": "kan_Knda", "et": "est_Latn", "mk": "mkd_Cyrl", "eu": "eus_Latn", "is": "isl_Latn",
    "hy": "hye_Armn", "ne": "npi_Deva", "mn": "khk_Cyrl", "bs": "bos_Latn", "kk": "kaz_Cyrl", "sq": "als_Latn",
    "sw": "swh_Latn", "gl": "glg_Latn", "mr": "mar_Deva", "pa": "pan_Guru", "si": "sin_Sinh", "km": "khm_Khmr",
    "sn": "sna_Latn", "yo": "yor_Latn", "so": "som_Latn", "af": "afr_Latn", "oc": "oci_Latn", "ka": "kat_Geor",
    "be": "bel_Cyrl", "tg": "tgk_Cyrl", "sd": "snd_Arab", "gu": "guj_Gujr", "am": "amh_Ethi", "yi": "ydd_Hebr",
    "lo": "lao_Laoo", "uz": "uzn_Latn", "fo": "fao_Latn", "ht": "hat_Latn", "ps": "pbt_Arab", "tk": "tuk_Latn",
    "nn": "nno_Latn", "mt": "mlt_Latn", "sa": "san_Deva", "lb": "ltz_Latn", "my": "mya_Mymr", "bo": "bod_Tibt",
    "tl": "tgl_Latn", "mg": "plt_Latn", "as": "asm_Beng", "tt": "tat_Cyrl", "ln": "lin_Latn", "ha": "hau_Latn",
    "ba": "bak_Cyrl", "jw": "jav_Latn", "su": "sun_Latn", "yue": "yue_Hant", "yue-hans": "yue_Hant",
    "yue-hant": "yue_Hant",
}  # fmt: skip


class _Tokenizer:
    """tokens <-> text over either the ``tokenizers`` library or SentencePiece."""

    def __init__(self, model_dir: Path) -> None:
        self._hf: Any = None
        self._sp_source: Any = None
        self._sp_target: Any = None
        if (model_dir / "tokenizer.json").exists():
            from tokenizers import Tokenizer

            self._hf = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
            return
        pairs = [("source.spm", "target.spm"), ("sentencepiece.bpe.model",) * 2, ("spm.model",) * 2]
        for source_name, target_name in pairs:
            if (model_dir / source_name).exists():
                import sentencepiece

                self._sp_source = sentencepiece.SentencePieceProcessor(model_file=str(model_dir / source_name))
                self._sp_target = sentencepiece.SentencePieceProcessor(model_file=str(model_dir / target_name))
                return
        raise TranslatorUnavailable(
            f"no tokenizer in {model_dir}: expected tokenizer.json or SentencePiece source.spm/target.spm"
        )

    def has_token(self, token: str) -> bool:
        if self._hf is not None:
            return self._hf.token_to_id(token) is not None
        return self._sp_source.piece_to_id(token) != self._sp_source.unk_id()

    def encode(self, text: str) -> list[str]:
        if self._hf is not None:
            return list(self._hf.encode(text, add_special_tokens=False).tokens)
        return list(self._sp_source.encode(text, out_type=str))

    def decode(self, tokens: list[str]) -> str:
        if self._hf is not None:
            ids = [i for i in (self._hf.token_to_id(t) for t in tokens) if i is not None]
            return str(self._hf.decode(ids, skip_special_tokens=True))
        return str(self._sp_target.decode(tokens))


class CTranslate2Translator(Translator):
    """An offline CTranslate2 translation model; one worker thread so translation never starves recognition."""

    name = "ctranslate2"

    def __init__(self, model_dir: str | Path, threads: int = 1, max_decoding_length: int = 256) -> None:
        import ctranslate2

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "model.bin").exists():
            raise TranslatorUnavailable(f"no CTranslate2 model (model.bin) in {self.model_dir}")
        self._tokenizer = _Tokenizer(self.model_dir)
        self._translator = ctranslate2.Translator(
            str(self.model_dir), device="cpu", inter_threads=1, intra_threads=max(1, threads)
        )
        self.max_decoding_length = max_decoding_length
        if self._tokenizer.has_token("eng_Latn"):
            self.family = "nllb"
        elif self._tokenizer.has_token("__en__"):
            self.family = "m2m100"
        else:
            self.family = "plain"  # OPUS-MT: the model is one language pair
        # Translation is not a speech engine, so it does not take a ModelPool slot; one dedicated thread
        # bounds it to a single core and keeps calls in caption order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hearline-translate")

    def _lang_token(self, code: str | None) -> str | None:
        if code is None:
            return None
        key = code.lower()
        if self.family == "nllb":
            token = NLLB_CODES.get(key) or NLLB_CODES.get(_iso(code) or "")
        elif self.family == "m2m100":
            token = f"__{_iso(code)}__"
        else:
            return None
        if token is None or not self._tokenizer.has_token(token):
            raise TranslationFailed(f"the translation model has no token for language {code!r}")
        return token

    def _run(self, text: str, source: str | None, target: str) -> str:
        tokens = self._tokenizer.encode(text)
        source_token = self._lang_token(source) if self.family != "plain" else None
        target_token = self._lang_token(target)
        if self.family == "nllb" or self.family == "m2m100":
            tokens = ([source_token] if source_token else []) + tokens + ["</s>"]
        prefix = [[target_token]] if target_token else None
        results = self._translator.translate_batch(
            [tokens], target_prefix=prefix, beam_size=2, max_decoding_length=self.max_decoding_length
        )
        out = list(results[0].hypotheses[0])
        if target_token and out and out[0] == target_token:
            out = out[1:]
        return self._tokenizer.decode(out).strip()

    async def translate(self, request: TranslationRequest) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, request.text, request.source, request.target)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# -- HTTP translators ----------------------------------------------------------------------------
class _HttpTranslator(Translator):
    def __init__(self, url: str, api_key: str | None, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def _post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        try:
            response = await self._client.post(self.url + path, json=body, headers=headers or {})
        except httpx.HTTPError as exc:
            raise TranslationFailed(f"{self.name} server unreachable at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise TranslationFailed(f"{self.name} server answered {response.status_code}: {response.text[:200]}")
        try:
            return response.json()
        except json.JSONDecodeError as exc:
            raise TranslationFailed(f"{self.name} server answered non-JSON: {response.text[:200]}") from exc

    async def close(self) -> None:
        await self._client.aclose()


def libretranslate_code(code: str | None) -> str:
    """LibreTranslate's codes: ISO-639-1, ``zh-Hans`` as ``zh`` and ``zh-Hant`` as ``zt``; unknown: ``auto``."""
    if code is None:
        return "auto"
    if code.lower() == "zh-hant":
        return "zt"
    return _iso(code) or "auto"


class LibreTranslateTranslator(_HttpTranslator):
    name = "libretranslate"

    async def translate(self, request: TranslationRequest) -> str:
        body: dict[str, Any] = {
            "q": request.text,
            "source": libretranslate_code(request.source),
            "target": libretranslate_code(request.target),
            "format": "text",
        }
        if self.api_key:
            body["api_key"] = self.api_key
        answer = await self._post("/translate", body)
        if not isinstance(answer, dict) or not isinstance(answer.get("translatedText"), str):
            raise TranslationFailed(f"libretranslate answer has no translatedText: {str(answer)[:200]}")
        return str(answer["translatedText"])


class OpenAIChatTranslator(_HttpTranslator):
    name = "openai"

    def __init__(self, url: str, api_key: str | None, timeout_s: float, model: str | None) -> None:
        super().__init__(url, api_key, timeout_s)
        self.model = model or "default"

    async def translate(self, request: TranslationRequest) -> str:
        system = (
            f"You translate live captions from {_display(request.source)} into {_display(request.target)}. "
            "Answer with the translation only, no notes or quotes."
        )
        body = {
            "model": self.model,
            "temperature": 0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": request.text}],
        }
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        answer = await self._post("/chat/completions", body, headers)
        try:
            return str(answer["choices"][0]["message"]["content"]).strip()
        except (KeyError, IndexError, TypeError) as exc:
            raise TranslationFailed(f"chat answer has no choices[0].message.content: {str(answer)[:200]}") from exc


# -- choosing one --------------------------------------------------------------------------------
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
    is_english = _iso(target) == "en"
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


# -- the worker ----------------------------------------------------------------------------------
Publish = Callable[[str, dict[str, Any]], Awaitable[None]]


class TranslationWorker:
    """Translates finals in order, off the caption path; publishes ``translate`` or ``error`` events."""

    def __init__(self, translator: Translator, publish: Publish, maxsize: int = 32, timeout_s: float = 30.0) -> None:
        self.translator = translator
        self._publish = publish
        self._queue: asyncio.Queue[TranslationRequest] = asyncio.Queue(maxsize=max(1, maxsize))
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None
        self._busy = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="hearline-translate")

    def submit(self, request: TranslationRequest) -> TranslationRequest | None:
        """Queue a final without waiting; returns the request skipped to make room, if any."""
        skipped = None
        if self._queue.full():
            skipped = self._queue.get_nowait()
        self._queue.put_nowait(request)
        return skipped

    async def _loop(self) -> None:
        while True:
            request = await self._queue.get()
            self._busy = True
            try:
                text = await asyncio.wait_for(self.translator.translate(request), timeout=self._timeout_s)
            except asyncio.TimeoutError:
                await self._error(request, f"translation timed out after {self._timeout_s:.0f}s")
                continue
            except (TranslationFailed, TranslatorUnavailable, OSError, ValueError, RuntimeError) as exc:
                logger.warning("translation of caption %d failed: %s", request.caption_id, exc)
                await self._error(request, str(exc))
                continue
            finally:
                self._busy = False
            await self._publish(
                "translate",
                {
                    "id": request.caption_id,
                    "text": text,
                    "lang_from": request.source,
                    "lang_to": request.target,
                    "translator": self.translator.name,
                },
            )

    async def _error(self, request: TranslationRequest, message: str) -> None:
        await self._publish(
            "error",
            {"message": f"translation failed: {message}", "id": request.caption_id, "kind": "translate"},
        )

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) until queued finals are translated."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while (self._busy or not self._queue.empty()) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.translator.close()
