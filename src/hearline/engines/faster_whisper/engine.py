"""The faster-whisper engine class, its device/compute-type choices and the ``load`` entry point.

One ``WhisperModel`` serves every caller: CTranslate2 runs ``num_workers`` replicas over shared weights,
so up to that many ``transcribe`` calls (one per pool worker thread) decode in parallel.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hearline.config import Settings
    from hearline.engines.faster_whisper.windows import WindowRequest
    from hearline.models.resolve import ModelSpec

from hearline.engines.base import (
    SAMPLE_RATE,
    Capabilities,
    Engine,
    EngineError,
    Segment,
    SegmentCallback,
    TranscribeOptions,
    Transcript,
    UnsupportedOption,
    join_text,
)
from hearline.engines.faster_whisper.draft import short_encode
from hearline.engines.faster_whisper.model_files import locate_model
from hearline.engines.faster_whisper.options import FALLBACK_TEMPERATURES, read_defaults
from hearline.engines.faster_whisper.segments import _convert
from hearline.engines.guards import LoopGuard

logger = logging.getLogger(__package__)  # "hearline.engines.faster_whisper", as before the package split

# Resident size relative to model.bin: weights (int8 on CPU shrinks float16 files, so this is generous)
# plus activations, the KV cache and the feature extractor's buffers.
MEMORY_FACTOR = 1.5
PER_WORKER_BYTES = 40 * 1024 * 1024


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def resolve_compute_type(compute_type: str, device: str) -> str:
    """``default`` means int8 on CPU (fast, small) and float16 on CUDA."""
    if compute_type and compute_type != "default":
        return compute_type
    return "float16" if device == "cuda" else "int8"


class FasterWhisperEngine(Engine):
    kind = "faster-whisper"

    def __init__(
        self,
        name: str,
        model_path: Path,
        *,
        device: str = "cpu",
        compute_type: str = "default",
        cpu_threads: int = 0,
        num_workers: int = 1,
        defaults: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name)
        from faster_whisper import WhisperModel

        self.model_path = Path(model_path)
        self.device = resolve_device(device)
        self.compute_type = resolve_compute_type(compute_type, self.device)
        self.num_workers = max(1, num_workers)
        self.defaults = dict(defaults or {})
        logger.info(
            "loading faster-whisper %s from %s (device=%s, compute_type=%s, threads=%s, workers=%d)",
            name, self.model_path, self.device, self.compute_type, cpu_threads or "auto", self.num_workers,
        )  # fmt: skip
        try:
            self.model = WhisperModel(
                str(self.model_path),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=max(0, cpu_threads),
                num_workers=self.num_workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise EngineError(f"cannot load faster-whisper model {name!r} from {self.model_path}: {exc}") from exc
        self.multilingual = bool(self.model.model.is_multilingual)
        self._languages = self._model_languages()
        self._caps = Capabilities(
            languages=self._languages,  # exactly the model's language tokens
            translate=self.multilingual,
            native_streaming=False,
            word_timestamps=True,
            language_detection=True,
        )
        self._closed = threading.Event()

    def _model_languages(self) -> frozenset[str]:
        if not self.multilingual:
            return frozenset({"en"})
        tokenizer = self.model.hf_tokenizer
        return frozenset(
            code for code in self.model.supported_languages if tokenizer.token_to_id(f"<|{code}|>") is not None
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def languages(self) -> frozenset[str]:
        """ISO codes this model accepts for ``language``."""
        return self._languages

    def memory_bytes(self) -> int:
        try:
            size = (self.model_path / "model.bin").stat().st_size
        except OSError:
            return 0
        return int(size * MEMORY_FACTOR) + PER_WORKER_BYTES * self.num_workers

    def _language(self, code: str | None) -> str | None:
        if code is None:
            return None
        from hearline.languages import UnknownLanguage, engine_code

        try:
            iso = engine_code(code)
        except UnknownLanguage:
            iso = code.strip().split("-")[0].split("_")[0].lower()
        if iso is None:
            return None
        if iso not in self._languages:
            raise UnsupportedOption(f"model {self.name!r} does not support language {code!r}")
        return iso

    def transcribe_kwargs(self, options: TranscribeOptions) -> dict[str, Any]:
        """faster-whisper ``transcribe`` keywords for ``options`` (model defaults underneath)."""
        kwargs: dict[str, Any] = dict(self.defaults)
        temperature: float | tuple[float, ...] = (
            FALLBACK_TEMPERATURES if options.temperature <= 0 and options.fallback else max(0.0, options.temperature)
        )
        kwargs.update(
            language=self._language(options.language),
            task=options.task,
            initial_prompt=options.prompt or None,
            temperature=temperature,
            beam_size=max(1, int(options.beam_size)),
            word_timestamps=bool(options.word_timestamps),
            # no words from no speech: Whisper writes text over silence, hum and noise unless VAD skips it
            vad_filter=True if options.vad_filter is None else options.vad_filter,
            hotwords=options.hotwords or None,
        )
        return kwargs

    def transcribe(
        self,
        audio: np.ndarray,
        options: TranscribeOptions,
        on_segment: SegmentCallback | None = None,
    ) -> Transcript:
        self.check_options(options)
        if self._closed.is_set():
            raise EngineError(f"model {self.name!r} has been unloaded")
        audio = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
        if short_encode(options) and (request := self.window_request(audio, options)) is not None:
            draft = self.decode_windows([request])[0]  # only the window decode can shorten the encoder's input
            if on_segment is not None:
                for segment in draft.segments:
                    on_segment(segment)
            return draft
        duration = audio.size / SAMPLE_RATE
        kwargs = self.transcribe_kwargs(options)
        segments: list[Segment] = []
        if audio.size == 0:
            return Transcript("", [], kwargs["language"], None, 0.0)
        try:
            generator, info = self.model.transcribe(audio, **kwargs)
            last_start = 0.0
            guard = LoopGuard()
            for raw in generator:  # segments come out as each 30 s window is decoded
                if guard.drops(raw.text, raw.compression_ratio):
                    logger.info("dropped a repetition loop at %.1f s: %.80r", raw.start, raw.text)
                    continue
                segment = _convert(raw, len(segments), duration, last_start)
                last_start = segment.start
                segments.append(segment)
                if on_segment is not None:
                    on_segment(segment)
        except ValueError as exc:  # faster-whisper's answer to options it cannot honour
            raise UnsupportedOption(f"model {self.name!r}: {exc}") from exc
        except RuntimeError as exc:
            raise EngineError(f"model {self.name!r} failed: {exc}") from exc
        return Transcript(
            text=join_text([s.text for s in segments]),
            segments=segments,
            language=info.language,
            language_probability=float(info.language_probability) if info.language_probability is not None else None,
            duration=duration,
        )

    @property
    def parallel_calls(self) -> int:
        """Batched calls that run at once: one per CTranslate2 replica."""
        return self.num_workers

    def window_key(self, options: TranscribeOptions) -> Hashable:
        """Windows whose keys are equal may share one batched decode."""
        from hearline.engines.faster_whisper.windows import batch_key

        return batch_key(options)

    def window_request(self, audio: np.ndarray, options: TranscribeOptions) -> WindowRequest | None:
        """``transcribe(audio, options)`` as one request for :meth:`decode_windows`, the VAD (when the options
        keep it) run here in the caller's thread; None when it needs the long-form loop of ``transcribe``."""
        from hearline.engines.faster_whisper.speech import speech_window

        self.check_options(options)
        return speech_window(self, audio, options)

    def decode_windows(self, requests: Sequence[WindowRequest]) -> list[Transcript]:
        """Several independent <= 30 s windows (e.g. from different sessions) in one batched decode."""
        from hearline.engines.faster_whisper.windows import decode_windows

        return decode_windows(self, requests)

    def close(self) -> None:
        self._closed.set()
        model = getattr(self, "model", None)
        if model is not None:
            try:
                model.model.unload_model()
            except (RuntimeError, AttributeError) as exc:
                logger.debug("unload of %s: %s", self.name, exc)


def default_threads(num_workers: int) -> int:
    """Intra-op threads per replica when the user did not choose: twice the replicas' share of the cores.

    A lone call (one live session's pass) then uses the cores the other replicas leave idle, which halves
    its latency on two cores, while all replicas busy at once oversubscribe the cores at most twofold, which
    costs no throughput (``bench/whisper_threads.py`` prints both).
    """
    cores = os.cpu_count() or 1
    return max(1, min(cores, -(-2 * cores // max(1, num_workers))))


def load(spec: ModelSpec, settings: Settings) -> FasterWhisperEngine:
    """Entry point used by :func:`hearline.models.resolve.load_engine`."""
    path = locate_model(spec.name, spec.path, settings, repo=spec.repo)
    num_workers = max(1, settings.max_concurrency_per_model)
    return FasterWhisperEngine(
        name=spec.name,
        model_path=path,
        device=settings.device,
        compute_type=settings.compute_type,
        cpu_threads=settings.threads or default_threads(num_workers),
        num_workers=num_workers,
        defaults=read_defaults(path, spec.options),
    )
