"""Loaded models and the worker threads that run them.

One pool per process (created by the app factory, never at import).  It loads models lazily, one
load at a time per model, evicts least-recently-used models over the memory budget, and bounds how
many inference calls run and wait per model so overload turns into a clear "busy" answer instead of
an unbounded queue.  Inference always runs in the pool's executor, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hearline.config import Settings
from hearline.engines.base import Engine
from hearline.models.resolve import ModelSpec, load_engine, resolve_model

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ServerBusy(RuntimeError):
    """Too many requests are already running or waiting for this model."""

    def __init__(self, model: str, retry_after: float = 1.0) -> None:
        super().__init__(f"model {model!r} is busy; retry later")
        self.model = model
        self.retry_after = retry_after


@dataclass
class _Slot:
    spec: ModelSpec
    engine: Engine | None = None
    load_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    running: asyncio.Semaphore | None = None
    waiting: int = 0
    last_used: float = field(default_factory=time.monotonic)
    active: int = 0


class ModelPool:
    def __init__(self, settings: Settings, executor: ThreadPoolExecutor | None = None) -> None:
        self.settings = settings
        self._executor = executor or ThreadPoolExecutor(
            max_workers=settings.workers, thread_name_prefix="hearline-infer"
        )
        self._owns_executor = executor is None
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._loading = 0
        self._guard = threading.Lock()

    # -- resolution and loading ---------------------------------------------------------------
    def resolve(self, name: str | None) -> ModelSpec:
        """Model spec for a request's model name (``None``, ``whisper-1`` and ``default`` mean the default)."""
        return resolve_model(name, self.settings)

    @property
    def default_name(self) -> str:
        return self.resolve(None).name

    @property
    def loading(self) -> bool:
        return self._loading > 0

    def loaded(self) -> list[str]:
        return [name for name, slot in self._slots.items() if slot.engine is not None]

    async def get(self, name: str | None = None) -> Engine:
        """The loaded engine for ``name``, loading it (once, off the event loop) if needed."""
        spec = self.resolve(name)
        slot = self._slots.get(spec.name)
        if slot is None:
            slot = self._slots[spec.name] = _Slot(spec=spec)
        self._slots.move_to_end(spec.name)
        slot.last_used = time.monotonic()
        if slot.engine is not None:
            return slot.engine
        async with slot.load_lock:
            if slot.engine is None:
                self._loading += 1
                try:
                    started = time.perf_counter()
                    engine = await asyncio.get_running_loop().run_in_executor(
                        self._executor, load_engine, spec, self.settings
                    )
                    logger.info("loaded model %s (%s) in %.2fs", spec.name, spec.engine, time.perf_counter() - started)
                finally:
                    self._loading -= 1
                slot.engine = engine
                slot.running = asyncio.Semaphore(self.settings.max_concurrency_per_model)
                self._evict_over_budget(keep=spec.name)
        return slot.engine

    async def preload(self, name: str | None = None) -> None:
        await self.get(name)

    def _evict_over_budget(self, keep: str) -> None:
        budget = self.settings.memory_budget_mb * 1024 * 1024
        for name in list(self._slots):
            if self._used_bytes() <= budget:
                break
            slot = self._slots[name]
            if name == keep or slot.engine is None or slot.active:
                continue
            logger.info("unloading %s to stay within the %d MB memory budget", name, self.settings.memory_budget_mb)
            self._unload(slot)

    def _used_bytes(self) -> int:
        return sum(slot.engine.memory_bytes() for slot in self._slots.values() if slot.engine is not None)

    def _unload(self, slot: _Slot) -> None:
        engine, slot.engine = slot.engine, None
        if engine is not None:
            engine.close()

    async def unload(self, name: str) -> bool:
        spec = self.resolve(name)
        slot = self._slots.get(spec.name)
        if slot is None or slot.engine is None:
            return False
        async with slot.load_lock:
            self._unload(slot)
        return True

    # -- running inference --------------------------------------------------------------------
    async def run(
        self,
        engine: Engine,
        fn: Callable[..., T],
        *args: Any,
        reject_when_full: bool = True,
    ) -> T:
        """Run ``fn(*args)`` in a worker thread under the engine's concurrency limit.

        With ``reject_when_full`` (REST requests) a full wait queue raises :class:`ServerBusy`; live
        sessions pass ``False`` for work that must never be dropped, such as finals.
        """
        slot = self._slots.get(engine.name)
        if slot is None or slot.running is None:
            # An engine built outside the pool (tests, benchmarks): run it directly.
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        if reject_when_full and slot.waiting >= self.settings.max_queue_per_model and slot.running.locked():
            raise ServerBusy(engine.name)
        slot.waiting += 1
        try:
            await slot.running.acquire()
        finally:
            slot.waiting -= 1
        slot.active += 1
        slot.last_used = time.monotonic()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            slot.active -= 1
            slot.running.release()

    async def close(self) -> None:
        for slot in self._slots.values():
            self._unload(slot)
        if self._owns_executor:
            with contextlib.suppress(RuntimeError):
                self._executor.shutdown(wait=False, cancel_futures=True)
