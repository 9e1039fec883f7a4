"""Transcription defaults: per-model ``transcribe`` keywords and the temperature fallback schedule.

Split out of the engine: reading ``hearline.json`` / registry options needs no loaded model.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any

from hearline.engines.base import EngineError

logger = logging.getLogger(__package__)  # "hearline.engines.faster_whisper", as before the package split

#: Per-model transcription defaults may sit next to the weights (``hearline.json``:
#: ``{"transcribe": {...}}``) or come from the registry (``ModelSpec.options["transcribe"]``).
DEFAULTS_FILE = "hearline.json"

#: faster-whisper's temperature fallback schedule, used when the request leaves temperature at 0.
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def _transcribe_parameters() -> set[str]:
    from faster_whisper import WhisperModel

    return set(inspect.signature(WhisperModel.transcribe).parameters) - {"self", "audio"}


def read_defaults(model_path: Path, spec_options: dict[str, Any]) -> dict[str, Any]:
    """Transcription keyword defaults for this model (file next to the weights, then registry options)."""
    defaults: dict[str, Any] = {}
    file = model_path / DEFAULTS_FILE
    if file.is_file():
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EngineError(f"cannot read {file}: {exc}") from exc
        defaults.update(data.get("transcribe", {}) if isinstance(data, dict) else {})
    defaults.update(spec_options.get("transcribe", {}) or {})
    allowed = _transcribe_parameters()
    unknown = sorted(set(defaults) - allowed)
    for key in unknown:
        logger.warning("ignoring unknown faster-whisper transcribe default %r for %s", key, model_path)
        defaults.pop(key)
    return defaults
