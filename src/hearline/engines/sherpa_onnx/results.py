"""sherpa-onnx recognition results -> Segments and Words (token times, model segments, or one span)."""

from __future__ import annotations

from typing import Any

import numpy as np

from hearline.engines.base import Segment, Word
from hearline.engines.segments import CJK, group_words


def _clean_text(text: str) -> str:
    return " ".join(text.replace("▁", " ").split()) if not CJK.search(text) else text.replace("▁", " ").strip()


def _token_text(token: str) -> str:
    return token.replace("▁", " ")


def _starts_word(token: str) -> bool:
    return token.startswith((" ", "▁")) or bool(CJK.match(token))


_SPECIAL_TOKENS = ("<s>", "</s>", "<unk>", "<blk>", "<blank>")


def _is_special(token: str) -> bool:
    return token.startswith("<|") or token in _SPECIAL_TOKENS


def tokens_to_words(
    tokens: list[str], times: list[float], end_s: float, durations: list[float] | None = None
) -> list[Word]:
    """Merge BPE pieces into words (a piece starting with a space or ▁ opens one; CJK chars are words).

    A word ends where the next one starts (at most 1 s later) unless the model gives token durations
    (Whisper's DTW times do): then it ends where its last piece does.
    """
    words: list[tuple[str, float, float | None]] = []
    for i, (token, start) in enumerate(zip(tokens, times, strict=False)):
        if _is_special(token):
            continue
        text = _token_text(token)
        piece_end = start + durations[i] if durations is not None and i < len(durations) else None
        if not words or _starts_word(token) or CJK.match(words[-1][0][-1:] or ""):
            words.append((text.strip(), start, piece_end))
        else:
            words[-1] = (words[-1][0] + text, words[-1][1], piece_end)
    return _timed_words(words, end_s)


def paraformer_words(tokens: list[str], times: list[float], end_s: float) -> list[Word]:
    """Paraformer pieces as words: every token is one (a CJK character or an English word) except that
    a piece ending in ``@@`` continues into the next (``hel@@ lo`` -> ``hello``)."""
    words: list[tuple[str, float, float | None]] = []
    joining = False
    for token, start in zip(tokens, times, strict=False):
        if _is_special(token):
            continue
        text = token[:-2] if token.endswith("@@") else token
        if joining and words:
            words[-1] = (words[-1][0] + text, words[-1][1], None)
        else:
            words.append((text, start, None))
        joining = token.endswith("@@")
    return _timed_words(words, end_s)


def _timed_words(words: list[tuple[str, float, float | None]], end_s: float) -> list[Word]:
    result: list[Word] = []
    for i, (text, start, own_end) in enumerate(words):
        if not text:
            continue
        nxt = words[i + 1][1] if i + 1 < len(words) else end_s
        end = min(own_end, end_s) if own_end is not None else min(nxt, start + 1.0, end_s)
        result.append(Word(word=text, start=round(start, 3), end=round(max(start, end), 3)))
    return result


def result_words(result: Any, length_s: float, paraformer: bool = False) -> list[Word]:
    """Words (times relative to the piece) from a result's token times; [] when it has none."""
    tokens = [str(t) for t in (getattr(result, "tokens", []) or [])]
    times = [float(t) for t in (getattr(result, "timestamps", []) or [])]
    if not tokens or len(times) != len(tokens):
        return []
    times = [min(max(0.0, t), length_s) for t in times]
    # Timestamps are token starts and should not decrease; enforce it so consumers can rely on it.
    times = [float(t) for t in np.maximum.accumulate(times)]
    if paraformer:
        return paraformer_words(tokens, times, length_s)
    durations = [float(d) for d in (getattr(result, "durations", []) or [])]
    return tokens_to_words(tokens, times, length_s, durations if len(durations) == len(tokens) else None)


def result_segments(
    result: Any, offset_s: float, length_s: float, first_id: int = 0, paraformer: bool = False
) -> list[Segment]:
    """Segments (absolute times) from a sherpa-onnx result of one piece starting at ``offset_s``.

    Finest timing first: token times become words grouped at pauses; else the model's own segments
    (Whisper timestamp tokens) without words; else the piece's text spans the whole piece.
    """
    words = result_words(result, length_s, paraformer)
    if words:
        shifted = [Word(w.word, round(offset_s + w.start, 3), round(offset_s + w.end, 3)) for w in words]
        return group_words(shifted, first_id)
    texts = list(getattr(result, "segment_texts", []) or [])
    if texts:
        return _model_segments(result, texts, offset_s, length_s, first_id)
    text = _clean_text(str(getattr(result, "text", "") or ""))
    if not text:
        return []
    return [Segment(id=first_id, start=round(offset_s, 3), end=round(offset_s + length_s, 3), text=" " + text)]


def _model_segments(result: Any, texts: list[str], offset_s: float, length_s: float, first_id: int) -> list[Segment]:
    """The model's segments; one without a duration (the last, unterminated one) runs to the next start."""
    starts = [min(length_s, max(0.0, float(t))) for t in (getattr(result, "segment_timestamps", []) or [])]
    lengths = [float(d) for d in (getattr(result, "segment_durations", []) or [])]
    segments: list[Segment] = []
    floor = 0.0  # keep segment starts ordered even when a model is confused
    for i, text in enumerate(texts):
        if not text.strip():
            continue
        start = floor = max(starts[i] if i < len(starts) else 0.0, floor)
        nxt = starts[i + 1] if i + 1 < len(starts) else length_s
        end = start + lengths[i] if i < len(lengths) and lengths[i] > 0 else max(nxt, start)
        segments.append(
            Segment(
                id=first_id + len(segments),
                start=round(offset_s + start, 3),
                end=round(offset_s + max(start, min(end, length_s)), 3),
                text=" " + _clean_text(text),
            )
        )
    return segments
