"""Who runs next when inference work queues up for a model.

A worker thread cannot be pre-empted, so with one first-come-first-served queue a live session's
partial step (tens of milliseconds of compute) waits behind whatever long jobs were queued before it -
a 15 s utterance's final pass, a REST upload - and its text stalls for seconds although the machine
could serve it.  Work therefore goes into one of two lanes, each with its own admission limit:

* :attr:`Lane.LIVE` - a live session's own steps (feed new audio, take the partial, end the
  utterance).  Short, latency-critical, one at a time per session.
* the batch lane - :attr:`Lane.NORMAL` (finals, REST requests, translation) ahead of
  :attr:`Lane.BACKGROUND` (speculative work nobody waits for yet, such as a final prepared during a
  pause, which may turn out to be wasted).  Speculative work that may be refused runs only on spare
  capacity (:attr:`PriorityGate.spare`), never in the queue.

The live lane never waits for the batch lane: both run side by side and the operating system shares
the cores between them, so a partial step finishes in about its own compute time however much batch
work is queued.  Within the batch lane, waiting work is admitted by priority, then arrival.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from enum import IntEnum

from hearline.config import Settings


class Lane(IntEnum):
    LIVE = 0
    NORMAL = 1
    BACKGROUND = 2


def lane_capacity(settings: Settings) -> int:
    """Jobs each lane of a model admits at once: as many as it has threads, so waiting happens in the
    gate (by priority), never in an executor's first-come-first-served queue."""
    return max(1, min(settings.max_concurrency_per_model, settings.workers))


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
        was meant to get ahead of (measured: with pauses of 150 ms, a third of a session's audio is
        decoded by guesses that speech then overtakes), so under load it is better not done at all.
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
