from __future__ import annotations

import pytest

from hearline.models.resolve import ENGINE_MODULES
from tests.models.fake_engine import LOADS


@pytest.fixture(autouse=True)
def _fake_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """``engine: fake`` models load tests/models/fake_engine.py; each test counts its own loads."""
    monkeypatch.setitem(ENGINE_MODULES, "fake", "tests.models.fake_engine")
    LOADS.clear()
