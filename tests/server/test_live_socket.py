"""server/live_socket.py: the frame limit on every binary live door (a frame over 1 MiB is an error in the
door's shape and is dropped, the session goes on to its final, and memory stays bounded), the one sender, and
admission counting a session until it has closed.

The shared PocketSphinx server on a real port; real ``websockets`` clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
from pathlib import Path
from typing import Any

import pytest
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from hearline.config import Settings
from hearline.live.session import LiveOptions, LiveSession
from hearline.models.pool import ModelPool
from hearline.server.live_socket import (
    MAX_AUDIO_FRAME_BYTES,
    CountedSession,
    SessionLimit,
    SocketSender,
    admission_error,
)
from tests.helpers.corpus import pcm16
from tests.helpers.doors import run_session, updates_of, webm_chunks
from tests.helpers.server import ServerThread

TIMEOUT = 120
BIG = b"\0" * (MAX_AUDIO_FRAME_BYTES + 2)


def _over_the_limit(message: str) -> bool:
    return f"over the limit of {MAX_AUDIO_FRAME_BYTES} bytes" in message


async def _recv(ws: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def test_stt(server: ServerThread) -> None:
    async with websockets.connect(server.ws_url + "/stt") as ws:
        assert (await _recv(ws))["type"] == "connected"
        await ws.send(json.dumps({"command": "start"}))
        assert (await _recv(ws))["type"] == "session_started"
        await ws.send(BIG)
        error = await _recv(ws)
        assert error["type"] == "error" and _over_the_limit(error["message"]), error
        await ws.send(pcm16("en_pocketsphinx_goforward"))
        await ws.send(json.dumps({"command": "stop"}))
        while (message := await _recv(ws))["type"] != "final":
            assert message["type"] != "error", message
    assert "forward" in message["text"].lower()


async def test_vosk(server: ServerThread) -> None:
    pcm = pcm16("en_pocketsphinx_goforward")
    async with websockets.connect(server.ws_url + "/vosk") as ws:
        await ws.send(json.dumps({"config": {"sample_rate": 16000}}))
        await ws.send(BIG)
        assert _over_the_limit((await _recv(ws))["error"])
        texts = []
        for i in range(0, len(pcm), 8000):
            await ws.send(pcm[i : i + 8000])
            texts.append((await _recv(ws)).get("text", ""))
        await ws.send('{"eof" : 1}')
        texts.append((await _recv(ws))["text"])
    assert "forward" in " ".join(texts)


async def test_asr(server: ServerThread) -> None:
    messages, _code = await run_session(server.ws_url, [BIG, *webm_chunks("en_pocketsphinx_goforward")])
    errors = [m for m in messages if m.get("type") == "error"]
    assert len(errors) == 1 and _over_the_limit(errors[0]["error"])
    lines = updates_of(messages)[-1]["lines"]
    assert "forward" in " ".join(line["text"] for line in lines).lower()


async def test_deepgram(server: ServerThread) -> None:
    async with websockets.connect(server.ws_url + "/v1/listen?encoding=linear16&sample_rate=16000") as ws:
        await ws.send(BIG)
        error = await _recv(ws)
        assert error["type"] == "Error" and _over_the_limit(error["description"]), error
        await ws.send(pcm16("en_pocketsphinx_goforward"))
        await ws.send(json.dumps({"type": "CloseStream"}))
        replies = [json.loads(m) async for m in ws]
    finals = [r["channel"]["alternatives"][0]["transcript"] for r in replies if r.get("is_final")]
    assert "forward" in " ".join(finals)


async def test_big_frames_at_a_low_rate_keep_memory_bounded(server: ServerThread) -> None:
    """Eight Vosk sessions at 4 kHz, each sending the largest frame uvicorn takes (16 MiB), twice: refused
    without being turned into samples (each would be 2000 s of audio, 128 MB at 16 kHz)."""
    before = _rss_mb()
    peak = [before]
    sampling = asyncio.create_task(_sample_rss(peak))

    async def one() -> str:
        async with websockets.connect(server.ws_url + "/vosk", max_size=None) as ws:
            await ws.send(json.dumps({"config": {"sample_rate": 4000}}))
            for _ in range(2):
                await ws.send(b"\0" * (16 * 1024 * 1024 - 64))
                reply = await _recv(ws)
            return str(reply["error"])

    try:
        errors = await asyncio.gather(*(one() for _ in range(8)))
    finally:
        sampling.cancel()
    assert all(_over_the_limit(e) for e in errors)
    grown = max(peak) - before
    print("RSS grew by", grown, "MB at most")
    # measured 177 (the frames themselves pass through client and server, both in this process); their
    # samples never exist.  Turned into samples they are 1 GB and more.
    assert grown < 600, grown


def _rss_mb() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() // (1024 * 1024)


async def _sample_rss(peak: list[int]) -> None:
    while True:
        peak.append(_rss_mb())
        await asyncio.sleep(0.01)


async def test_sender_writes_one_frame_at_a_time_and_reports_a_gone_client() -> None:
    """Concurrent senders (a door's forwarder and its receive loop) never interleave a frame; once the client
    has vanished without a close handshake, ``send`` is ``False`` and ``gone``, not an exception."""
    results: list[bool] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        sender = SocketSender(ws, "test")
        sent = await asyncio.gather(*(sender.send({"n": n, "pad": "x" * 50_000}) for n in range(20)))
        with contextlib.suppress(WebSocketDisconnect):
            await ws.receive_text()  # until the client disappears
        for n in range(3):
            sent.append(await sender.send({"n": 20 + n}))
        results.extend([*sent, sender.gone])
        loop.call_soon_threadsafe(done.set)

    server = ServerThread(Starlette(routes=[WebSocketRoute("/ws", endpoint)])).start()
    try:
        ws = await websockets.connect(server.ws_url + "/ws", max_size=None)
        frames = [await _recv(ws) for _ in range(20)]
        assert sorted(f["n"] for f in frames) == list(range(20)) and all(len(f["pad"]) == 50_000 for f in frames)
        ws.transport.abort()  # no close frame: the client just goes
        await asyncio.wait_for(done.wait(), TIMEOUT)
    finally:
        server.stop()
    assert results == [True] * 20 + [False] * 3 + [True]


async def test_a_closing_session_counts_against_max_sessions_until_it_has_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its last job may still be running: a new session is admitted once it is gone, as the metrics count it."""
    pool = ModelPool(Settings.load(model_dir=tmp_path / "models", model="pocketsphinx", max_sessions=1))
    closing, original = asyncio.Event(), LiveSession.close

    async def slow_close(self: LiveSession) -> None:
        await closing.wait()  # a job still running in a worker thread
        await original(self)

    monkeypatch.setattr(LiveSession, "close", slow_close)
    try:
        session = CountedSession(pool, None, LiveOptions(language="en"), door="stt")
        await session.start()
        assert isinstance(admission_error(pool, pool.settings), SessionLimit)
        close = asyncio.create_task(session.close())
        await asyncio.sleep(0.1)
        assert isinstance(admission_error(pool, pool.settings), SessionLimit)  # still closing
        closing.set()
        await close
        assert admission_error(pool, pool.settings) is None
    finally:
        closing.set()
        await pool.close()
