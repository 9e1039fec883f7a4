"""https and wss without a proxy: `--ssl-certfile/--ssl-keyfile` through the same servers `hearline serve` builds."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from pathlib import Path

import httpx
import websockets
from openai import DefaultHttpxClient, OpenAI

from hearline.config import Settings
from hearline.server import run
from tests.helpers.corpus import clip, wer
from tests.helpers.server import free_port, serving, wait_healthy


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_rest_and_wss_live(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port, stt_port = free_port(), free_port()
    settings = Settings.load(
        port=port, stt_port=stt_port, ssl_certfile=cert, ssl_keyfile=key, log_level="warning",
        model_dir=tmp_path / "models",
    )  # fmt: skip
    trust = ssl.create_default_context(cafile=str(cert))
    with serving(run.build_servers(settings)) as thread:
        base = f"https://127.0.0.1:{port}"
        wait_healthy(base, 60, verify=trust)
        # plain http on the TLS port is refused: the listener really speaks TLS
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
            plain_refused = False
        except httpx.HTTPError:
            plain_refused = True
        assert plain_refused

        client = OpenAI(base_url=base + "/v1", api_key="x", http_client=DefaultHttpxClient(verify=trust))
        speech = clip("en_pocketsphinx_goforward")
        text = client.audio.transcriptions.create(model="whisper-1", file=speech.path).text
        assert wer(speech.text or "", text) <= 0.5

        async def wss_hello() -> dict:
            async with websockets.connect(f"wss://127.0.0.1:{stt_port}/", ssl=trust) as ws:
                return json.loads(await ws.recv())

        assert asyncio.run(wss_hello())["type"] == "connected"
    assert not thread.is_alive()
