"""The ``hearline`` command, run as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import types
from pathlib import Path

import httpx
import pytest

from hearline import __version__
from tests.helpers.corpus import clip
from tests.helpers.server import free_port, says_ok, serving, wait_spawned

GO_FORWARD = clip("en_pocketsphinx_goforward")
EXPECTED = "go forward ten meters"
SRT_BLOCK = re.compile(r"(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+?)\n(?:\n|$)")


def hearline(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hearline.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_version() -> None:
    result = hearline("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"hearline {__version__}"


def test_help_lists_commands() -> None:
    result = hearline("--help")
    assert result.returncode == 0
    for command in ("serve", "transcribe"):
        assert command in result.stdout


def test_transcribe_every_format(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for fmt in ("txt", "srt", "vtt", "json", "verbose_json"):
        target = out / fmt
        result = hearline("transcribe", str(GO_FORWARD.path), "--format", fmt, "--output", str(target))
        assert result.returncode == 0, result.stderr
    stem = GO_FORWARD.path.stem
    assert (out / "txt" / f"{stem}.txt").read_text() == EXPECTED + "\n"
    srt = (out / "srt" / f"{stem}.srt").read_text()
    blocks = SRT_BLOCK.findall(srt)
    assert len(blocks) == 1 and blocks[0][0] == "1" and blocks[0][3] == EXPECTED
    assert blocks[0][1] < blocks[0][2]
    vtt = (out / "vtt" / f"{stem}.vtt").read_text()
    assert vtt.startswith("WEBVTT\n\n") and EXPECTED in vtt
    assert json.loads((out / "json" / f"{stem}.json").read_text())["text"] == EXPECTED
    verbose = json.loads((out / "verbose_json" / f"{stem}.json").read_text())
    assert verbose["language"] == "english"
    assert verbose["segments"][0]["text"].strip() == EXPECTED
    assert [w["word"] for w in verbose["words"]] == EXPECTED.split()


def test_transcribe_to_stdout_and_errors(tmp_path: Path) -> None:
    result = hearline("transcribe", str(GO_FORWARD.path))
    assert result.returncode == 0
    assert result.stdout == EXPECTED + "\n"

    junk = tmp_path / "junk.wav"
    junk.write_text("not audio")
    result = hearline("transcribe", str(junk), str(GO_FORWARD.path))
    assert result.returncode == 1  # one file failed...
    assert "junk.wav" in result.stderr and "not a recognised audio" in result.stderr
    assert result.stdout == EXPECTED + "\n"  # ...the other was still transcribed

    result = hearline("transcribe", "--model", "no-such-model", str(GO_FORWARD.path))
    assert result.returncode == 2 and "not found" in result.stderr


def test_progress_bar_on_long_file(tmp_path: Path) -> None:
    long_file = tmp_path / "long.wav"
    subprocess.run(["sox", str(GO_FORWARD.path), str(long_file), "pad", "0", "30"], check=True, capture_output=True)
    result = hearline("transcribe", str(long_file), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["text"].startswith(EXPECTED)  # PocketSphinx may add words in the silence
    assert "long.wav" in result.stderr and re.search(r"33/33 s", result.stderr), result.stderr


def test_serve_starts_answers_and_stops(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "HEARLINE_MAX_UPLOAD_MB": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hearline.cli", "serve", "--port", str(port), "--model-dir", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_spawned(proc, f"http://127.0.0.1:{port}/health", says_ok)
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/audio/transcriptions",
            files={"file": (GO_FORWARD.path.name, GO_FORWARD.path.read_bytes())},
            timeout=60,
        )
        assert response.json()["text"] == EXPECTED
        too_big = httpx.post(
            f"http://127.0.0.1:{port}/v1/audio/transcriptions", files={"file": ("x.wav", b"\0" * 2_000_000)}, timeout=60
        )
        assert too_big.status_code == 413  # the env setting reached the server
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "default model: bundled PocketSphinx" in output  # the log says which default it chose


@pytest.mark.parametrize("flag", ["--stt-port", "--vosk-port", "--captions-port"])
def test_extra_listener_flags_are_accepted(flag: str) -> None:
    from hearline.cli import build_parser

    args = build_parser().parse_args(["serve", flag, "9999"])
    assert getattr(args, flag[2:].replace("-", "_")) == 9999


def test_extra_listener_shares_the_main_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--stt-port``: run.py asks the protocol module for ``standalone_app(main_app)`` and serves it too."""
    from fastapi import FastAPI

    from hearline.config import Settings
    from hearline.server import run

    fake = types.ModuleType("fake_stt")

    def standalone_app(main_app: FastAPI) -> FastAPI:
        app = FastAPI()

        @app.get("/pool")
        async def pool() -> dict[str, bool]:
            return {"shared": main_app.state.pool is not None and main_app.state.settings.port == main_port}

        return app

    fake.standalone_app = standalone_app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_stt", fake)
    monkeypatch.setitem(run.EXTRA_LISTENERS, "stt_port", "fake_stt")
    main_port, extra_port = free_port(), free_port()
    servers = run.build_servers(Settings.load(port=main_port, stt_port=extra_port, log_level="warning"))
    assert len(servers) == 2
    with serving(servers) as thread:
        assert httpx.get(f"http://127.0.0.1:{extra_port}/pool", timeout=60).json() == {"shared": True}
        assert httpx.get(f"http://127.0.0.1:{main_port}/health", timeout=60).status_code == 200
    assert not thread.is_alive()  # the extra listener stopped with the main one


def test_extra_listener_without_standalone_app(monkeypatch: pytest.MonkeyPatch) -> None:
    from hearline.config import Settings
    from hearline.server import run

    monkeypatch.setitem(sys.modules, "fake_vosk", types.ModuleType("fake_vosk"))
    monkeypatch.setitem(run.EXTRA_LISTENERS, "vosk_port", "fake_vosk")
    with pytest.raises(run.ListenerUnavailable, match="--vosk-port"):
        run.build_servers(Settings.load(vosk_port=free_port()))
