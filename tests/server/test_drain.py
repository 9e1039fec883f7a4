"""Graceful drain: ``hearline serve`` as a real process, SIGTERM while two live doors are mid-utterance."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from hearline.audio.decode import decode_audio, float_to_pcm16
from hearline.config import Settings
from hearline.server.drain import drain
from tests.helpers.corpus import clip, normalize, wer
from tests.helpers.metrics import metric, scrape
from tests.helpers.polling import eventually
from tests.helpers.server import free_port, running_server, wait_spawned

CLIP = "en_fw_jfk"
SENT_S = 6.0  # "... ask not what your country can do for you": mid-sentence, no pause after it yet


def start_server(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    command = [sys.executable, "-m", "hearline.cli", "serve", "--port", str(port), "--model", "pocketsphinx",
               "--model-dir", str(tmp_path / "models"), "--drain-timeout", "20"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_spawned(process, f"http://127.0.0.1:{port}/ready")
    except RuntimeError:
        process.kill()
        raise
    return process


def wait_for_audio(port: int, seconds: dict[str, float]) -> None:
    """Until /metrics counts at least ``seconds`` of audio received per door."""

    def received() -> bool:
        samples = scrape(f"http://127.0.0.1:{port}")
        return all(
            metric(samples, "hearline_audio_received_seconds_total", door=door) >= need - 0.01
            for door, need in seconds.items()
        )

    eventually(received, timeout=60, what=f"the server to receive the audio: {seconds}")


async def _until(ws: websockets.ClientConnection, kind: str):  # type: ignore[no-untyped-def]
    async for raw in ws:
        yield raw
        if json.loads(raw).get("type") == kind:
            return


async def test_sigterm_sends_the_finals_of_what_was_sent_then_exits(tmp_path: Path) -> None:
    port = free_port()
    process = start_server(tmp_path, port)
    pcm = float_to_pcm16(decode_audio(clip(CLIP).path))[: int(SENT_S * 32000)]
    try:
        # What a client that stops normally gets for the same audio: the finals a drain must not lose.
        async with websockets.connect(f"ws://127.0.0.1:{port}/stt") as ws:
            await ws.recv()
            await ws.send(pcm)
            await ws.send(json.dumps({"command": "stop"}))
            stopped = [json.loads(m) async for m in _until(ws, "session_ended")]
        expected = " ".join(m["text"] for m in stopped if m.get("type") == "final")
        stt = await websockets.connect(f"ws://127.0.0.1:{port}/stt")
        deepgram = await websockets.connect(
            f"ws://127.0.0.1:{port}/v1/listen?encoding=linear16&sample_rate=16000&interim_results=true"
        )
        assert json.loads(await stt.recv())["type"] == "connected"
        for offset in range(0, len(pcm), 6400):
            await stt.send(pcm[offset : offset + 6400])
            await deepgram.send(pcm[offset : offset + 6400])
            await asyncio.sleep(0.02)
        # SIGTERM once both sessions hold all of it (the reference session's 6 s count under stt too)
        await asyncio.to_thread(wait_for_audio, port, {"stt": 2 * SENT_S, "deepgram": SENT_S})
        process.send_signal(signal.SIGTERM)

        async def until_closed(ws: websockets.ClientConnection) -> list[dict]:  # type: ignore[type-arg]
            messages = []
            try:
                async for raw in ws:
                    messages.append(json.loads(raw))
            except websockets.ConnectionClosed:
                pass
            return messages

        stt_messages, dg_messages = await asyncio.wait_for(
            asyncio.gather(until_closed(stt), until_closed(deepgram)), 60
        )
        # closed as "going away" (reconnect elsewhere), not uvicorn's 1012 at shutdown
        assert (stt.close_code, deepgram.close_code) == (1001, 1001)
        assert stt.close_reason == "server shutting down"
        exit_code = await asyncio.to_thread(process.wait, 60)
    finally:
        if process.poll() is None:
            process.kill()
    stt_text = " ".join(m["text"] for m in stt_messages if m.get("type") == "final")
    dg_finals = [m for m in dg_messages if m.get("type") == "Results" and m["is_final"]]
    dg_text = " ".join(m["channel"]["alternatives"][0]["transcript"] for m in dg_finals)
    first_6s = "And so my fellow Americans, ask not what your country can do for you"
    assert expected and wer(first_6s, expected) < 0.8, expected  # measured: 0.643 (PocketSphinx on the cut clip)
    # every word of the open utterance reached both clients after the signal
    assert normalize(stt_text) == normalize(expected), (stt_text, expected)
    assert normalize(dg_text) == normalize(expected), (dg_text, expected)
    assert exit_code is not None  # the process stopped by itself inside the drain timeout


async def test_draining_server_refuses_new_sessions_and_is_not_ready(tmp_path: Path) -> None:
    """What the first SIGTERM sets, in-process: /ready 503 and a new live session refused in its door's shape."""
    settings = Settings.load(model_dir=tmp_path / "models", model="pocketsphinx")
    with running_server(settings) as server:
        app = server.config.app
        await drain(app, 5)  # no live session is open: only the flags change
        ready = await asyncio.to_thread(httpx.get, server.url + "/ready", timeout=30)
        assert (ready.status_code, ready.json()["status"]) == (503, "draining")
        # refused at the handshake (a load balancer retries another replica) with the door's error body
        with pytest.raises(InvalidStatus) as caught:
            async with websockets.connect(server.ws_url + "/stt", open_timeout=30):
                pass
        response = caught.value.response
        assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
        error = json.loads(response.body or b"{}")
        assert error["type"] == "error" and error["code"] == "draining" and "shutting down" in error["message"]
