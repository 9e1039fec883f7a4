"""What the live doors share: opening a LiveSession with the server's segmentation settings.

Each door only chooses the model, language and prompt; silence and utterance length come from
``Settings`` in one place.  A session whose start fails is closed before the error propagates, so a
refused start holds no model lease; each door answers the error in its own wire shape.
"""

from __future__ import annotations

from hearline.config import Settings
from hearline.engines.base import EngineError
from hearline.live.session import LiveOptions, LiveSession
from hearline.models.pool import ModelPool, ServerBusy
from hearline.models.resolve import UnknownModel

#: start failures a door reports to its client (unknown model, unsupported option, load failure, busy)
START_ERRORS = (UnknownModel, EngineError, ServerBusy, OSError)


async def open_live_session(
    pool: ModelPool,
    settings: Settings,
    model: str | None,
    language: str | None,
    prompt: str | None = None,
    *,
    silence_ms: int | None = None,
    vad: bool = True,
) -> LiveSession:
    """A started session, or the start's exception with nothing left open.

    ``silence_ms`` and ``vad`` are for doors whose protocol lets the client choose its endpointing.
    """
    options = LiveOptions(
        language=language,
        prompt=prompt,
        vad=vad,
        silence_ms=settings.vad_silence_ms if silence_ms is None else silence_ms,
        max_utterance_s=settings.max_utterance_s,
    )
    session = LiveSession(pool, model, options)
    try:
        await session.start()
    except BaseException:
        await session.close()
        raise
    return session
