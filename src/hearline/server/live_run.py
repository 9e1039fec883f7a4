"""A door's running live session: the session, the task forwarding its events, and what receives them.

Every door turns the same six kinds of event into its own messages.  It says what it does with each kind as the
methods of an :class:`EventSink`; :func:`deliver` is the one place the kinds are told apart, and
:class:`LiveRun` ties a started session to the one forwarding loop: ``finish`` at the client's end of audio
(every final out, then the session closed), ``abandon`` when the client has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

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

    async def on_failure(self, exc: Exception) -> None:
        """The door's own handling of an event failed: forwarding ends, by default with that error."""
        raise exc


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


class LiveRun:
    """A door's started session and the task forwarding its events to the door's sink.

    The doors that answer each client message with what it caused (Vosk's lock-step replies, Deepgram's
    ``Finalize``) wait with :meth:`delivered_until` / :meth:`drained`, re-checked after every delivered event.
    """

    def __init__(self, session: LiveSession, sink: EventSink, door: str) -> None:
        self.session, self.door = session, door
        self._delivered = asyncio.Condition()
        self._delivering = False  # an event taken from the session is being delivered
        self._ended = False  # forwarding is over: the session ended, the client went, or the task was cancelled
        self.forwarder: asyncio.Task[None] = asyncio.create_task(self._forward(sink), name=f"{door}-forward")

    async def _forward(self, sink: EventSink) -> None:
        try:
            async for event in self.session.events():
                self._delivering = True
                await deliver(sink, event)
                self._delivering = False
                async with self._delivered:
                    self._delivered.notify_all()
        except (ConnectionError, OSError, RuntimeError) as exc:  # a stream writer's peer gone (WebSockets: see send)
            logger.debug("%s: could not forward an event: %s", self.door, exc)
        except Exception as exc:  # noqa: BLE001 - handed to the door, which reports or re-raises it
            await sink.on_failure(exc)
        finally:
            self._ended, self._delivering = True, False
            async with self._delivered:
                self._delivered.notify_all()

    async def delivered_until(self, done: Callable[[], bool]) -> None:
        """Wait until ``done()`` holds (checked after each delivered event) or forwarding has ended."""
        async with self._delivered:
            await self._delivered.wait_for(lambda: self._ended or done())

    async def drained(self) -> None:
        """Every event the session has emitted so far has been delivered (or forwarding has ended)."""
        await self.delivered_until(lambda: not self.session.events_waiting and not self._delivering)

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
