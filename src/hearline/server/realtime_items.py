"""Realtime conversation items: the live session's events, told as Realtime item events.

Mapping choices worth knowing when reading a client log:

- One *item* per utterance.  Its id is announced by ``input_audio_buffer.speech_started`` (server
  VAD) and reused by every later event for that utterance.
- Deltas stream while the person speaks, i.e. *before* ``input_audio_buffer.committed`` (OpenAI
  sends them after; clients key them by ``item_id``, which is already known from ``speech_started``).
- Deltas carry only words that have firmed up and always concatenate to the ``...completed``
  transcript (see :mod:`hearline.server.realtime_deltas`).
- With server VAD, ``speech_stopped`` + ``committed`` are sent when the session detects the endpoint
  (its ``Silence`` event; ``audio_end_ms`` is the end of speech on the audio clock) and
  ``completed`` follows when the final text is ready.  An utterance that ends otherwise (the
  pipeline's maximum utterance length, end of stream) is committed by the server when its final
  arrives; with ``turn_detection: null`` that is the only case besides the client's own commit.
- A client ``commit`` of audio in which no utterance has been reported yet is tied to the first
  utterance that starts before the commit point; if none does (server VAD heard no speech), the item
  completes with ``""`` once that is known: when a later utterance starts or the stream is replaced.
- Every commit (client or server) is followed by the user item it adds: ``conversation.item.created``
  when the client speaks the beta shape, ``conversation.item.added`` in the GA shape, whose
  ``conversation.item.done`` (the item with its transcript) follows ``...completed`` or ``...failed``
  -- GA clients that track items by added/done see each one finished.  The shape is the one of the
  client's last session update (before any: ``OpenAI-Beta: realtime=v1`` or not).
- ``...completed`` carries ``usage`` (``duration``: the utterance's seconds), which the SDK's types
  require.  With ``include: ["item.input_audio_transcription.logprobs"]`` it also carries ``logprobs``,
  one entry per word from the engine's word probabilities (the same numbers as the REST API's), and so
  does the delta that closes an item; deltas from partials have none, since partial hypotheses carry
  no word probabilities.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from hearline.engines.base import Word
from hearline.live.session import Error, Final, Partial, Silence, SpeechStarted
from hearline.server.live_run import EventSink
from hearline.server.live_socket import SocketSender
from hearline.server.realtime_deltas import ItemText, completed_words
from hearline.server.realtime_wire import (
    SERVER_ERROR,
    RealtimeError,
    SessionConfig,
    completed_payload,
    delta_payload,
    error_body,
    new_id,
    user_item,
)

logger = logging.getLogger("hearline.server.realtime_ws")  # the connection's logger, as before the split

CLOCK_SLACK_MS = 20.0  # the session clock trails the client's by the resampler's delay


class RealtimeItems:
    """Server side of a Realtime connection: sending events, and the items of the live stream's utterances.

    A base of :class:`~hearline.server.realtime_ws.RealtimeConnection`, which sets these attributes.
    """

    ws: WebSocket
    config: SessionConfig
    sender: SocketSender
    closed: bool
    clock_ms: float
    buffer_ms: float
    open_item: str | None
    utt_items: dict[tuple[int, int], str]
    pending_commits: deque[tuple[str, float, float]]
    committed: set[str]
    discarded: set[tuple[int, int]]
    sent_text: dict[str, ItemText]
    last_committed: str | None
    item_previous: dict[str, str | None]
    ga_shape: bool

    async def send(self, event_type: str, **payload: Any) -> None:
        event = {"type": event_type, "event_id": new_id("event"), **payload}
        if not self.closed and not await self.sender.send(event):
            self.closed = True  # the client has gone

    async def send_error(self, err: RealtimeError, client_event_id: Any = None) -> None:
        await self.send("error", error=error_body(err, client_event_id))

    def stream_sink(self, stream_no: int, offset: float) -> EventSink:
        """What receives the events of live stream ``stream_no``, whose audio began at ``offset`` s of the buffer."""
        return _StreamEvents(self, stream_no, offset)

    async def _complete_empty_commits(self, before_ms: float) -> None:
        """Commits that covered no speech (no utterance began before them) are completed with ``""``."""
        while self.pending_commits and self.pending_commits[0][1] <= before_ms:
            item, _, committed_ms = self.pending_commits.popleft()
            self.committed.discard(item)
            await self._send_completed(item, "", committed_ms / 1000, [])

    async def _item_for(self, key: tuple[int, int], start_ms: float) -> tuple[str | None, bool]:
        """(item of an utterance, whether it is new), tying a first-seen utterance to its commit if any."""
        if key in self.discarded:
            return None, False
        item = self.utt_items.get(key)
        if item is not None:
            return item, False
        # The session clock trails the client's by the resampler delay: allow a few ms.
        await self._complete_empty_commits(start_ms + CLOCK_SLACK_MS)
        if self.pending_commits:
            item, _, _ = self.pending_commits.popleft()
            self.utt_items[key] = item
            return item, False
        item = self.open_item = new_id("item")
        self.utt_items[key] = item
        return item, True

    async def _on_speech_started(self, stream_no: int, event: SpeechStarted, offset: float) -> None:
        # Events of utterances dropped by `clear` all come before the next utterance starts.
        self.discarded = {k for k in self.discarded if k[0] == stream_no and k[1] >= event.utterance_id}
        start_ms = (offset + event.start) * 1000
        item, new = await self._item_for((stream_no, event.utterance_id), start_ms)
        if item is not None and new and self.config.turn_detection is not None:
            await self.send("input_audio_buffer.speech_started", audio_start_ms=round(start_ms), item_id=item)

    async def _on_silence(self, event: Silence, offset: float) -> None:
        """VAD endpoint of the open utterance: speech stopped, and the server commits it (server VAD)."""
        item = self.open_item
        if item is None or self.config.turn_detection is None:
            return
        await self._auto_commit(item, (offset + event.start) * 1000)

    async def _auto_commit(self, item: str, end_ms: float) -> None:
        if self.open_item == item:
            self.open_item = None
            self.buffer_ms = max(0.0, self.clock_ms - end_ms)
        self.committed.add(item)
        if self.config.turn_detection is not None:
            await self.send("input_audio_buffer.speech_stopped", audio_end_ms=round(end_ms), item_id=item)
        await self._send_committed(item)

    async def _send_committed(self, item: str) -> None:
        """``input_audio_buffer.committed``, then the user item it adds to the conversation.

        GA sends ``conversation.item.added`` now and ``conversation.item.done`` once the transcript is
        known (see :meth:`_send_item_done`); beta sends ``conversation.item.created`` only.  The item has
        no transcript yet: that arrives with ``...completed`` and, in GA, in the ``done`` item.
        """
        previous, self.last_committed = self.last_committed, item
        await self.send("input_audio_buffer.committed", item_id=item, previous_item_id=previous)
        self.item_previous[item] = previous
        kind = "conversation.item.added" if self.ga_shape else "conversation.item.created"
        await self.send(kind, previous_item_id=previous, item=user_item(item, None))

    async def _send_item_done(self, item: str, transcript: str | None) -> None:
        """GA: a committed item is final once its transcription completed (or failed)."""
        if item not in self.item_previous:
            return  # never committed (its stream failed first): no item was added
        previous = self.item_previous.pop(item)
        if self.ga_shape:
            await self.send("conversation.item.done", previous_item_id=previous, item=user_item(item, transcript))

    async def _send_delta(self, item: str, delta: str, words: list[Word] | None) -> None:
        payload = delta_payload(item, delta, words, self.config.logprobs)
        await self.send("conversation.item.input_audio_transcription.delta", **payload)

    async def _send_completed(self, item: str, transcript: str, seconds: float, words: list[Word]) -> None:
        payload = completed_payload(item, transcript, seconds, words, self.config.logprobs)
        await self.send("conversation.item.input_audio_transcription.completed", **payload)
        await self._send_item_done(item, transcript)

    async def _on_partial(self, stream_no: int, event: Partial, offset: float) -> None:
        item, _ = await self._item_for((stream_no, event.utterance_id), (offset + event.start) * 1000)
        if item is None:
            return
        delta = self.sent_text.setdefault(item, ItemText()).partial(event.committed)
        if delta:
            # a Partial carries no word probabilities: its deltas have no logprobs (the closing delta
            # and ``completed`` do)
            await self._send_delta(item, delta, None)

    async def _on_final(self, stream_no: int, event: Final, offset: float) -> None:
        key = (stream_no, event.utterance_id)
        item, _ = await self._item_for(key, (offset + event.start) * 1000)
        self.utt_items.pop(key, None)
        if item is None:
            self.discarded.discard(key)
            return
        if item not in self.committed:
            # Ended without a VAD silence or a client commit (maximum length, end of stream).
            await self._auto_commit(item, (offset + event.end) * 1000)
        if self.open_item == item:
            self.open_item = None
        self.committed.discard(item)
        streamed = self.sent_text.pop(item, None) or ItemText()
        delta, transcript, first = streamed.final(event.text)
        if delta:
            # the closing delta's logprobs: the final's own words from where it takes over (the engines'
            # words match the text's whitespace-separated words one to one)
            await self._send_delta(item, delta, event.words[first:])
        words = completed_words(transcript[: len(transcript) - len(delta)], event.words, first)
        await self._send_completed(item, transcript, event.end - event.start, words)

    async def _on_error(self, event: Error) -> None:
        if not event.fatal:
            await self.send_error(RealtimeError(event.message, code="transcription_error", type=SERVER_ERROR))
            return
        # The stream cannot go on: every item still waiting for text has failed.
        waiting = list(dict.fromkeys([*self.committed, *self.utt_items.values()]))
        for item in waiting:
            await self.send(
                "conversation.item.input_audio_transcription.failed",
                item_id=item,
                content_index=0,
                error={"type": "transcription_error", "code": "transcription_failed", "message": event.message,
                       "param": None},
            )  # fmt: skip
            await self._send_item_done(item, None)
        self.committed.clear()
        self.utt_items.clear()
        self.pending_commits.clear()
        self.open_item = None
        await self.send_error(RealtimeError(event.message, code="transcription_failed", type=SERVER_ERROR))
        self.closed = True
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await self.ws.close(code=1011)


class _StreamEvents(EventSink):
    """One live stream's events, handed to the connection's item methods on the buffer's clock."""

    def __init__(self, items: RealtimeItems, stream_no: int, offset: float) -> None:
        self.items, self.stream_no, self.offset = items, stream_no, offset

    async def on_speech_started(self, event: SpeechStarted) -> None:
        await self.items._on_speech_started(self.stream_no, event, self.offset)

    async def on_partial(self, event: Partial) -> None:
        await self.items._on_partial(self.stream_no, event, self.offset)

    async def on_silence(self, event: Silence) -> None:
        await self.items._on_silence(event, self.offset)

    async def on_final(self, event: Final) -> None:
        await self.items._on_final(self.stream_no, event, self.offset)

    async def on_error(self, event: Error) -> None:
        await self.items._on_error(event)

    async def on_failure(self, exc: Exception) -> None:
        logger.error("realtime: live session failed", exc_info=exc)
        await self.items.send_error(
            RealtimeError("The transcription stream failed.", code="stream_failed", type=SERVER_ERROR)
        )
