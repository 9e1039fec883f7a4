"""OpenAI Realtime transcription sessions under bad input, missing models or languages, vanishing clients and
wrong keys: an error event in the protocol's shape, and the session (or the server) goes on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI
from websockets.asyncio.client import connect

from hearline.config import Settings
from hearline.server.live_socket import connections
from tests.helpers.leaks import server_tasks
from tests.helpers.polling import until
from tests.helpers.server import ServerThread, running_server
from tests.server.realtime_client import (
    PATH,
    completed_count,
    drain,
    of_type,
    pcm24_chunks,
)


async def test_every_bad_input_gets_an_error_event_and_the_session_goes_on(server: ServerThread) -> None:
    def append(audio: Any) -> str:
        return json.dumps({"type": "input_audio_buffer.append", "audio": audio})

    bad: list[tuple[str | bytes, str, str | None]] = [
        ("{not json", "invalid_json", None),
        ("[1, 2]", "invalid_json", None),
        ('{"event_id": "x"}', "missing_required_parameter", "type"),
        ('{"type": "no.such.event"}', "invalid_value", "type"),
        ('{"type": "response.create"}', "invalid_value", "type"),
        (append("***not base64***"), "invalid_value", "audio"),
        (append(12), "missing_required_parameter", "audio"),
        (b"\x00\x01binary", "invalid_value", None),
        ('{"type": "input_audio_buffer.commit"}', "input_audio_buffer_commit_empty", None),
        (json.dumps({"type": "transcription_session.update", "session": {"input_audio_format": "mp3"}}),
         "invalid_value", "session.input_audio_format"),
        (json.dumps({"type": "transcription_session.update", "session": {"turn_detection": {"threshold": 7}}}),
         "invalid_value", "session.turn_detection.threshold"),
        (json.dumps({"type": "transcription_session.update", "session": {"turn_detection": {"type": "magic"}}}),
         "invalid_value", "session.turn_detection.type"),
        (json.dumps({"type": "transcription_session.update",
                     "session": {"input_audio_transcription": {"model": "no-such-model"}}}),
         "model_not_found", "session.input_audio_transcription.model"),
        (json.dumps({"type": "session.update", "session": {"type": "realtime"}}), "invalid_value", "session.type"),
        (json.dumps({"type": "session.update", "session": {"type": "transcription", "include": ["item.nope"]}}),
         "invalid_value", "session.include"),
        (json.dumps({"type": "transcription_session.update", "session": {"include": "logprobs"}}),
         "invalid_type", "session.include"),
        (json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/opus"}}}}}), "invalid_value", "session.audio.input.format.type"),
    ]  # fmt: skip
    events: list[dict[str, Any]] = []
    async with connect(server.ws_url + PATH) as ws:
        await drain(ws, lambda e: e["type"] == "session.created", events)
        for message, code, param in bad:
            await ws.send(message)
            await drain(ws, lambda e: True, events)
            error = events[-1]
            assert error["type"] == "error", (message, error)
            assert set(error["error"]) >= {"type", "code", "message", "param"}
            assert (error["error"]["code"], error["error"]["param"]) == (code, param), (message, error)
            assert error["error"]["type"] == "invalid_request_error" and error["error"]["message"]
        # the failed updates changed nothing; a good one still works, and so does transcription
        await ws.send(json.dumps({"type": "transcription_session.update", "session": {"turn_detection": None}}))
        await drain(ws, lambda e: True, events)
        session = events[-1]["session"]
        assert events[-1]["type"] == "transcription_session.updated"
        assert session["input_audio_format"] == "pcm16" and session["turn_detection"] is None
        for chunk in pcm24_chunks(("en_pocketsphinx_goforward",), gap_s=0.3):
            await ws.send(append(chunk))
        await ws.send('{"type": "input_audio_buffer.commit"}')
        await drain(ws, completed_count(1, events), events)
    assert "forward" in of_type(events, "transcription.completed")[0]["transcript"].split()


async def test_a_language_the_model_lacks_is_reported_once_until_reconfigured(server: ServerThread) -> None:
    events: list[dict[str, Any]] = []
    goforward = pcm24_chunks(("en_pocketsphinx_goforward",), gap_s=0.3)
    async with connect(server.ws_url + PATH) as ws:
        await drain(ws, lambda e: e["type"] == "session.created", events)
        update = {"type": "transcription_session.update", "session": {"turn_detection": None,
                  "input_audio_transcription": {"language": "de"}}}  # fmt: skip
        await ws.send(json.dumps(update))
        await drain(ws, lambda e: e["type"] == "transcription_session.updated", events)
        for chunk in goforward[:5]:
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        await ws.send(json.dumps(update | {"session": {"input_audio_transcription": {"language": "en"}}}))
        await drain(ws, lambda e: e["type"] == "transcription_session.updated", events)
        for chunk in goforward:
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        await ws.send('{"type": "input_audio_buffer.commit"}')
        await drain(ws, completed_count(1, events), events)
    errors = of_type(events, "error")
    assert len(errors) == 1 and errors[0]["error"]["code"] == "unsupported_option"  # once, not per append
    assert "'de'" in errors[0]["error"]["message"]
    assert "forward" in of_type(events, "transcription.completed")[0]["transcript"].split()


async def test_unsupported_intent_and_model_are_refused(server: ServerThread) -> None:
    for query, param in (("?intent=conversation", "intent"), ("?intent=transcription&model=nope", "model")):
        async with connect(server.ws_url + "/v1/realtime" + query) as ws:
            event = json.loads(await ws.recv())
            assert event["type"] == "error" and event["error"]["param"] == param
            await ws.wait_closed()
            assert ws.close_code == 1008


# -- a client vanishing leaves nothing behind -------------------------------------------------------


async def until_quiet(server: ServerThread, baseline: int) -> list[str]:
    """Wait (bounded) until no realtime connection and no live-session task is left; returns the tasks."""
    app = server.config.app

    def quiet() -> bool:
        tasks = server_tasks(server)
        own = [t for t in tasks if t.startswith(("realtime-", "live-"))]
        return not connections(app.state, "realtime") and not own and len(tasks) <= baseline

    await until(quiet, what=f"no realtime connection or task left: {server_tasks(server)}")
    return server_tasks(server)


async def test_client_vanishing_mid_utterance_leaks_no_tasks(server: ServerThread) -> None:
    chunks = pcm24_chunks(("en_fw_jfk",), gap_s=0)
    baseline = len(server_tasks(server))

    async def vanish() -> None:
        ws = await connect(server.ws_url + PATH)
        assert json.loads(await ws.recv())["type"] == "session.created"
        for chunk in chunks[: len(chunks) // 2]:  # mid-sentence
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        await asyncio.sleep(0.5)
        running = server_tasks(server)
        assert any(t.startswith("realtime-forward") for t in running), running  # the session was live
        ws.transport.abort()  # no close handshake: the client just disappears

    await asyncio.gather(vanish(), vanish())
    tasks = await until_quiet(server, baseline)
    assert not [t for t in tasks if t.startswith(("realtime-", "live-"))], tasks
    assert len(tasks) <= baseline, tasks
    assert not connections(server.config.app.state, "realtime")
    # and the server still serves
    events: list[dict[str, Any]] = []
    async with connect(server.ws_url + PATH) as ws:
        await drain(ws, lambda e: e["type"] == "session.created", events)


# -- auth -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    settings = Settings.load(model_dir=Path(tmp_path_factory.mktemp("models")), api_key="sekret")
    with running_server(settings) as srv:
        yield srv


async def test_api_key_by_header_or_browser_subprotocol(keyed_server: ServerThread) -> None:
    # the SDK sends Authorization: Bearer
    client = AsyncOpenAI(base_url=keyed_server.url + "/v1", api_key="sekret")
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert (await conn.recv()).type == "session.created"
    # a browser offers ["realtime", "openai-insecure-api-key.<key>", "openai-beta.realtime-v1"]
    protocols = ["realtime", "openai-insecure-api-key.sekret", "openai-beta.realtime-v1"]
    async with connect(keyed_server.ws_url + PATH, subprotocols=protocols) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "realtime"
        assert json.loads(await ws.recv())["type"] == "transcription_session.created"
    # a wrong key: an error event, then the connection closes (policy violation)
    protocols = ["realtime", "openai-insecure-api-key.wrong"]
    async with connect(keyed_server.ws_url + PATH, subprotocols=protocols) as ws:  # type: ignore[arg-type]
        event = json.loads(await ws.recv())
        assert event["type"] == "error" and event["error"]["code"] == "invalid_api_key"
        await ws.wait_closed()
        assert ws.close_code == 1008
