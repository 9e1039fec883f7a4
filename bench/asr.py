"""``/asr`` as a browser uses it (not a test): ``python bench/asr.py [--url ws://HOST:PORT/asr | --spawn ARGS]``.

Any WhisperLiveKit-protocol server (this one, or the reference server for a side-by-side run on the same
machine and clips).  Each English reference clip, followed by 3 s of silence, is encoded as Chrome's
MediaRecorder writes WebM/Opus, sent in 250 ms pieces at real-time pace, then the empty frame; one session per
clip, one at a time.  Speech start and end come from Silero VAD on the clip.  Printed, on the client's clock:

* first text: the first update with any text (a line or the buffer), after speech start;
* settled: the last update that changed the committed lines' text, after speech end (p50, p95, max);
* WER of the final update's lines against the references (the text a user keeps).

  python bench/asr.py --spawn "--model base"                (starts ``hearline serve`` on a free port)
  python bench/asr.py --url ws://127.0.0.1:8000/asr --clips 12
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.corpus import english_clips, wer  # noqa: E402
from tests.helpers.media import browser_chunks, browser_webm  # noqa: E402

from hearline.audio.decode import decode_audio, float_to_pcm16  # noqa: E402
from spawn import spawned  # noqa: E402
from stats import pct  # noqa: E402

SR = 16000
CHUNK_S = 0.25
TAIL_S = 3.0


def speech_span(audio: np.ndarray) -> tuple[float, float]:
    """Seconds where speech starts and ends in ``audio`` (Silero VAD, faster-whisper's defaults)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    spans = get_speech_timestamps(audio, VadOptions())
    if not spans:
        return 0.0, audio.size / SR
    return spans[0]["start"] / SR, spans[-1]["end"] / SR


def committed(update: dict) -> str:
    return " ".join(line.get("text", "").strip() for line in update.get("lines", []) if line.get("speaker", 0) > 0)


async def one_clip(url: str, wav: Path, duration: float) -> tuple[float, float, str]:
    """(first text, last change of the committed text, final lines' text); times from the stream's start."""
    chunks = browser_chunks(browser_webm(wav), duration, CHUNK_S)
    first = last_change = float("nan")
    final = ""
    async with websockets.connect(url, max_size=None) as ws:
        started = time.perf_counter()

        async def read() -> None:
            nonlocal first, last_change, final
            async for raw in ws:
                message = json.loads(raw)
                if message.get("type") == "ready_to_stop":
                    return
                if message.get("type") not in (None, "snapshot"):
                    continue
                now = time.perf_counter() - started
                text = committed(message)
                if first != first and (text or message.get("buffer_transcription", "").strip()):
                    first = now
                if text != final:
                    final, last_change = text, now

        reader = asyncio.create_task(read())
        for i, chunk in enumerate(chunks):
            await ws.send(chunk)
            await asyncio.sleep(max(0.0, started + (i + 1) * duration / len(chunks) - time.perf_counter()))
        await ws.send(b"")
        await asyncio.wait_for(reader, 300)
    return first, last_change, final


async def run(url: str, clips: list) -> None:
    firsts, settled, refs, hyps = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for item in clips:
            audio = np.concatenate([decode_audio(item.path), np.zeros(int(TAIL_S * SR), dtype=np.float32)])
            wav = Path(tmp) / f"{item.id}.wav"
            with wave.open(str(wav), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(SR)
                out.writeframes(float_to_pcm16(audio))
            start, end = speech_span(audio)
            first, change, text = await one_clip(url, wav, audio.size / SR)
            firsts.append(first - start)
            settled.append(change - end)
            refs.append(item.text or "")
            hyps.append(text)
            print(f"  {item.id}: first text {first - start:.2f} s, settled {change - end:.2f} s", flush=True)
    print(f"first text after speech start: p50 {pct(firsts, 50):.2f} s  p95 {pct(firsts, 95):.2f} s")
    print(f"committed text settled after speech end: p50 {pct(settled, 50):.2f} s  p95 {pct(settled, 95):.2f} s  "
          f"max {max(settled):.2f} s")  # fmt: skip
    print(f"WER of the final lines: {wer(refs, hyps):.3f} ({len(clips)} clips)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server's /asr WebSocket URL")
    parser.add_argument("--spawn", help='start `hearline serve` with these arguments instead, e.g. "--model base"')
    parser.add_argument("--clips", type=int, default=10, help="English reference clips (<= 20 s)")
    args = parser.parse_args()
    clips = [c for c in english_clips() if c.duration <= 20][: args.clips]
    if args.spawn is None:
        asyncio.run(run(args.url or "ws://127.0.0.1:8000/asr", clips))
        return
    with spawned(shlex.split(args.spawn)) as server:
        print(f"hearline serve {args.spawn}", flush=True)
        asyncio.run(run(f"ws://127.0.0.1:{server.port}/asr?language=en", clips))


if __name__ == "__main__":
    main()
