"""Deepgram-style listen API: live ``/v1/listen`` WebSocket and pre-recorded ``POST /v1/listen``.

For Deepgram's SDKs, Pipecat and LiveKit agents pointed at this server's base URL.  Live wire (see
:mod:`hearline.server.deepgram_wire` for the message shapes)::

    client: binary audio (raw with ``encoding`` + ``sample_rate``, or a WebM/Ogg/MP4/WAV stream)
    client: {"type": "KeepAlive"} | {"type": "Finalize"} | {"type": "CloseStream"} (or an empty binary frame)
    server: Results (interim with ``interim_results=true``; finals with ``is_final`` and ``speech_final``),
            SpeechStarted (``vad_events``), UtteranceEnd (``utterance_end_ms``), Error, Metadata at the end

A request the server cannot serve (bad key, bad parameter, unknown model, busy) is refused at the
handshake with an HTTP status and Deepgram's ``{"err_code", "err_msg"}`` body, which the SDKs raise.
``endpointing`` shorter than the server's pause (``HEARLINE_VAD_SILENCE_MS``) is raised to it: Deepgram's
10 ms default would cut Whisper's input mid-phrase.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.requests import Request
from starlette.responses import JSONResponse

from hearline.audio.decode import AudioDecodeError, check_duration, decode_audio, resample
from hearline.audio.raw_stream import RawStream, is_wav_start, parse_wav_header
from hearline.audio.stream import StreamDecodeError, StreamDecoder
from hearline.engines.base import SAMPLE_RATE, TranscribeOptions
from hearline.live.session import Error, Final, LiveSession, Partial, SpeechStarted
from hearline.models.resolve import UnknownModel
from hearline.server.auth import is_authorized
from hearline.server.deepgram_wire import (
    RAW_ENCODINGS,
    BadParams,
    ListenParams,
    Stream,
    alternative,
    error_message,
    http_error,
    parse_params,
    speech_started,
    utterance_end,
)
from hearline.server.errors import DOMAIN_ERRORS, UploadTooLarge, read_body, to_api_error
from hearline.server.live_run import EventSink, LiveRun
from hearline.server.live_socket import (
    START_ERRORS,
    SocketSender,
    frame_error,
    open_live_session,
    refuse_handshake,
)
from hearline.server.upload_slots import UploadsFull, upload_slot

logger = logging.getLogger(__name__)

router = APIRouter()

UNAUTHORIZED = "Invalid credentials: send 'Authorization: Token <key>'"


def _params(conn: Request | WebSocket) -> ListenParams:
    pool = conn.app.state.pool

    def known(name: str) -> bool:
        try:
            pool.resolve(name)
        except UnknownModel:
            return False
        return True

    multi = {key: conn.query_params.getlist(key) for key in ("keywords", "keyterm")}
    return parse_params(conn.query_params, multi, known)


def _raw_stream(params: ListenParams) -> RawStream | None:
    """The raw-audio decoder ``encoding`` and ``sample_rate`` describe; None for containers."""
    if params.encoding not in RAW_ENCODINGS:
        return None
    kind = params.encoding if params.encoding in ("mulaw", "alaw") else "pcm"
    assert params.sample_rate is not None  # parse_params requires it for raw encodings
    return RawStream(kind, RAW_ENCODINGS[params.encoding], params.channels, params.sample_rate)


class _Input:
    """The connection's audio decoder, chosen by ``encoding`` (or by the first bytes of a container)."""

    def __init__(self, params: ListenParams) -> None:
        self.raw: RawStream | None = None
        self.container: StreamDecoder | None = None
        self._head = b""
        self.raw = _raw_stream(params)
        if self.raw is None and params.encoding is not None:
            self.container = StreamDecoder()

    def push(self, data: bytes) -> tuple[np.ndarray, int]:
        """Audio decodable so far and its sample rate; raises ``AudioDecodeError``/``StreamDecodeError``."""
        if self.raw is None and self.container is None:
            self._head += data
            if len(self._head) < 12:
                return np.zeros(0, np.float32), SAMPLE_RATE
            if not is_wav_start(self._head):
                self.container, data, self._head = StreamDecoder(), self._head, b""
            else:
                found = parse_wav_header(self._head)
                if found is None:
                    return np.zeros(0, np.float32), SAMPLE_RATE
                self.raw, offset = found
                data, self._head = self._head[offset:], b""
        if self.raw is not None:
            return self.raw.push(data), self.raw.sample_rate
        assert self.container is not None
        return self.container.push(data), SAMPLE_RATE

    def finish(self) -> tuple[np.ndarray, int]:
        if self.raw is not None:
            return self.raw.finish(), self.raw.sample_rate
        if self.container is not None and self.container.bytes_received:
            return self.container.finish(), SAMPLE_RATE
        return np.zeros(0, np.float32), SAMPLE_RATE


class _Connection(EventSink):
    """One live socket: its session, the forwarder turning events into Deepgram messages (``on_*``), the input."""

    def __init__(self, ws: WebSocket, session: LiveSession, params: ListenParams) -> None:
        assert session.engine is not None
        self.ws, self.session, self.params = ws, session, params
        self.stream = Stream.for_engine(session.engine, params.channels)
        self.input = _Input(params)
        self.finalizing = 0  # Finalize messages whose result has not been sent yet
        self.audio_failed = False
        self.sender = SocketSender(ws, "deepgram")
        self.live = LiveRun(session, self, "deepgram")

    async def send(self, message: dict[str, Any]) -> None:
        await self.sender.send(message)

    async def on_speech_started(self, event: SpeechStarted) -> None:
        if self.params.vad_events:
            await self.send(speech_started(event.start))

    async def on_partial(self, event: Partial) -> None:
        if self.params.interim_results and event.text:
            alt = alternative(event.text, event.words, self.params.punctuate)
            duration = self.session.audio_seconds - event.start
            await self.send(self.stream.results(event.start, duration, alt, is_final=False))

    async def on_final(self, event: Final) -> None:
        if not event.text and not self.finalizing:
            return
        from_finalize = self.finalizing > 0
        self.finalizing = max(0, self.finalizing - 1)
        alt = alternative(event.text, event.words, self.params.punctuate)
        message = self.stream.results(
            event.start, event.end - event.start, alt, is_final=True, speech_final=True, from_finalize=from_finalize
        )
        await self.send(message)
        if self.params.utterance_end_ms is not None and event.text:
            await self.send(utterance_end(event.words[-1].end if event.words else event.end))

    async def on_error(self, event: Error) -> None:
        await self.send(error_message(event.message))

    async def on_audio(self, data: bytes) -> None:
        if self.audio_failed:
            return
        if (error := frame_error(len(data))) is not None:
            await self.send(error_message(error))
            return
        self.stream.sha256.update(data)
        try:
            audio, rate = self.input.push(data)
        except (AudioDecodeError, StreamDecodeError) as exc:
            self.audio_failed = True  # later bytes of a broken stream cannot be decoded either
            await self.send(error_message(f"could not decode the audio: {exc}", variant="DecodeError"))
            return
        if audio.size:
            await self.session.push(audio, rate)

    async def on_text(self, text: str) -> bool:
        """Handle a control message; ``False`` once the stream is closed."""
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            message = None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "KeepAlive":
            return True
        if kind == "Finalize":
            await self.finalize()
            return True
        if kind == "CloseStream":
            await self.close_stream()
            return False
        described = "not a JSON control message" if message is None else f"unknown message type {kind!r}"
        await self.send(error_message(f"{described}; expected KeepAlive, Finalize or CloseStream", "SchemaError", text))
        return True

    async def finalize(self) -> None:
        """End the open utterance now; its final carries ``from_finalize`` (an empty one if nothing was open).

        Finals the endpointing already closed in the audio so far go out first, without the flag.
        """
        await self.session.settle()
        await self.live.drained()
        self.finalizing += 1
        self.session.end_utterance()
        await self.session.settle()
        await self.live.drained()
        if self.finalizing:
            self.finalizing -= 1
            alt = alternative("", [], self.params.punctuate)
            now = self.session.audio_seconds
            await self.send(self.stream.results(now, 0.0, alt, is_final=True, from_finalize=True))

    async def close_stream(self) -> None:
        """Flush: every final, then ``Metadata``, then a normal close."""
        with contextlib.suppress(AudioDecodeError, StreamDecodeError):
            audio, rate = self.input.finish()  # a stream cut inside a container element is normal
            if audio.size:
                await self.session.push(audio, rate)
        await self.live.finish()
        await self.send(self.stream.metadata_message(self.session.audio_seconds))
        await self.ws.close(code=1000)

    async def close(self) -> None:
        await self.live.abandon()


async def _deny(ws: WebSocket, status: int, message: str) -> None:
    """Refuse the handshake with an HTTP status and Deepgram's error body (the SDKs raise it)."""
    logger.info("deepgram: refused a live connection (%d): %s", status, message)
    with contextlib.suppress(RuntimeError, OSError):
        await ws.send_denial_response(JSONResponse(http_error(status, message), status_code=status))


@router.websocket("/v1/listen")
async def listen_live(ws: WebSocket) -> None:
    settings = ws.app.state.settings
    if not is_authorized(ws, settings.api_key):
        await _deny(ws, 401, UNAUTHORIZED)
        return
    try:
        params = _params(ws)
    except BadParams as exc:
        await _deny(ws, 400, str(exc))
        return
    if await refuse_handshake(ws, lambda r: http_error(503, r.message)):
        return  # full (--max-sessions) or draining: 503 + Retry-After
    silence = max(params.endpointing_ms or 0, settings.vad_silence_ms)
    try:
        session = await open_live_session(
            ws.app.state.pool, settings, params.model, params.language, params.prompt,
            silence_ms=silence, vad=params.endpointing, door="deepgram",
        )  # fmt: skip
    except START_ERRORS as exc:
        error = to_api_error(exc)
        await _deny(ws, error.status, error.message)
        return
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
    conn: _Connection | None = None
    try:
        await ws.accept(subprotocol="token" if "token" in offered else None)
        conn = _Connection(ws, session, params)
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            data, text = message.get("bytes"), message.get("text")
            if data is not None and len(data) == 0:  # the older API's end of stream
                await conn.close_stream()
                break
            if data is not None:
                await conn.on_audio(data)
            elif text is not None and not await conn.on_text(text):
                break
    except (WebSocketDisconnect, RuntimeError, OSError) as exc:
        logger.debug("deepgram: connection ended: %s", exc)
    finally:
        if conn is not None:
            await conn.close()
        else:
            await session.close()


# -- pre-recorded -----------------------------------------------------------------------------------
def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(http_error(status, message), status_code=status, headers=headers)


@router.post("/v1/listen")
async def listen_prerecorded(request: Request) -> JSONResponse:
    """Transcribe the request body (any audio file, or raw audio with ``encoding`` and ``sample_rate``)."""
    settings, pool = request.app.state.settings, request.app.state.pool
    try:
        with upload_slot(request.app.state):
            return await _prerecorded(request, settings, pool)
    except UploadsFull as exc:
        return _error(exc.status, exc.message, exc.headers)


async def _prerecorded(request: Request, settings: Any, pool: Any) -> JSONResponse:
    try:
        params = _params(request)
        body = await read_body(request, settings.max_upload_bytes)
    except BadParams as exc:
        return _error(400, str(exc))
    except UploadTooLarge as exc:
        return _error(exc.status, exc.message)
    if request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
        return _error(400, "this server works offline and does not fetch audio from a URL; send the audio as the body")
    if not body:
        return _error(400, "the request body is empty; send the audio as the body")
    try:
        engine = await pool.get(params.model)
        decode = functools.partial(_decode, body, params, settings.max_audio_seconds)
        audio = await asyncio.get_running_loop().run_in_executor(None, decode)
        options = TranscribeOptions(
            language=params.language, word_timestamps=engine.capabilities.word_timestamps, hotwords=params.prompt
        )
        engine.check_options(options)
        request.app.state.metrics.audio_received("deepgram", audio.size / SAMPLE_RATE)
        transcript = await pool.run(engine, engine.transcribe, audio, options, None)
    except DOMAIN_ERRORS as exc:  # the one mapping from domain errors to statuses, in Deepgram's body
        error = to_api_error(exc)
        logger.info("deepgram: pre-recorded request refused (%d): %s", error.status, error.message)
        return _error(error.status, error.message)
    stream = Stream.for_engine(engine)
    stream.sha256.update(body)
    channel: dict[str, Any] = {"alternatives": [alternative(transcript.text, transcript.words, params.punctuate)]}
    if params.detect_language or params.language is None:
        channel["detected_language"] = transcript.language
    results: dict[str, Any] = {"channels": [channel]}
    if params.utterances:
        results["utterances"] = [
            {"start": s.start, "end": s.end, "channel": 0, "id": str(s.id),
             **alternative(s.text, s.words, params.punctuate)}
            for s in transcript.segments
        ]  # fmt: skip
    return JSONResponse({"metadata": stream.metadata(transcript.duration), "results": results})


def _decode(body: bytes, params: ListenParams, max_seconds: float | None) -> np.ndarray:
    raw = _raw_stream(params)
    if raw is not None:
        samples = raw.push(body)
        check_duration(samples.size, raw.sample_rate, max_seconds)
        return resample(samples, raw.sample_rate)
    return decode_audio(body, max_seconds=max_seconds)
