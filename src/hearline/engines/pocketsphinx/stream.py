"""PocketSphinx live streams: native incremental partials, and the final as a full-utterance pass."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from hearline.audio.decode import float_to_pcm16
from hearline.engines.base import EngineError, EngineStream, TranscribeOptions, Transcript, Word
from hearline.engines.pocketsphinx import worker as pocketsphinx_worker

if TYPE_CHECKING:
    from hearline.engines.pocketsphinx.engine import DecoderProcess, PocketSphinxEngine

logger = logging.getLogger(__name__)


class PocketSphinxStream(EngineStream):
    """Native incremental decoding for partials, and a full-utterance pass for the final.

    Streaming decoding normalises cepstra with a running mean that starts from a generic prior, which
    is poor on the first seconds of unusual channels (even when seeded with the utterance's own mean);
    the final therefore re-decodes the whole utterance (bounded by the live pipeline's maximum utterance
    length) exactly as offline transcription does, so a final equals the offline result for the same audio.
    That pass needs only the audio, which this side keeps, so it can run on another decoder
    (``detach_final``/``snapshot_final``) while this stream's decoder already follows the next utterance.
    The running mean reached at the end of each utterance seeds the next one's partials.
    """

    def __init__(self, engine: PocketSphinxEngine, options: TranscribeOptions) -> None:
        self._engine = engine
        self._options = options
        self._lease: Any = None
        self._worker: DecoderProcess | None = None
        self._audio: list[np.ndarray] = []
        self._cmn: str | None = None
        self._partial = ""
        self._in_gap = False  # audio was skipped since the last decoded samples

    def _ensure(self) -> DecoderProcess:
        if self._worker is None:
            lease = self._engine.lease()
            worker = lease.__enter__()
            try:
                worker.call("stream_start", self._cmn)
            except BaseException:
                lease.__exit__(None, None, None)
                raise
            self._lease, self._worker = lease, worker
            self._partial = ""
            self._in_gap = False
        return self._worker

    def accept(self, audio: np.ndarray) -> None:
        if audio.size == 0:
            return
        samples = self._keep(audio)
        try:
            self._partial = _clean_text(self._ensure().call("stream_accept", float_to_pcm16(samples)))
        except EngineError:
            if not self._lost_worker():
                raise
            # a new decoder hears the utterance so far: the partial picks up where the dead one was
            so_far = float_to_pcm16(np.concatenate(self._audio))
            self._partial = _clean_text(self._ensure().call("stream_accept", so_far))
        self._in_gap = False

    def skip(self, audio: np.ndarray) -> None:
        if audio.size == 0:
            return
        self._keep(audio)  # not decoded for the partial; the final pass decodes it
        if not self._in_gap:  # one restart of the first-pass search per gap, however many steps skip
            try:
                self._partial = _clean_text(self._ensure().call("stream_skip"))
            except EngineError:
                if not self._lost_worker():
                    raise
                self._ensure()
                self._partial = ""
            self._in_gap = True

    def _lost_worker(self) -> bool:
        """Whether the leased decoder process died (killed, crashed); if so it is given back (the engine
        discards it) so the next call leases a healthy one.  The utterance's samples are all still here."""
        worker = self._worker
        if worker is None or worker.alive:
            return False
        logger.warning("a PocketSphinx decoder process died mid-utterance (code %s); going on with another",
                       worker.process.poll())  # fmt: skip
        self._release()
        return True

    def _keep(self, audio: np.ndarray) -> np.ndarray:
        """Hold the utterance's samples for its final pass."""
        samples = np.asarray(audio, dtype=np.float32).reshape(-1)
        self._audio.append(samples)
        return samples

    def partial(self) -> str:
        return self._partial if self._worker is not None else ""

    def finish(self) -> Transcript:
        return self.detach_final()()

    def detach_final(self, samples: int | None = None) -> Callable[[], Transcript]:
        audio = self._take_audio()
        self.end()
        return self._pass(audio[:samples])

    def snapshot_final(self, samples: int | None = None) -> Callable[[], Transcript]:
        audio = self._take_audio()
        self._audio = [audio] if audio.size else []
        return self._pass(audio[:samples])

    def _take_audio(self) -> np.ndarray:
        chunks, self._audio = self._audio, []
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def _pass(self, audio: np.ndarray) -> Callable[[], Transcript]:
        engine, options = self._engine, self._options
        if audio.size == 0:
            return lambda: Transcript("", [], "en", None, 0.0)
        return lambda: engine.transcribe(audio, options)

    def end(self) -> None:
        self._audio = []
        if self._worker is None:
            return
        try:
            self._cmn = self._worker.call("stream_end") or self._cmn
        except EngineError:
            if self._worker.alive:
                raise
            logger.warning(
                "a PocketSphinx decoder process died before its utterance ended; the final pass runs on another"
            )
        finally:
            self._release()

    def _release(self) -> None:
        lease, self._lease, self._worker = self._lease, None, None
        self._partial = ""
        if lease is not None:
            lease.__exit__(None, None, None)

    def close(self) -> None:
        self._audio = []
        if self._worker is not None:
            try:
                self._worker.call("stream_abort")
            except EngineError as exc:
                logger.debug("stream_abort on close: %s", exc)
            self._release()


def _words(raw: list[pocketsphinx_worker.RawWord], offset_s: float) -> list[Word]:
    return [
        Word(
            word=_clean_word(token),
            start=round(offset_s + start, 3),
            end=round(offset_s + end, 3),
            probability=probability,
        )
        for token, start, end, probability in raw
    ]


def _clean_word(token: str) -> str:
    # alternate pronunciations are spelled word(2)
    return token.split("(", 1)[0]


def _clean_text(text: str) -> str:
    return " ".join(_clean_word(t) for t in text.split() if not t.startswith(("<", "[", "+")))
