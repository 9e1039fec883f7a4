"""What the download tests share: settings over a models.yaml of their own, and what a download left behind."""

from __future__ import annotations

from pathlib import Path

import yaml

from hearline.config import Settings
from hearline.models import download


def settings_with(tmp_path: Path, models: dict, **overrides) -> Settings:
    """Settings whose models.yaml holds ``models`` and whose model directory is ``tmp_path/models``."""
    models_file = tmp_path / "models.yaml"
    models_file.write_text(yaml.safe_dump({"models": models}))
    return Settings.load(model_dir=tmp_path / "models", models_file=models_file, **overrides)


def leftovers(model_dir: Path) -> list[Path]:
    """What downloads left in the model directory's partial-download area."""
    partial = model_dir / download.PARTIAL_DIR
    return sorted(partial.iterdir()) if partial.exists() else []
