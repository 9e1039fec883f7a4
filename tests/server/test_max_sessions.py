"""``--max-sessions``: a full server refuses new live sessions in each door's shape and serves the open ones.

A real server (PocketSphinx, ``max_sessions=1``) on a real port; real ``websockets`` and ``wyoming`` clients.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info

from hearline.config import Settings
from hearline.server.live_socket import SESSION_LIMIT_RETRY_S
from hearline.server.wyoming import WyomingServer
from tests.helpers.corpus import clip, pcm16
from tests.helpers.metrics import metric, scrape
from tests.helpers.polling import eventually, until
from tests.helpers.server import ServerThread, running_server

TIMEOUT = 60
#: door -> (path, the refused handshake's JSON body -> its error message)
DOORS: dict[str, tuple[str, Any]] = {
    "stt": ("/stt", lambda b: b["type"] == "error" and b["code"] == "max_sessions" and b["message"]),
    "asr": ("/asr", lambda b: b["type"] == "error" and b["error"]),
    "vosk": ("/vosk", lambda b: b["error"]),
    "realtime": (
        "/v1/realtime?intent=transcription",
        lambda b: b["type"] == "error" and b["error"]["code"] == "max_sessions" and b["error"]["message"],
    ),
    "deepgram": ("/v1/listen", lambda b: b["err_code"] and b["err_msg"]),
}


@pytest.fixture(scope="module")
def full_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    settings = Settings.load(
        model_dir=Path(tmp_path_factory.mktemp("max-models")), model="pocketsphinx", max_sessions=1
    )
    with running_server(settings) as server:
        yield server


def open_sessions(server: ServerThread) -> int:
    return len(server.config.app.state.pool.live_sessions)


async def open_stt(server: ServerThread) -> Any:
    """An /stt client whose session is started (it holds the only place)."""
    ws = await websockets.connect(server.ws_url + "/stt")
    assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["type"] == "connected"
    await ws.send(json.dumps({"command": "start"}))
    await asyncio.to_thread(eventually, lambda: open_sessions(server) == 1, TIMEOUT)
    return ws


async def refused(server: ServerThread, path: str) -> tuple[int, Any, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as caught:
        async with websockets.connect(server.ws_url + path, open_timeout=TIMEOUT):
            pass
    response = caught.value.response
    return response.status_code, response.headers, json.loads(response.body or b"{}")


async def test_a_full_server_refuses_every_door_at_the_handshake(full_server: ServerThread) -> None:
    before = metric(scrape(full_server.url), "hearline_refusals_total", reason="max_sessions")
    holder = await open_stt(full_server)
    try:
        for door, (path, message_of) in DOORS.items():
            status, headers, body = await refused(full_server, path)
            assert status == 503, door
            assert int(headers["Retry-After"]) >= SESSION_LIMIT_RETRY_S, door
            message = message_of(body)
            assert isinstance(message, str) and "maximum of 1 live sessions" in message, (door, body)
        # the open session is untouched: it still transcribes and gives its final
        await holder.send(pcm16("en_pocketsphinx_goforward"))
        await holder.send(json.dumps({"command": "stop"}))
        finals = []
        while not finals:
            message = json.loads(await asyncio.wait_for(holder.recv(), TIMEOUT))
            assert message["type"] != "error", message
            if message["type"] == "final":
                finals.append(message["text"])
        assert "forward" in finals[0].lower()
    finally:
        await holder.close()
    after = metric(scrape(full_server.url), "hearline_refusals_total", reason="max_sessions")
    assert after - before == len(DOORS)


async def test_the_place_is_free_again_once_the_session_closes(full_server: ServerThread) -> None:
    holder = await open_stt(full_server)
    await holder.close()
    await asyncio.to_thread(eventually, lambda: open_sessions(full_server) == 0)
    async with websockets.connect(full_server.ws_url + "/v1/listen?encoding=linear16&sample_rate=16000") as ws:
        await ws.send(pcm16("en_pocketsphinx_goforward"))
        await ws.send(json.dumps({"type": "CloseStream"}))
        texts = []
        async for raw in ws:
            message = json.loads(raw)
            if message.get("type") == "Results" and message.get("is_final"):
                texts.append(message["channel"]["alternatives"][0]["transcript"])
    assert "forward" in " ".join(texts).lower()


def test_rest_is_not_limited_by_live_sessions(full_server: ServerThread) -> None:
    async def hold_and_post() -> httpx.Response:
        holder = await open_stt(full_server)
        try:
            files = {"file": ("speech.wav", _wav("en_pocketsphinx_goforward"), "audio/wav")}
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                return await client.post(
                    full_server.url + "/v1/audio/transcriptions", files=files, data={"model": "whisper-1"}
                )
        finally:
            await holder.close()

    response = asyncio.run(hold_and_post())
    assert response.status_code == 200, response.text
    assert "forward" in response.json()["text"].lower()


def _wav(clip_id: str) -> bytes:
    return clip(clip_id).path.read_bytes()


async def test_wyoming_answers_its_error_event_and_still_describes(tmp_path: Path) -> None:
    from hearline.server.app import create_app

    app = create_app(Settings.load(model_dir=tmp_path / "models", model="pocketsphinx", max_sessions=1))
    server = WyomingServer(app, "127.0.0.1", 0)
    await server.start()
    holder, second = AsyncTcpClient("127.0.0.1", server.port), AsyncTcpClient("127.0.0.1", server.port)
    try:
        await app.state.pool.get(None)
        await holder.connect()
        await holder.write_event(Transcribe(language="en").event())
        await holder.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        pcm = pcm16("en_pocketsphinx_goforward")
        await holder.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=pcm[:3200]).event())
        await until(lambda: len(app.state.pool.live_sessions) >= 1, TIMEOUT, "the session to open")

        await second.connect()
        await second.write_event(Describe().event())
        info = await asyncio.wait_for(second.read_event(), TIMEOUT)
        assert info is not None and Info.is_type(info.type)  # describing needs no session
        await second.write_event(Transcribe(language="en").event())
        reply = await asyncio.wait_for(second.read_event(), TIMEOUT)
        assert reply is not None and Error.is_type(reply.type), reply
        assert reply.data["code"] == "max_sessions" and reply.data["retry_after"] >= SESSION_LIMIT_RETRY_S
        assert await asyncio.wait_for(second.read_event(), TIMEOUT) is None  # and the connection is closed

        await holder.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=pcm[3200:]).event())
        await holder.write_event(AudioStop().event())
        while True:
            event = await asyncio.wait_for(holder.read_event(), TIMEOUT)
            assert event is not None
            if Transcript.is_type(event.type):
                break
        assert "forward" in Transcript.from_event(event).text.lower()
    finally:
        await holder.disconnect()
        await second.disconnect()
        await server.stop()
        await app.state.pool.close()


def test_zero_means_no_limit(tmp_path: Path) -> None:
    settings = Settings.load(model_dir=tmp_path / "models", model="pocketsphinx", max_sessions=0)

    async def three() -> int:
        clients = [await open_one(server) for _ in range(3)]
        await asyncio.to_thread(eventually, lambda: open_sessions(server) == 3)
        count = open_sessions(server)
        for ws in clients:
            await ws.close()
        return count

    async def open_one(srv: ServerThread) -> Any:
        ws = await websockets.connect(srv.ws_url + "/stt")
        assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["type"] == "connected"
        await ws.send(json.dumps({"command": "start"}))
        return ws

    with running_server(settings) as server:
        assert asyncio.run(three()) == 3


def test_a_model_at_its_own_limit_refuses_while_other_models_still_start(tmp_path: Path) -> None:
    """``--max-sessions-per-model pocketsphinx=1``: a second PocketSphinx session is refused in /stt's error
    shape, naming the model; a session on real Whisper tiny.en starts and transcribes beside the first."""
    settings = Settings.load(
        model_dir=tmp_path / "models", model="pocketsphinx", max_sessions_per_model="pocketsphinx=1"
    )
    assert settings.max_sessions_per_model == {"pocketsphinx": 1}

    async def start(server: ServerThread, model: str) -> tuple[Any, dict[str, Any]]:
        ws = await websockets.connect(server.ws_url + f"/stt?model={model}&language=en")
        assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["type"] == "connected"
        await ws.send(json.dumps({"command": "start"}))
        return ws, json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))

    async def scenario(server: ServerThread) -> str:
        holder = await open_stt(server)
        second, answer = await start(server, "pocketsphinx")
        assert answer["type"] == "error", answer
        assert "model 'pocketsphinx' has its maximum of 1 live sessions" in answer["message"]
        whisper, started = await start(server, "tiny.en")
        assert started["type"] == "session_started", started
        await whisper.send(pcm16("en_pocketsphinx_goforward"))
        await whisper.send(json.dumps({"command": "stop"}))
        finals = []
        while True:
            message = json.loads(await asyncio.wait_for(whisper.recv(), TIMEOUT))
            assert message["type"] != "error", message
            if message["type"] == "final":
                finals.append(message["text"])
            if message["type"] == "session_ended":
                break
        for ws in (holder, second, whisper):
            await ws.close()
        return " ".join(finals)

    with running_server(settings) as server:
        before = metric(scrape(server.url), "hearline_refusals_total", reason="max_sessions")
        assert "forward" in asyncio.run(scenario(server)).lower()
        assert metric(scrape(server.url), "hearline_refusals_total", reason="max_sessions") == before + 1
