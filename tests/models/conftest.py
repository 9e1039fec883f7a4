from __future__ import annotations

from collections.abc import Iterator

import pytest

from hearline.models.resolve import ENGINE_MODULES
from tests.helpers.fake_engine import LOADS
from tests.helpers.fileserver import FileServer, file_server


@pytest.fixture(autouse=True)
def _fake_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """``engine: fake`` models load tests/helpers/fake_engine.py; each test counts its own loads."""
    monkeypatch.setitem(ENGINE_MODULES, "fake", "tests.helpers.fake_engine")
    LOADS.clear()


@pytest.fixture()
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads allowed: tests/conftest.py makes every test offline; download tests talk only to loopback."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HEARLINE_OFFLINE", raising=False)


@pytest.fixture()
def server() -> Iterator[FileServer]:
    """A loopback file server that logs every request (tests/helpers/fileserver.py)."""
    with file_server() as srv:
        yield srv
