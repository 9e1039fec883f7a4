"""A private PulseAudio daemon for the capture tests (real audio devices, never the user's)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any


class PulseDaemon:
    """A private PulseAudio daemon (own runtime dir and socket) with one null sink, for capture tests.

    Runs in the foreground under our own pid (never ``-D``) so it is stopped by pid, never by name, and
    ignores the user's config (``-n``: no default.pa; HOME points into the runtime dir).
    """

    def __init__(self, runtime_dir: Path, sink: str = "speakers") -> None:
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
        return subprocess.run(
            ["pactl", f"--server={self.server}", *args], capture_output=True, text=True, check=check, timeout=30
        )

    def pactl(self, *args: str) -> str:
        return str(self.run_pactl(*args).stdout).strip()

    def play(self, path: Path, device: str | None = None) -> Any:
        """Start playing a file into a sink (real time); returns the ``paplay`` process."""
        return subprocess.Popen(
            ["paplay", f"--server={self.server}", f"--device={device or self.sink}", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    def play_to_the_end(self, path: Path, device: str | None = None) -> None:
        """Play a second of silence (a null sink drops the start of its first stream), then ``path``, and wait."""
        silence = self.dir / "silence.wav"
        if not silence.exists():
            subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(silence), "trim", "0", "1.0"], check=True)
        for part in (silence, path):
            proc = self.play(part, device)
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err

    def __enter__(self) -> PulseDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except Exception:  # noqa: BLE001 - any failure to stop politely ends in kill
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
