"""Render a :class:`~hearline.engines.base.Transcript` in OpenAI's response formats.

One module serves both the REST API and ``hearline transcribe`` so a file transcribed either way
comes out byte-for-byte the same.  Field names and shapes follow PROTOCOLS.md §4 exactly; numbers an
engine does not produce are filled with neutral values (0.0, ``[]``) rather than ``null`` because
typed clients declare them as required floats and lists.
"""

from __future__ import annotations

import math
import sys
import zlib
from collections.abc import Iterable
from typing import Any, Literal

from hearline.engines.base import Segment, Task, Transcript, Word
from hearline.languages import full_name

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
RESPONSE_FORMATS: tuple[str, ...] = ("json", "text", "srt", "vtt", "verbose_json")

MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}

MIN_LOGPROB = math.log(sys.float_info.min)  # log of a zero probability, kept finite for JSON

#: file name extension for each format (``hearline transcribe --output``)
EXTENSIONS: dict[str, str] = {"json": "json", "verbose_json": "json", "text": "txt", "srt": "srt", "vtt": "vtt"}


def usage(transcript: Transcript) -> dict[str, Any]:
    """OpenAI bills whisper-1 by whole seconds of input; clients read this shape."""
    return {"type": "duration", "seconds": math.ceil(transcript.duration)}


def word_logprobs(words: Iterable[Word]) -> list[dict[str, Any]]:
    """OpenAI's ``logprobs`` list (``{token, logprob, bytes}``), one entry per word.

    The engines give word probabilities, not token ones, so a word stands in for a token; the REST API
    and the Realtime transcription events share this so both report the same numbers.  A word without a
    probability gets 0.0 (no information), a probability of 0 the smallest finite log instead of -inf,
    which JSON cannot carry.
    """
    return [
        {
            "token": word.word,
            "logprob": _logprob(word.probability),
            "bytes": list(word.word.encode("utf-8")),
        }
        for word in words
    ]


def _logprob(probability: float | None) -> float:
    if probability is None:
        return 0.0
    return math.log(probability) if probability > 0 else MIN_LOGPROB


def to_json(transcript: Transcript, logprobs: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"text": transcript.text}
    if logprobs:
        body["logprobs"] = word_logprobs(transcript.words)
    body["usage"] = usage(transcript)
    return body


def compression_ratio(text: str) -> float:
    """Whisper's gzip ratio of a segment's text (a repetition detector); computed when the engine has none."""
    raw = text.encode("utf-8")
    if not raw:
        return 0.0
    return len(raw) / len(zlib.compress(raw))


def segment_dict(segment: Segment, temperature: float) -> dict[str, Any]:
    return {
        "id": segment.id,
        "seek": segment.seek,
        "start": round(segment.start, 3),
        "end": round(segment.end, 3),
        "text": segment.text,
        "tokens": list(segment.tokens),
        "temperature": segment.temperature if segment.temperature is not None else temperature,
        "avg_logprob": segment.avg_logprob if segment.avg_logprob is not None else 0.0,
        "compression_ratio": (
            segment.compression_ratio
            if segment.compression_ratio is not None
            else round(compression_ratio(segment.text), 4)
        ),
        "no_speech_prob": segment.no_speech_prob if segment.no_speech_prob is not None else 0.0,
    }


def to_verbose_json(
    transcript: Transcript,
    task: Task = "transcribe",
    words: bool = False,
    temperature: float = 0.0,
) -> dict[str, Any]:
    """OpenAI's ``verbose_json``; ``language`` is the full lower-case English name."""
    language = "english" if task == "translate" else (full_name(transcript.language) or "unknown")
    body: dict[str, Any] = {
        "task": task,
        "language": language,
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
        "segments": [segment_dict(s, temperature) for s in transcript.segments],
    }
    if words:
        body["words"] = [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in transcript.words]
    body["usage"] = usage(transcript)
    return body


def to_text(transcript: Transcript) -> str:
    return transcript.text + "\n" if transcript.text else ""


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def srt_time(seconds: float) -> str:
    return _clock(seconds, ",")


def vtt_time(seconds: float) -> str:
    return _clock(seconds, ".")


def _cues(transcript: Transcript) -> list[Segment]:
    return [s for s in transcript.segments if s.text.strip()]


def to_srt(transcript: Transcript) -> str:
    blocks = [
        f"{index}\n{srt_time(s.start)} --> {srt_time(s.end)}\n{s.text.strip()}\n"
        for index, s in enumerate(_cues(transcript), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    blocks = [f"{vtt_time(s.start)} --> {vtt_time(s.end)}\n{s.text.strip()}\n" for s in _cues(transcript)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render(
    transcript: Transcript,
    response_format: str,
    task: Task = "transcribe",
    words: bool = False,
    logprobs: bool = False,
    temperature: float = 0.0,
) -> dict[str, Any] | str:
    """A JSON-able dict for ``json``/``verbose_json``, a string for the plain formats."""
    if response_format == "json":
        return to_json(transcript, logprobs=logprobs)
    if response_format == "verbose_json":
        return to_verbose_json(transcript, task=task, words=words, temperature=temperature)
    if response_format == "text":
        return to_text(transcript)
    if response_format == "srt":
        return to_srt(transcript)
    if response_format == "vtt":
        return to_vtt(transcript)
    raise ValueError(f"unknown response_format {response_format!r}; expected one of {', '.join(RESPONSE_FORMATS)}")
