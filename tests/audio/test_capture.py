"""PulseAudio capture against a private daemon: device listing, resolution, recording, device loss, CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hearline.audio import capture
from tests.helpers.corpus import clip
from tests.helpers.pulse import PulseDaemon

pytestmark = pytest.mark.audio_device


@pytest.fixture
def virtual_mic(pulse: PulseDaemon) -> Iterator[str]:
    feed = pulse.pactl("load-module", "module-null-sink", "sink_name=micfeed")
    mic = pulse.pactl("load-module", "module-remap-source", "master=micfeed.monitor", "source_name=virtmic")
    try:
        yield "virtmic"
    finally:
        pulse.pactl("unload-module", mic)
        pulse.pactl("unload-module", feed)


def test_devices_list_monitors_and_microphones(pulse: PulseDaemon, virtual_mic: str) -> None:
    devices = {d.name: d for d in capture.list_devices(pulse.server)}
    speakers = devices[f"{pulse.sink}.monitor"]
    assert speakers.kind == "monitor" and speakers.monitor_of == pulse.sink and speakers.is_default
    assert devices[virtual_mic].kind == "microphone" and devices[virtual_mic].monitor_of is None
    assert devices["micfeed.monitor"].kind == "monitor" and not devices["micfeed.monitor"].is_default


def test_resolve_device(pulse: PulseDaemon, virtual_mic: str) -> None:
    assert capture.resolve_device("system", None, pulse.server) == f"{pulse.sink}.monitor"
    assert capture.resolve_device("system", "micfeed", pulse.server) == "micfeed.monitor"  # a sink name works
    assert capture.resolve_device("microphone", virtual_mic, pulse.server) == virtual_mic
    pulse.pactl("set-default-source", virtual_mic)
    try:
        assert capture.resolve_device("microphone", None, pulse.server) == virtual_mic
    finally:
        pulse.pactl("set-default-source", f"{pulse.sink}.monitor")
    with pytest.raises(capture.NoAudioDevice, match="no-such"):
        capture.resolve_device("microphone", "no-such", pulse.server)
    with pytest.raises(ValueError, match="unknown source"):
        capture.resolve_device("speakers", None, pulse.server)


def test_no_sound_server_is_no_audio_device(tmp_path: Path) -> None:
    with pytest.raises(capture.NoAudioDevice, match="sound server"):
        capture.list_devices(f"unix:{tmp_path}/nothing-here")


def test_capture_records_what_is_played(pulse: PulseDaemon) -> None:
    async def record() -> np.ndarray:
        cap = capture.PulseCapture(f"{pulse.sink}.monitor", pulse.server, stall_s=30)
        await cap.open()
        player = await asyncio.to_thread(pulse.play, clip("en_pocketsphinx_goforward").path)
        blocks: list[np.ndarray] = []

        async def read() -> None:
            async for block in cap.blocks():
                blocks.append(block)

        reader = asyncio.create_task(read())
        await asyncio.to_thread(player.wait, 60)
        await asyncio.sleep(0.5)
        await cap.stop()
        await asyncio.wait_for(reader, 30)  # a stopped capture ends its iteration cleanly
        return np.concatenate(blocks)

    audio = asyncio.run(record())
    assert audio.dtype == np.float32
    assert len(audio) > 16000  # more than a second of 16 kHz samples
    assert float(np.abs(audio).max()) > 0.1  # the speech came through, not silence


def test_capture_of_a_removed_device_raises_device_lost(pulse: PulseDaemon) -> None:
    module = pulse.pactl("load-module", "module-null-sink", "sink_name=unplugged")

    async def record() -> None:
        cap = capture.PulseCapture("unplugged.monitor", pulse.server, stall_s=5)
        await cap.open()
        await asyncio.to_thread(pulse.pactl, "unload-module", module)
        try:
            async for _block in cap.blocks():
                pass
        finally:
            await cap.stop()

    with pytest.raises(capture.DeviceLost):
        asyncio.run(record())


def test_capture_of_a_missing_device_raises_device_lost(pulse: PulseDaemon) -> None:
    async def record() -> None:
        cap = capture.PulseCapture("does-not-exist", pulse.server, stall_s=5)
        async for _block in cap.blocks():
            pass

    with pytest.raises(capture.DeviceLost):
        asyncio.run(record())


def test_devices_cli(pulse: PulseDaemon, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "hearline.cli", "devices", "--pulse-server", pulse.server]
    done = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert {"name": f"{pulse.sink}.monitor", "kind": "monitor"}.items() <= rows[0].items()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and f"{pulse.sink}.monitor" in done.stdout and "system" in done.stdout
    down = [sys.executable, "-m", "hearline.cli", "devices", "--pulse-server", f"unix:{tmp_path}/none"]
    done = subprocess.run(down, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0 and "sound server" in done.stdout + done.stderr
