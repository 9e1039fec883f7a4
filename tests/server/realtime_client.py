"""What the Realtime tests share: the corpus audio as Realtime sends it, event filters and checks."""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

import numpy as np
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from hearline.audio.decode import decode_audio, float_to_pcm16, resample
from tests.helpers.corpus import clip

PATH = "/v1/realtime?intent=transcription"
LOGPROBS = "item.input_audio_transcription.logprobs"
GA_SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)  # the SDK's validating GA event union
TWO_CLIPS = ("en_ljspeech_LJ001-0001", "en_ljspeech_LJ001-0004")
MANUAL_CLIP = "en_ljspeech_LJ001-0004"


# -- audio helpers ----------------------------------------------------------------------------------


def speech(clip_ids: tuple[str, ...], gap_s: float = 1.0, rate: int = 24000) -> np.ndarray:
    """The clips at ``rate``, each followed by ``gap_s`` of silence (the VAD's endpoint)."""
    parts = []
    for clip_id in clip_ids:
        parts += [decode_audio(clip(clip_id).path), np.zeros(int(16000 * gap_s), dtype=np.float32)]
    return resample(np.concatenate(parts), 16000, rate)


def b64_chunks(data: bytes, chunk_bytes: int) -> list[str]:
    return [base64.b64encode(data[i : i + chunk_bytes]).decode() for i in range(0, len(data), chunk_bytes)]


def pcm24_chunks(clip_ids: tuple[str, ...], gap_s: float = 1.0) -> list[str]:
    """100 ms appends of 24 kHz pcm16; odd byte counts on purpose (samples split across appends)."""
    return b64_chunks(float_to_pcm16(speech(clip_ids, gap_s)), 4801)


def g711(clip_id: str, codec: str) -> bytes:
    """The clip as raw G.711 (``mulaw`` or ``alaw``) at 8 kHz, encoded by ffmpeg."""
    return subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(clip(clip_id).path),
         "-ac", "1", "-ar", "8000", "-f", codec, "-"],
        check=True, capture_output=True, timeout=60,
    ).stdout  # fmt: skip


def reference(*clip_ids: str) -> str:
    return " ".join(clip(c).text or "" for c in clip_ids)


def of_type(events: list[dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"].endswith(suffix)]


def check_item_sequences(events: list[dict[str, Any]], vad: bool) -> list[str]:
    """Per item: speech_started < speech_stopped < committed < completed, ids consistent; returns the items."""
    assert len({e["event_id"] for e in events}) == len(events)  # every server event has a unique id
    completed = [e["item_id"] for e in of_type(events, "transcription.completed")]
    assert len(completed) == len(set(completed))
    index = {id(e): i for i, e in enumerate(events)}
    previous = None
    for item in completed:
        mine = [e for e in events if e.get("item_id") == item]
        kinds = [e["type"].rsplit(".", 1)[-1] for e in mine]
        expected = ["speech_started", "speech_stopped", "committed", "completed"] if vad else ["committed", "completed"]
        assert [k for k in kinds if k != "delta"] == expected, kinds
        committed = next(e for e in mine if e["type"] == "input_audio_buffer.committed")
        assert committed["previous_item_id"] == previous
        previous = item
        for e in mine:
            if e["type"].endswith("delta"):
                assert e["content_index"] == 0 and e["delta"]
                assert index[id(e)] < index[id(mine[-1])]
        # OpenAI's contract: an item's deltas concatenate exactly to its completed transcript
        done = next(e for e in mine if e["type"].endswith("transcription.completed"))
        assert "".join(e["delta"] for e in mine if e["type"].endswith("delta")) == done["transcript"]
        if vad:
            started, stopped = mine[0], next(e for e in mine if e["type"].endswith("speech_stopped"))
            assert 0 <= started["audio_start_ms"] < stopped["audio_end_ms"]
    return completed


async def drain(ws: Any, until: Any, events: list[dict[str, Any]]) -> None:
    """Read ``websockets`` messages into ``events`` until ``until(event)`` is true."""
    while True:
        event = json.loads(await ws.recv())
        events.append(event)
        if until(event):
            return


def completed_count(n: int, events: list[dict[str, Any]]) -> Any:
    return lambda _: len(of_type(events, "transcription.completed")) >= n


def item_events(events: list[dict[str, Any]], item: str) -> list[dict[str, Any]]:
    """The events about one item: those naming it by ``item_id`` and the item events carrying it."""
    return [e for e in events if e.get("item_id") == item or e.get("item", {}).get("id") == item]


def check_logprobs(logprobs: list[dict[str, Any]], text: str) -> None:
    """One ``{token, logprob, bytes}`` per word of ``text`` (a leading word may be cut by the text)."""
    tokens = [entry["token"] for entry in logprobs]
    assert " ".join(t.strip() for t in tokens).endswith(text.strip()), (tokens, text)
    assert len(tokens) == len(text.split()), (tokens, text)
    for entry in logprobs:
        assert entry["logprob"] <= 0.0 and entry["bytes"] == list(entry["token"].encode("utf-8"))
