"""Microphone and system-audio ("what this machine hears") capture.

Linux (the implemented path)
    PulseAudio, or PipeWire through ``pipewire-pulse``, which speaks the same protocol.  Capture runs the
    stock ``parec`` client as a subprocess asking for 16 kHz mono s16le, so the sound server does the
    resampling/downmixing and a crash in the audio stack can never take the Python process down.
    ``source=system`` records the *monitor* of the default sink (everything being played);
    ``source=microphone`` records the default source.  ``device`` picks another source by name (``hearline
    devices`` lists them); for ``system`` a sink name also works and means that sink's monitor.
    Devices are listed with ``pactl``.  ``Settings.pulse_server`` (``HEARLINE_PULSE_SERVER``, e.g.
    ``unix:/run/user/1000/pulse/native``) selects a sound server other than the session default, which is
    what a system service or a container needs.

    When the device goes away (unplugged, module unloaded, sound server restarted) ``parec`` exits or stops
    delivering data; :class:`PulseCapture` raises :class:`DeviceLost` and the captions service emits an
    ``error`` event and reconnects with backoff (see ``hearline.live.captions``).

Windows (documented, not implemented here)
    WASAPI loopback records the render endpoint's mix.  With ``sounddevice`` (``pip install
    hearline[capture]``) open ``sounddevice.InputStream(device=<output device index>, samplerate=48000,
    channels=2, dtype="int16", extra_settings=sounddevice.WasapiSettings(loopback=True))`` (needs a
    PortAudio build with WASAPI loopback, e.g. the ``sounddevice`` wheels from 0.5), downmix and resample to
    16 kHz mono, and push the blocks exactly as :class:`PulseCapture` yields them.  Microphones are plain
    ``InputStream(device=<input index>)``.

macOS (documented, not implemented here)
    macOS has no system loopback API for ordinary apps.  Install a loopback driver such as BlackHole
    (``brew install blackhole-2ch``), create a Multi-Output Device in Audio MIDI Setup containing your
    speakers and BlackHole, make it the system output, then capture the "BlackHole 2ch" input device with
    ``sounddevice.InputStream(device="BlackHole 2ch")``.  Microphones are ordinary input devices.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from hearline.audio.raw_stream import RawStream
from hearline.engines.base import SAMPLE_RATE

logger = logging.getLogger(__name__)

SOURCES = ("system", "microphone")
BLOCK_BYTES = 3200  # 100 ms of 16 kHz mono s16le: small enough for low latency, large enough to be cheap
PACTL_TIMEOUT_S = 10.0
DEVICE_CHECK_S = 2.0  # how often a running capture confirms its source still exists


class CaptureError(RuntimeError):
    """Base class of capture failures."""


class NoAudioDevice(CaptureError):
    """No sound server is reachable, or the requested device does not exist."""


class DeviceLost(CaptureError):
    """A running capture stopped delivering audio (device removed, sound server gone)."""


@dataclass(frozen=True)
class Device:
    name: str  # the PulseAudio source name, what ``device=`` takes
    description: str
    kind: Literal["microphone", "monitor"]
    monitor_of: str | None = None  # the sink a monitor source records
    is_default: bool = False  # default source (microphone) or monitor of the default sink (system)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _pactl(args: list[str], server: str | None) -> str:
    exe = shutil.which("pactl")
    if exe is None:
        raise NoAudioDevice("pactl not found: install pulseaudio-utils (PulseAudio or PipeWire's pipewire-pulse)")
    cmd = [exe, *([f"--server={server}"] if server else []), *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PACTL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise NoAudioDevice("the sound server did not answer (pactl timed out)") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise NoAudioDevice(f"no sound server reachable: {detail[-1] if detail else 'pactl failed'}")
    return done.stdout


def _defaults(server: str | None) -> tuple[str | None, str | None]:
    """(default sink, default source) from ``pactl info`` (works on every pactl version)."""
    sink = source = None
    for line in _pactl(["info"], server).splitlines():
        key, _, value = line.partition(":")
        found = value.strip() or None
        if key.strip() == "Default Sink":
            sink = found
        elif key.strip() == "Default Source":
            source = found
    return sink, source


def _raw_sources(server: str | None) -> list[dict[str, str | None]]:
    """[{name, description, monitor_of}] via ``pactl -f json`` (pactl >= 16) or the short listing."""
    try:
        rows = json.loads(_pactl(["-f", "json", "list", "sources"], server))
        return [
            {
                "name": row["name"],
                "description": row.get("description") or row["name"],
                "monitor_of": row.get("monitor_source") or None,  # pactl's JSON names the sink here
            }
            for row in rows
        ]
    except (NoAudioDevice, ValueError, KeyError) as exc:
        logger.debug("pactl JSON listing unavailable (%s); using the short listing", exc)
    out: list[dict[str, str | None]] = []
    for line in _pactl(["list", "short", "sources"], server).splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            name = parts[1]
            monitor_of = name[: -len(".monitor")] if name.endswith(".monitor") else None
            out.append({"name": name, "description": name, "monitor_of": monitor_of})
    return out


def _source_names(server: str | None) -> set[str]:
    return {
        parts[1]
        for line in _pactl(["list", "short", "sources"], server).splitlines()
        if len(parts := line.split("\t")) > 1
    }


def list_devices(server: str | None = None) -> list[Device]:
    """Every capture source of the sound server; raises :class:`NoAudioDevice` when none is reachable."""
    default_sink, default_source = _defaults(server)
    devices = []
    for row in _raw_sources(server):
        name = str(row["name"])
        monitor_of = row["monitor_of"]
        kind: Literal["microphone", "monitor"] = "monitor" if monitor_of else "microphone"
        is_default = (monitor_of == default_sink) if monitor_of else (name == default_source)
        devices.append(Device(name, str(row["description"]), kind, monitor_of, is_default))
    return devices


def resolve_device(source: str, device: str | None = None, server: str | None = None) -> str:
    """The PulseAudio source name to record for ``source`` (``system``/``microphone``) and ``device``."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; use one of: {', '.join(SOURCES)}")
    devices = list_devices(server)
    by_name = {d.name: d for d in devices}
    if device:
        if device in by_name:
            return device
        if source == "system":
            for d in devices:
                if d.monitor_of == device:
                    return d.name
        names = ", ".join(sorted(by_name)) or "none"
        raise NoAudioDevice(f"no capture device named {device!r} (available: {names})")
    default_sink, default_source = _defaults(server)
    if source == "system":
        for d in devices:
            if d.monitor_of and d.monitor_of == default_sink:
                return d.name
        raise NoAudioDevice("no default output (sink) to record system audio from; pass device=<monitor source>")
    if default_source and default_source in by_name:
        return default_source
    raise NoAudioDevice("no default microphone (source); pass device=<source name>")


class PulseCapture:
    """One ``parec`` recording of a PulseAudio source as 16 kHz mono float32 blocks.

    ``blocks()`` yields until :meth:`stop`; if ``parec`` exits on its own or delivers nothing for
    ``stall_s`` seconds, it raises :class:`DeviceLost`.

    ``parec`` is started with :class:`subprocess.Popen` (vfork + exec), not the event loop's
    ``subprocess_exec``: under uvloop that forks the whole threaded server and runs its at-fork hooks
    in the child, which can spin forever before ``exec`` (seen in the test suite; uvloop issue #749).
    Its output is then read through the loop as a pipe.
    """

    def __init__(self, device: str, server: str | None = None, stall_s: float = 10.0) -> None:
        self.device = device
        self.server = server
        self.stall_s = stall_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdout: asyncio.StreamReader | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._stopping = False

    async def open(self) -> None:
        exe = shutil.which("parec")
        if exe is None:
            raise NoAudioDevice("parec not found: install pulseaudio-utils")
        cmd = [
            exe,
            *([f"--server={self.server}"] if self.server else []),
            f"--device={self.device}",
            "--format=s16le",
            f"--rate={SAMPLE_RATE}",
            "--channels=1",
            "--raw",
            "--latency-msec=100",
            "--client-name=hearline",
            "--stream-name=hearline captions",
        ]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=4 * BLOCK_BYTES)
        try:
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), proc.stdout)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        self._proc, self._stdout, self._transport = proc, reader, transport
        logger.info("capturing %s (parec pid %d)", self.device, proc.pid)

    async def blocks(self) -> AsyncIterator[np.ndarray]:
        if self._proc is None:
            await self.open()
        stdout = self._stdout
        assert stdout is not None
        pcm = RawStream("pcm", 2, 1, SAMPLE_RATE)  # parec's reads may end mid-sample
        last_check = time.monotonic()
        while True:
            try:
                data = await asyncio.wait_for(stdout.read(BLOCK_BYTES), timeout=self.stall_s)
            except asyncio.TimeoutError as exc:
                if self._stopping:
                    return
                raise DeviceLost(f"capture device {self.device!r} delivered no audio for {self.stall_s:.0f}s") from exc
            if not data:
                if self._stopping:
                    return
                await self._wait(2)
                raise DeviceLost(f"capture of {self.device!r} ended: {await self._stderr_tail()}")
            now = time.monotonic()
            if now - last_check >= DEVICE_CHECK_S:
                last_check = now
                await self._check_device()
            samples = pcm.push(data)
            if samples.size:
                yield samples

    async def _check_device(self) -> None:
        """PulseAudio moves a stream whose source disappears to another source instead of ending it (and
        this ``parec`` has no ``--no-move``), so look for the source ourselves every few seconds."""
        try:
            names = await asyncio.to_thread(_source_names, self.server)
        except NoAudioDevice as exc:
            raise DeviceLost(f"capture of {self.device!r} lost the sound server: {exc}") from exc
        if self.device not in names:
            raise DeviceLost(f"capture device {self.device!r} was removed")

    async def _wait(self, timeout: float) -> bool:
        """Wait for ``parec`` to exit (in a thread: the loop is not its parent watcher); True if it did."""
        proc = self._proc
        if proc is None:
            return True
        try:
            await asyncio.to_thread(proc.wait, timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    async def _stderr_tail(self) -> str:
        proc = self._proc
        if proc is None or proc.stderr is None:
            return "no process"
        if proc.returncode is None:
            return "parec closed its output"
        err = await asyncio.to_thread(proc.stderr.read, 4096)  # exited: the pipe is at its end
        text = err.decode(errors="replace").strip().splitlines()
        return text[-1] if text else f"parec exited with status {proc.returncode}"

    async def stop(self) -> None:
        """End the recording; safe to call twice and from another task."""
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            if not await self._wait(3):
                logger.warning("parec (pid %d) ignored SIGTERM; killing it", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await self._wait(3)
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()


# -- CLI -----------------------------------------------------------------------------------------
def _devices_command(args: argparse.Namespace) -> int:
    try:
        devices = list_devices(args.pulse_server)
    except NoAudioDevice as exc:
        print(f"error: {exc}")
        return 1
    if args.json:
        print(json.dumps([d.as_dict() for d in devices], indent=1))
        return 0
    if not devices:
        print("no capture devices")
        return 0
    width = max(len(d.name) for d in devices)
    for d in devices:
        use = "system" if d.kind == "monitor" else "microphone"
        mark = "*" if d.is_default else " "
        print(f"{mark} {d.name:<{width}}  {use:<10}  {d.description}")
    print("* = used by default for source=system (monitor of the default output) / source=microphone")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``devices`` command to the CLI."""
    parser = subparsers.add_parser("devices", help="list audio capture devices (microphones and output monitors)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--pulse-server", default=None, help="PulseAudio/PipeWire server, e.g. unix:/run/user/1000/pulse/native"
    )
    parser.set_defaults(func=_devices_command)
