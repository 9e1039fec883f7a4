"""Live pipeline benchmark (not a test): ``python bench/live.py [--quick]``.

For the default model (bundled PocketSphinx) on this machine, in one run:
  1. latency: English reference clips streamed through ``LiveSession`` at real-time pace (100 ms
     pushes); first-partial latency after speech onset and final latency after end of speech
     (p50/p95), both on the audio clock: an event at wall time t for audio time a sent at t0 + a counts
     t - t0 - a;
  2. accuracy: corpus WER of those streamed finals vs the offline transcription of the same clips;
  3. throughput: the engine's offline real-time factor -> bound = cores / RTF, and how many concurrent
     real-time sessions keep their reported lag under 1 s for ``--concurrency-seconds`` in steady state
     (each trial's sessions first run ``--warm-seconds`` unmeasured; that cold start's worst lag is
     printed too), with the final latency and the share of audio that partials skipped, per trial;
  4. endurance: one ``--long-minutes`` session (clips concatenated with pauses, looped) streamed as fast
     as it goes: RSS growth and final latency (from the push of the utterance's last sample to its
     final) over the first vs the last complete passes through the clips (at least a tenth each).
Targets: first partial p50 <= 1.0 s; final p50 <= 1.0 s; streaming WER <= offline + 0.02; sessions >=
0.8 x bound; RSS growth < 30 MB; final latency over the last passes within 20 % of the first.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import english_clips, wer  # noqa: E402

from hearline.audio.decode import decode_audio  # noqa: E402
from hearline.config import Settings  # noqa: E402
from hearline.engines.base import TranscribeOptions  # noqa: E402
from hearline.live.session import Final, Lag, LiveOptions, LiveSession, Partial, SpeechStarted  # noqa: E402
from hearline.models.pool import ModelPool  # noqa: E402
from procmem import tree_rss_mb  # noqa: E402
from stats import fmt, pct  # noqa: E402

SR = 16000
CHUNK = SR // 10


async def stream_realtime(pool: ModelPool, audio: np.ndarray, options: LiveOptions) -> dict:
    session = LiveSession(pool, None, options)
    await session.start()
    first_partial: dict[int, float] = {}
    onset: dict[int, float] = {}
    finals: list[tuple[float, Final]] = []
    lags: list[float] = []
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
            elif isinstance(event, Lag):
                lags.append(event.seconds)

    reader = asyncio.create_task(read())
    t0 = time.perf_counter()
    for i in range(0, audio.size, CHUNK):
        await session.push(audio[i : i + CHUNK])
        await asyncio.sleep(max(0.0, t0 + (i + CHUNK) / SR - time.perf_counter()))
    stop = time.perf_counter() - t0
    await session.flush()
    await reader
    await session.close()
    final_latency = [now - e.end for now, e in finals if e.text]
    return {
        "first_partial": [v for k, v in first_partial.items() if k in onset],
        "final": final_latency,
        "stop_to_last": (finals[-1][0] - stop) if finals else float("nan"),
        "text": " ".join(e.text for _, e in finals if e.text),
        "lags": lags,
    }


async def section_latency(pool: ModelPool, clips: list, options: LiveOptions) -> dict:
    engine = await pool.get(None)
    partial_lat, final_lat, refs, streamed, offline, stops = [], [], [], [], [], []
    offline_time = audio_time = 0.0
    for item in clips:
        audio = decode_audio(item.path)
        result = await stream_realtime(pool, audio, options)
        partial_lat += result["first_partial"]
        final_lat += result["final"]
        stops.append(result["stop_to_last"])
        started = time.perf_counter()
        off = await pool.run(engine, engine.transcribe, audio, TranscribeOptions(language="en"))
        offline_time += time.perf_counter() - started
        audio_time += audio.size / SR
        refs.append(item.text)
        streamed.append(result["text"])
        offline.append(off.text)
    return {
        "partial": partial_lat,
        "final": final_lat,
        "stop": stops,
        "wer_stream": wer(refs, streamed),
        "wer_offline": wer(refs, offline),
        "rtf": offline_time / audio_time,
    }


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


async def one_realtime_session(
    pool: ModelPool, audio: np.ndarray, seconds: float, options: LiveOptions
) -> tuple[float, list[float], float]:
    """Stream ``seconds`` of ``audio`` (looped) at real time.

    Returns the worst lag reported after the first 5 s, each final's latency after its end of speech
    (audio clock) and the share of audio that partial decoding passed over because it was behind.
    """
    session = LiveSession(pool, None, options)
    await session.start()
    worst = 0.0
    final_latency: list[float] = []
    t0 = time.perf_counter()

    async def read() -> None:
        nonlocal worst
        async for event in session.events():
            if isinstance(event, Lag) and session.audio_seconds > 5:
                worst = max(worst, event.seconds)
            elif isinstance(event, Final) and event.text:
                final_latency.append(time.perf_counter() - t0 - event.end)

    reader = asyncio.create_task(read())
    t0 = time.perf_counter()
    total = int(seconds * SR)
    for i in range(0, total, CHUNK):
        await session.push(looped(audio, i, CHUNK))
        await asyncio.sleep(max(0.0, t0 + (i + CHUNK) / SR - time.perf_counter()))
    await session.flush()
    await reader
    await session.close()
    return worst, final_latency, session.partial_skipped / max(1, total)


async def section_concurrency(
    pool: ModelPool,
    clips: list,
    bound: float,
    seconds: float,
    warm_seconds: float,
    options: LiveOptions,
    start: int | None = None,
) -> dict:
    audio = corpus_audio(clips)
    results: dict[int, float] = {}

    async def run(n: int, length: float) -> list[tuple[float, list[float], float]]:
        rng = np.random.default_rng(n)
        offsets = [int(rng.integers(0, audio.size)) for _ in range(n)]
        return await asyncio.gather(
            *(one_realtime_session(pool, np.roll(audio, -off), length, options) for off in offsets)
        )

    async def trial(n: int) -> bool:
        # Steady state: the same n sessions run unmeasured first, so the engine has started whatever it
        # starts once per stream (PocketSphinx: a decoder process, ~0.5 s of CPU each); a cold burst of
        # n connections pays that once, and its worst lag is printed next to the measured one.
        cold = max(worst for worst, _, _ in await run(n, warm_seconds)) if warm_seconds > 0 else float("nan")
        runs = await run(n, seconds)
        results[n] = max(worst for worst, _, _ in runs)
        latency = [v for _, values, _ in runs for v in values]
        skipped = sum(share for _, _, share in runs) / n
        print(
            f"    {n} sessions: worst lag {results[n]:.2f} s (warm-up {cold:.2f} s); final latency {fmt(latency)}; "
            f"audio passed over by partials {skipped:.0%}",
            flush=True,
        )
        return results[n] < 1.0

    n = start or max(1, math.floor(0.8 * bound))
    if await trial(n):
        while n < math.ceil(bound) + 2 and await trial(n + 1):
            n += 1
        best = n
    else:
        best = 0
        while n > 1:
            n -= 1
            if await trial(n):
                best = n
                break
    overload: dict = {}
    if best:
        # Twice what keeps up: the lag must stay bounded (backpressure) and every utterance still gets its final.
        runs = await run(2 * best, seconds)
        overload = {
            "sessions": 2 * best,
            "worst": max(worst for worst, _, _ in runs),
            "latency": [v for _, values, _ in runs for v in values],
            "finals": sum(len(values) for _, values, _ in runs),
            "skipped": sum(share for _, _, share in runs) / (2 * best),
        }
    return {"best": best, "trials": results, "overload": overload}


async def section_long(pool: ModelPool, clips: list, minutes: float, options: LiveOptions) -> dict:
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
    first = [lat for t, lat in latencies if t < k * loop_s]
    last = [lat for t, lat in latencies if (loops - k) * loop_s <= t < loops * loop_s]
    return {
        "window_min": k * loop_s / 60,
        "last_from_min": (loops - k) * loop_s / 60,
        "elapsed": elapsed,
        "rss_warm": warm_rss or end_rss,
        "rss_end": end_rss,
        "first": first,
        "last": last,
        "finals": len(latencies),
    }


async def main(args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    clips = [c for c in english_clips() if c.duration <= 20][: args.clips]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.load(
            model_dir=Path(tmp) / "models",
            model=args.model,
            partial_model=args.partial_model,
            **({"max_concurrency_per_model": args.max_streams} if args.max_streams else {}),
        )
        pool = ModelPool(settings)
        engine = await pool.get(None)
        options = LiveOptions(language="en", pause_ms=args.pause_ms)
        partials = f"; partials: {args.partial_model}" if args.partial_model else ""
        print(f"model: {engine.name} ({engine.kind}){partials}; cores: {cores}; clips: {len(clips)}", flush=True)
        print(
            f"pool: {settings.workers} worker threads, {settings.max_concurrency_per_model} concurrent "
            f"jobs/decoders per model, batch size {settings.batch_size} (wait {settings.batch_wait_ms:g} ms)",
            flush=True,
        )

        print("\n[1-2] real-time streaming, one session per clip", flush=True)
        lat = await section_latency(pool, clips, options)
        print(f"  first partial after speech onset: {fmt(lat['partial'])}   target p50 <= 1.0 s")
        print(f"  final after end of speech:        {fmt(lat['final'])}   target p50 <= 1.0 s")
        print(f"  last final after the client's stop: {fmt(lat['stop'])}   target <= 1.5 s")
        print(
            f"  WER streaming {lat['wer_stream']:.3f} vs offline {lat['wer_offline']:.3f} "
            f"(diff {lat['wer_stream'] - lat['wer_offline']:+.3f}; target <= +0.02)"
        )
        bound = cores / lat["rtf"]
        print(
            f"  engine offline RTF {lat['rtf']:.3f} -> bound = {cores} cores / RTF = {bound:.1f} sessions", flush=True
        )

        if args.concurrency_seconds > 0:
            print(f"\n[3] concurrent real-time sessions, {args.concurrency_seconds:.0f} s each, lag < 1 s", flush=True)
            best: dict[int, int] = {}
            for size in dict.fromkeys(args.batch_sizes or [settings.batch_size]):
                trial_pool = ModelPool(settings.model_copy(update={"batch_size": size}))
                await trial_pool.get(None)
                print(f"  batch size {size}:", flush=True)
                conc = await section_concurrency(
                    trial_pool, clips, bound, args.concurrency_seconds, args.warm_seconds, options, args.sessions_from
                )
                best[size] = conc["best"]
                ratio = conc["best"] / bound if bound else float("nan")
                print(f"  sessions with lag < 1 s: {conc['best']} = {ratio:.2f} x bound {bound:.1f} (target >= 0.8 x)")
                if conc["overload"]:
                    o = conc["overload"]
                    print(
                        f"  overload, {o['sessions']} sessions: worst lag {o['worst']:.2f} s; {o['finals']} finals; "
                        f"final latency {fmt(o['latency'])}; audio passed over by partials {o['skipped']:.0%}"
                    )
                batcher = next((s.batcher for s in trial_pool._slots.values() if s.batcher is not None), None)
                if batcher is not None:
                    print(f"  batched calls by size: {dict(sorted(batcher.sizes.items()))}")
                await trial_pool.close()
            if len(best) > 1 and min(best) in best and best[min(best)]:
                print(f"  batching on/off: {max(best.values())} / {best[min(best)]} sessions (target on >= 1.3 x off)")

        if args.long_minutes > 0:
            print(f"\n[4] one {args.long_minutes:g}-minute session streamed as fast as it goes", flush=True)
            long = await section_long(pool, clips, args.long_minutes, options)
            growth = long["rss_end"] - long["rss_warm"]
            f50, l50 = pct(long["first"], 50), pct(long["last"], 50)
            print(
                f"  {long['finals']} finals in {long['elapsed']:.0f} s "
                f"({args.long_minutes * 60 / long['elapsed']:.2f} x real time)"
            )
            print(
                f"  RSS after first tenth {long['rss_warm']:.1f} MB -> end {long['rss_end']:.1f} MB: "
                f"growth {growth:+.1f} MB (target < 30 MB)"
            )
            window = f"{long['window_min']:.1f} min"
            labels = (f"first {window}", f"{window} from {long['last_from_min']:.1f} min")
            for label, values in zip(labels, (long["first"], long["last"]), strict=True):
                print(f"  final latency, {label + ':':<{max(map(len, labels)) + 1}} {fmt(values)}")
            print(f"  last/first p50: {l50 / f50 if f50 else float('nan'):.2f} (target within 20 %)")
        await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="6 clips, 20 s concurrency trials, 6-minute session")
    parser.add_argument("--clips", type=int, default=None, help="reference clips for latency/WER (default all <= 20 s)")
    parser.add_argument("--concurrency-seconds", type=float, default=None, help="length of each trial (default 120)")
    parser.add_argument(
        "--warm-seconds",
        type=float,
        default=15.0,
        help="unmeasured run of the same sessions before each concurrency trial (0: measure from cold)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="*",
        default=None,
        help="concurrency trials for each batch size, e.g. 1 8 for batching off and on (default: the setting)",
    )
    parser.add_argument("--sessions-from", type=int, default=None, help="first concurrency trial (default 0.8 x bound)")
    parser.add_argument("--model", default=None, help="model name or path (default: the server's default model)")
    parser.add_argument("--partial-model", default=None, help="faster model for live partials (e.g. tiny.en)")
    parser.add_argument("--long-minutes", type=float, default=None, help="endurance session length (default 60)")
    parser.add_argument(
        "--max-streams",
        type=int,
        default=None,
        help="max_concurrency_per_model (default: the server's; PocketSphinx makes this many decoders, Whisper "
        "this many model replicas; earlier PocketSphinx figures used 12)",
    )
    parser.add_argument(
        "--pause-ms",
        type=int,
        default=LiveOptions.pause_ms,
        help="silence after which a final is prepared ahead of the endpoint (LiveOptions.pause_ms; 0: off)",
    )
    ns = parser.parse_args()
    if ns.clips is None:
        ns.clips = 6 if ns.quick else 100
    if ns.concurrency_seconds is None:
        ns.concurrency_seconds = 20.0 if ns.quick else 120.0
    if ns.long_minutes is None:
        ns.long_minutes = 6.0 if ns.quick else 60.0
    asyncio.run(main(ns))
