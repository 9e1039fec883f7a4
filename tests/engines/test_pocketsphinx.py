"""engines/pocketsphinx/ (engine.py, stream.py): decoder processes that are leased, kept spare,
and replaced when one dies, the live stream going on with the utterance it was decoding.

The bundled PocketSphinx model and its real decoder processes; real speech from ../shared/audio.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import websockets

from hearline.audio.decode import decode_audio
from hearline.config import Settings
from hearline.engines.base import TranscribeOptions
from hearline.engines.pocketsphinx.engine import DecoderProcess, PocketSphinxEngine
from hearline.live.policies import NativePolicy
from hearline.models.pool import ModelPool
from tests.helpers.corpus import clip, pcm16
from tests.helpers.polling import until
from tests.helpers.server import running_server


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[ModelPool]:
    pool = ModelPool(Settings.load(model_dir=tmp_path / "models", model="pocketsphinx"))
    yield pool
    await pool.close()


async def test_leasing_the_last_idle_decoder_starts_a_spare(pool: ModelPool) -> None:
    """With live streams in use, the next lease finds a decoder already loading instead of starting a
    process and waiting for it; offline requests alone keep no spare."""
    engine = await pool.get(None)
    assert isinstance(engine, PocketSphinxEngine)
    one = engine.memory_bytes()  # the decoder started at load time
    offline = await pool.run(engine, engine.transcribe, np.zeros(1600, dtype=np.float32), TranscribeOptions())
    assert offline.text == "" and engine.memory_bytes() == one
    engine.open_stream(TranscribeOptions(language="en")).close()

    def lease_twice() -> tuple[int, int, object]:
        with engine.lease():
            with_spare = engine.memory_bytes()
            with engine.lease() as spare:
                return with_spare, engine.memory_bytes(), spare.call("decode", b"\0\0" * 1600)

    with_spare, with_two, silence = await asyncio.to_thread(lease_twice)
    assert with_spare == 2 * one  # a spare is loading while the first decoder is leased
    assert with_two == 3 * one  # leasing the spare starts the next one
    assert silence == []  # the spare works (its first call waited for the load)
    assert engine.leases_in_use == 0


async def test_a_stream_whose_decoder_is_killed_goes_on_with_another(pool: ModelPool) -> None:
    engine = await pool.get(None)
    assert isinstance(engine, PocketSphinxEngine)
    audio = decode_audio(clip("en_pocketsphinx_goforward").path)
    half = audio.size // 2

    def stream() -> tuple[str, str, str]:
        stream = engine.open_stream(TranscribeOptions(language="en"))
        try:
            stream.accept(audio[:half])
            worker = stream._worker  # the decoder this utterance leased
            assert worker is not None
            worker.process.send_signal(signal.SIGKILL)
            worker.process.wait(10)
            stream.accept(audio[half:])  # the dead decoder is replaced and hears the utterance so far
            partial = stream.partial()
            assert stream._worker is not None and stream._worker is not worker
            return partial, stream.finish().text, str(worker.process.returncode)
        finally:
            stream.close()

    partial, final, code = await asyncio.to_thread(stream)
    assert code == str(-signal.SIGKILL)
    assert "forward" in partial and "forward" in final
    assert engine.leases_in_use == 0
    assert all(worker.alive for worker in engine._workers)  # the dead one is gone from the pool


async def test_a_live_session_survives_its_decoder_being_killed(tmp_path: Path) -> None:
    """kill -9 of the decoder process under an /stt session mid-utterance: the final still arrives."""
    with running_server(Settings.load(model_dir=tmp_path / "models", model="pocketsphinx")) as server:
        engine = server.config.app.state.pool._slots["pocketsphinx"].engine
        pcm = pcm16("en_pocketsphinx_goforward")
        async with websockets.connect(server.ws_url + "/stt") as ws:
            assert json.loads(await ws.recv())["type"] == "connected"
            await ws.send(json.dumps({"command": "start"}))
            await ws.send(pcm[: len(pcm) // 2])
            await until(lambda: engine.leases_in_use > 0, what="the utterance to lease its decoder")
            for worker in list(engine._workers):
                worker.process.send_signal(signal.SIGKILL)
            await ws.send(pcm[len(pcm) // 2 :])
            await ws.send(json.dumps({"command": "stop"}))
            finals = []
            while not finals:
                message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if message["type"] == "final":
                    finals.append(message["text"])
        assert "forward" in finals[0].lower()


async def test_a_skipped_stretch_thins_the_partials_but_the_final_decodes_it(
    pool: ModelPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PocketSphinx stream: audio passed over by partial decoding keeps the text before the gap and is in
    the final pass, which equals offline decoding of the whole utterance.  A gap skipped step by step
    restarts the first-pass search once, not once per step."""
    engine = await pool.get(None)
    audio = decode_audio(clip("en_ljspeech_LJ001-0001").path)
    offline = await pool.run(engine, engine.transcribe, audio, TranscribeOptions(language="en"))
    third = audio.size // 3
    commands: list[str] = []
    real_call = DecoderProcess.call

    def counted_call(self: DecoderProcess, command: str, *args: object) -> object:
        commands.append(command)
        return real_call(self, command, *args)

    monkeypatch.setattr(DecoderProcess, "call", counted_call)

    def stream_with_gap() -> tuple[str, str, str, str]:
        stream = engine.open_stream(TranscribeOptions(language="en"))
        try:
            stream.accept(audio[:third])
            before = stream.partial()
            for piece in np.array_split(audio[third : 2 * third], 4):
                stream.skip(piece)
            at_gap = stream.partial()
            stream.accept(audio[2 * third :])
            after = stream.partial()
            return before, at_gap, after, stream.finish().text
        finally:
            stream.close()

    before, at_gap, after, final = await asyncio.get_running_loop().run_in_executor(None, stream_with_gap)
    policy = NativePolicy(engine, TranscribeOptions(language="en"))
    policy.begin(0)
    await asyncio.get_running_loop().run_in_executor(None, policy.partial, audio[:8000])
    assert policy.can_skip  # PocketSphinx keeps the audio for its final pass
    await asyncio.get_running_loop().run_in_executor(None, policy.close)
    assert before and at_gap == before  # nothing of the skipped stretch was decoded for the partial
    assert after.startswith(before) and len(after.split()) > len(before.split())
    assert final == offline.text  # the final pass covered the skipped stretch too
    assert commands.count("stream_skip") == 1
    assert engine.leases_in_use == 0
