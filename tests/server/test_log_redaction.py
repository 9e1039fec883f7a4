"""Keys never reach the logs: ``hearline serve`` as a process, requests with ``?token=KEY`` on HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import websockets

from hearline.server.log_redaction import redact
from tests.helpers.server import free_port, wait_spawned

KEY = "s3cret-KEY-1234"


def test_redact_masks_credential_parameters_only() -> None:
    assert redact("/asr?language=en&token=abc&model=base") == "/asr?language=en&token=***&model=base"
    assert redact("GET /v1/models?api_key=abc HTTP/1.1") == "GET /v1/models?api_key=*** HTTP/1.1"
    assert redact("/asr?tokenizer=x") == "/asr?tokenizer=x"


async def test_query_keys_are_masked_in_the_server_log(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    command = [sys.executable, "-m", "hearline.cli", "serve", "--port", str(port), "--model", "pocketsphinx",
               "--model-dir", str(tmp_path / "models"), "--api-key", KEY, "--log-level", "info"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_spawned(process, f"http://127.0.0.1:{port}/health")
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models?token={KEY}", timeout=30).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models?token=wrong{KEY}", timeout=30).status_code == 401
        async with websockets.connect(f"ws://127.0.0.1:{port}/stt?token={KEY}") as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "connected"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    log = output.decode(errors="replace")
    assert "/v1/models?token=***" in log and "/stt?token=***" in log, log[-2000:]  # the lines are there
    assert KEY not in log
