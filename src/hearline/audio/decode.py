"""Any audio or video file in, 16 kHz mono float32 out, through PyAV (no ffmpeg binary needed).

Every failure surfaces as :class:`AudioDecodeError` with a message that names the problem, so the
REST layer can answer 400 with it verbatim and the CLI can print it.
"""

from __future__ import annotations

import io
import logging
import threading
from os import PathLike
from typing import BinaryIO, cast

import av
import numpy as np

from hearline.engines.base import SAMPLE_RATE

logger = logging.getLogger(__name__)

Source = str | PathLike[str] | bytes | bytearray | BinaryIO
#: sample rates a file may declare (outside them it is not audio a recogniser can use, or an attack)
MIN_SOURCE_RATE, MAX_SOURCE_RATE = 1000, 768000


class AudioDecodeError(ValueError):
    """The input could not be turned into audio samples."""


class AudioTooLong(AudioDecodeError):
    """The input decodes to more audio than allowed: stopped when the limit is passed, so a small file that
    claims hours (a decode bomb) holds at most the limit's samples in memory."""

    def __init__(self, limit_s: float) -> None:
        super().__init__(f"the audio is longer than the limit of {limit_s:g} s")
        self.limit_s = limit_s


class DecodeCancelled(Exception):
    """The caller no longer wants the audio (its client left); nothing is returned."""


def check_duration(samples: int, sample_rate: int, max_seconds: float | None) -> None:
    """Raise :class:`AudioTooLong` when ``samples`` at ``sample_rate`` pass ``max_seconds`` (None: no limit)."""
    if max_seconds is not None and samples > max_seconds * sample_rate:
        raise AudioTooLong(max_seconds)


def decode_audio(
    source: Source,
    sample_rate: int = SAMPLE_RATE,
    split_stereo: bool = False,
    max_seconds: float | None = None,
    cancel: threading.Event | None = None,
) -> np.ndarray:
    """Decode the first audio stream of ``source``.

    Returns a float32 array of shape ``(n,)``; with ``split_stereo`` a ``(channels, n)`` array with each
    channel kept apart (a mono input gives one row), for per-speaker transcription of stereo calls.
    ``max_seconds`` bounds the decoded duration (:class:`AudioTooLong` as soon as it is passed);
    ``cancel``, once set, stops the decode at the next packet with :class:`DecodeCancelled`.
    """
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise AudioDecodeError("the audio file is empty")
        source = io.BytesIO(bytes(source))
    elif hasattr(source, "seek") and hasattr(source, "tell"):
        _reject_empty_stream(cast(BinaryIO, source))

    try:
        container = av.open(source, mode="r", metadata_errors="ignore")
    except av.error.InvalidDataError as exc:
        raise AudioDecodeError("the file is not a recognised audio or video format") from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise AudioDecodeError(f"could not open the audio file: {_describe(exc)}") from exc

    with container:
        if not container.streams.audio:
            raise AudioDecodeError("the file has no audio stream")
        stream = container.streams.audio[0]
        channels = stream.codec_context.channels or 1
        layout = "stereo" if split_stereo and channels >= 2 else "mono"
        resampler = av.AudioResampler(format="flt", layout=layout, rate=sample_rate)
        chunks: list[np.ndarray] = []
        decoded = 0  # samples per channel so far
        errors = 0
        try:
            for packet in container.demux(stream):
                if cancel is not None and cancel.is_set():
                    raise DecodeCancelled("decoding was cancelled")
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as exc:
                    # A damaged packet mid-file: skip it, as players do, but not forever.
                    errors += 1
                    logger.debug("skipping undecodable packet: %s", exc)
                    if errors > 50 and not chunks:
                        raise AudioDecodeError(f"the audio data is corrupt: {_describe(exc)}") from exc
                    continue
                for frame in frames:
                    frame.pts = None
                    rate = frame.sample_rate
                    if not MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE:
                        raise AudioDecodeError(f"unsupported sample rate {rate} Hz")
                    # checked before resampling: one frame at a tiny rate can stand for hours at ours
                    check_duration(decoded + frame.samples * sample_rate // rate, sample_rate, max_seconds)
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray())
                        decoded += out.samples
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
                decoded += out.samples
            check_duration(decoded, sample_rate, max_seconds)
        except av.error.FFmpegError as exc:
            if not chunks:
                raise AudioDecodeError(f"the audio data is corrupt: {_describe(exc)}") from exc
            logger.info("audio ends early (%s); keeping the %d decoded frames", _describe(exc), len(chunks))

    if not chunks:
        raise AudioDecodeError("the file contains no decodable audio")
    data = np.concatenate(chunks, axis=1)
    if layout == "stereo":
        # packed interleaved float: shape (1, n*2) -> (2, n)
        return np.ascontiguousarray(data.reshape(-1, 2).T, dtype=np.float32)
    audio = np.ascontiguousarray(data.reshape(-1), dtype=np.float32)
    return audio[np.newaxis, :] if split_stereo else audio


#: little-endian PCM sample widths raw-PCM doors accept (8-bit is unsigned, as in WAV)
PCM_WIDTH_DTYPES: dict[int, str] = {1: "u1", 2: "<i2", 4: "<i4"}


def to_mono_float(data: bytes, width: int, channels: int) -> np.ndarray:
    """Whole frames of little-endian interleaved PCM -> mono float32 in [-1, 1] (channels averaged)."""
    samples = np.frombuffer(data, dtype=PCM_WIDTH_DTYPES[width]).astype(np.float32)
    if width == 1:
        samples = (samples - 128.0) / 128.0
    else:
        samples /= float(2 ** (8 * width - 1))
    return downmix(samples, channels)


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    magnitude = ((((u & 0x0F) << 3) + 0x84) << exponent) - 0x84
    return (np.where(u & 0x80, -magnitude, magnitude) / 32768.0).astype(np.float32)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return (np.where(a & 0x80, magnitude, -magnitude) / 32768.0).astype(np.float32)


#: the 256 linear values of G.711 mu-law and A-law bytes (ITU-T G.711 expansion), in [-1, 1]
G711_TABLES = {"mulaw": _ulaw_table(), "alaw": _alaw_table()}


def g711_to_float(data: bytes, law: str, channels: int = 1) -> np.ndarray:
    """G.711 bytes (``law`` is ``"mulaw"`` or ``"alaw"``, telephony's 8-bit codecs) -> mono float32."""
    return downmix(G711_TABLES[law][np.frombuffer(data, dtype=np.uint8)], channels)


def downmix(samples: np.ndarray, channels: int) -> np.ndarray:
    """Interleaved samples of ``channels`` channels -> their mean, as float32."""
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples.astype(np.float32, copy=False)


def float_to_pcm16(audio: np.ndarray) -> bytes:
    clipped = np.clip(audio, -1.0, 32767.0 / 32768.0)
    return (clipped * 32768.0).astype("<i2").tobytes()


def resample(audio: np.ndarray, from_rate: int, to_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling of a mono float32 block (FFT-free linear-phase polyphase via PyAV).

    Used for raw PCM arriving at other rates (OpenAI Realtime sends 24 kHz).  Callers that stream
    should keep one :class:`StreamResampler` instead so filter state carries across blocks.
    """
    if from_rate == to_rate:
        return audio.astype(np.float32, copy=False)
    resampler = StreamResampler(from_rate, to_rate)
    return np.concatenate([resampler.push(audio), resampler.flush()])


class StreamResampler:
    """Stateful resampler for a stream of mono float32 blocks."""

    def __init__(self, from_rate: int, to_rate: int = SAMPLE_RATE) -> None:
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=to_rate)

    def push(self, audio: np.ndarray) -> np.ndarray:
        if self.from_rate == self.to_rate:
            return audio.astype(np.float32, copy=False)
        if audio.size == 0:
            return np.zeros(0, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(audio, dtype=np.float32).reshape(1, -1), format="flt", layout="mono"
        )
        frame.sample_rate = self.from_rate
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        if self.from_rate == self.to_rate:
            return np.zeros(0, dtype=np.float32)
        return self._collect(self._resampler.resample(None))

    @staticmethod
    def _collect(frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32, copy=False)


def _reject_empty_stream(stream: BinaryIO) -> None:
    position = stream.tell()
    stream.seek(0, io.SEEK_END)
    size = stream.tell()
    stream.seek(position)
    if size == 0:
        raise AudioDecodeError("the audio file is empty")


def _describe(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.strip() or type(exc).__name__
