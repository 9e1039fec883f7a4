"""Client sides of the live doors, driven as their real clients drive them (``websockets``), shared by the
door tests and the tests that need traffic on a door (metrics, limits, Whisper end to end)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
import websockets
from websockets.asyncio.client import connect

from hearline.audio.decode import decode_audio, float_to_pcm16
from hearline.config import Settings
from hearline.server.app import create_app
from hearline.server.stt_ws import standalone_app
from tests.helpers.corpus import clip
from tests.helpers.media import browser_chunks, browser_webm
from tests.helpers.server import free_port


def webm_chunks(clip_id: str) -> list[bytes]:
    speech = clip(clip_id)
    return browser_chunks(browser_webm(speech.path), speech.duration)


async def run_session(
    url: str,
    chunks: list[bytes],
    *,
    path: str = "/asr",
    query: str = "",
    headers: dict[str, str] | None = None,
    text_frame_at: int | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Stream ``chunks``, then the empty frame; returns every message received and the close code."""
    async with connect(url + path + query, additional_headers=headers, max_size=None) as ws:
        messages: list[dict[str, Any]] = []

        async def reader() -> None:
            with contextlib.suppress(websockets.ConnectionClosedError):  # closed with an error code
                async for raw in ws:
                    messages.append(json.loads(raw))
                    if messages[-1].get("type") == "ready_to_stop":
                        return

        reading = asyncio.create_task(reader())
        try:
            for i, chunk in enumerate(chunks):
                if i == text_frame_at:
                    await ws.send('{"type": "stop"}')
                await ws.send(chunk)
            await ws.send(b"")
        except websockets.ConnectionClosed:
            pass  # the server closed on bad input; the reader has the reason
        await reading
        code = ws.close_code
    return messages, code


def updates_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if "type" not in m]


def final_text(lines: list[dict[str, Any]]) -> str:
    return " ".join(line["text"] for line in lines if line["speaker"] == 1)


def concatenated_wav(clip_ids: tuple[str, ...], path: Path, gap_s: float = 1.2) -> Path:
    """The clips one after another with ``gap_s`` of silence between them, as a 16 kHz WAV."""
    gap = np.zeros(int(16000 * gap_s), dtype=np.float32)
    audio = np.concatenate([part for c in clip_ids for part in (decode_audio(clip(c).path), gap)])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(float_to_pcm16(audio))
    return path


CHUNK_S = 0.1


async def recv_json(ws, timeout: float = 120) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def send_audio(ws, pcm: bytes, speed: float | None = None) -> None:  # type: ignore[no-untyped-def]
    step = int(16000 * CHUNK_S) * 2
    started = time.perf_counter()
    for i in range(0, len(pcm), step):
        await ws.send(pcm[i : i + step])
        if speed:
            due = started + (i + step) / 32000 / speed
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        else:
            await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def in_loop_servers(tmp_path: Path, **overrides) -> AsyncIterator[tuple[int, int, object]]:  # type: ignore[no-untyped-def]
    """The main app and the standalone --stt-port app served from this test's event loop (as `serve` does)."""
    settings = Settings.load(model_dir=tmp_path / "models", **overrides)
    app = create_app(settings)
    ports = free_port(), free_port()
    servers = [
        uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=ports[0], log_level="warning")),
        uvicorn.Server(uvicorn.Config(standalone_app(app), host="127.0.0.1", port=ports[1], log_level="warning")),
    ]
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    try:
        while not all(s.started for s in servers):
            await asyncio.sleep(0.02)
        await app.state.pool.get(None)
        yield ports[0], ports[1], app
    finally:
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks)


# WhisperLiveKit /asr full-mode updates: the keys its page reads, and the H:MM:SS.cc line times
ASR_UPDATE_KEYS = {
    "status",
    "lines",
    "buffer_transcription",
    "buffer_diarization",
    "buffer_translation",
    "remaining_time_transcription",
    "remaining_time_diarization",
}
ASR_TIME = r"^\d+:\d\d:\d\d\.\d\d$"


def check_full_mode_shape(messages: list[dict[str, Any]], use_worklet: bool = False) -> list[dict[str, Any]]:
    """A full-mode session as WhisperLiveKit's page reads it: config, updates only on change, ready_to_stop.

    Returns the last update's lines."""
    assert messages[0] == {"type": "config", "useAudioWorklet": use_worklet, "mode": "full"}
    assert messages[-1] == {"type": "ready_to_stop"}
    updates = updates_of(messages)
    assert len(updates) == len(messages) - 2  # nothing but config, updates, ready_to_stop
    assert updates[0]["status"] == "no_audio_detected" and updates[0]["lines"] == []
    for before, after in itertools.pairwise(updates):
        assert before != after  # sent only when something changed
    for update in updates:
        assert set(update) == ASR_UPDATE_KEYS, update
        assert update["buffer_diarization"] == "" and update["remaining_time_diarization"] == 0.0
        for line in update["lines"]:
            assert line["speaker"] in (1, -2)
            assert set(line) <= {"speaker", "text", "start", "end", "translation", "detected_language"}
            assert re.match(ASR_TIME, line["start"]) and re.match(ASR_TIME, line["end"])
            assert line["start"] <= line["end"]
    last = updates[-1]
    assert last["status"] == "active_transcription"
    assert last["buffer_transcription"] == "" and last["remaining_time_transcription"] == 0.0
    return last["lines"]
