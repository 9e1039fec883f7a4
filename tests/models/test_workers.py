"""models/workers.py: the pool's worker threads end once it is quiet, and it serves on fresh ones after.

Real PocketSphinx work on real speech, from both lanes; the threads are the ones the jobs ran on.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hearline.audio.decode import decode_audio
from hearline.config import Settings
from hearline.engines.base import TranscribeOptions
from hearline.models.heap import HeapTrimmer
from hearline.models.pool import ModelPool
from hearline.models.scheduler import Work
from hearline.models.workers import WorkerThreads
from tests.helpers.corpus import clip
from tests.helpers.polling import until


def test_retire_swaps_in_fresh_executors_and_never_a_shared_one() -> None:
    shared = ThreadPoolExecutor(max_workers=1)
    workers = WorkerThreads(2, shared)
    live = workers.executor(live=True)
    assert workers.executor(live=False) is shared
    assert workers.retire() == [live]
    assert workers.executor(live=False) is shared and workers.executor(live=True) is not live
    workers.close()
    shared.shutdown()


async def test_a_quiet_pool_ends_its_worker_threads_and_serves_on_new_ones(tmp_path: Path) -> None:
    pool = ModelPool(Settings.load(model_dir=tmp_path / "models", model="pocketsphinx"))
    pool.heap = HeapTrimmer(quiet_s=0.2, retire=pool.workers.retire)
    try:
        engine = await pool.get(None)
        audio = decode_audio(clip("en_pocketsphinx_goforward").path)

        def job(ran_on: set[threading.Thread]) -> str:
            ran_on.add(threading.current_thread())
            return engine.transcribe(audio, TranscribeOptions()).text

        burst: set[threading.Thread] = set()
        texts = await asyncio.gather(
            *(pool.run(engine, job, burst, work=work) for work in (Work.REQUEST, Work.FINAL, Work.STREAM_STEP))
        )
        assert all("forward" in text for text in texts), texts
        assert {t.name.split("_")[0] for t in burst} == {"hearline-infer", "hearline-live"}

        await until(lambda: pool.heap.trims > 0, 30, "the quiet spell's tidy-up")
        assert not any(t.is_alive() for t in burst)  # joined before the heap was trimmed

        later: set[threading.Thread] = set()
        assert "forward" in await pool.run(engine, job, later)
        assert later and later.isdisjoint(burst)
    finally:
        await pool.close()
