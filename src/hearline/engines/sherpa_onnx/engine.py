"""The sherpa-onnx engine: one recognizer per (language, task) for the types that bind them at build time.

SenseVoice and Whisper bind the language (and Whisper the task) when the recognizer is built, so the
engine keeps a small LRU of recognizers keyed by them.  Timing depends on the export (see the package
docstring); the engine looks at the graph to know which it has.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from hearline.engines.base import (
    SAMPLE_RATE,
    Capabilities,
    Engine,
    EngineError,
    EngineStream,
    Segment,
    SegmentCallback,
    TranscribeOptions,
    Transcript,
    UnsupportedOption,
    join_text,
)
from hearline.engines.segments import split_long
from hearline.engines.sherpa_onnx.files import (
    ONLINE_TRANSDUCER,
    PARAFORMER,
    SENSE_VOICE,
    TRANSDUCER,
    WHISPER,
    SherpaFiles,
)
from hearline.engines.sherpa_onnx.metadata import has_output, onnx_metadata
from hearline.engines.sherpa_onnx.online import SherpaOnlineStream, decode_online
from hearline.engines.sherpa_onnx.results import result_segments

logger = logging.getLogger(__name__)

SENSE_VOICE_LANGUAGES = frozenset({"zh", "en", "ja", "ko", "yue"})
RECOGNIZER_CACHE = 3  # recognizers per engine for models that bind language/task at load


def _lang_code(value: str | None) -> str | None:
    """``<|en|>`` / ``en`` -> ``en``; empty -> None."""
    if not value:
        return None
    code = value.strip().strip("<|>").lower()
    return None if code in ("", "auto") else code


class SherpaOnnxEngine(Engine):
    kind = "sherpa-onnx"

    def __init__(self, name: str, located: SherpaFiles, options: dict[str, Any], num_threads: int) -> None:
        super().__init__(name)
        import sherpa_onnx

        self._so = sherpa_onnx
        self.type = located.type
        self.files = located.files
        self.options = options
        self.num_threads = max(1, num_threads)
        self.use_itn = bool(options.get("use_itn", True))
        self.default_language = _lang_code(str(options.get("language") or "")) or None
        self.decoding_method = str(options.get("decoding_method", "greedy_search"))
        # Other types only have greedy search, and sherpa-onnx exits the process when asked for more.
        allowed = ("greedy_search", "modified_beam_search") if self.type in (TRANSDUCER, ONLINE_TRANSDUCER) else ()
        if self.decoding_method != "greedy_search" and self.decoding_method not in allowed:
            raise EngineError(f"decoding_method {self.decoding_method!r} is not available for {self.type} models")
        self._whisper_languages: frozenset[str] | None = None
        self._english_only = False
        if self.type == WHISPER:
            # sherpa-onnx exits the process on a language the model lacks, so know them up front.
            meta = onnx_metadata(self.files["encoder"])
            if "is_multilingual" in meta:
                self._english_only = meta["is_multilingual"].strip() in ("0", "false", "False")
            else:
                self._english_only = ".en" in self.files["encoder"].name
            codes = [c.strip().lower() for c in meta.get("all_language_codes", "").split(",") if c.strip()]
            self._whisper_languages = frozenset(codes) or None
        self._whisper_timing = self._whisper_timing_kwargs() if self.type == WHISPER else {}
        # Paraformer exports with timestamps have 4 outputs: logits, token_num, us_alphas, us_cif_peak.
        self._paraformer_times = self.type == PARAFORMER and has_output(self.files["paraformer"], "us_cif_peak", 4)
        self._caps = self._capabilities()
        languages = self._caps.languages
        if self.default_language and languages is not None and self.default_language not in languages:
            raise EngineError(
                f"model {name!r} is configured with language {self.default_language!r}, which it does not "
                f"support (supported: {', '.join(sorted(languages))})"
            )
        self._lock = threading.Lock()
        self._recognizers: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._file_bytes = sum(p.stat().st_size for p in self.files.values())
        # Build the default recognizer now so a broken model fails at load time, not on first use.
        self._recognizer(self.default_language, "transcribe")

    # -- description --

    def _capabilities(self) -> Capabilities:
        configured = self.options.get("languages")
        languages: frozenset[str] | None = frozenset(str(x).lower() for x in configured) if configured else None
        if self.type == SENSE_VOICE:
            return Capabilities(
                languages=languages or SENSE_VOICE_LANGUAGES,
                translate=False,
                native_streaming=False,
                word_timestamps=True,
                language_detection=True,
            )
        if self.type == WHISPER:
            return Capabilities(
                languages=frozenset({"en"}) if self._english_only else (languages or self._whisper_languages),
                translate=not self._english_only,
                native_streaming=False,
                word_timestamps=bool(self._whisper_timing.get("enable_token_timestamps")),
                language_detection=not self._english_only,
            )
        if self.type == PARAFORMER:
            return Capabilities(
                languages=languages or frozenset({"zh", "en"}),
                word_timestamps=self._paraformer_times,
            )
        return Capabilities(
            languages=languages,
            translate=False,
            native_streaming=self.type == ONLINE_TRANSDUCER,
            word_timestamps=True,
            language_detection=False,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def memory_bytes(self) -> int:
        with self._lock:
            count = max(1, len(self._recognizers))
        # ONNX Runtime keeps roughly the weights plus arena buffers per session.
        return int(self._file_bytes * 1.5 * count) + 64 * 1024 * 1024

    # -- recognizers --

    def _whisper_timing_kwargs(self) -> dict[str, bool]:
        """``from_whisper`` keywords for the finest timing this export and sherpa-onnx version give.

        Token times need cross-attention outputs (without them sherpa-onnx only warns on every decode);
        segment times come from Whisper's timestamp tokens, which any export has.
        """
        supported = inspect.signature(self._so.OfflineRecognizer.from_whisper).parameters
        if "enable_token_timestamps" in supported and has_output(self.files["decoder"], "cross_attention_weights", 4):
            return {"enable_token_timestamps": True}
        if "enable_segment_timestamps" in supported and bool(self.options.get("segment_timestamps", True)):
            return {"enable_segment_timestamps": True}
        logger.info("sherpa-onnx %s: Whisper results carry no timestamps; one segment per piece", self.name)
        return {}

    def _binds_language(self) -> bool:
        return self.type in (SENSE_VOICE, WHISPER)

    def _recognizer(self, language: str | None, task: str) -> Any:
        """The recognizer for (language, task), building it (LRU-cached) for types that bind them."""
        key = (language or "", task) if self._binds_language() else ("", "transcribe")
        with self._lock:
            recognizer = self._recognizers.get(key)
            if recognizer is not None:
                self._recognizers.move_to_end(key)
                return recognizer
            recognizer = self._build(*key)
            self._recognizers[key] = recognizer
            while len(self._recognizers) > RECOGNIZER_CACHE:
                evicted, _ = self._recognizers.popitem(last=False)
                logger.info("sherpa-onnx %s: dropped recognizer for %s", self.name, evicted)
            return recognizer

    def _build(self, language: str, task: str) -> Any:
        so = self._so
        f = {role: str(path) for role, path in self.files.items()}
        threads = self.num_threads
        logger.info(
            "sherpa-onnx %s: building %s recognizer (language=%r task=%s)", self.name, self.type, language, task
        )
        try:
            if self.type == SENSE_VOICE:
                return so.OfflineRecognizer.from_sense_voice(
                    model=f["model"],
                    tokens=f["tokens"],
                    num_threads=threads,
                    language=language,
                    use_itn=self.use_itn,
                )
            if self.type == WHISPER:
                return so.OfflineRecognizer.from_whisper(
                    encoder=f["encoder"],
                    decoder=f["decoder"],
                    tokens=f["tokens"],
                    num_threads=threads,
                    language=language or ("en" if self._english_only else ""),
                    task=task,
                    tail_paddings=int(self.options.get("tail_paddings", -1)),
                    **self._whisper_timing,
                )
            if self.type == PARAFORMER:
                return so.OfflineRecognizer.from_paraformer(
                    paraformer=f["paraformer"], tokens=f["tokens"], num_threads=threads
                )
            if self.type == TRANSDUCER:
                return so.OfflineRecognizer.from_transducer(
                    encoder=f["encoder"],
                    decoder=f["decoder"],
                    joiner=f["joiner"],
                    tokens=f["tokens"],
                    num_threads=threads,
                    decoding_method=self.decoding_method,
                    model_type=str(self.options.get("model_type", "transducer")),
                    modeling_unit=str(self.options.get("modeling_unit", "cjkchar")),
                )
            return so.OnlineRecognizer.from_transducer(
                tokens=f["tokens"],
                encoder=f["encoder"],
                decoder=f["decoder"],
                joiner=f["joiner"],
                num_threads=threads,
                decoding_method=self.decoding_method,
                enable_endpoint_detection=False,
            )
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"sherpa-onnx could not load {self.type} model {self.name!r}: {exc}") from exc

    # -- offline --

    def check_options(self, options: TranscribeOptions) -> None:
        super().check_options(options)
        if options.task == "translate" and self._english_only:
            raise UnsupportedOption(f"model {self.name!r} is English-only and cannot translate")

    def _language_for(self, options: TranscribeOptions) -> str | None:
        if options.language:
            return options.language.split("-")[0].lower()
        return self.default_language

    def transcribe(
        self,
        audio: np.ndarray,
        options: TranscribeOptions,
        on_segment: SegmentCallback | None = None,
    ) -> Transcript:
        self.check_options(options)
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        duration = audio.size / SAMPLE_RATE
        language = self._language_for(options)
        recognizer = self._recognizer(language, options.task)
        segments: list[Segment] = []
        detected: str | None = None
        for offset, piece in split_long(audio):
            start_s = offset / SAMPLE_RATE
            result = self._decode_piece(recognizer, piece)
            detected = detected or _lang_code(getattr(result, "lang", "") or "")
            found = result_segments(
                result, start_s, piece.size / SAMPLE_RATE, first_id=len(segments), paraformer=self.type == PARAFORMER
            )
            for segment in found:
                segments.append(segment)
                if on_segment is not None:
                    on_segment(segment)
        return Transcript(
            text=join_text([s.text for s in segments]),
            segments=segments,
            language=language or detected,
            language_probability=None,
            duration=duration,
        )

    def _decode_piece(self, recognizer: Any, piece: np.ndarray) -> Any:
        if self.type == ONLINE_TRANSDUCER:
            return decode_online(recognizer, piece)
        stream = recognizer.create_stream()
        stream.accept_waveform(SAMPLE_RATE, piece)
        recognizer.decode_stream(stream)
        return stream.result

    # -- streaming --

    def open_stream(self, options: TranscribeOptions) -> EngineStream:
        if self.type != ONLINE_TRANSDUCER:
            return super().open_stream(options)
        self.check_options(options)
        return SherpaOnlineStream(self, self._recognizer(None, "transcribe"))

    def close(self) -> None:
        with self._lock:
            self._recognizers.clear()
