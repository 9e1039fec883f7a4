"""Handing memory back to the operating system once a burst of work is over.

glibc's malloc keeps what a thread freed in that thread's arena for reuse, so after an overload (many
sessions and requests, each inference thread with its own arena) the process stays at its peak size long
after the work is gone.  A few quiet seconds after the pool last became idle (never while work is running),
the pool's worker threads are retired (``retire``, see :mod:`hearline.models.workers`: their executors are
replaced, the old threads end) and ``malloc_trim(0)`` returns the free pages of every arena, in a worker
thread.  What stays scattered over many arenas is not free pages, so ``hearline serve`` also caps the arenas
(:func:`limit_arenas`).  Elsewhere than glibc both do nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

logger = logging.getLogger(__name__)

#: quiet seconds after the pool's last job before the heap is trimmed
QUIET_S = 3.0


#: mallopt's M_ARENA_MAX, what the MALLOC_ARENA_MAX environment variable sets
_M_ARENA_MAX = -8


def _load_glibc() -> tuple[Callable[[int], int], Callable[[int, int], int]] | None:
    """glibc's ``malloc_trim`` and ``mallopt``; None elsewhere (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim, opt = libc.malloc_trim, libc.mallopt
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    opt.argtypes, opt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return trim, opt


_glibc = _load_glibc()


def limit_arenas(count: int) -> bool:
    """Cap glibc's malloc arenas at ``count`` for the threads that start from now on (0: glibc's own default of
    eight per core); False where it cannot (not glibc).

    Each inference thread otherwise gets an arena of its own, and what a busy hour leaves scattered over a dozen
    arenas stays resident however often the heap is trimmed. For the process owner (``hearline serve``) to call,
    before its threads start; ``MALLOC_ARENA_MAX`` in the environment is the operator's and wins.
    """
    if _glibc is None or count <= 0:
        return False
    return bool(_glibc[1](_M_ARENA_MAX, count))


def trim_heap() -> bool:
    """Return free heap pages to the OS; ``True`` if any were (``False`` also where glibc is absent)."""
    return bool(_glibc[0](0)) if _glibc is not None else False


def _tidy(retired: Sequence[Executor]) -> bool:
    """The retired executors' threads end (idle ones at once; a model load still running first finishes),
    then the heap is trimmed."""
    for executor in retired:
        executor.shutdown(wait=True)
    return trim_heap()


class HeapTrimmer:
    """Debounced :func:`trim_heap`: :meth:`idle` is called (on the event loop) each time the pool goes idle."""

    def __init__(self, quiet_s: float = QUIET_S, retire: Callable[[], Sequence[Executor]] | None = None) -> None:
        self.quiet_s = quiet_s
        self._retire = retire
        self.trims = 0  # trims run (for the tests and the logs)
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[bool] | None = None

    def idle(self) -> None:
        if _glibc is None and self._retire is None:
            return
        self.busy()  # restart the quiet period
        self._timer = asyncio.get_running_loop().call_later(self.quiet_s, self._start)

    def busy(self) -> None:
        """Work started again: a pending trim waits for the next quiet spell."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _start(self) -> None:
        self._timer = None
        if self._task is None or self._task.done():
            retired = self._retire() if self._retire is not None else []
            self._task = asyncio.create_task(asyncio.to_thread(_tidy, retired), name="hearline-heap-trim")
            self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[bool]) -> None:
        if not task.cancelled() and task.exception() is None:
            self.trims += 1
            logger.debug("heap trimmed after the pool went idle (released: %s)", task.result())

    async def close(self) -> None:
        self.busy()
        task = self._task
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            await asyncio.wait([task])  # a trim in its thread is short; let it finish
