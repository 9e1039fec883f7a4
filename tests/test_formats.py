"""The response renderers: OpenAI's shapes and subtitle syntax, on hand-built transcripts."""

from __future__ import annotations

import json
import re

import pytest

from hearline import formats
from hearline.engines.base import Segment, Transcript, Word


def _transcript() -> Transcript:
    first = Segment(
        id=0,
        start=0.0,
        end=3.32,
        text=" The beach",
        words=[Word("The", 0.0, 0.24, 0.9), Word("beach", 0.3, 0.8, 0.5)],
        avg_logprob=-0.286,
        no_speech_prob=0.0099,
        compression_ratio=1.236,
        temperature=0.0,
        tokens=[50364, 440],
    )
    second = Segment(id=1, start=3661.5, end=3662.0049, text=" was quiet", words=[Word("was", 3661.5, 3661.7)])
    return Transcript("The beach was quiet", [first, second], "en", 0.98, 3662.5)


def test_json_has_text_and_duration_usage() -> None:
    body = formats.render(_transcript(), "json")
    assert body == {"text": "The beach was quiet", "usage": {"type": "duration", "seconds": 3663}}
    assert "logprobs" not in body


def test_json_logprobs_per_word() -> None:
    body = formats.to_json(_transcript(), logprobs=True)
    tokens = body["logprobs"]
    assert [t["token"] for t in tokens] == ["The", "beach", "was"]
    assert tokens[0]["logprob"] == pytest.approx(-0.10536, abs=1e-4)
    assert tokens[1]["bytes"] == list(b"beach")
    assert tokens[2]["logprob"] == 0.0  # engine gave no probability


def test_verbose_json_matches_protocol_shape() -> None:
    body = formats.to_verbose_json(_transcript(), words=True)
    assert list(body) == ["task", "language", "duration", "text", "segments", "words", "usage"]
    assert body["task"] == "transcribe"
    assert body["language"] == "english"
    assert body["duration"] == 3662.5
    seg = body["segments"][0]
    assert seg == {
        "id": 0,
        "seek": 0,
        "start": 0.0,
        "end": 3.32,
        "text": " The beach",
        "tokens": [50364, 440],
        "temperature": 0.0,
        "avg_logprob": -0.286,
        "compression_ratio": 1.236,
        "no_speech_prob": 0.0099,
    }
    # missing engine numbers become neutral numbers, never null (typed clients need floats)
    filled = body["segments"][1]
    assert filled["avg_logprob"] == 0.0 and filled["no_speech_prob"] == 0.0 and filled["tokens"] == []
    assert filled["compression_ratio"] > 0
    assert filled["end"] == 3662.005
    assert body["words"][0] == {"word": "The", "start": 0.0, "end": 0.24}
    json.dumps(body)  # serialisable as is


def test_verbose_json_without_words_and_translation_language() -> None:
    body = formats.to_verbose_json(_transcript(), task="translate")
    assert "words" not in body
    assert body["language"] == "english" and body["task"] == "translate"
    german = Transcript("hallo", [], "de", 0.9, 1.0)
    assert formats.to_verbose_json(german)["language"] == "german"


def test_srt_blocks_and_clock() -> None:
    srt = formats.render(_transcript(), "srt")
    assert srt == ("1\n00:00:00,000 --> 00:00:03,320\nThe beach\n\n2\n01:01:01,500 --> 01:01:02,005\nwas quiet\n")
    pattern = re.compile(r"(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+)\n")
    assert len(pattern.findall(srt)) == 2


def test_vtt_header_and_dot_clock() -> None:
    vtt = formats.render(_transcript(), "vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:03.320\nThe beach\n\n")
    assert "01:01:01.500 --> 01:01:02.005\nwas quiet\n" in vtt


def test_text_and_empty_transcript() -> None:
    assert formats.render(_transcript(), "text") == "The beach was quiet\n"
    empty = Transcript("", [Segment(0, 0.0, 1.0, " ")], None, None, 0.4)
    assert formats.render(empty, "text") == ""
    assert formats.render(empty, "srt") == ""  # blank segments are not cues
    assert formats.render(empty, "vtt") == "WEBVTT\n\n"
    assert formats.to_verbose_json(empty)["language"] == "unknown"
    assert formats.to_json(empty)["usage"]["seconds"] == 1


def test_unknown_format_and_media_types() -> None:
    with pytest.raises(ValueError, match="unknown response_format"):
        formats.render(_transcript(), "xml")
    assert formats.MEDIA_TYPES["srt"].startswith("application/x-subrip")
    assert formats.MEDIA_TYPES["vtt"].startswith("text/vtt")
    assert formats.MEDIA_TYPES["text"].startswith("text/plain")
    assert set(formats.MEDIA_TYPES) == set(formats.RESPONSE_FORMATS)


def test_compression_ratio_detects_repetition() -> None:
    assert formats.compression_ratio("la " * 200) > 10
    assert formats.compression_ratio("") == 0.0
