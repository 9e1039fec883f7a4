"""Streaming transducers: true incremental partials through one online stream per utterance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hearline.engines.base import SAMPLE_RATE, Engine, EngineStream, Transcript, join_text
from hearline.engines.sherpa_onnx.results import _clean_text, result_segments

STREAM_TAIL_PADDING_S = 0.5  # silence fed before input_finished() so the last chunk is decoded


@dataclass
class OnlineResult:
    """The fields of an online result that :func:`result_segments` reads, like OfflineRecognitionResult."""

    text: str
    tokens: list[str]
    timestamps: list[float]
    lang: str = ""

    @classmethod
    def of(cls, recognizer: Any, stream: Any) -> OnlineResult:
        text = recognizer.get_result(stream)
        tokens = list(recognizer.tokens(stream)) if hasattr(recognizer, "tokens") else []
        timestamps = list(recognizer.timestamps(stream)) if hasattr(recognizer, "timestamps") else []
        return cls(text=str(text), tokens=[str(t) for t in tokens], timestamps=[float(t) for t in timestamps])


class SherpaOnlineStream(EngineStream):
    """One streaming-transducer utterance at a time; ``finish`` starts a fresh stream for the next one."""

    def __init__(self, engine: Engine, recognizer: Any) -> None:
        self._engine = engine
        self._recognizer = recognizer
        self._stream = recognizer.create_stream()
        self._samples = 0

    def accept(self, audio: np.ndarray) -> None:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size == 0:
            return
        self._stream.accept_waveform(SAMPLE_RATE, audio)
        self._samples += audio.size
        while self._recognizer.is_ready(self._stream):
            self._recognizer.decode_stream(self._stream)

    def partial(self) -> str:
        return _clean_text(str(self._recognizer.get_result(self._stream)))

    def finish(self) -> Transcript:
        duration = self._samples / SAMPLE_RATE
        stream = self._stream
        if self._samples:
            tail = np.zeros(int(STREAM_TAIL_PADDING_S * SAMPLE_RATE), dtype=np.float32)
            stream.accept_waveform(SAMPLE_RATE, tail)
        stream.input_finished()
        while self._recognizer.is_ready(stream):
            self._recognizer.decode_stream(stream)
        result = OnlineResult.of(self._recognizer, stream)
        self._stream = self._recognizer.create_stream()
        self._samples = 0
        segments = result_segments(result, 0.0, duration)
        return Transcript(join_text([s.text for s in segments]), segments, None, None, duration)

    def close(self) -> None:
        self._stream = None


def decode_online(recognizer: Any, piece: np.ndarray) -> OnlineResult:
    """Decode one whole piece with an online recognizer (offline use of a streaming model)."""
    stream = recognizer.create_stream()
    stream.accept_waveform(SAMPLE_RATE, piece)
    stream.accept_waveform(SAMPLE_RATE, np.zeros(int(STREAM_TAIL_PADDING_S * SAMPLE_RATE), np.float32))
    stream.input_finished()
    while recognizer.is_ready(stream):
        recognizer.decode_stream(stream)
    return OnlineResult.of(recognizer, stream)
