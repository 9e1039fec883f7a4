"""Load benchmark through a load balancer (not a test): ``python bench/load.py --sessions 12``.

Opens N concurrent live ``/stt`` sessions (the port-8765 streaming protocol) against ``--url`` (a load
balancer such as deploy/haproxy.cfg, or one server directly) and streams real English reference clips at
real-time pace (100 ms chunks), each session its own clip (cycling through them), then ``stop``.

Prints:
  * final latency p50/p95 on the audio clock: a final received at wall time t for audio ending at a (its
    ``end``), in a session whose real-time stream began at t0, counts t - t0 - a;
  * closing latency p50/p95: ``stop`` sent -> ``session_ended`` (the flush of the last utterance);
  * sessions refused (handshake refused, e.g. 503 + Retry-After at ``--max-sessions``, or an ``error``
    message such as a draining server's) and failed;
  * corpus WER of the finals vs the clips' references (a sanity check that the load got real answers);
  * replica distribution from each ``--backends`` server's own /metrics: sessions opened during the run
    (``hearline_live_sessions_opened_total``) and the peak of ``hearline_live_sessions_open`` seen.

  python bench/load.py --url http://127.0.0.1:8080 \\
      --backends http://127.0.0.1:8001 http://127.0.0.1:8002 http://127.0.0.1:8003 --sessions 12

Overload (issue "Safe on a LAN"): ``--spawn`` starts its own ``hearline serve`` (``--serve-args``), and for
``--duration-s`` each of the ``--sessions`` live slots opens session after session (a refused one tries
again a second later) while ``--rest-workers`` post clips back to back to ``/v1/audio/transcriptions``.
Printed besides the above: refusals by door (live 503s, REST 429s with their ``Retry-After``), REST
latency p50/p95 of the answered requests, and the server's RSS and threads (its process tree) before,
at the peak and ``--settle-s`` after the load ends, against the same figures for the server once warm (after one
session and one upload: what a server that has served once holds). ``--rounds`` repeats the load, to see whether
what stays after it grows round after round:

  python bench/load.py --spawn --serve-args "--model base --max-sessions 3" \\
      --sessions 6 --rest-workers 2 --duration-s 120 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import metrics  # noqa: E402
from tests.helpers.corpus import english_clips, wer  # noqa: E402

from hearline.audio.decode import decode_audio, float_to_pcm16  # noqa: E402
from procmem import tree_rss_mb  # noqa: E402
from spawn import spawned, tree_threads  # noqa: E402
from stats import pct  # noqa: E402

CHUNK_S = 0.1
CHUNK = int(16000 * CHUNK_S) * 2  # bytes of PCM16


@dataclass
class Result:
    clip_id: str
    reference: str
    finals: list[str] = field(default_factory=list)
    final_latencies: list[float] = field(default_factory=list)
    closing_latency: float | None = None
    refused: str | None = None
    failed: str | None = None


def scrape(url: str, headers: dict[str, str]) -> dict[str, float]:
    """Sessions opened (total) and open now on one backend, summed over doors and models."""
    samples = metrics.scrape(url.rstrip("/"), **headers)
    return {
        "opened": metrics.metric(samples, "hearline_live_sessions_opened_total"),
        "open": metrics.metric(samples, "hearline_live_sessions_open"),
    }


async def session(ws_url: str, clip_id: str, reference: str, pcm: bytes, headers: dict[str, str]) -> Result:
    result = Result(clip_id, reference)
    try:
        async with websockets.connect(ws_url + "/stt?language=en", additional_headers=headers, open_timeout=30) as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if hello.get("type") != "connected":
                result.refused = str(hello)
                return result
            await ws.send(json.dumps({"command": "start"}))
            started = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if started.get("type") != "session_started":
                result.refused = str(started)
                return result
            t0 = time.perf_counter()
            stop_sent: list[float] = []

            async def send() -> None:
                for i in range(0, len(pcm), CHUNK):
                    await ws.send(pcm[i : i + CHUNK])
                    due = t0 + (i + CHUNK) / 32000
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                stop_sent.append(time.perf_counter())
                await ws.send(json.dumps({"command": "stop"}))

            sender = asyncio.create_task(send())
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 120))
                now = time.perf_counter()
                kind = message.get("type")
                if kind == "final":
                    result.finals.append(message["text"])
                    result.final_latencies.append(now - t0 - float(message.get("end", 0.0)))
                elif kind == "error":
                    result.refused = message.get("message", str(message))
                elif kind == "session_ended":
                    await sender
                    result.closing_latency = now - stop_sent[0]
                    return result
    except websockets.InvalidStatus as exc:
        status = exc.response.status_code
        retry = exc.response.headers.get("Retry-After")
        result.refused = f"HTTP {status}" + (f" (Retry-After {retry})" if retry else "")
    except (OSError, TimeoutError, websockets.WebSocketException) as exc:
        result.failed = f"{type(exc).__name__}: {exc}"
    return result


@dataclass
class RestResult:
    status: int
    seconds: float
    retry_after: str | None = None


async def live_slot(ws_url: str, clips: list, audio: dict[str, bytes], headers: dict[str, str], slot: int,
                    deadline: float) -> list[Result]:  # fmt: skip
    """Sessions one after another until ``deadline`` (a refused one tries again a second later)."""
    results: list[Result] = []
    n = slot
    while True:
        item = clips[n % len(clips)]
        result = await session(ws_url, item.id, item.text, audio[item.id], headers)
        results.append(result)
        n += 1
        if time.perf_counter() >= deadline:
            return results
        if result.refused or result.failed:
            await asyncio.sleep(1.0)


async def rest_worker(url: str, clips: list, headers: dict[str, str], slot: int, deadline: float) -> list[RestResult]:
    """Clips posted back to back until ``deadline``; a 429 waits half a second before the next."""
    results: list[RestResult] = []
    n = slot
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as client:
        while time.perf_counter() < deadline:
            item = clips[n % len(clips)]
            n += 1
            started = time.perf_counter()
            try:
                response = await client.post(
                    "/v1/audio/transcriptions",
                    files={"file": (item.path.name, item.path.read_bytes())},
                    data={"model": "whisper-1"},
                )
            except httpx.HTTPError:
                results.append(RestResult(0, time.perf_counter() - started))
                continue
            results.append(RestResult(response.status_code, time.perf_counter() - started,
                                      response.headers.get("retry-after")))  # fmt: skip
            if response.status_code == 429:
                await asyncio.sleep(0.5)
    return results


class Usage:
    """RSS and threads of the spawned server's process tree: now, and the peak while sampling."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.peak = (0.0, 0)

    def now(self) -> tuple[float, int]:
        if self.pid is None:
            return (float("nan"), 0)
        sample = (tree_rss_mb(self.pid), tree_threads(self.pid))
        self.peak = (max(self.peak[0], sample[0]), max(self.peak[1], sample[1]))
        return sample


@dataclass
class Target:
    url: str
    ws_url: str
    backends: list[str]
    headers: dict[str, str]
    clips: list
    audio: dict[str, bytes]


async def warm_up(target: Target) -> None:
    """One session and one upload: the baseline is then what a server that has served once holds."""
    item = target.clips[0]
    await session(target.ws_url, item.id, item.text, target.audio[item.id], target.headers)
    async with httpx.AsyncClient(base_url=target.url, headers=target.headers, timeout=300) as client:
        await client.post("/v1/audio/transcriptions", files={"file": (item.path.name, item.path.read_bytes())})


async def one_round(args: argparse.Namespace, target: Target, usage: Usage, spawned: bool) -> tuple[float, int]:
    """Offer the load once and print its figures; returns the server's RSS and threads once it settled."""
    url, ws_url, backends, headers = target.url, target.ws_url, target.backends, target.headers
    clips, audio = target.clips, target.audio
    before = [scrape(b, headers) for b in backends]
    usage.peak = (0.0, 0)

    peaks = [0.0 for _ in backends]
    done = threading.Event()

    def watch() -> None:  # peak of open sessions per backend and of the server's usage, every 0.25 s
        while not done.is_set():
            for i, backend in enumerate(backends):
                with contextlib.suppress(httpx.HTTPError):
                    peaks[i] = max(peaks[i], scrape(backend, headers)["open"])
            usage.now()
            done.wait(0.25)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.perf_counter()
    deadline = started + args.duration_s
    tasks = []
    for n in range(args.sessions):
        if args.duration_s > 0:
            tasks.append(asyncio.create_task(live_slot(ws_url, clips, audio, headers, n, deadline)))
        else:
            item = clips[n % len(clips)]
            tasks.append(asyncio.create_task(session(ws_url, item.id, item.text, audio[item.id], headers)))
        await asyncio.sleep(args.ramp_s)
    rest_tasks = [asyncio.create_task(rest_worker(url, clips, headers, n, deadline)) for n in range(args.rest_workers)]
    gathered = await asyncio.gather(*tasks)
    rest = [r for batch in await asyncio.gather(*rest_tasks) for r in batch]
    results: list[Result] = [r for item in gathered for r in (item if isinstance(item, list) else [item])]
    elapsed = time.perf_counter() - started
    done.set()
    watcher.join(5)
    after = [scrape(b, headers) for b in backends]
    await asyncio.sleep(args.settle_s if spawned else 0)
    peak = usage.peak
    settled = usage.now()

    ok = [r for r in results if r.refused is None and r.failed is None and r.closing_latency is not None]
    latencies = [x for r in ok for x in r.final_latencies]
    closing = [r.closing_latency for r in ok if r.closing_latency is not None]
    audio_s = sum(len(audio[r.clip_id]) / 32000 for r in ok)
    print(f"target {url}: {args.sessions} concurrent real-time /stt sessions, {len(clips)} clips, "
          f"ramp {args.ramp_s:.2f} s, {elapsed:.1f} s wall, {audio_s:.1f} s of audio answered")  # fmt: skip
    print(f"live sessions: {len(ok)} ok, {sum(r.refused is not None for r in results)} refused, "
          f"{sum(r.failed is not None for r in results)} failed")  # fmt: skip
    reasons: dict[str, int] = {}
    for r in results:
        if r.refused or r.failed:
            key = (r.refused or r.failed or "")[:100]
            reasons[key] = reasons.get(key, 0) + 1
    for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"  {count} x {reason}")
    print(f"final latency = lag on the audio clock ({len(latencies)} finals): p50 {pct(latencies, 50):.3f} s, "
          f"p95 {pct(latencies, 95):.3f} s, max {max(latencies, default=float('nan')):.3f} s")  # fmt: skip
    print(f"closing latency (stop -> session_ended): p50 {pct(closing, 50):.3f} s, p95 {pct(closing, 95):.3f} s")
    if ok:
        print(f"corpus WER of finals: {wer([r.reference for r in ok], [' '.join(r.finals) for r in ok]):.3f}")
    if rest:
        answered = [r.seconds for r in rest if r.status == 200]
        statuses: dict[int, int] = {}
        for r in rest:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        retry = [float(r.retry_after) for r in rest if r.retry_after]
        by_status = dict(sorted(statuses.items()))
        print(f"REST ({args.rest_workers} workers): {len(rest)} requests, by status {by_status}; "
              f"answered in p50 {pct(answered, 50):.2f} s, p95 {pct(answered, 95):.2f} s")  # fmt: skip
        if retry:  # what a refused client was told to wait, against what an answered one did wait
            print(f"  Retry-After of the refusals: min {min(retry):g}, p50 {pct(retry, 50):g}, max {max(retry):g} s")
    if spawned:
        print(f"server RSS / threads: peak {peak[0]:.0f} MB / {peak[1]}, "
              f"{settled[0]:.0f} MB / {settled[1]} {args.settle_s:g} s after the load")  # fmt: skip
    print("replica distribution (from each backend's /metrics):")
    for backend, b, a, peak in zip(backends, before, after, peaks, strict=True):
        opened = a["opened"] - b["opened"]
        print(f"  {backend}: {opened:.0f} sessions opened, peak {peak:.0f} open, {a['open']:.0f} open now")
    return settled


async def run(args: argparse.Namespace, url: str, pid: int | None) -> None:
    clips = [c for c in english_clips() if c.duration <= args.max_clip_s][: args.clips]
    target = Target(
        url=url,
        ws_url=url.replace("http://", "ws://", 1).replace("https://", "wss://", 1).rstrip("/"),
        backends=args.backends or [url],
        headers={"Authorization": f"Bearer {args.api_key}"} if args.api_key else {},
        clips=clips,
        audio={c.id: float_to_pcm16(decode_audio(c.path)) for c in clips},
    )
    usage = Usage(pid)
    spawned = pid is not None
    if spawned:
        fresh = usage.now()
        await warm_up(target)
        await asyncio.sleep(args.settle_s)
        warm = usage.now()
        print(f"server RSS / threads: {fresh[0]:.0f} MB / {fresh[1]} started, {warm[0]:.0f} MB / {warm[1]} "
              f"warm (one session and one upload, {args.settle_s:g} s after)")  # fmt: skip
    after = []
    for n in range(args.rounds):
        if args.rounds > 1:
            print(f"-- round {n + 1} of {args.rounds}")
        after.append(await one_round(args, target, usage, spawned))
    if spawned:
        growth = ", ".join(f"{a[0] - warm[0]:+.0f} MB / {a[1] - warm[1]:+d}" for a in after)
        print(f"server RSS / threads after each round, against warm: {growth}")


def main(args: argparse.Namespace) -> None:
    if not args.spawn:
        asyncio.run(run(args, args.url, None))
        return
    with spawned(shlex.split(args.serve_args)) as server:
        print(f"spawned: hearline serve {args.serve_args}", flush=True)
        asyncio.run(run(args, server.url, server.process.pid))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="load balancer (or one server) base URL")
    parser.add_argument("--backends", nargs="*", default=None, help="each replica's base URL, for /metrics")
    parser.add_argument("--sessions", type=int, default=12, help="concurrent live sessions (default 12)")
    parser.add_argument("--clips", type=int, default=None, help="use the first K English clips (default all)")
    parser.add_argument("--max-clip-s", type=float, default=12.0, help="skip clips longer than this (default 12)")
    parser.add_argument("--ramp-s", type=float, default=0.05, help="seconds between session starts")
    parser.add_argument("--api-key", default=None, help="the server's API key, if set")
    parser.add_argument("--spawn", action="store_true", help="start a hearline serve subprocess instead of --url")
    parser.add_argument("--serve-args", default="", help="arguments for the spawned server")
    parser.add_argument("--duration-s", type=float, default=0.0, help="keep offering load this long (0: one round)")
    parser.add_argument("--rest-workers", type=int, default=0, help="clients posting clips back to back")
    parser.add_argument("--settle-s", type=float, default=10.0, help="idle time before the after-load usage")
    parser.add_argument("--rounds", type=int, default=1, help="offer the load this many times, settling between")
    main(parser.parse_args())
