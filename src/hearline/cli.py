"""``hearline serve | transcribe | models | devices | --version``.

This is the only place logging is configured.  Flags become keyword overrides of
:class:`~hearline.config.Settings` (unset flags are ``None`` and dropped), which keeps the precedence
defaults < config file < ``HEARLINE_*`` env < flags in one spot.  Subcommands added by other modules
(``models``, ``devices``) follow the same convention: ``parser.set_defaults(func=handler)`` where
``handler(args) -> int | None`` returns the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hearline import __version__

logger = logging.getLogger(__name__)

#: ``--format`` names (``txt`` is the file-extension spelling of OpenAI's ``text``)
CLI_FORMATS = {
    "txt": "text", "text": "text", "srt": "srt", "vtt": "vtt", "json": "json", "verbose_json": "verbose_json",
}  # fmt: skip
#: files at least this long get a progress bar while they are transcribed
PROGRESS_MIN_S = 30.0


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from hearline.server import log_redaction  # small; keeps keys in ?token= out of uvicorn's lines

    log_redaction.install()


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model name or path (default: the bundled PocketSphinx English model)")
    parser.add_argument("--language", help="ISO-639-1 code or 'auto' (default: detect)")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], help="inference device")
    parser.add_argument("--compute-type", dest="compute_type", help="e.g. int8, float16 (faster-whisper)")
    parser.add_argument("--threads", type=int, help="inference threads per model (0: engine default)")
    parser.add_argument(
        "--batch-size", dest="batch_size", type=int, help="live window decodes per batched call (8; 1: off)"
    )
    parser.add_argument("--batch-wait-ms", dest="batch_wait_ms", type=float, help="wait for a batch to fill (15)")
    parser.add_argument(
        "--partial-model", dest="partial_model", help="faster model for live partials, e.g. tiny.en (finals: --model)"
    )
    parser.add_argument(
        "--live-final-window",
        dest="live_final_window",
        choices=["full", "short"],
        help="a live final's Whisper window: full (30 s, as offline) or short (the utterance and some silence)",
    )
    parser.add_argument("--model-dir", dest="model_dir", type=Path, help="where models are stored")
    parser.add_argument("--config", dest="config_file", type=Path, help="settings file (TOML or YAML)")
    parser.add_argument("--offline", action="store_true", default=None, help="never download models")
    parser.add_argument("--log-level", dest="log_level", help="debug, info, warning, error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hearline", description="Self-hosted, offline speech-to-text server.")
    parser.add_argument("--version", action="version", version=f"hearline {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = subparsers.add_parser("serve", help="run the HTTP/WebSocket server")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument(
        "--drain-timeout", dest="drain_timeout", type=float, help="seconds SIGTERM waits for live finals (30)"
    )
    serve.add_argument(
        "--max-sessions", dest="max_sessions", type=int, help="live sessions before new ones get 503 (32; 0: no limit)"
    )
    serve.add_argument(
        "--max-sessions-per-model", dest="max_sessions_per_model", nargs="+", metavar="MODEL=N",
        help="live sessions one model may hold, e.g. base=4 (default: --max-sessions alone)",
    )  # fmt: skip
    serve.add_argument(
        "--max-downloads", dest="max_downloads", type=int,
        help="model downloads at once before more get 429 (2; 0: no limit)",
    )  # fmt: skip
    serve.add_argument(
        "--max-session-minutes", dest="max_session_minutes", type=float,
        help="close a live session after this long, finals first (480; 0: never)",
    )  # fmt: skip
    serve.add_argument(
        "--max-connections", dest="max_connections", type=int, help="open connections before 503 (1000; 0: any)"
    )
    serve.add_argument(
        "--header-timeout", dest="header_timeout_s", type=float, help="408 when request headers take longer (10 s)"
    )
    _model_flags(serve)
    serve.add_argument("--max-upload-mb", dest="max_upload_mb", type=float, help="largest accepted upload")
    serve.add_argument(
        "--live-idle-timeout", dest="live_idle_timeout_s", type=float, help="close a silent live socket (s; 0: never)"
    )
    serve.add_argument(
        "--upload-timeout", dest="upload_timeout_s", type=float, help="408 when an upload stalls this long (s)"
    )
    serve.add_argument("--max-audio-minutes", dest="max_audio_minutes", type=float, help="longest upload (0: any)")
    serve.add_argument("--api-key", dest="api_key", help="require this key (Bearer, X-API-Key or ?token=)")
    serve.add_argument("--cors-origins", dest="cors_origins", help="comma-separated allowed browser origins")
    serve.add_argument("--ssl-certfile", dest="ssl_certfile", type=Path, help="TLS certificate (https/wss)")
    serve.add_argument("--ssl-keyfile", dest="ssl_keyfile", type=Path, help="TLS private key")
    serve.add_argument("--stt-port", dest="stt_port", type=int, help="also serve the streaming STT protocol here")
    serve.add_argument("--vosk-port", dest="vosk_port", type=int, help="also serve the Vosk protocol here")
    serve.add_argument("--captions-port", dest="captions_port", type=int, help="also serve captions here")
    serve.add_argument("--wyoming-port", dest="wyoming_port", type=int, help="also serve Wyoming (Home Assistant) here")
    serve.add_argument(
        "--wyoming-zeroconf", dest="wyoming_zeroconf", action="store_true", default=None, help="advertise Wyoming"
    )
    serve.add_argument(
        "--pcm-input", dest="pcm_input", action="store_true", default=None, help="/asr takes raw PCM16, not WebM"
    )
    serve.add_argument(
        "--allow-model-paths", dest="allow_model_paths", nargs="+", type=Path, metavar="DIR",
        help="let clients name model paths inside these directories (default: clients name models only)",
    )  # fmt: skip
    serve.add_argument(
        "--allow-remote-models", dest="allow_remote_models", action="store_true", default=None,
        help="let clients name hub repositories the catalog does not list (they may download)",
    )  # fmt: skip
    serve.set_defaults(func=serve_command)

    transcribe = subparsers.add_parser("transcribe", help="transcribe audio/video files without a server")
    transcribe.add_argument("files", nargs="+", type=Path, metavar="FILE")
    _model_flags(transcribe)
    transcribe.add_argument("--format", dest="format", choices=sorted(CLI_FORMATS), default="txt")
    transcribe.add_argument("--output", type=Path, help="directory for <name>.<ext> files (default: stdout)")
    transcribe.set_defaults(func=transcribe_command)

    from hearline.audio.capture import register_cli
    from hearline.models.cli import register

    register(subparsers)
    register_cli(subparsers)
    return parser


_SETTINGS_KEYS = (
    "host", "port", "model", "language", "device", "compute_type", "threads", "batch_size", "batch_wait_ms",
    "partial_model", "live_final_window", "model_dir", "config_file",
    "offline", "log_level", "max_upload_mb", "max_audio_minutes", "api_key", "cors_origins",
    "ssl_certfile", "ssl_keyfile",
    "stt_port", "vosk_port", "captions_port", "pcm_input", "wyoming_port", "wyoming_zeroconf",
    "allow_model_paths", "allow_remote_models", "drain_timeout", "max_sessions", "live_idle_timeout_s",
    "upload_timeout_s", "max_session_minutes", "max_connections", "header_timeout_s",
    "max_downloads", "max_sessions_per_model",
)  # fmt: skip


def settings_from_args(args: argparse.Namespace) -> Any:
    from hearline.config import Settings

    return Settings.load(**{key: getattr(args, key, None) for key in _SETTINGS_KEYS})


def serve_command(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    configure_logging(settings.log_level)
    from hearline.server.run import ListenerUnavailable, serve

    try:
        serve(settings)
    except ListenerUnavailable as exc:
        print(f"hearline: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def transcribe_command(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    configure_logging(args.log_level or "warning")
    return asyncio.run(_transcribe_files(settings, args.files, CLI_FORMATS[args.format], args.output))


async def _transcribe_files(settings: Any, files: Sequence[Path], response_format: str, output: Path | None) -> int:
    """Transcribe through a :class:`ModelPool` (worker thread) exactly like the server does."""
    from hearline import formats
    from hearline.audio.decode import AudioDecodeError, decode_audio
    from hearline.engines.base import EngineError, TranscribeOptions
    from hearline.languages import UnknownLanguage, engine_code, prompt_for
    from hearline.models.pool import ModelPool
    from hearline.models.resolve import UnknownModel

    pool = ModelPool(settings)
    status = 0
    try:
        try:
            engine = await pool.get(settings.model)
            options = TranscribeOptions(
                language=engine_code(settings.language),
                prompt=prompt_for(settings.language),
                word_timestamps=response_format == "verbose_json",
            )
            engine.check_options(options)
        except (UnknownModel, UnknownLanguage, EngineError) as exc:
            print(f"hearline: error: {exc}", file=sys.stderr)
            return 2
        loop = asyncio.get_running_loop()
        if output is not None:
            output.mkdir(parents=True, exist_ok=True)
        for path in files:
            try:
                audio = await loop.run_in_executor(None, decode_audio, str(path))
            except (AudioDecodeError, OSError) as exc:
                print(f"hearline: error: {path}: {exc}", file=sys.stderr)
                status = 1
                continue
            duration = audio.size / 16000
            try:
                with _progress(path.name, duration) as on_segment:
                    transcript = await pool.run(engine, engine.transcribe, audio, options, on_segment)
            except EngineError as exc:
                print(f"hearline: error: {path}: {exc}", file=sys.stderr)
                status = 1
                continue
            body = formats.render(transcript, response_format, words=True)
            text = json.dumps(body, ensure_ascii=False, indent=2) + "\n" if isinstance(body, dict) else body
            if output is None:
                sys.stdout.write(text)
                sys.stdout.flush()
            else:
                target = output / f"{path.stem}.{formats.EXTENSIONS[response_format]}"
                target.write_text(text, encoding="utf-8")
                print(f"wrote {target}", file=sys.stderr)
    finally:
        await pool.close()
    return status


class _progress:
    """A rich progress bar over audio seconds, advanced from the worker thread by ``on_segment``."""

    def __init__(self, label: str, duration: float) -> None:
        self.label = label
        self.duration = duration
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Callable[[Any], None] | None:
        if self.duration < PROGRESS_MIN_S:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(self.label, total=self.duration)
        return self._on_segment

    def _on_segment(self, segment: Any) -> None:
        self._progress.update(self._task, completed=min(self.duration, segment.end))

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            if exc[0] is None:
                self._progress.update(self._task, completed=self.duration)
            self._progress.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        result = func(args)
    except ValidationError as exc:
        print(f"hearline: invalid setting: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"hearline: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
