"""server/timeouts.py: idle live WebSockets are closed (1008), stalled uploads get 408, and nothing
that is merely long (a paced live stream, an SSE subscriber) is cut.

A real server with one-second limits on a real port; real ``websockets``/``httpx`` clients and a raw socket
for the stalled upload.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from hearline.config import Settings
from hearline.server.timeouts import IDLE_CLOSE_CODE
from tests.helpers.corpus import clip, pcm16
from tests.helpers.doors import in_loop_servers
from tests.helpers.polling import eventually
from tests.helpers.server import ServerThread, running_server

LIMIT_S = 1.0


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    settings = Settings.load(
        model_dir=Path(tmp_path_factory.mktemp("timeouts")), model="pocketsphinx",
        live_idle_timeout_s=LIMIT_S, upload_timeout_s=LIMIT_S, ping_interval_s=0.3,
    )  # fmt: skip
    with running_server(settings) as server:
        yield server


async def _closed_for_idleness(ws: websockets.ClientConnection) -> str:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 60)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == IDLE_CLOSE_CODE
    return closed.value.rcvd.reason


@pytest.mark.parametrize("door", ["/stt", "/asr", "/vosk", "/v1/listen", "/v1/realtime?intent=transcription"])
async def test_an_idle_live_socket_is_closed(strict_server: ServerThread, door: str) -> None:
    pool = strict_server.config.app.state.pool
    async with websockets.connect(strict_server.ws_url + door) as ws:
        if door == "/stt":
            await ws.send(json.dumps({"command": "start"}))  # a started session, then silence from the client
        elif door == "/vosk":
            await ws.send(pcm16("en_pocketsphinx_goforward")[:8000])
        reason = await _closed_for_idleness(ws)
    assert "no message for 1 s" in reason
    await asyncio.to_thread(eventually, lambda: not pool.engine_users, 30, "the idle sessions to close")


async def test_a_paced_stream_is_not_idle(strict_server: ServerThread) -> None:
    """Audio in real time, 0.25 s frames for the whole clip (longer than the limit): never closed."""
    pcm = pcm16("en_pocketsphinx_goforward")
    step = 8000
    async with websockets.connect(strict_server.ws_url + "/stt") as ws:
        assert json.loads(await ws.recv())["type"] == "connected"
        await ws.send(json.dumps({"command": "start"}))
        for i in range(0, len(pcm), step):
            await ws.send(pcm[i : i + step])
            await asyncio.sleep(0.25)
        await ws.send(json.dumps({"command": "stop"}))
        while (message := json.loads(await asyncio.wait_for(ws.recv(), 60)))["type"] != "final":
            assert message["type"] != "error", message
    assert clip("en_pocketsphinx_goforward").duration > LIMIT_S
    assert "forward" in message["text"].lower()


async def test_the_standalone_port_closes_idle_sockets_too(tmp_path: Path) -> None:
    async with (
        in_loop_servers(tmp_path, live_idle_timeout_s=LIMIT_S) as (_, stt_port, _app),
        websockets.connect(f"ws://127.0.0.1:{stt_port}/any/path") as ws,
    ):
        assert "no message for 1 s" in await _closed_for_idleness(ws)


def test_a_stalled_upload_is_408_and_the_server_goes_on(strict_server: ServerThread) -> None:
    head = (
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    )
    with socket.create_connection(("127.0.0.1", strict_server.port), timeout=60) as sock:
        sock.sendall(head + b"RIFF")  # then nothing more: a trickle stopped
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 408")
    error = json.loads(body)["error"]
    assert error["code"] == "upload_timeout" and "1 s" in error["message"]
    files = {"file": ("go.wav", clip("en_pocketsphinx_goforward").path.read_bytes())}
    reply = httpx.post(strict_server.url + "/v1/audio/transcriptions", data={"model": "whisper-1"}, files=files)
    assert reply.status_code == 200 and "forward" in reply.json()["text"]


def test_an_sse_subscriber_outlives_the_upload_limit(strict_server: ServerThread) -> None:
    """/events reads no body: it is held open (pings every 0.3 s) well past the one-second limit."""
    events = []
    started = time.monotonic()
    with httpx.stream("GET", strict_server.url + "/events", timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("event:"):
                events.append(line.split(":", 1)[1].strip())
            if time.monotonic() - started > 3 * LIMIT_S:
                break
    assert events[0] == "open" and events.count("ping") >= 3 and "close" not in events
