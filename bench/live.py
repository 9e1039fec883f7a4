"""Live pipeline benchmark (not a test): ``python bench/live.py [--quick] [--model base] [--partial-model tiny.en]``.

For one model on this machine, in one run:
  1. latency: English reference clips streamed through ``LiveSession`` at real-time pace (100 ms pushes);
     first-partial latency after speech onset, final latency after end of speech and the last final after the
     client's stop (p50/p95), on the audio clock (``bench/live_streams.py``);
  2. accuracy: corpus WER of those streamed finals and of the offline transcription of the same clips, and the
     WER of the finals against that offline text (what overload must not make worse);
  3. capacity: how many concurrent real-time sessions keep their reported lag under 1 s in steady state for
     ``--concurrency-seconds`` (each trial's sessions first run ``--warm-seconds`` unmeasured; the cold start's
     worst lag is printed too), for each of ``--batch-sizes`` (``1 8``: batching off and on, same run), then an
     overload trial at twice that many sessions: worst lag, every final delivered, final latency, and the WER of
     the finals against the offline transcription of the same audio;
  4. endurance: one ``--long-minutes`` session (clips with pauses, looped) streamed as fast as it goes: RSS
     growth and final latency over the first vs the last complete passes through the clips.
Targets (issue "Live Whisper that keeps up"): first partial p50 <= 0.8 s, p95 <= 1.5 s; final p50 <= 1.0 s,
p95 <= 1.8 s; streaming WER <= offline + 0.01; last final <= 1.5 s after stop; sessions with batching >= 1.3 x
without; overload finals' WER within +0.02 of the unloaded run's; RSS growth < 30 MB; last/first within 10 %.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.corpus import english_clips, wer  # noqa: E402

from hearline.audio.decode import decode_audio  # noqa: E402
from hearline.config import Settings  # noqa: E402
from hearline.engines.base import Engine, TranscribeOptions  # noqa: E402
from hearline.live.session import LiveOptions  # noqa: E402
from hearline.models.pool import ModelPool  # noqa: E402
from live_streams import SR, LoopedRun, corpus_audio, one_realtime_session, section_long, stream_realtime  # noqa: E402
from stats import fmt, pct  # noqa: E402

ENGLISH = TranscribeOptions(language="en")


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
        off = await pool.run(engine, engine.transcribe, audio, ENGLISH)
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
        "vs_offline": wer(offline, streamed),
        "rtf": offline_time / audio_time,
    }


async def vs_offline(pool: ModelPool, engine: Engine, runs: list[LoopedRun]) -> float:
    """WER of the sessions' finals against the offline transcription of the audio each one sent."""
    offline = [(await pool.run(engine, engine.transcribe, run.audio, ENGLISH)).text for run in runs]
    return wer(offline, [run.text for run in runs])


async def section_concurrency(
    pool: ModelPool, clips: list, bound: float, seconds: float, warm_seconds: float, options: LiveOptions, start: int
) -> dict:
    audio = corpus_audio(clips)
    results: dict[int, float] = {}

    async def run(n: int, length: float) -> list[LoopedRun]:
        rng = np.random.default_rng(n)
        offsets = [int(rng.integers(0, audio.size)) for _ in range(n)]
        return await asyncio.gather(
            *(one_realtime_session(pool, np.roll(audio, -off), length, options) for off in offsets)
        )

    async def trial(n: int) -> bool:
        # Steady state: the same n sessions run unmeasured first, so the engine has started whatever it starts
        # once per stream (PocketSphinx: a decoder process); a cold burst's worst lag is printed beside it.
        cold = max(r.worst_lag for r in await run(n, warm_seconds)) if warm_seconds > 0 else float("nan")
        runs = await run(n, seconds)
        results[n] = max(r.worst_lag for r in runs)
        latency = [v for r in runs for v in r.final_latency]
        skipped = sum(r.skipped for r in runs) / n
        print(
            f"    {n} sessions: worst lag {results[n]:.2f} s (warm-up {cold:.2f} s); final latency {fmt(latency)}; "
            f"audio passed over by partials {skipped:.0%}",
            flush=True,
        )
        return results[n] < 1.0

    n = max(1, start)
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
    # Twice what keeps up (or two when none does): lag must stay bounded and every utterance still gets its final.
    runs = await run(2 * max(1, best), seconds)
    overload = {
        "sessions": 2 * max(1, best),
        "worst": max(r.worst_lag for r in runs),
        "latency": [v for r in runs for v in r.final_latency],
        "finals": sum(len(r.final_latency) for r in runs),
        "skipped": sum(r.skipped for r in runs) / len(runs),
        "vs_offline": await vs_offline(pool, await pool.get(None), runs),
    }
    return {"best": best, "trials": results, "overload": overload}


def print_latency(lat: dict, cores: int) -> float:
    print(f"  first partial after speech onset: {fmt(lat['partial'])}   target p50 <= 0.8 s, p95 <= 1.5 s")
    print(f"  final after end of speech:        {fmt(lat['final'])}   target p50 <= 1.0 s, p95 <= 1.8 s")
    print(f"  last final after the client's stop: {fmt(lat['stop'])}   target <= 1.5 s")
    print(
        f"  WER streaming {lat['wer_stream']:.3f} vs offline {lat['wer_offline']:.3f} "
        f"(diff {lat['wer_stream'] - lat['wer_offline']:+.3f}; target <= +0.01); "
        f"finals vs offline text {lat['vs_offline']:.3f}"
    )
    bound = cores / lat["rtf"]
    print(f"  engine offline RTF {lat['rtf']:.3f} -> offline bound = {cores} cores / RTF = {bound:.1f} streams")
    return bound


async def main(args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    clips = [c for c in english_clips() if c.duration <= 20][: args.clips]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.load(
            model_dir=Path(tmp) / "models",
            model=args.model,
            partial_model=args.partial_model,
            live_final_window=args.final_window,
            **({"max_concurrency_per_model": args.max_streams} if args.max_streams else {}),
        )
        pool = ModelPool(settings)
        engine = await pool.get(None)
        options = LiveOptions(language="en", pause_ms=args.pause_ms)
        partials = f"; partials: {args.partial_model}" if args.partial_model else ""
        partials += f"; final window: {args.final_window}"
        print(f"model: {engine.name} ({engine.kind}){partials}; cores: {cores}; clips: {len(clips)}", flush=True)
        print(
            f"pool: {settings.workers} worker threads, {settings.max_concurrency_per_model} concurrent "
            f"jobs/decoders per model, batch size {settings.batch_size} (wait {settings.batch_wait_ms:g} ms)",
            flush=True,
        )

        print("\n[1-2] real-time streaming, one session per clip", flush=True)
        lat = await section_latency(pool, clips, options)
        bound = print_latency(lat, cores)

        if args.concurrency_seconds > 0:
            print(f"\n[3] concurrent real-time sessions, {args.concurrency_seconds:.0f} s each, lag < 1 s", flush=True)
            best: dict[int, int] = {}
            for size in dict.fromkeys(args.batch_sizes or [settings.batch_size]):
                trial_pool = ModelPool(settings.model_copy(update={"batch_size": size}))
                await trial_pool.get(None)
                print(f"  batch size {size}:", flush=True)
                start = args.sessions_from or max(1, math.floor(0.8 * bound))
                conc = await section_concurrency(
                    trial_pool, clips, bound, args.concurrency_seconds, args.warm_seconds, options, start
                )
                best[size] = conc["best"]
                print(f"  sessions with lag < 1 s: {conc['best']}")
                o = conc["overload"]
                print(
                    f"  overload, {o['sessions']} sessions: worst lag {o['worst']:.2f} s; {o['finals']} finals; "
                    f"final latency {fmt(o['latency'])}; audio passed over by partials {o['skipped']:.0%}; "
                    f"finals vs offline text {o['vs_offline']:.3f} (unloaded {lat['vs_offline']:.3f}, target +0.02)"
                )
                batchers = {name: slot.batcher for name, slot in trial_pool._slots.items() if slot.batcher is not None}
                for name, batcher in batchers.items():
                    print(f"  {name}: batched calls by size {dict(sorted(batcher.sizes.items()))}")
                await trial_pool.close()
            if len(best) > 1:
                off, on = best[min(best)], max(best.values())
                print(f"  batching on/off: {on} / {off} sessions (target on >= 1.3 x off)")

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
            print(f"  last/first p50: {l50 / f50 if f50 else float('nan'):.2f} (target within 10 %)")
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
        "this many model replicas)",
    )
    parser.add_argument(
        "--pause-ms",
        type=int,
        default=LiveOptions.pause_ms,
        help="silence after which a final is prepared ahead of the endpoint (LiveOptions.pause_ms; 0: off)",
    )
    parser.add_argument(
        "--final-window",
        choices=["full", "short"],
        default=Settings.model_fields["live_final_window"].default,
        help="a live final's Whisper window (--live-final-window)",
    )
    ns = parser.parse_args()
    if ns.clips is None:
        ns.clips = 6 if ns.quick else 100
    if ns.concurrency_seconds is None:
        ns.concurrency_seconds = 20.0 if ns.quick else 120.0
    if ns.long_minutes is None:
        ns.long_minutes = 6.0 if ns.quick else 60.0
    asyncio.run(main(ns))
