"""LiveSession: PCM in, events out.

Every live protocol adapter (WhisperLiveKit /asr, port-8765 /stt, OpenAI Realtime, Vosk, captions)
drives one of these and translates its events into its own wire format.

Inside, two tasks per session and no threads of its own:

* the *input* task takes pushed audio (already resampled to 16 kHz) from a bounded queue, scores it with
  Silero VAD in a worker thread (whole blocks at once, not per window) and cuts it into utterances
  (:mod:`hearline.live.segmenter`), all on the sample clock;
* the *decoder* task turns the open utterance into partials and each closed utterance into a final
  through a policy (:mod:`hearline.live.policies`), one ``ModelPool.run`` job at a time.  Audio that
  arrives while a job runs is gathered and handled by the next job, so a session that falls behind
  does fewer, bigger steps (newest audio wins) instead of queueing work; partial jobs may be refused
  by a busy pool (``reject_when_full``), finals never are.

When a policy's final is a second pass that needs only the utterance's audio (PocketSphinx), that pass
is a separate pool job: the decoder task goes straight on to the next utterance's partials while it
runs, so a long utterance's final does not hold up the live text.  Finals still go out in utterance
order; when one arrives after the next utterance's first partials, the newest partial is sent again
right after it, so adapters whose protocol has a single "current partial" show it again.

Finals are prepared ahead of the endpoint: when speech has stopped for ``pause_ms`` (150 ms) the
segmenter says so and the final pass starts right away, while the endpoint (``silence_ms``, 500 ms) is
still awaited; if speech resumes the prepared result is dropped, if the endpoint comes it is the final.
For engines whose final is a second pass over the utterance (PocketSphinx, Whisper) this takes up to
350 ms off the final's latency without changing its text.  Such a guess is speculative (about half of
the pauses it starts on are followed by more speech), so it runs only on spare pool capacity: when the
machine is busy, finals are computed at the endpoint and no work is wasted.

When every batch slot is busy (finals and requests use all the cores), partial decoding for a policy
whose final is a second pass passes over its audio rather than take CPU from those finals: under
overload the live text thins out, the finals keep up.

Memory is bounded: the session holds at most a few utterances of audio (the input task waits when
finals are pending, which makes ``push`` wait: backpressure) plus a short text history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np

from hearline.audio.decode import StreamResampler
from hearline.engines.base import SAMPLE_RATE, Engine, TranscribeOptions, Word
from hearline.live.policies import FinalJob, Policy, Result, choose_policy
from hearline.live.segmenter import Action, Audio, Begin, Drop, End, Pause, Resume, Segmenter
from hearline.models.pool import ModelPool, ServerBusy
from hearline.models.scheduling import Lane

logger = logging.getLogger(__name__)

T = TypeVar("T")

INPUT_QUEUE_ITEMS = 64  # pushed blocks waiting for the input task (push awaits beyond this)
INPUT_BACKLOG_S = 2.0  # ... or beyond this much queued audio, however it is cut into blocks
EVENT_QUEUE_ITEMS = 256  # events waiting for the reader; partials and lag are dropped when full
MAX_OPEN_UTTERANCES = 3  # utterances the decoder task has not closed yet (the open one included)
MAX_PENDING_FINALS = 2  # closed utterances whose final pass still runs (each holds its audio)
MAX_BEHIND_S = 3.0  # audio segmented but not yet decoded before the input task waits (push then waits)
LAG_EVERY_S = 1.0  # a Lag event per this much audio
PARTIAL_RETRY_S = 0.1  # wait after the pool refused partial work


@dataclass(frozen=True)
class LiveOptions:
    language: str | None = None  # ISO code; None: detect per utterance
    task: Literal["transcribe", "translate"] = "transcribe"
    prompt: str | None = None
    vad: bool = True  # False: utterances end only on end_utterance()/flush()/max length
    vad_threshold: float = 0.5
    silence_ms: int = 500  # endpoint after this much silence
    pause_ms: int = 150  # after this much silence the final is prepared, ahead of the endpoint (0: off)
    prefix_padding_ms: int = 300  # audio kept before detected speech onset
    max_utterance_s: float = 15.0  # forced split
    # Partial work further behind than this passes over the older audio (newest audio wins); the final
    # still covers it.  Only for policies that can (a second-pass final); 0: never skip.
    max_partial_behind_s: float = 0.6
    partial_interval_s: float = 0.5  # how often partial work is scheduled (re-decoding engines)
    policy: Literal["auto", "native", "local_agreement"] = "auto"  # auto: from engine capabilities


@dataclass(frozen=True)
class SpeechStarted:
    utterance_id: int
    start: float  # seconds on the session's audio clock
    type: Literal["speech_started"] = "speech_started"


@dataclass(frozen=True)
class Partial:
    utterance_id: int
    text: str  # whole not-yet-final text of the open utterance
    start: float
    committed: str = ""  # prefix of ``text`` that will not change any more (LocalAgreement)
    type: Literal["partial"] = "partial"


@dataclass(frozen=True)
class Final:
    utterance_id: int
    text: str
    start: float
    end: float
    words: list[Word] = field(default_factory=list)
    language: str | None = None
    type: Literal["final"] = "final"


@dataclass(frozen=True)
class Silence:
    start: float
    end: float
    type: Literal["silence"] = "silence"


@dataclass(frozen=True)
class Lag:
    seconds: float  # how far processing is behind the audio received
    type: Literal["lag"] = "lag"


@dataclass(frozen=True)
class Error:
    message: str
    fatal: bool = False
    type: Literal["error"] = "error"


Event = SpeechStarted | Partial | Final | Silence | Lag | Error


class _End:
    """Marks the end of the event stream."""


_END = _End()
_FLUSH = object()  # input queue: end of audio
_WAKE = object()  # input queue: a command was queued while the input task was idle


class _Utterance:
    """Audio of one utterance that the decoder has not consumed yet, plus its bookkeeping."""

    def __init__(self, utterance_id: int, start_sample: int, speech_sample: int, audio: np.ndarray) -> None:
        self.id = utterance_id
        self.start_sample = start_sample
        self.speech_sample = speech_sample
        self.end_sample: int | None = None
        self.closed = False
        self.dropped = False
        self.begun = False  # the policy has been told (and may hold a stream slot)
        self.fed = 0  # samples handed to the policy
        self.paused = False  # speech stopped a moment ago (segmenter Pause, no Resume yet)
        self.pause_end: int | None = None  # where sound (not just speech) stopped before that pause
        self.sound_end: int | None = None  # ... and before the endpoint (segmenter End)
        self.guess: asyncio.Future[Result | None] | None = None  # final being prepared during this pause
        self.guess_started: threading.Event | None = None  # set by the worker thread once that pass runs
        self.guess_tried = False
        self._chunks: deque[np.ndarray] = deque([audio])
        self.pending = int(audio.size)

    def add(self, audio: np.ndarray) -> None:
        self._chunks.append(audio)
        self.pending += int(audio.size)

    def take(self) -> np.ndarray:
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        audio = self._chunks[0] if len(self._chunks) == 1 else np.concatenate(list(self._chunks))
        self._chunks.clear()
        self.pending = 0
        return audio

    def give_back(self, audio: np.ndarray) -> None:
        if audio.size:
            self._chunks.appendleft(audio)
            self.pending += int(audio.size)


# Engines whose streams hold a scarce resource while an utterance is open (PocketSphinx leases one of a
# few decoders) get an async admission limit, so sessions wait on the event loop instead of blocking
# pool workers on the engine's lease (which could starve the very jobs that release leases).
_stream_slots: weakref.WeakKeyDictionary[Engine, tuple[asyncio.AbstractEventLoop, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


def _stream_capacity(engine: Engine) -> int | None:
    """How many of this engine's streams may have an utterance open at once (None: no limit).

    An engine whose streams hold a scarce resource says so with ``max_open_streams``.  PocketSphinx
    shares its decoders between offline calls and live streams and keeps one back for offline work:
    an offline call takes its pool slot *before* it waits for a decoder, so if live utterances held
    every decoder, offline calls could fill every pool slot and the live jobs that would free a
    decoder could never run.
    """
    value = getattr(engine, "max_open_streams", None)
    if isinstance(value, int) and value > 0:
        return value
    return None


def _slot_semaphore(engine: Engine) -> asyncio.Semaphore | None:
    capacity = _stream_capacity(engine)
    if capacity is None:
        return None
    loop = asyncio.get_running_loop()
    entry = _stream_slots.get(engine)
    if entry is None or entry[0] is not loop:
        entry = (loop, asyncio.Semaphore(capacity))
        _stream_slots[engine] = entry
    return entry[1]


class LiveSession:
    """One live stream of audio.

    Usage by an adapter::

        session = LiveSession(pool, model_name, LiveOptions(language="en"))
        await session.start()                 # loads/resolves the model; raises UnknownModel etc.
        reader = asyncio.create_task(forward(session.events()))
        await session.push(samples, 16000)    # float32 mono at any rate; awaits when input is backlogged
        session.end_utterance()               # optional: force an endpoint now (Realtime commit)
        session.discard()                     # optional: drop the open utterance (Realtime clear)
        await session.flush()                 # end of audio: every pending final is emitted, then events() ends
        await session.close()                 # always, also on client disconnect; idempotent

    Events: ``SpeechStarted`` when VAD opens an utterance; ``Partial`` (whole open text) while it is
    open; ``Silence`` when an endpoint is detected (speech end -> detection point, the "speech stopped"
    moment); ``Final`` for every utterance that had a ``SpeechStarted`` and was not discarded (text may
    be empty: adapters skip those if their protocol has no empty results); ``Lag``
    about once per second of audio; ``Error`` when a job fails (the session goes on unless ``fatal``).
    """

    def __init__(self, pool: ModelPool, model: str | None = None, options: LiveOptions | None = None) -> None:
        self.pool = pool
        self.model = model
        self.options = options or LiveOptions()
        self.engine: Engine | None = None
        self._input: asyncio.Queue[Any] = asyncio.Queue(maxsize=INPUT_QUEUE_ITEMS)
        self._events: asyncio.Queue[Any] = asyncio.Queue(maxsize=EVENT_QUEUE_ITEMS)
        self._commands: deque[tuple[int, str]] = deque(maxlen=64)  # (sample position, "end" | "discard")
        self._resampler: StreamResampler | None = None
        self._received = 0  # samples (16 kHz) pushed
        self._queued = 0  # samples pushed but not yet taken by the input task
        self._space = asyncio.Event()  # push: the input backlog shrank
        self._consumed = 0  # samples through VAD and segmentation
        self._processed = 0  # samples whose text is out (partial or final)
        self._next_lag = int(LAG_EVERY_S * SAMPLE_RATE)
        self._utts: deque[_Utterance] = deque()
        self._wake = asyncio.Event()  # decoder: something to do
        self._room = asyncio.Event()  # input: the decoder caught up enough
        self._drained = asyncio.Event()  # decoder: flushing and nothing left
        self._flushing = False
        self._started = False
        self._closed = False
        self._ended = False
        self._policy: Policy | None = None
        self._vad: Any = None
        self._segmenter: Segmenter | None = None
        self._slot: asyncio.Semaphore | None = None
        self._holding_slot = False
        self._input_waiting = False  # the input task waits for the decoder (backpressure)
        self._jobs: set[asyncio.Future[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._finals: deque[asyncio.Task[None]] = deque()  # final deliveries, in utterance order
        self._guesses: set[asyncio.Task[Result | None]] = set()
        self._latest_partial: Partial | None = None
        self._progress = asyncio.Event()  # settle(): audio was segmented or a final went out
        self.partial_skipped = 0  # samples partial decoding passed over because it was behind

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            raise RuntimeError("session already started")
        engine = await self.pool.get(self.model)
        opts = self.options
        transcribe_options = TranscribeOptions(language=opts.language, task=opts.task, prompt=opts.prompt)
        engine.check_options(transcribe_options)
        loop = asyncio.get_running_loop()
        if opts.vad:
            from hearline.audio.vad import VADStream

            self._vad = await loop.run_in_executor(None, VADStream)
        self._segmenter = Segmenter(
            threshold=opts.vad_threshold,
            silence_ms=opts.silence_ms,
            prefix_padding_ms=opts.prefix_padding_ms,
            max_utterance_s=opts.max_utterance_s,
            use_vad=opts.vad,
            pause_ms=opts.pause_ms,
        )
        self._policy = choose_policy(engine, transcribe_options, opts.partial_interval_s, prefer=opts.policy)
        self._slot = _slot_semaphore(engine) if self._policy.needs_lease else None
        self.engine = engine
        self._started = True
        self._tasks = [
            asyncio.create_task(self._input_loop(), name="live-input"),
            asyncio.create_task(self._decoder_loop(), name="live-decoder"),
        ]
        self._tasks[0].add_done_callback(lambda _: self._progress.set())  # settle() returns

    async def push(self, audio: np.ndarray, sample_rate: int = 16000) -> None:
        if not self._started:
            raise RuntimeError("call start() before push()")
        if self._closed or self._flushing:
            logger.debug("audio pushed after flush/close ignored")
            return
        samples = np.asarray(audio)
        if samples.dtype == np.int16:
            samples = samples.astype(np.float32) / 32768.0
        samples = samples.astype(np.float32, copy=False).reshape(-1)
        if sample_rate != SAMPLE_RATE:
            if self._resampler is None or self._resampler.from_rate != sample_rate:
                tail = self._resampler.flush() if self._resampler is not None else None
                if tail is not None and tail.size:
                    await self._enqueue(tail)
                self._resampler = StreamResampler(sample_rate, SAMPLE_RATE)
            samples = self._resampler.push(samples)
        if samples.size:
            await self._enqueue(samples)

    async def _enqueue(self, samples: np.ndarray) -> None:
        while self._queued > INPUT_BACKLOG_S * SAMPLE_RATE and not self._closed:
            self._space.clear()
            await self._space.wait()
        if self._closed:
            return
        self._received += int(samples.size)
        self._queued += int(samples.size)
        await self._input.put(samples)

    def end_utterance(self) -> None:
        self._command("end")

    def discard(self) -> None:
        self._command("discard")

    def _command(self, kind: str) -> None:
        if not self._started or self._closed or self._flushing:
            return
        self._commands.append((self._received, kind))
        with contextlib.suppress(asyncio.QueueFull):
            self._input.put_nowait(_WAKE)

    async def flush(self) -> None:
        if not self._started or self._closed:
            return
        if not self._flushing:
            if self._resampler is not None:
                tail = self._resampler.flush()
                if tail.size:
                    await self._enqueue(tail)
            self._flushing = True
            await self._input.put(_FLUSH)
        await asyncio.wait([self._tasks[0]])

    async def settle(self, partial: bool = False) -> None:
        """Wait until the audio pushed so far is segmented and each utterance that ended in it has its final out.

        For lock-step protocols (Vosk) whose reply to a chunk carries the result of an utterance that
        ended in that chunk, as a recogniser that decodes synchronously would give it.  With
        ``partial``, also until the open utterance's partial covers that audio (to within one decoding
        step), so the reply's partial is not stale however fast the client sends.
        """
        target = self._received
        while not self._closed and self._tasks and not self._tasks[0].done():
            self._progress.clear()
            segmented = self._consumed >= target and not self._finals and not any(u.closed for u in self._utts)
            if segmented and (not partial or self._partial_covers(target)):
                return
            await self._progress.wait()

    def _partial_covers(self, target: int) -> bool:
        if self._policy is None or not self._utts:
            return True
        return self._processed_position() + self._policy.batch_samples > target

    @property
    def events_waiting(self) -> int:
        """Events emitted but not yet taken by the reader."""
        return self._events.qsize()

    def events(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while not self._ended:
            event = await self._events.get()
            if event is _END:
                self._ended = True
                return
            yield event

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio received so far (the session's sample clock)."""
        return self._received / SAMPLE_RATE

    @property
    def lag_seconds(self) -> float:
        """Seconds of received audio whose text is not out yet."""
        return max(0.0, (self._received - self._processed_position()) / SAMPLE_RATE)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._space.set()  # a push waiting on backpressure returns
        tasks = [*self._tasks, *self._finals, *self._guesses]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # Worker threads cannot be interrupted: wait for any job still running before releasing the
        # stream it uses.
        if self._jobs:
            await asyncio.gather(*self._jobs, return_exceptions=True)
        policy, self._policy = self._policy, None
        if policy is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(None, policy.close)
            except Exception:
                logger.exception("closing the live policy failed")
        self._release_slot()
        self._utts.clear()
        while not self._input.empty():  # a push blocked on a full queue returns
            self._input.get_nowait()
        self._end_events()

    def _end_events(self) -> None:
        while True:
            try:
                self._events.put_nowait(_END)
                return
            except asyncio.QueueFull:
                self._events.get_nowait()  # nobody is reading: make room for the end marker

    # -- events --------------------------------------------------------------------------------
    async def _emit(self, event: Event) -> None:
        if isinstance(event, (Partial, Lag)):
            self._emit_nowait(event)
            return
        await self._events.put(event)

    def _emit_nowait(self, event: Partial | Lag) -> None:
        if isinstance(event, Partial):
            self._latest_partial = event
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            logger.debug("event queue full; dropping %s", event.type)

    def _processed_position(self) -> int:
        if self._utts:
            head = self._utts[0]
            return head.start_sample + head.fed
        return self._consumed

    # -- input task: VAD and segmentation ------------------------------------------------------
    async def _input_loop(self) -> None:
        try:
            while True:
                item = await self._input.get()
                batch = [item]
                while len(batch) < INPUT_QUEUE_ITEMS:
                    try:
                        batch.append(self._input.get_nowait())
                    except asyncio.QueueEmpty:
                        break
                self._queued -= sum(int(entry.size) for entry in batch if isinstance(entry, np.ndarray))
                self._space.set()
                flush = False
                parts: list[np.ndarray] = []
                for entry in batch:
                    if entry is _FLUSH:
                        flush = True
                        break
                    if entry is _WAKE:
                        continue
                    if self._commands and self._commands[0][0] <= self._consumed + sum(p.size for p in parts):
                        await self._process(parts)
                        parts = []
                        await self._apply_commands()
                    parts.append(entry)
                await self._process(parts)
                await self._apply_commands()
                if flush:
                    await self._finish_input()
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("live session input failed")
            await self._emit(Error(f"live transcription failed: {exc}", fatal=True))
            self._end_events()

    async def _process(self, parts: list[np.ndarray]) -> None:
        if not parts:
            return
        audio = parts[0] if len(parts) == 1 else np.concatenate(parts)
        assert self._segmenter is not None
        probs = None
        if self._vad is not None:
            probs = await asyncio.get_running_loop().run_in_executor(None, self._vad.process, audio)
        actions = self._segmenter.push(audio, probs)
        self._consumed += int(audio.size)
        self._progress.set()
        for action in actions:
            await self._handle(action)
        if self._consumed >= self._next_lag:
            self._next_lag = self._consumed + int(LAG_EVERY_S * SAMPLE_RATE)
            await self._emit(Lag(round(self.lag_seconds, 3)))
        # Backpressure: while the decoder is behind, stop taking input (push() then waits), so the
        # session holds a few seconds of audio, not however much the client can send.
        while not self._closed and (
            len(self._utts) >= MAX_OPEN_UTTERANCES
            or len(self._finals) >= MAX_PENDING_FINALS
            or self._consumed - self._processed_position() > MAX_BEHIND_S * SAMPLE_RATE
        ):
            self._input_waiting = True
            self._room.clear()
            self._wake.set()
            await self._room.wait()
        self._input_waiting = False

    async def _apply_commands(self) -> None:
        assert self._segmenter is not None
        while self._commands and self._commands[0][0] <= self._consumed:
            _, kind = self._commands.popleft()
            actions = self._segmenter.end("forced") if kind == "end" else self._segmenter.drop()
            if self._vad is not None:
                self._vad.skip_pending()  # the segmenter took (or dropped) the samples short of a window
            for action in actions:
                await self._handle(action)

    async def _finish_input(self) -> None:
        assert self._segmenter is not None
        for action in self._segmenter.end("flush"):
            await self._handle(action)
        self._drained.clear()
        self._wake.set()
        await self._drained.wait()
        self._end_events()

    async def _handle(self, action: Action) -> None:
        if isinstance(action, Begin):
            utt = _Utterance(action.utterance_id, action.start_sample, action.speech_sample, action.audio)
            self._utts.append(utt)
            await self._emit(SpeechStarted(action.utterance_id, round(action.speech_sample / SAMPLE_RATE, 3)))
        elif isinstance(action, Audio):
            if self._utts and not self._utts[-1].closed:
                self._utts[-1].add(action.audio)
        elif isinstance(action, End):
            if self._utts and not self._utts[-1].closed:
                utt = self._utts[-1]
                utt.closed = True
                utt.end_sample = action.speech_end_sample
                utt.sound_end = action.sound_end_sample
                if action.reason == "silence":
                    await self._emit(
                        Silence(
                            round(action.speech_end_sample / SAMPLE_RATE, 3), round(action.at_sample / SAMPLE_RATE, 3)
                        )
                    )
        elif isinstance(action, Drop) and self._utts and not self._utts[-1].closed:
            self._utts[-1].dropped = True
            self._utts[-1].closed = True
        elif isinstance(action, Pause) and self._utts and not self._utts[-1].closed:
            self._utts[-1].paused = True
            self._utts[-1].pause_end = action.sound_end_sample
        elif isinstance(action, Resume) and self._utts and not self._utts[-1].closed:
            utt = self._utts[-1]
            if utt.guess is not None:
                utt.guess.cancel()  # stale: saves the work if the pool has not started it
            utt.paused, utt.guess, utt.guess_tried, utt.guess_started = False, None, False, None
        self._wake.set()

    # -- decoder task: partials and finals -----------------------------------------------------
    async def _decoder_loop(self) -> None:
        assert self._policy is not None
        policy = self._policy
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._utts:
                    if not await self._step(policy, self._utts[0]):
                        break
                if self._flushing and not self._utts and not self._finals:
                    self._drained.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("live session decoder failed")
            await self._emit(Error(f"live transcription failed: {exc}", fatal=True))
            self._end_events()

    def _done_with_head(self) -> None:
        utt = self._utts.popleft()
        self._processed = utt.start_sample + utt.fed
        self._room.set()
        self._progress.set()

    async def _step(self, policy: Policy, utt: _Utterance) -> bool:
        """Do one job for the oldest utterance; False when there is nothing to do until more input."""
        if utt.dropped:
            if utt.guess is not None:
                utt.guess.cancel()
            if self._latest_partial is not None and self._latest_partial.utterance_id == utt.id:
                self._latest_partial = None
            if utt.begun:
                await self._job(policy.discard, reject=False, lane=Lane.LIVE)
                self._release_slot()
            self._done_with_head()
            return True
        if not utt.begun:
            if self._slot is not None and not self._holding_slot:
                await self._slot.acquire()
                self._holding_slot = True
            policy.begin(utt.start_sample)
            utt.begun = True
        if utt.closed:
            await self._close_utterance(policy, utt)
            return True
        if utt.paused and not utt.guess_tried:
            return await self._guess(policy, utt)
        if utt.pending < policy.batch_samples:
            return False
        audio = utt.take()
        skip = self._partial_skip(policy, audio.size)
        try:
            # A busy pool may refuse partial work, unless the input is waiting on it (then it is the
            # only way forward and must queue like a final).
            result = await self._job(policy.partial, audio, skip, reject=not self._input_waiting, lane=Lane.LIVE)
        except ServerBusy:
            utt.give_back(audio)  # newer audio joins it; the next step decodes all of it
            await asyncio.sleep(PARTIAL_RETRY_S)
            return True
        except Exception as exc:
            logger.exception("partial decoding failed")
            await self._emit(Error(f"partial transcription failed: {exc}"))
            result = None
        utt.fed += int(audio.size)
        self.partial_skipped += skip
        self._room.set()
        # Emitted even if the utterance closed meanwhile (input ran ahead): it still precedes the final.
        # While a final prepared in this pause is pending or shown, the quicker first-pass hypothesis
        # of the silence after it would only flicker.
        if result is not None and result.text and utt.guess is None:
            start = round(utt.speech_sample / SAMPLE_RATE, 3)
            await self._emit(Partial(utt.id, result.text, start, committed=result.committed))
        self._progress.set()
        return True

    def _partial_skip(self, policy: Policy, pending: int) -> int:
        """Leading samples the partial step may pass over, for a policy whose final decodes them anyway.

        Incremental decoding costs the same per second of audio however it is batched, so for native
        streaming "coalescing" partial work has to mean decoding less of it:

        * while every batch slot is busy with finals (or requests), partial decoding would take CPU
          from work someone waits for, so it passes over all of its audio (measured with 7 PocketSphinx
          sessions on 2 cores: worst lag 5.5 s -> 0.5 s and final latency p50 5.2 s -> 1.8 s, with
          partials passing over 44 % of the audio);
        * further behind than ``max_partial_behind_s``, only the newest ``batch_samples`` are decoded.

        Only the live text thins out while the machine is overloaded; every final covers all audio.
        """
        limit = int(self.options.max_partial_behind_s * SAMPLE_RATE)
        if not policy.can_skip or limit <= 0:
            return 0
        if self.engine is not None and self.pool.batch_saturated(self.engine):
            return pending
        if pending <= limit:
            return 0
        return pending - min(pending, policy.batch_samples)

    async def _close_utterance(self, policy: Policy, utt: _Utterance) -> None:
        """End the head utterance and queue its final; a final pass that is a job runs on its own."""
        audio = utt.take()
        guess, utt.guess = utt.guess, None
        if guess is not None and not guess.done() and utt.guess_started is not None and not utt.guess_started.is_set():
            # Admitted on spare capacity but not running yet (its thread is still busy, e.g. loading a
            # model): it is a final now, and the final pass below is queued as one, ahead of any
            # speculative work.
            guess.cancel()
        source: Result | Awaitable[Result]
        try:
            prepared = _result_of(guess)
            if prepared is not None:
                # Speech never resumed after the pause the final was prepared in: the audio since is
                # silence and the prepared result is the final.
                source = await self._job(policy.final_from_guess, prepared, reject=False, lane=Lane.LIVE)
            else:
                lane = Lane.NORMAL if policy.inline_final_pass else Lane.LIVE
                outcome = await self._job(policy.final, audio, utt.sound_end, reject=False, lane=lane)
                source = self._final_pass(outcome, guess)
        except Exception as exc:
            logger.exception("final decoding failed")
            await self._emit(Error(f"transcription of an utterance failed: {exc}"))
            source = Result(text="")
        utt.fed += int(audio.size)
        self._release_slot()
        previous = self._finals[-1] if self._finals else None
        delivery = asyncio.create_task(self._deliver_final(utt, source, previous), name="live-final")
        self._finals.append(delivery)
        delivery.add_done_callback(self._final_delivered)
        self._done_with_head()

    async def _final_pass(self, outcome: Result | FinalJob, guess: asyncio.Future[Result | None] | None) -> Result:
        """The final: the one still being prepared from the pause if that succeeds, else ``outcome``."""
        if guess is not None:
            await asyncio.wait([guess])
            prepared = _result_of(guess)
            if prepared is not None:
                return prepared
        if isinstance(outcome, Result):
            return outcome
        return await self._job(outcome, reject=False, lane=Lane.NORMAL)  # a final is never refused

    async def _deliver_final(
        self, utt: _Utterance, source: Result | Awaitable[Result], previous: asyncio.Task[None] | None
    ) -> None:
        if isinstance(source, Result):
            result = source
        else:
            try:
                result = await source
            except Exception as exc:
                logger.exception("final decoding failed")
                await self._emit(Error(f"transcription of an utterance failed: {exc}"))
                result = Result(text="")
        if previous is not None:
            await asyncio.wait([previous])  # finals go out in utterance order
        await self._emit_final(utt, result)
        latest = self._latest_partial
        if latest is not None and latest.utterance_id > utt.id:
            # The next utterance's text went out before this final: show it again after it.
            await self._emit(latest)

    def _final_delivered(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._finals.remove(task)
        self._progress.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error("delivering a final failed", exc_info=task.exception())
        self._room.set()
        self._wake.set()

    async def _guess(self, policy: Policy, utt: _Utterance) -> bool:
        """Start preparing the final during a pause, so it is ready when the endpoint confirms the pause."""
        utt.guess_tried = True
        audio = utt.take()
        try:
            # Optional work: a busy pool may refuse it (the final is then computed at the endpoint).
            lane = Lane.BACKGROUND if policy.inline_final_pass else Lane.LIVE
            outcome = await self._job(policy.guess_final, audio, utt.pause_end, reject=True, lane=lane)
        except ServerBusy:
            utt.give_back(audio)
            return True
        except Exception as exc:
            logger.exception("preparing a final failed")
            await self._emit(Error(f"preparing the final of an utterance failed: {exc}"))
            outcome = None
        utt.fed += int(audio.size)
        self._room.set()
        if outcome is None or not utt.paused or utt.closed:
            return True  # nothing to gain, or speech resumed while the job ran (stale)
        if isinstance(outcome, Result):
            future: asyncio.Future[Result | None] = asyncio.get_running_loop().create_future()
            future.set_result(outcome)
        else:
            started = threading.Event()

            def prepare(job: FinalJob = outcome) -> Result:
                started.set()
                return job()

            utt.guess_started = started
            task = asyncio.create_task(self._prepare(prepare), name="live-guess")
            self._guesses.add(task)
            task.add_done_callback(self._guesses.discard)
            future = task
        utt.guess = future
        future.add_done_callback(lambda done: self._show_guess(utt, done))
        return True

    async def _prepare(self, job: FinalJob) -> Result | None:
        try:
            return await self._job(job, reject=True, lane=Lane.BACKGROUND)
        except ServerBusy:
            return None
        except Exception:
            logger.exception("preparing a final failed")  # the final pass at the endpoint reports it
            return None

    def _show_guess(self, utt: _Utterance, done: asyncio.Future[Result | None]) -> None:
        """The prepared final, shown as the utterance's last partial while the endpoint is awaited."""
        if utt.guess is not done or utt.closed or self._closed:
            return
        result = _result_of(done)
        if result is not None and result.text:
            self._emit_nowait(Partial(utt.id, result.text, round(utt.speech_sample / SAMPLE_RATE, 3)))

    async def _emit_final(self, utt: _Utterance, result: Result) -> None:
        speech_start = utt.speech_sample / SAMPLE_RATE
        speech_end = (utt.end_sample if utt.end_sample is not None else utt.start_sample + utt.fed) / SAMPLE_RATE
        words = result.words
        start = min(speech_start, words[0].start) if words else speech_start
        end = max(speech_end, words[-1].end) if words else speech_end
        language = result.language or self.options.language
        await self._emit(Final(utt.id, result.text, round(start, 3), round(end, 3), list(words), language))

    def _release_slot(self) -> None:
        if self._holding_slot and self._slot is not None:
            self._holding_slot = False
            self._slot.release()

    async def _job(self, fn: Callable[..., T], *args: Any, reject: bool, lane: Lane) -> T:
        """``pool.run(fn, *args)``, tracked so close() can wait for the worker thread to let go."""
        assert self.engine is not None
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        lock = threading.Lock()
        state = ["pending"]

        def mark_done() -> None:
            if not done.done():
                done.set_result(None)

        def call() -> T:
            with lock:
                if state[0] == "cancelled":
                    raise asyncio.CancelledError
                state[0] = "running"
            try:
                return fn(*args)
            finally:
                with contextlib.suppress(RuntimeError):  # loop already closed
                    loop.call_soon_threadsafe(mark_done)

        self._jobs.add(done)
        done.add_done_callback(self._jobs.discard)
        try:
            return await self.pool.run(self.engine, call, reject_when_full=reject, lane=lane)
        finally:
            with lock:
                if state[0] == "pending":  # never started (refused, or cancelled while waiting)
                    state[0] = "cancelled"
                    mark_done()


def _result_of(future: asyncio.Future[Result | None] | None) -> Result | None:
    """The result of a finished, successful preparation; None otherwise."""
    if future is None or not future.done() or future.cancelled() or future.exception() is not None:
        return None
    return future.result()
