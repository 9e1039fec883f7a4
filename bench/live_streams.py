"""The live sessions ``bench/live.py`` runs: a clip at real-time pace, a looped stream, an endurance session.

All three drive ``LiveSession`` in-process, on the pool they are given, and measure on the audio clock: an event
at wall time t about audio time a, in a stream whose real-time pushes began at t0, is t - t0 - a late.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hearline.audio.decode import decode_audio  # noqa: E402
from hearline.live.session import Final, Lag, LiveOptions, LiveSession, Partial, SpeechStarted  # noqa: E402
from hearline.models.pool import ModelPool  # noqa: E402
from procmem import tree_rss_mb  # noqa: E402

SR = 16000
CHUNK = SR // 10


def corpus_audio(clips: list, gap_s: float = 1.0) -> np.ndarray:
    gap = np.zeros(int(gap_s * SR), dtype=np.float32)
    parts = []
    for item in clips:
        parts += [decode_audio(item.path), gap]
    return np.concatenate(parts)


def looped(audio: np.ndarray, start: int, n: int) -> np.ndarray:
    """``n`` samples of ``audio`` repeated end to end, from ``start``: always whole blocks, so the count of
    samples pushed is the session's sample clock (a block cut short at the wrap would make them drift)."""
    return np.take(audio, np.arange(start, start + n), mode="wrap")


async def stream_realtime(pool: ModelPool, audio: np.ndarray, options: LiveOptions) -> dict:
    """One clip at real-time pace (100 ms pushes), then ``flush`` (the client's stop)."""
    session = LiveSession(pool, None, options)
    await session.start()
    first_partial: dict[int, float] = {}
    onset: dict[int, float] = {}
    finals: list[tuple[float, Final]] = []
    t0 = 0.0

    async def read() -> None:
        async for event in session.events():
            now = time.perf_counter() - t0
            if isinstance(event, SpeechStarted):
                onset[event.utterance_id] = event.start
            elif isinstance(event, Partial) and event.utterance_id not in first_partial:
                first_partial[event.utterance_id] = now - event.start
            elif isinstance(event, Final):
                finals.append((now, event))

    reader = asyncio.create_task(read())
    t0 = time.perf_counter()
    for i in range(0, audio.size, CHUNK):
        await session.push(audio[i : i + CHUNK])
        await asyncio.sleep(max(0.0, t0 + (i + CHUNK) / SR - time.perf_counter()))
    stop = time.perf_counter() - t0
    await session.flush()
    await reader
    await session.close()
    return {
        "first_partial": [v for k, v in first_partial.items() if k in onset],
        "final": [now - e.end for now, e in finals if e.text],
        "stop_to_last": (finals[-1][0] - stop) if finals else float("nan"),
        "text": " ".join(e.text for _, e in finals if e.text),
    }


@dataclass
class LoopedRun:
    """What one looped real-time session measured."""

    worst_lag: float = 0.0  # the worst lag reported after the first 5 s
    final_latency: list[float] = field(default_factory=list)  # each final after its end of speech
    skipped: float = 0.0  # share of the audio partial decoding passed over because it was behind
    text: str = ""  # its finals, joined
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))  # what it sent


async def one_realtime_session(pool: ModelPool, audio: np.ndarray, seconds: float, options: LiveOptions) -> LoopedRun:
    """Stream ``seconds`` of ``audio`` (looped) at real time, then flush."""
    session = LiveSession(pool, None, options)
    await session.start()
    run = LoopedRun()
    texts: list[str] = []
    t0 = time.perf_counter()

    async def read() -> None:
        async for event in session.events():
            if isinstance(event, Lag) and session.audio_seconds > 5:
                run.worst_lag = max(run.worst_lag, event.seconds)
            elif isinstance(event, Final) and event.text:
                run.final_latency.append(time.perf_counter() - t0 - event.end)
                texts.append(event.text)

    reader = asyncio.create_task(read())
    t0 = time.perf_counter()
    total = int(seconds * SR)
    for i in range(0, total, CHUNK):
        await session.push(looped(audio, i, CHUNK))
        await asyncio.sleep(max(0.0, t0 + (i + CHUNK) / SR - time.perf_counter()))
    await session.flush()
    await reader
    await session.close()
    run.skipped = session.partial_skipped / max(1, total)
    run.text, run.audio = " ".join(texts), looped(audio, 0, total)
    return run


async def section_long(pool: ModelPool, clips: list, minutes: float, options: LiveOptions) -> dict:
    """One ``minutes`` session of the clips (with pauses, looped) pushed as fast as the session takes them."""
    one = corpus_audio(clips, gap_s=1.5)
    total = int(minutes * 60 * SR)
    session = LiveSession(pool, None, options)
    await session.start()
    pushes_pos: list[int] = []
    pushes_t: list[float] = []
    latencies: list[tuple[float, float]] = []  # (audio time of speech end, seconds from its push to the final)

    async def read() -> None:
        async for event in session.events():
            if isinstance(event, Final) and event.text:
                k = bisect.bisect_left(pushes_pos, int(event.end * SR))
                if k < len(pushes_t):
                    latencies.append((event.end, time.perf_counter() - pushes_t[k]))

    reader = asyncio.create_task(read())
    step = SR  # 1 s pushes: as fast as the session accepts them (backpressure paces us)
    warm_rss = None
    started = time.perf_counter()
    for i in range(0, total, step):
        block = looped(one, i, step)
        await session.push(block)
        pushes_pos.append(i + block.size)
        pushes_t.append(time.perf_counter())
        if warm_rss is None and i >= total // 10:
            gc.collect()
            warm_rss = tree_rss_mb()
    await session.flush()
    await reader
    elapsed = time.perf_counter() - started
    gc.collect()
    end_rss = tree_rss_mb()
    await session.close()
    # Compare like with like: a final's latency grows with its utterance's length, so the two windows
    # are whole passes over the looped corpus (the same utterances), at least a tenth of the session
    # each - the first passes and the last complete ones.
    loop_s = one.size / SR
    loops = int(total / SR // loop_s)
    k = max(1, min(loops // 2, math.ceil(total / SR / 10 / loop_s)))
    return {
        "window_min": k * loop_s / 60,
        "last_from_min": (loops - k) * loop_s / 60,
        "elapsed": elapsed,
        "rss_warm": warm_rss or end_rss,
        "rss_end": end_rss,
        "first": [lat for t, lat in latencies if t < k * loop_s],
        "last": [lat for t, lat in latencies if (loops - k) * loop_s <= t < loops * loop_s],
        "finals": len(latencies),
    }
