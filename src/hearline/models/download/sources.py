"""Where a model comes from (URL, hub file, hub repository) and whether the network may be used at all."""

from __future__ import annotations

import os
from pathlib import Path

from hearline.config import Settings
from hearline.models.catalog import ModelEntry


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def is_offline(settings: Settings) -> bool:
    """Offline when settings say so or the environment does (read now, not at import)."""
    return (
        bool(settings.offline)
        or _truthy(os.environ.get("HEARLINE_OFFLINE"))
        or _truthy(os.environ.get("HF_HUB_OFFLINE"))
    )


def hf_endpoint() -> str:
    """The hub endpoint, honouring ``HF_ENDPOINT`` set after huggingface_hub was imported."""
    env = os.environ.get("HF_ENDPOINT")
    if env:
        return env.rstrip("/")
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def source_url(entry: ModelEntry) -> str | None:
    if entry.url:
        return entry.url
    if entry.repo and entry.repo_file:
        return f"{hf_endpoint()}/{entry.repo}/resolve/main/{entry.repo_file}"
    if entry.repo:
        return f"{hf_endpoint()}/{entry.repo}"
    return None


def missing_message(entry: ModelEntry, model_dir: Path, offline: bool) -> str:
    missing = entry.missing_files(model_dir) or entry.expected_files(model_dir)
    listed = ", ".join(str(p) for p in missing[:6]) + (" ..." if len(missing) > 6 else "")
    if entry.download_kind is None:
        hint = "copy the model files there (models.yaml gives no download source for it)"
    elif offline:
        hint = (
            f"offline mode is on, so nothing was downloaded; on a connected machine run "
            f"`hearline models pull {entry.name}` (or `hearline models import PATH` with a copied model)"
        )
    else:
        hint = f"run `hearline models pull {entry.name}`"
    return f"model {entry.name!r} is not installed: expected {listed}; {hint}"


def hub_file(entry: ModelEntry) -> bool:
    """One file of a hub repository (whisper.cpp ggml files), fetched from the hub rather than a URL."""
    return bool(entry.repo and entry.repo_file and not entry.url)
