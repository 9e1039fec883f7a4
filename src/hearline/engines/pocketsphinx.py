"""The bundled English recognizer: PocketSphinx with the en-us model that ships inside its wheel.

It needs no download, which is why it is the default.  A ``Decoder`` is stateful and not thread-safe
and costs ~90 MB, so decoders are leased from a small bounded pool: offline calls hold one for the
call, live streams hold one only while an utterance is open.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from hearline.audio.decode import float_to_pcm16
from hearline.engines.base import (
    SAMPLE_RATE,
    Capabilities,
    Engine,
    EngineError,
    EngineStream,
    ModelFilesMissing,
    Segment,
    SegmentCallback,
    Transcript,
    TranscribeOptions,
    Word,
    join_text,
)

logger = logging.getLogger(__name__)

FRAME_RATE = 100  # PocketSphinx frames per second
# Offline audio is cut into utterances of at most this long at the quietest point nearby: PocketSphinx's
# search and lattice grow with utterance length, and shorter utterances also decode more accurately.
MAX_UTTERANCE_S = 20.0
PAUSE_SPLIT_S = 0.5  # a pause this long between words starts a new output segment
_CAPS = Capabilities(
    languages=frozenset({"en"}),
    translate=False,
    native_streaming=True,
    word_timestamps=True,
    language_detection=False,
)


def bundled_model_dir() -> Path:
    import pocketsphinx

    return Path(pocketsphinx.get_model_path()) / "en-us"


class PocketSphinxEngine(Engine):
    kind = "pocketsphinx"

    def __init__(self, name: str = "pocketsphinx-en-us", model_dir: Path | None = None, max_decoders: int = 2):
        super().__init__(name)
        import pocketsphinx

        self._pocketsphinx = pocketsphinx
        self.model_dir = model_dir or bundled_model_dir()
        self._check_files()
        self._max_decoders = max(1, max_decoders)
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._created = 0
        self._lock = threading.Lock()
        self._available = threading.Semaphore(self._max_decoders)
        # Build one decoder up front so a broken install fails at load time, not on the first request.
        self._idle.put(self._new_decoder())

    @property
    def capabilities(self) -> Capabilities:
        return _CAPS

    def memory_bytes(self) -> int:
        return self._created * 95 * 1024 * 1024

    def _check_files(self) -> None:
        expected = ["mdef", "means", "variances", "transition_matrices"]
        missing = [name for name in expected if not (self.model_dir / "en-us" / name).exists()]
        for name in ("en-us.lm.bin", "cmudict-en-us.dict"):
            if not (self.model_dir / name).exists():
                missing.append(name)
        if missing:
            raise ModelFilesMissing(f"PocketSphinx model in {self.model_dir} is missing: {', '.join(missing)}")

    def _new_decoder(self):  # type: ignore[no-untyped-def]
        decoder = self._pocketsphinx.Decoder(
            hmm=str(self.model_dir / "en-us"),
            lm=str(self.model_dir / "en-us.lm.bin"),
            dict=str(self.model_dir / "cmudict-en-us.dict"),
            samprate=SAMPLE_RATE,
            loglevel="FATAL",
        )
        with self._lock:
            self._created += 1
        return decoder

    @contextmanager
    def lease(self) -> Iterator[object]:
        """Borrow a decoder; blocks while all ``max_decoders`` are in use."""
        self._available.acquire()
        try:
            try:
                decoder = self._idle.get_nowait()
            except queue.Empty:
                decoder = self._new_decoder()
            try:
                yield decoder
            finally:
                self._idle.put(decoder)
        finally:
            self._available.release()

    def transcribe(
        self,
        audio: np.ndarray,
        options: TranscribeOptions,
        on_segment: SegmentCallback | None = None,
    ) -> Transcript:
        self.check_options(options)
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        duration = audio.size / SAMPLE_RATE
        segments: list[Segment] = []
        with self.lease() as decoder:
            for offset, chunk in split_long(audio):
                words = _decode_utterance(decoder, chunk, offset / SAMPLE_RATE)
                for segment in group_words(words, first_id=len(segments)):
                    segments.append(segment)
                    if on_segment is not None:
                        on_segment(segment)
        return Transcript(
            text=join_text([s.text for s in segments]),
            segments=segments,
            language="en",
            language_probability=None,
            duration=duration,
        )

    def open_stream(self, options: TranscribeOptions) -> EngineStream:
        self.check_options(options)
        return PocketSphinxStream(self)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                break


class PocketSphinxStream(EngineStream):
    """Native incremental decoding: a decoder is held only between the first sample and ``finish``."""

    def __init__(self, engine: PocketSphinxEngine) -> None:
        self._engine = engine
        self._lease = None
        self._decoder = None
        self._samples = 0

    def _ensure(self):  # type: ignore[no-untyped-def]
        if self._decoder is None:
            self._lease = self._engine.lease()
            self._decoder = self._lease.__enter__()
            self._decoder.start_utt()
            self._samples = 0
        return self._decoder

    def accept(self, audio: np.ndarray) -> None:
        if audio.size == 0:
            return
        decoder = self._ensure()
        decoder.process_raw(float_to_pcm16(audio), False, False)
        self._samples += audio.size

    def partial(self) -> str:
        if self._decoder is None:
            return ""
        hyp = self._decoder.hyp()
        return _clean_text(hyp.hypstr) if hyp is not None else ""

    def finish(self) -> Transcript:
        duration = self._samples / SAMPLE_RATE
        if self._decoder is None:
            return Transcript("", [], "en", None, duration)
        decoder = self._decoder
        try:
            decoder.end_utt()
            words = _words(decoder, 0.0)
        finally:
            self._release()
        segments = group_words(words)
        return Transcript(join_text([s.text for s in segments]), segments, "en", None, duration)

    def _release(self) -> None:
        lease, self._lease, self._decoder = self._lease, None, None
        if lease is not None:
            lease.__exit__(None, None, None)

    def close(self) -> None:
        if self._decoder is not None:
            try:
                self._decoder.end_utt()
            except RuntimeError as exc:  # decoder already idle
                logger.debug("end_utt on close: %s", exc)
            self._release()


def _decode_utterance(decoder, audio: np.ndarray, offset_s: float) -> list[Word]:  # type: ignore[no-untyped-def]
    decoder.start_utt()
    try:
        decoder.process_raw(float_to_pcm16(audio), False, True)
    finally:
        decoder.end_utt()
    return _words(decoder, offset_s)


def _words(decoder, offset_s: float) -> list[Word]:  # type: ignore[no-untyped-def]
    if decoder.hyp() is None:
        return []
    logmath = decoder.get_logmath()
    words: list[Word] = []
    for seg in decoder.seg():
        token = seg.word
        if token.startswith(("<", "[", "+")):
            continue  # <s>, </s>, <sil>, [NOISE], ++fillers++
        try:
            probability = float(min(1.0, logmath.exp(seg.prob)))
        except (OverflowError, ValueError, EngineError):
            probability = None
        words.append(
            Word(
                word=_clean_word(token),
                start=round(offset_s + seg.start_frame / FRAME_RATE, 3),
                end=round(offset_s + (seg.end_frame + 1) / FRAME_RATE, 3),
                probability=probability,
            )
        )
    return words


def _clean_word(token: str) -> str:
    # alternate pronunciations are spelled word(2)
    return token.split("(", 1)[0]


def _clean_text(text: str) -> str:
    return " ".join(_clean_word(t) for t in text.split() if not t.startswith(("<", "[", "+")))


def group_words(words: list[Word], first_id: int = 0, pause_s: float = PAUSE_SPLIT_S) -> list[Segment]:
    """Cut a word sequence into caption-sized segments at pauses (or every ~12 s of speech)."""
    segments: list[Segment] = []
    current: list[Word] = []

    def flush() -> None:
        if current:
            text = " " + " ".join(w.word for w in current)
            probs = [w.probability for w in current if w.probability]
            avg = float(np.mean(np.log(probs))) if probs else None
            segments.append(
                Segment(
                    id=first_id + len(segments),
                    start=current[0].start,
                    end=current[-1].end,
                    text=text,
                    words=list(current),
                    avg_logprob=avg,
                )
            )
            current.clear()

    for word in words:
        if current and (word.start - current[-1].end >= pause_s or word.end - current[0].start > 12.0):
            flush()
        current.append(word)
    flush()
    return segments


def split_long(audio: np.ndarray, max_s: float = MAX_UTTERANCE_S) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (offset, chunk) pieces no longer than ``max_s``, cut at the quietest 20 ms nearby."""
    limit = int(max_s * SAMPLE_RATE)
    start = 0
    n = audio.size
    while n - start > limit:
        window_lo = start + limit // 2
        window_hi = start + limit
        frame = SAMPLE_RATE // 50
        region = audio[window_lo:window_hi]
        usable = region.size // frame * frame
        energy = np.square(region[:usable]).reshape(-1, frame).mean(axis=1)
        cut = window_lo + int(np.argmin(energy)) * frame + frame // 2
        yield start, audio[start:cut]
        start = cut
    if n - start > 0:
        yield start, audio[start:]


def load(spec, settings):  # type: ignore[no-untyped-def]
    """Entry point used by :func:`hearline.models.resolve.load_engine`."""
    return PocketSphinxEngine(
        name=spec.name,
        model_dir=spec.path,
        max_decoders=max(2, settings.max_concurrency_per_model),
    )
