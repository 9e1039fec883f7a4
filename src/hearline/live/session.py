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
  by a busy pool (the scheduler's refusable work), finals never are.

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

This module keeps the session's lifecycle (start, push, commands, flush, settle, events, close); the
rest is split by what it holds: :mod:`~hearline.live.events` (options and events),
:mod:`~hearline.live.session_state` (state and shared helpers), :mod:`~hearline.live.session_input`
(input task), :mod:`~hearline.live.session_decoder` (decoder task), :mod:`~hearline.live.utterance`.
Their names are re-exported here; who runs next is :mod:`hearline.models.scheduler`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import numpy as np

from hearline.audio.decode import StreamResampler
from hearline.engines.base import SAMPLE_RATE, TranscribeOptions
from hearline.live.events import Error, Event, Final, Lag, LiveOptions, Partial, Silence, SpeechStarted
from hearline.live.partial_model import partial_engine
from hearline.live.policies import choose_policy
from hearline.live.segmenter import Segmenter
from hearline.live.session_decoder import SessionDecoder
from hearline.live.session_decoder import _result_of as _result_of
from hearline.live.session_input import SessionInput
from hearline.live.session_state import (
    _END,
    _FLUSH,
    _WAKE,
    EVENT_QUEUE_ITEMS,
    INPUT_BACKLOG_S,
    INPUT_QUEUE_ITEMS,
    LAG_EVERY_S,
    MAX_BEHIND_S,
    MAX_OPEN_UTTERANCES,
    MAX_PENDING_FINALS,
    PARTIAL_RETRY_S,
    T,
)
from hearline.live.session_state import _End as _End
from hearline.live.utterance import _Utterance as _Utterance

# Re-exported: adapters, tests and bench import these from here.
__all__ = [
    "EVENT_QUEUE_ITEMS",
    "INPUT_BACKLOG_S",
    "INPUT_QUEUE_ITEMS",
    "LAG_EVERY_S",
    "MAX_BEHIND_S",
    "MAX_OPEN_UTTERANCES",
    "MAX_PENDING_FINALS",
    "PARTIAL_RETRY_S",
    "Error",
    "Event",
    "Final",
    "Lag",
    "LiveOptions",
    "LiveSession",
    "Partial",
    "Silence",
    "SpeechStarted",
    "T",
]

logger = logging.getLogger(__name__)


class LiveSession(SessionInput, SessionDecoder):
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

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            raise RuntimeError("session already started")
        engine = await self.pool.get(self.model)
        opts = self.options
        transcribe_options = TranscribeOptions(
            language=opts.language,
            task=opts.task,
            prompt=opts.prompt,
            short_window=self.pool.settings.live_final_window == "short",
        )
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
        transcribe = self.pool.transcriber(engine)  # batched with other sessions' decodes where the model can
        if opts.policy != "native":
            self.partial_engine = await partial_engine(self.pool, engine, transcribe_options)
        self._policy = choose_policy(
            engine,
            transcribe_options,
            opts.partial_interval_s,
            prefer=opts.policy,
            transcribe=transcribe,
            segmented=opts.vad,
            partial_transcribe=self.pool.transcriber(self.partial_engine) if self.partial_engine else None,
        )
        self._slot = self.pool.stream_slots.semaphore(engine) if self._policy.needs_lease else None
        self.engine = engine
        self.pool.engine_users.add(self)
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
            segmented = (
                self._consumed >= target
                and not self._commands  # an end_utterance() not applied yet still closes an utterance
                and not self._finals
                and not any(u.closed for u in self._utts)
            )
            if segmented and (not partial or self._partial_covers(target)):
                return
            await self._progress.wait()

    def _partial_covers(self, target: int) -> bool:
        if self._policy is None or not self._utts:
            return True
        head = self._utts[-1]
        if head.paused and head.guess is not None and not head.guess.done():
            return False  # the pause's partial is the final being prepared (shown when it is done)
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

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.pool.engine_users.discard(self)
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
