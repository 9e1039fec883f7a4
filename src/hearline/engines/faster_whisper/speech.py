"""A clip as one batched window with faster-whisper's VAD applied first, and its times mapped back after.

``engine.transcribe`` runs Silero VAD inside ``WhisperModel.transcribe`` and decodes only the speech. To batch a
live final (which keeps that VAD: Whisper writes text over silence and hum without it) the same cut is made here,
in the submitting thread, so the batch thread only decodes; the kept spans travel in the request and the decoded
times are restored onto the clip's clock as faster-whisper's ``restore_speech_timestamps`` does.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from hearline.engines.base import SAMPLE_RATE, WINDOW_SAMPLES, Segment, TranscribeOptions, Transcript, WindowRequest

if TYPE_CHECKING:
    from hearline.engines.faster_whisper.engine import FasterWhisperEngine

__all__ = ["restore", "speech_window"]


def speech_window(engine: FasterWhisperEngine, audio: np.ndarray, options: TranscribeOptions) -> WindowRequest | None:
    """``engine.transcribe(audio, options)`` as one window request, or None when it needs the long-form loop
    (more than 30 s to decode) or is empty (nothing to batch)."""
    audio = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
    if audio.size == 0:
        return None
    kwargs = engine.transcribe_kwargs(options)  # the engine's VAD default and per-model VAD parameters
    if not kwargs["vad_filter"]:
        return WindowRequest(audio, options) if audio.size <= WINDOW_SAMPLES else None
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    parameters = kwargs.get("vad_parameters")
    vad = VadOptions(**parameters) if isinstance(parameters, dict) else parameters or VadOptions()
    spans = tuple((int(c["start"]), int(c["end"])) for c in get_speech_timestamps(audio, vad))
    kept = np.concatenate([audio[a:b] for a, b in spans]) if spans else np.zeros(0, dtype=np.float32)
    if kept.size > WINDOW_SAMPLES:
        return None
    plain = dataclasses.replace(options, vad_filter=False)
    return WindowRequest(kept, plain, speech=spans, duration=audio.size / SAMPLE_RATE)


def restore(transcript: Transcript, request: WindowRequest) -> Transcript:
    """The transcript of ``request.audio`` with times on the original clip's clock (a VAD-cut request)."""
    if request.speech is None:
        return transcript
    duration = request.duration if request.duration is not None else transcript.duration
    if not request.speech:
        return dataclasses.replace(transcript, duration=duration)
    from faster_whisper.vad import SpeechTimestampsMap

    spans = SpeechTimestampsMap([{"start": a, "end": b} for a, b in request.speech], SAMPLE_RATE, time_precision=3)
    segments: list[Segment] = []
    for segment in transcript.segments:
        if segment.words:
            words = []
            for word in segment.words:  # both ends in the span of the word's middle, as faster-whisper does
                index = spans.get_chunk_index((word.start + word.end) / 2)
                start = spans.get_original_time(word.start, index)
                end = spans.get_original_time(word.end, index)
                words.append(dataclasses.replace(word, start=start, end=end))
            segments.append(dataclasses.replace(segment, start=words[0].start, end=words[-1].end, words=words))
        else:
            start = spans.get_original_time(segment.start)
            end = spans.get_original_time(segment.end, is_end=True)
            segments.append(dataclasses.replace(segment, start=start, end=end))
    return dataclasses.replace(transcript, segments=segments, duration=duration)
