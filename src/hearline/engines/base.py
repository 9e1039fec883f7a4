"""The one interface every recognizer sits behind.

Engines take 16 kHz mono float32 audio and return plain data.  They know nothing about HTTP,
WebSockets or sessions; adapters know nothing about engines beyond this module.  Engine methods are
blocking and CPU-bound: callers run them in the model pool's worker threads, never on the event loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

SAMPLE_RATE = 16000

Task = Literal["transcribe", "translate"]


class EngineError(RuntimeError):
    """An engine could not do what was asked (bad option for this engine, runtime failure)."""


class UnsupportedOption(EngineError):
    """The request asks for something this engine cannot do (e.g. translate with an English-only model)."""


class ModelFilesMissing(EngineError):
    """The model's files are not on disk; the message names what is expected."""


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float | None = None


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    temperature: float | None = None
    tokens: list[int] = field(default_factory=list)
    seek: int = 0


@dataclass
class Transcript:
    text: str
    segments: list[Segment]
    language: str | None
    language_probability: float | None
    duration: float

    @property
    def words(self) -> list[Word]:
        return [word for segment in self.segments for word in segment.words]


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None  # ISO-639-1; None means detect
    task: Task = "transcribe"
    prompt: str | None = None
    temperature: float = 0.0  # 0: engine default with fallback where the engine has one
    beam_size: int = 5
    word_timestamps: bool = False
    vad_filter: bool | None = None  # skip non-speech before decoding; None: the engine's default
    fallback: bool = True  # with temperature 0: retry hotter when a decode looks wrong (Whisper); off: one pass
    hotwords: str | None = None
    # A draft pass (a live partial, redone every step, only its agreed prefix kept): the engine may trade a
    # little accuracy for speed (Whisper: the encoder sees the audio and some silence, not a full 30 s window).
    draft: bool = False
    # A clip that fits one window is encoded as drafts are (its audio and some silence), but decoded in full:
    # a live final under ``--live-final-window short``.
    short_window: bool = False


#: One decoding window of a re-decoding engine (Whisper's 30 s): the most a batched window decode takes.
WINDOW_SAMPLES = 30 * SAMPLE_RATE


@dataclass(frozen=True)
class WindowRequest:
    """One window for an engine's batched ``decode_windows``.

    ``speech``: when the engine's VAD cut the clip (``window_request``), the sample spans of the original clip
    that ``audio`` concatenates, so the result's times come back on the clip's clock; ``duration`` is the clip's.
    """

    audio: np.ndarray  # float32 mono 16 kHz, len <= WINDOW_SAMPLES
    options: TranscribeOptions
    speech: tuple[tuple[int, int], ...] | None = None
    duration: float | None = None


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do; the live pipeline and the API choose behaviour from this, not from names."""

    languages: frozenset[str] | None = None  # None: multilingual (anything the model knows)
    translate: bool = False
    native_streaming: bool = False  # open_stream() gives incremental partials
    word_timestamps: bool = True
    language_detection: bool = False


SegmentCallback = Callable[[Segment], None]


class EngineStream(ABC):
    """Incremental recognition of one utterance at a time (engines with native streaming only)."""

    @abstractmethod
    def accept(self, audio: np.ndarray) -> None:
        """Feed more 16 kHz float32 samples of the current utterance."""

    def skip(self, audio: np.ndarray) -> None:
        """Samples of the current utterance that the live pipeline has no time to decode incrementally.

        Called when partial decoding fell behind (newest audio wins).  Engines whose final is a second
        pass over the utterance's audio keep these samples for that pass and resume incremental
        decoding after the gap, so the final loses nothing; by default they are decoded like the rest.
        """
        self.accept(audio)

    @abstractmethod
    def partial(self) -> str:
        """Best hypothesis so far for the current utterance."""

    @abstractmethod
    def finish(self) -> Transcript:
        """End the current utterance and return its final result; the stream is ready for the next one.

        Times in the returned transcript are relative to the start of the utterance.
        """

    def detach_final(self, samples: int | None = None) -> Callable[[], Transcript] | None:
        """End the current utterance now and return a job that computes its final apart from the stream.

        Engines whose final is a second pass over the utterance's audio (not the stream's own state)
        implement it, so the live pipeline can run that pass in another worker while this stream already
        decodes the next utterance.  ``samples``: the pass need decode only this many leading samples
        (the rest is the silence that confirmed the endpoint).  None: the final comes from ``finish()``.
        """
        return None

    def snapshot_final(self, samples: int | None = None) -> Callable[[], Transcript] | None:
        """A job computing what the final would be if the utterance ended now; the utterance stays open.

        Lets the live pipeline run the second pass during a pause, before the endpoint is certain, while
        partial decoding goes on.  ``samples`` as for :meth:`detach_final`.  None: not cheaper than
        waiting (the final comes from the stream).
        """
        return None

    def end(self) -> None:
        """End the current utterance without a result (its final came from ``snapshot_final``)."""
        self.finish()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources held by the stream."""


class Engine(ABC):
    """A loaded model."""

    #: engine family, e.g. "pocketsphinx", "faster-whisper"
    kind: str = ""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abstractmethod
    def transcribe(
        self,
        audio: np.ndarray,
        options: TranscribeOptions,
        on_segment: SegmentCallback | None = None,
    ) -> Transcript:
        """Transcribe a whole clip.  ``on_segment`` is called (in this thread) as each segment completes."""

    def open_stream(self, options: TranscribeOptions) -> EngineStream:
        raise UnsupportedOption(f"model {self.name!r} ({self.kind}) has no native streaming")

    def memory_bytes(self) -> int:
        """Rough resident size, for the pool's memory budget."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model."""

    def check_options(self, options: TranscribeOptions) -> None:
        """Reject options this engine cannot honour, with a message a user can act on."""
        caps = self.capabilities
        if options.task == "translate" and not caps.translate:
            raise UnsupportedOption(f"model {self.name!r} cannot translate; use a multilingual Whisper model")
        if (
            options.language
            and caps.languages is not None
            and options.language.split("-")[0].lower() not in caps.languages
        ):
            supported = ", ".join(sorted(caps.languages))
            raise UnsupportedOption(
                f"model {self.name!r} does not support language {options.language!r} (supported: {supported})"
            )


def join_text(parts: list[str]) -> str:
    """Join segment texts the way Whisper does: segments carry their own leading space."""
    return "".join(parts).strip()
