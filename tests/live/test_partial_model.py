"""``--partial-model``: live partials from a faster model (real Whisper tiny.en), finals from the session's own
(real Whisper base), on real speech; where the partial model does not fit a session, the session's model does both.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from hearline.audio.decode import decode_audio
from hearline.config import Settings
from hearline.engines.base import TranscribeOptions
from hearline.live.events import Final, Partial
from hearline.live.partial_model import partial_engine, unfit_reason
from hearline.live.session import LiveOptions, LiveSession
from hearline.metrics import Metrics
from hearline.models.pool import ModelPool
from tests.helpers.corpus import clip, wer

CLIPS = ("en_fw_jfk", "en_ljspeech_LJ001-0005")


@pytest_asyncio.fixture
async def pool(tmp_path: Path) -> AsyncIterator[ModelPool]:
    settings = Settings.load(model_dir=tmp_path / "models", model="base", partial_model="tiny.en", threads=2)
    pool = ModelPool(settings, metrics=Metrics())
    yield pool
    await pool.close()


def _jobs(pool: ModelPool, model: str, kind: str) -> float:
    assert pool.metrics is not None
    value = pool.metrics.registry.get_sample_value(
        "hearline_inference_seconds_count", {"model": model, "kind": kind}
    )  # fmt: skip
    return value or 0.0


async def test_partials_come_from_the_partial_model_and_finals_from_the_sessions(pool: ModelPool) -> None:
    base = await pool.get(None)
    gap = np.zeros(16000, dtype=np.float32)
    audio = np.concatenate([part for c in CLIPS for part in (decode_audio(clip(c).path), gap)])
    session = LiveSession(pool, None, LiveOptions(language="en"))
    await session.start()
    assert session.partial_engine is not None and session.partial_engine.name == "tiny.en"
    assert pool.users_of("tiny.en") == 1 and pool.users_of("tiny.en", partials=False) == 0  # not unloaded meanwhile
    events: list[Partial | Final] = []

    async def read() -> None:
        async for event in session.events():
            if isinstance(event, (Partial, Final)):
                events.append(event)

    reader = asyncio.create_task(read())
    for i in range(0, audio.size, 1600):
        await session.push(audio[i : i + 1600])
    await session.flush()
    await reader
    await session.close()

    partial_jobs = _jobs(pool, "tiny.en", "partial") + _jobs(pool, "tiny.en", "stream_step")
    print(f"partial jobs on tiny.en: {partial_jobs:.0f}; on base: {_jobs(pool, 'base', 'partial'):.0f}")
    assert partial_jobs > 0 and _jobs(pool, "base", "partial") == 0 and _jobs(pool, "base", "stream_step") == 0
    assert _jobs(pool, "tiny.en", "final") == 0 and _jobs(pool, "tiny.en", "speculative_final") == 0
    assert any(isinstance(e, Partial) and e.text for e in events)
    finals = " ".join(e.text for e in events if isinstance(e, Final) and e.text)
    english = TranscribeOptions(language="en")
    offline = " ".join(base.transcribe(decode_audio(clip(c).path), english).text for c in CLIPS)
    reference = " ".join(clip(c).text or "" for c in CLIPS)
    print(f"finals WER {wer(reference, finals):.3f} vs base offline {wer(reference, offline):.3f}: {finals!r}")
    assert wer(offline, finals) <= 0.05  # measured 0.000: the finals are base's own passes
    assert pool.users_of("tiny.en") == 0


async def test_the_sessions_model_gives_partials_where_the_partial_model_does_not_fit(pool: ModelPool) -> None:
    base, tiny = await pool.get(None), await pool.get("tiny.en")
    assert unfit_reason(base, tiny, TranscribeOptions(language="en")) is None
    assert "does not support language 'de'" in (unfit_reason(base, tiny, TranscribeOptions(language="de")) or "")
    assert "detects its language" in (unfit_reason(base, tiny, TranscribeOptions(language=None)) or "")
    assert "cannot translate" in (unfit_reason(base, tiny, TranscribeOptions(language="de", task="translate")) or "")
    assert "session's model" in (unfit_reason(tiny, tiny, TranscribeOptions(language="en")) or "")
    assert await partial_engine(pool, base, TranscribeOptions(language=None)) is None

    session = LiveSession(pool, None, LiveOptions(language="de"))
    await session.start()
    assert session.partial_engine is None  # a German session: base does its partials too
    await session.close()


async def test_a_partial_model_that_cannot_load_is_passed_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.load(model_dir=tmp_path / "models", model="base", partial_model="no-such-model")
    pool = ModelPool(settings)
    try:
        session = LiveSession(pool, None, LiveOptions(language="en"))
        await session.start()
        assert session.partial_engine is None
        assert "partial model no-such-model is not available" in caplog.text
        await session.close()
    finally:
        await pool.close()
