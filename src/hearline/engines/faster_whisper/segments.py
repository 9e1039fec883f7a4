"""faster-whisper segments to ours, with times clamped to the audio.

Split out of the engine: a pure conversion, testable without a model.
"""

from __future__ import annotations

from typing import Any

from hearline.engines.base import Segment, Word


def _clamp(value: float, low: float, high: float) -> float:
    return round(min(max(float(value), low), high), 3)


def _convert(raw: Any, index: int, duration: float, last_start: float) -> Segment:
    """faster-whisper segment -> ours, times clamped to the audio and kept non-decreasing.

    Whisper can predict timestamps past the end of a short clip (the window is padded to 30 s);
    clients rely on segments and words staying inside ``[0, duration]``.
    """
    start = _clamp(raw.start, last_start, duration)
    end = _clamp(raw.end, start, duration)
    words: list[Word] = []
    word_start = start
    for w in raw.words or []:
        ws = _clamp(w.start, word_start, end)
        we = _clamp(w.end, ws, end)
        words.append(Word(word=w.word, start=ws, end=we, probability=float(w.probability)))
        word_start = ws
    return Segment(
        id=index,
        start=start,
        end=end,
        text=raw.text,
        words=words,
        avg_logprob=float(raw.avg_logprob),
        no_speech_prob=float(raw.no_speech_prob),
        compression_ratio=float(raw.compression_ratio),
        temperature=float(raw.temperature) if raw.temperature is not None else None,
        tokens=[int(t) for t in raw.tokens],
        seek=int(raw.seek),
    )
