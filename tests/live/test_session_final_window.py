"""``--live-final-window``: how a live session's Whisper finals are encoded, on real Whisper base and real speech.

``full`` (the default): every final is encoded as a 30 s window, as offline transcription is; ``short``: as a
partial draft is (its audio and some silence), still decoded whole.  Seen through the engine's CTranslate2 calls:
partials are drafts either way (short encode, a token limit); only finals are decoded without a token limit.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hearline.audio.decode import decode_audio
from hearline.config import Settings
from hearline.engines.faster_whisper import FasterWhisperEngine
from hearline.live.session import Final, LiveOptions, LiveSession
from hearline.models.pool import ModelPool
from tests.helpers.corpus import clip, wer
from tests.helpers.whisper_calls import WhisperCalls

CLIP = "en_fw_jfk"


async def _finals(pool: ModelPool) -> list[Final]:
    session = LiveSession(pool, None, LiveOptions(language="en"))
    await session.start()
    events: list[Final] = []

    async def read() -> None:
        async for event in session.events():
            if isinstance(event, Final):
                events.append(event)

    reader = asyncio.create_task(read())
    audio = decode_audio(clip(CLIP).path)
    for start in range(0, audio.size, 1600):
        await session.push(audio[start : start + 1600])
    await session.flush()
    await reader
    await session.close()
    return events


@pytest.mark.parametrize("window", ["full", "short"])
async def test_the_setting_decides_how_finals_are_encoded(tmp_path: Path, window: str) -> None:
    settings = Settings.load(model_dir=tmp_path / "models", model="base", live_final_window=window)
    pool = ModelPool(settings)
    try:
        engine = await pool.get(None)
        assert isinstance(engine, FasterWhisperEngine)
        with WhisperCalls(engine) as seen:
            finals = await _finals(pool)
        text = " ".join(f.text for f in finals)
        assert finals and wer(clip(CLIP).text or "", text) <= 0.1, text
        assert 448 in seen.max_lengths  # finals: decoded whole
        assert (3000 in seen.encoded) is (window == "full"), seen.encoded  # partials never take a full window
    finally:
        await pool.close()
