"""LocalAgreement-2 for engines that re-decode (Whisper): the policy behind every live Whisper session.

The open utterance is re-transcribed every ``partial_interval_s`` of audio; the longest prefix on which
the last two hypotheses agree is committed; the window is trimmed at committed word boundaries (the
committed text then becomes the prompt), and the final is a fresh full-quality pass over the utterance.
"""

from __future__ import annotations

import re

import numpy as np

from hearline.engines.base import SAMPLE_RATE, Engine, TranscribeOptions, Transcript, Word
from hearline.live.policies import FINAL_TAIL_S, FinalJob, Policy, Result, Transcriber, shift_words

PROMPT_CHARS = 200  # tail of earlier text given to the decoder as context
WINDOW_SAMPLES = 512  # the least audio worth a partial step (one VAD window)


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
        segmented: bool = True,
        partial_transcribe: Transcriber | None = None,
    ) -> None:
        self._engine = engine
        self._segmented = segmented
        self._transcribe = transcribe or engine.transcribe  # the pool's batched window decode, if any
        self._partial_transcribe = partial_transcribe or self._transcribe  # a faster partial model, if any
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
        """One partial pass over the window: cheap (greedy, one temperature), since it is redone every step
        and only its agreed prefix counts.  No VAD when the session's segmenter cut the utterance at speech;
        when it did not (VAD off: the client ends utterances), the engine's VAD runs as for the final, or two
        passes could agree on words Whisper wrote over music or hum and stream them as firm."""
        options = TranscribeOptions(
            language=language,
            task=self._options.task,
            prompt=self._prompt(),
            temperature=self._options.temperature,
            beam_size=1,
            fallback=False,
            word_timestamps=True,
            vad_filter=False if self._segmented else self._options.vad_filter,
            hotwords=self._options.hotwords,
            draft=True,
        )
        transcript = self._partial_transcribe(self._audio(), options)
        return shift_words(_words_of(transcript), self._window_start / SAMPLE_RATE), transcript.language

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
        words = self._trimmed_words + self._committed + self._hypothesis
        return Result(text=f"{committed} {rest}".strip(), committed=committed, words=words, language=self._language)

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
        times, the engine's no-speech guards), so the final reads as the offline text of that utterance (the
        encoder may see a shorter window: ``short_window``).

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
            # The engine's default VAD stays (Whisper writes text over a non-speech "utterance" without it);
            # a batching engine cuts it before the batch (``window_request``), so finals batch too.
            vad_filter=self._options.vad_filter,
            hotwords=self._options.hotwords,
            short_window=self._options.short_window,
        )

        def run() -> Result:
            transcript = transcribe(audio, options)
            return Result(
                text=transcript.text.strip(),
                words=shift_words(_words_of(transcript), offset),
                language=transcript.language,
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
