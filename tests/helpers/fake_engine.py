"""A light fake engine (``engine: fake`` in a models.yaml) for tests of the pool's bookkeeping and
scheduling, where a real model would only add load time.  Registered by ``tests/models/conftest.py`` for
its tests; others register it themselves (``ENGINE_MODULES``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import yaml

from hearline.config import Settings
from hearline.engines.base import Capabilities, Engine, Transcript

LOADS: dict[str, int] = {}


_loads_lock = threading.Lock()


class FakeEngine(Engine):
    kind = "fake"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.closed = False

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(languages=frozenset({"en"}))

    def transcribe(self, audio, options, on_segment=None) -> Transcript:  # type: ignore[no-untyped-def]
        return Transcript("fake", [], "en", None, len(audio) / 16000)

    def close(self) -> None:
        self.closed = True


class BatchingFakeEngine(FakeEngine):
    """Declares batched window decoding as faster-whisper does (``options: {batching: N}``: N replicas)."""

    def __init__(self, name: str, replicas: int) -> None:
        super().__init__(name)
        self.parallel_calls = replicas

    def window_key(self, options):  # type: ignore[no-untyped-def]
        return None

    def decode_windows(self, requests):  # type: ignore[no-untyped-def]
        return [Transcript("fake", [], "en", None, 0.0) for _ in requests]


def load(spec, settings):  # type: ignore[no-untyped-def]
    """Engine entry point for ``engine: fake`` models.yaml entries (slow enough for loads to overlap)."""
    with _loads_lock:
        LOADS[spec.name] = LOADS.get(spec.name, 0) + 1
    time.sleep(0.2)
    replicas = spec.options.get("batching")
    return BatchingFakeEngine(spec.name, int(replicas)) if replicas else FakeEngine(spec.name)


def fake_settings(
    tmp_path: Path, names: list[str], memory_mb: int = 60, batching: int = 0, **overrides: object
) -> Settings:
    """Settings whose models.yaml lists ``names`` as fake models (each with an empty directory); ``batching``:
    models that batch window decodes, with that many replicas."""
    model_dir = tmp_path / "models"
    models: dict[str, dict[str, object]] = {}
    for name in names:
        (model_dir / name).mkdir(parents=True)
        models[name] = {"engine": "fake", "dir": name, "memory_mb": memory_mb}
        if batching:
            models[name]["options"] = {"batching": batching}
    models_file = tmp_path / "models.yaml"
    models_file.write_text(yaml.safe_dump({"models": models}))
    return Settings.load(model_dir=model_dir, models_file=models_file, **overrides)
