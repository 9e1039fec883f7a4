"""Loaded models and the worker threads that run them.

One pool per process (created by the app factory, never at import).  It loads models lazily, one
load at a time per model (a missing catalog model is downloaded first when online and allowed),
evicts least-recently-used models over the memory budget, unloads models idle for
``settings.idle_unload_s``, and bounds how many inference calls run and wait per model so overload
turns into a clear "busy" answer instead of an unbounded queue.  Inference always runs in the pool's
executor, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from hearline.config import Settings
from hearline.engines.base import Engine, TranscribeOptions, Transcript, WindowRequest
from hearline.metrics import Metrics
from hearline.models.download import (
    DownloadError,
    DownloadManager,
    ModelUnavailable,
    OfflineMode,
    RemoteNotFound,
    is_offline,
)
from hearline.models.heap import HeapTrimmer
from hearline.models.resolve import ModelSpec, UnknownModel, load_engine, resolve_model, spec_entry
from hearline.models.scheduler import RULES, Batcher, Lane, StreamSlots, Work, refuses, run_as
from hearline.models.slot import ModelSlot
from hearline.models.workers import WorkerThreads

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ServerBusy(RuntimeError):
    """Too many requests are already running or waiting for this model."""

    def __init__(self, model: str, retry_after: float = 1.0, message: str | None = None) -> None:
        super().__init__(message or f"model {model!r} is busy; retry later")
        self.model = model
        self.retry_after = retry_after


class ServerDraining(ServerBusy):
    """The server is shutting down: new sessions go to another replica."""

    def __init__(self, model: str) -> None:
        super().__init__(model, retry_after=5.0, message="the server is shutting down; retry on another replica")


class ModelPool:
    def __init__(
        self, settings: Settings, executor: ThreadPoolExecutor | None = None, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics  # the app factory attaches its app's metrics when it has none
        # Threads that wait in a batched call hold no core: a batching model admits batch_size times more jobs.
        threads = settings.workers * settings.batch_size
        # The live lane has its own threads: its short steps never queue behind batch jobs for a thread.
        self.workers = WorkerThreads(threads, executor)
        self._slots: OrderedDict[str, ModelSlot] = OrderedDict()
        self._loading = 0
        self._guard = threading.Lock()
        self.downloads = DownloadManager(settings)
        self.stream_slots = StreamSlots()  # open live utterances per engine that declares a limit
        self.live_sessions: weakref.WeakSet[Any] = weakref.WeakSet()  # open sessions of the doors (drain)
        # every started live session, captions too (anything with an ``engine``): its model stays loaded
        self.engine_users: weakref.WeakSet[Any] = weakref.WeakSet()
        self.draining = False  # True: new live sessions are refused (graceful drain)
        self._reaper: asyncio.Task[None] | None = None
        # once work is over: idle threads end and freed heap goes back to the OS
        self.heap = HeapTrimmer(retire=self.workers.retire)

    # -- resolution and loading ---------------------------------------------------------------
    def resolve(self, name: str | None) -> ModelSpec:
        """Model spec for a request's model name (``None``, ``whisper-1`` and ``default`` mean the default).

        Names reaching the pool come from clients: paths and unlisted hub repositories are refused there."""
        return resolve_model(name, self.settings, client=True)

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
            slot = self._slots[spec.name] = ModelSlot(spec=spec)
        self._slots.move_to_end(spec.name)
        slot.last_used = time.monotonic()
        self._start_reaper()
        if slot.engine is not None:
            return slot.engine
        async with slot.load_lock:
            if slot.engine is None:
                self._loading += 1
                try:
                    spec = slot.spec = await self._ensure_files(name, spec)
                    started = time.perf_counter()
                    engine = await asyncio.get_running_loop().run_in_executor(
                        self.workers.executor(live=False), load_engine, spec, self.settings
                    )
                    logger.info("loaded model %s (%s) in %.2fs", spec.name, spec.engine, time.perf_counter() - started)
                    self._count_load(spec.name, time.perf_counter() - started)
                finally:
                    self._loading -= 1
                slot.engine = engine
                slot.last_used = time.monotonic()
                slot.open_gates(self.settings.batch_capacity, self._batcher(engine, slot))
                self._evict_over_budget(keep=spec.name)
        return slot.engine

    async def _ensure_files(self, name: str | None, spec: ModelSpec) -> ModelSpec:
        """Download a missing model first when that is allowed; otherwise load_engine explains what is missing.

        A failed download is :class:`ModelUnavailable` (the model exists, fetching it failed: 503), except
        for a hub repository the catalog does not list and the hub does not have: that name is simply
        unknown (404), like any other unknown name.
        """
        entry = spec_entry(spec)
        if spec.options.get("installed") is not False or entry is None or entry.download_kind is None:
            return spec
        if is_offline(self.settings) or not self.settings.auto_download:
            return spec
        logger.info("model %s is not installed; downloading it before first use", spec.name)
        try:
            await asyncio.to_thread(self.downloads.ensure, entry)
        except OfflineMode:
            raise  # offline mode switched on meanwhile: "not installed" (404), as without a download
        except RemoteNotFound as exc:
            if entry.source == "hub":
                raise UnknownModel(spec.name, f"the hub has no repository {entry.repo!r}") from exc
            raise self._unavailable(spec.name, exc) from exc
        except DownloadError as exc:
            raise self._unavailable(spec.name, exc) from exc
        return self.resolve(name)

    @staticmethod
    def _unavailable(name: str, exc: DownloadError) -> ModelUnavailable:
        return ModelUnavailable(
            f"model {name!r} is not installed and downloading it failed, so it cannot be used right now: {exc}. "
            f"Retry later, check the server's network access (proxy, HF_ENDPOINT), or install it with "
            f"`hearline models pull {name}` (or `hearline models import PATH`)",
            name,
        )

    def _evict_over_budget(self, keep: str) -> None:
        budget = self.settings.memory_budget_mb * 1024 * 1024
        for name in list(self._slots):
            if self._used_bytes() <= budget:
                break
            slot = self._slots[name]
            if name == keep or slot.engine is None or slot.active or self.users_of(name):
                continue
            logger.info("unloading %s to stay within the %d MB memory budget", name, self.settings.memory_budget_mb)
            self._unload(slot, reason="budget")

    def _used_bytes(self) -> int:
        return sum(self._slot_bytes(slot) for slot in self._slots.values() if slot.engine is not None)

    @staticmethod
    def _slot_bytes(slot: ModelSlot) -> int:
        """The engine's own figure, or the catalog's memory estimate when that is larger."""
        reported = slot.engine.memory_bytes() if slot.engine is not None else 0
        estimate = slot.spec.options.get("memory_mb") or 0
        return max(int(reported), int(float(estimate) * 1024 * 1024))

    # -- idle unloading -------------------------------------------------------------------------
    def _start_reaper(self) -> None:
        if self.settings.idle_unload_s <= 0 or (self._reaper is not None and not self._reaper.done()):
            return
        self._reaper = asyncio.get_running_loop().create_task(self._reap_idle(), name="hearline-idle-unload")

    async def _reap_idle(self) -> None:
        idle = self.settings.idle_unload_s
        interval = max(0.05, min(idle / 4, 30.0))
        while True:
            await asyncio.sleep(interval)
            self.unload_idle(idle)

    def unload_idle(self, idle_s: float) -> list[str]:
        """Unload models unused for ``idle_s`` seconds (never the default model, nor one in use)."""
        try:
            default = self.resolve(None).name
        except (UnknownModel, ValueError) as exc:  # ValueError: a broken models.yaml
            logger.warning("idle unload: cannot resolve the default model: %s", exc)
            default = None
        now = time.monotonic()
        unloaded = []
        for name, slot in list(self._slots.items()):
            if slot.engine is None or slot.active or slot.waiting or name == default or slot.load_lock.locked():
                continue
            if self.users_of(name):  # a live session between utterances is not idle
                continue
            if now - slot.last_used >= idle_s:
                logger.info("unloading %s: idle for %.0fs", name, now - slot.last_used)
                self._unload(slot, reason="idle")
                unloaded.append(name)
        return unloaded

    def _batcher(self, engine: Engine, slot: ModelSlot) -> Batcher[WindowRequest, Transcript] | None:
        """A batcher for an engine that declares batched window decoding, unless ``batch_size`` is 1."""
        decode = getattr(engine, "decode_windows", None)
        key = getattr(engine, "window_key", None)
        if self.settings.batch_size <= 1 or not callable(decode) or not callable(key):
            return None
        return Batcher(
            decode,
            lambda request: key(request.options),
            size=self.settings.batch_size,
            wait_s=self.settings.batch_wait_ms / 1000,
            parallel=int(getattr(engine, "parallel_calls", 1)),
            busy=lambda: slot.batching,
            name=f"batch-{engine.name}",
        )

    def transcriber(self, engine: Engine) -> Callable[[np.ndarray, TranscribeOptions], Transcript]:
        """``engine.transcribe``, or for a batching model a call that joins the next batched window decode
        when the engine can make the clip one window (``window_request``: a live session's partial window or
        its utterance's final, VAD cut in this thread).  Blocks: for worker threads."""
        slot = self._slots.get(engine.name)
        batcher = slot.batcher if slot is not None and slot.engine is engine else None
        prepare = getattr(engine, "window_request", None)
        if batcher is None or not callable(prepare):
            return engine.transcribe

        def transcribe(audio: np.ndarray, options: TranscribeOptions) -> Transcript:
            request = prepare(audio, options)
            return engine.transcribe(audio, options) if request is None else batcher.submit(request)

        return transcribe

    def _unload(self, slot: ModelSlot, reason: str | None = None) -> None:
        """Close the slot's engine; ``reason`` (budget, idle, request) counts it as an eviction."""
        engine, slot.engine = slot.engine, None
        if slot.batcher is not None:
            slot.batcher.close()
            slot.batcher = None
        if engine is not None:
            if reason is not None and self.metrics is not None:
                self.metrics.model_evicted(slot.spec.name, reason)
            engine.close()

    def _count_load(self, name: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.model_loaded(name, seconds)

    def batches_by_model(self) -> dict[str, dict[int, int]]:
        """Batched window decodes each loaded model ran, by batch size: ``{model: {size: calls}}``."""
        return {name: dict(slot.batcher.sizes) for name, slot in self._slots.items() if slot.batcher is not None}

    def work_by_model(self) -> dict[str, tuple[int, int]]:
        """Jobs waiting at and admitted by each loaded model's gates: ``{model: (waiting, running)}``."""
        return {name: (slot.waiting, slot.active) for name, slot in self._slots.items() if slot.lanes is not None}

    def users_of(self, name: str, *, partials: bool = True) -> int:
        """Started live sessions decoding with the loaded model ``name``: as their model, or (``partials``) as
        the model of their partials (``--partial-model``)."""

        def uses(user: Any) -> bool:
            engines = (user.engine, getattr(user, "partial_engine", None) if partials else None)
            return any(getattr(engine, "name", None) == name for engine in engines)

        return sum(1 for user in list(self.engine_users) if uses(user))

    async def unload(self, name: str) -> bool:
        """Unload the model ``name``: the caller checks :meth:`users_of` first (sessions would lose it)."""
        spec = self.resolve(name)
        slot = self._slots.get(spec.name)
        if slot is None or slot.engine is None:
            return False
        async with slot.load_lock:
            self._unload(slot, reason="request")
        return True

    def batch_saturated(self, engine: Engine) -> bool:
        """Whether every batch slot of ``engine`` is taken (finals, requests): the cores are all on work
        someone waits for, and optional work would only slow it down.  A batching model's slots are the
        batched calls it runs at once (its replicas), not the many jobs its gate admits to wait in a batch."""
        slot = self._slots.get(engine.name)
        if slot is None or slot.lanes is None:
            return False
        gate = slot.lanes[False]
        if slot.batcher is None or slot.solo is None:
            return gate.full
        return min(gate.active, slot.batcher.parallel) + slot.solo.active >= slot.batcher.parallel

    def _fit_solo(self, slot: ModelSlot) -> None:
        """A batching model's uploads leave one replica free for the finals while live sessions use it."""
        if slot.solo is not None and slot.batcher is not None:
            slot.solo.resize(slot.batcher.parallel - (1 if self.users_of(slot.spec.name) else 0))

    # -- running inference --------------------------------------------------------------------
    async def run(
        self,
        engine: Engine,
        fn: Callable[..., T],
        *args: Any,
        work: Work = Work.REQUEST,
    ) -> T:
        """Run ``fn(*args)`` in a worker thread, admitted as :mod:`hearline.models.scheduler` rules for ``work``.

        Refusable work a busy model turns away raises :class:`ServerBusy`; finals and stream steps wait.
        """
        slot = self._slots.get(engine.name)
        lane = RULES[work].lane
        live = lane is Lane.LIVE
        executor = self.workers.executor(live)
        if slot is None or slot.lanes is None:
            # An engine built outside the pool (tests, benchmarks): run it directly.
            return await asyncio.get_running_loop().run_in_executor(executor, run_as, work, fn, *args)
        gate = slot.gate(work)
        self._fit_solo(slot)
        if refuses(work, gate, self.settings.max_queue_per_model):
            if self.metrics is not None:
                self.metrics.job_refused(engine.name, work.value)
            raise ServerBusy(engine.name, retry_after=gate.expected_wait())
        self.heap.busy()
        await gate.acquire(RULES[work].rank)
        slot.last_used = time.monotonic()
        started = time.perf_counter()
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, run_as, work, fn, *args)
        finally:
            self._fit_solo(slot)
            gate.release()
            elapsed = time.perf_counter() - started
            gate.observe(elapsed)
            if self.metrics is not None:
                self.metrics.inference(engine.name, work.value, elapsed)
            if self.idle:
                self.heap.idle()

    def expected_wait(self, name: str | None = None, work: Work = Work.REQUEST) -> float:
        """Seconds before ``work`` for the loaded model ``name`` (None: the default) would start, if queued now;
        0 when that model is not loaded."""
        try:
            slot = self._slots.get(self.resolve(name).name)
        except (UnknownModel, ValueError):
            return 0.0
        if slot is None or slot.lanes is None:
            return 0.0
        gate = slot.gate(work)
        return gate.expected_wait() if gate.full or gate.waiting else 0.0

    @property
    def idle(self) -> bool:
        """No job running or waiting at any model."""
        return all(not slot.active and not slot.waiting for slot in self._slots.values())

    async def close(self) -> None:
        await self.heap.close()
        if self._reaper is not None:
            self._reaper.cancel()
            if self._reaper.get_loop() is asyncio.get_running_loop():
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reaper
        for slot in self._slots.values():
            self._unload(slot)
        with contextlib.suppress(RuntimeError):
            self.workers.close()
