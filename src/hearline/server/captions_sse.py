"""The captions feed as Server-Sent Events: typed caption events -> SSE messages -> every subscriber.

Event payloads (``data`` of the SSE event, JSON):

- ``captions``: ``{"id", "start", "end", "text", "is_final", "language"}``; ``id`` is the caption
  (utterance) number, shared by its partials and its final; times are seconds on the capture's sample clock.
- ``translate``: ``{"id", "text", "lang_from", "lang_to", "translator"}``; ``id`` is the caption translated.
- ``error``: ``{"message", "kind"}`` with kind ``capture`` (device lost; ``retry_in`` seconds follows),
  ``session``, ``translate`` (with the caption ``id``), ``lag``, ``backlog`` or ``slow_subscriber``.
- ``close``: ``/stop`` (resumable, ``reason`` ``stopped``) or server shutdown (not resumable; the stream ends).

:class:`EventHub` publishes once and never waits on a subscriber: a subscriber whose bounded queue
overflows is dropped (with an error telling it to reconnect), and a bounded backlog serves ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from hearline.config import Settings
from hearline.live.captions import CaptionService
from hearline.live.captions_events import (
    AudioSkipped,
    Caption,
    CaptionEvent,
    CaptionsStopped,
    CaptureLost,
    NoTranslation,
    ServiceClosing,
    SessionProblem,
    TranslationSkipped,
)
from hearline.live.translate import Translation, TranslationFailure
from hearline.models.pool import ModelPool

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    id: int | None  # None: not resumable (open, ping, per-subscriber errors)
    event: str
    data: dict[str, Any]

    def encode(self) -> bytes:
        lines = []
        if self.id is not None:
            lines.append(f"id: {self.id}")
        lines.append(f"event: {self.event}")
        lines.append("data: " + json.dumps(self.data, ensure_ascii=False))
        return ("\n".join(lines) + "\n\n").encode()


def sse_event(event: CaptionEvent) -> tuple[str, dict[str, Any]]:
    """The SSE event name and payload of a captions event (key order is part of the wire output)."""
    if isinstance(event, Caption):
        return "captions", {
            "id": event.id,
            "start": round(event.start, 3),
            "end": round(event.end, 3),
            "text": event.text,
            "is_final": event.is_final,
            "language": event.language,
        }
    if isinstance(event, Translation):
        return "translate", {
            "id": event.caption_id,
            "text": event.text,
            "lang_from": event.source,
            "lang_to": event.target,
            "translator": event.translator,
        }
    if isinstance(event, TranslationFailure):
        return "error", {"message": event.message, "id": event.caption_id, "kind": "translate"}
    if isinstance(event, TranslationSkipped):
        message = "translation backlog full; caption not translated"
        return "error", {"message": message, "kind": "translate", "id": event.caption_id}
    if isinstance(event, NoTranslation):
        return "error", {"message": event.message, "kind": "translate"}
    if isinstance(event, SessionProblem):
        return "error", {"message": event.message, "kind": "session", "fatal": event.fatal}
    if isinstance(event, AudioSkipped):
        return "error", {"message": f"captions fell behind; skipped {event.seconds:.1f}s of audio", "kind": "lag"}
    if isinstance(event, CaptureLost):
        data = {"message": event.message, "kind": "capture", "device": event.device, "retry_in": event.retry_in}
        return "error", data
    if isinstance(event, CaptionsStopped):
        return "close", {"message": "captions stopped", "reason": "stopped"}
    if isinstance(event, ServiceClosing):
        return "close", {"message": "server shutting down"}
    raise TypeError(f"not a captions event: {event!r}")


class Subscriber:
    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=max(2, maxsize))
        self.dropped = False

    def offer(self, message: Message) -> bool:
        """Queue without waiting; on overflow empty the queue, leave an error and mark it dropped."""
        if self.dropped:
            return False
        try:
            self.queue.put_nowait(message)
            return True
        except asyncio.QueueFull:
            pass
        while not self.queue.empty():
            self.queue.get_nowait()
        self.dropped = True
        self.queue.put_nowait(
            Message(
                None,
                "error",
                {
                    "message": "subscriber too slow: its event queue overflowed; reconnect with Last-Event-ID",
                    "kind": "slow_subscriber",
                    "last_id": message.id,
                },
            )
        )
        return False


class EventHub:
    """Publish once, deliver to every subscriber without ever waiting on any of them."""

    def __init__(self, backlog: int = 500, subscriber_queue: int = 256) -> None:
        self._backlog: deque[Message] = deque(maxlen=max(1, backlog))
        self._subscribers: set[Subscriber] = set()
        self._ids = itertools.count(1)
        self._subscriber_queue = subscriber_queue

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def last_id(self) -> int:
        return self._backlog[-1].id or 0 if self._backlog else 0

    def emit(self, event: CaptionEvent) -> None:
        """A captions event: resumable, except the shutdown ``close`` (the stream ends with it)."""
        name, data = sse_event(event)
        if isinstance(event, ServiceClosing):
            self.broadcast(name, data)
        else:
            self.publish(name, data)

    def publish(self, event: str, data: dict[str, Any]) -> Message:
        message = Message(next(self._ids), event, data)
        self._backlog.append(message)
        for sub in list(self._subscribers):
            if not sub.offer(message):
                logger.warning("dropping a slow captions subscriber")
                self._subscribers.discard(sub)
        return message

    def broadcast(self, event: str, data: dict[str, Any]) -> None:
        """An event that is not part of the resumable stream (e.g. ``close`` at shutdown)."""
        for sub in list(self._subscribers):
            sub.offer(Message(None, event, data))

    def subscribe(self, last_event_id: int | None = None) -> tuple[Subscriber, list[Message]]:
        """A new subscriber plus the backlog after ``last_event_id`` (with a gap error if some expired)."""
        sub = Subscriber(self._subscriber_queue)
        replay: list[Message] = []
        if last_event_id is not None:
            oldest = self._backlog[0].id if self._backlog else None
            if oldest is not None and last_event_id + 1 < oldest:
                replay.append(
                    Message(
                        None,
                        "error",
                        {
                            "message": f"events {last_event_id + 1}..{oldest - 1} are no longer in the backlog",
                            "kind": "backlog",
                        },
                    )
                )
            replay.extend(m for m in self._backlog if m.id is not None and m.id > last_event_id)
        self._subscribers.add(sub)
        return sub, replay

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)


class SSECaptionService(CaptionService):
    """The process's captions service (``app.state.captions``) publishing into its SSE hub."""

    def __init__(self, settings: Settings, pool: ModelPool) -> None:
        self.hub = EventHub(settings.captions_backlog, settings.captions_subscriber_queue)
        super().__init__(settings, pool, self.hub.emit)
