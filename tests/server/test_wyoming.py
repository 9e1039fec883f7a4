"""The Wyoming door (Home Assistant): a real listener in the test's event loop, the `wyoming` package's client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info

from hearline.audio.decode import decode_audio
from hearline.config import Settings
from hearline.server.app import create_app
from hearline.server.wyoming import WyomingServer
from tests.helpers.corpus import clip, wer
from tests.helpers.polling import until

CLIP = "en_fw_jfk"
TIMEOUT = 180


@contextlib.asynccontextmanager
async def wyoming_server(tmp_path: Path, **overrides) -> AsyncIterator[int]:  # type: ignore[no-untyped-def]
    settings = Settings.load(model_dir=tmp_path / "models", **overrides)
    app = create_app(settings)
    server = WyomingServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        await app.state.pool.get(None)
        yield server.port
    finally:
        await server.stop()
        await app.state.pool.close()


def stereo_48k_pcm(clip_id: str) -> bytes:
    """The clip at 48 kHz, two channels, s16le (a different rate and layout than the engine's)."""
    audio = decode_audio(clip(clip_id).path)
    up = np.interp(np.arange(len(audio) * 3) / 3.0, np.arange(len(audio)), audio)
    pcm = (np.clip(up, -1.0, 1.0) * 32767).astype("<i2")
    return np.stack([pcm, pcm], axis=1).tobytes()


async def read(client: AsyncTcpClient) -> Event | None:
    return await asyncio.wait_for(client.read_event(), TIMEOUT)


async def first_reply(port: int, event: Event) -> Event | None:
    """Send one event on a new connection; the server's first reply."""
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    try:
        await client.write_event(event)
        return await read(client)
    finally:
        await client.disconnect()


async def transcribe(port: int, pcm: bytes, extra: list[Event] | None = None) -> list[Event]:
    """Send one stream (48 kHz stereo 16-bit, odd-sized chunks); every event up to the transcript."""
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    try:
        for event in extra or []:
            await client.write_event(event)
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=48000, width=2, channels=2).event())
        step = 48000 * 4 // 10 + 3  # ~0.1 s, frames split across chunks
        for offset in range(0, len(pcm), step):
            chunk = AudioChunk(rate=48000, width=2, channels=2, audio=pcm[offset : offset + step])
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        events: list[Event] = []
        while True:
            event = await read(client)
            assert event is not None, f"connection closed after {[e.type for e in events]}"
            events.append(event)
            if Transcript.is_type(event.type):
                return events
    finally:
        await client.disconnect()


async def test_describe_lists_the_model_with_languages(tmp_path: Path) -> None:
    async with wyoming_server(tmp_path) as port:
        event = await first_reply(port, Describe().event())
    assert event is not None and Info.is_type(event.type)
    info = Info.from_event(event)
    assert len(info.asr) == 1
    program = info.asr[0]
    assert program.name == "hearline" and program.installed and program.supports_transcript_streaming
    assert program.models[0].name == "pocketsphinx"  # the default first
    assert "en" in program.models[0].languages
    others = {model.name: model.languages for model in program.models[1:]}
    # the Whisper models shipped in hearline[whisper] count as installed: listed, multilingual base
    assert "base" in others and {"de", "fr", "ja"} <= set(others["base"]), others
    assert len(program.models) == len({model.name for model in program.models})


async def test_stream_at_48k_stereo_is_transcribed(tmp_path: Path) -> None:
    async with wyoming_server(tmp_path) as port:
        events = await transcribe(port, stereo_48k_pcm(CLIP))
    types = [e.type for e in events]
    assert TranscriptStart.is_type(types[0])
    chunks = [TranscriptChunk.from_event(e).text for e in events if TranscriptChunk.is_type(e.type)]
    assert chunks, types
    assert TranscriptStop.is_type(types[-2]) and Transcript.is_type(types[-1])
    text = Transcript.from_event(events[-1]).text
    assert wer(clip(CLIP).text, text) < 0.5, text  # measured: 0.364 (PocketSphinx, en_fw_jfk as 48 kHz stereo)
    assert not any(Error.is_type(t) for t in types)


async def test_oversize_header_is_refused_and_the_server_keeps_serving(tmp_path: Path) -> None:
    async with wyoming_server(tmp_path) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b'{"type": "audio-chunk", "payload_length": 100000000}\n')
        await writer.drain()
        header = await asyncio.wait_for(reader.readline(), TIMEOUT)
        assert b'"error"' in header
        rest = await asyncio.wait_for(reader.read(), TIMEOUT)  # then the server closes the connection
        assert b"exceeds" in rest or b"exceeds" in header
        writer.close()
        # Not JSON at all: also an error event, then closed.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello there\n")
        await writer.drain()
        assert b'"error"' in await asyncio.wait_for(reader.readline(), TIMEOUT)
        writer.close()
        events = await transcribe(port, stereo_48k_pcm("en_pocketsphinx_goforward"))
    assert "forward" in Transcript.from_event(events[-1]).text


async def test_unknown_event_is_ignored(tmp_path: Path) -> None:
    async with wyoming_server(tmp_path) as port:
        events = await transcribe(
            port, stereo_48k_pcm("en_pocketsphinx_goforward"), extra=[Event(type="run-satellite", data={"x": 1})]
        )
    assert not any(Error.is_type(e.type) for e in events)
    assert "forward" in Transcript.from_event(events[-1]).text


async def test_unknown_model_is_an_error_event(tmp_path: Path) -> None:
    async with wyoming_server(tmp_path) as port:
        event = await first_reply(port, Transcribe(name="no-such-model").event())
    assert event is not None and Error.is_type(event.type)


@pytest.mark.usefixtures("whisper_default")
async def test_whisper_default(tmp_path: Path) -> None:
    async with wyoming_server(tmp_path) as port:
        events = await transcribe(port, stereo_48k_pcm(CLIP))
    text = Transcript.from_event(events[-1]).text
    assert wer(clip(CLIP).text, text) < 0.2, text  # measured: 0.000 (Whisper base, the same stream)


async def test_language_the_model_lacks_is_refused_at_transcribe(tmp_path: Path) -> None:
    async with wyoming_server(tmp_path) as port:
        event = await first_reply(port, Transcribe(language="de").event())
        assert event is not None and Error.is_type(event.type)
        error = Error.from_event(event)
        assert error.code == "unsupported_language" and "'de'" in error.text
        events = await transcribe(port, stereo_48k_pcm("en_pocketsphinx_goforward"))  # the server goes on
    assert "forward" in Transcript.from_event(events[-1]).text


async def test_zeroconf_announces_the_listener_and_withdraws_it_on_stop(tmp_path: Path) -> None:
    """Home Assistant finds Wyoming servers by browsing ``_wyoming._tcp`` over mDNS: a real zeroconf browser
    on this machine's network resolves the announcement, connects to what it names, and sees it go on stop."""
    from zeroconf import ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    service = "_wyoming._tcp.local."
    changes: list[tuple[str, ServiceStateChange]] = []

    def on_change(zeroconf: object, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        changes.append((name, state_change))

    app = create_app(Settings.load(model_dir=tmp_path / "models"))
    server = WyomingServer(app, "127.0.0.1", 0, zeroconf=True)
    browser_zc = AsyncZeroconf()
    browser = AsyncServiceBrowser(browser_zc.zeroconf, service, handlers=[on_change])
    name = f"{server.zeroconf_name}.{service}"
    try:
        await server.start()
        info = AsyncServiceInfo(service, name)
        assert await info.async_request(browser_zc.zeroconf, 10_000), "the announcement resolves"
        assert info.port == server.port and info.parsed_addresses() == ["127.0.0.1"]  # what it is bound to
        reply = await first_reply(server.port, Describe().event())
        assert reply is not None and Info.is_type(reply.type)
        await until(lambda: (name, ServiceStateChange.Added) in changes)
        await server.stop()
        await until(lambda: (name, ServiceStateChange.Removed) in changes)
    finally:
        await server.stop()
        await browser.async_cancel()
        await browser_zc.async_close()
        await app.state.pool.close()
