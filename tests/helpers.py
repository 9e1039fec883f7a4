"""Shared test utilities: a real uvicorn server on a loopback port, the speech corpus, WER."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jiwer
import uvicorn

from hearline.config import Settings
from hearline.server.app import create_app

AUDIO_DIR = (Path(__file__).resolve().parents[1] / ".." / "shared" / "audio").resolve()


@dataclass(frozen=True)
class Clip:
    id: str
    path: Path
    language: str
    duration: float
    text: str | None


def manifest() -> list[Clip]:
    rows = json.loads((AUDIO_DIR / "manifest.json").read_text())
    return [
        Clip(r["id"], AUDIO_DIR / r["file"], r["language"], float(r["duration_s"]), r.get("text"))
        for r in rows
    ]


def english_clips() -> list[Clip]:
    """English mono clips with a human reference transcript."""
    return [
        c for c in manifest()
        if c.language == "en" and c.text and "stereo" not in c.id and "multilingual" not in c.id
    ]  # fmt: skip


def clip(clip_id: str) -> Clip:
    return next(c for c in manifest() if c.id == clip_id)


def normalize(text: str) -> str:
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^\w' ]+", " ", text)
    return " ".join(text.split())


def wer(reference: str | list[str], hypothesis: str | list[str]) -> float:
    if isinstance(reference, str):
        return jiwer.wer(normalize(reference), normalize(hypothesis))  # type: ignore[arg-type]
    return jiwer.wer([normalize(r) for r in reference], [normalize(h) for h in hypothesis])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerThread:
    """A real uvicorn server for one app, in a background thread, on a free loopback port."""

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        self.port = port or free_port()
        self.config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", **config)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextmanager
def running_server(settings: Settings | None = None, **overrides: Any) -> Iterator[ServerThread]:
    """Start ``create_app(settings)`` and wait until the default model is loaded."""
    import httpx

    settings = settings or Settings.load(**overrides)
    app = create_app(settings)
    server = ServerThread(app).start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(server.url + "/health", timeout=5).json().get("status") == "ok":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
        yield server
    finally:
        server.stop()
