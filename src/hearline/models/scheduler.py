"""Who runs next when inference work queues up for a model: one table of work kinds, one admission rule.

A worker thread cannot be pre-empted, so with one first-come-first-served queue a live session's
partial step (tens of milliseconds of compute) waits behind whatever long jobs were queued before it -
a 15 s utterance's final pass, a REST upload - and its text stalls for seconds although the machine
could serve it.  Every job therefore names its kind of :class:`Work`; :data:`RULES` gives each kind its
lane and whether a busy model may refuse it:

* :attr:`Lane.LIVE` - a live session's own steps (feed new audio, take the partial, end the
  utterance).  Short, latency-critical, one at a time per session; it never waits for the batch lane:
  both run side by side and the operating system shares the cores between them.
* the batch lane - :attr:`Lane.NORMAL` (finals, REST requests, translation) ahead of
  :attr:`Lane.BACKGROUND` (speculative work nobody waits for yet, such as a final prepared during a
  pause).  Waiting work is admitted by priority, then arrival (:class:`PriorityGate`); speculative work
  runs only on spare capacity, never in the queue.

Refusal is how overload stays bounded: partials thin out first (a refused partial is retried with newer
audio), then REST requests get ``ServerBusy``; finals, stream steps and translations are never refused.
Engines whose live streams hold a scarce resource declare it (``max_open_streams``); :class:`StreamSlots`
admits that many open utterances per engine.  Engines that decode several windows in one call declare it
(``decode_windows``, ``window_key``, ``parallel_calls``); :class:`Batcher` gathers the window decodes of every
session of such a model into batched calls, in :attr:`Rule.batch_order`.  Such a model's gate admits many
jobs, since they wait in the batcher, not on a core; work that does not batch (:attr:`Rule.batched`: a whole
upload) takes a place at a gate of its own, as many as the model's replicas (one fewer while live sessions use
the model, so that their finals always find a replica free), or eight admitted uploads would share the cores
with every final.  Engines never import this module.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")


class Lane(IntEnum):
    LIVE = 0
    NORMAL = 1
    BACKGROUND = 2


class Work(Enum):
    STREAM_STEP = "stream_step"  # a live step that must run: feed audio the input waits on, end or discard
    PARTIAL = "partial"  # a live partial: optional, newer audio makes it stale
    FINAL = "final"  # a final pass someone waits for
    SPECULATIVE_FINAL = "speculative_final"  # a final prepared in a pause, maybe wasted
    REQUEST = "request"  # an offline transcription (REST, CLI over the pool)
    TRANSLATION = "translation"  # a caption's translation by the speech model


@dataclass(frozen=True)
class Rule:
    lane: Lane
    refusable: bool  # a busy model may turn it away (ServerBusy) instead of queueing it
    batch_order: int  # place in a batched call's queue (lower first): what someone waits for ahead of partials
    rank: int  # admission order in its lane's gate (lower first): a live final ahead of queued uploads
    # joins a batching model's batched calls (one window per job); False: runs the model's own long-form loop,
    # holding one of its replicas for the whole job
    batched: bool = True


RULES: dict[Work, Rule] = {
    Work.STREAM_STEP: Rule(Lane.LIVE, refusable=False, batch_order=1, rank=0),
    Work.PARTIAL: Rule(Lane.LIVE, refusable=True, batch_order=2, rank=1),
    Work.FINAL: Rule(Lane.NORMAL, refusable=False, batch_order=0, rank=0),
    Work.SPECULATIVE_FINAL: Rule(Lane.BACKGROUND, refusable=True, batch_order=1, rank=2),
    Work.REQUEST: Rule(Lane.NORMAL, refusable=True, batch_order=0, rank=1, batched=False),
    Work.TRANSLATION: Rule(Lane.NORMAL, refusable=False, batch_order=0, rank=0, batched=False),
}


class PriorityGate:
    """An async semaphore whose waiters are admitted by priority (lower first), then by arrival."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.active = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._job_s: float | None = None  # running mean of how long an admitted job holds its place
        self._gap_s: float | None = None  # running mean of the time between completions while jobs queue
        self._busy_done: float | None = None  # when the last job ended with others queued

    def observe(self, seconds: float) -> None:
        """An admitted job held its place for ``seconds`` (called as it ends, after :meth:`release`)."""
        self._job_s = seconds if self._job_s is None else 0.7 * self._job_s + 0.3 * seconds
        now = time.monotonic()
        if not self.waiting:
            self._busy_done = None
            return
        if self._busy_done is not None:
            gap = now - self._busy_done
            self._gap_s = gap if self._gap_s is None else 0.7 * self._gap_s + 0.3 * gap
        self._busy_done = now

    def expected_wait(self) -> float:
        """Seconds before a job arriving now would be admitted, what a refusal's ``Retry-After`` says: the
        queue ahead of it (and itself) drained at the pace jobs really ended while others queued, which
        neither ``capacity`` (places may share cores, or be resized) nor the job length alone tells; before
        such a pace is known, the recent job length over ``capacity``."""
        if self._gap_s is not None:
            return (self.waiting + 1) * self._gap_s
        if self._job_s is None:
            return 1.0
        return (self.waiting + 1) * self._job_s / self.capacity

    @property
    def waiting(self) -> int:
        return sum(1 for *_, future in self._waiters if not future.done())

    @property
    def full(self) -> bool:
        return self.active >= self.capacity

    @property
    def spare(self) -> bool:
        """Room for speculative work: admitted now, with a slot still left for work someone waits for.

        Speculation that queues or takes the last slot only competes with the finals and requests it
        was meant to get ahead of, so under load it is better not done at all.
        """
        return not self.waiting and self.active < max(1, self.capacity - 1)

    async def acquire(self, priority: int = 0) -> None:
        if self.active < self.capacity and not self.waiting:
            self.active += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # admitted just as the waiter was cancelled: pass the place on
            raise

    def resize(self, capacity: int) -> None:
        """Admit ``capacity`` jobs at once from now on: waiters at once if it grew; running jobs are never cut."""
        self.capacity = max(1, capacity)
        self._admit()

    def release(self) -> None:
        self.active -= 1
        self._admit()

    def _admit(self) -> None:
        while self._waiters and self.active < self.capacity:
            *_, future = heapq.heappop(self._waiters)
            if future.done():  # its waiter was cancelled
                continue
            self.active += 1
            future.set_result(None)


def refuses(work: Work, gate: PriorityGate, max_queue: int) -> bool:
    """Whether a model whose lane is ``gate`` turns ``work`` away now (the one admission rule)."""
    rule = RULES[work]
    if not rule.refusable:
        return False
    if rule.lane is Lane.BACKGROUND:
        return not gate.spare
    return gate.full and gate.waiting >= max_queue


class StreamSlots:
    """Per-engine admission of open live utterances, for engines that declare ``max_open_streams``.

    Sessions wait here on the event loop rather than blocking pool workers on the engine's own lease,
    which could starve the very jobs that release leases.  One per pool, keyed weakly by engine.
    """

    def __init__(self) -> None:
        self._slots: weakref.WeakKeyDictionary[Any, tuple[asyncio.AbstractEventLoop, asyncio.Semaphore]] = (
            weakref.WeakKeyDictionary()
        )

    @staticmethod
    def capacity(engine: Any) -> int | None:
        """How many of this engine's streams may have an utterance open at once (None: no limit)."""
        value = getattr(engine, "max_open_streams", None)
        if isinstance(value, int) and value > 0:
            return value
        return None

    def semaphore(self, engine: Any) -> asyncio.Semaphore | None:
        capacity = self.capacity(engine)
        if capacity is None:
            return None
        loop = asyncio.get_running_loop()
        entry = self._slots.get(engine)
        if entry is None or entry[0] is not loop:
            entry = (loop, asyncio.Semaphore(capacity))
            self._slots[engine] = entry
        return entry[1]


_current = threading.local()


def current_work() -> Work:
    """The kind of work the calling pool worker thread is running (``Work.REQUEST`` outside a job)."""
    work = getattr(_current, "work", None)
    return work if isinstance(work, Work) else Work.REQUEST


def run_as(work: Work, fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn(*args)`` in this worker thread as ``work``, so a batched call it makes knows its place."""
    previous = getattr(_current, "work", None)
    _current.work = work
    try:
        return fn(*args)
    finally:
        _current.work = previous


@dataclass
class _Pending(Generic[R, S]):
    order: int
    seq: int
    key: Hashable
    request: R
    future: Future[S] = field(default_factory=Future)


class Batcher(Generic[R, S]):
    """Gathers one model's requests from many worker threads into batched calls.

    ``submit`` blocks its worker thread until the request's batch ran.  ``parallel`` threads each take
    the most urgent waiting request (:attr:`Rule.batch_order`, then arrival) and up to ``size - 1``
    others of the same ``key``, waiting at most ``wait_s`` for the batch to fill, and only while more
    requests are on their way (``busy()``: jobs admitted for the model, which each submit at most one
    request at a time): a lone session never waits.  A failed batch is retried one request at a time,
    so one bad request fails alone.
    """

    def __init__(
        self,
        run: Callable[[list[R]], list[S]],
        key: Callable[[R], Hashable],
        *,
        size: int,
        wait_s: float,
        parallel: int = 1,
        busy: Callable[[], int] = lambda: 0,
        name: str = "batch",
    ) -> None:
        self._run, self._key, self._busy = run, key, busy
        self.size, self.wait_s, self.parallel = max(1, size), max(0.0, wait_s), max(1, parallel)
        self._name = name
        self._cond = threading.Condition()
        self._pending: list[_Pending[R, S]] = []
        self._running = 0  # requests inside a batched call now
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.sizes: collections.Counter[int] = collections.Counter()  # batches run, by size

    def submit(self, request: R, work: Work | None = None) -> S:
        item: _Pending[R, S] = _Pending(
            RULES[work or current_work()].batch_order, next(self._seq), self._key(request), request
        )
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self._name}: closed")
            self._pending.append(item)
            if len(self._threads) < self.parallel:
                thread = threading.Thread(target=self._loop, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
            self._cond.notify()
        return item.future.result()

    def close(self) -> None:
        """Refuse new requests; the threads finish what is waiting, then end."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _group(self) -> list[_Pending[R, S]]:
        head = min(self._pending, key=lambda p: (p.order, p.seq))
        same = sorted((p for p in self._pending if p.key == head.key), key=lambda p: (p.order, p.seq))
        return same[: self.size]

    def _more_coming(self) -> bool:
        return self._busy() > len(self._pending) + self._running

    def _take(self) -> list[_Pending[R, S]] | None:
        with self._cond:
            while True:
                while not self._pending:
                    if self._closed:
                        return None
                    self._cond.wait()
                deadline = time.monotonic() + self.wait_s
                while self._pending and len(self._group()) < self.size and self._more_coming():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closed:
                        break
                    self._cond.wait(remaining)
                if self._pending:  # another thread may have taken them all while this one waited
                    break
            group = self._group()
            for item in group:
                self._pending.remove(item)
            self._running += len(group)
            self.sizes[len(group)] += 1
            return group

    def _loop(self) -> None:
        while (group := self._take()) is not None:
            try:
                self._call(group)
            finally:
                with self._cond:
                    self._running -= len(group)

    def _call(self, group: list[_Pending[R, S]]) -> None:
        try:
            results = self._run([item.request for item in group])
        except Exception as exc:  # noqa: BLE001 - handed to the waiting submitters, never swallowed
            if len(group) == 1:
                group[0].future.set_exception(exc)
                return
            logger.info("%s: a batch of %d failed (%s); running its requests one by one", self._name, len(group), exc)
            for item in group:
                self._call([item])
            return
        for item, result in zip(group, results, strict=True):
            item.future.set_result(result)
