from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hearline.config import Settings
from tests.helpers.pulse import PulseDaemon
from tests.helpers.server import ServerThread, running_server

# Tests name their model: PocketSphinx unless they choose another, for module- and session-scoped servers
# too.  The Whisper tests take the real default (Whisper base) through ``whisper_default`` / ``whisper_server``,
# which lift this.
os.environ["HEARLINE_MODEL"] = "pocketsphinx"


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's ~/.local/share or the network from tests; no test sees another's files."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A shared server on the bundled PocketSphinx model."""
    model_dir = tmp_path_factory.mktemp("models")
    with running_server(Settings.load(model_dir=Path(model_dir), model="pocketsphinx")) as srv:
        yield srv


@pytest.fixture(scope="module")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseDaemon]:
    """A private PulseAudio daemon with a null sink, one per test module (capture, captions, translation)."""
    with PulseDaemon(tmp_path_factory.mktemp("pulse")) as daemon:
        yield daemon


@pytest.fixture()
def whisper_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing configured: the server's own default (Whisper base from the ``whisper`` extra)."""
    monkeypatch.delenv("HEARLINE_MODEL", raising=False)


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight multilingual Whisper model in CTranslate2's format (see tests/helpers/tiny_whisper.py).

    Loads through the same path as a real faster-whisper model directory; its text is gibberish.
    """
    from tests.helpers.tiny_whisper import build_tiny_whisper

    return build_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper") / "faster-whisper-tiny-random")


@pytest.fixture(scope="session")
def whisper_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A shared server with nothing configured: its default is the real Whisper base of ``hearline[whisper]``."""
    model_dir = tmp_path_factory.mktemp("whisper-models")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("HEARLINE_MODEL", raising=False)
        settings = Settings.load(model_dir=Path(model_dir))
    assert settings.model is None
    with running_server(settings) as srv:
        yield srv


@pytest.fixture(scope="session")
def no_speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Non-speech probes synthesized with sox: silence, 50 Hz hum, white noise, plucked notes, clicks."""
    from tests.helpers.media import no_speech_probes

    return no_speech_probes(tmp_path_factory.mktemp("no-speech"))
