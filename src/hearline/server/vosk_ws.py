"""Vosk server WebSocket protocol (PROTOCOLS.md §6): ``/vosk`` here, any path on ``--vosk-port 2700``.

Vosk clients (vosk-server's ``test.py``, ``test_microphone.py``, most third-party ones) work in
lock-step: send a chunk, read one reply, send the next.  So, exactly like vosk-server, every binary
message gets exactly one reply: a result (``{"text", "result"}``) when an utterance has ended since
the last reply, otherwise ``{"partial": ...}``.  As in vosk-server, a chunk is answered once it has been
through the endpoint detector and the final of an utterance that ended in it is out, so results come
in the reply to the chunk where the utterance ended, however fast the client sends.  Several finished
utterances waiting at the same time (``reset``, ``eof``) are merged into one result so the pairing is
never broken.  ``{"eof": 1}`` flushes the stream and is
answered with one last result, after which the server closes; ``{"reset": 1}`` ends the current
utterance and answers with its result.  A text message that is not valid JSON (or not a known
command) is answered with ``{"error": ...}`` and the stream goes on.

The default sample rate is 16000 Hz (vosk-server's own default is 8000 and clients normally send it
in ``config``).  ``phrase_list`` becomes the transcription prompt (a hint, not a grammar: engines here
are not grammar-constrained).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket
from starlette.types import ASGIApp
from starlette.websockets import WebSocketDisconnect

from hearline.audio.raw_stream import RawStream
from hearline.engines.base import EngineError, Word
from hearline.live.session import Error, Final, Partial, SpeechStarted
from hearline.models.pool import ServerBusy
from hearline.models.resolve import UnknownModel
from hearline.server.auth import is_authorized
from hearline.server.live_run import EventSink, LiveRun
from hearline.server.live_socket import (
    SocketSender,
    any_path_app,
    connections,
    frame_error,
    open_live_session,
    refuse_handshake,
)

logger = logging.getLogger(__name__)

router = APIRouter()

DEFAULT_SAMPLE_RATE = 16000
LOCKSTEP_PARTIAL_WAIT_S = 5.0  # longest a chunk's reply waits for its partial (a busy pool defers partials)
MIN_RATE, MAX_RATE = 4000, 192000


class VoskInputError(ValueError):
    """A client message we cannot use; answered with ``{"error": message}``."""


class VoskFatal(RuntimeError):
    """Recognition cannot start (model or option unusable); answered with ``{"error": ...}``, then closed."""


class VoskConnection(EventSink):
    """One Vosk WebSocket: configuration, the live session, and the lock-step reply state (kept by ``on_*``)."""

    def __init__(self, websocket: WebSocket) -> None:
        self.ws = websocket
        state = websocket.app.state
        self.settings = state.settings
        self.pool = state.pool
        self.sample_rate = DEFAULT_SAMPLE_RATE
        self.words = True  # vosk-server's default (VOSK_SHOW_WORDS=true): test_srt.py builds SRT from them
        self.max_alternatives = 0
        self.phrases: list[str] = []
        self.model: str | None = None
        self.live: LiveRun | None = None  # started at the first audio
        self.sender = SocketSender(websocket, "vosk")
        self.pcm = RawStream("pcm", 2, 1, self.sample_rate)  # carries a sample split across messages
        # reply state, written by the forwarder task and read by the receive loop
        self.finals: list[Final] = []
        self.partial = ""
        self.partial_utt: int | None = None
        self.open_utts: set[int] = set()

    # -- plumbing ----------------------------------------------------------------------------
    async def send(self, payload: dict[str, Any]) -> bool:
        return await self.sender.send(payload)

    async def run(self) -> None:
        if await refuse_handshake(self.ws, lambda r: {"error": r.message}):
            return  # full (--max-sessions) or draining: 503 + Retry-After before accept
        await self.ws.accept()
        if not is_authorized(self.ws, self.settings.api_key):
            await self.send({"error": "unauthorized: missing or wrong API key"})
            await self.ws.close(code=1008)
            return
        registry = connections(self.ws.app.state, "vosk")
        registry.add(self)
        try:
            await self._receive_loop()
        finally:
            registry.discard(self)
            await self._shutdown()

    async def _shutdown(self) -> None:
        live, self.live = self.live, None
        if live is not None:
            await live.abandon()

    async def _receive_loop(self) -> None:
        while True:
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            try:
                if message.get("bytes") is not None:
                    await self._audio(message["bytes"])
                    reply: dict[str, Any] | None = self._reply()
                elif message.get("text") is not None:
                    reply, done = await self._command(message["text"])
                    if done:
                        await self.send(reply or self._result([]))
                        await self.ws.close(code=1000)
                        return
                else:
                    continue
            except VoskInputError as exc:
                reply = {"error": str(exc)}
            except VoskFatal as exc:
                await self.send({"error": str(exc)})
                await self.ws.close(code=1011)
                return
            if reply is not None and not await self.send(reply):
                return

    # -- client messages ---------------------------------------------------------------------
    async def _command(self, text: str) -> tuple[dict[str, Any] | None, bool]:
        """Handle a text message: (reply or None, whether the stream is finished)."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise VoskInputError(f"invalid JSON message: {exc}") from exc
        if not isinstance(data, dict):
            raise VoskInputError("a text message must be a JSON object: config, eof or reset")
        if "config" in data:
            self._configure(data["config"])
            return None, False  # vosk-server does not answer config messages
        if data.get("eof"):
            await self._finish()
            return self._merged_result(), True
        if data.get("reset"):
            await self._end_utterance()
            return self._merged_result() or self._result([]), False
        raise VoskInputError('unknown message; expected {"config": {...}}, {"eof": 1} or {"reset": 1}')

    def _configure(self, config: Any) -> None:
        if not isinstance(config, dict):
            raise VoskInputError('"config" must be an object')
        if self.live is not None:
            raise VoskInputError("config must be sent before the first audio")
        if "sample_rate" in config:
            rate = config["sample_rate"]
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not MIN_RATE <= rate <= MAX_RATE:
                raise VoskInputError(f"sample_rate must be a number between {MIN_RATE} and {MAX_RATE}")
            self.sample_rate = int(rate)
        if "words" in config:
            self.words = bool(config["words"])
        if "max_alternatives" in config:
            alternatives = config["max_alternatives"]
            if isinstance(alternatives, bool) or not isinstance(alternatives, int) or alternatives < 0:
                raise VoskInputError("max_alternatives must be a non-negative integer")
            self.max_alternatives = alternatives
        if "phrase_list" in config:
            phrases = config["phrase_list"]
            if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
                raise VoskInputError("phrase_list must be a list of strings")
            self.phrases = [p for p in phrases if p and p != "[unk]"]
        if "model" in config:
            name = config["model"]
            if not isinstance(name, str):
                raise VoskInputError("model must be a string")
            try:
                self.pool.resolve(name)
            except UnknownModel as exc:
                raise VoskInputError(str(exc)) from exc
            self.model = name

    async def _audio(self, data: bytes) -> None:
        if (error := frame_error(len(data))) is not None:
            raise VoskInputError(error)
        samples = self.pcm.push(data)
        if not samples.size:
            return
        live = await self._ensure_live()
        await live.session.push(samples, self.sample_rate)
        # vosk-server decodes each chunk before answering it: an utterance that ended in this chunk is
        # in this chunk's reply, however fast the client sends.
        await live.session.settle()
        # ... and its partial covers the chunk: bounded, since a busy pool may hold partial work back
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.session.settle(partial=True), LOCKSTEP_PARTIAL_WAIT_S)
        await live.drained()

    async def _ensure_live(self) -> LiveRun:
        if self.live is not None:
            return self.live
        prompt = ", ".join(self.phrases) or None
        try:
            live = await open_live_session(
                self.pool, self.settings, self.model, self.settings.language, prompt, door="vosk"
            )
        except (UnknownModel, EngineError, ServerBusy) as exc:  # busy: full or draining since the handshake
            logger.warning("vosk: could not start a live session: %s", exc)
            raise VoskFatal(f"cannot start recognition: {exc}") from exc
        self.live = LiveRun(live, self, "vosk")
        return self.live

    async def _finish(self) -> None:
        """End of audio: every pending final arrives, then the event stream ends."""
        if self.live is None:
            return
        await self.live.finish()

    async def _end_utterance(self) -> None:
        if self.live is None:
            return
        waiting = set(self.open_utts)
        self.live.session.end_utterance()
        await self.live.delivered_until(lambda: not (waiting & self.open_utts))

    # -- session events ----------------------------------------------------------------------

    async def on_speech_started(self, event: SpeechStarted) -> None:
        self.open_utts.add(event.utterance_id)

    async def on_partial(self, event: Partial) -> None:
        self.open_utts.add(event.utterance_id)
        self.partial, self.partial_utt = event.text, event.utterance_id

    async def on_final(self, event: Final) -> None:
        self.open_utts.discard(event.utterance_id)
        self.finals.append(event)
        if self.partial_utt == event.utterance_id:
            self.partial, self.partial_utt = "", None

    async def on_error(self, event: Error) -> None:
        logger.warning("vosk: live session error: %s", event.message)
        if event.fatal:
            await self.send({"error": event.message})

    # -- replies -----------------------------------------------------------------------------
    def _reply(self) -> dict[str, Any]:
        return self._merged_result() or {"partial": self.partial}

    def _merged_result(self) -> dict[str, Any] | None:
        finals, self.finals = self.finals, []
        if not finals:
            return None
        return self._result(finals)

    def _result(self, finals: list[Final]) -> dict[str, Any]:
        text = " ".join(f.text.strip() for f in finals if f.text.strip())
        words = [w for f in finals for w in _final_words(f)]
        if self.max_alternatives > 0:
            probs = [w.probability for w in words if w.probability is not None]
            alternative: dict[str, Any] = {"confidence": float(np.mean(probs)) if probs else 1.0, "text": text}
            if self.words:
                alternative["result"] = [_word(w, conf=False) for w in words]
            return {"alternatives": [alternative]}
        result: dict[str, Any] = {}
        if self.words:
            result["result"] = [_word(w) for w in words]
        result["text"] = text
        return result


def _final_words(final: Final) -> list[Word]:
    """The final's words; spread evenly over the utterance when the engine gave no word times."""
    if final.words:
        return [Word(w.word.strip(), w.start, w.end, w.probability) for w in final.words if w.word.strip()]
    tokens = final.text.split()
    if not tokens:
        return []
    step = max(final.end - final.start, 0.0) / len(tokens)
    return [Word(t, final.start + i * step, final.start + (i + 1) * step, None) for i, t in enumerate(tokens)]


def _word(word: Word, conf: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if conf:
        out["conf"] = round(word.probability if word.probability is not None else 1.0, 6)
    out.update(start=round(word.start, 6), end=round(word.end, 6), word=word.word)
    return out


async def serve_vosk(websocket: WebSocket) -> None:
    await VoskConnection(websocket).run()


router.add_api_websocket_route("/vosk", serve_vosk)


def standalone_app(main_app: Any) -> ASGIApp:
    """An ASGI app answering the Vosk protocol on every path (``--vosk-port``), sharing the main app's state."""
    return any_path_app(main_app, serve_vosk)
