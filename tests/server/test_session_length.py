"""``--max-session-minutes``: a live session that reaches it gets the finals of what it sent, then close 1008.

A real server (PocketSphinx, a 3 s limit) on a real port; real ``websockets`` clients on the /stt and Deepgram
doors stream speech and then keep streaming silence, as a forgotten client would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from hearline.config import Settings
from hearline.server.live_socket import SESSION_LIMIT_CLOSE_CODE
from tests.helpers.corpus import pcm16
from tests.helpers.metrics import metric, scrape
from tests.helpers.polling import eventually
from tests.helpers.server import ServerThread, running_server

LIMIT_S = 3.0
SILENCE_CHUNK = bytes(3200)  # 100 ms at 16 kHz


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    settings = Settings.load(
        model_dir=Path(tmp_path_factory.mktemp("length")), model="pocketsphinx", max_session_minutes=LIMIT_S / 60
    )
    with running_server(settings) as server:
        yield server


async def _stream_until_closed(ws: Any, first: bytes) -> tuple[list[str], int, str]:
    """Send ``first`` then silence at real time; the JSON messages received and the close code and reason."""

    async def feed() -> None:
        await ws.send(first)
        while True:
            await ws.send(SILENCE_CHUNK)
            await asyncio.sleep(0.1)

    feeder = asyncio.create_task(feed())
    messages: list[str] = []
    try:
        while True:
            messages.append(await ws.recv())
    except websockets.ConnectionClosed:
        pass
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
    assert ws.close_code is not None
    return messages, ws.close_code, ws.close_reason


def _closed_for_length(code: int, reason: str) -> None:
    assert code == SESSION_LIMIT_CLOSE_CODE
    assert "maximum length of 0.05 min" in reason


async def test_stt_session_gets_its_final_then_is_closed(server: ServerThread) -> None:
    before = metric(scrape(server.url), "hearline_refusals_total", reason="max_session_length")
    async with websockets.connect(server.ws_url + "/stt") as ws:
        await ws.send(json.dumps({"command": "start"}))
        messages, code, reason = await asyncio.wait_for(
            _stream_until_closed(ws, pcm16("en_pocketsphinx_goforward")), 60
        )
    _closed_for_length(code, reason)
    finals = [m["text"] for m in map(json.loads, messages) if m["type"] == "final"]
    assert any("forward" in text.lower() for text in finals), messages
    after = metric(scrape(server.url), "hearline_refusals_total", reason="max_session_length")
    assert after - before == 1
    pool = server.config.app.state.pool
    await asyncio.to_thread(eventually, lambda: not pool.live_sessions, 30, "the session to close")


async def test_deepgram_session_gets_its_final_then_is_closed(server: ServerThread) -> None:
    url = server.ws_url + "/v1/listen?encoding=linear16&sample_rate=16000&endpointing=false"
    async with websockets.connect(url) as ws:
        messages, code, reason = await asyncio.wait_for(
            _stream_until_closed(ws, pcm16("en_pocketsphinx_goforward")), 60
        )
    _closed_for_length(code, reason)
    finals = [
        m["channel"]["alternatives"][0]["transcript"]
        for m in map(json.loads, messages)
        if m.get("type") == "Results" and m.get("is_final")
    ]
    assert "forward" in " ".join(finals).lower(), messages
