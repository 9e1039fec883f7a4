from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hearline.config import Settings
from tests.helpers import ServerThread, running_server


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's ~/.local/share or the network from tests."""
    data = tmp_path_factory.getbasetemp() / "xdg-data"
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A shared server on the bundled PocketSphinx model."""
    model_dir = tmp_path_factory.mktemp("models")
    with running_server(Settings.load(model_dir=Path(model_dir))) as srv:
        yield srv
