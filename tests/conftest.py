from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hearline.config import Settings
from tests.helpers import ServerThread, running_server


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's ~/.local/share or the network from tests; no test sees another's files."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A shared server on the bundled PocketSphinx model."""
    model_dir = tmp_path_factory.mktemp("models")
    with running_server(Settings.load(model_dir=Path(model_dir))) as srv:
        yield srv


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight multilingual Whisper model in CTranslate2's format (see tests/tiny_whisper.py).

    Loads through the same path as a real faster-whisper model directory; its text is gibberish.
    """
    from tests.tiny_whisper import build_tiny_whisper

    return build_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper") / "faster-whisper-tiny-random")
