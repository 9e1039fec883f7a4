"""Live captions of this machine's audio: capture -> LiveSession -> caption/translate events.

One capture runs at a time per process.  ``start()`` validates everything (source, device, model,
languages) *before* touching the running capture, so a bad request never stops good captions; a valid
one replaces the running capture (restart with the new settings).  Events fan out through
:class:`EventHub` to any number of SSE subscribers with a bounded backlog for ``Last-Event-ID``.

Event payloads (``data`` of the SSE event, JSON):

- ``captions``: ``{"id", "start", "end", "text", "is_final", "language"}``; ``id`` is the caption
  (utterance) number, shared by its partials and its final; times are seconds on the capture's sample clock.
- ``translate``: ``{"id", "text", "lang_from", "lang_to", "translator"}``; ``id`` is the caption translated.
- ``error``: ``{"message", "kind"}`` with kind ``capture`` (device lost; ``retry_in`` seconds follows),
  ``session``, ``translate`` (with the caption ``id``), ``backlog`` or ``slow_subscriber``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hearline import languages
from hearline.audio import capture
from hearline.config import Settings
from hearline.engines.base import EngineError, UnsupportedOption
from hearline.live.audio_history import AudioHistory
from hearline.live.session import Error, Final, LiveOptions, LiveSession, Partial
from hearline.live.translate import (
    TranslationRequest,
    TranslationWorker,
    TranslatorUnavailable,
    make_translator,
)
from hearline.models.pool import ModelPool
from hearline.models.resolve import UnknownModel

logger = logging.getLogger(__name__)

CAPTURE_QUEUE_S = 30.0  # captured audio buffered while the session is busy
STOP_FLUSH_S = 20.0  # how long /stop waits for the last final before closing the session


# -- fan-out -------------------------------------------------------------------------------------
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


# -- requests and answers ------------------------------------------------------------------------
class CaptionsError(Exception):
    """A /start or /stop request that cannot be honoured; ``code``/``status`` are the wire answer."""

    def __init__(self, code: int, status: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message


# Documented answer codes (also in server/captions.py).
OK = 0
BAD_SOURCE = 40001
UNKNOWN_LANGUAGE = 40002
UNSUPPORTED = 40003  # the model cannot do the requested language
UNAUTHORIZED = 40101
UNKNOWN_MODEL = 40401
NO_AUDIO_DEVICE = 50301
MODEL_UNAVAILABLE = 50302


@dataclass(frozen=True)
class StartRequest:
    source: str = "system"
    model: str | None = None
    lang_from: str = languages.AUTO
    lang_to: str = languages.NONE
    device: str | None = None


@dataclass
class _Run:
    request: StartRequest
    device: str
    model: str
    session: LiveSession
    language_iso: str | None
    translator_name: str | None
    translation_note: str | None
    worker: TranslationWorker | None = None
    capture: capture.PulseCapture | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    audio: AudioHistory | None = None  # kept for the Whisper translator
    caption_ids: dict[int, int] = field(default_factory=dict)

    def data(self, running: bool) -> dict[str, Any]:
        return {
            "running": running,
            "source": self.request.source,
            "device": self.device,
            "model": self.model,
            "lang_from": self.request.lang_from,
            "lang_to": self.request.lang_to,
            "translator": self.translator_name,
            "started_at": self.started_at,
        }


def validate_language(code: str | None, *, allow: str, field_name: str) -> str:
    """A table code (canonical spelling) for ``lang_from``/``lang_to``; raises CaptionsError."""
    value = (code or allow).strip()
    if value.lower() == allow:
        return allow
    try:
        lang = languages.lookup(value)
    except languages.UnknownLanguage as exc:
        raise CaptionsError(UNKNOWN_LANGUAGE, 400, f"{field_name}: {exc}") from exc
    if lang.code in {languages.AUTO, languages.NONE}:
        raise CaptionsError(UNKNOWN_LANGUAGE, 400, f"{field_name} cannot be {lang.code!r}; use {allow!r}")
    return lang.code


# -- the service ---------------------------------------------------------------------------------
class CaptionService:
    def __init__(self, settings: Settings, pool: ModelPool) -> None:
        self.settings = settings
        self.pool = pool
        self.hub = EventHub(settings.captions_backlog, settings.captions_subscriber_queue)
        self._run: _Run | None = None
        self._last: _Run | None = None
        self._lock = asyncio.Lock()
        self._caption_ids = itertools.count(1)
        self.closed = False

    # -- public API ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._run is not None

    def status(self) -> dict[str, Any]:
        if self._run is not None:
            return self._run.data(True)
        if self._last is not None:
            return self._last.data(False)
        return {"running": False}

    async def start(self, request: StartRequest) -> tuple[str, dict[str, Any]]:
        """Validate, then (re)start; returns (message, data) or raises CaptionsError."""
        async with self._lock:
            source = (request.source or "system").strip().lower()
            if source not in capture.SOURCES:
                raise CaptionsError(BAD_SOURCE, 400, f"unknown source {request.source!r}; use system or microphone")
            lang_from = validate_language(request.lang_from, allow=languages.AUTO, field_name="lang_from")
            lang_to = validate_language(request.lang_to, allow=languages.NONE, field_name="lang_to")
            model_name = (request.model or "").strip() or None
            try:
                spec = self.pool.resolve(model_name)
            except UnknownModel as exc:
                raise CaptionsError(UNKNOWN_MODEL, 404, str(exc)) from exc
            request = StartRequest(source, model_name, lang_from, lang_to, (request.device or "").strip() or None)
            try:
                device = await asyncio.to_thread(
                    capture.resolve_device, source, request.device, self.settings.pulse_server
                )
            except capture.NoAudioDevice as exc:
                raise CaptionsError(NO_AUDIO_DEVICE, 503, str(exc)) from exc

            language_iso = languages.engine_code(lang_from)
            options = LiveOptions(
                language=language_iso,
                prompt=languages.prompt_for(lang_from),
                silence_ms=self.settings.vad_silence_ms,
                max_utterance_s=self.settings.max_utterance_s,
            )
            session = LiveSession(self.pool, model_name, options)
            try:
                await session.start()
            except UnknownModel as exc:
                raise CaptionsError(UNKNOWN_MODEL, 404, str(exc)) from exc
            except UnsupportedOption as exc:
                raise CaptionsError(UNSUPPORTED, 400, str(exc)) from exc
            except EngineError as exc:  # ModelFilesMissing and load failures
                raise CaptionsError(MODEL_UNAVAILABLE, 503, str(exc)) from exc
            except (OSError, RuntimeError, ValueError) as exc:
                logger.warning("captions: model %s could not be loaded: %s", spec.name, exc)
                raise CaptionsError(MODEL_UNAVAILABLE, 503, f"model {spec.name!r} could not be loaded: {exc}") from exc

            translator_name = note = None
            worker = None
            if lang_to not in {languages.NONE, lang_from}:
                engine = await self.pool.get(model_name)
                try:
                    translator = make_translator(
                        self.settings, self.pool, model_name, lang_to, engine.capabilities.translate
                    )
                except (TranslatorUnavailable, OSError, RuntimeError, ValueError) as exc:
                    # A broken translator never costs the captions themselves.
                    logger.warning("captions: no translator for %s: %s", lang_to, exc)
                    note = f"captions without translation to {lang_to}: {exc}"
                else:
                    translator_name = translator.name
                    worker = TranslationWorker(
                        translator, self._publish, self.settings.translate_queue, self.settings.translate_timeout_s
                    )

            restarted = self._run is not None
            if restarted:
                await self._stop_run()
            run = _Run(request, device, spec.name, session, language_iso, translator_name, note, worker)
            self._run = run
            if worker is not None:
                worker.start()
            run.tasks.append(asyncio.create_task(self._capture_loop(run), name="hearline-captions-capture"))
            run.tasks.append(asyncio.create_task(self._event_loop(run), name="hearline-captions-events"))
            message = "restarted" if restarted else "started"
            if note:
                message += f"; {note}"
                self._publish_now("error", {"message": note, "kind": "translate"})
            logger.info("captions %s: %s", message, run.data(True))
            return message, run.data(True)

    async def stop(self) -> tuple[str, dict[str, Any]]:
        async with self._lock:
            if self._run is None:
                return "not running", self.status()
            run = self._run
            await self._stop_run()
            # seed 000's close event: the overlay knows captions ended (not a lost connection); the SSE stream
            # stays open for the next /start
            self.hub.publish("close", {"message": "captions stopped", "reason": "stopped"})
            return "stopped", run.data(False)

    async def shutdown(self) -> None:
        """App shutdown: stop capture, tell subscribers the stream is closing."""
        async with self._lock:
            if self._run is not None:
                await self._stop_run(flush=False)
        self.closed = True
        self.hub.broadcast("close", {"message": "server shutting down"})

    # -- internals -------------------------------------------------------------------------------
    async def _publish(self, event: str, data: dict[str, Any]) -> None:
        self.hub.publish(event, data)

    def _publish_now(self, event: str, data: dict[str, Any]) -> None:
        self.hub.publish(event, data)

    async def _stop_run(self, flush: bool = True) -> None:
        run = self._run
        if run is None:
            return
        self._run = None
        self._last = run
        capture_task, event_task = run.tasks
        if run.capture is not None:
            await run.capture.stop()
        if flush:  # let the pusher hand over what was already captured
            try:
                await asyncio.wait_for(asyncio.shield(capture_task), timeout=STOP_FLUSH_S)
            except asyncio.TimeoutError:
                logger.warning("captions: buffered audio was not consumed within %.0fs", STOP_FLUSH_S)
            except (capture.CaptureError, RuntimeError) as exc:
                logger.warning("captions: capture ended with %s", exc)
        capture_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await capture_task
        if flush:
            try:
                await asyncio.wait_for(run.session.flush(), timeout=STOP_FLUSH_S)
                await asyncio.wait_for(asyncio.shield(event_task), timeout=STOP_FLUSH_S)
            except asyncio.TimeoutError:
                logger.warning("captions: the last utterance did not finish within %.0fs", STOP_FLUSH_S)
            except (RuntimeError, EngineError) as exc:
                logger.warning("captions: flushing the session failed: %s", exc)
        event_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await event_task
        await run.session.close()
        if run.worker is not None:
            if flush:
                await run.worker.drain(self.settings.translate_timeout_s)
            await run.worker.close()

    def _caption_id(self, run: _Run, utterance_id: int) -> int:
        cid = run.caption_ids.get(utterance_id)
        if cid is None:
            cid = run.caption_ids[utterance_id] = next(self._caption_ids)
            if len(run.caption_ids) > 1000:  # bounded: old utterances never come back
                run.caption_ids.pop(next(iter(run.caption_ids)))
        return cid

    async def _event_loop(self, run: _Run) -> None:
        default_language = run.request.lang_from if run.request.lang_from != languages.AUTO else None
        async for event in run.session.events():
            if isinstance(event, Partial):
                self.hub.publish(
                    "captions",
                    {
                        "id": self._caption_id(run, event.utterance_id),
                        "start": round(event.start, 3),
                        "end": round(max(event.start, run.session.audio_seconds), 3),
                        "text": event.text,
                        "is_final": False,
                        "language": default_language,
                    },
                )
            elif isinstance(event, Final):
                cid = self._caption_id(run, event.utterance_id)
                language = event.language or default_language
                self.hub.publish(
                    "captions",
                    {
                        "id": cid,
                        "start": round(event.start, 3),
                        "end": round(event.end, 3),
                        "text": event.text,
                        "is_final": True,
                        "language": language,
                    },
                )
                if run.worker is not None and event.text.strip():
                    audio = run.audio.between(event.start, event.end) if run.audio is not None else None
                    skipped = run.worker.submit(
                        TranslationRequest(cid, event.text, language, run.request.lang_to, audio)
                    )
                    if skipped is not None:
                        self.hub.publish(
                            "error",
                            {
                                "message": "translation backlog full; caption not translated",
                                "kind": "translate",
                                "id": skipped.caption_id,
                            },
                        )
            elif isinstance(event, Error):
                self.hub.publish("error", {"message": event.message, "kind": "session", "fatal": event.fatal})

    async def _capture_loop(self, run: _Run) -> None:
        """Feed the session from the device; on device loss emit ``error`` and reconnect with backoff.

        Reading and pushing are decoupled by a bounded queue: ``push`` waits while the session is busy,
        and a capture that is not read for a while overruns in the sound server and loses audio.  When
        the queue is full the oldest audio is dropped (and reported), so captions stay live.
        """
        queue: asyncio.Queue[np.ndarray | None] = asyncio.Queue(maxsize=int(CAPTURE_QUEUE_S * 10))
        pusher = asyncio.create_task(self._push_loop(run, queue), name="hearline-captions-push")
        try:
            await self._read_loop(run, queue)
            await queue.put(None)  # stopped: push what was read, then end
            await pusher
        finally:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher

    async def _push_loop(self, run: _Run, queue: asyncio.Queue[np.ndarray | None]) -> None:
        if run.translator_name == "whisper":
            run.audio = AudioHistory()
        while True:
            block = await queue.get()
            if block is None:
                return
            if run.audio is not None:
                run.audio.add(block)
            await run.session.push(block, capture.SAMPLE_RATE)

    async def _read_loop(self, run: _Run, queue: asyncio.Queue[np.ndarray | None]) -> None:
        delay = 0.5
        device = run.device
        dropped = 0
        while True:
            cap = capture.PulseCapture(device, self.settings.pulse_server, self.settings.capture_stall_s)
            run.capture = cap
            received = 0
            try:
                async for block in cap.blocks():
                    if queue.full():
                        dropped += len(queue.get_nowait() or ())
                        if dropped >= capture.SAMPLE_RATE * 5:
                            self.hub.publish(
                                "error",
                                {"message": f"captions fell behind; skipped {dropped / 16000:.1f}s of audio",
                                 "kind": "lag"},
                            )  # fmt: skip
                            dropped = 0
                    queue.put_nowait(block)
                    received += len(block)
                    if received > capture.SAMPLE_RATE * 5:
                        delay = 0.5  # healthy for a while: the next loss starts the backoff afresh
                return  # stopped
            except capture.CaptureError as exc:
                message = str(exc)
            finally:
                await cap.stop()
            self.hub.publish("error", {"message": message, "kind": "capture", "device": device, "retry_in": delay})
            logger.warning("captions capture lost (%s); retrying in %.1fs", message, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.capture_retry_max_s)
            try:
                # The default device may have changed (new default output after an unplug).
                device = await asyncio.to_thread(
                    capture.resolve_device, run.request.source, run.request.device, self.settings.pulse_server
                )
            except capture.NoAudioDevice as exc:
                logger.info("captions: device still unavailable: %s", exc)


def get_service(state: Any, factory: Callable[[], CaptionService] | None = None) -> CaptionService:
    """The process's CaptionService on ``app.state`` (created on first use; stopped at shutdown)."""
    service = getattr(state, "captions", None)
    if service is None:
        service = factory() if factory else CaptionService(state.settings, state.pool)
        state.captions = service
        hooks = getattr(state, "shutdown_hooks", None)
        if hooks is not None:
            hooks.append(service.shutdown)
    return service
