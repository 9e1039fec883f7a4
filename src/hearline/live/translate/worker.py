"""The translation worker: finals in, typed outcomes out, never on the caption path.

A bounded queue drained by one task, in caption order, each call bounded by a timeout; a full queue skips
the oldest request (the caller reports it).  Each outcome goes to the caller's ``on_result`` as a
:class:`Translation` or a :class:`TranslationFailure`; the caller decides its wire shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from hearline.live.translate.base import (
    Translation,
    TranslationEvent,
    TranslationFailed,
    TranslationFailure,
    TranslationRequest,
    Translator,
    TranslatorUnavailable,
)

logger = logging.getLogger(__name__)

OnResult = Callable[[TranslationEvent], Awaitable[None]]


class TranslationWorker:
    """Translates finals in order, off the caption path; reports each outcome to ``on_result``."""

    def __init__(self, translator: Translator, on_result: OnResult, maxsize: int = 32, timeout_s: float = 30.0) -> None:
        self.translator = translator
        self._on_result = on_result
        self._queue: asyncio.Queue[TranslationRequest] = asyncio.Queue(maxsize=max(1, maxsize))
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None
        self._busy = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="hearline-translate")

    def submit(self, request: TranslationRequest) -> TranslationRequest | None:
        """Queue a final without waiting; returns the request skipped to make room, if any."""
        skipped = None
        if self._queue.full():
            skipped = self._queue.get_nowait()
        self._queue.put_nowait(request)
        return skipped

    async def _loop(self) -> None:
        while True:
            request = await self._queue.get()
            self._busy = True
            try:
                text = await asyncio.wait_for(self.translator.translate(request), timeout=self._timeout_s)
            except asyncio.TimeoutError:
                await self._failed(request, f"translation timed out after {self._timeout_s:.0f}s")
                continue
            except (TranslationFailed, TranslatorUnavailable, OSError, ValueError, RuntimeError) as exc:
                logger.warning("translation of caption %d failed: %s", request.caption_id, exc)
                await self._failed(request, str(exc))
                continue
            finally:
                self._busy = False
            await self._on_result(
                Translation(request.caption_id, text, request.source, request.target, self.translator.name)
            )

    async def _failed(self, request: TranslationRequest, message: str) -> None:
        await self._on_result(TranslationFailure(request.caption_id, f"translation failed: {message}"))

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) until queued finals are translated."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while (self._busy or not self._queue.empty()) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.translator.close()
