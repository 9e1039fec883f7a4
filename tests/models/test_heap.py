"""models/heap.py: freed heap goes back to the OS, once the pool's work is over and not before.

The pool test uses the bundled PocketSphinx model on real speech; the trim test measures this process's
resident memory from /proc.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from hearline.audio.decode import decode_audio
from hearline.config import Settings
from hearline.engines.base import TranscribeOptions
from hearline.models.heap import HeapTrimmer, trim_heap
from hearline.models.pool import ModelPool
from tests.helpers.corpus import clip
from tests.helpers.polling import until


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_trim_returns_what_a_worker_thread_freed() -> None:
    """A worker thread's arena keeps freed blocks below a survivor: ~380 MB stays resident until trimmed."""
    survivors: list[np.ndarray] = []

    def burst() -> None:
        blocks = [np.ones(16_000, np.float32) for _ in range(6000)]  # 64 KB each: malloc'd, not mmapped
        survivors.append(blocks[-1])  # one live block at the arena's top pins everything below it

    thread = threading.Thread(target=burst)
    thread.start()
    thread.join()
    held = _rss_mb()
    assert trim_heap() is True
    released = held - _rss_mb()
    print(f"trim released {released:.0f} MB of {held:.0f} MB")
    assert released > 200


async def test_the_pool_trims_once_after_its_work_and_never_during_it(tmp_path: Path) -> None:
    pool = ModelPool(Settings.load(model_dir=tmp_path / "models", model="pocketsphinx"))
    pool.heap = HeapTrimmer(quiet_s=0.2)
    try:
        engine = await pool.get(None)
        audio = decode_audio(clip("en_pocketsphinx_goforward").path)
        release = threading.Event()

        def held_job() -> None:
            release.wait(30)

        holding = asyncio.create_task(pool.run(engine, held_job))
        done = [await pool.run(engine, engine.transcribe, audio, TranscribeOptions()) for _ in range(2)]
        assert all(t.text for t in done)
        await asyncio.sleep(1.0)  # five quiet periods, but a job is still running
        assert pool.heap.trims == 0
        release.set()
        await holding
        await until(lambda: pool.heap.trims > 0, 10, "a trim")
        assert pool.heap.trims == 1
        await asyncio.sleep(1.0)
        assert pool.heap.trims == 1  # one trim per quiet spell, not one per period
    finally:
        await pool.close()


ARENA_PROBE = """
import ctypes, sys, threading
import numpy as np
from hearline.models.heap import limit_arenas
if sys.argv[1] != "0":
    assert limit_arenas(int(sys.argv[1]))
together = threading.Barrier(6)
def work():
    blocks = [np.ones(1000, np.float32) for _ in range(100)]  # small blocks: from the thread's arena
    together.wait()  # all six threads alive and holding memory at once
threads = [threading.Thread(target=work) for _ in range(6)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ctypes.CDLL(None).malloc_stats()  # glibc: one "Arena N:" block per arena, on stderr
"""


def _arenas(cap: int) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run([sys.executable, "-c", ARENA_PROBE, str(cap)], env=env, capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    return len(re.findall(r"^Arena \d+:", done.stderr, re.M))


def test_limit_arenas_keeps_threads_to_the_cap() -> None:
    """What ``hearline serve`` does first: six threads that would each get an arena share two."""
    assert _arenas(0) > 2  # glibc's default: a new thread gets an arena of its own (8 per core at most)
    assert _arenas(2) == 2
