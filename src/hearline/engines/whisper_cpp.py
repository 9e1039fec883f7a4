"""whisper.cpp (through pywhispercpp) for ggml Whisper files: catalog models or any file a user points at.

The file is checked before whisper.cpp sees it (magic, hparams, sizes): whisper.cpp aborts the whole
process on some malformed inputs, and pywhispercpp silently *downloads* a model when given a name that
is not an existing file, which offline mode forbids.  One whisper.cpp context holds one decoding
state and pywhispercpp keeps its decode parameters on the model object, so calls are serialised with
a lock; the pool decides how many engines (and so contexts) exist.

Decoding follows each request: pywhispercpp fixes only the *default* parameters at ``Model(...)``, and
``whisper_full`` reads ``strategy``, ``beam_search.beam_size``, ``greedy.best_of`` and the temperatures
from the params it is given (it sizes its decoders and KV cache per call), so every call sets them:
``beam_size`` > 1 is beam search of that width, 1 is greedy; ``temperature`` 0 means the fallback
schedule 0, 0.2, ... and anything else one fixed sampling temperature.  A models.yaml ``beam_size``
option caps the width (``beam_size: 1`` makes a slow machine always decode greedily).
"""

from __future__ import annotations

import logging
import math
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hearline.config import Settings
    from hearline.models.resolve import ModelSpec

from hearline.engines.base import (
    SAMPLE_RATE,
    Capabilities,
    Engine,
    EngineError,
    ModelFilesMissing,
    Segment,
    SegmentCallback,
    TranscribeOptions,
    Transcript,
    UnsupportedOption,
    Word,
    join_text,
)

logger = logging.getLogger(__name__)

GGML_MAGIC = 0x67676D6C
GGUF_MAGIC = 0x46554747  # "GGUF" little-endian: not a format whisper.cpp reads
MODEL_SUFFIXES = (".bin", ".ggml", ".gguf")
BEST_OF = 5  # candidates sampled at a temperature above 0 (whisper-cli's and faster-whisper's default)
_CENTI = 100.0  # whisper.cpp times are in units of 10 ms


@dataclass(frozen=True)
class GgmlHeader:
    n_vocab: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int
    n_mels: int
    ftype: int

    @property
    def multilingual(self) -> bool:
        return self.n_vocab >= 51865  # whisper.cpp's whisper_vocab::is_multilingual


def read_header(path: Path) -> GgmlHeader:
    """Magic and hparams of a ggml Whisper file; EngineError if it is not one."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(4 + 11 * 4)
    except OSError as exc:
        raise EngineError(f"cannot read {path}: {exc}") from exc
    if len(data) < 48:
        raise EngineError(f"{path} is too short to be a whisper.cpp ggml model")
    (magic,) = struct.unpack("<I", data[:4])
    if magic == GGUF_MAGIC:
        raise EngineError(f"{path} is a GGUF file; whisper.cpp needs a ggml Whisper model (ggml-*.bin)")
    if magic != GGML_MAGIC:
        raise EngineError(f"{path} is not a whisper.cpp ggml model (bad magic {magic:#x})")
    header = GgmlHeader(*struct.unpack("<11i", data[4:48]))
    sizes = (header.n_vocab, header.n_audio_ctx, header.n_audio_state, header.n_audio_head, header.n_text_ctx)
    if min(sizes) <= 0 or header.n_mels not in (80, 128) or header.n_audio_state % header.n_audio_head:
        raise EngineError(f"{path} has implausible Whisper hyper-parameters: {header}")
    return header


def locate_file(spec: Any) -> Path:
    """The ggml file of a spec: the path itself, ``options["file"]`` inside a directory, or its only model."""
    path = Path(spec.path).expanduser() if spec.path is not None else None
    options = dict(spec.options or {})
    wanted = options.get("file") or (options.get("files") or {}).get("model")
    if path is None:
        raise ModelFilesMissing(f"whisper.cpp model {spec.name!r} has no file on disk")
    if path.is_dir():
        if wanted:
            candidate = path / str(wanted)
            if candidate.is_file():
                return candidate
            raise ModelFilesMissing(f"whisper.cpp model {spec.name!r} is missing its file {candidate}")
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in MODEL_SUFFIXES)
        if len(found) == 1:
            return found[0]
        if not found:
            raise ModelFilesMissing(f"whisper.cpp model {spec.name!r}: no ggml-*.bin file in {path}")
        names = ", ".join(p.name for p in found)
        raise EngineError(f"whisper.cpp model {spec.name!r}: several model files in {path} ({names}); name one")
    if not path.is_file():
        raise ModelFilesMissing(f"whisper.cpp model {spec.name!r} is missing its file {path}")
    return path


class WhisperCppEngine(Engine):
    kind = "whisper-cpp"

    def __init__(self, name: str, path: Path, num_threads: int, options: dict[str, Any] | None = None) -> None:
        super().__init__(name)
        self.path = path
        self.options = dict(options or {})
        self.header = read_header(path)
        self.num_threads = max(1, num_threads)
        self.initial_prompt = str(self.options.get("initial_prompt") or self.options.get("prompt") or "")
        self.default_language = str(self.options.get("language") or "").strip().lower() or None
        # An operator's cap on the per-request beam width (0: none).
        self.max_beam_size = max(0, int(self.options.get("beam_size", 0) or 0))
        from pywhispercpp.model import Model

        try:
            self._model = Model(
                str(path),
                params_sampling_strategy=0,  # only the defaults; each call sets its own strategy
                # no redirect: pywhispercpp would dup2() the process-wide stderr while loading
                redirect_whispercpp_logs_to=False,
                n_threads=self.num_threads,
                print_progress=False,
                print_realtime=False,
                print_timestamps=False,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise EngineError(f"whisper.cpp could not load {path}: {exc}") from exc
        if getattr(self._model, "_ctx", None) is None:
            raise EngineError(f"whisper.cpp could not load {path}")
        self._lock = threading.Lock()
        multilingual = self.header.multilingual
        self._caps = Capabilities(
            languages=None if multilingual else frozenset({"en"}),
            translate=multilingual,
            native_streaming=False,
            word_timestamps=True,
            language_detection=multilingual,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def memory_bytes(self) -> int:
        # weights, plus ~24 MB of fixed compute buffers and KV caches that grow with the model width
        # (bench/models.py prints the real RSS a loaded file adds)
        return int(self.path.stat().st_size * 1.2) + 24 * 1024 * 1024 + 40 * self.header.n_text_state * 1024 * 8

    def check_options(self, options: TranscribeOptions) -> None:
        super().check_options(options)
        if options.task == "translate" and not self.header.multilingual:
            raise UnsupportedOption(f"model {self.name!r} is English-only and cannot translate")

    def beam_width(self, options: TranscribeOptions) -> int:
        """The request's beam width, within the model's cap; 1 means greedy decoding."""
        width = max(1, int(options.beam_size))
        return min(width, self.max_beam_size) if self.max_beam_size else width

    def decoding_params(self, options: TranscribeOptions) -> dict[str, Any]:
        """Sampling parameters for one ``whisper_full`` call (pywhispercpp keeps whatever was set last)."""
        import _pywhispercpp as pw

        width = self.beam_width(options)
        strategy = pw.whisper_sampling_strategy
        return {
            "strategy": strategy.WHISPER_SAMPLING_BEAM_SEARCH if width > 1 else strategy.WHISPER_SAMPLING_GREEDY,
            "beam_search": {"beam_size": width if width > 1 else -1, "patience": -1.0},
            "greedy": {"best_of": BEST_OF},
            "temperature": float(options.temperature),
            "temperature_inc": 0.2 if options.temperature == 0.0 else 0.0,
        }

    def transcribe(
        self,
        audio: np.ndarray,
        options: TranscribeOptions,
        on_segment: SegmentCallback | None = None,
    ) -> Transcript:
        self.check_options(options)
        audio = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
        duration = audio.size / SAMPLE_RATE
        language = (options.language or self.default_language or "").split("-")[0].lower()
        if not self.header.multilingual:
            language = "en"
        prompt = " ".join(p for p in (self.initial_prompt, options.prompt or "") if p).strip()
        params: dict[str, Any] = {
            "language": language,  # "" -> whisper.cpp detects
            "translate": options.task == "translate",
            "initial_prompt": prompt,
            "n_threads": self.num_threads,
            "token_timestamps": options.word_timestamps,
            "no_context": True,
            **self.decoding_params(options),
        }
        segments: list[Segment] = []
        received = [0]  # whisper.cpp's own segment index (empty segments included)

        with self._lock:
            model: Any = self._model  # pywhispercpp keeps its context in a private attribute
            ctx = model._ctx

            def collect(raw: Any) -> None:
                index = received[0]
                received[0] += 1
                segment = _convert(raw, len(segments), duration)
                if segment is None:
                    return
                if options.word_timestamps:
                    segment.words = _words(ctx, index, segment.start, segment.end)
                segments.append(segment)
                if on_segment is not None:
                    on_segment(segment)

            try:
                raw_segments = model.transcribe(audio, new_segment_callback=collect, **params)
            except (RuntimeError, ValueError) as exc:
                raise EngineError(f"whisper.cpp failed on {self.name!r}: {exc}") from exc
            if received[0] != len(raw_segments):
                # The callback is how segments stream out; fall back to the final list if it was skipped.
                logger.debug("whisper.cpp callback saw %d of %d segments", received[0], len(raw_segments))
                segments = [s for s in (_convert(r, i, duration) for i, r in enumerate(raw_segments)) if s is not None]
            detected = language or _detected_language(ctx)
        for index, segment in enumerate(segments):
            segment.id = index
        return Transcript(
            text=join_text([s.text for s in segments]),
            segments=segments,
            language=detected or language or None,
            language_probability=None,
            duration=duration,
        )


def _convert(raw: Any, index: int, duration: float) -> Segment | None:
    """A pywhispercpp segment (t0/t1 in 10 ms units) -> Segment in seconds, clamped to the audio."""
    text = str(raw.text)
    if not text.strip():
        return None
    start = min(duration, max(0.0, raw.t0 / _CENTI))
    end = min(duration, max(start, raw.t1 / _CENTI))
    probability = getattr(raw, "probability", math.nan)
    return Segment(
        id=index,
        start=round(start, 3),
        end=round(end, 3),
        text=" " + text.strip(),
        avg_logprob=math.log(probability) if probability and probability > 0 else None,
    )


def _words(ctx: Any, seg_index: int, seg_start: float, seg_end: float) -> list[Word]:
    """Merge a segment's tokens into words using whisper.cpp's token timestamps.

    Token text is taken as bytes: byte-level BPE splits multi-byte characters across tokens, so a
    single token need not be valid UTF-8; a word is decoded only once it is complete.
    """
    import _pywhispercpp as pw

    pieces: list[tuple[bytes, float, float, float]] = []
    try:
        eot = pw.whisper_token_eot(ctx)
        for j in range(pw.whisper_full_n_tokens(ctx, seg_index)):
            data = pw.whisper_full_get_token_data(ctx, seg_index, j)
            if data.id >= eot:
                continue  # special and timestamp tokens
            raw = pw.whisper_token_to_bytes(ctx, data.id)
            pieces.append((bytes(raw), data.t0 / _CENTI, data.t1 / _CENTI, float(data.p)))
    except (RuntimeError, ValueError, IndexError) as exc:
        logger.debug("no token timestamps from whisper.cpp: %s", exc)
        return []
    groups: list[list[tuple[bytes, float, float, float]]] = []
    for piece in pieces:
        if not groups or (piece[0].startswith(b" ") and b"".join(p[0] for p in groups[-1]).strip()):
            groups.append([])
        groups[-1].append(piece)
    words: list[Word] = []
    floor = seg_start
    for group in groups:
        text = b"".join(p[0] for p in group).decode("utf-8", "replace").strip()
        if not text:
            continue
        lo = min(max(group[0][1], floor), seg_end)  # keep words ordered even when a model is confused
        hi = min(max(max(p[2] for p in group), lo), seg_end)
        probs = np.maximum([p[3] for p in group], 1e-9)
        words.append(Word(text, round(lo, 3), round(hi, 3), float(np.exp(np.mean(np.log(probs))))))
        floor = hi
    return words


def _detected_language(ctx: Any) -> str | None:
    import _pywhispercpp as pw

    try:
        lang_id = pw.whisper_full_lang_id(ctx)
    except (RuntimeError, ValueError) as exc:
        logger.debug("no detected language: %s", exc)
        return None
    if lang_id is None or lang_id < 0:
        return None
    code = pw.whisper_lang_str(lang_id)
    return code.decode() if isinstance(code, bytes) else code


def _num_threads(settings: Settings, options: dict[str, Any]) -> int:
    if settings.threads:
        return int(settings.threads)
    if options.get("num_threads"):
        return int(options["num_threads"])
    return max(1, min(4, os.cpu_count() or 1))


def load(spec: ModelSpec, settings: Settings) -> WhisperCppEngine:
    """Entry point used by :func:`hearline.models.resolve.load_engine`."""
    options = dict(spec.options or {})
    nested = options.pop("options", None)
    if isinstance(nested, dict):
        options.update(nested)
    path = locate_file(spec)
    return WhisperCppEngine(spec.name, path, _num_threads(settings, options), options)
