"""Where a faster-whisper model's files are: hub names, directories under ``model_dir``, the HF cache.

Kept apart from the engine so finding a model never needs CTranslate2.  Fetching one is the pool's job
(``hearline.models.download``), done before the engine loads: this module only looks.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hearline.config import Settings
from hearline.engines.base import ModelFilesMissing

logger = logging.getLogger(__package__)  # "hearline.engines.faster_whisper", as before the package split

#: Hub repositories of the published CTranslate2 conversions, by short name.
HUB_REPOS: dict[str, str] = {
    "tiny.en": "Systran/faster-whisper-tiny.en",
    "tiny": "Systran/faster-whisper-tiny",
    "base.en": "Systran/faster-whisper-base.en",
    "base": "Systran/faster-whisper-base",
    "small.en": "Systran/faster-whisper-small.en",
    "small": "Systran/faster-whisper-small",
    "medium.en": "Systran/faster-whisper-medium.en",
    "medium": "Systran/faster-whisper-medium",
    "large-v1": "Systran/faster-whisper-large-v1",
    "large-v2": "Systran/faster-whisper-large-v2",
    "large-v3": "Systran/faster-whisper-large-v3",
    "large": "Systran/faster-whisper-large-v3",
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "distil-small.en": "Systran/faster-distil-whisper-small.en",
    "distil-medium.en": "Systran/faster-distil-whisper-medium.en",
    "distil-large-v2": "Systran/faster-distil-whisper-large-v2",
    "distil-large-v3": "Systran/faster-distil-whisper-large-v3",
    "distil-large-v3.5": "distil-whisper/distil-large-v3.5-ct2",
}

#: What a model directory must hold (``vocabulary.*`` is .txt or .json depending on the converter).
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
VOCABULARY_GLOB = "vocabulary.*"
HUB_PATTERNS = ["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"]


def short_name(name: str) -> str:
    """``faster-whisper-small`` / ``Systran/faster-whisper-small`` -> ``small``; other names unchanged."""
    base = name.rsplit("/", 1)[-1]
    for prefix in ("faster-whisper-", "faster-distil-whisper-"):
        if base.startswith(prefix):
            rest = base[len(prefix) :]
            return ("distil-" + rest) if prefix == "faster-distil-whisper-" else rest
    return base


def hub_repo(name: str) -> str | None:
    """The hub repository for a model name, or ``None`` when it has none."""
    if "/" in name:
        return name
    return HUB_REPOS.get(short_name(name))


def missing_files(path: Path) -> list[str]:
    """Files a faster-whisper model directory lacks (empty list: complete)."""
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if not any(path.glob(VOCABULARY_GLOB)):
        missing.append(VOCABULARY_GLOB)
    return missing


def model_dir_candidates(name: str, model_dir: Path) -> list[Path]:
    """Where ``hearline models pull NAME`` (or a user) puts a model inside ``model_dir``."""
    short = short_name(name)
    names = [f"faster-whisper-{short}", short]
    if "/" in name:
        names += [name.rsplit("/", 1)[-1], name.replace("/", "--")]
    seen: list[Path] = []
    for candidate in names:
        path = model_dir / candidate
        if path not in seen:
            seen.append(path)
    return seen


def hub_offline(settings: Settings) -> bool:
    """True when no download may be attempted (``--offline`` or ``HF_HUB_OFFLINE``)."""
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return bool(settings.offline) or env in {"1", "true", "yes", "on"}


def _expected_message(name: str, searched: list[str], reason: str) -> str:
    files = ", ".join((*REQUIRED_FILES, VOCABULARY_GLOB))
    where = "; ".join(searched)
    return (
        f"faster-whisper model {name!r} is not available {reason}: expected {files} "
        f"(searched: {where}). Fetch it with `hearline models pull {name}` on a machine with network "
        f"access (or copy the files into one of those directories)."
    )


def locate_model(name: str, path: Path | None, settings: Settings, repo: str | None = None) -> Path:
    """The directory holding model ``name`` (its path, the model dir, the Hugging Face cache).

    Raises ModelFilesMissing naming the files and the command that fetches them.
    """
    if path is not None:
        missing = missing_files(path) if path.is_dir() else list(REQUIRED_FILES)
        if missing:
            raise ModelFilesMissing(
                f"{path} is not a complete faster-whisper model directory: missing {', '.join(missing)}"
            )
        return path

    searched: list[str] = []
    model_dir = Path(settings.model_dir).expanduser()
    for candidate in model_dir_candidates(name, model_dir):
        searched.append(str(candidate))
        if candidate.is_dir() and not missing_files(candidate):
            return candidate

    repo = repo or hub_repo(name)
    if repo is None:
        raise ModelFilesMissing(_expected_message(name, searched, "(no hub repository is known for it)"))

    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    searched.append(f"Hugging Face cache ({repo})")
    try:
        cached = Path(huggingface_hub.snapshot_download(repo, local_files_only=True, allow_patterns=HUB_PATTERNS))
        if not missing_files(cached):
            return cached
    except (LocalEntryNotFoundError, OSError) as exc:
        logger.debug("%s not in the Hugging Face cache: %s", repo, exc)

    # Downloads are the pool's (models/pool.py, before the engine loads): here the files are only looked for.
    if hub_offline(settings):
        reason = "offline"
    elif not settings.auto_download:
        reason = "and downloads on first use are off"
    else:
        reason = "(not installed; downloads happen before a model loads)"
    raise ModelFilesMissing(_expected_message(name, searched, reason))
