"""From the name a user typed to a loadable model.

Every engine module exposes ``load(spec, settings) -> Engine``; this module only decides which one
and with what files.  The catalog/registry (``models/catalog.py``, ``models/registry.py``) extend
what names mean; a path always wins.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearline.config import Settings
from hearline.engines.base import Engine

logger = logging.getLogger(__name__)

POCKETSPHINX = "pocketsphinx"
FASTER_WHISPER = "faster-whisper"
SHERPA_ONNX = "sherpa-onnx"
WHISPER_CPP = "whisper-cpp"

ENGINE_MODULES = {
    POCKETSPHINX: "hearline.engines.pocketsphinx",
    FASTER_WHISPER: "hearline.engines.faster_whisper",
    SHERPA_ONNX: "hearline.engines.sherpa_onnx",
    WHISPER_CPP: "hearline.engines.whisper_cpp",
}

DEFAULT_ALIASES = {"", "default", "whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"}
POCKETSPHINX_NAMES = {"pocketsphinx", "pocketsphinx-en-us", "en-us"}

FASTER_WHISPER_SIZES = {
    "tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
    "large-v1", "large-v2", "large-v3", "large", "large-v3-turbo", "turbo",
    "distil-small.en", "distil-medium.en", "distil-large-v2", "distil-large-v3", "distil-large-v3.5",
}  # fmt: skip


class UnknownModel(LookupError):
    """No model by that name or path."""

    def __init__(self, name: str) -> None:
        super().__init__(f"model {name!r} not found")
        self.name = name


@dataclass(frozen=True)
class ModelSpec:
    name: str
    engine: str
    path: Path | None = None  # a local file or directory, when known
    repo: str | None = None  # hub repository, for engines that download from a hub
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def resolve_model(name: str | None, settings: Settings) -> ModelSpec:
    requested = (name or "").strip()
    if requested in DEFAULT_ALIASES:
        if settings.model and settings.model.strip() not in DEFAULT_ALIASES:
            return resolve_model(settings.model, settings)
        return default_spec(settings)
    if requested.lower() in POCKETSPHINX_NAMES:
        return ModelSpec(name=POCKETSPHINX, engine=POCKETSPHINX)
    path = Path(requested).expanduser()
    if path.is_absolute() or requested.startswith("."):
        if not path.exists():
            raise UnknownModel(requested)
        return spec_for_path(path)
    if requested in FASTER_WHISPER_SIZES or requested.startswith(("distil-", "Systran/", "faster-whisper-")):
        return ModelSpec(name=requested, engine=FASTER_WHISPER)
    raise UnknownModel(requested)


def default_spec(settings: Settings) -> ModelSpec:
    return ModelSpec(name=POCKETSPHINX, engine=POCKETSPHINX)


def spec_for_path(path: Path) -> ModelSpec:
    """Guess the engine of a local model from the files it has."""
    name = str(path)
    if path.is_file():
        if path.suffix in {".bin", ".gguf", ".ggml"}:
            return ModelSpec(name=name, engine=WHISPER_CPP, path=path)
        raise UnknownModel(name)
    if (path / "model.bin").exists():
        return ModelSpec(name=name, engine=FASTER_WHISPER, path=path)
    if (path / "tokens.txt").exists():
        return ModelSpec(name=name, engine=SHERPA_ONNX, path=path)
    if (path / "en-us").is_dir() and (path / "en-us.lm.bin").exists():
        return ModelSpec(name=name, engine=POCKETSPHINX, path=path)
    raise UnknownModel(name)


def load_engine(spec: ModelSpec, settings: Settings) -> Engine:
    module = importlib.import_module(ENGINE_MODULES[spec.engine])
    return module.load(spec, settings)
