"""sherpa-onnx models: offline SenseVoice / Whisper / Paraformer / transducer, and streaming transducers.

Which factory to call comes from ``spec.options["type"]`` (seed 001's names ``sense_voice``,
``whisper``, ``paraformer``, ``transducer``, plus ``online_transducer`` for streaming models) or is
inferred from the files in ``spec.path`` and the ONNX metadata sherpa-onnx itself keys on.  Metadata
is read by walking the ONNX file's top-level protobuf fields with seeks, so inference and validation
cost a few reads even for a 1 GB model, and a model missing a key sherpa-onnx requires becomes a clear
error here instead of sherpa-onnx exiting the whole process.

SenseVoice and Whisper bind the language (and Whisper the task) when the recognizer is built, so the
engine keeps a small LRU of recognizers keyed by them.  Streaming transducers give true incremental
partials through :meth:`SherpaOnnxEngine.open_stream`.

Timing.  SenseVoice and transducers always give token times, hence words.  Paraformer and Whisper give
them only for exports that carry the extra outputs sherpa-onnx reads, so the engine looks at the graph:
- Paraformer: ``us_alphas``/``us_cif_peak`` (FunASR's timestamp exports) -> a start per token (character
  or word piece), hence words; without them each decoded piece (<= 20 s) is one segment with no words.
- Whisper: a decoder with ``cross_attention_weights`` (sherpa-onnx's ``export-onnx-with-attention.py``)
  -> ``enable_token_timestamps`` (DTW over cross-attention), hence words; otherwise
  ``enable_segment_timestamps`` (Whisper's own timestamp tokens, option ``segment_timestamps: false``
  turns it off) -> segment times inside each piece but no words.  sherpa-onnx releases without these
  ``from_whisper`` options give one segment per piece.
"""

from __future__ import annotations

import os
from typing import Any

from hearline.config import Settings
from hearline.engines.sherpa_onnx.engine import RECOGNIZER_CACHE, SENSE_VOICE_LANGUAGES, SherpaOnnxEngine
from hearline.engines.sherpa_onnx.files import (
    ONLINE_TRANSDUCER,
    PARAFORMER,
    SENSE_VOICE,
    TRANSDUCER,
    TYPES,
    WHISPER,
    SherpaFiles,
    _options,
    locate_files,
)
from hearline.engines.sherpa_onnx.metadata import has_output, onnx_metadata, onnx_output_names
from hearline.engines.sherpa_onnx.online import SherpaOnlineStream
from hearline.engines.sherpa_onnx.results import paraformer_words, result_segments, result_words, tokens_to_words

__all__ = [
    "ONLINE_TRANSDUCER",
    "PARAFORMER",
    "RECOGNIZER_CACHE",
    "SENSE_VOICE",
    "SENSE_VOICE_LANGUAGES",
    "TRANSDUCER",
    "TYPES",
    "WHISPER",
    "SherpaFiles",
    "SherpaOnlineStream",
    "SherpaOnnxEngine",
    "has_output",
    "load",
    "locate_files",
    "onnx_metadata",
    "onnx_output_names",
    "paraformer_words",
    "result_segments",
    "result_words",
    "tokens_to_words",
]


def _num_threads(settings: Settings, opts: dict[str, Any]) -> int:
    if settings.threads:
        return int(settings.threads)
    if opts.get("num_threads"):
        return int(opts["num_threads"])
    return max(1, min(4, os.cpu_count() or 1))


def load(spec: Any, settings: Settings) -> SherpaOnnxEngine:
    """Entry point used by :func:`hearline.models.resolve.load_engine`."""
    opts = _options(spec)
    return SherpaOnnxEngine(spec.name, locate_files(spec), opts, _num_threads(settings, opts))
