"""What the live doors share: opening a LiveSession with the server's segmentation settings.

Each door only chooses the model, language and prompt; silence and utterance length come from
``Settings`` in one place.  A session whose start fails is closed before the error propagates, so a
refused start holds no model lease; each door answers the error in its own wire shape.

Sessions opened here (and Realtime's, through :class:`CountedSession`) are counted in the pool's
metrics under their door: opened, open now, audio received.
"""

from __future__ import annotations

from hearline.config import Settings
from hearline.engines.base import EngineError
from hearline.live.session import LiveOptions, LiveSession
from hearline.models.pool import ModelPool, ServerBusy, ServerDraining
from hearline.models.resolve import UnknownModel

#: start failures a door reports to its client (unknown model, unsupported option, load failure, busy)
START_ERRORS = (UnknownModel, EngineError, ServerBusy, OSError)


class CountedSession(LiveSession):
    """A LiveSession the pool's metrics count under ``door`` from a successful start until close."""

    def __init__(
        self, pool: ModelPool, model: str | None = None, options: LiveOptions | None = None, *, door: str
    ) -> None:
        super().__init__(pool, model, options)
        self.door = door
        self._counted = False

    async def start(self) -> None:
        if self.pool.draining:
            raise ServerDraining(self.model or "default")
        try:
            await super().start()
        except ServerBusy:
            if self.pool.metrics is not None:
                self.pool.metrics.refused("busy")
            raise
        if self.pool.metrics is not None and self.engine is not None:
            self.pool.metrics.session_opened(self.door, self.engine.name, self)
            self._counted = True
        self.pool.live_sessions.add(self)

    async def close(self) -> None:
        self.pool.live_sessions.discard(self)
        try:
            await super().close()
        finally:
            if self._counted and self.pool.metrics is not None:
                self._counted = False
                self.pool.metrics.session_closed(self)


async def open_live_session(
    pool: ModelPool,
    settings: Settings,
    model: str | None,
    language: str | None,
    prompt: str | None = None,
    *,
    silence_ms: int | None = None,
    vad: bool = True,
    door: str = "other",
) -> LiveSession:
    """A started session, or the start's exception with nothing left open.

    ``silence_ms`` and ``vad`` are for doors whose protocol lets the client choose its endpointing;
    ``door`` names the protocol in the metrics (``stt``, ``asr``, ``vosk``, ``wyoming``, ``deepgram``).
    """
    options = LiveOptions(
        language=language,
        prompt=prompt,
        vad=vad,
        silence_ms=settings.vad_silence_ms if silence_ms is None else silence_ms,
        max_utterance_s=settings.max_utterance_s,
    )
    session = CountedSession(pool, model, options, door=door)
    try:
        await session.start()
    except BaseException:
        await session.close()
        raise
    return session
