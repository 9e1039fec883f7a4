"""Vosk server protocol: ``/vosk`` on the main port and the ``--vosk-port`` app on any path.

The client is written the way vosk-server's own ``test.py`` is: send a chunk, read exactly one reply
(a partial or a result), repeat; then ``{"eof" : 1}`` and read the last result.  Real speech from the
shared corpus as s16le at 16 kHz (and 8 kHz via ``config.sample_rate``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect

from hearline.audio.decode import decode_audio, float_to_pcm16, resample
from hearline.server import vosk_ws
from hearline.server.live_socket import connections
from tests.helpers.corpus import clip, wer
from tests.helpers.leaks import server_tasks
from tests.helpers.polling import until
from tests.helpers.server import ServerThread
from tests.helpers.subtitles import parse_srt

TWO_CLIPS = ("en_ljspeech_LJ001-0001", "en_ljspeech_LJ001-0004")
EOF = '{"eof" : 1}'  # byte-for-byte what vosk-server's clients send


def pcm(clip_ids: tuple[str, ...], rate: int = 16000, gap_s: float = 1.0) -> bytes:
    parts = []
    for clip_id in clip_ids:
        parts += [decode_audio(clip(clip_id).path), np.zeros(int(16000 * gap_s), dtype=np.float32)]
    return float_to_pcm16(resample(np.concatenate(parts), 16000, rate))


def chunks(data: bytes, rate: int, seconds: float = 0.2) -> list[bytes]:
    """Chunks of ``seconds``; odd byte counts on purpose (a sample split across messages)."""
    step = int(rate * 2 * seconds) + 1
    return [data[i : i + step] for i in range(0, len(data), step)]


async def lockstep(url: str, data: list[bytes], config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """vosk-server's test.py: one reply per message; the eof reply, then the server closes."""
    replies: list[dict[str, Any]] = []
    async with connect(url) as ws:
        if config is not None:
            await ws.send(json.dumps({"config": config}))
        for chunk in data:
            await ws.send(chunk)
            replies.append(json.loads(await ws.recv()))
        await ws.send(EOF)
        replies.append(json.loads(await ws.recv()))
        await ws.wait_closed()
        assert ws.close_code == 1000
    return replies


def results(replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in replies if "text" in r]


def full_text(replies: list[dict[str, Any]]) -> str:
    return " ".join(r["text"] for r in results(replies) if r["text"])


async def test_partials_then_results_with_words_at_16k(server: ServerThread) -> None:
    data = pcm(TWO_CLIPS)
    duration = len(data) / 2 / 16000
    replies = await lockstep(
        server.ws_url + "/vosk", chunks(data, 16000), {"sample_rate": 16000, "words": True, "max_alternatives": 0}
    )
    assert all(set(r) in ({"partial"}, {"text", "result"}) for r in replies), replies
    first_result = next(i for i, r in enumerate(replies) if "text" in r)
    assert any(r.get("partial") for r in replies[:first_result])  # text while speaking
    texts = [r for r in results(replies) if r["text"]]
    assert len(texts) >= 2  # one per utterance (the pause between clips is an endpoint)
    last_end = 0.0
    for result in texts:
        words = result["result"]
        assert " ".join(w["word"] for w in words) == result["text"]
        for w in words:
            assert 0.0 <= w["start"] <= w["end"] <= duration
            assert 0.0 <= w["conf"] <= 1.0
        assert words[0]["start"] >= last_end - 0.05  # on the stream's clock, in order
        last_end = words[-1]["end"]
    # the second clip starts after the first (9.7 s) and its 1 s pause
    assert texts[-1]["result"][0]["start"] > 9.5
    reference = " ".join(clip(c).text or "" for c in TWO_CLIPS)
    # measured 0.024 (LiveSession + bundled PocketSphinx)
    assert wer(reference, full_text(replies)) <= 0.15, full_text(replies)


def srt_of(results_with_words: list[dict[str, Any]], words_per_line: int = 7) -> str:
    """What vosk-server's ``test_srt.py`` writes: cues of up to 7 result words, timed by their first and last."""

    def stamp(seconds: float) -> str:
        ms = round(seconds * 1000)
        return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    cues = []
    for result in results_with_words:
        words = result.get("result", [])
        for i in range(0, len(words), words_per_line):
            line = words[i : i + words_per_line]
            text = " ".join(w["word"] for w in line)
            cues.append(f"{len(cues) + 1}\n{stamp(line[0]['start'])} --> {stamp(line[-1]['end'])}\n{text}\n")
    return "\n".join(cues)


async def test_vosk_servers_own_test_client_gets_words_and_fresh_partials(server: ServerThread) -> None:
    """vosk-server's test.py / test_srt.py as published: only ``sample_rate`` configured, 8000-byte chunks sent
    as fast as the replies come (faster than real time), one reply read per chunk, then ``{"eof" : 1}``."""
    data = pcm(TWO_CLIPS)
    replies = await lockstep(server.ws_url + "/vosk", [data[i : i + 8000] for i in range(0, len(data), 8000)],
                             {"sample_rate": 16000})  # fmt: skip
    finals = [(i, r) for i, r in enumerate(replies) if r.get("text")]
    assert len(finals) >= 2
    # words are on by default (VOSK_SHOW_WORDS): the SRT test_srt.py builds from them has every final's words
    cues = parse_srt(srt_of([r for _, r in finals]))
    assert " ".join(text for *_, text in cues) == " ".join(r["text"] for _, r in finals)
    assert all(start <= end for _, start, end, _ in cues)
    # each reply reflects all audio sent so far: the last partial before a final already holds most of it
    for i, final in finals:
        last_partial = next(r["partial"] for r in reversed(replies[:i]) if "partial" in r)
        said, settled = last_partial.split(), final["text"].split()
        assert len(set(said) & set(settled)) >= 0.5 * len(set(settled)), (last_partial, final["text"])
    reference = " ".join(clip(c).text or "" for c in TWO_CLIPS)
    print(f"published-client WER {wer(reference, full_text(replies)):.3f}, {len(replies)} replies, {len(cues)} cues")
    assert wer(reference, full_text(replies)) <= 0.15, full_text(replies)  # measured 0.073


async def test_eof_flushes_the_last_utterance(server: ServerThread) -> None:
    """No trailing silence: the last words arrive only in the eof reply."""
    data = pcm(("en_pocketsphinx_goforward",), gap_s=0)[: int(2.3 * 16000) * 2]  # speech ends at ~2.2 s
    replies = await lockstep(server.ws_url + "/vosk", chunks(data, 16000))
    last = replies[-1]
    assert set(last) == {"text", "result"}  # word results are on by default, as in vosk-server
    assert " ".join(w["word"] for w in last["result"]) == last["text"]
    assert "forward" in last["text"].split(), replies
    assert not any(r.get("text") for r in replies[:-1])
    quiet = await lockstep(server.ws_url + "/vosk", chunks(data, 16000), {"sample_rate": 16000, "words": False})
    assert set(quiet[-1]) == {"text"} and quiet[-1]["text"] == last["text"]  # words: false turns them off


async def test_reset_ends_the_utterance_now(server: ServerThread) -> None:
    data = chunks(pcm(("en_pocketsphinx_goforward", "en_pocketsphinx_goforward"), gap_s=0.2), 16000)
    async with connect(server.ws_url + "/vosk") as ws:
        for chunk in data[:8]:  # 1.6 s: "go forward", mid-utterance
            await ws.send(chunk)
            await ws.recv()
        await ws.send('{"reset" : 1}')
        first = json.loads(await ws.recv())
        rest = []
        for chunk in data[8:]:
            await ws.send(chunk)
            rest.append(json.loads(await ws.recv()))
        await ws.send(EOF)
        rest.append(json.loads(await ws.recv()))
    assert "forward" in first["text"].split(), first  # the reset's own result
    assert "meters" not in first["text"].split(), first  # cut before the end of the clip
    assert "meters" in full_text(rest).split(), rest  # the rest of the stream goes on


@pytest.fixture(scope="module")
def vosk_port(server: ServerThread) -> Iterator[ServerThread]:
    """The ``--vosk-port`` listener: a second server sharing the main app's state (one model pool)."""
    standalone = ServerThread(vosk_ws.standalone_app(server.config.app)).start()
    try:
        yield standalone
    finally:
        standalone.stop()


async def test_standalone_port_any_path_8k(server: ServerThread, vosk_port: ServerThread) -> None:
    data = pcm(("en_pocketsphinx_goforward",), rate=8000, gap_s=1.0)
    replies = await lockstep(vosk_port.ws_url, chunks(data, 8000), {"sample_rate": 8000, "words": True})
    texts = [r for r in results(replies) if r["text"]]
    assert texts, replies
    # 8 kHz is below the bundled wideband model's band (words unreliable): assert the clock, not the words
    words = [w for r in texts for w in r["result"]]
    assert all(0.0 <= w["start"] <= w["end"] <= len(data) / 2 / 8000 for w in words)
    assert words[0]["start"] < 1.0  # seconds at 8 kHz (a 16 kHz mix-up would halve the clock)
    assert words[-1]["end"] > 1.5
    assert server.config.app.state.pool is vosk_port.config.app.state.pool
    # any path, and the alternatives shape
    data = pcm(("en_pocketsphinx_goforward",), gap_s=0)
    replies = await lockstep(vosk_port.ws_url + "/some/path", chunks(data, 16000), {"max_alternatives": 2})
    alternatives = next(r["alternatives"] for r in replies if "alternatives" in r and r["alternatives"][0]["text"])
    # words on by default: each alternative carries its words without conf, as Vosk's alternatives do
    assert len(alternatives) == 1 and set(alternatives[0]) == {"confidence", "result", "text"}
    assert all(set(w) == {"word", "start", "end"} for w in alternatives[0]["result"])
    assert "forward" in alternatives[0]["text"].split()


async def test_bad_messages_get_json_errors_and_the_stream_goes_on(server: ServerThread) -> None:
    data = chunks(pcm(("en_pocketsphinx_goforward",), gap_s=0), 16000)
    async with connect(server.ws_url + "/vosk") as ws:
        for bad in ("{not json", "[1]", '{"hello": 1}', '{"config": {"sample_rate": "fast"}}',
                    '{"config": {"max_alternatives": -1}}', '{"config": {"phrase_list": "one two"}}',
                    '{"config": {"model": "no-such-model"}}'):  # fmt: skip
            await ws.send(bad)
            reply = json.loads(await ws.recv())
            assert set(reply) == {"error"} and reply["error"], (bad, reply)
        await ws.send(json.dumps({"config": {"words": True, "phrase_list": ["go forward", "[unk]"]}}))
        for chunk in data[: len(data) // 2]:
            await ws.send(chunk)
            assert "partial" in json.loads(await ws.recv())
        await ws.send('{"config": {"sample_rate": 8000}}')  # too late: audio already started
        assert "error" in json.loads(await ws.recv())
        await ws.send("{oops")
        assert "error" in json.loads(await ws.recv())
        replies = []
        for chunk in data[len(data) // 2 :]:
            await ws.send(chunk)
            replies.append(json.loads(await ws.recv()))
            assert set(replies[-1]) <= {"partial", "text", "result"}
        await ws.send(EOF)
        replies.append(json.loads(await ws.recv()))
        assert "forward" in full_text(replies).split()
        assert all(r["result"] for r in results(replies) if r["text"])
        await ws.wait_closed()


async def test_client_vanishing_mid_utterance_leaks_no_tasks(server: ServerThread) -> None:
    data = chunks(pcm(("en_fw_jfk",), gap_s=0), 16000)
    baseline = len(server_tasks(server))

    async def vanish() -> None:
        ws = await connect(server.ws_url + "/vosk")
        for chunk in data[:10]:  # 2 s: in the middle of "and so my fellow Americans"
            await ws.send(chunk)
            await ws.recv()
        running = server_tasks(server)
        assert any(t.startswith("vosk-forward") for t in running), running  # the session was live
        ws.transport.abort()  # no close handshake

    await asyncio.gather(vanish(), vanish())
    await until(lambda: not connections(server.config.app.state, "vosk") and len(server_tasks(server)) <= baseline)
    tasks = server_tasks(server)
    assert not [t for t in tasks if t.startswith(("vosk-", "live-"))], tasks
    assert len(tasks) <= baseline, tasks
    # and the server still serves
    replies = await lockstep(server.ws_url + "/vosk", chunks(pcm(("en_pocketsphinx_goforward",)), 16000))
    assert "forward" in full_text(replies).split()
