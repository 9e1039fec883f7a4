"""What a faster-whisper engine asks of its CTranslate2 model: the input length of each ``encode`` and the
``max_length`` of each ``generate``, seen by standing between the two (the real model still does the work)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from hearline.engines.faster_whisper import FasterWhisperEngine


class WhisperCalls:
    """``with WhisperCalls(engine) as seen:`` ... ``seen.encoded``, ``seen.max_lengths`` (any thread's calls)."""

    def __init__(self, engine: FasterWhisperEngine) -> None:
        self.engine, self.real = engine, engine.model.model
        self.encoded: list[int] = []  # input frames of each encode
        self.max_lengths: list[int] = []  # of each generate
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def encode(self, features: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.encoded.append(np.asarray(features).shape[-1])
        return self.real.encode(features, *args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.max_lengths.append(kwargs["max_length"])
        return self.real.generate(*args, **kwargs)

    def __enter__(self) -> WhisperCalls:
        self.engine.model.model = self
        return self

    def __exit__(self, *_: object) -> None:
        self.engine.model.model = self.real
