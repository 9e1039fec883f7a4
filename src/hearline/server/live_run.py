"""A door's running live session: the session, the task forwarding its events, and what receives them.

Every door turns the same six kinds of event into its own messages.  It says what it does with each kind as the
methods of an :class:`EventSink`; :func:`deliver` is the one place the kinds are told apart, :func:`forward`
the one forwarding loop, and :class:`LiveRun` ties a started session to its forwarder: ``finish`` at the
client's end of audio (every final out, then the session closed), ``abandon`` when the client has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from hearline.live.events import Error, Event, Final, Lag, Partial, Silence, SpeechStarted
from hearline.live.session import LiveSession

logger = logging.getLogger(__name__)


class EventSink:
    """What a door does with each kind of LiveSession event: a door overrides the kinds it has messages for."""

    async def on_speech_started(self, event: SpeechStarted) -> None:
        """Speech began (VAD)."""

    async def on_partial(self, event: Partial) -> None:
        """The open utterance's text so far."""

    async def on_final(self, event: Final) -> None:
        """An utterance's final text (possibly empty)."""

    async def on_silence(self, event: Silence) -> None:
        """An endpoint: speech stopped."""

    async def on_lag(self, event: Lag) -> None:
        """How far transcription is behind the audio received."""

    async def on_error(self, event: Error) -> None:
        """A job failed; the session goes on unless ``event.fatal``."""


async def deliver(sink: EventSink, event: Event) -> None:
    """Hand ``event`` to the sink's method for its kind (the one place events are told apart for the doors)."""
    match event:
        case SpeechStarted():
            await sink.on_speech_started(event)
        case Partial():
            await sink.on_partial(event)
        case Final():
            await sink.on_final(event)
        case Silence():
            await sink.on_silence(event)
        case Lag():
            await sink.on_lag(event)
        case Error():
            await sink.on_error(event)


async def forward(session: LiveSession, sink: EventSink, door: str) -> None:
    """Every event of ``session`` to ``sink`` until the session ends (a door's forwarder task)."""
    try:
        async for event in session.events():
            await deliver(sink, event)
    except (ConnectionError, OSError, RuntimeError) as exc:  # a stream writer's peer gone (WebSockets: see send)
        logger.debug("%s: could not forward an event: %s", door, exc)


class LiveRun:
    """A door's started session and the task forwarding its events to the client."""

    def __init__(self, session: LiveSession, forward: Coroutine[Any, Any, None], name: str) -> None:
        self.session = session
        self.forwarder: asyncio.Task[None] = asyncio.create_task(forward, name=name)

    async def finish(self) -> None:
        """The client's end of audio: every final forwarded, then the session closed."""
        try:
            await self.session.flush()
            await self.forwarder
        finally:
            await self.session.close()

    async def abandon(self) -> None:
        """The client has gone (or the door gives up): the session closed unflushed, forwarding stopped."""
        await self.session.close()
        self.forwarder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.forwarder
