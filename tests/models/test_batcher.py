"""The scheduler's Batcher: requests from many worker threads gathered into batched calls.

Driven with plain threads and a recording ``run`` function (the real batched Whisper decode is tested
in tests/engines/test_faster_whisper_windows.py, and through live sessions in tests/live).
"""

from __future__ import annotations

import threading

import pytest

from hearline.models.scheduler import Batcher, Work, current_work, run_as
from tests.helpers.polling import eventually


class _Recorder:
    """A batched call that records each batch and can be held until released."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail_on = fail_on

    def __call__(self, requests: list[str]) -> list[str]:
        self.batches.append(list(requests))
        self.entered.set()
        assert self.release.wait(30)
        if self.fail_on in requests:
            raise ValueError(f"bad request {self.fail_on}")
        return [r.upper() for r in requests]


def _submit_all(
    batcher: Batcher[str, str], items: list[tuple[str, Work]]
) -> tuple[dict[str, object], list[threading.Thread]]:
    results: dict[str, object] = {}

    def one(request: str, work: Work) -> None:
        try:
            results[request] = batcher.submit(request, work)
        except ValueError as exc:
            results[request] = exc

    threads = [threading.Thread(target=one, args=item) for item in items]
    for thread in threads:
        thread.start()
    return results, threads


def test_waiting_requests_share_one_call_in_batch_order() -> None:
    run = _Recorder()
    run.release.clear()
    batcher: Batcher[str, str] = Batcher(run, key=lambda r: r[0], size=8, wait_s=0.0, busy=lambda: 0)
    first, threads = _submit_all(batcher, [("a0", Work.PARTIAL)])
    assert run.entered.wait(30)  # the one thread is busy with a0: the rest queue up meanwhile
    results, more = _submit_all(
        batcher, [("a1", Work.PARTIAL), ("a2", Work.FINAL), ("a3", Work.SPECULATIVE_FINAL), ("b1", Work.PARTIAL)]
    )
    eventually(lambda: len(batcher._pending) == 4)
    run.release.set()
    for thread in threads + more:
        thread.join(30)
    assert first == {"a0": "A0"}
    assert results == {"a1": "A1", "a2": "A2", "a3": "A3", "b1": "B1"}
    # the final first, then the speculative final, then the partial; another key goes in a call of its own
    assert run.batches == [["a0"], ["a2", "a3", "a1"], ["b1"]]
    assert batcher.sizes[3] == 1
    batcher.close()


def test_batch_size_bounds_a_call() -> None:
    run = _Recorder()
    run.release.clear()
    batcher: Batcher[str, str] = Batcher(run, key=lambda r: "k", size=2, wait_s=0.0)
    _, threads = _submit_all(batcher, [("x", Work.FINAL)])
    assert run.entered.wait(30)
    _, more = _submit_all(batcher, [(f"r{i}", Work.FINAL) for i in range(5)])
    eventually(lambda: len(batcher._pending) == 5)
    run.release.set()
    for thread in threads + more:
        thread.join(30)
    assert [len(b) for b in run.batches] == [1, 2, 2, 1]
    batcher.close()


def test_a_batch_waits_for_admitted_jobs_that_have_not_submitted_yet() -> None:
    run = _Recorder()
    busy = [3]  # three jobs admitted: the batch waits (bounded) for the two that are still on their way
    batcher: Batcher[str, str] = Batcher(run, key=lambda r: "k", size=8, wait_s=30.0, busy=lambda: busy[0])
    results, threads = _submit_all(batcher, [("p0", Work.PARTIAL)])
    eventually(lambda: len(batcher._pending) == 1)
    more_results, more = _submit_all(batcher, [("p1", Work.PARTIAL), ("p2", Work.PARTIAL)])
    for thread in threads + more:
        thread.join(30)
    assert run.batches == [["p0", "p1", "p2"]]
    assert results | more_results == {"p0": "P0", "p1": "P1", "p2": "P2"}
    batcher.close()


def test_a_thread_whose_batch_another_thread_took_goes_back_to_waiting() -> None:
    run = _Recorder()
    run.release.clear()
    batcher: Batcher[str, str] = Batcher(run, key=lambda r: r[0], size=2, wait_s=0.3, parallel=2, busy=lambda: 9)
    first, threads = _submit_all(batcher, [("x", Work.FINAL)])
    assert run.entered.wait(30)  # thread 0 is inside a call; thread 1 starts for a and waits for a partner
    results, more = _submit_all(batcher, [("a0", Work.PARTIAL)])
    eventually(lambda: len(batcher._threads) == 2)
    run.release.set()  # thread 0 comes back and waits for a partner to a0 too
    eventually(lambda: first == {"x": "X"})
    late, last = _submit_all(batcher, [("a1", Work.PARTIAL)])  # one thread takes both; the other finds nothing
    for thread in threads + more + last:
        thread.join(30)
    threading.Event().wait(0.6)  # past the other thread's batch deadline
    assert all(thread.is_alive() for thread in batcher._threads)
    assert batcher.submit("y", Work.FINAL) == "Y"
    assert results | late == {"a0": "A0", "a1": "A1"}
    batcher.close()


def test_a_lone_request_does_not_wait_for_a_batch() -> None:
    run = _Recorder()
    # the wait would be an hour, but nobody else is admitted: the call goes at once
    batcher: Batcher[str, str] = Batcher(run, key=lambda r: "k", size=8, wait_s=3600.0, busy=lambda: 1)
    assert batcher.submit("solo", Work.PARTIAL) == "SOLO"
    batcher.close()


def test_a_failing_request_fails_alone() -> None:
    run = _Recorder(fail_on="bad")
    run.release.clear()
    batcher: Batcher[str, str] = Batcher(run, key=lambda r: "k", size=8, wait_s=0.0)
    _, threads = _submit_all(batcher, [("x", Work.FINAL)])
    assert run.entered.wait(30)
    results, more = _submit_all(batcher, [("good", Work.FINAL), ("bad", Work.FINAL), ("fine", Work.PARTIAL)])
    eventually(lambda: len(batcher._pending) == 3)
    run.release.set()
    for thread in threads + more:
        thread.join(30)
    assert results["good"] == "GOOD" and results["fine"] == "FINE"
    assert isinstance(results["bad"], ValueError)
    assert ["good", "bad", "fine"] in run.batches and ["bad"] in run.batches  # retried one by one
    batcher.close()


def test_closed_batcher_refuses_new_requests() -> None:
    batcher: Batcher[str, str] = Batcher(_Recorder(), key=lambda r: "k", size=2, wait_s=0.0)
    assert batcher.submit("a", Work.FINAL) == "A"
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("b", Work.FINAL)


def test_a_worker_thread_knows_the_kind_of_work_it_runs() -> None:
    assert current_work() is Work.REQUEST
    assert run_as(Work.PARTIAL, current_work) is Work.PARTIAL
    assert current_work() is Work.REQUEST  # restored after the job
