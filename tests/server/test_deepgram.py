"""The Deepgram door with the official ``deepgram-sdk`` pointed at a real server: live and pre-recorded."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment

from hearline.audio.decode import decode_audio, float_to_pcm16
from hearline.config import Settings
from tests.helpers.corpus import clip, normalize, wer
from tests.helpers.server import ServerThread, running_server

CLIP = "en_fw_jfk"
TIMEOUT = 240


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """PocketSphinx behind an API key (Deepgram clients always send one)."""
    settings = Settings.load(model_dir=tmp_path_factory.mktemp("models"), model="pocketsphinx", api_key="sekrit")
    with running_server(settings) as srv:
        yield srv


def client(server: ServerThread, key: str = "sekrit") -> AsyncDeepgramClient:
    ws = server.ws_url
    env = DeepgramClientEnvironment(base=server.url, production=ws, agent=ws, agent_rest=server.url)
    return AsyncDeepgramClient(api_key=key, environment=env)


def pcm16(clip_id: str) -> bytes:
    return float_to_pcm16(decode_audio(clip(clip_id).path))


def ffmpeg(clip_id: str, *args: str) -> bytes:
    """The clip converted by ffmpeg (telephony G.711, Ogg/Opus, WAV) to stdout."""
    command = ["ffmpeg", "-loglevel", "error", "-i", str(clip(clip_id).path), *args, "-"]
    return subprocess.run(command, capture_output=True, check=True).stdout


async def stream(
    server: ServerThread,
    audio: bytes,
    chunk: int = 3200,
    pace: float = 0.01,
    finalize_at: int | None = None,
    key: str = "sekrit",
    **params: Any,
) -> list[Any]:
    """Send ``audio`` in ``chunk``-byte messages, optionally a Finalize after ``finalize_at`` bytes, then
    CloseStream; every message the SDK parsed, up to the server's close."""
    received: list[Any] = []
    async with client(server, key).listen.v1.connect(model="nova-3", **params) as sock:

        async def send() -> None:
            for offset in range(0, len(audio), chunk):
                await sock.send_media(audio[offset : offset + chunk])
                if finalize_at is not None and offset <= finalize_at < offset + chunk:
                    await sock.send_finalize()
                await asyncio.sleep(pace)
            await sock.send_close_stream()

        sender = asyncio.create_task(send())
        async with asyncio.timeout(TIMEOUT):
            async for message in sock:
                received.append(message)
        await sender
    return received


def kinds(messages: list[Any]) -> list[str]:
    return [m.type for m in messages]


def finals(messages: list[Any]) -> list[Any]:
    return [m for m in messages if m.type == "Results" and m.is_final]


def final_text(messages: list[Any]) -> str:
    return " ".join(m.channel.alternatives[0].transcript for m in finals(messages)).strip()


async def test_live_interim_results_vad_events_and_metadata(keyed_server: ServerThread) -> None:
    messages = await stream(
        keyed_server, pcm16(CLIP), pace=0.05, encoding="linear16", sample_rate="16000",
        interim_results="true", vad_events="true", utterance_end_ms="1000",
    )  # fmt: skip
    types = kinds(messages)
    assert types[-1] == "Metadata" and types.count("Metadata") == 1
    assert "SpeechStarted" in types and "UtteranceEnd" in types
    interim = [m for m in messages if m.type == "Results" and not m.is_final]
    assert interim, types
    assert all(m.speech_final for m in finals(messages))
    text = final_text(messages)
    assert wer(clip(CLIP).text, text) < 0.4, text  # measured: 0.227 (PocketSphinx, linear16 16 kHz)
    words = [w for m in finals(messages) for w in m.channel.alternatives[0].words]
    assert words and all(0 <= w.start <= w.end <= 11.5 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)  # the audio's clock, not per utterance
    metadata = messages[-1]
    assert abs(metadata.duration - len(pcm16(CLIP)) / 32000) < 0.05 and metadata.channels == 1
    assert metadata.request_id == finals(messages)[0].metadata.request_id


@pytest.mark.parametrize(
    ("container", "args", "params"),
    [
        ("wav", ("-ar", "44100", "-ac", "2", "-f", "wav"), {}),
        ("ogg-opus", ("-c:a", "libopus", "-b:a", "32k", "-f", "ogg"), {"encoding": "opus"}),
        ("webm", ("-c:a", "libopus", "-f", "webm"), {}),
    ],
)
async def test_containers_recognised_from_their_bytes(
    keyed_server: ServerThread, container: str, args: tuple[str, ...], params: dict[str, str]
) -> None:
    messages = await stream(keyed_server, ffmpeg(CLIP, *args), chunk=4001, **params)
    assert kinds(messages)[-1] == "Metadata", kinds(messages)
    assert not [m for m in messages if m.type == "Error"]
    text = final_text(messages)
    assert wer(clip(CLIP).text, text) < 0.4, (container, text)  # measured: wav 0.227, ogg-opus 0.273, webm 0.227


async def test_prerecorded_body_with_utterances(keyed_server: ServerThread) -> None:
    media = client(keyed_server).listen.v1.media
    response = await media.transcribe_file(
        request=clip(CLIP).path.read_bytes(), model="nova-3", punctuate=True, utterances=True
    )
    alt = response.results.channels[0].alternatives[0]
    assert wer(clip(CLIP).text, alt.transcript) < 0.35, alt.transcript  # measured: 0.182 (PocketSphinx)
    assert alt.words and alt.words[-1].end <= response.metadata.duration + 0.05
    assert len(response.results.utterances) >= 2
    assert response.metadata.model_info[response.metadata.models[0]]["name"] == "pocketsphinx"


def test_prerecorded_refusals_in_deepgram_shape(keyed_server: ServerThread) -> None:
    url = keyed_server.url + "/v1/listen"
    auth = {"Authorization": "Token sekrit"}
    by_url = httpx.post(url, json={"url": "https://example.com/a.wav"}, headers=auth, timeout=60)
    assert by_url.status_code == 400 and "URL" in by_url.json()["err_msg"] and by_url.json()["err_code"]
    corrupt = httpx.post(url, content=b"\x00garbage" * 500, headers=auth, timeout=60)
    assert corrupt.status_code == 400 and "decode" in corrupt.json()["err_msg"]
    assert httpx.post(url, content=b"", headers=auth, timeout=60).status_code == 400
    bad_param = httpx.post(url + "?diarize=true", content=b"x", headers=auth, timeout=60)
    assert bad_param.status_code == 400 and "diarize" in bad_param.json()["err_msg"]
    assert httpx.post(url, content=b"x", headers={"Authorization": "Token nope"}, timeout=60).status_code == 401
    raw = httpx.post(
        url + "?encoding=linear16&sample_rate=16000", content=pcm16("en_pocketsphinx_goforward"), headers=auth,
        timeout=120,
    )  # fmt: skip
    assert raw.status_code == 200 and "forward" in raw.json()["results"]["channels"][0]["alternatives"][0]["transcript"]


async def test_handshake_refusals_are_http_errors_the_sdk_raises(keyed_server: ServerThread) -> None:
    for key, params, status in [
        ("wrong", {}, 401),
        ("sekrit", {"model": "no-such-model"}, 400),
        ("sekrit", {"encoding": "linear16"}, 400),  # no sample_rate
        ("sekrit", {"encoding": "amr-wb", "sample_rate": "16000"}, 400),
        ("sekrit", {"language": "xx-nope"}, 400),
    ]:
        sdk = client(keyed_server, key).listen.v1
        with pytest.raises(ApiError) as refused:
            async with sdk.connect(**{"model": "nova-3", **params}):
                pass
        assert refused.value.status_code == status, (params, refused.value)
    # The server keeps serving.
    messages = await stream(keyed_server, pcm16("en_pocketsphinx_goforward"), encoding="linear16", sample_rate="16000")
    assert "forward" in final_text(messages)


async def test_bad_input_is_an_error_message_and_the_stream_goes_on(keyed_server: ServerThread) -> None:
    url = keyed_server.ws_url + "/v1/listen?encoding=linear16&sample_rate=16000"
    async with websockets.connect(url, additional_headers={"Authorization": "Token sekrit"}) as ws:
        await ws.send("this is not json")
        error = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert error["type"] == "Error" and error["variant"] == "SchemaError" and error["message"] == "this is not json"
        await ws.send(json.dumps({"type": "Shout"}))
        assert "Shout" in json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["description"]
        await ws.send(json.dumps({"type": "KeepAlive"}))
        await ws.send(pcm16("en_pocketsphinx_goforward")[:-1])  # an odd byte count: carried, not lost
        await ws.send(json.dumps({"type": "CloseStream"}))
        replies = [json.loads(m) async for m in ws]
    assert replies[-1]["type"] == "Metadata"
    assert "forward" in " ".join(
        r["channel"]["alternatives"][0]["transcript"] for r in replies if r["type"] == "Results"
    )
    # Garbage where a container was expected: one DecodeError, then the stream still closes cleanly.
    async with websockets.connect(
        keyed_server.ws_url + "/v1/listen?encoding=opus", subprotocols=["token", "sekrit"]
    ) as ws:  # fmt: skip
        assert ws.subprotocol == "token"  # Deepgram's browser form of the key
        await ws.send(b"\x01\x02garbage" * 1000)
        error = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert error["type"] == "Error" and "decode" in error["description"]
        await ws.send(b"")  # the older API's end of stream
        assert [json.loads(m)["type"] async for m in ws] == ["Metadata"]


async def test_client_that_vanishes_mid_utterance_leaves_nothing_open(keyed_server: ServerThread) -> None:
    url = keyed_server.ws_url + "/v1/listen?encoding=linear16&sample_rate=16000"
    for _ in range(3):
        ws = await websockets.connect(url, additional_headers={"Authorization": "Token sekrit"})
        await ws.send(pcm16(CLIP)[: 16000 * 2 * 3])
        ws.transport.abort()  # no close frame
    messages = await stream(keyed_server, pcm16("en_pocketsphinx_goforward"), encoding="linear16", sample_rate="16000")
    assert "forward" in final_text(messages)


async def test_whisper_telephony_mulaw_8k(whisper_server: ServerThread) -> None:
    """Whisper base (the default) on 8 kHz mu-law as Twilio and Pipecat send it."""
    audio = ffmpeg(CLIP, "-ar", "8000", "-ac", "1", "-f", "mulaw")
    messages = await stream(whisper_server, audio, chunk=1600, pace=0.05, encoding="mulaw", sample_rate="8000")
    text = final_text(messages)
    assert wer(clip(CLIP).text, text) < 0.2, text  # measured: 0.000 (Whisper base, live, 8 kHz mu-law)


async def test_whisper_finalize_and_keywords(whisper_server: ServerThread) -> None:
    """Whisper base at twice real time; a Finalize in the clip's first pause is answered with from_finalize."""
    messages = await stream(
        whisper_server, pcm16(CLIP), pace=0.05, finalize_at=int(2.6 * 32000),
        encoding="linear16", sample_rate="16000", punctuate="true", interim_results="true",
        keywords=["Americans:2"],
    )  # fmt: skip
    done = finals(messages)
    flags = [(m.from_finalize, m.channel.alternatives[0].transcript) for m in done]
    # the first utterance was still open at 2.6 s (0.4 s into its pause): Finalize closed it, nothing else
    assert flags[0][0] and flags[0][1] and not any(flag for flag, _ in flags[1:]), flags
    text = final_text(messages)
    assert wer(clip(CLIP).text, text) < 0.2, text  # measured: 0.000 (Whisper base)
    assert any(ch in text for ch in ",.") and text[0].isupper()  # punctuate=true keeps Whisper's own text
    # interims Whisper had time for carry their words (LocalAgreement's timed hypothesis) on the audio's clock,
    # as Deepgram's do (at twice real time a busy machine may skip them all: tests/live/test_local_agreement.py
    # checks the words themselves)
    worded = [m for m in messages if m.type == "Results" and not m.is_final and m.channel.alternatives[0].words]
    duration = len(pcm16(CLIP)) / 32000
    for message in worded:
        alt = message.channel.alternatives[0]
        assert all(0 <= w.start <= w.end <= duration + 0.5 for w in alt.words), alt.words
        assert [w.start for w in alt.words] == sorted(w.start for w in alt.words)
        assert normalize(" ".join(w.word for w in alt.words)) == normalize(alt.transcript), alt
