"""WhisperLiveKit ``/asr`` with ``--pcm-input`` (the AudioWorklet path), an API key and a translator.

Raw s16le frames with odd lengths (a sample split across frames), as a worklet's buffer sizes can give;
translation goes to a LibreTranslate-compatible stand-in on a real port.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from fastapi import FastAPI
from websockets.asyncio.client import connect

from hearline.audio.decode import decode_audio, float_to_pcm16
from hearline.config import Settings
from hearline.server.asr_ws import apply_diff
from tests.helpers.corpus import clip, wer
from tests.helpers.doors import check_full_mode_shape, final_text, run_session
from tests.helpers.server import ServerThread, running_server


def pcm_chunks(clip_id: str, chunk_s: float = 0.25) -> list[bytes]:
    """Raw s16le 16 kHz in 250 ms frames; every other frame has an odd length (samples split)."""
    data = float_to_pcm16(decode_audio(clip(clip_id).path))
    step = int(16000 * 2 * chunk_s)
    chunks = [data[i : i + step] for i in range(0, len(data), step)]
    for i in range(0, len(chunks) - 1, 2):  # move one byte across the boundary
        chunks[i], chunks[i + 1] = chunks[i][:-1], chunks[i][-1:] + chunks[i + 1]
    return chunks


@pytest.fixture(scope="module")
def fake_libretranslate() -> Iterator[ServerThread]:
    """A LibreTranslate-compatible server that "translates" by tagging the text with the target."""
    app = FastAPI()

    @app.post("/translate")
    async def translate(body: dict[str, Any]) -> dict[str, str]:
        return {"translatedText": f"[{body['target']}] {body['q']}"}

    server = ServerThread(app).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pcm_server(tmp_path_factory: pytest.TempPathFactory, fake_libretranslate: ServerThread) -> Iterator[ServerThread]:
    """--pcm-input, an API key and a (fake) LibreTranslate translator."""
    settings = Settings.load(
        model_dir=Path(tmp_path_factory.mktemp("models")),
        pcm_input=True,
        api_key="sekret",
        translator="libretranslate",
        translate_url=fake_libretranslate.url,
    )
    with running_server(settings) as srv:
        yield srv


async def test_pcm_input_mode(pcm_server: ServerThread) -> None:
    clip_id = "en_pocketsphinx_goforward"
    messages, _ = await run_session(pcm_server.ws_url, pcm_chunks(clip_id), query="?language=en&token=sekret")
    lines = check_full_mode_shape(messages, use_worklet=True)
    assert wer(clip(clip_id).text or "", final_text(lines)) <= 0.25  # measured 0.0
    headers = {"Authorization": "Bearer sekret"}
    async with connect(pcm_server.ws_url + "/asr", additional_headers=headers) as ws:
        assert json.loads(await ws.recv()) == {"type": "config", "useAudioWorklet": True, "mode": "full"}


async def test_target_language_translates_each_line(pcm_server: ServerThread) -> None:
    clip_id = "en_librivox_sense_and_sensibility_01_0880"
    query = "?language=en&mode=diff&target_language=fr&token=sekret"
    messages, _ = await run_session(pcm_server.ws_url, pcm_chunks(clip_id), query=query)
    assert messages[-1] == {"type": "ready_to_stop"}
    lines: list[dict[str, Any]] = []
    for message in messages[1:-1]:
        lines = apply_diff(lines, message)
    spoken = [line for line in lines if line["speaker"] == 1]
    assert spoken and all(line["translation"] == "[fr] " + line["text"] for line in spoken)
    assert messages[-2]["buffer_translation"] == ""


async def test_bad_token_refuses_the_handshake(pcm_server: ServerThread) -> None:
    for query in ("", "?token=wrong"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await connect(pcm_server.ws_url + "/asr" + query)
        assert refused.value.response.status_code == 403  # close 4401 before accept
