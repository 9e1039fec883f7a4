"""Batched Whisper window decoding (not a test): ``python bench/whisper_batch.py [--model base] [--sizes 2 4 8]``.

What the scheduler's Batcher buys when several live sessions need a window decoded at once: for each
batch size, that many English reference windows (<= 30 s, the partial passes' kind: greedy, no VAD)
decoded one by one (the baseline, same run, same engine) and as one ``decode_windows`` call; wall time,
speed-up, and corpus WER of both against the human references (batching must not change the text).
Live-session figures with batching on and off: ``python bench/live.py --batch-sizes 1 8``.
Target: speed-up >= 1.3 x at batch 4 and above, WER batched <= one-by-one + 0.01.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.corpus import english_clips, wer  # noqa: E402

from hearline.audio.decode import decode_audio  # noqa: E402
from hearline.config import Settings  # noqa: E402
from hearline.engines.base import TranscribeOptions, WindowRequest  # noqa: E402
from hearline.models.resolve import load_engine, resolve_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeat", type=int, default=2, help="runs per size; the fastest counts")
    parser.add_argument("--beam-size", type=int, default=1, help="1: the partial passes' greedy search")
    args = parser.parse_args()

    settings = Settings.load(model_dir=Path(tempfile.mkdtemp()), threads=args.threads)
    engine = load_engine(resolve_model(args.model, settings), settings)
    decode = getattr(engine, "decode_windows", None)
    if decode is None:
        sys.exit(f"{args.model}: this engine has no batched window decoding")
    clips = [c for c in english_clips() if c.duration <= 29.5]
    options = TranscribeOptions(
        language="en", beam_size=args.beam_size, fallback=False, word_timestamps=True, vad_filter=False
    )
    print(f"model {engine.name}, {args.threads} threads, beam {args.beam_size}; {len(clips)} English windows available")
    engine.transcribe(decode_audio(clips[0].path), options)  # warm-up
    header = ("batch", "audio s", "one by one s", "batched s", "speed-up", "WER 1x1", "WER batch")
    print("{:>5} {:>8} {:>13} {:>10} {:>9} {:>8} {:>10}".format(*header))
    for size in args.sizes:
        chosen = [clips[i % len(clips)] for i in range(size)]
        audio = [decode_audio(c.path) for c in chosen]
        refs = [c.text or "" for c in chosen]
        alone_s, batched_s = float("inf"), float("inf")
        for _ in range(args.repeat):
            started = time.perf_counter()
            alone = [engine.transcribe(a, options) for a in audio]
            alone_s = min(alone_s, time.perf_counter() - started)
            started = time.perf_counter()
            batched = decode([WindowRequest(a, options) for a in audio])
            batched_s = min(batched_s, time.perf_counter() - started)
        seconds = sum(a.size for a in audio) / 16000
        wer_alone = wer(refs, [t.text for t in alone])
        wer_batched = wer(refs, [t.text for t in batched])
        same = sum(a.text == b.text for a, b in zip(alone, batched, strict=True))
        print(f"{size:>5} {seconds:>8.1f} {alone_s:>13.2f} {batched_s:>10.2f} {alone_s / batched_s:>8.2f}x "
              f"{wer_alone:>8.3f} {wer_batched:>10.3f}   ({same}/{size} texts identical)")  # fmt: skip
    engine.close()


if __name__ == "__main__":
    main()
