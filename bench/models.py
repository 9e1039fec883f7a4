"""Model load time and resident memory per engine (not a test): ``python bench/models.py [--model-dir DIR]``.

Measures, each in a fresh subprocess so RSS belongs to that model alone:
  * the bundled PocketSphinx,
  * the tiny random-weight test models the test suite builds (sherpa-onnx SenseVoice and streaming
    Zipformer2, faster-whisper/CTranslate2, whisper.cpp ggml), when their builders import,
  * every catalog / models.yaml model installed in the model directory (real models, wherever they exist).
For each: import time of the engine module, load time, RSS after imports and after loading (delta = the
model), and the time of one 2-second transcription of silence.  The same-run baseline is the RSS of an
interpreter that imported hearline only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from procmem import tree_rss_mb  # noqa: E402


def measure_one(name: str, model_dir: str | None, run: bool = True) -> dict:
    """Runs in the child: resolve, import the engine module, load, transcribe 2 s of real speech."""
    import importlib

    from hearline.audio.decode import decode_audio
    from hearline.config import Settings
    from hearline.engines.base import TranscribeOptions
    from hearline.models.resolve import ENGINE_MODULES, load_engine, resolve_model

    settings = Settings.load(model_dir=Path(model_dir) if model_dir else None)
    rss_base = tree_rss_mb()
    spec = resolve_model(name, settings)
    started = time.perf_counter()
    importlib.import_module(ENGINE_MODULES[spec.engine])
    import_s = time.perf_counter() - started
    rss_imported = tree_rss_mb()
    started = time.perf_counter()
    engine = load_engine(spec, settings)
    load_s = time.perf_counter() - started
    rss_loaded = tree_rss_mb()
    run_s = None
    if run:
        started = time.perf_counter()
        speech = decode_audio(ROOT.parent / "shared" / "audio" / "en_fw_jfk.wav")[:32000]
        engine.transcribe(speech, TranscribeOptions(language=None))
        run_s = round(time.perf_counter() - started, 3)
    return {
        "model": spec.name if not Path(name).is_absolute() else Path(name).name,
        "engine": spec.engine,
        "import_s": round(import_s, 3),
        "load_s": round(load_s, 3),
        "transcribe_2s_s": run_s,
        "rss_base_mb": round(rss_base, 1),
        "rss_imported_mb": round(rss_imported, 1),
        "rss_loaded_mb": round(tree_rss_mb(), 1),
        "model_rss_mb": round(rss_loaded - rss_imported, 1),
        "pool_estimate_mb": round(engine.memory_bytes() / 1024 / 1024, 1),
    }


def build_tiny_models(out: Path) -> list[tuple[str, str]]:
    """Tiny test models (path, label); a builder that cannot run (missing dependency) is reported and skipped."""
    built: list[tuple[str, str]] = []
    builders = [
        ("tiny_sherpa", "build_sense_voice", out / "tiny-sense-voice", "sherpa-onnx sense_voice (tiny)"),
        ("tiny_sherpa", "build_streaming_zipformer2", out / "tiny-zipformer2", "sherpa-onnx online (tiny)"),
        ("tiny_whisper", "build_tiny_whisper", out / "tiny-ct2-whisper", "faster-whisper (tiny)"),
        ("tiny_ggml", "build_ggml_whisper", out / "tiny-ggml.bin", "whisper.cpp ggml (tiny)"),
    ]
    import importlib

    for module_name, func, path, label in builders:
        try:
            builder = getattr(importlib.import_module(f"tests.helpers.{module_name}"), func)
            built.append((str(builder(path)), label))
        except (ImportError, AttributeError, OSError, RuntimeError, ValueError) as exc:
            print(f"# skipped {label}: {exc}", file=sys.stderr)
    return built


def installed_models(model_dir: str | None) -> list[str]:
    from hearline.config import Settings
    from hearline.models.registry import all_entries

    settings = Settings.load(model_dir=Path(model_dir) if model_dir else None)
    return [name for name, entry in all_entries(settings).items() if entry.is_installed(settings.model_dir)]


def run_child(name: str, model_dir: str | None, run: bool) -> dict | str:
    cmd = [sys.executable, __file__, "--one", name] + ([] if run else ["--no-run"])
    if model_dir:
        cmd += ["--model-dir", model_dir]
    env = dict(os.environ, HEARLINE_OFFLINE="1")  # a benchmark never downloads
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ["failed"])[-1]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def baseline_rss() -> float:
    code = "import hearline.models.pool, pathlib;" + "print([l for l in pathlib.Path('/proc/self/status').read_text()"
    code += ".splitlines() if l.startswith('VmRSS')][0].split()[1])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out.strip()) / 1024


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="model directory (default: the settings' model dir)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--no-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-tiny", action="store_true", help="skip the tiny test models")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.model_dir, run=not args.no_run)))
        return

    print(f"baseline: python + hearline.models.pool imported: {baseline_rss():.1f} MB RSS")
    targets: list[tuple[str, str]] = [("pocketsphinx", "bundled")]
    with tempfile.TemporaryDirectory(prefix="hearline-bench-") as tmp:
        if not args.no_tiny:
            targets += build_tiny_models(Path(tmp))
        targets += [(name, "installed") for name in installed_models(args.model_dir)]
        header = f"{'model':34} {'engine':15} {'import s':>8} {'load s':>7} {'2s run':>7} {'RSS imp':>8} " \
                 f"{'RSS load':>8} {'model MB':>8} {'pool est':>8}"  # fmt: skip
        print(header)
        print("-" * len(header))
        for name, label in targets:
            # random-weight test models decode noise (whisper ones up to the 448-token limit): time loads only
            result = run_child(name, args.model_dir, run=label in {"bundled", "installed"})
            shown = label if label not in {"bundled", "installed"} else name
            if isinstance(result, str):
                print(f"{shown[:34]:34} FAILED: {result}")
                continue
            print(
                f"{shown[:34]:34} {result['engine']:15} {result['import_s']:8.2f} {result['load_s']:7.2f} "
                f"{_fmt(result['transcribe_2s_s']):>7} {result['rss_imported_mb']:8.1f} {result['rss_loaded_mb']:8.1f} "
                f"{result['model_rss_mb']:8.1f} {result['pool_estimate_mb']:8.1f}"
            )


if __name__ == "__main__":
    main()
