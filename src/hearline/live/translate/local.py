"""Translators that run here: Whisper's own translate task and an offline CTranslate2 model."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hearline.engines.base import TranscribeOptions
from hearline.live.translate.base import TranslationFailed, TranslationRequest, Translator, TranslatorUnavailable, iso
from hearline.models.pool import ModelPool
from hearline.models.scheduler import Work


# -- Whisper's own translate task -------------------------------------------------------------
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
        options = TranscribeOptions(language=iso(request.source), task="translate")
        transcript = await self.pool.run(engine, engine.transcribe, request.audio, options, work=Work.TRANSLATION)
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
            token = NLLB_CODES.get(key) or NLLB_CODES.get(iso(code) or "")
        elif self.family == "m2m100":
            token = f"__{iso(code)}__"
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
