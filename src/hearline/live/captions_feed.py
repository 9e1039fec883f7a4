"""One running capture: device -> LiveSession -> caption events, finals -> the translation worker.

Reading the device and pushing into the session are decoupled by a bounded queue, so a busy session
never stalls the capture (a capture that is not read overruns in the sound server and loses audio); when
the queue is full the oldest audio is dropped and reported.  A lost device is reported and reopened
with backoff, re-resolving the default device (it may have changed after an unplug).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator

import numpy as np

from hearline import languages
from hearline.audio import capture
from hearline.config import Settings
from hearline.engines.base import EngineError
from hearline.live.audio_history import AudioHistory
from hearline.live.captions_events import (
    AudioSkipped,
    Caption,
    CaptionEvent,
    CaptionsStatus,
    CaptureLost,
    SessionProblem,
    StartRequest,
    TranslationSkipped,
)
from hearline.live.session import Error, Final, LiveSession, Partial
from hearline.live.translate import TranslationRequest, TranslationWorker, WhisperTranslator

logger = logging.getLogger(__name__)

CAPTURE_QUEUE_S = 30.0  # captured audio buffered while the session is busy
STOP_FLUSH_S = 20.0  # how long /stop waits for the last final before closing the session
MAX_CAPTION_IDS = 1000  # utterance -> caption id map; old utterances never come back
LAG_REPORT_S = 5.0  # dropped audio is reported once this much has been skipped
HEALTHY_S = 5.0  # audio received after which the next device loss starts the backoff afresh

Emit = Callable[[CaptionEvent], None]


class CaptionRun:
    def __init__(
        self,
        settings: Settings,
        request: StartRequest,
        device: str,
        model: str,
        session: LiveSession,
        emit: Emit,
        caption_ids: Iterator[int],
        worker: TranslationWorker | None = None,
    ) -> None:
        self.settings = settings
        self.request = request
        self.device = device
        self.model = model
        self.session = session
        self.worker = worker
        self.translator_name = worker.translator.name if worker is not None else None
        self.capture: capture.PulseCapture | None = None
        self.started_at = time.time()
        # Whisper translates a final's audio, not its text: keep the recent audio for it.
        self.audio = AudioHistory() if self.translator_name == WhisperTranslator.name else None
        self._emit = emit
        self._next_caption_id = caption_ids
        self._caption_ids: dict[int, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def status(self, running: bool) -> CaptionsStatus:
        return CaptionsStatus(
            running=running,
            source=self.request.source,
            device=self.device,
            model=self.model,
            lang_from=self.request.lang_from,
            lang_to=self.request.lang_to,
            translator=self.translator_name,
            started_at=self.started_at,
        )

    def start(self) -> None:
        if self.worker is not None:
            self.worker.start()
        self._tasks.append(asyncio.create_task(self._capture_loop(), name="hearline-captions-capture"))
        self._tasks.append(asyncio.create_task(self._event_loop(), name="hearline-captions-events"))

    async def stop(self, flush: bool = True) -> None:
        """End the capture; with ``flush``, finish (bounded) what was captured and its translations first."""
        capture_task, event_task = self._tasks
        if self.capture is not None:
            await self.capture.stop()
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
                await asyncio.wait_for(self.session.flush(), timeout=STOP_FLUSH_S)
                await asyncio.wait_for(asyncio.shield(event_task), timeout=STOP_FLUSH_S)
            except asyncio.TimeoutError:
                logger.warning("captions: the last utterance did not finish within %.0fs", STOP_FLUSH_S)
            except (RuntimeError, EngineError) as exc:
                logger.warning("captions: flushing the session failed: %s", exc)
        event_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await event_task
        await self.session.close()
        if self.worker is not None:
            if flush:
                await self.worker.drain(self.settings.translate_timeout_s)
            await self.worker.close()

    # -- session events -> caption events --
    def _caption_id(self, utterance_id: int) -> int:
        cid = self._caption_ids.get(utterance_id)
        if cid is None:
            cid = self._caption_ids[utterance_id] = next(self._next_caption_id)
            if len(self._caption_ids) > MAX_CAPTION_IDS:
                self._caption_ids.pop(next(iter(self._caption_ids)))
        return cid

    async def _event_loop(self) -> None:
        default_language = self.request.lang_from if self.request.lang_from != languages.AUTO else None
        async for event in self.session.events():
            if isinstance(event, Partial):
                end = max(event.start, self.session.audio_seconds)
                cid = self._caption_id(event.utterance_id)
                self._emit(Caption(cid, event.start, end, event.text, False, default_language))
            elif isinstance(event, Final):
                cid = self._caption_id(event.utterance_id)
                language = event.language or default_language
                self._emit(Caption(cid, event.start, event.end, event.text, True, language))
                if self.worker is not None and event.text.strip():
                    audio = self.audio.between(event.start, event.end) if self.audio is not None else None
                    request = TranslationRequest(cid, event.text, language, self.request.lang_to, audio)
                    skipped = self.worker.submit(request)
                    if skipped is not None:
                        self._emit(TranslationSkipped(skipped.caption_id))
            elif isinstance(event, Error):
                self._emit(SessionProblem(event.message, event.fatal))

    # -- device -> session --
    async def _capture_loop(self) -> None:
        queue: asyncio.Queue[np.ndarray | None] = asyncio.Queue(maxsize=int(CAPTURE_QUEUE_S * 10))
        pusher = asyncio.create_task(self._push_loop(queue), name="hearline-captions-push")
        try:
            await self._read_loop(queue)
            await queue.put(None)  # stopped: push what was read, then end
            await pusher
        finally:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher

    async def _push_loop(self, queue: asyncio.Queue[np.ndarray | None]) -> None:
        while True:
            block = await queue.get()
            if block is None:
                return
            if self.audio is not None:
                self.audio.add(block)
            await self.session.push(block, capture.SAMPLE_RATE)

    async def _read_loop(self, queue: asyncio.Queue[np.ndarray | None]) -> None:
        delay = 0.5
        device = self.device
        dropped = 0
        while True:
            cap = capture.PulseCapture(device, self.settings.pulse_server, self.settings.capture_stall_s)
            self.capture = cap
            received = 0
            try:
                async for block in cap.blocks():
                    if queue.full():
                        dropped += len(queue.get_nowait() or ())
                        if dropped >= capture.SAMPLE_RATE * LAG_REPORT_S:
                            self._emit(AudioSkipped(dropped / capture.SAMPLE_RATE))
                            dropped = 0
                    queue.put_nowait(block)
                    received += len(block)
                    if received > capture.SAMPLE_RATE * HEALTHY_S:
                        delay = 0.5
                return  # stopped
            except capture.CaptureError as exc:
                message = str(exc)
            finally:
                await cap.stop()
            self._emit(CaptureLost(message, device, delay))
            logger.warning("captions capture lost (%s); retrying in %.1fs", message, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.capture_retry_max_s)
            try:
                device = await asyncio.to_thread(
                    capture.resolve_device, self.request.source, self.request.device, self.settings.pulse_server
                )
            except capture.NoAudioDevice as exc:
                logger.info("captions: device still unavailable: %s", exc)
