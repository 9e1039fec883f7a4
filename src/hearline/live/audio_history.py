"""The last stretch of a session's 16 kHz audio, so that a final's audio can be cut out by its times.

Whisper's translate task works on audio, not text: a translator of live finals needs each final's samples, which
the session consumes.  Times are on the session's sample clock, as the finals' ``start``/``end`` are.  Memory is
bounded by ``keep_s``; a final older than that simply has no audio any more.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from hearline.engines.base import SAMPLE_RATE

#: audio kept for the Whisper translator (finals are at most max_utterance_s long and translated soon after)
KEEP_S = 120.0


class AudioHistory:
    def __init__(self, keep_s: float = KEEP_S) -> None:
        self._limit = int(keep_s * SAMPLE_RATE)
        self._blocks: deque[np.ndarray] = deque()
        self._start = 0  # session sample of the first kept sample
        self._end = 0  # session sample after the last one

    def add(self, block: np.ndarray) -> None:
        if not block.size:
            return
        self._blocks.append(np.asarray(block, dtype=np.float32))
        self._end += block.size
        while self._blocks and self._end - self._start - self._blocks[0].size >= self._limit:
            self._start += self._blocks.popleft().size

    def between(self, start_s: float, end_s: float) -> np.ndarray | None:
        """Samples from ``start_s`` to ``end_s`` (session clock), or None when none of them is kept."""
        a = max(self._start, round(start_s * SAMPLE_RATE))
        b = min(self._end, round(end_s * SAMPLE_RATE))
        if b <= a:
            return None
        pieces, offset = [], self._start  # only the blocks overlapping [a, b): a final is seconds of 120
        for block in self._blocks:
            if offset + block.size > a and offset < b:
                pieces.append(block[max(0, a - offset) : b - offset])
            offset += block.size
        return np.concatenate(pieces)
