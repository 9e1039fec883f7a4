"""Whisper through faster-whisper (CTranslate2): the accurate, multilingual engine.

A model is named by size (``tiny`` .. ``large-v3-turbo``, ``*.en``, ``distil-*``), by hub repository
(``Systran/faster-whisper-small``) or given as a local directory.  Names are looked up, in order, in
``settings.model_dir`` (``faster-whisper-<name>/``), in the Hugging Face cache, and only then fetched
from the hub, and only when neither ``settings.offline`` nor ``HF_HUB_OFFLINE`` forbids it, so an
offline server never blocks on the network and says exactly which files it is missing instead.

A package (split to keep modules small), re-exporting everything the single module offered:
:mod:`.engine` (the engine class and ``load``), :mod:`.model_files` (finding/fetching model files),
:mod:`.options` (transcription defaults), :mod:`.segments` (segment conversion).
"""

from hearline.engines.faster_whisper.engine import (
    MEMORY_FACTOR,
    PER_WORKER_BYTES,
    FasterWhisperEngine,
    default_threads,
    load,
    resolve_compute_type,
    resolve_device,
)
from hearline.engines.faster_whisper.engine import logger as logger
from hearline.engines.faster_whisper.model_files import (
    HUB_PATTERNS,
    HUB_REPOS,
    REQUIRED_FILES,
    VOCABULARY_GLOB,
    hub_offline,
    hub_repo,
    locate_model,
    missing_files,
    model_dir_candidates,
    short_name,
)
from hearline.engines.faster_whisper.model_files import _expected_message as _expected_message
from hearline.engines.faster_whisper.options import DEFAULTS_FILE, FALLBACK_TEMPERATURES, read_defaults
from hearline.engines.faster_whisper.options import _transcribe_parameters as _transcribe_parameters
from hearline.engines.faster_whisper.segments import _clamp as _clamp
from hearline.engines.faster_whisper.segments import _convert as _convert
from hearline.engines.faster_whisper.windows import WindowRequest, batch_key, decode_windows

__all__ = [
    "DEFAULTS_FILE",
    "FALLBACK_TEMPERATURES",
    "HUB_PATTERNS",
    "HUB_REPOS",
    "MEMORY_FACTOR",
    "PER_WORKER_BYTES",
    "REQUIRED_FILES",
    "VOCABULARY_GLOB",
    "FasterWhisperEngine",
    "WindowRequest",
    "batch_key",
    "decode_windows",
    "default_threads",
    "hub_offline",
    "hub_repo",
    "load",
    "locate_model",
    "missing_files",
    "model_dir_candidates",
    "read_defaults",
    "resolve_compute_type",
    "resolve_device",
    "short_name",
]
