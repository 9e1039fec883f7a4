"""The decoder's view of one utterance: its not-yet-decoded audio and where its final stands."""

from __future__ import annotations

import asyncio
import threading
from collections import deque

import numpy as np

from hearline.live.policies import Result


class _Utterance:
    """Audio of one utterance that the decoder has not consumed yet, plus its bookkeeping."""

    def __init__(self, utterance_id: int, start_sample: int, speech_sample: int, audio: np.ndarray) -> None:
        self.id = utterance_id
        self.start_sample = start_sample
        self.speech_sample = speech_sample
        self.end_sample: int | None = None
        self.closed = False
        self.dropped = False
        self.begun = False  # the policy has been told (and may hold a stream slot)
        self.fed = 0  # samples handed to the policy
        self.paused = False  # speech stopped a moment ago (segmenter Pause, no Resume yet)
        self.pause_end: int | None = None  # where sound (not just speech) stopped before that pause
        self.sound_end: int | None = None  # ... and before the endpoint (segmenter End)
        self.guess: asyncio.Future[Result | None] | None = None  # final being prepared during this pause
        self.guess_started: threading.Event | None = None  # set by the worker thread once that pass runs
        self.guess_tried = False
        self._chunks: deque[np.ndarray] = deque([audio])
        self.pending = int(audio.size)
        # All of it, for policies whose final is a fresh pass over the utterance (bounded by the
        # segmenter's maximum utterance length).
        self._history: list[np.ndarray] = [audio]

    def add(self, audio: np.ndarray) -> None:
        self._chunks.append(audio)
        self.pending += int(audio.size)
        self._history.append(audio)

    def audio(self) -> np.ndarray:
        """Every sample of the utterance so far, consumed or not."""
        if len(self._history) > 1:
            self._history = [np.concatenate(self._history)]
        return self._history[0]

    def take(self) -> np.ndarray:
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        audio = self._chunks[0] if len(self._chunks) == 1 else np.concatenate(list(self._chunks))
        self._chunks.clear()
        self.pending = 0
        return audio

    def give_back(self, audio: np.ndarray) -> None:
        if audio.size:
            self._chunks.appendleft(audio)
            self.pending += int(audio.size)
