"""server/live_run.py and the start-failure classification of server/live_socket.py, on the bundled PocketSphinx
model and real speech: events reach the sink method of their kind, ``finish`` forwards every final before the
session closes, ``abandon`` closes it unflushed and stops the forwarding.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from hearline.audio.decode import decode_audio
from hearline.config import Settings
from hearline.engines.base import EngineError, UnsupportedOption, Word
from hearline.live.events import Error, Final, Lag, Partial, Silence, SpeechStarted
from hearline.live.session import LiveOptions, LiveSession
from hearline.models.download import ModelUnavailable
from hearline.models.pool import ModelPool, ServerBusy, ServerDraining
from hearline.models.resolve import UnknownModel
from hearline.server.live_run import EventSink, LiveRun, deliver
from hearline.server.live_socket import SessionLimit, StartFailure, start_failure
from tests.helpers.corpus import clip


class Recorder(EventSink):
    """Keeps what each method was given, by method."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    async def on_speech_started(self, event: SpeechStarted) -> None:
        self.calls.append(("speech_started", event))

    async def on_partial(self, event: Partial) -> None:
        self.calls.append(("partial", event))

    async def on_final(self, event: Final) -> None:
        self.calls.append(("final", event))

    async def on_silence(self, event: Silence) -> None:
        self.calls.append(("silence", event))

    async def on_lag(self, event: Lag) -> None:
        self.calls.append(("lag", event))

    async def on_error(self, event: Error) -> None:
        self.calls.append(("error", event))


@pytest_asyncio.fixture
async def pool(tmp_path: Path) -> AsyncIterator[ModelPool]:
    pool = ModelPool(Settings.load(model_dir=tmp_path / "models", model="pocketsphinx"))
    yield pool
    await pool.close()


async def test_each_kind_of_event_reaches_its_method() -> None:
    events = [
        SpeechStarted(0, 0.1),
        Partial(0, "go", 0.1),
        Silence(1.0, 1.5),
        Final(0, "go forward", 0.1, 1.0, [Word("go", 0.1, 0.4)]),
        Lag(0.2),
        Error("failed"),
    ]
    sink = Recorder()
    for event in events:
        await deliver(sink, event)
    assert sink.calls == [(event.type, event) for event in events]
    await deliver(EventSink(), events[3])  # a kind a door has no message for: nothing happens


async def test_finish_forwards_every_final_before_the_session_closes(pool: ModelPool) -> None:
    session = LiveSession(pool, None, LiveOptions(language="en"))
    await session.start()
    sink = Recorder()
    run = LiveRun(session, sink, "test")
    await session.push(decode_audio(clip("en_pocketsphinx_goforward").path))
    await run.finish()
    finals = [event for _, event in sink.calls if isinstance(event, Final)]
    assert finals and "forward" in " ".join(f.text for f in finals).lower()
    assert run.forwarder.done() and not run.forwarder.cancelled()
    assert session not in pool.engine_users  # closed


async def test_abandon_closes_the_session_unflushed_and_stops_forwarding(pool: ModelPool) -> None:
    session = LiveSession(pool, None, LiveOptions(language="en"))
    await session.start()
    sink = Recorder()
    run = LiveRun(session, sink, "test")
    audio = decode_audio(clip("en_pocketsphinx_goforward").path)
    await session.push(audio[: audio.size // 2])  # mid-utterance
    await run.abandon()
    assert run.forwarder.done() and session not in pool.engine_users
    assert not [kind for kind, _ in sink.calls if kind == "final"]  # nothing flushed


async def test_drained_waits_for_every_event_emitted_so_far(pool: ModelPool) -> None:
    """What Vosk's lock-step replies and Deepgram's Finalize rely on: after ``drained`` the sink holds every
    event the session had emitted, including the one being delivered when the wait began."""
    session = LiveSession(pool, None, LiveOptions(language="en"))
    await session.start()
    sink = Recorder()
    slow = asyncio.Event()

    async def slow_final(event: Final) -> None:
        await slow.wait()  # a send that takes a while
        sink.calls.append(("final", event))

    sink.on_final = slow_final  # type: ignore[method-assign]
    run = LiveRun(session, sink, "test")
    try:
        await session.push(decode_audio(clip("en_pocketsphinx_goforward").path))
        session.end_utterance()
        await session.settle()
        drained = asyncio.create_task(run.drained())
        await asyncio.sleep(0.2)
        assert not drained.done()  # the final is still being delivered
        slow.set()
        await asyncio.wait_for(drained, 30)
        assert session.events_waiting == 0
        assert any(kind == "final" for kind, _ in sink.calls)
    finally:
        slow.set()
        await run.abandon()


async def test_a_sink_failure_ends_forwarding_and_reaches_the_door(pool: ModelPool) -> None:
    session = LiveSession(pool, None, LiveOptions(language="en"))
    await session.start()
    failures: list[Exception] = []

    class Broken(EventSink):
        async def on_final(self, event: Final) -> None:
            raise KeyError("a door's bug")

        async def on_failure(self, exc: Exception) -> None:
            failures.append(exc)

    run = LiveRun(session, Broken(), "test")
    await session.push(decode_audio(clip("en_pocketsphinx_goforward").path))
    await run.finish()
    assert len(failures) == 1 and isinstance(failures[0], KeyError)
    await run.delivered_until(lambda: False)  # forwarding is over: a wait for anything returns


def test_every_start_error_has_one_classification() -> None:
    assert start_failure(UnknownModel("nope")) is StartFailure.UNKNOWN_MODEL
    assert start_failure(UnsupportedOption("no German")) is StartFailure.UNSUPPORTED
    assert start_failure(ServerBusy("base")) is StartFailure.BUSY
    assert start_failure(ServerDraining("base")) is StartFailure.BUSY
    assert start_failure(SessionLimit(4)) is StartFailure.BUSY
    assert start_failure(EngineError("cannot load")) is StartFailure.UNAVAILABLE
    assert start_failure(ModelUnavailable("download failed", "base")) is StartFailure.UNAVAILABLE
    assert start_failure(OSError("disk")) is StartFailure.UNAVAILABLE
