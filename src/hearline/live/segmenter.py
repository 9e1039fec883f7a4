"""Turns a stream of 512-sample windows and their speech probabilities into utterances.

Pure bookkeeping on the sample clock (no I/O, no threads), so it is cheap to run on the event loop
and easy to test.  It decides where utterances start (first window over the threshold, minus a little
prefix padding), where they end (``silence_ms`` below the lower hysteresis threshold, sooner as the
utterance approaches ``max_utterance_s``) and where they are force-split.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from hearline.audio.vad import WINDOW
from hearline.engines.base import SAMPLE_RATE


@dataclass(frozen=True)
class Begin:
    """An utterance opens; ``audio`` (prefix padding + first speech window) starts at ``start_sample``."""

    utterance_id: int
    start_sample: int
    speech_sample: int  # where speech was detected (after the padding)
    audio: np.ndarray


@dataclass(frozen=True)
class Audio:
    """More samples of the open utterance."""

    audio: np.ndarray


@dataclass(frozen=True)
class End:
    """The open utterance ends; speech stopped at ``speech_end_sample``; detected at ``at_sample``."""

    speech_end_sample: int
    at_sample: int
    reason: str  # "silence" | "max_length" | "forced" | "flush"
    # End of the last window not scored as silence (below the lower threshold): with hysteresis this
    # may be later than the speech end, e.g. a word trailing off; audio after it is silence.
    sound_end_sample: int | None = None


@dataclass(frozen=True)
class Drop:
    """The open utterance is abandoned (discard)."""


@dataclass(frozen=True)
class Pause:
    """Speech in the open utterance stopped at ``speech_end_sample`` a short while ago; it may be ending.

    Sent once per pause, before the endpoint, so a final can be prepared while the endpoint is awaited.
    """

    speech_end_sample: int
    sound_end_sample: int | None = None  # as for End


@dataclass(frozen=True)
class Resume:
    """Speech came back after a :class:`Pause`: the utterance goes on."""


Action = Begin | Audio | End | Drop | Pause | Resume


class Segmenter:
    def __init__(
        self,
        threshold: float = 0.5,
        silence_ms: int = 500,
        prefix_padding_ms: int = 300,
        max_utterance_s: float = 15.0,
        use_vad: bool = True,
        pause_ms: int = 0,
    ) -> None:
        self.threshold = threshold
        self.neg_threshold = max(0.01, threshold - 0.15)
        self.use_vad = use_vad
        self.silence_windows = max(1, round(silence_ms / 1000 * SAMPLE_RATE / WINDOW))
        # Pause notices need VAD and must come before the endpoint to be of use; 0 turns them off.
        pause_windows = round(pause_ms / 1000 * SAMPLE_RATE / WINDOW) if pause_ms > 0 else 0
        self.pause_windows = pause_windows if use_vad and 0 < pause_windows < self.silence_windows else 0
        self._paused = False
        # Near the length limit, a short pause is a better cut than a forced split mid-word.
        self.soft_silence_windows = max(1, min(self.silence_windows, round(0.16 * SAMPLE_RATE / WINDOW)))
        self.max_samples = max(WINDOW, int(max_utterance_s * SAMPLE_RATE))
        self.soft_samples = int(self.max_samples * 0.8)
        self.prefix_windows = max(0, round(prefix_padding_ms / 1000 * SAMPLE_RATE / WINDOW))
        self._prefix: deque[np.ndarray] = deque(maxlen=max(1, self.prefix_windows))
        self._pending = np.zeros(0, dtype=np.float32)
        self.position = 0  # samples consumed (windows only)
        self.next_id = 0
        self.open = False
        self._utt_start = 0
        self._quiet = 0  # consecutive quiet windows in the open utterance
        self._speech_end = 0
        self._sound_end = 0

    @property
    def utterance_samples(self) -> int:
        return self.position - self._utt_start if self.open else 0

    def push(self, audio: np.ndarray, probs: np.ndarray | None) -> list[Action]:
        """Consume ``audio``; ``probs`` scores each complete window of (pending + audio), or None without VAD."""
        if self._pending.size:
            audio = np.concatenate([self._pending, audio])
        count = audio.size // WINDOW
        if probs is not None:
            count = min(count, int(probs.size))
        self._pending = audio[count * WINDOW :].copy()
        actions: list[Action] = []
        if count == 0:
            return actions
        windows = audio[: count * WINDOW].reshape(count, WINDOW)
        run: list[np.ndarray] = []  # windows to append to the open utterance as one Audio action

        def flush_run() -> None:
            if run:
                actions.append(Audio(np.concatenate(run)))
                run.clear()

        for i in range(count):
            window = windows[i]
            p = 1.0 if probs is None else float(probs[i])
            start = self.position
            self.position += WINDOW
            if not self.open:
                if p >= self.threshold or not self.use_vad:
                    pad = list(self._prefix) if self.prefix_windows else []
                    self._prefix.clear()
                    padded = np.concatenate([*pad, window]) if pad else window.copy()
                    self._utt_start = start - sum(w.size for w in pad)
                    self.open = True
                    self._quiet = 0
                    self._paused = False
                    self._speech_end = self._sound_end = self.position
                    actions.append(Begin(self.next_id, self._utt_start, start, padded))
                    self.next_id += 1
                elif self.prefix_windows:
                    self._prefix.append(window.copy())
                continue
            run.append(window)
            if p >= self.threshold or not self.use_vad:
                self._quiet = 0
                self._speech_end = self._sound_end = self.position
                if self._paused:
                    self._paused = False
                    flush_run()
                    actions.append(Resume())
            else:
                # Silence is timed from the last window over the threshold (as the endpoint should be),
                # but only ends the utterance once the probability is below the lower threshold.
                self._quiet = (self.position - self._speech_end) // WINDOW if p < self.neg_threshold else 0
                if p >= self.neg_threshold:
                    self._sound_end = self.position
                if self.pause_windows and not self._paused and self._quiet >= self.pause_windows:
                    self._paused = True
                    flush_run()
                    actions.append(Pause(self._speech_end, self._sound_end))
            length = self.position - self._utt_start
            if self._quiet >= self.silence_windows or (
                length >= self.soft_samples and self._quiet >= self.soft_silence_windows
            ):
                flush_run()
                actions.append(End(self._speech_end, self.position, "silence", self._sound_end))
                self.open = False
            elif length >= self.max_samples:
                flush_run()
                actions.append(End(self._speech_end, self.position, "max_length", self.position))
                self.open = False
                # Speech goes on: the next window opens a new utterance, without re-sending padding.
                self._prefix.clear()
        flush_run()
        return actions

    def end(self, reason: str = "forced") -> list[Action]:
        """Close the open utterance now, including samples that do not fill a window yet."""
        actions: list[Action] = []
        if self.open:
            if self._pending.size:
                actions.append(Audio(self._pending))
                self.position += self._pending.size
                if self._speech_end == self.position - self._pending.size:  # speech ran up to the cut
                    self._speech_end = self.position
                if self._sound_end == self.position - self._pending.size:
                    self._sound_end = self.position
                self._pending = np.zeros(0, dtype=np.float32)
            actions.append(End(self._speech_end, self.position, reason, self._sound_end))
            self.open = False
        return actions

    def drop(self) -> list[Action]:
        if not self.open:
            return []
        self.open = False
        self._quiet = 0
        return [Drop()]
