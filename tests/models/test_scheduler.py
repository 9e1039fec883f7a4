"""Lanes and the priority gate: who runs next when inference work queues up for one model.

The gate is tested on its own (admission order, cancellation, capacity), and through a real
``ModelPool`` with blocking jobs: a live step must finish while the batch lane is saturated, and a
full batch lane must turn REST work away with ServerBusy while live work still runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hearline.models.pool import ModelPool, ServerBusy
from hearline.models.scheduler import RULES, Lane, PriorityGate, Work
from tests.helpers.fake_engine import fake_settings
from tests.helpers.polling import until


async def _hold(gate: PriorityGate, priority: int, log: list[str], name: str, release: asyncio.Event) -> None:
    await gate.acquire(priority)
    log.append(name)
    await release.wait()
    gate.release()


async def test_waiters_are_admitted_by_priority_then_arrival() -> None:
    gate = PriorityGate(1)
    log: list[str] = []
    releases = {name: asyncio.Event() for name in ("first", "bg1", "normal1", "bg2", "normal2", "live")}
    tasks = [asyncio.create_task(_hold(gate, Lane.NORMAL, log, "first", releases["first"]))]
    await asyncio.sleep(0)
    for name, lane in (("bg1", Lane.BACKGROUND), ("normal1", Lane.NORMAL), ("bg2", Lane.BACKGROUND),
                       ("normal2", Lane.NORMAL), ("live", Lane.LIVE)):  # fmt: skip
        tasks.append(asyncio.create_task(_hold(gate, lane, log, name, releases[name])))
        await asyncio.sleep(0)
    assert log == ["first"] and gate.waiting == 5 and gate.full
    for name in ("first", "live", "normal1", "normal2", "bg1", "bg2"):
        releases[name].set()
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    assert log == ["first", "live", "normal1", "normal2", "bg1", "bg2"]
    assert gate.active == 0 and gate.waiting == 0


async def test_a_cancelled_waiter_gives_up_its_place_and_leaks_nothing() -> None:
    gate = PriorityGate(1)
    await gate.acquire()
    cancelled = asyncio.create_task(gate.acquire(Lane.LIVE))
    later = asyncio.create_task(gate.acquire(Lane.BACKGROUND))
    await asyncio.sleep(0)
    assert gate.waiting == 2
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert gate.waiting == 1
    gate.release()
    await asyncio.wait_for(later, 1)
    assert gate.active == 1
    gate.release()
    assert gate.active == 0


async def test_a_waiter_cancelled_just_as_it_is_admitted_passes_the_place_on() -> None:
    gate = PriorityGate(1)
    await gate.acquire()
    first = asyncio.create_task(gate.acquire())
    second = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # admits ``first`` (its future is resolved) ...
    first.cancel()  # ... but it is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # the place went to the next waiter instead of leaking
    assert gate.active == 1


async def test_capacity_admits_that_many_at_once() -> None:
    gate = PriorityGate(2)
    await gate.acquire()
    await gate.acquire()
    third = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0.01)
    assert not third.done() and gate.active == 2
    gate.release()
    await asyncio.wait_for(third, 1)
    assert gate.active == 2


def _blocking(value: str) -> tuple[Callable[[], str], threading.Semaphore, threading.Event]:
    """A job that holds its worker thread until ``unblock`` is set; ``started`` counts the ones running."""
    started = threading.Semaphore(0)
    unblock = threading.Event()

    def job() -> str:
        started.release()
        unblock.wait(10)
        return value

    return job, started, unblock


async def test_live_work_runs_while_the_batch_lane_is_saturated(tmp_path: Path) -> None:
    """Batch jobs that block their threads must not delay a live step, and a full batch queue rejects REST work."""
    pool = ModelPool(fake_settings(tmp_path, ["a"], workers=2, max_concurrency_per_model=2, max_queue_per_model=1))
    engine = await pool.get("a")
    batch_job, started, unblock = _blocking("batch")
    try:
        batch = [asyncio.create_task(pool.run(engine, batch_job, work=Work.FINAL)) for _ in range(3)]
        for _ in range(2):  # both batch threads are now busy, the third job waits in the gate
            await asyncio.to_thread(started.acquire, True, 5)
        await asyncio.sleep(0.05)
        with pytest.raises(ServerBusy):
            await pool.run(engine, batch_job)  # REST work is turned away, not queued without bound
        live = await asyncio.wait_for(pool.run(engine, lambda: "live", work=Work.PARTIAL), 5)
        assert live == "live"
        assert all(not task.done() for task in batch)  # the live step really overtook them
        unblock.set()
        assert await asyncio.gather(*batch) == ["batch"] * 3
    finally:
        unblock.set()
        await pool.close()


async def test_speculative_work_runs_only_on_spare_capacity(tmp_path: Path) -> None:
    """A refusable BACKGROUND job (a final guessed in a pause) runs on an idle lane and is refused as soon
    as work someone waits for holds the lane's last spare slot."""
    pool = ModelPool(fake_settings(tmp_path, ["a"], workers=2, max_concurrency_per_model=2, max_queue_per_model=8))
    engine = await pool.get("a")
    final_pass, started, unblock = _blocking("final")
    try:
        assert await pool.run(engine, lambda: "guess", work=Work.SPECULATIVE_FINAL) == "guess"  # idle lane
        final = asyncio.create_task(pool.run(engine, final_pass, work=Work.FINAL))
        await asyncio.to_thread(started.acquire, True, 5)
        with pytest.raises(ServerBusy):
            await pool.run(engine, lambda: "guess", work=Work.SPECULATIVE_FINAL)  # would take the last slot
        assert await pool.run(engine, lambda: "rest") == "rest"  # a request still gets that slot
        unblock.set()
        assert await final == "final"
    finally:
        unblock.set()
        await pool.close()


def test_expected_wait_is_the_queue_ahead_at_the_recent_job_length() -> None:
    gate = PriorityGate(2)
    assert gate.expected_wait() == 1.0  # nothing observed yet
    for seconds in (10.0, 10.0, 10.0):
        gate.observe(seconds)
    assert gate.expected_wait() == pytest.approx(5.0)  # this job alone, two places each freeing every 10 s
    gate.observe(20.0)
    assert 10.0 < gate.expected_wait() * 2 < 20.0  # a running mean: recent jobs count more


async def test_a_refusal_says_how_long_the_queue_really_is(tmp_path: Path) -> None:
    """One place, no queue, jobs of 1.5 s: the refused request is told the job's length, not a fixed second."""
    pool = ModelPool(fake_settings(tmp_path, ["a"], workers=1, max_concurrency_per_model=1, max_queue_per_model=0))
    engine = await pool.get("a")
    job, started, unblock = _blocking("done")
    try:
        before = time.perf_counter()
        running = asyncio.create_task(pool.run(engine, job))
        await asyncio.to_thread(started.acquire, True, 5)
        await asyncio.sleep(1.5)
        unblock.set()
        assert await running == "done"  # a job that held the place at least 1.5 s
        held_at_most = time.perf_counter() - before
        unblock.clear()
        running = asyncio.create_task(pool.run(engine, job))
        await asyncio.to_thread(started.acquire, True, 5)
        with pytest.raises(ServerBusy) as refused:
            await pool.run(engine, job)
        assert 1.5 <= refused.value.retry_after <= held_at_most  # one job ahead, one place: its length
        unblock.set()
        assert await running == "done"
    finally:
        unblock.set()
        await pool.close()


def test_spare_leaves_one_slot_for_waited_for_work() -> None:
    gate = PriorityGate(3)
    assert gate.spare
    gate.active = 1
    assert gate.spare
    gate.active = 2
    assert not gate.spare and not gate.full
    single = PriorityGate(1)
    assert single.spare  # one slot: speculation may use it while it is idle
    single.active = 1
    assert not single.spare


def test_every_kind_of_work_has_a_rule_and_only_optional_work_is_refusable() -> None:
    assert set(RULES) == set(Work)
    never_refused = {Work.STREAM_STEP, Work.FINAL, Work.TRANSLATION}
    assert {work for work, rule in RULES.items() if not rule.refusable} == never_refused
    assert RULES[Work.PARTIAL].lane is Lane.LIVE and RULES[Work.SPECULATIVE_FINAL].lane is Lane.BACKGROUND


async def test_a_live_final_is_admitted_ahead_of_queued_uploads() -> None:
    """Someone is watching a live final; an upload's client waits for its whole file anyway."""
    gate = PriorityGate(1)
    await gate.acquire()
    order: list[str] = []

    async def job(work: Work, name: str) -> None:
        await gate.acquire(RULES[work].rank)
        order.append(name)
        gate.release()

    waiting = [asyncio.create_task(job(Work.REQUEST, f"upload {i}")) for i in range(3)]
    waiting.append(asyncio.create_task(job(Work.FINAL, "final")))
    await until(lambda: gate.waiting == 4, 10, "four queued")
    gate.release()
    await asyncio.gather(*waiting)
    assert order == ["final", "upload 0", "upload 1", "upload 2"]


@pytest.mark.parametrize(
    ("places", "job_s", "low", "high"),
    [
        # eight places sharing two cores: each job held its place 0.4 s, yet they ended one at a time; the eight
        # still queued drain one per 0.1 s, not eight per 0.4 s (which would say 0.45 s for all nine)
        (8, 0.4, 0.9, 9 * 0.4),
        # two places whose jobs each held 2 s but ended 0.1 s apart (more places than ``capacity`` says, before
        # a resize): the pace, not 2 s over two places
        (2, 2.0, 0.3, 3 * 1.0),
    ],
)
async def test_retry_after_follows_the_pace_jobs_really_end_at(
    places: int, job_s: float, low: float, high: float
) -> None:
    """Four jobs end 0.1 s apart while others queue: a refusal's wait is the queue at that pace."""
    gate = PriorityGate(places)
    for _ in range(places):
        await gate.acquire()
    queued = [asyncio.create_task(gate.acquire()) for _ in range(places + 4)]
    await until(lambda: gate.waiting == places + 4, 10, "queued")
    for _ in range(4):
        await asyncio.sleep(0.1)
        gate.release()
        gate.observe(job_s)
    assert gate.waiting == places
    assert low <= gate.expected_wait() < high
    for task in queued:
        task.cancel()
    await asyncio.gather(*queued, return_exceptions=True)


async def test_a_batching_model_runs_as_many_uploads_at_once_as_it_has_replicas(tmp_path: Path) -> None:
    """Its gate admits batch_size times more jobs, since they wait in the batcher; an upload does not batch and
    holds a replica for its whole file, so past the replicas uploads queue, while finals are still admitted."""
    settings = fake_settings(
        tmp_path, ["a"], batching=2, workers=2, max_concurrency_per_model=2, batch_size=4, max_queue_per_model=8
    )
    pool = ModelPool(settings)
    engine = await pool.get("a")
    upload, started, unblock = _blocking("text")
    try:
        uploads = [asyncio.create_task(pool.run(engine, upload)) for _ in range(4)]
        for _ in range(2):
            await asyncio.to_thread(started.acquire, True, 5)
        await asyncio.sleep(0.1)
        assert not started.acquire(False)  # two uploads run, one per replica; the other two wait
        assert pool.work_by_model()["a"] == (2, 2)
        assert pool.batch_saturated(engine)  # the replicas are all on uploads: partials thin out
        finals = await asyncio.wait_for(
            asyncio.gather(*(pool.run(engine, lambda: "final", work=Work.FINAL) for _ in range(3))), 5
        )
        assert finals == ["final"] * 3  # work that batches is admitted beside them
        assert pool.expected_wait("a") >= 1.0  # what a refused upload's Retry-After would say
        unblock.set()
        assert await asyncio.gather(*uploads) == ["text"] * 4
        assert pool.expected_wait("a") == 0.0  # nothing queued: an upload starts at once
    finally:
        unblock.set()
        await pool.close()


class _LiveUser:
    """Stands for a live session in the pool's register of who decodes with which model."""

    def __init__(self, engine: object) -> None:
        self.engine = engine


async def test_uploads_leave_a_replica_to_live_finals_while_sessions_use_the_model(tmp_path: Path) -> None:
    settings = fake_settings(
        tmp_path, ["a"], batching=2, workers=2, max_concurrency_per_model=2, batch_size=4, max_queue_per_model=8
    )
    pool = ModelPool(settings)
    engine = await pool.get("a")
    user = _LiveUser(engine)
    pool.engine_users.add(user)
    upload, started, unblock = _blocking("text")
    try:
        uploads = [asyncio.create_task(pool.run(engine, upload)) for _ in range(3)]
        await asyncio.to_thread(started.acquire, True, 5)
        await asyncio.sleep(0.1)
        assert pool.work_by_model()["a"] == (2, 1)  # one replica on uploads, the other kept for finals
        assert pool.batch_saturated(engine) is False  # partials still run
        pool.engine_users.discard(user)  # the session ended
        assert await pool.run(engine, lambda: "final", work=Work.FINAL) == "final"  # any job ending re-sizes
        await asyncio.to_thread(started.acquire, True, 5)
        assert pool.work_by_model()["a"] == (1, 2)  # both replicas on uploads again
        unblock.set()
        assert await asyncio.gather(*uploads) == ["text"] * 3
    finally:
        unblock.set()
        await pool.close()
