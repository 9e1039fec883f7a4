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
    return [Clip(r["id"], AUDIO_DIR / r["file"], r["language"], float(r["duration_s"]), r.get("text")) for r in rows]


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
def serving(servers: list[uvicorn.Server]) -> Iterator[threading.Thread]:
    """Run ``hearline.server.run.run_servers(servers)`` (what ``hearline serve`` runs) in a thread.

    Yields once every listener has started; on exit stops the main server, which stops the others.
    """
    import asyncio

    from hearline.server import run

    thread = threading.Thread(target=asyncio.run, args=(run.run_servers(servers),), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not all(s.started for s in servers):
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("servers did not start")
            time.sleep(0.05)
        yield thread
    finally:
        servers[0].should_exit = True
        thread.join(timeout=60)


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


class PulseDaemon:
    """A private PulseAudio daemon (own runtime dir and socket) with one null sink, for capture tests.

    Runs in the foreground under our own pid (never ``-D``) so it is stopped by pid, never by name, and
    ignores the user's config (``-n``: no default.pa; HOME points into the runtime dir).
    """

    def __init__(self, runtime_dir: Path, sink: str = "speakers") -> None:
        import subprocess

        self.dir = Path(runtime_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "native"
        self.server = f"unix:{self.socket}"
        self.sink = sink
        self.env = {
            "PATH": "/usr/bin:/bin:/usr/local/bin",
            "HOME": str(self.dir),
            "PULSE_RUNTIME_PATH": str(self.dir),
            "PULSE_STATE_PATH": str(self.dir),
            "XDG_CONFIG_HOME": str(self.dir),
        }
        self.log = open(self.dir / "pulse.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                "pulseaudio", "-n", "--daemonize=no", "--system=false", "--exit-idle-time=-1", "--disallow-exit",
                "--disable-shm", "--log-target=stderr", "--use-pid-file=false",
                f"--load=module-native-protocol-unix socket={self.socket} auth-anonymous=1",
                f"--load=module-null-sink sink_name={sink} rate=48000",
                "--load=module-always-sink",
            ],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited: {(self.dir / 'pulse.log').read_text()[-2000:]}")
            if self.socket.exists() and self.run_pactl("info", check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("pulseaudio did not come up")
            time.sleep(0.05)

    def run_pactl(self, *args: str, check: bool = True) -> Any:
        import subprocess

        return subprocess.run(
            ["pactl", f"--server={self.server}", *args], capture_output=True, text=True, check=check, timeout=30
        )

    def pactl(self, *args: str) -> str:
        return str(self.run_pactl(*args).stdout).strip()

    def play(self, path: Path, device: str | None = None) -> Any:
        """Start playing a file into a sink (real time); returns the ``paplay`` process."""
        import subprocess

        return subprocess.Popen(
            ["paplay", f"--server={self.server}", f"--device={device or self.sink}", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except Exception:  # noqa: BLE001 - any failure to stop politely ends in kill
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


#: sox ``synth`` arguments of each non-speech probe (10 s, 16 kHz mono)
NO_SPEECH_PROBES = {
    "silence": ["trim", "0", "10"],
    "hum": ["synth", "10", "sine", "50", "vol", "0.3"],
    "noise": ["synth", "10", "whitenoise", "vol", "0.1"],
    "music": ["synth", "10", "pluck", "C3", "pluck", "E3", "pluck", "G3", "remix", "-", "tremolo", "2", "90"],
    "clicks": ["synth", "0.002", "square", "1000", "pad", "0", "0.498", "repeat", "19"],
}


def no_speech_probes(folder: Path) -> dict[str, Path]:
    """Write the probes into ``folder``; returns name -> WAV path."""
    import subprocess

    probes = {}
    for name, effects in NO_SPEECH_PROBES.items():
        path = folder / f"{name}.wav"
        channels = "3" if "remix" in effects else "1"
        subprocess.run(["sox", "-n", "-r", "16000", "-b", "16", "-c", channels, str(path), *effects], check=True)
        probes[name] = path
    return probes


def english_dictionary() -> set[str]:
    """Words of the English pronunciation dictionary PocketSphinx ships (to tell English text from other text)."""
    import pocketsphinx

    path = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    return {line.split(" ", 1)[0].split("(", 1)[0] for line in path.read_text(encoding="utf-8").splitlines() if line}


def header_only(mp3: bytes) -> bytes:
    """The ID3 tag and the Xing/Info frame of an MP3: headers, no audio frames."""
    marker = max(mp3.find(b"Info"), mp3.find(b"Xing"))
    assert marker > 0
    start = mp3.rfind(b"\xff", 0, marker)  # sync of the Info frame
    for i in range(marker, len(mp3) - 1):
        if i > start + 4 and mp3[i] == 0xFF and mp3[i + 1] & 0xE0 == 0xE0:
            return mp3[:i]
    raise AssertionError("no audio frame after the Info frame")


def pcm16(clip_id: str) -> bytes:
    """A corpus clip as 16 kHz mono s16le, what raw-PCM doors take."""
    from hearline.audio.decode import decode_audio, float_to_pcm16

    return float_to_pcm16(decode_audio(clip(clip_id).path))


def eventually(check: Any, timeout: float = 120.0, what: str = "condition") -> None:
    """Poll ``check()`` until it is true (a deadline for what must happen, never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, **headers: str) -> Samples:
    """Every sample of the server's ``/metrics`` (Prometheus text format), keyed by name and labels."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(url + "/metrics", headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def metric(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over every series whose labels include ``labels`` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, series), v in samples.items() if n == name and wanted <= series)
