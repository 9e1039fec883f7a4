"""The OpenAI-compatible REST API driven by the official ``openai`` SDK against a real server."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest
from openai import OpenAI

from hearline.audio.decode import decode_audio
from hearline.config import Settings
from hearline.engines.base import TranscribeOptions
from hearline.models.resolve import load_engine, resolve_model
from tests.helpers.corpus import clip, english_clips, wer
from tests.helpers.server import ServerThread

GO_FORWARD = clip("en_pocketsphinx_goforward")
SRT_BLOCK = re.compile(r"(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+?)\n(?:\n|$)")

# Corpus WER of the bundled PocketSphinx model over tests.helpers.english_clips() through REST, measured
# 2026-11-21 with `python bench/rest.py --repeat 1`, which prints it for REST and for direct engine calls:
# both 0.4177 over 20 clips, 175.5 s of audio (identical text 20/20). The bound leaves a small margin.
MEASURED_CORPUS_WER = 0.4177
WER_BOUND = MEASURED_CORPUS_WER + 0.02


@pytest.fixture(scope="module")
def client(server: ServerThread) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def _file() -> tuple[str, bytes]:
    return (GO_FORWARD.path.name, GO_FORWARD.path.read_bytes())


def test_health(server: ServerThread) -> None:
    response = httpx.get(server.url + "/health", timeout=60)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_json(client: OpenAI) -> None:
    result = client.audio.transcriptions.create(model="whisper-1", file=_file())
    assert result.text == "go forward ten meters"
    assert result.usage is not None and result.usage.type == "duration" and result.usage.seconds == 3


def test_model_names_route_to_the_bundled_model(client: OpenAI) -> None:
    for model in ("pocketsphinx", "default", "gpt-4o-transcribe"):
        assert client.audio.transcriptions.create(model=model, file=_file()).text == "go forward ten meters"


def test_text_srt_vtt_bodies_and_content_types(client: OpenAI) -> None:
    text = client.audio.transcriptions.create(model="whisper-1", file=_file(), response_format="text")
    assert text.strip() == "go forward ten meters"

    raw = client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=_file(), response_format="srt")
    assert raw.headers["content-type"].startswith("application/x-subrip")
    blocks = SRT_BLOCK.findall(raw.text)
    assert len(blocks) == 1
    index, start, end, cue = blocks[0]
    assert index == "1" and cue == "go forward ten meters"
    assert start < end <= "00:00:02,786"

    raw = client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=_file(), response_format="vtt")
    assert raw.headers["content-type"].startswith("text/vtt")
    lines = raw.text.splitlines()
    assert lines[0] == "WEBVTT"
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}", lines[2])
    assert lines[3] == "go forward ten meters"

    raw = client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=_file(), response_format="text")
    assert raw.headers["content-type"].startswith("text/plain")


def test_verbose_json_segments_and_words(client: OpenAI) -> None:
    result = client.audio.transcriptions.create(
        model="whisper-1",
        file=_file(),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    body = result.model_dump()
    assert body["task"] == "transcribe"
    assert body["language"] == "english"
    assert body["duration"] == pytest.approx(GO_FORWARD.duration, abs=0.01)
    assert body["text"] == "go forward ten meters"
    assert len(body["segments"]) == 1
    segment = body["segments"][0]
    assert set(segment) >= {
        "id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob", "compression_ratio",
        "no_speech_prob",
    }  # fmt: skip
    assert segment["text"] == " go forward ten meters"
    assert 0.0 <= segment["start"] < segment["end"] <= GO_FORWARD.duration
    assert [w["word"] for w in body["words"]] == ["go", "forward", "ten", "meters"]
    starts = [w["start"] for w in body["words"]]
    assert starts == sorted(starts)
    assert body["usage"] == {"type": "duration", "seconds": 3}

    plain = client.audio.transcriptions.create(model="whisper-1", file=_file(), response_format="verbose_json")
    assert plain.words is None  # words only when asked
    assert plain.segments and plain.segments[0].text == " go forward ten meters"


def test_form_spellings(server: ServerThread) -> None:
    """Bare list fields, repeated fields, booleans as strings: what non-SDK clients send."""
    url = server.url + "/v1/audio/transcriptions"
    data = {"model": "whisper-1", "response_format": "verbose_json", "timestamp_granularities": "word"}
    response = httpx.post(url, data=data, files={"file": _file()}, timeout=60)
    assert response.status_code == 200, response.text
    assert len(response.json()["words"]) == 4

    data = {"response_format": "verbose_json", "timestamp_granularities[]": ["segment", "word"], "stream": "false"}
    response = httpx.post(url, data=data, files={"file": _file()}, timeout=60)
    assert response.status_code == 200, response.text
    assert "words" in response.json()

    data = {"include[]": "logprobs", "chunking_strategy[type]": "server_vad", "vad_filter": "True"}
    response = httpx.post(url, data=data, files={"file": _file()}, timeout=60)
    assert response.status_code == 200, response.text
    logprobs = response.json()["logprobs"]
    assert [entry["token"] for entry in logprobs] == ["go", "forward", "ten", "meters"]
    assert all(entry["logprob"] <= 0.0 for entry in logprobs)

    response = httpx.post(
        url, data={"chunking_strategy": '{"type": "server_vad"}'}, files={"file": _file()}, timeout=60
    )
    assert response.status_code == 200
    response = httpx.post(url, data={"stream": "sometimes"}, files={"file": _file()}, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stream"


def test_sdk_extras(client: OpenAI) -> None:
    result = client.audio.transcriptions.create(
        model="whisper-1",
        file=_file(),
        language="en",
        prompt="directions",
        temperature=0.2,
        chunking_strategy={"type": "server_vad", "threshold": 0.5},
        include=["logprobs"],
        extra_body={"hotwords": "meters", "vad_filter": "false"},
    )
    assert result.text == "go forward ten meters"
    assert result.logprobs is not None and len(result.logprobs) == 4
    auto = client.audio.transcriptions.create(model="whisper-1", file=_file(), chunking_strategy="auto")
    assert auto.text == "go forward ten meters"


def test_streaming_with_sdk(client: OpenAI) -> None:
    long_clip = clip("en_librivox_sense_and_sensibility_01_0870")
    upload = (long_clip.path.name, long_clip.path.read_bytes())
    stream = client.audio.transcriptions.create(model="whisper-1", file=upload, stream=True)
    events = list(stream)
    assert [e.type for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    assert events[-1].type == "transcript.text.done"
    deltas = "".join(e.delta for e in events[:-1])
    assert deltas.strip() == events[-1].text
    assert events[-1].text  # real speech gave text
    assert wer(long_clip.text or "", events[-1].text) < 0.8  # it is the clip's speech, not noise


def test_streaming_wire_format(server: ServerThread) -> None:
    with httpx.stream(
        "POST", server.url + "/v1/audio/transcriptions", data={"stream": "true"}, files={"file": _file()}, timeout=60
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    payloads = [json.loads(line[6:]) for line in lines[:-1]]
    assert payloads[0] == {"type": "transcript.text.delta", "delta": " go forward ten meters"}
    assert payloads[-1]["type"] == "transcript.text.done"
    assert payloads[-1]["text"] == "go forward ten meters"


def test_translation_on_english_only_model_is_a_clear_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.translations.create(model="whisper-1", file=_file())
    assert info.value.status_code == 400
    assert "cannot translate" in info.value.body["message"]
    assert client.audio.transcriptions.create(model="whisper-1", file=_file()).text == "go forward ten meters"


def test_unsupported_language_for_model(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(model="whisper-1", file=_file(), language="fr")
    assert "does not support language" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(model="whisper-1", file=_file(), language="klingon")
    assert info.value.body["param"] == "language"


def test_accuracy_rest_equals_engine(server: ServerThread) -> None:
    """Every English reference clip through REST: same text as the engine called directly, WER bounded.

    The engine decodes each utterance from a clean front-end state, so results depend only on the audio
    and the shared server (which has served other tests) must agree with a fresh engine exactly.
    """
    clips = english_clips()
    assert len(clips) >= 15
    client = OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    rest_texts = [client.audio.transcriptions.create(model="whisper-1", file=c.path).text for c in clips]
    settings = Settings.load()
    engine = load_engine(resolve_model(None, settings), settings)
    try:
        own_texts = [engine.transcribe(decode_audio(c.path), TranscribeOptions()).text for c in clips]
    finally:
        engine.close()
    mismatches = [(c.id, r, d) for c, r, d in zip(clips, rest_texts, own_texts, strict=True) if r != d]
    assert not mismatches
    corpus_wer = wer([c.text or "" for c in clips], rest_texts)
    assert corpus_wer < WER_BOUND, corpus_wer
