"""What one live session holds, and the helpers its input task, decoder task and lifecycle all use.

A base class of :class:`~hearline.live.session.LiveSession`, so the tasks' code can live in modules of
their own (:mod:`hearline.live.session_input`, :mod:`hearline.live.session_decoder`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from hearline.audio.decode import StreamResampler
from hearline.engines.base import SAMPLE_RATE, Engine
from hearline.live.events import Event, Lag, LiveOptions, Partial
from hearline.live.policies import Policy, Result
from hearline.live.segmenter import Segmenter
from hearline.live.utterance import _Utterance
from hearline.models.pool import ModelPool
from hearline.models.scheduler import Work

logger = logging.getLogger("hearline.live.session")  # the session's logger, as before the split

T = TypeVar("T")

INPUT_QUEUE_ITEMS = 64  # pushed blocks waiting for the input task (push awaits beyond this)
INPUT_BACKLOG_S = 2.0  # ... or beyond this much queued audio, however it is cut into blocks
EVENT_QUEUE_ITEMS = 256  # events waiting for the reader; partials and lag are dropped when full
MAX_OPEN_UTTERANCES = 3  # utterances the decoder task has not closed yet (the open one included)
MAX_PENDING_FINALS = 2  # closed utterances whose final pass still runs (each holds its audio)
MAX_BEHIND_S = 3.0  # audio segmented but not yet decoded before the input task waits (push then waits)
LAG_EVERY_S = 1.0  # a Lag event per this much audio
PARTIAL_RETRY_S = 0.1  # wait after the pool refused partial work
THIN_PARTIAL_S = 2.5  # a re-decoding partial step's audio while finals hold every batch slot


class _End:
    """Marks the end of the event stream."""


_END = _End()
_FLUSH = object()  # input queue: end of audio
_WAKE = object()  # input queue: a command was queued while the input task was idle


class SessionState:
    """A live session's state and shared helpers; see :class:`~hearline.live.session.LiveSession`."""

    def __init__(self, pool: ModelPool, model: str | None = None, options: LiveOptions | None = None) -> None:
        self.pool = pool
        self.model = model
        self.options = options or LiveOptions()
        self.engine: Engine | None = None
        self.partial_engine: Engine | None = None  # the server's --partial-model, where it fits this session
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

    @property
    def lag_seconds(self) -> float:
        """Seconds of received audio whose text is not out yet."""
        return max(0.0, (self._received - self._processed_position()) / SAMPLE_RATE)

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

    def _release_slot(self) -> None:
        if self._holding_slot and self._slot is not None:
            self._holding_slot = False
            self._slot.release()

    def _guess_from_audio(self, utt: _Utterance) -> None:
        """A pause was heard in ``utt`` (the decoder task's :meth:`SessionDecoder._guess_from_audio`)."""
        raise NotImplementedError

    async def _job(self, fn: Callable[..., T], *args: Any, work: Work, engine: Engine | None = None) -> T:
        """``pool.run(fn, *args)`` on ``engine`` (the session's by default), tracked so close() can wait for
        the worker thread to let go."""
        engine = engine or self.engine
        assert engine is not None
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
            return await self.pool.run(engine, call, work=work)
        finally:
            with lock:
                if state[0] == "pending":  # never started (refused, or cancelled while waiting)
                    state[0] = "cancelled"
                    mark_done()
