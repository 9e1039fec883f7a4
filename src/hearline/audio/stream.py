"""Incremental decoding of a live compressed audio stream (browser ``MediaRecorder`` WebM/Opus, Ogg/Opus,
and Safari's fragmented MP4 with AAC or Opus).

A browser sends its recording as a sequence of byte chunks every 100-250 ms; only the first chunk carries
the container header and the chunks are cut at arbitrary byte positions, so they decode only as one
continuous stream.  The push parsers in ``hearline.audio.containers`` cut the chunks into compressed
packets, and each packet goes to a PyAV codec context as soon as its last byte arrives.  That keeps
decoding synchronous and cheap, needs no reader thread per session, and tells a truncated or garbage
stream from a slow one.

Usage::

    decoder = StreamDecoder()
    for chunk in chunks:
        audio = decoder.push(chunk)   # float32 mono 16 kHz, possibly empty
    tail = decoder.finish()           # end of stream; ``decoder.truncated`` tells a cut-off stream
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import cast

import av
import numpy as np

from hearline.audio.containers import MAGIC_BYTES, Demuxer, StreamDecodeError, open_demuxer
from hearline.engines.base import SAMPLE_RATE

__all__ = ["MAX_CONSECUTIVE_PACKET_ERRORS", "StreamDecodeError", "StreamDecoder"]

logger = logging.getLogger(__name__)

MAX_CONSECUTIVE_PACKET_ERRORS = 20  # undecodable packets in a row before giving up

_EMPTY = np.zeros(0, dtype=np.float32)


class StreamDecoder:
    """Push compressed bytes in, get 16 kHz mono float32 out as soon as each packet is complete."""

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self.sample_rate = sample_rate
        self.bytes_received = 0
        self.truncated = False  # set by finish() when the stream ended inside an element/page
        self._demuxer: Demuxer | None = None
        self._head = bytearray()  # first bytes, until the container can be recognised
        self._codec: av.AudioCodecContext | None = None
        self._resampler: av.AudioResampler | None = None
        self._errors = 0
        self._failed: StreamDecodeError | None = None
        self._finished = False

    @property
    def container(self) -> str | None:
        """``"webm"``, ``"ogg"`` or ``"mp4"`` once recognised."""
        return self._demuxer.name if self._demuxer is not None else None

    @property
    def truncation(self) -> str:
        """What a truncated stream is reported as (``truncated`` says whether it was)."""
        unit = self._demuxer.unit if self._demuxer is not None else "header"
        return f"the audio stream was truncated: it ended inside a {unit}"

    def push(self, data: bytes) -> np.ndarray:
        """Feed the next chunk; returns the audio that became decodable (maybe empty).

        Raises :class:`StreamDecodeError` on garbage; after that the decoder stays failed.
        """
        if self._failed is not None:
            raise self._failed
        if self._finished:
            raise StreamDecodeError("the stream has already ended")
        if not data:
            return _EMPTY
        self.bytes_received += len(data)
        try:
            if self._demuxer is None:
                self._head += data
                demuxer = open_demuxer(bytes(self._head[:MAGIC_BYTES]))
                if demuxer is None:
                    return _EMPTY
                self._demuxer = demuxer
                data, self._head = bytes(self._head), bytearray()
            packets = self._demuxer.feed(data)
            return self._decode_packets(packets)
        except StreamDecodeError as exc:
            self._failed = exc
            raise

    def finish(self) -> np.ndarray:
        """End of stream: flush the codec and resampler and return the remaining audio.

        A stream that stops inside an element is decoded up to that point and marked ``truncated``;
        a stream that never carried decodable audio raises :class:`StreamDecodeError`.
        """
        if self._failed is not None:
            raise self._failed
        if self._finished:
            return _EMPTY
        self._finished = True
        if self._demuxer is None:
            if self.bytes_received:
                raise StreamDecodeError("the audio stream is too short to be WebM, Ogg or MP4")
            raise StreamDecodeError("the audio stream is empty")
        self.truncated = self._demuxer.pending_bytes() > 0
        if self.truncated:
            logger.info(
                "stream ends inside a %s element: %d bytes ignored", self.container, self._demuxer.pending_bytes()
            )
        if self._codec is None:
            raise StreamDecodeError(f"the {self.container} stream ended before its audio track header")
        out = [self._decode_packets([None])]
        if self._resampler is not None:
            out.append(_collect(self._resampler.resample(None)))
        return np.concatenate(out)

    # -- decoding --

    def _decode_packets(self, packets: Sequence[bytes | None]) -> np.ndarray:
        if self._codec is None and self._demuxer is not None and self._demuxer.codec is not None:
            self._codec = _open_codec(*self._demuxer.codec)
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sample_rate)
        if not packets:
            return _EMPTY
        if self._codec is None or self._resampler is None:
            raise StreamDecodeError(f"{self.container} audio data arrived before the track header")
        out: list[np.ndarray] = []
        for payload in packets:
            try:
                frames = self._codec.decode(av.Packet(payload) if payload is not None else None)
            except av.error.EOFError:
                frames = []
            except av.error.FFmpegError as exc:
                self._errors += 1
                logger.debug("undecodable packet (%d in a row): %s", self._errors, exc)
                if self._errors > MAX_CONSECUTIVE_PACKET_ERRORS:
                    raise StreamDecodeError(f"the audio data is corrupt: {exc}") from exc
                continue
            self._errors = 0
            for frame in frames:
                frame.pts = None
                out.append(_collect(self._resampler.resample(frame)))
        return np.concatenate(out) if out else _EMPTY


def _open_codec(name: str, extradata: bytes) -> av.AudioCodecContext:
    try:
        ctx = cast(av.AudioCodecContext, av.CodecContext.create(name, "r"))
        if extradata:
            ctx.extradata = extradata
        if name == "opus":
            ctx.sample_rate = 48000
        ctx.open()
    except av.error.FFmpegError as exc:
        raise StreamDecodeError(f"cannot open the {name} decoder: {exc}") from exc
    return ctx


def _collect(frames: list[av.AudioFrame]) -> np.ndarray:
    if not frames:
        return _EMPTY
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32, copy=False)
