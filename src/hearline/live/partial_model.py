"""The server's ``--partial-model``: a faster model for a live session's partials, its finals left to its own.

A Whisper partial pass is redone every half second and only its agreed prefix counts, so its cost, not its
accuracy, bounds latency and how many sessions a machine keeps up with; the final is a fresh pass of the
session's model whatever the partials said.  The partial model serves a session only where it can: another
model that re-decodes (LocalAgreement), transcribes the session's task and language, and, when the session
detects its language, knows every language the session's model does.  Otherwise the session's model does both.
"""

from __future__ import annotations

import logging

from hearline.engines.base import Engine, EngineError, TranscribeOptions, UnsupportedOption
from hearline.models.download import ModelUnavailable
from hearline.models.pool import ModelPool
from hearline.models.resolve import UnknownModel

logger = logging.getLogger(__name__)


def unfit_reason(engine: Engine, partial: Engine, options: TranscribeOptions) -> str | None:
    """Why ``partial`` cannot give the partials of a session of ``engine`` with ``options`` (None: it can)."""
    if partial is engine:
        return "it is the session's model"
    if partial.capabilities.native_streaming:
        return "it streams natively; partial passes need a re-decoding model"
    try:
        partial.check_options(options)
    except UnsupportedOption as exc:
        return str(exc)
    if options.language is None:
        known, own = partial.capabilities.languages, engine.capabilities.languages
        if known is not None and (own is None or not own <= known):
            return "the session detects its language and the partial model does not know all of the model's"
    return None


async def partial_engine(pool: ModelPool, engine: Engine, options: TranscribeOptions) -> Engine | None:
    """The loaded ``settings.partial_model`` when it fits this session, else None (partials from ``engine``).

    A partial model that cannot be loaded is logged and passed over: the session still works without it.
    """
    name = pool.settings.partial_model
    if not name or engine.capabilities.native_streaming:
        return None
    try:
        partial = await pool.get(name)
    except (UnknownModel, ModelUnavailable, EngineError) as exc:
        logger.warning("partial model %s is not available, partials come from %s: %s", name, engine.name, exc)
        return None
    reason = unfit_reason(engine, partial, options)
    if reason is not None:
        logger.debug("partials of this %s session come from it, not %s: %s", engine.name, partial.name, reason)
        return None
    return partial
