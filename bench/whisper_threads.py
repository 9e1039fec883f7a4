"""Threads per Whisper replica (not a test): ``python bench/whisper_threads.py [--model base] [--calls 8]``.

The pool runs ``max_concurrency_per_model`` CTranslate2 replicas of a Whisper model; each has its own intra-op
threads.  For the replica count of this machine, each thread count (a share of the cores: the baseline, up to
all of them) is timed twice: one caller alone (a lone live session's pass: latency) and one caller per
replica at once (a busy server: throughput).  Each call is one 30 s window encode plus a greedy decode of a
real English clip.  What ``default_threads`` picks is marked.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.corpus import english_clips  # noqa: E402

from hearline.audio.decode import decode_audio  # noqa: E402
from hearline.config import Settings  # noqa: E402
from hearline.engines.base import Engine, TranscribeOptions  # noqa: E402
from hearline.engines.faster_whisper import default_threads  # noqa: E402
from hearline.models.resolve import load_engine, resolve_model  # noqa: E402


def timed_calls(engine: Engine, audio: np.ndarray, options: TranscribeOptions, calls: int, callers: int) -> float:
    """Seconds per call with ``callers`` threads sharing ``calls`` calls."""

    def work(n: int) -> None:
        for _ in range(n):
            engine.transcribe(audio, options)

    threads = [threading.Thread(target=work, args=(calls // callers,)) for _ in range(callers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return (time.perf_counter() - started) / (calls // callers * callers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--calls", type=int, default=8)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    workers = Settings.load().max_concurrency_per_model
    chosen = default_threads(workers)
    audio = decode_audio(english_clips()[0].path)
    options = TranscribeOptions(language="en", beam_size=1, fallback=False, vad_filter=False)
    print(f"model {args.model}; {cores} cores, {workers} replicas; {args.calls} calls each")
    print(f"{'threads/replica':>15} {'alone s/call':>13} {'all replicas s/call':>20}")
    for threads in sorted({max(1, cores // workers), chosen, cores}):
        settings = Settings.load(model_dir=Path(tempfile.mkdtemp()), threads=threads)
        engine = load_engine(resolve_model(args.model, settings), settings)
        engine.transcribe(audio, options)  # warm-up
        alone = timed_calls(engine, audio, options, args.calls, 1)
        busy = timed_calls(engine, audio, options, args.calls, workers)
        mark = "  <- default" if threads == chosen else "  (baseline: the cores shared out)" if threads < chosen else ""
        print(f"{threads:>15} {alone:>13.3f} {busy:>20.3f}{mark}", flush=True)
        engine.close()


if __name__ == "__main__":
    main()
