"""Draft Whisper windows (not a test): ``python bench/whisper_draft.py [--model base] [--pads 500 1000 1500]``.

A live partial pass (``TranscribeOptions.draft``) is encoded with its audio and ``DRAFT_PAD_FRAMES`` of silence
instead of a full 30 s window.  For each padding (mel frames; 100 a second) and the baseline (full windows, the
same run, the same engine), every reference clip of the chosen languages that fits one window is decoded as a
partial pass decodes it (greedy, one temperature, word times, no VAD) through ``decode_windows``: corpus WER
against the human references and the decode time.  Target: WER within 0.02 of the full window's at about half its
time (only partials are drafts: finals always see full windows).  ``--final`` decodes as a final pass does (beam
5, temperature fallback): what drafting finals too would cost in accuracy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.corpus import manifest, wer  # noqa: E402

from hearline.audio.decode import decode_audio  # noqa: E402
from hearline.config import Settings  # noqa: E402
from hearline.engines.base import TranscribeOptions, WindowRequest  # noqa: E402
from hearline.engines.faster_whisper import FasterWhisperEngine, draft  # noqa: E402
from hearline.models.resolve import load_engine, resolve_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--languages", nargs="+", default=["en"])
    parser.add_argument("--pads", type=int, nargs="+", default=[500, draft.DRAFT_PAD_FRAMES, 1500])
    parser.add_argument("--final", action="store_true", help="decode as a final pass does (beam 5, fallback)")
    args = parser.parse_args()

    settings = Settings.load(model_dir=Path(tempfile.mkdtemp()), threads=args.threads)
    engine = load_engine(resolve_model(args.model, settings), settings)
    if not isinstance(engine, FasterWhisperEngine):
        sys.exit(f"{args.model}: not a faster-whisper model")
    clips = [c for c in manifest() if c.language in args.languages and c.text and c.duration <= 29.5]
    audio = [decode_audio(c.path) for c in clips]
    how = "as a final (beam 5, temperature fallback)" if args.final else "as a partial (greedy)"
    print(f"model {engine.name}, {args.threads} threads; {len(clips)} clips ({', '.join(args.languages)}), {how}")
    print(f"{'encoder input':>24} {'WER':>6} {'decode s':>9}")

    def run(label: str, drafts: bool) -> None:
        requests = [
            WindowRequest(a, TranscribeOptions(language=c.language, beam_size=5 if args.final else 1,
                                               fallback=args.final, word_timestamps=True, vad_filter=False,
                                               draft=drafts))
            for c, a in zip(clips, audio, strict=True)
        ]  # fmt: skip
        started = time.perf_counter()
        texts = [engine.decode_windows([r])[0].text for r in requests]
        elapsed = time.perf_counter() - started
        print(f"{label:>24} {wer([c.text or '' for c in clips], texts):>6.3f} {elapsed:>9.2f}", flush=True)

    run("30 s (baseline)", drafts=False)
    default = draft.DRAFT_PAD_FRAMES
    for pad in args.pads:
        with mock.patch.object(draft, "DRAFT_PAD_FRAMES", pad):
            mark = " (default)" if pad == default else ""
            run(f"audio + {pad / 100:g} s{mark}", drafts=True)
    engine.close()


if __name__ == "__main__":
    main()
