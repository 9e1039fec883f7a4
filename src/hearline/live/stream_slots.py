"""Per-engine admission limit for live streams that hold a scarce engine resource (module-level state)."""

from __future__ import annotations

import asyncio
import weakref

from hearline.engines.base import Engine

# Engines whose streams hold a scarce resource while an utterance is open (PocketSphinx leases one of a
# few decoders) get an async admission limit, so sessions wait on the event loop instead of blocking
# pool workers on the engine's lease (which could starve the very jobs that release leases).
_stream_slots: weakref.WeakKeyDictionary[Engine, tuple[asyncio.AbstractEventLoop, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


def _stream_capacity(engine: Engine) -> int | None:
    """How many of this engine's streams may have an utterance open at once (None: no limit).

    An engine whose streams hold a scarce resource says so with ``max_open_streams``.  PocketSphinx
    shares its decoders between offline calls and live streams and keeps one back for offline work:
    an offline call takes its pool slot *before* it waits for a decoder, so if live utterances held
    every decoder, offline calls could fill every pool slot and the live jobs that would free a
    decoder could never run.
    """
    value = getattr(engine, "max_open_streams", None)
    if isinstance(value, int) and value > 0:
        return value
    return None


def _slot_semaphore(engine: Engine) -> asyncio.Semaphore | None:
    capacity = _stream_capacity(engine)
    if capacity is None:
        return None
    loop = asyncio.get_running_loop()
    entry = _stream_slots.get(engine)
    if entry is None or entry[0] is not loop:
        entry = (loop, asyncio.Semaphore(capacity))
        _stream_slots[engine] = entry
    return entry[1]
