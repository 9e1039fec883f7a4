"""Cutting audio into decodable pieces and words into caption-sized segments.

Engines that decode a bounded window (PocketSphinx, sherpa-onnx offline models) share these so that
long files are split, and their words grouped into segments, the same way whatever the engine.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

from hearline.engines.base import SAMPLE_RATE, Segment, Word

MAX_PIECE_S = 20.0  # longest piece of audio handed to a windowed decoder
PAUSE_SPLIT_S = 0.5  # a pause this long between words starts a new output segment
MAX_SEGMENT_S = 12.0  # a segment is closed once it spans this long

# Scripts written without spaces between words (kana, CJK ideographs, hangul syllables).
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def split_long(audio: np.ndarray, max_s: float = MAX_PIECE_S) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (offset, piece) no longer than ``max_s``, cut at the quietest 20 ms in each piece's second half."""
    limit = int(max_s * SAMPLE_RATE)
    frame = SAMPLE_RATE // 50
    start = 0
    n = audio.size
    while n - start > limit:
        lo, hi = start + limit // 2, start + limit
        region = audio[lo:hi]
        usable = region.size // frame * frame
        energy = np.square(region[:usable]).reshape(-1, frame).mean(axis=1)
        cut = lo + int(np.argmin(energy)) * frame + frame // 2
        yield start, audio[start:cut]
        start = cut
    if n - start > 0:
        yield start, audio[start:]


def group_words(
    words: list[Word],
    first_id: int = 0,
    pause_s: float = PAUSE_SPLIT_S,
    max_segment_s: float = MAX_SEGMENT_S,
) -> list[Segment]:
    """Cut a word sequence into segments at pauses (or every ``max_segment_s`` of speech).

    Words of scripts written without spaces are joined without them; ``avg_logprob`` comes from the
    words' probabilities where the engine gives them.
    """
    segments: list[Segment] = []
    current: list[Word] = []

    def flush() -> None:
        if not current:
            return
        probs = [w.probability for w in current if w.probability]
        segments.append(
            Segment(
                id=first_id + len(segments),
                start=current[0].start,
                end=current[-1].end,
                text=" " + join_words([w.word for w in current]),
                words=list(current),
                avg_logprob=float(np.mean(np.log(probs))) if probs else None,
            )
        )
        current.clear()

    for word in words:
        if current and (word.start - current[-1].end >= pause_s or word.end - current[0].start > max_segment_s):
            flush()
        current.append(word)
    flush()
    return segments


def join_words(words: list[str]) -> str:
    """Words as text: a space between two words unless both are in a script written without spaces.

    Mixed Chinese/English output (Paraformer, SenseVoice) then reads "你好 hello" rather than
    "你 好 hello", and all-CJK or all-spaced text comes out as before.
    """
    text = ""
    for word in words:
        if text and not (CJK.match(text[-1]) and CJK.match(word[:1])):
            text += " "
        text += word
    return text
