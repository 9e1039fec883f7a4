"""server/run.py: what ``hearline serve`` says when it listens beyond this machine without a key."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hearline.config import Settings
from hearline.server import run


@pytest.mark.parametrize(
    ("host", "key", "warned"),
    [("0.0.0.0", None, True), ("192.168.1.5", None, True), ("0.0.0.0", "sekrit", False), ("127.0.0.1", None, False)],
)
def test_listening_beyond_loopback_without_a_key_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, host: str, key: str | None, warned: bool
) -> None:
    settings = Settings.load(model_dir=tmp_path, model="pocketsphinx", host=host, api_key=key)
    with caplog.at_level(logging.WARNING, logger="hearline.server.run"):
        run.build_servers(settings)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warnings) == warned, warnings
    if warned:
        assert f"listening on {host} without --api-key" in warnings[0] and "HEARLINE_API_KEY" in warnings[0]
