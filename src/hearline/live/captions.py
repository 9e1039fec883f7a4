"""Live captions of this machine's audio: one capture per process, (re)started and stopped on request.

``start()`` validates everything (source, device, model, languages) *before* touching the running capture,
so a bad request never stops good captions; a valid one replaces the running capture (restart with the
new settings).  What happens is reported as typed events (``hearline.live.captions_events``) to the
``emit`` the owner gives; the captions door turns them into its wire format.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from hearline import languages
from hearline.audio import capture
from hearline.config import Settings
from hearline.engines.base import EngineError, UnsupportedOption
from hearline.live.captions_events import (
    CaptionsStatus,
    CaptionsStopped,
    NoTranslation,
    Refusal,
    ServiceClosing,
    StartRefused,
    StartRequest,
)
from hearline.live.captions_feed import CaptionRun, Emit
from hearline.live.session import LiveOptions, LiveSession
from hearline.live.translate import TranslationEvent, TranslationWorker, TranslatorUnavailable, make_translator
from hearline.models.pool import ModelPool
from hearline.models.resolve import UnknownModel

logger = logging.getLogger(__name__)


def validate_language(code: str | None, *, allow: str, field_name: str) -> str:
    """A table code (canonical spelling) for ``lang_from``/``lang_to``; raises StartRefused."""
    value = (code or allow).strip()
    if value.lower() == allow:
        return allow
    try:
        lang = languages.lookup(value)
    except languages.UnknownLanguage as exc:
        raise StartRefused(Refusal.UNKNOWN_LANGUAGE, f"{field_name}: {exc}") from exc
    if lang.code in {languages.AUTO, languages.NONE}:
        raise StartRefused(Refusal.UNKNOWN_LANGUAGE, f"{field_name} cannot be {lang.code!r}; use {allow!r}")
    return lang.code


class CaptionService:
    def __init__(self, settings: Settings, pool: ModelPool, emit: Emit) -> None:
        self.settings = settings
        self.pool = pool
        self._emit = emit
        self._run: CaptionRun | None = None
        self._last: CaptionRun | None = None
        self._lock = asyncio.Lock()
        self._starting: asyncio.Task[tuple[str, CaptionsStatus]] | None = None
        self._stopped_starts: set[asyncio.Task[tuple[str, CaptionsStatus]]] = set()
        self._caption_ids = itertools.count(1)  # caption ids keep rising across restarts

    @property
    def running(self) -> bool:
        return self._run is not None

    @property
    def starting(self) -> bool:
        """A /start is still validating, loading its model or opening its device."""
        return self._starting is not None and not self._starting.done()

    def status(self) -> CaptionsStatus | None:
        """The running capture's settings, else the last one's; None before the first start."""
        if self._run is not None:
            return self._run.status(True)
        if self._last is not None:
            return self._last.status(False)
        return None

    async def start(self, request: StartRequest) -> tuple[str, CaptionsStatus]:
        """Validate, then (re)start; returns (message, status) or raises StartRefused.

        The start runs as a task a ``stop()`` can cancel: loading a model or opening a device may take
        seconds, and /stop must answer at once whatever /start is doing.
        """
        task = asyncio.ensure_future(self._start(request))
        self._starting = task
        try:
            return await task
        except asyncio.CancelledError:
            if task not in self._stopped_starts:
                raise  # this request itself was cancelled (its client left)
            raise StartRefused(Refusal.STOPPED, "stopped: a /stop arrived before the capture had started") from None
        finally:
            self._stopped_starts.discard(task)
            if self._starting is task:
                self._starting = None

    async def _start(self, request: StartRequest) -> tuple[str, CaptionsStatus]:
        async with self._lock:
            source = (request.source or "system").strip().lower()
            if source not in capture.SOURCES:
                raise StartRefused(Refusal.BAD_SOURCE, f"unknown source {request.source!r}; use system or microphone")
            lang_from = validate_language(request.lang_from, allow=languages.AUTO, field_name="lang_from")
            lang_to = validate_language(request.lang_to, allow=languages.NONE, field_name="lang_to")
            model_name = (request.model or "").strip() or None
            try:
                spec = self.pool.resolve(model_name)
            except UnknownModel as exc:
                raise StartRefused(Refusal.UNKNOWN_MODEL, str(exc)) from exc
            request = StartRequest(source, model_name, lang_from, lang_to, (request.device or "").strip() or None)
            try:
                device = await asyncio.to_thread(
                    capture.resolve_device, source, request.device, self.settings.pulse_server
                )
            except capture.NoAudioDevice as exc:
                raise StartRefused(Refusal.NO_AUDIO_DEVICE, str(exc)) from exc

            session = await self._open_session(model_name, spec.name, lang_from)
            try:
                worker, note = await self._translation(model_name, lang_from, lang_to)
                restarted = self._run is not None
                if restarted:
                    await self._stop_run()
            except BaseException:  # refused or cancelled by /stop: the new session is not kept
                await asyncio.shield(self._close_session(session))
                raise
            run = CaptionRun(self.settings, request, device, spec.name, session, self._emit, self._caption_ids, worker)
            self._run = run
            run.start()
            message = "restarted" if restarted else "started"
            if note:
                message += f"; {note}"
                self._emit(NoTranslation(note))
            logger.info("captions %s: %s", message, run.status(True))
            return message, run.status(True)

    async def stop(self) -> tuple[str, CaptionsStatus | None]:
        starting = self._starting
        if starting is not None and not starting.done():
            self._stopped_starts.add(starting)
            starting.cancel()
            await asyncio.wait([starting])
        async with self._lock:
            if self._run is None:
                return "not running", self.status()
            run = self._run
            await self._stop_run()
            self._emit(CaptionsStopped())
            return "stopped", run.status(False)

    async def shutdown(self) -> None:
        """App shutdown: stop capture, tell subscribers the stream is closing."""
        async with self._lock:
            if self._run is not None:
                await self._stop_run(flush=False)
        self._emit(ServiceClosing())

    # -- internals --
    async def _open_session(self, model_name: str | None, spec_name: str, lang_from: str) -> LiveSession:
        options = LiveOptions(
            language=languages.engine_code(lang_from),
            prompt=languages.prompt_for(lang_from),
            silence_ms=self.settings.vad_silence_ms,
            max_utterance_s=self.settings.max_utterance_s,
        )
        session = LiveSession(self.pool, model_name, options)
        try:
            await session.start()
        except asyncio.CancelledError:
            await asyncio.shield(self._close_session(session))
            raise
        except UnknownModel as exc:
            raise StartRefused(Refusal.UNKNOWN_MODEL, str(exc)) from exc
        except UnsupportedOption as exc:
            raise StartRefused(Refusal.UNSUPPORTED, str(exc)) from exc
        except EngineError as exc:  # ModelFilesMissing and load failures
            raise StartRefused(Refusal.MODEL_UNAVAILABLE, str(exc)) from exc
        except (OSError, RuntimeError, ValueError) as exc:
            logger.warning("captions: model %s could not be loaded: %s", spec_name, exc)
            raise StartRefused(Refusal.MODEL_UNAVAILABLE, f"model {spec_name!r} could not be loaded: {exc}") from exc
        if self.pool.metrics is not None:
            self.pool.metrics.session_opened("captions", spec_name, session)
        return session

    async def _close_session(self, session: LiveSession) -> None:
        await session.close()
        if self.pool.metrics is not None:
            self.pool.metrics.session_closed(session)

    async def _translation(
        self, model_name: str | None, lang_from: str, lang_to: str
    ) -> tuple[TranslationWorker | None, str | None]:
        """The worker for ``lang_to`` (None when not asked for), or why there is none."""
        if lang_to in {languages.NONE, lang_from}:
            return None, None
        engine = await self.pool.get(model_name)
        try:
            translator = make_translator(self.settings, self.pool, model_name, lang_to, engine.capabilities.translate)
        except (TranslatorUnavailable, OSError, RuntimeError, ValueError) as exc:
            # A broken translator never costs the captions themselves.
            logger.warning("captions: no translator for %s: %s", lang_to, exc)
            return None, f"captions without translation to {lang_to}: {exc}"
        worker = TranslationWorker(
            translator, self._on_translation, self.settings.translate_queue, self.settings.translate_timeout_s
        )
        return worker, None

    async def _on_translation(self, event: TranslationEvent) -> None:
        self._emit(event)

    async def _stop_run(self, flush: bool = True) -> None:
        run = self._run
        if run is None:
            return
        self._run = None
        self._last = run
        try:
            await run.stop(flush)
        finally:
            if self.pool.metrics is not None:
                self.pool.metrics.session_closed(run.session)
