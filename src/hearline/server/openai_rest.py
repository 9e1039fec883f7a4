"""OpenAI's audio API: ``POST /v1/audio/transcriptions``, ``POST /v1/audio/translations``, ``GET /health``.

A thin adapter: parse OpenAI's multipart form (as the official SDKs send it: ``list[]`` brackets,
booleans as strings, nested objects as ``key[sub]``), decode the upload off the event loop, run the
engine through :meth:`ModelPool.run`, render with :mod:`hearline.formats`.  Uploads are counted while
they stream in and spooled to disk by Starlette, so an oversize body is refused without ever being
held in memory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import FormData, UploadFile
from starlette.types import Message, Receive, Scope, Send

from hearline import formats
from hearline.audio.decode import decode_audio
from hearline.engines.base import Engine, Segment, Task, TranscribeOptions, Transcript
from hearline.languages import engine_code, prompt_for
from hearline.models.pool import ModelPool
from hearline.server.errors import APIError, UploadTooLarge, drain_body, to_api_error

logger = logging.getLogger(__name__)

router = APIRouter()

B = TypeVar("B", bool, bool | None)

#: room for the multipart framing and the small text fields on top of the file-size limit
FORM_OVERHEAD_BYTES = 256 * 1024
#: an oversize body is read and discarded up to this much before answering 413, so the client (which
#: sends the whole body before reading) sees the error instead of a connection reset
REJECT_DRAIN_BYTES = 64 * 1024 * 1024
#: segments waiting for a slow SSE reader; the worker thread waits (back-pressure) when it is full
STREAM_QUEUE_SIZE = 64

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}
GRANULARITIES = {"word", "segment"}
INCLUDES = {"logprobs"}


# -- upload limit ----------------------------------------------------------------------------------
class LimitedReceive:
    """Wraps ASGI ``receive`` to count body bytes and stop the upload as soon as it passes the limit."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self.limit = limit
        self.received = 0
        self.complete = False

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
            if self.received > self.limit:
                raise UploadTooLarge(self.limit - FORM_OVERHEAD_BYTES)
        return message


async def read_form(request: Request, max_upload_bytes: int) -> FormData:
    """Parse the multipart form with the size limit enforced by Content-Length and while streaming."""
    limit = max_upload_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        await drain_body(request.receive, min(int(declared), REJECT_DRAIN_BYTES))
        raise UploadTooLarge(max_upload_bytes)
    receive = LimitedReceive(request.receive, limit)
    try:
        return await Request(request.scope, receive).form(max_files=1, max_fields=64)
    except UploadTooLarge:
        if not receive.complete:
            await drain_body(request.receive, REJECT_DRAIN_BYTES)
        raise UploadTooLarge(max_upload_bytes) from None


# -- form fields -----------------------------------------------------------------------------------
@dataclass
class AudioRequest:
    """Everything a transcription/translation request asked for, validated."""

    upload: UploadFile
    model: str | None
    response_format: str
    stream: bool
    options: TranscribeOptions
    words: bool = False
    logprobs: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise APIError(400, f"'{name}' must be a text field, not a file", param=name, code="invalid_value")
    return value.strip()


def _bool(form: FormData, name: str, default: B) -> bool | B:
    value = _text(form, name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise APIError(400, f"'{name}' must be true or false, got {value!r}", param=name, code="invalid_value")


def _list(form: FormData, name: str) -> list[str]:
    """A list field sent bracketed (``name[]``, what the SDKs send), bare, repeated or comma-separated."""
    values: list[str] = []
    for key in (f"{name}[]", name):
        for raw in form.getlist(key):
            if not isinstance(raw, str):
                raise APIError(400, f"'{name}' must be text", param=name, code="invalid_value")
            values.extend(part.strip() for part in raw.split(",") if part.strip())
    return values


def _temperature(form: FormData) -> float:
    value = _text(form, "temperature")
    if value is None or value == "":
        return 0.0
    try:
        temperature = float(value)
    except ValueError:
        raise APIError(
            400, f"'temperature' must be a number, got {value!r}", param="temperature", code="invalid_value"
        ) from None
    if not math.isfinite(temperature) or not 0.0 <= temperature <= 1.0:
        raise APIError(400, "'temperature' must be between 0 and 1", param="temperature", code="invalid_value")
    return temperature


def _beam_size(form: FormData) -> int:
    value = _text(form, "beam_size")
    if not value:
        return TranscribeOptions.beam_size
    if not value.isdigit() or not 1 <= int(value) <= 20:
        raise APIError(400, "'beam_size' must be an integer from 1 to 20", param="beam_size", code="invalid_value")
    return int(value)


def _chunking(form: FormData) -> dict[str, Any] | None:
    """``chunking_strategy`` as ``auto``, a JSON object, or ``chunking_strategy[type]=server_vad`` fields."""
    nested = {
        key[len("chunking_strategy[") : -1]: value
        for key, value in form.multi_items()
        if key.startswith("chunking_strategy[") and key.endswith("]") and isinstance(value, str)
    }
    raw = _text(form, "chunking_strategy")
    if raw is None and not nested:
        return None
    if raw is not None and raw != "auto":
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if parsed == "auto":
            raw = "auto"
        elif not isinstance(parsed, dict):
            raise APIError(
                400,
                '\'chunking_strategy\' must be "auto" or a JSON object like {"type": "server_vad"}',
                param="chunking_strategy",
                code="invalid_value",
            )
        else:
            nested = {**parsed, **nested}
    if raw == "auto" and not nested:
        return {"type": "auto"}
    if nested.get("type") != "server_vad":
        raise APIError(
            400, "chunking_strategy.type must be 'server_vad'", param="chunking_strategy", code="invalid_value"
        )
    return nested


def parse_request(form: FormData, task: Task) -> AudioRequest:
    """Validate the form; cheap checks come before the upload is decoded."""
    upload = form.get("file")
    if upload is None:
        raise APIError(400, "you must provide a 'file' to transcribe", param="file", code="missing_file")
    if not isinstance(upload, UploadFile):
        raise APIError(400, "'file' must be a file upload, not a text field", param="file", code="invalid_file")

    response_format = (_text(form, "response_format") or "json").lower()
    if response_format not in formats.RESPONSE_FORMATS:
        raise APIError(
            400,
            f"unknown response_format {response_format!r}; expected one of {', '.join(formats.RESPONSE_FORMATS)}",
            param="response_format",
            code="invalid_value",
        )

    granularities = [g.lower() for g in _list(form, "timestamp_granularities")]
    unknown = [g for g in granularities if g not in GRANULARITIES]
    if unknown:
        raise APIError(
            400,
            f"unknown timestamp granularity {unknown[0]!r}; expected 'word' or 'segment'",
            param="timestamp_granularities",
            code="invalid_value",
        )
    includes = _list(form, "include")
    unknown = [i for i in includes if i not in INCLUDES]
    if unknown:
        raise APIError(400, f"unknown include {unknown[0]!r}", param="include", code="invalid_value")

    language_field = _text(form, "language") if task == "transcribe" else None
    language = engine_code(language_field)  # UnknownLanguage -> 400
    prompt = _text(form, "prompt") or prompt_for(language_field)
    chunking = _chunking(form)
    words = "word" in granularities
    options = TranscribeOptions(
        language=language,
        task=task,
        prompt=prompt,
        temperature=_temperature(form),
        beam_size=_beam_size(form),
        word_timestamps=words or bool(includes),
        vad_filter=_bool(form, "vad_filter", default=True if chunking is not None else None),
        hotwords=_text(form, "hotwords") or None,
    )
    return AudioRequest(
        upload=upload,
        model=_text(form, "model") or None,
        response_format=response_format,
        stream=_bool(form, "stream", default=False),
        options=options,
        words=words,
        logprobs="logprobs" in includes,
    )


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
    form = await read_form(request, settings.max_upload_bytes)
    try:
        req = parse_request(form, task)
        engine = await pool.get(req.model)
        engine.check_options(req.options)  # e.g. translate on an English-only model: 400 before decoding
        loop = asyncio.get_running_loop()
        audio = await loop.run_in_executor(None, decode_audio, req.upload.file)
    finally:
        await form.close()  # the spooled upload is no longer needed once decoded

    if req.stream:
        return await _stream(pool, engine, audio, req)
    transcript = await pool.run(engine, engine.transcribe, audio, req.options, None)
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
