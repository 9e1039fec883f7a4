"""The pool's worker threads: a bounded executor per lane, whose threads end once the pool is quiet.

A ``ThreadPoolExecutor`` keeps every thread it ever started; after an overload that is the whole bound, each
thread holding its stack and the inference libraries' per-thread scratch for good. When the pool has been quiet
a while (:class:`~hearline.models.heap.HeapTrimmer`'s quiet spell), :meth:`WorkerThreads.retire` swaps in fresh
executors: work from then on starts threads as it needs them, and the old executors' idle threads end.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

PREFIXES = {False: "hearline-infer", True: "hearline-live"}


class WorkerThreads:
    """One executor for the batch lane (requests, finals, model loads) and one for the live lane.

    An executor handed in (tests and benchmarks share theirs) serves the batch lane and is never retired.
    """

    def __init__(self, threads: int, shared: ThreadPoolExecutor | None = None) -> None:
        self._threads = threads
        self._shared = shared
        self._executors = {False: shared or self._new(False), True: self._new(True)}

    def _new(self, live: bool) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix=PREFIXES[live])

    def executor(self, live: bool) -> ThreadPoolExecutor:
        return self._executors[live]

    def retire(self) -> list[ThreadPoolExecutor]:
        """Swap in fresh executors (on the event loop, so all later work goes to them); returns the old ones."""
        old = [executor for executor in self._executors.values() if executor is not self._shared]
        self._executors = {live: e if e is self._shared else self._new(live) for live, e in self._executors.items()}
        return old

    def close(self) -> None:
        for executor in self._executors.values():
            if executor is not self._shared:
                executor.shutdown(wait=False, cancel_futures=True)
