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

Lines: one line per utterance.  Finished utterances (``Final`` events) are fixed lines; the open
utterance's committed text (LocalAgreement prefix) is shown as a provisional last line that grows in place
and is replaced in place by the final text; its uncommitted tail is ``buffer_transcription``.  A gap of
at least ``SILENCE_LINE_S`` between speech (from the VAD's speech end to the next speech start, also
before the first and after the last speech) becomes a ``speaker: -2`` line with empty text.

Errors: a text frame gets ``{"type": "error", "error": ...}`` and the session goes on.  Undecodable audio
(garbage, a stream without its header) gets an update with ``"status": "error"`` and an ``error`` string;
the audio decoded so far is still finalised and sent, then the socket is closed with 1007.  A stream that
ends inside a block at the empty frame is a normal stop (a browser's recorder delivers its last chunk after
the page's empty frame): what arrived is transcribed, and audio after the empty frame is logged and ignored,
as WhisperLiveKit does.

Diff mode (``mode=diff``).  The first update is ``{"type": "snapshot", "seq": 1, ...full update...}``;
every later one is::

    {"type": "diff", "seq": N, "n_lines": K, "lines_pruned": P,
     "replaced_lines": [{"index": i, "line": {...}}, ...], "new_lines": [...],
     "status": ..., "buffer_transcription": ..., "buffer_diarization": ..., "buffer_translation": ...,
     "remaining_time_transcription": ..., "remaining_time_diarization": ...}

``seq`` increases by one per message.  A client holding the previous ``lines`` applies it as
:func:`apply_diff` does: drop ``lines_pruned`` lines from the front (lines the server no longer keeps,
see below), truncate to ``n_lines - len(new_lines)`` (a provisional line can disappear when its
utterance turns out to be empty), replace ``lines[index]`` for each ``replaced_lines`` entry (indices
after pruning), append ``new_lines``; the result has ``n_lines`` lines and equals the full-mode
``lines``.  Unlike the reference implementation, a line that changed in place is never re-sent inside
``new_lines``, so a client that only appends does not duplicate lines; it just misses in-place
corrections (and removed provisional lines).
With ``language=auto`` each final line also carries ``detected_language``.

Bounded lines.  A session may run for hours, so the server keeps only the newest ``asr_max_lines``
(setting, default ``DEFAULT_MAX_LINES``) fixed lines; older ones are pruned from the front, and the
full-mode ``lines`` are those kept (plus the provisional line).  Sessions with fewer lines are not
affected.  Diff mode states each pruning as ``lines_pruned`` (lines of the client's previous list that
are gone), so :func:`apply_diff` still reproduces the full-mode ``lines`` exactly; a client that wants
the whole transcript keeps the lines it is told to drop.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from hearline import languages
from hearline.audio.decode import AudioDecodeError, pcm16_to_float
from hearline.audio.stream import StreamDecoder
from hearline.config import Settings
from hearline.engines.base import SAMPLE_RATE, UnsupportedOption
from hearline.engines.segments import CJK
from hearline.live.audio_history import AudioHistory
from hearline.live.session import (
    Error,
    Event,
    Final,
    Lag,
    LiveSession,
    Partial,
    Silence,
    SpeechStarted,
)
from hearline.live.translate import (
    Translation,
    TranslationEvent,
    TranslationRequest,
    TranslationWorker,
    TranslatorUnavailable,
    WhisperTranslator,
    make_translator,
)
from hearline.models.resolve import UnknownModel
from hearline.server.auth import is_authorized
from hearline.server.live_socket import open_live_session

logger = logging.getLogger(__name__)

router = APIRouter()

DEFAULT_MAX_LINES = 1000  # fixed lines kept per session (Settings.asr_max_lines); older ones are pruned
SILENCE_LINE_S = 5.0  # silences at least this long get their own speaker -2 line, as in WhisperLiveKit
CLOSE_BAD_PARAMS = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_BAD_AUDIO = 1007
CLOSE_INTERNAL = 1011

_connections: set[_Connection] = set()


def active_connections() -> int:
    """Open ``/asr`` connections in this process (observability and leak tests)."""
    return len(_connections)


# ---------------------------------------------------------------------------------------------------------
# wire helpers


def format_time(seconds: float) -> str:
    """``H:MM:SS.cc`` as WhisperLiveKit writes timestamps."""
    cs = max(0, round(seconds * 100))
    return f"{cs // 360000}:{cs // 6000 % 60:02d}:{cs % 6000 // 100:02d}.{cs % 100:02d}"


@dataclass(frozen=True)
class AsrParams:
    language: str | None  # engine ISO code; None = detect per utterance
    prompt: str | None
    mode: str
    target_language: str | None
    model: str | None = None  # None: the server's default model


def parse_params(query: Any, settings: Settings) -> AsrParams:
    """Validate the query string; raises ValueError with a client-facing message."""
    raw_language = query.get("language") or settings.language or languages.AUTO
    mode = (query.get("mode") or "full").strip().lower()
    if mode not in ("full", "diff"):
        raise ValueError(f"unknown mode {mode!r}; use 'full' or 'diff'")
    try:
        language = languages.engine_code(raw_language)
        prompt = languages.prompt_for(raw_language)
        target = query.get("target_language") or None
        if target is not None and target.strip().lower() in ("", languages.AUTO, languages.NONE):
            target = None
        if target is not None:
            target = languages.lookup(target).code
    except languages.UnknownLanguage as exc:
        raise ValueError(str(exc)) from exc
    model = (query.get("model") or "").strip() or None
    return AsrParams(language=language, prompt=prompt, mode=mode, target_language=target, model=model)


# ---------------------------------------------------------------------------------------------------------
# transcript state -> full updates -> diffs (pure; unit-testable without a server)


@dataclass
class _Open:
    utterance_id: int
    start: float
    committed: str
    tail: str
    end: float


@dataclass
class TranscriptState:
    """What the client should currently see, built from LiveSession events."""

    report_language: bool = False
    max_lines: int = DEFAULT_MAX_LINES  # fixed lines kept; the oldest beyond this are pruned
    lines: list[dict[str, Any]] = field(default_factory=list)  # fixed lines (finals, silences), by start
    _starts: list[float] = field(default_factory=list)  # numeric start of each fixed line
    in_speech: bool = False
    speech_end: float = 0.0  # where the last speech ended (VAD endpoint), on the audio clock
    open: _Open | None = None
    heard: bool = False
    error: str | None = None
    error_sticky: bool = False
    lag: float = 0.0
    last_final_id: int = -1
    _ids: list[int | None] = field(default_factory=list)  # utterance id of each fixed line (None: silence)
    translations: dict[int, str] = field(default_factory=dict)
    pending_translation: dict[int, str] = field(default_factory=dict)  # utterance id -> text, in order
    _keys: list[int] = field(default_factory=list)  # identity of each fixed line (insertion serial), for diffs
    _serial: int = 0
    pruned: int = 0  # fixed lines dropped so far

    def apply(self, event: Event, now: float) -> None:
        """Fold one event in; ``now`` is the session's audio clock (end of a provisional line)."""
        if isinstance(event, SpeechStarted):
            self.heard = True
            if not self.in_speech:  # not a forced split of running speech
                self._silence(self.speech_end, event.start)
            self.in_speech = True
        elif isinstance(event, Partial):
            if event.utterance_id <= self.last_final_id:
                return  # late partial of an utterance already final
            self.heard = True
            committed, tail = _split_committed(event.text, event.committed)
            self.open = _Open(event.utterance_id, event.start, committed, tail, max(now, event.start))
        elif isinstance(event, Final):
            self.heard = True
            self.last_final_id = max(self.last_final_id, event.utterance_id)
            if self.open is not None and self.open.utterance_id <= event.utterance_id:
                self.open = None
            text = event.text.strip()
            if text:
                line: dict[str, Any] = {
                    "speaker": 1,
                    "text": text,
                    "start": format_time(event.start),
                    "end": format_time(event.end),
                }
                if self.report_language and event.language:
                    line["detected_language"] = event.language
                self._insert(event.start, line, event.utterance_id)
        elif isinstance(event, Silence):
            # VAD endpoint: speech ended at ``start``; the gap is judged when speech resumes
            self.in_speech = False
            self.speech_end = event.start
        elif isinstance(event, Lag):
            self.lag = max(0.0, round(event.seconds, 1))
        elif isinstance(event, Error):
            self.set_error(event.message, sticky=event.fatal)

    def end_of_audio(self, now: float) -> None:
        """All text is out: no lag; a long trailing silence (or a stream without speech) gets its line."""
        self.lag = 0.0
        if not self.in_speech:
            self._silence(self.speech_end, now)

    def _silence(self, start: float, end: float) -> None:
        if end - start >= SILENCE_LINE_S:
            self._insert(start, {"speaker": -2, "text": "", "start": format_time(start), "end": format_time(end)})

    def _insert(self, start: float, line: dict[str, Any], utterance_id: int | None = None) -> None:
        """Keep lines in time order: a final can arrive after the next utterance has started."""
        index = bisect.bisect_right(self._starts, start)
        self._starts.insert(index, start)
        self.lines.insert(index, line)
        self._ids.insert(index, utterance_id)
        self._serial += 1
        self._keys.insert(index, self._serial)
        self._prune()

    def _prune(self) -> None:
        """Bounded memory: drop the oldest fixed lines beyond ``max_lines`` (and their translations)."""
        excess = len(self.lines) - max(1, self.max_lines)
        if excess <= 0:
            return
        for utterance_id in self._ids[:excess]:
            if utterance_id is not None:
                self.translations.pop(utterance_id, None)
        del self.lines[:excess], self._starts[:excess], self._ids[:excess], self._keys[:excess]
        self.pruned += excess

    def translation_requested(self, utterance_id: int, text: str) -> None:
        self.pending_translation[utterance_id] = text

    def translated(self, utterance_id: int, text: str | None) -> None:
        """A translation arrived (``None``: it failed or was skipped)."""
        self.pending_translation.pop(utterance_id, None)
        if text is not None and utterance_id in self._ids:
            self.translations[utterance_id] = text

    def set_error(self, message: str, sticky: bool = True) -> None:
        self.error = message
        self.error_sticky = sticky

    def update(self) -> dict[str, Any]:
        """The full-mode update for the current state (a fresh dict; safe to keep)."""
        lines = [dict(line) for line in self.lines]
        for line, utterance_id in zip(lines, self._ids, strict=True):
            if utterance_id is not None and utterance_id in self.translations:
                line["translation"] = self.translations[utterance_id]
        provisional = self._provisional_line()
        if provisional is not None:
            lines.append(provisional)
        buffer = _spaced_tail(lines[-1]["text"] if lines else "", self.open.tail if self.open is not None else "")
        status = "active_transcription" if self.heard else "no_audio_detected"
        message: dict[str, Any] = {"status": status}
        if self.error is not None:
            message = {"status": "error", "error": self.error}
        message.update(
            lines=lines,
            buffer_transcription=buffer,
            buffer_diarization="",
            buffer_translation=" ".join(self.pending_translation.values()),
            remaining_time_transcription=self.lag,
            remaining_time_diarization=0.0,
        )
        return message

    def line_keys(self) -> list[int | None]:
        """Identity of each line of :meth:`update` (``None``: the provisional line), for :class:`DiffEncoder`."""
        keys: list[int | None] = list(self._keys)
        if self._provisional_line() is not None:
            keys.append(None)
        return keys

    def _provisional_line(self) -> dict[str, Any] | None:
        """The open utterance's committed text as a line that grows in place (None when there is none)."""
        if self.open is None or not self.open.committed:
            return None
        return {
            "speaker": 1,
            "text": self.open.committed,
            "start": format_time(self.open.start),
            "end": format_time(self.open.end),
        }

    def sent(self) -> None:
        """A transient (non-fatal) error is shown in one update only."""
        if self.error is not None and not self.error_sticky:
            self.error = None


def _split_committed(text: str, committed: str) -> tuple[str, str]:
    """(committed, uncommitted tail) of a partial, word-aligned and stripped."""
    words, done = text.split(), committed.split()
    if done and words[: len(done)] == done:
        return " ".join(done), " ".join(words[len(done) :])
    return "", " ".join(words)


class DiffEncoder:
    """Turns successive full updates into one snapshot and then diffs (see the module docstring)."""

    def __init__(self) -> None:
        self.seq = 0
        self._lines: list[dict[str, Any]] | None = None
        self._keys: list[Hashable | None] = []

    def encode(self, update: dict[str, Any], keys: Sequence[Hashable | None] | None = None) -> dict[str, Any]:
        """The message for ``update``; ``keys`` (:meth:`TranscriptState.line_keys`) identify its lines.

        Pruned lines are found by identity, not by content: without keys nothing counts as pruned and
        the diff still applies, only less compactly (lines shifted by a pruning are sent as replaced).
        """
        self.seq += 1
        lines: list[dict[str, Any]] = update["lines"]
        previous, self._lines = self._lines, [dict(line) for line in lines]
        previous_keys, self._keys = self._keys, list(keys) if keys is not None else [None] * len(lines)
        if previous is None:
            return {"type": "snapshot", "seq": self.seq, **update}
        pruned = _pruned(previous_keys, self._keys)
        kept = previous[pruned:]
        common = min(len(kept), len(lines))
        replaced = [{"index": i, "line": lines[i]} for i in range(common) if kept[i] != lines[i]]
        rest = {key: value for key, value in update.items() if key != "lines"}
        return {
            "type": "diff",
            "seq": self.seq,
            "n_lines": len(lines),
            "lines_pruned": pruned,
            "replaced_lines": replaced,
            "new_lines": lines[len(kept) :],
            **rest,
        }


def _pruned(previous: list[Hashable | None], current: list[Hashable | None]) -> int:
    """How many of the previous lines, from the front, are gone (pruned): fixed lines are only ever
    removed that way, so the leading run of previous keys missing from ``current`` is exactly that."""
    present = {key for key in current if key is not None}
    count = 0
    for key in previous:
        if key is None or key in present:
            break
        count += 1
    return count


def apply_diff(lines: list[dict[str, Any]], message: dict[str, Any]) -> list[dict[str, Any]]:
    """The reference client rule for diff mode; returns the new ``lines``."""
    if message.get("type") == "snapshot":
        return list(message["lines"])
    result = list(lines[message.get("lines_pruned", 0) :])
    new_lines = message.get("new_lines", [])
    del result[message["n_lines"] - len(new_lines) :]
    for entry in message.get("replaced_lines", []):
        result[entry["index"]] = entry["line"]
    result.extend(new_lines)
    if len(result) != message["n_lines"]:
        raise ValueError(f"diff {message.get('seq')} does not apply: {len(result)} != {message['n_lines']} lines")
    return result


# ---------------------------------------------------------------------------------------------------------
# the endpoint


@router.websocket("/asr")
async def asr_websocket(websocket: WebSocket) -> None:
    settings: Settings = websocket.app.state.settings
    if not is_authorized(websocket, settings.api_key):
        await websocket.close(code=CLOSE_UNAUTHORIZED)
        return
    await websocket.accept()
    try:
        params = parse_params(websocket.query_params, settings)
    except ValueError as exc:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await websocket.send_json({"type": "error", "error": str(exc)})
            await websocket.close(code=CLOSE_BAD_PARAMS)
        return
    connection = _Connection(websocket, settings, params)
    _connections.add(connection)
    try:
        await connection.run()
    finally:
        _connections.discard(connection)


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
        self._odd_byte = b""
        self._send_lock = asyncio.Lock()
        self._last_update: dict[str, Any] | None = None
        self.session: LiveSession | None = None
        self.translation: TranslationWorker | None = None
        self.audio: AudioHistory | None = None  # kept while Whisper's translate task translates the finals
        self._translated = asyncio.Event()

    async def run(self) -> None:
        try:
            try:
                self.session = await open_live_session(
                    self.ws.app.state.pool, self.settings, self.params.model, self.params.language, self.params.prompt
                )
            except (UnsupportedOption, UnknownModel) as exc:  # e.g. a language the model lacks: a bad parameter
                await self._send({"type": "error", "error": str(exc)})
                await self.ws.close(code=CLOSE_BAD_PARAMS)
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
        data = self._odd_byte + data
        cut = len(data) - len(data) % 2
        self._odd_byte = data[cut:]
        return pcm16_to_float(data[:cut])

    async def _receive(self) -> bytes | None:
        """Next binary frame (b"" = end of audio); None for a text frame, which is answered here."""
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise _ClientGone
        if message.get("bytes") is not None:
            return message["bytes"]
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
        async with self._send_lock:
            try:
                await self.ws.send_json(message)
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                raise _ClientGone from exc


def _spaced_tail(line_text: str, tail: str) -> str:
    """The buffer as the reference server sends it: clients print it right after the last line's text.

    WhisperLiveKit's tokens carry their leading space, so its page joins ``text + buffer`` as they come;
    without the space two words would run together (no space between CJK characters, as in the text).
    """
    if not tail or not line_text or line_text[-1].isspace() or tail[0].isspace():
        return tail
    if CJK.match(line_text[-1]) and CJK.match(tail[0]):
        return tail
    return " " + tail
