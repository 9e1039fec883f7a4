"""The Wyoming protocol (Home Assistant's voice protocol) on its own TCP port, a thin adapter over LiveSession.

``hearline serve --wyoming-port 10300``; Home Assistant: Settings > Devices & services > Add integration >
Wyoming Protocol, host = this machine, port 10300.

Wire format (JSONL header, optional data and binary payload; the ``wyoming`` package frames it)::

    client: describe                        -> info (one ASR program "hearline", its models and languages)
    client: transcribe {name?, language?}   model / language of the next audio (unknown model: error)
    client: audio-start {rate, width, channels}            -> transcript-start
    client: audio-chunk {rate, width, channels} + PCM      -> transcript-chunk {text} as the text grows
    client: audio-stop                      -> remaining chunks, transcript-stop, transcript {text, language}

The ``transcript`` event is authoritative.  Headers over 64 KiB, data over 64 KiB, payloads over 1 MiB or
an unparsable header: an ``error`` event, then the connection is closed.  Unknown event types are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from typing import Any, cast

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error as WyomingError
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info

import hearline
from hearline import languages
from hearline.audio.decode import PCM_WIDTH_DTYPES
from hearline.audio.raw_stream import RawStream
from hearline.engines.base import EngineError, TranscribeOptions
from hearline.live.session import Error, Final, LiveSession, Partial
from hearline.models.pool import ServerBusy
from hearline.models.resolve import UnknownModel
from hearline.server.live_run import EventSink, LiveRun
from hearline.server.live_socket import (
    START_ERRORS,
    StartFailure,
    admission_refusal,
    open_live_session,
    start_failure,
)
from hearline.server.models_api import model_listing

logger = logging.getLogger(__name__)

MAX_HEADER = 64 * 1024
MAX_DATA = 64 * 1024
MAX_PAYLOAD = 1024 * 1024
ATTRIBUTION = Attribution(name="Hearline", url="https://github.com/hearline/hearline")


class BadFrame(Exception):
    """A header the server refuses (not JSON, too large, oversize data/payload); the connection is closed."""

    def __init__(self, text: str, code: str = "bad_request") -> None:
        super().__init__(text)
        self.text, self.code = text, code


class _CheckedReader:
    """What ``async_read_event`` reads from: checks each header before any data/payload is read."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    async def readline(self) -> bytes:
        try:
            line = await self._reader.readline()
        except (ValueError, asyncio.LimitOverrunError) as exc:
            raise BadFrame(f"header line longer than {MAX_HEADER} bytes") from exc
        if not line:
            return line
        try:
            header = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise BadFrame("header is not valid JSON") from exc
        if not isinstance(header, dict) or not isinstance(header.get("type"), str):
            raise BadFrame("header must be a JSON object with a string 'type'")
        for key, limit in (("data_length", MAX_DATA), ("payload_length", MAX_PAYLOAD)):
            value = header.get(key)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise BadFrame(f"{key} must be a non-negative integer")
            if value > limit:
                raise BadFrame(f"{key} {value} exceeds the limit of {limit} bytes", code="too_large")
        return line

    async def readexactly(self, n: int) -> bytes:
        return await self._reader.readexactly(n)


async def model_languages(pool: Any, name: str | None) -> list[str]:
    engine = await pool.get(name)
    langs = engine.capabilities.languages
    return sorted(langs) if langs is not None else sorted(languages.whisper_names())


async def describe(pool: Any) -> Info:
    """The default model first (its languages from the loaded engine), then every other model usable
    without a download (loaded or installed; languages from the catalog)."""
    name = pool.default_name
    models = [_asr_model(name, await model_languages(pool, None))]
    for entry in await asyncio.to_thread(model_listing, pool, pool.settings):
        if entry["id"] != name and entry["status"] in ("loaded", "installed"):
            models.append(_asr_model(entry["id"], entry["languages"] or sorted(languages.whisper_names())))
    program = AsrProgram(
        name="hearline",
        description="Hearline offline speech-to-text",
        attribution=ATTRIBUTION,
        installed=True,
        version=hearline.__version__,
        supports_transcript_streaming=True,
        models=models,
    )
    return Info(asr=[program])


def _asr_model(name: str, langs: list[str]) -> AsrModel:
    return AsrModel(
        name=name,
        description=f"Hearline model {name}",
        attribution=ATTRIBUTION,
        installed=True,
        languages=langs,
        version=None,
    )


#: Wyoming error ``code`` of each failed model or session start
START_CODES = {
    StartFailure.UNKNOWN_MODEL: "unknown_model",
    StartFailure.UNSUPPORTED: "unsupported_language",
    StartFailure.BUSY: "busy",
    StartFailure.UNAVAILABLE: "model_unavailable",
}


def _start_error_code(exc: BaseException) -> str:
    return START_CODES[start_failure(exc)]


class _Connection(EventSink):
    """One TCP client: at most one LiveSession at a time (audio-start .. audio-stop)."""

    def __init__(self, app_state: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.settings = app_state.settings
        self.pool = app_state.pool
        self.reader = _CheckedReader(reader)
        self.writer = writer
        self._write_lock = asyncio.Lock()
        self.model: str | None = None
        self.language: str | None = languages.engine_code(self.settings.language)
        self.live: LiveRun | None = None
        self.format = (16000, 2, 1)  # rate, width, channels from audio-start
        self.pcm = RawStream("pcm", 2, 1, 16000)  # frames split across chunks are carried
        self._finals: list[str] = []
        self._final_language: str | None = None
        self._streamed = ""  # text already sent as chunks for the open utterance

    async def send(self, event: Event) -> None:
        async with self._write_lock:
            await async_write_event(event, self.writer)

    async def error(self, text: str, code: str = "bad_request") -> None:
        await self.send(WyomingError(text=text, code=code).event())

    async def run(self) -> None:
        try:
            while True:
                try:
                    event = await async_read_event(cast(asyncio.StreamReader, self.reader))  # header-checked proxy
                except BadFrame as exc:
                    logger.info("wyoming: refused a frame: %s", exc.text)
                    await self.error(exc.text, exc.code)
                    return
                if event is None:
                    return
                if not await self.handle(event):
                    return
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            logger.debug("wyoming: connection ended: %s", exc)
        finally:
            await self.close()

    async def handle(self, event: Event) -> bool:
        """One event; False closes the connection."""
        begins = Transcribe.is_type(event.type) or AudioStart.is_type(event.type)
        if begins and self.session is None and await self._refused():
            return False  # full or draining: refused before this request's session starts (describe still works)
        if Describe.is_type(event.type):
            try:
                info = await describe(self.pool)
            except (UnknownModel, EngineError, ServerBusy, OSError) as exc:
                await self.error(str(exc), "model_unavailable")
                return True
            await self.send(info.event())
        elif Transcribe.is_type(event.type):
            request = Transcribe.from_event(event)
            try:
                if request.name:
                    self.pool.resolve(request.name)
                language = languages.engine_code(request.language) if request.language else None
                if language is not None:  # a language the model lacks: refused now, not at the audio
                    engine = await self.pool.get(request.name or self.model)
                    engine.check_options(TranscribeOptions(language=language))
            except languages.UnknownLanguage as exc:
                await self.error(str(exc), "unknown_language")
                return True
            except START_ERRORS as exc:
                await self.error(str(exc), _start_error_code(exc))
                return True
            self.model = request.name or None
            if request.language:
                self.language = language
        elif AudioStart.is_type(event.type):
            start = AudioStart.from_event(event)
            if not await self._set_format(start.rate, start.width, start.channels):
                return True
            if self.session is None and not await self.start():
                return True
        elif AudioChunk.is_type(event.type):
            await self.on_chunk(event)
        elif AudioStop.is_type(event.type):
            await self.stop()
        else:
            logger.debug("wyoming: ignoring event %r", event.type)
        return True

    async def _refused(self) -> bool:
        """Full (``--max-sessions``) or draining: the ``error`` event (code ``max_sessions`` or ``draining``,
        ``retry_after`` seconds) before the request's session starts; the caller closes the connection."""
        refusal = admission_refusal(self.pool, self.settings)
        if refusal is None:
            return False
        text = f"{refusal.message} (retry in {refusal.retry_after} s)"
        event = WyomingError(text=text, code=refusal.reason).event()
        await self.send(Event(type=event.type, data={**(event.data or {}), "retry_after": refusal.retry_after}))
        return True

    async def _set_format(self, rate: Any, width: Any, channels: Any) -> bool:
        try:
            fmt = (int(rate), int(width), int(channels))
        except (TypeError, ValueError):
            fmt = (0, 0, 0)
        if not (fmt[1] in PCM_WIDTH_DTYPES and 1 <= fmt[2] <= 8 and 1000 <= fmt[0] <= 384000):
            # Tell the client; the session goes on with the previous format.
            await self.error(f"unsupported audio format rate={rate} width={width} channels={channels}")
            return False
        self.format = fmt
        self.pcm.sample_rate, self.pcm.width, self.pcm.channels = fmt
        return True

    async def start(self) -> bool:
        try:
            session = await open_live_session(self.pool, self.settings, self.model, self.language, door="wyoming")
        except START_ERRORS as exc:
            await self.error(str(exc), _start_error_code(exc))
            return False
        self._finals, self._final_language, self._streamed = [], None, ""
        self.live = LiveRun(session, self, "wyoming")
        self.pcm.finish()
        await self.send(TranscriptStart(language=self.language).event())
        return True

    async def on_chunk(self, event: Event) -> None:
        data = event.data or {}
        rate, width, channels = self.format
        fmt = (data.get("rate", rate), data.get("width", width), data.get("channels", channels))
        if fmt != self.format and not await self._set_format(*fmt):
            return
        if self.session is None and not await self.start():
            return
        audio = self.pcm.push(event.payload or b"")
        if audio.size:
            assert self.session is not None
            await self.session.push(audio, self.pcm.sample_rate)

    async def stop(self) -> None:
        live, self.live = self.live, None
        if live is None:
            await self.error("audio-stop without audio", "no_audio")
            return
        self.pcm.finish()  # an incomplete frame cannot be decoded
        await live.finish()  # every final is in before the transcript
        await self.send(TranscriptStop().event())
        language = self.language or self._final_language
        await self.send(Transcript(text=" ".join(self._finals), language=language).event())
        self.model = None

    @property
    def session(self) -> LiveSession | None:
        return self.live.session if self.live is not None else None

    async def close(self) -> None:
        live, self.live = self.live, None
        if live is not None:
            await live.abandon()
        with contextlib.suppress(ConnectionError, OSError):
            self.writer.close()
            await self.writer.wait_closed()

    async def _chunk(self, text: str) -> None:
        """Send the part of ``text`` (the open utterance's text so far) that extends what was streamed."""
        if not text.startswith(self._streamed) or len(text) == len(self._streamed):
            return
        suffix = text[len(self._streamed) :]
        prefix = " " if not self._streamed and self._finals else ""
        self._streamed = text
        await self.send(TranscriptChunk(text=prefix + suffix).event())

    # -- events -> transcript-chunk / the final transcript ----------------------------------------
    async def on_partial(self, event: Partial) -> None:
        if event.text:
            await self._chunk(event.text)

    async def on_final(self, event: Final) -> None:
        if event.text:
            await self._chunk(event.text)
            self._finals.append(event.text)
            self._final_language = event.language or self._final_language
        self._streamed = ""

    async def on_error(self, event: Error) -> None:
        await self.error(event.message, "transcription_failed")


class WyomingServer:
    """The listener: ``await start()`` in the main server's event loop, ``await stop()`` when it stops."""

    def __init__(self, main_app: Any, host: str, port: int, zeroconf: bool = False) -> None:
        self.state = main_app.state
        self.host, self.port, self.zeroconf = host, port, zeroconf
        #: the mDNS instance name, unique per machine as Home Assistant keys discovered servers by it
        self.zeroconf_name = f"hearline-{socket.gethostname()}"
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._zeroconf: Any = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_client, self.host, self.port, limit=MAX_HEADER)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("Wyoming listening on tcp://%s:%d", self.host, self.port)
        if self.zeroconf:
            await self._advertise()

    async def _advertise(self) -> None:
        """Announce ``_wyoming._tcp`` over mDNS: the address bound to, or the LAN address for a wildcard."""
        try:
            from wyoming.zeroconf import HomeAssistantZeroconf
            from zeroconf import Error as ZeroconfError
        except ImportError:
            logger.warning('wyoming: --wyoming-zeroconf needs zeroconf: pip install "hearline[zeroconf]"')
            return
        host = None if self.host in ("", "0.0.0.0", "::") else self.host
        try:
            self._zeroconf = HomeAssistantZeroconf(port=self.port, name=self.zeroconf_name, host=host)
            await self._zeroconf.register_server()
        except (OSError, ZeroconfError) as exc:  # no multicast route, or the name is taken on the LAN
            logger.warning("wyoming: zeroconf advertisement failed: %s", exc)
            await self._withdraw()
            return
        logger.info(
            "Wyoming advertised over zeroconf as %s at %s:%d", self.zeroconf_name, self._zeroconf.host, self.port
        )

    async def _withdraw(self) -> None:
        """Send mDNS goodbyes and close the responder (the wyoming package offers no close of its own)."""
        advertiser, self._zeroconf = self._zeroconf, None
        if advertiser is not None:
            with contextlib.suppress(OSError):
                await advertiser._aiozc.async_close()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await _Connection(self.state, reader, writer).run()
        finally:
            self._connections.discard(task)

    async def stop(self) -> None:
        await self._withdraw()
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
