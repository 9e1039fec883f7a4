"""REST overhead and memory benchmark (not a test): ``python bench/rest.py [--requests 200]``.

Starts ``hearline serve`` as a subprocess on a free loopback port (so its RSS, counted with its worker
processes, is the server's alone),
then in the same run transcribes the English reference clips
  * through the server with the official ``openai`` SDK, and
  * with the same engine called directly in this process on the same decoded audio,
alternating clip by clip so both see the same machine load (each clip ``--repeat`` times per path, the
fastest run counted, since the machine is shared).  Prints both real-time factors, the
server overhead ratio ((REST time - engine time) / engine time), corpus WER for each path, and the
server's RSS before and after N sequential requests.  Targets: overhead < 5 %, RSS growth < 20 MB.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from openai import OpenAI

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.corpus import english_clips, wer  # noqa: E402

from hearline.audio.decode import decode_audio  # noqa: E402
from hearline.config import Settings  # noqa: E402
from hearline.engines.base import TranscribeOptions  # noqa: E402
from hearline.models.resolve import load_engine, resolve_model  # noqa: E402
from procmem import tree_rss_mb  # noqa: E402
from spawn import spawned  # noqa: E402


def rss_mb(pid: int) -> float:
    return tree_rss_mb(pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="sequential requests for the RSS check")
    parser.add_argument("--repeat", type=int, default=3, help="runs per clip and path; the fastest counts")
    parser.add_argument("--model", default=None, help="model name or path (default: the server's default model)")
    args = parser.parse_args()

    clips = english_clips()
    audio_s = sum(c.duration for c in clips)
    with spawned(["--model", args.model] if args.model else []) as server:
        client = OpenAI(base_url=f"{server.url}/v1", api_key="bench", max_retries=0)
        settings = Settings.load(model=args.model, model_dir=server.data_dir / "direct")
        engine = load_engine(resolve_model(None, settings), settings)
        print(f"model: {engine.name} ({engine.kind})", flush=True)
        options = TranscribeOptions()
        # warm both paths
        warm = clips[0].path
        client.audio.transcriptions.create(model="whisper-1", file=warm)
        engine.transcribe(decode_audio(str(warm)), options)

        rest_s = engine_s = 0.0
        refs: list[str] = []
        rest_hyps: list[str] = []
        direct_hyps: list[str] = []
        for clip in clips:
            audio = decode_audio(str(clip.path))
            upload = (clip.path.name, clip.path.read_bytes())
            # min over repeats: the machine is shared, and the fastest run is the least disturbed one
            direct_times, rest_times = [], []
            for _ in range(args.repeat):
                started = time.perf_counter()
                direct = engine.transcribe(audio, options)
                direct_times.append(time.perf_counter() - started)

                started = time.perf_counter()
                rest = client.audio.transcriptions.create(model="whisper-1", file=upload)
                rest_times.append(time.perf_counter() - started)
            engine_s += min(direct_times)
            rest_s += min(rest_times)
            refs.append(clip.text or "")
            direct_hyps.append(direct.text)
            rest_hyps.append(rest.text)
        identical = sum(r == d for r, d in zip(rest_hyps, direct_hyps, strict=True))

        print(f"clips: {len(clips)} English clips, {audio_s:.1f} s of audio, best of {args.repeat} runs each")
        print(f"engine direct: {engine_s:.2f} s  RTF {engine_s / audio_s:.4f}  WER {wer(refs, direct_hyps):.4f}")
        print(f"through REST:  {rest_s:.2f} s  RTF {rest_s / audio_s:.4f}  WER {wer(refs, rest_hyps):.4f}")
        print(f"server overhead: {100 * (rest_s - engine_s) / engine_s:+.2f} % of engine time")
        print(f"identical text REST vs direct: {identical}/{len(clips)}")

        short = min(clips, key=lambda c: c.duration)
        payload = short.path.read_bytes()
        before = rss_mb(server.process.pid)
        started = time.perf_counter()
        for _ in range(args.requests):
            client.audio.transcriptions.create(model="whisper-1", file=(short.path.name, payload))
        elapsed = time.perf_counter() - started
        after = rss_mb(server.process.pid)
        print(
            f"server RSS: {before:.1f} MB before, {after:.1f} MB after {args.requests} sequential requests "
            f"({short.id}, {elapsed:.1f} s): growth {after - before:+.1f} MB"
        )


if __name__ == "__main__":
    main()
