"""The decoder task's scheduling of a re-decoding (Whisper) session, on real Whisper tiny.en and real speech.

Each partial pass re-decodes the utterance's window, so while the model's finals hold every batch slot, partial
passes thin out (each takes at least ``THIN_PARTIAL_S`` of new audio) instead of taking CPU from the finals;
the final still covers all of the audio.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from hearline.audio.decode import decode_audio
from hearline.config import Settings
from hearline.engines.base import SAMPLE_RATE
from hearline.live.events import Final, Partial
from hearline.live.session import LiveOptions, LiveSession
from hearline.live.session_state import THIN_PARTIAL_S
from hearline.models.pool import ModelPool
from hearline.models.scheduler import Work
from tests.helpers.corpus import clip

CHUNK = SAMPLE_RATE // 10


@pytest_asyncio.fixture
async def pool(tmp_path: Path) -> AsyncIterator[ModelPool]:
    pool = ModelPool(Settings.load(model_dir=tmp_path / "models", model="tiny.en", threads=2))
    yield pool
    await pool.close()


async def _stream(
    pool: ModelPool, audio: np.ndarray, release: threading.Event | None, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[int], list]:
    """Stream ``audio`` at real-time pace as one utterance; the audio each partial pass took, and the events.
    ``release`` (when given) is set once all audio is in, before the flush that ends the utterance."""
    session = LiveSession(pool, None, LiveOptions(language="en", vad=False))
    await session.start()
    policy = session._policy
    assert policy is not None
    taken: list[int] = []
    partial = policy.partial

    def counted(samples: np.ndarray, skip: int = 0) -> object:
        taken.append(int(samples.size))
        return partial(samples, skip)

    monkeypatch.setattr(policy, "partial", counted)
    events: list = []

    async def read() -> None:
        async for event in session.events():
            events.append(event)

    reader = asyncio.create_task(read())
    for i in range(0, audio.size, CHUNK):
        await session.push(audio[i : i + CHUNK])
        await asyncio.sleep(CHUNK / SAMPLE_RATE)
    if release is not None:
        release.set()
    await session.flush()
    await reader
    await session.close()
    return taken, events


async def test_partials_thin_out_while_finals_hold_every_batch_slot(
    pool: ModelPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await pool.get(None)
    audio = decode_audio(clip("en_fw_jfk").path)

    free, unloaded = await _stream(pool, audio, None, monkeypatch)
    print(f"partial passes took (s of audio), batch slots free: {[round(n / SAMPLE_RATE, 1) for n in free]}")
    assert sorted(free)[len(free) // 2] < THIN_PARTIAL_S * SAMPLE_RATE  # every half second or so

    release, started = threading.Event(), threading.Semaphore(0)

    def hold_a_batch_slot() -> None:
        started.release()
        release.wait(60)

    holders = []
    while not pool.batch_saturated(engine):  # finals of other sessions, running as long as this one streams
        holders.append(asyncio.create_task(pool.run(engine, hold_a_batch_slot, work=Work.FINAL)))
        assert await asyncio.to_thread(started.acquire, True, 10)
    try:
        busy, events = await _stream(pool, audio, release, monkeypatch)
    finally:
        release.set()
        await asyncio.gather(*holders)
    print(f"partial passes took (s of audio), every batch slot busy: {[round(n / SAMPLE_RATE, 1) for n in busy]}")
    assert len(busy) >= 2 and len(busy) < len(free)
    assert all(n >= THIN_PARTIAL_S * SAMPLE_RATE for n in busy[:-1])  # the last may follow the release
    assert any(isinstance(e, Partial) and e.text for e in events)  # thinned out, not stopped
    finals = [e.text for e in events if isinstance(e, Final)]
    assert finals == [e.text for e in unloaded if isinstance(e, Final)] and len(finals) == 1  # not changed by it
