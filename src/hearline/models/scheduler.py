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
admits that many open utterances per engine.  Engines never import this module.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any


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


RULES: dict[Work, Rule] = {
    Work.STREAM_STEP: Rule(Lane.LIVE, refusable=False),
    Work.PARTIAL: Rule(Lane.LIVE, refusable=True),
    Work.FINAL: Rule(Lane.NORMAL, refusable=False),
    Work.SPECULATIVE_FINAL: Rule(Lane.BACKGROUND, refusable=True),
    Work.REQUEST: Rule(Lane.NORMAL, refusable=True),
    Work.TRANSLATION: Rule(Lane.NORMAL, refusable=False),
}


class PriorityGate:
    """An async semaphore whose waiters are admitted by priority (lower first), then by arrival."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.active = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

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

    def release(self) -> None:
        self.active -= 1
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
