"""OpenAI's audio API: ``POST /v1/audio/transcriptions``, ``POST /v1/audio/translations``, ``GET /health``.

A thin adapter: parse OpenAI's multipart form (as the official SDKs send it: ``list[]`` brackets,
booleans as strings, nested objects as ``key[sub]``), decode the upload off the event loop, run the
engine through :meth:`ModelPool.run`, render with :mod:`hearline.formats`.  Uploads are counted while
they stream in and spooled to disk by Starlette, so an oversize body is refused without ever being
held in memory.  Reading and validating the form lives in :mod:`hearline.server.openai_form` (split
out to keep both modules small); the routes and SSE streaming stay here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from hearline import formats
from hearline.audio.decode import DecodeCancelled, decode_audio
from hearline.engines.base import SAMPLE_RATE, Engine, Segment, Task, Transcript
from hearline.models.pool import ModelPool
from hearline.server.client_watch import ClientGone, ClientWatch
from hearline.server.errors import APIError, to_api_error
from hearline.server.openai_form import AudioRequest, parse_request, read_form
from hearline.server.upload_slots import upload_slot

logger = logging.getLogger(__name__)

router = APIRouter()

#: segments waiting for a slow SSE reader; the worker thread waits (back-pressure) when it is full
STREAM_QUEUE_SIZE = 64


# -- endpoints -------------------------------------------------------------------------------------
@router.post("/v1/audio/transcriptions")
async def create_transcription(request: Request) -> Response:
    """OpenAI-compatible transcription (json, text, srt, vtt, verbose_json, or SSE with ``stream=true``)."""
    return await _handle(request, "transcribe")


@router.post("/v1/audio/translations")
async def create_translation(request: Request) -> Response:
    """Translate speech into English; engines that cannot translate answer 400."""
    return await _handle(request, "translate")


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """``ok`` once the default model is loaded, ``loading`` before that."""
    pool: ModelPool = request.app.state.pool
    try:
        ready = pool.default_name in pool.loaded()
    except LookupError as exc:  # the configured default model does not exist
        return JSONResponse({"status": "error", "message": str(exc)}, status_code=503)
    return JSONResponse({"status": "ok" if ready else "loading"})


async def _handle(request: Request, task: Task) -> Response:
    settings = request.app.state.settings
    pool: ModelPool = request.app.state.pool
    watch = ClientWatch(request.receive)
    try:
        with upload_slot(request.app.state):
            form = await read_form(request, settings.max_upload_bytes)
            watch.start()  # the whole body is in: what arrives next is the client's disconnect
            try:
                req = parse_request(form, task)
                engine = await pool.get(req.model)
                engine.check_options(req.options)  # e.g. translate on an English-only model: 400 before decoding
                loop = asyncio.get_running_loop()
                decode = functools.partial(
                    decode_audio, req.upload.file, max_seconds=settings.max_audio_seconds, cancel=watch.gone
                )
                audio = await loop.run_in_executor(None, decode)
            finally:
                await form.close()  # the spooled upload is no longer needed once decoded
        request.app.state.metrics.audio_received("rest", len(audio) / SAMPLE_RATE)
        if req.stream:
            await watch.stop()  # the SSE response watches for the disconnect itself
            return await _stream(pool, engine, audio, req)
        transcript = await pool.run(engine, watch.guard(engine.transcribe), audio, req.options, watch.check)
    except DecodeCancelled as exc:
        raise ClientGone from exc
    finally:
        await watch.stop()
    body = formats.render(
        transcript,
        req.response_format,
        task=task,
        words=req.words,
        logprobs=req.logprobs,
        temperature=req.options.temperature,
    )
    if isinstance(body, dict):
        return JSONResponse(body)
    return Response(body, media_type=formats.MEDIA_TYPES[req.response_format])


# -- streaming -------------------------------------------------------------------------------------
class StreamAbandoned(Exception):
    """Raised inside the engine's thread to stop work nobody will read."""


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


class _SegmentBridge:
    """Carries segments from the engine's worker thread to the event loop with back-pressure."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Segment] = asyncio.Queue(maxsize=STREAM_QUEUE_SIZE)
        self.abandoned = threading.Event()

    def on_segment(self, segment: Segment) -> None:
        """Called in the worker thread; waits while the queue is full, aborts the engine if abandoned."""
        if self.abandoned.is_set():
            raise StreamAbandoned
        future = asyncio.run_coroutine_threadsafe(self.queue.put(segment), self.loop)
        while True:
            try:
                future.result(timeout=1.0)
                return
            except concurrent.futures.TimeoutError:
                if self.abandoned.is_set() or self.loop.is_closed():
                    future.cancel()
                    raise StreamAbandoned from None

    def abandon(self) -> None:
        self.abandoned.set()
        while not self.queue.empty():
            self.queue.get_nowait()

    async def next(self, task: asyncio.Task[Transcript]) -> Segment | Transcript:
        """The next segment, or the finished transcript once the engine is done (raises its error)."""
        if not self.queue.empty():
            return self.queue.get_nowait()
        getter = asyncio.ensure_future(self.queue.get())
        try:
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        return task.result()


class _TranscriptStream(StreamingResponse):
    """A streaming response that always releases the engine, however the response ends."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def _log_stream_end(task: asyncio.Task[Transcript]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, StreamAbandoned):
        logger.info("streaming client went away; stopped transcribing")
    elif exc is not None:
        logger.debug("streaming transcription ended with %r", exc)


async def _stream(pool: ModelPool, engine: Engine, audio: Any, req: AudioRequest) -> Response:
    """SSE: one ``transcript.text.delta`` per segment, then ``transcript.text.done``, then ``[DONE]``.

    The first event is awaited before the response starts, so errors that happen before any text
    (busy, engine failure) still get a proper HTTP status instead of a broken stream.
    """
    bridge = _SegmentBridge(asyncio.get_running_loop())
    task = asyncio.ensure_future(pool.run(engine, engine.transcribe, audio, req.options, bridge.on_segment))
    task.add_done_callback(_log_stream_end)
    try:
        first = await bridge.next(task)
    except BaseException:
        bridge.abandon()
        raise

    async def events() -> AsyncIterator[bytes]:
        item = first
        while isinstance(item, Segment):
            yield _sse({"type": "transcript.text.delta", "delta": item.text})
            try:
                item = await bridge.next(task)
            except Exception as exc:  # noqa: BLE001 - headers are sent; report in-stream as the SDK expects
                api_error = _stream_error(exc)
                yield _sse({"error": {"message": api_error.message, "type": api_error.type, "code": api_error.code}})
                yield _sse("[DONE]")
                return
        done: dict[str, Any] = {
            "type": "transcript.text.done",
            "text": item.text,
            "language": item.language,
            "duration": round(item.duration, 3),
        }
        if req.logprobs:
            done["logprobs"] = formats.word_logprobs(item.words)
        yield _sse(done)
        yield _sse("[DONE]")

    return _TranscriptStream(events(), on_close=bridge.abandon)


def _stream_error(exc: Exception) -> APIError:
    api_error = to_api_error(exc)
    if api_error.status >= 500:
        logger.error("streaming transcription failed: %s", exc, exc_info=exc)
    return api_error
