"""How partial and final text is computed for the open utterance, chosen by engine capabilities.

* :class:`NativePolicy` - engines that decode incrementally (``capabilities.native_streaming``, e.g.
  PocketSphinx): audio is fed to an :class:`~hearline.engines.base.EngineStream` in batches, the
  stream's hypothesis is the partial and the stream gives the final - as a detached job when the final
  is a second pass over the audio (PocketSphinx), so it can run while the next utterance streams.
* ``LocalAgreementPolicy`` (:mod:`hearline.live.local_agreement`) - engines that re-decode (Whisper):
  LocalAgreement-2 over the open utterance, with a fresh full-quality pass over it as the final
  (:meth:`Policy.final_job`), so the final is the offline text.

Both are pure, blocking computations on one utterance; the session runs them in the model pool's
worker threads, one job at a time per session, and owns all scheduling.  A final (or a final prepared
in a pause) may come back as a :data:`FinalJob` instead of a result: a job that needs nothing of the
policy, which the session runs as a separate pool job while the policy goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hearline.engines.base import SAMPLE_RATE, Engine, EngineStream, TranscribeOptions, Transcript, Word

logger = logging.getLogger(__name__)


@dataclass
class Result:
    """What one job produced: text for a partial, or everything a final needs."""

    text: str
    committed: str = ""
    words: list[Word] = field(default_factory=list)  # absolute times (session clock)
    language: str | None = None


FinalJob = Callable[[], "Result"]
Transcriber = Callable[[np.ndarray, TranscribeOptions], Transcript]

# Silence after the last sound that a second-pass final still decodes: room for a trailing consonant
# the VAD scores low.  No more than the default pause (150 ms), so a final prepared in a pause has all of
# it and equals the one computed at the endpoint.
FINAL_TAIL_S = 0.15


class Policy:
    """One open utterance at a time.  All methods block and run in a worker thread."""

    def begin(self, start_sample: int) -> None:
        """A new utterance starts at ``start_sample`` on the session clock."""
        raise NotImplementedError

    def partial(self, audio: np.ndarray, skip: int = 0) -> Result | None:
        """Take ``audio`` (new samples of the open utterance); return a partial result or None.

        ``skip``: leading samples of ``audio`` that partial decoding may pass over because it fell
        behind (only asked of policies with ``can_skip``); the final still covers them.
        """
        raise NotImplementedError

    def final(self, audio: np.ndarray, sound_end: int | None = None) -> Result | FinalJob:
        """Take the last samples and end the utterance; return its final result, or a job computing it.

        ``sound_end``: session sample where the segmenter heard the utterance's last sound, if it did; what
        follows is the silence that confirmed the endpoint, which a second pass need not decode.
        A job needs nothing of the policy, which is ready for the next utterance as soon as this returns.
        """
        raise NotImplementedError

    def guess_final(self, audio: np.ndarray, sound_end: int | None = None) -> Result | FinalJob | None:
        """Take ``audio``; return the final the utterance would get if it ended now (or a job computing
        it apart from the policy), leaving the utterance open.

        Called during a pause, so the final's second pass runs while the endpoint is still awaited.
        ``sound_end`` as for :meth:`final`.  None: this policy's final is no slower than waiting.
        """
        return None

    def final_from_guess(self, guess: Result) -> Result:
        """End the utterance with ``guess`` (speech did not resume after it; later audio is silence)."""
        raise NotImplementedError

    def final_job(self, audio: np.ndarray, start_sample: int, sound_end: int | None = None) -> FinalJob | None:
        """A final computed from the utterance's audio alone (all of it, from ``start_sample``), or None.

        For a policy whose final is a fresh pass over the utterance (Whisper), the session starts it
        the moment a pause is heard, without waiting for a partial step in flight, and the policy's
        own :meth:`final` / :meth:`guess_final` are not used.  None: the final needs the policy's state.
        """
        return None

    def hold(self, audio: np.ndarray) -> None:
        """Take ``audio`` without decoding it (the final is being prepared in a pause)."""
        raise NotImplementedError

    def discard(self) -> None:
        """Abandon the open utterance, releasing whatever it holds."""

    def close(self) -> None:
        """Release everything (called once, after the last job)."""

    #: samples to gather before a partial job is worth a trip to a worker thread
    batch_samples: int = SAMPLE_RATE // 4

    #: whether finals come from :meth:`final_job` (the utterance's audio alone) rather than the policy's state
    finals_from_audio: bool = False

    @property
    def needs_lease(self) -> bool:
        """Whether an open utterance holds a scarce engine resource (see the session's stream slots)."""
        return False

    @property
    def can_skip(self) -> bool:
        """Whether partial work can pass over audio (``partial(skip=...)``) without the final losing it.

        A re-decoding policy (LocalAgreement) coalesces by itself: each step decodes the whole window
        once, however much audio arrived.
        """
        return False


def shift_words(words: list[Word], offset: float) -> list[Word]:
    return [Word(w.word, round(w.start + offset, 3), round(w.end + offset, 3), w.probability) for w in words]


class NativePolicy(Policy):
    def __init__(self, engine: Engine, options: TranscribeOptions) -> None:
        self._engine = engine
        self._options = options
        self._stream: EngineStream | None = None
        self._start = 0
        self._last = ""

    @property
    def needs_lease(self) -> bool:
        return True

    @property
    def can_skip(self) -> bool:
        """Only streams whose final is a second pass over the audio they keep (PocketSphinx) implement
        ``skip``; for one whose final is its own decoding state, skipped audio would be lost words."""
        return type(self._get_stream()).skip is not EngineStream.skip  # opening one costs no decoder

    def _get_stream(self) -> EngineStream:
        if self._stream is None:
            self._stream = self._engine.open_stream(self._options)
        return self._stream

    def begin(self, start_sample: int) -> None:
        self._start = start_sample
        self._last = ""

    def partial(self, audio: np.ndarray, skip: int = 0) -> Result | None:
        stream = self._get_stream()
        if skip:
            stream.skip(audio[:skip])
            audio = audio[skip:]
        stream.accept(audio)
        text = stream.partial()
        if text == self._last:
            return None
        self._last = text
        return Result(text=text)

    def final(self, audio: np.ndarray, sound_end: int | None = None) -> Result | FinalJob:
        stream = self._get_stream()
        if audio.size:
            stream.accept(audio)
        self._last = ""
        job = stream.detach_final(self._pass_samples(sound_end))
        if job is None:
            return self._result(stream.finish(), self._start)
        start = self._start
        return lambda: self._result(job(), start)

    def guess_final(self, audio: np.ndarray, sound_end: int | None = None) -> FinalJob | None:
        stream = self._get_stream()
        if audio.size:
            stream.accept(audio)
        job = stream.snapshot_final(self._pass_samples(sound_end))
        if job is None:
            return None
        start = self._start
        return lambda: self._result(job(), start)

    def _pass_samples(self, sound_end: int | None) -> int | None:
        """How much of the utterance a second-pass final decodes: up to ``FINAL_TAIL_S`` after the last
        sound.  The same cut for a final prepared in a pause and one computed at the endpoint, so
        the text does not depend on which of them the machine had time for, and the pass skips up to
        half a second of silence (less work, a sooner final)."""
        if sound_end is None:
            return None
        return max(0, sound_end + int(FINAL_TAIL_S * SAMPLE_RATE) - self._start)

    @staticmethod
    def _result(transcript: Transcript, start_sample: int) -> Result:
        words = shift_words(transcript.words, start_sample / SAMPLE_RATE)
        return Result(text=transcript.text, words=words, language=transcript.language)

    def final_from_guess(self, guess: Result) -> Result:
        self._get_stream().end()
        self._last = ""
        return guess

    def discard(self) -> None:
        if self._stream is not None:
            self._stream.end()  # releases the decoder; nothing is decoded again
        self._last = ""

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()


def choose_policy(
    engine: Engine,
    options: TranscribeOptions,
    partial_interval_s: float = 0.5,
    prefer: str = "auto",
    transcribe: Transcriber | None = None,
    segmented: bool = True,
    partial_transcribe: Transcriber | None = None,
) -> Policy:
    """Native streaming when the engine has it (unless told otherwise), LocalAgreement-2 otherwise (its partial
    passes through ``partial_transcribe`` when given: another, faster model)."""
    if prefer == "native" or (prefer == "auto" and engine.capabilities.native_streaming):
        return NativePolicy(engine, options)
    from hearline.live.local_agreement import LocalAgreementPolicy  # it builds on this module's Policy

    return LocalAgreementPolicy(
        engine,
        options,
        partial_interval_s=partial_interval_s,
        transcribe=transcribe,
        segmented=segmented,
        partial_transcribe=partial_transcribe,
    )
