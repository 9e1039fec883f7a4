"""How partial and final text is computed for the open utterance, chosen by engine capabilities.

* :class:`NativePolicy` - engines that decode incrementally (``capabilities.native_streaming``, e.g.
  PocketSphinx): audio is fed to an :class:`~hearline.engines.base.EngineStream` in batches, the
  stream's hypothesis is the partial and the stream gives the final - as a detached job when the final
  is a second pass over the audio (PocketSphinx), so it can run while the next utterance streams.
* :class:`LocalAgreementPolicy` - engines that re-decode (Whisper): LocalAgreement-2.  The open
  utterance is re-transcribed every ``partial_interval_s`` of audio; the longest prefix on which the
  last two hypotheses agree is committed; the decoded window is trimmed at committed word boundaries
  (committed text then becomes the prompt) so it never grows past ~15 s; the final is a fresh
  full-quality pass over the whole utterance (:meth:`Policy.final_job`), so it is the offline text.

Both are pure, blocking computations on one utterance; the session runs them in the model pool's
worker threads, one job at a time per session, and owns all scheduling.  A final (or a final prepared
in a pause) may come back as a :data:`FinalJob` instead of a result: a job that needs nothing of the
policy, which the session runs as a separate pool job while the policy goes on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hearline.engines.base import SAMPLE_RATE, Engine, EngineStream, TranscribeOptions, Transcript, Word

logger = logging.getLogger(__name__)

PROMPT_CHARS = 200
WINDOW_SAMPLES = 512  # tail of earlier text given to the decoder as context


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


def _shift(words: list[Word], offset: float) -> list[Word]:
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
        words = _shift(transcript.words, start_sample / SAMPLE_RATE)
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


_NORM = re.compile(r"[^\w']+")


def _norm(word: str) -> str:
    return _NORM.sub("", word.lower())


class LocalAgreementPolicy(Policy):
    """LocalAgreement-2 over a trimmed window of the open utterance; finals from :meth:`final_job`."""

    finals_from_audio = True

    def __init__(
        self,
        engine: Engine,
        options: TranscribeOptions,
        partial_interval_s: float = 0.5,
        trim_s: float = 12.0,
        transcribe: Transcriber | None = None,
    ) -> None:
        self._engine = engine
        self._transcribe = transcribe or engine.transcribe  # the pool's batched window decode, if any
        self._options = options
        self.batch_samples = max(WINDOW_SAMPLES, int(partial_interval_s * SAMPLE_RATE))
        self._trim = int(trim_s * SAMPLE_RATE)
        self._reset(0)

    def _reset(self, start_sample: int) -> None:
        self._start = start_sample  # utterance start, session clock
        self._window: list[np.ndarray] = []
        self._window_samples = 0
        self._window_start = start_sample  # session-clock sample of the window's first sample
        self._committed: list[Word] = []
        self._trimmed_text = ""  # committed text whose audio was cut from the window
        self._trimmed_words: list[Word] = []
        self._hypothesis: list[Word] = []
        self._language: str | None = self._options.language

    def begin(self, start_sample: int) -> None:
        self._reset(start_sample)

    def _append(self, audio: np.ndarray) -> None:
        if audio.size:
            self._window.append(np.asarray(audio, dtype=np.float32))
            self._window_samples += audio.size

    def _audio(self) -> np.ndarray:
        if len(self._window) > 1:
            self._window = [np.concatenate(self._window)]
        return self._window[0] if self._window else np.zeros(0, dtype=np.float32)

    def _prompt(self) -> str | None:
        """The client's prompt and this utterance's text already cut from the window.  Earlier utterances' finals
        are not prompted: on short utterances that context made Whisper repeat them or copy their style."""
        parts = [self._options.prompt or "", self._trimmed_text]
        text = " ".join(p.strip() for p in parts if p and p.strip())
        return text[-PROMPT_CHARS:] or None

    def _decode(self, language: str | None) -> tuple[list[Word], str | None]:
        """One partial pass over the window: cheap (greedy, one temperature, no VAD: the session's segmenter
        already cut the utterance), since it is redone every step and only its agreed prefix counts."""
        options = TranscribeOptions(
            language=language,
            task=self._options.task,
            prompt=self._prompt(),
            temperature=self._options.temperature,
            beam_size=1,
            fallback=False,
            word_timestamps=True,
            vad_filter=False,
            hotwords=self._options.hotwords,
        )
        transcript = self._transcribe(self._audio(), options)
        return _shift(_words_of(transcript), self._window_start / SAMPLE_RATE), transcript.language

    def _committed_text(self) -> str:
        return " ".join(w.word.strip() for w in self._committed).strip()

    def _new_words(self, words: list[Word]) -> list[Word]:
        """Words of a fresh hypothesis that come after what is already committed."""
        done = (self._trimmed_words + self._committed)[-5:]
        if not done:
            return words
        last_end = done[-1].end
        fresh = [w for w in words if w.start > last_end - 0.1]
        # Drop an n-gram the decoder repeated across the commit boundary.
        tail = [_norm(w.word) for w in done]
        for n in range(min(5, len(fresh), len(tail)), 0, -1):
            if [_norm(w.word) for w in fresh[:n]] == tail[-n:]:
                return fresh[n:]
        return fresh

    def partial(self, audio: np.ndarray, skip: int = 0) -> Result | None:
        self._append(audio)  # never skips (can_skip is False): the window is decoded whole anyway
        words, language = self._decode(self._language)
        if self._language is None:
            self._language = language  # auto: fix the language for this utterance's partials
        fresh = self._new_words(words)
        agreed = 0
        for old, new in zip(self._hypothesis, fresh, strict=False):
            if _norm(old.word) != _norm(new.word):
                break
            agreed += 1
        self._committed.extend(fresh[:agreed])
        self._hypothesis = fresh[agreed:]
        self._maybe_trim()
        committed = " ".join(p for p in (self._trimmed_text, self._committed_text()) if p).strip()
        rest = " ".join(w.word.strip() for w in self._hypothesis).strip()
        return Result(text=f"{committed} {rest}".strip(), committed=committed, language=self._language)

    def _maybe_trim(self) -> None:
        if self._window_samples <= self._trim or not self._committed:
            return
        cut_time = self._committed[-1].end
        cut = round(cut_time * SAMPLE_RATE) - self._window_start
        if cut <= 0 or cut >= self._window_samples:
            return
        audio = self._audio()
        self._window = [audio[cut:].copy()]
        self._window_samples = self._window[0].size
        self._window_start += cut
        self._trimmed_text = f"{self._trimmed_text} {self._committed_text()}".strip()
        self._trimmed_words = self._trimmed_words + self._committed
        self._committed = []

    def hold(self, audio: np.ndarray) -> None:
        self._append(audio)  # kept for the partials that follow if speech resumes

    def final_job(self, audio: np.ndarray, start_sample: int, sound_end: int | None = None) -> FinalJob:
        """A fresh full-quality pass over the whole utterance (the client's beam, temperature fallback, word
        times, the engine's no-speech guards), so the final is the offline text of that utterance.

        It decodes up to ``FINAL_TAIL_S`` after the last sound: a final prepared in a pause and one computed
        at the endpoint see the same audio and give the same text.  It needs nothing of the policy.
        """
        if sound_end is not None:
            audio = audio[: max(0, sound_end + int(FINAL_TAIL_S * SAMPLE_RATE) - start_sample)]
        transcribe, offset = self._transcribe, start_sample / SAMPLE_RATE
        options = TranscribeOptions(
            language=self._options.language,
            task=self._options.task,
            prompt=self._options.prompt,
            temperature=self._options.temperature,
            beam_size=self._options.beam_size,
            fallback=self._options.fallback,
            word_timestamps=True,
            # The engine's default VAD stays (Whisper writes text over a non-speech "utterance" without it),
            # so a final is batched only when the client turned VAD off.
            vad_filter=self._options.vad_filter,
            hotwords=self._options.hotwords,
        )

        def run() -> Result:
            transcript = transcribe(audio, options)
            return Result(
                text=transcript.text.strip(), words=_shift(_words_of(transcript), offset), language=transcript.language
            )

        return run

    def final_from_guess(self, guess: Result) -> Result:
        self._reset(self._window_start + self._window_samples)
        return guess

    def discard(self) -> None:
        self._reset(self._window_start + self._window_samples)


def _words_of(transcript: Transcript) -> list[Word]:
    """The transcript's words; for an engine without word times, its words spread evenly over the audio."""
    if transcript.words or not transcript.text.strip():
        return list(transcript.words)
    tokens = transcript.text.split()
    span = max(transcript.duration, 1e-3) / len(tokens)
    return [Word(t, i * span, (i + 1) * span) for i, t in enumerate(tokens)]


def choose_policy(
    engine: Engine,
    options: TranscribeOptions,
    partial_interval_s: float = 0.5,
    prefer: str = "auto",
    transcribe: Transcriber | None = None,
) -> Policy:
    """Native streaming when the engine has it (unless told otherwise), LocalAgreement-2 otherwise."""
    if prefer == "native" or (prefer == "auto" and engine.capabilities.native_streaming):
        return NativePolicy(engine, options)
    return LocalAgreementPolicy(engine, options, partial_interval_s=partial_interval_s, transcribe=transcribe)
