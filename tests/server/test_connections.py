"""Connection limits below the doors: trickled headers time out, held connections are capped (finding 6/7).

The servers are what ``hearline serve`` builds (``run.build_servers``) on real ports; clients are raw sockets
(a slowloris client), ``websockets`` and ``httpx``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from hearline.config import Settings
from hearline.server import run
from hearline.server.connections import CONNECTIONS_RETRY_S
from tests.helpers.corpus import pcm16
from tests.helpers.server import free_port, serving, wait_healthy

HEADER_TIMEOUT = 1.0
MAX_CONNECTIONS = 6


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    settings = Settings.load(
        port=port,
        model_dir=Path(tmp_path_factory.mktemp("conn-models")),
        model="pocketsphinx",
        header_timeout_s=HEADER_TIMEOUT,
        max_connections=MAX_CONNECTIONS,
        log_level="warning",
    )
    with serving(run.build_servers(settings)):
        base = f"127.0.0.1:{port}"
        wait_healthy(f"http://{base}")
        yield base


async def _read_all(reader: asyncio.StreamReader, timeout: float) -> tuple[bytes, float]:
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), timeout)
    return data, time.monotonic() - started


@pytest.mark.parametrize("upgrade", [False, True], ids=["http", "websocket-handshake"])
async def test_headers_that_never_finish_get_408_and_the_connection_closes(server: str, upgrade: bool) -> None:
    host, port = server.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /stt HTTP/1.1\r\nHost: " + server.encode() + b"\r\n")
    if upgrade:
        writer.write(b"Upgrade: websocket\r\nConnection: Upgrade\r\n")
    await writer.drain()
    # one more header line before the deadline does not restart it
    await asyncio.sleep(HEADER_TIMEOUT / 2)
    writer.write(b"X-Slow: 1\r\n")
    await writer.drain()
    data, took = await _read_all(reader, 30)
    writer.close()
    assert data.startswith(b"HTTP/1.1 408"), data[:80]
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "header_timeout"
    assert took < 10 * HEADER_TIMEOUT


async def test_a_silent_connection_is_closed_too(server: str) -> None:
    host, port = server.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    data, _ = await _read_all(reader, 30)
    writer.close()
    assert data.startswith(b"HTTP/1.1 408"), data[:80]


async def test_a_9_kb_upgrade_url_is_answered(server: str) -> None:
    host, port = server.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    target = "/stt?x=" + "a" * 9000
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await writer.drain()
    data, _ = await _read_all(reader, 30)
    writer.close()
    assert data.startswith(b"HTTP/1.1 414"), data[:80]


async def test_held_connections_are_capped_and_the_open_ones_keep_working(server: str) -> None:
    held = [await websockets.connect(f"ws://{server}/stt") for _ in range(MAX_CONNECTIONS)]
    try:
        with pytest.raises(InvalidStatus) as caught:
            await websockets.connect(f"ws://{server}/vosk", open_timeout=30)
        response = caught.value.response
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) == CONNECTIONS_RETRY_S
        assert json.loads(response.body)["error"]["code"] == "too_many_connections"
        async with httpx.AsyncClient(timeout=30) as client:
            refused = await client.get(f"http://{server}/health")
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "too_many_connections"
        # a held connection still gets its final
        ws = held[0]
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "connected"
        await ws.send(json.dumps({"command": "start"}))
        await ws.send(pcm16("en_pocketsphinx_goforward"))
        await ws.send(json.dumps({"command": "stop"}))
        final = ""
        while not final:
            message = json.loads(await asyncio.wait_for(ws.recv(), 60))
            assert message["type"] != "error", message
            if message["type"] == "final":
                final = message["text"]
        assert "forward" in final.lower()
    finally:
        await asyncio.gather(*(ws.close() for ws in held))
    # the places are free again
    await asyncio.sleep(0.5)
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.get(f"http://{server}/health")).status_code == 200
