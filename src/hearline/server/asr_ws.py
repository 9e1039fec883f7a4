"""WhisperLiveKit's ``/asr`` WebSocket (PROTOCOLS.md §1), a thin adapter over :class:`LiveSession`.

Handshake: query ``language`` (ISO/UI code or ``auto``), ``mode`` (``full`` default, or ``diff``),
``target_language`` (finals are translated by the configured translator -- ``live.translate``:
Whisper's own translate task on each final's audio for ``en``, LibreTranslate, an OpenAI-compatible chat
server or a CTranslate2 model; a line gets ``translation`` when
its translation arrives, ``buffer_translation`` holds the finals still waiting; with no translator
configured the client gets one ``{"type": "error"}`` notice and plain transcription), ``token`` or
``Authorization: Bearer``.  A bad token refuses the handshake (close 4401 before accept, which the
server answers with HTTP 403); bad parameters
(unknown codes, a bad mode, a language the model does not support) are accepted, answered with
``{"type": "error", "error": ...}`` and closed with 4400.  A model that fails to load: the same, with 1011.

Then ``{"type": "config", "useAudioWorklet": <pcm_input>, "mode": <mode>}``, then transcript updates,
each sent only when it differs from the previous one.  Audio: binary frames of a browser MediaRecorder
WebM/Opus (or Ogg/Opus, or Safari's fragmented MP4 with AAC or Opus) stream decoded incrementally
(``audio.stream``; the container is recognised from the first bytes), or raw s16le 16 kHz mono with
``--pcm-input``.  An empty binary frame ends the audio: every pending final is produced, the last update
is sent, then ``{"type": "ready_to_stop"}``.

Errors: a text frame gets ``{"type": "error", "error": ...}`` and the session goes on.  Undecodable audio
(garbage, a stream without its header) gets an update with ``"status": "error"`` and an ``error`` string;
the audio decoded so far is still finalised and sent, then the socket is closed with 1007.  A stream that
ends inside a block at the empty frame is a normal stop (a browser's recorder delivers its last chunk after
the page's empty frame): what arrived is transcribed, and audio after the empty frame is logged and ignored,
as WhisperLiveKit does.

Transcript lines, diff mode and line pruning: see :mod:`hearline.server.asr_wire`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from hearline.audio.decode import AudioDecodeError
from hearline.audio.raw_stream import RawStream
from hearline.audio.stream import StreamDecoder
from hearline.config import Settings
from hearline.engines.base import SAMPLE_RATE, UnsupportedOption
from hearline.live.audio_history import AudioHistory
from hearline.live.session import Final, LiveSession
from hearline.live.translate import (
    Translation,
    TranslationEvent,
    TranslationRequest,
    TranslationWorker,
    TranslatorUnavailable,
    WhisperTranslator,
    make_translator,
)
from hearline.models.pool import ServerBusy
from hearline.models.resolve import UnknownModel
from hearline.server.asr_wire import (
    DEFAULT_MAX_LINES,
    SILENCE_LINE_S,
    AsrParams,
    DiffEncoder,
    TranscriptState,
    apply_diff,
    format_time,
    parse_params,
)
from hearline.server.auth import is_authorized
from hearline.server.live_socket import SocketSender, connections, frame_error, open_live_session, refuse_handshake

# the wire model is re-exported: tests and clients import it from here
__all__ = [
    "CLOSE_BAD_AUDIO",
    "CLOSE_BAD_PARAMS",
    "CLOSE_INTERNAL",
    "CLOSE_UNAUTHORIZED",
    "DEFAULT_MAX_LINES",
    "SILENCE_LINE_S",
    "AsrParams",
    "DiffEncoder",
    "TranscriptState",
    "apply_diff",
    "asr_websocket",
    "format_time",
    "parse_params",
    "router",
]

logger = logging.getLogger(__name__)

router = APIRouter()

CLOSE_BAD_PARAMS = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_BAD_AUDIO = 1007
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013  # full or draining since the handshake (a lost race; see live_socket)

# ---------------------------------------------------------------------------------------------------------
# the endpoint


@router.websocket("/asr")
async def asr_websocket(websocket: WebSocket) -> None:
    settings: Settings = websocket.app.state.settings
    if not is_authorized(websocket, settings.api_key):
        await websocket.close(code=CLOSE_UNAUTHORIZED)
        return
    if await refuse_handshake(websocket, lambda r: {"type": "error", "error": r.message}):
        return  # full (--max-sessions) or draining: 503 + Retry-After before accept
    await websocket.accept()
    try:
        params = parse_params(websocket.query_params, settings)
    except ValueError as exc:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await websocket.send_json({"type": "error", "error": str(exc)})
            await websocket.close(code=CLOSE_BAD_PARAMS)
        return
    connection = _Connection(websocket, settings, params)
    registry = connections(websocket.app.state, "asr")
    registry.add(connection)
    try:
        await connection.run()
    finally:
        registry.discard(connection)


class _ClientGone(Exception):
    """The client disconnected."""


class _Connection:
    def __init__(self, websocket: WebSocket, settings: Settings, params: AsrParams) -> None:
        self.ws = websocket
        self.settings = settings
        self.params = params
        self.pcm = settings.pcm_input
        self.state = TranscriptState(report_language=params.language is None, max_lines=settings.asr_max_lines)
        self.diff = DiffEncoder() if params.mode == "diff" else None
        self.decoder = StreamDecoder()
        self._pcm16 = RawStream("pcm", 2, 1, 16000)  # a sample split across frames is carried
        self.sender = SocketSender(websocket, "asr")
        self._last_update: dict[str, Any] | None = None
        self.session: LiveSession | None = None
        self.translation: TranslationWorker | None = None
        self.audio: AudioHistory | None = None  # kept while Whisper's translate task translates the finals
        self._translated = asyncio.Event()

    async def run(self) -> None:
        try:
            try:
                params = self.params
                self.session = await open_live_session(
                    self.ws.app.state.pool, self.settings, params.model, params.language, params.prompt, door="asr"
                )
            except (UnsupportedOption, UnknownModel) as exc:  # e.g. a language the model lacks: a bad parameter
                await self._send({"type": "error", "error": str(exc)})
                await self.ws.close(code=CLOSE_BAD_PARAMS)
                return
            except ServerBusy as exc:
                await self._send({"type": "error", "error": str(exc)})
                await self.ws.close(code=CLOSE_TRY_AGAIN)
                return
            except Exception as exc:  # model missing, failed load: tell the client, keep the server up
                logger.exception("could not start a live session")
                await self._send({"type": "error", "error": f"could not start transcription: {exc}"})
                await self.ws.close(code=CLOSE_INTERNAL)
                return
            # config only once the session runs, so a parameter the model rejects is answered as such
            await self._send({"type": "config", "useAudioWorklet": self.pcm, "mode": self.params.mode})
            await self._start_translation()
            await self._send_update()
            forwarder = asyncio.create_task(self._forward(self.session))
            try:
                await self._serve(self.session, forwarder)
            finally:
                forwarder.cancel()
                with contextlib.suppress(asyncio.CancelledError, _ClientGone):
                    await forwarder
        except _ClientGone:
            logger.debug("/asr client disconnected")
        finally:
            if self.session is not None:
                await self.session.close()
            if self.translation is not None:
                await self.translation.close()

    async def _serve(self, session: LiveSession, forwarder: asyncio.Task[None]) -> None:
        while True:
            message = await self._receive()
            if message is None:  # text frame, answered
                continue
            if not message:
                break
            if forwarder.done():
                await self._fail("transcription stopped unexpectedly", CLOSE_INTERNAL, session, forwarder)
                return
            try:
                audio = self._decode(message)
            except AudioDecodeError as exc:
                logger.info("/asr: undecodable audio: %s", exc)
                await self._fail(str(exc), CLOSE_BAD_AUDIO, session, forwarder)
                return
            await self._push(session, audio)
        # empty frame: end of audio
        if not self.pcm:
            try:
                tail = self.decoder.finish()
            except AudioDecodeError as exc:
                tail = np.zeros(0, dtype=np.float32)
                if self.decoder.bytes_received:
                    self.state.set_error(str(exc))
            await self._push(session, tail)
            if self.decoder.truncated:
                # Normal at a browser's stop: MediaRecorder's last chunk (the end of its last block) arrives
                # after the page sent the empty frame.  What arrived is transcribed; not an error.
                logger.info("/asr: %s (the end of a recording)", self.decoder.truncation)
        await session.flush()
        await forwarder
        await self._wait_for_translations()
        self.state.end_of_audio(session.audio_seconds)
        await self._send_update()
        await self._send({"type": "ready_to_stop"})
        # The client closes the socket; audio it sends meanwhile (a recorder's last chunk) is logged and ignored.
        while True:
            message = await self._receive()
            if message:
                logger.info("/asr: ignored %d bytes sent after the end of the audio", len(message))

    async def _fail(self, error: str, code: int, session: LiveSession, forwarder: asyncio.Task[None]) -> None:
        """Fatal error: report it (the session's own message if it had one), finalise what was heard, close."""
        self.state.set_error(self.state.error if self.state.error and forwarder.done() else error)
        await self._send_update()
        if not forwarder.done():
            await session.flush()
            await forwarder
            await self._send_update()
        with contextlib.suppress(RuntimeError):
            await self.ws.close(code=code, reason="undecodable audio" if code == CLOSE_BAD_AUDIO else "")

    def _decode(self, data: bytes) -> np.ndarray:
        if not self.pcm:
            return self.decoder.push(data)
        return self._pcm16.push(data)

    async def _receive(self) -> bytes | None:
        """Next binary frame (b"" = end of audio); None for a text frame, which is answered here."""
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise _ClientGone
        if message.get("bytes") is not None:
            if (error := frame_error(len(message["bytes"]))) is None:
                return message["bytes"]
            await self._send({"type": "error", "error": error})
            return None
        await self._send(
            {"type": "error", "error": "text frames are not part of this protocol; send binary audio frames"}
        )
        return None

    async def _push(self, session: LiveSession, audio: np.ndarray) -> None:
        if audio.size:
            if self.audio is not None:
                self.audio.add(audio)
            await session.push(audio, SAMPLE_RATE)

    async def _forward(self, session: LiveSession) -> None:
        async for event in session.events():
            self.state.apply(event, session.audio_seconds)
            if isinstance(event, Final):
                self._translate(event)
            await self._send_update()

    # -- translation (target_language) --

    async def _start_translation(self) -> None:
        target = self.params.target_language
        if target is None:
            return
        assert self.session is not None and self.session.engine is not None  # started before translation
        translates = self.session.engine.capabilities.translate
        try:
            translator = make_translator(self.settings, self.ws.app.state.pool, self.params.model, target, translates)
        except TranslatorUnavailable as exc:
            await self._send({"type": "error", "error": f"translation to {target} is unavailable: {exc}"})
            return
        if translator.name == WhisperTranslator.name:  # it translates each final's audio, not its text
            self.audio = AudioHistory()
        self.translation = TranslationWorker(
            translator,
            self._on_translation,
            maxsize=self.settings.translate_queue,
            timeout_s=self.settings.translate_timeout_s,
        )
        self.translation.start()

    def _translate(self, final: Final) -> None:
        text = final.text.strip()
        if self.translation is None or not text or self.params.target_language is None:
            return
        request = TranslationRequest(
            caption_id=final.utterance_id,
            text=text,
            source=final.language or self.params.language,
            target=self.params.target_language,
            audio=self.audio.between(final.start, final.end) if self.audio is not None else None,
        )
        self.state.translation_requested(final.utterance_id, text)
        skipped = self.translation.submit(request)
        if skipped is not None:
            self.state.translated(skipped.caption_id, None)

    async def _on_translation(self, event: TranslationEvent) -> None:
        if isinstance(event, Translation):
            self.state.translated(event.caption_id, event.text)
        else:
            self.state.translated(event.caption_id, None)
            self.state.set_error(event.message, sticky=False)
        self._translated.set()
        try:
            await self._send_update()
        except _ClientGone:
            logger.debug("/asr client gone before its translation arrived")

    async def _wait_for_translations(self) -> None:
        """End of audio: the last update carries every translation (bounded by the translator timeout)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.translate_timeout_s + 1.0
        while self.state.pending_translation and loop.time() < deadline:
            self._translated.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._translated.wait(), timeout=max(0.0, deadline - loop.time()))
        for utterance_id in list(self.state.pending_translation):
            self.state.translated(utterance_id, None)

    async def _send_update(self) -> None:
        update = self.state.update()
        if update == self._last_update:
            return
        self._last_update = update
        keys = self.state.line_keys()
        self.state.sent()
        await self._send(self.diff.encode(update, keys) if self.diff is not None else update)

    async def _send(self, message: dict[str, Any]) -> None:
        if not await self.sender.send(message):
            raise _ClientGone
