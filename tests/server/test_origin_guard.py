"""server/origin_guard.py: without an API key, web pages of other origins and rebinding hostnames cannot
drive the server; this machine's clients (no Origin), its own page and --cors-origins can.

Real servers on real ports; ``httpx`` and ``websockets`` set the headers a browser would send.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from hearline.config import Settings
from hearline.server.origin_guard import is_loopback_name
from tests.helpers.corpus import clip
from tests.helpers.server import ServerThread, running_server

EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    settings = Settings.load(
        model_dir=Path(tmp_path_factory.mktemp("origin")), model="pocketsphinx", cors_origins=["http://app.example"]
    )
    with running_server(settings) as server:
        yield server


def _upload(server: ServerThread, **headers: str) -> httpx.Response:
    files = {"file": ("go.wav", clip("en_pocketsphinx_goforward").path.read_bytes())}
    return httpx.post(
        server.url + "/v1/audio/transcriptions", data={"model": "whisper-1"}, files=files, headers=headers, timeout=60
    )


def _refused(response: httpx.Response) -> str:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "forbidden_origin" and "--api-key" in error["message"]
    return str(error["message"])


async def _handshake_status(url: str, **headers: str) -> int:
    try:
        async with websockets.connect(url, additional_headers=headers, open_timeout=30):
            return 101
    except InvalidStatus as exc:
        assert json.loads(exc.response.body or b"{}")["error"]["code"] == "forbidden_origin"
        return exc.response.status_code


def test_a_foreign_page_cannot_post_but_this_machine_can(open_server: ServerThread) -> None:
    assert EVIL in _refused(_upload(open_server, Origin=EVIL))
    _refused(_upload(open_server, Origin="null"))  # a sandboxed page or a file:// document
    _refused(_upload(open_server, **{"Sec-Fetch-Site": "cross-site"}))  # a browser that sent no Origin
    _refused(httpx.delete(open_server.url + "/v1/models/pocketsphinx", headers={"Origin": EVIL}))
    # the text/plain POST and the image GET a page can send without asking
    _refused(httpx.post(open_server.url + "/start", content="source=microphone", headers={"Origin": EVIL}))
    _refused(httpx.get(open_server.url + "/start?source=microphone", headers={"Sec-Fetch-Site": "cross-site"}))
    this_machine = "http://localhost:3000"  # the user's own web app on another port
    allowed = ({}, {"Origin": open_server.url}, {"Origin": "http://app.example"}, {"Origin": this_machine})
    for headers in (*allowed, {"Sec-Fetch-Site": "none"}):
        reply = _upload(open_server, **headers)
        assert reply.status_code == 200 and "forward" in reply.json()["text"], headers
    # reading is not changing: a foreign page's GET of the model list is answered (CORS decides who reads it)
    assert httpx.get(open_server.url + "/v1/models", headers={"Origin": EVIL}).status_code == 200


async def test_a_foreign_page_cannot_open_a_live_socket(open_server: ServerThread) -> None:
    for path in ("/stt", "/asr", "/vosk", "/v1/listen", "/v1/realtime?intent=transcription"):
        assert await _handshake_status(open_server.ws_url + path, Origin=EVIL) == 403, path
    assert await _handshake_status(open_server.ws_url + "/asr", Origin=open_server.url) == 101
    assert await _handshake_status(open_server.ws_url + "/asr", Origin="http://127.0.0.1:5173") == 101
    assert await _handshake_status(open_server.ws_url + "/asr") == 101


def test_a_rebinding_hostname_is_refused(open_server: ServerThread) -> None:
    """The page's DNS name points at 127.0.0.1: its requests carry Host: evil.example, even GETs."""
    message = _refused(httpx.get(open_server.url + "/v1/models", headers={"Host": "evil.example:8000"}))
    assert "listens on loopback only" in message
    for host in (f"localhost:{open_server.port}", f"127.0.0.1:{open_server.port}", "[::1]", "app.localhost"):
        assert httpx.get(open_server.url + "/v1/models", headers={"Host": host}).status_code == 200, host


def test_with_a_key_the_key_decides(tmp_path: Path) -> None:
    settings = Settings.load(model_dir=tmp_path / "models", model="pocketsphinx", api_key="sekrit")
    with running_server(settings) as server:
        reply = _upload(server, Origin=EVIL, Authorization="Bearer sekrit")
        assert reply.status_code == 200
        assert _upload(server, Origin=EVIL).status_code == 401


def test_loopback_names() -> None:
    assert all(map(is_loopback_name, ["localhost", "LOCALHOST.", "a.localhost:80", "127.0.0.2", "[::1]:8000"]))
    assert not any(map(is_loopback_name, ["evil.example", "localhost.evil.example", "10.0.0.1", "[::2]", ""]))
