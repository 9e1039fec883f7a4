"""Guards against Whisper's known hallucinations: text that the audio does not hold.

Whisper decodes a 30 s window whatever it contains, and on non-speech or a stuck decoder it loops on one
phrase ("I'm sorry I'm sorry ...", "1-2 1-2 1-2 ...").  faster-whisper falls back to higher temperatures when
a segment's gzip compression ratio passes 2.4, but a loop can stay below that or survive every fallback.
These checks look at the words themselves: a segment mostly made of one n-gram repeated back to back, or the
same segment decoded over and over, is a loop, never speech a client should see.
"""

from __future__ import annotations

import re
from collections import deque

#: faster-whisper's own compression-ratio threshold; a segment still above it after every fallback is a loop
COMPRESSION_RATIO_LIMIT = 2.4
MAX_NGRAM = 6
MIN_REPEATS = 4  # "no no no" is speech; the same n-gram four or more times running, covering ...
MIN_LOOP_SHARE = 0.5  # ... at least half of the segment's words (and MIN_LOOP_WORDS of them), is a loop
MIN_LOOP_WORDS = 8
SEGMENT_REPEATS = 3  # the same segment text this many times running: the third and later are a loop

_WORD = re.compile(r"[\w']+")


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def longest_run(words: list[str]) -> tuple[int, int]:
    """(n, repeats) of the n-gram repeated back to back the most words' worth in ``words``."""
    best = (1, 1)
    for n in range(1, min(MAX_NGRAM, len(words) // 2) + 1):
        for start in range(n):
            run = 1
            for i in range(start + n, len(words) - n + 1, n):
                if words[i : i + n] == words[i - n : i]:
                    run += 1
                    if run * n > best[0] * best[1]:
                        best = (n, run)
                else:
                    run = 1
    return best


def is_repetition_loop(text: str) -> bool:
    words = _words(text)
    n, repeats = longest_run(words)
    covered = n * repeats
    return repeats >= MIN_REPEATS and covered >= MIN_LOOP_WORDS and covered >= MIN_LOOP_SHARE * len(words)


def is_hallucination(text: str, compression_ratio: float | None) -> bool:
    """Whether a decoded segment is a loop rather than speech (see the module docstring)."""
    if compression_ratio is not None and compression_ratio > COMPRESSION_RATIO_LIMIT:
        return True
    return is_repetition_loop(text)


class LoopGuard:
    """Judges one transcription's segments in order: drops loops within a segment and across segments."""

    def __init__(self) -> None:
        self._recent: deque[str] = deque(maxlen=SEGMENT_REPEATS)  # normalized texts of the last segments

    def drops(self, text: str, compression_ratio: float | None) -> bool:
        """Whether this segment (the next one decoded) is a loop rather than speech."""
        self._recent.append(" ".join(_words(text)))
        repeated = len(self._recent) == SEGMENT_REPEATS and bool(self._recent[0]) and len(set(self._recent)) == 1
        return repeated or is_hallucination(text, compression_ratio)
