"""Raw audio arriving in arbitrary chunks: PCM or G.711 frames, optionally behind a streamed WAV header.

Socket clients cut their bytes anywhere, so a sample (or a multi-channel frame) can straddle two
messages; the remainder is carried to the next push.  A WAV file sent as a stream (Deepgram's SDK
examples do) is recognised by its RIFF header, which sets the format and is not decoded as audio.
"""

from __future__ import annotations

import struct

import numpy as np

from hearline.audio.decode import AudioDecodeError, downmix, g711_to_float, to_mono_float

_EMPTY = np.zeros(0, dtype=np.float32)
MAX_WAV_HEADER = 64 * 1024  # metadata chunks before ``data`` beyond this: not a WAV stream we follow
_WAV_FORMATS = {1: "pcm", 3: "float", 6: "alaw", 7: "mulaw", 0xFFFE: "pcm"}


class RawStream:
    """Bytes in, mono float32 at the stream's own rate out (``encoding``: ``pcm`` of ``width`` bytes, or G.711)."""

    def __init__(self, encoding: str, width: int, channels: int, sample_rate: int) -> None:
        self.encoding = encoding
        self.width = width
        self.channels = channels
        self.sample_rate = sample_rate
        self._carry = b""

    @property
    def frame_bytes(self) -> int:
        return self.width * self.channels

    def push(self, data: bytes) -> np.ndarray:
        data = self._carry + data
        usable = len(data) - len(data) % self.frame_bytes
        data, self._carry = data[:usable], data[usable:]
        if not data:
            return _EMPTY
        if self.encoding in ("mulaw", "alaw"):
            return g711_to_float(data, self.encoding, self.channels)
        if self.encoding == "float":
            return downmix(np.frombuffer(data, dtype="<f4").astype(np.float32), self.channels)
        return to_mono_float(data, self.width, self.channels)

    def finish(self) -> np.ndarray:
        """End of stream: a trailing partial frame cannot be decoded and is dropped."""
        self._carry = b""
        return _EMPTY


def is_wav_start(head: bytes) -> bool:
    return len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE"


def parse_wav_header(head: bytes) -> tuple[RawStream, int] | None:
    """The stream format and the offset of the first audio byte, or ``None`` until the header is complete.

    Raises :class:`AudioDecodeError` for a WAV whose format cannot be streamed (compressed codecs).
    """
    offset, fmt = 12, None
    while offset + 8 <= len(head):
        chunk_id, size = head[offset : offset + 4], struct.unpack_from("<I", head, offset + 4)[0]
        body = offset + 8
        if chunk_id == b"data":
            if fmt is None:
                raise AudioDecodeError("the WAV stream has no fmt chunk before its data")
            return fmt, body
        if body + size > len(head):
            break
        if chunk_id == b"fmt ":
            fmt = _wav_format(head[body : body + size])
        offset = body + size + (size & 1)
    if len(head) > MAX_WAV_HEADER:
        raise AudioDecodeError("the WAV stream's header is too long")
    return None


def _wav_format(chunk: bytes) -> RawStream:
    if len(chunk) < 16:
        raise AudioDecodeError("the WAV fmt chunk is too short")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", chunk)
    encoding = _WAV_FORMATS.get(tag)
    width = bits // 8
    valid = (encoding == "pcm" and width in (1, 2, 4)) or (encoding == "float" and width == 4)
    valid = valid or (encoding in ("mulaw", "alaw") and width == 1)
    if not valid or not 1 <= channels <= 8 or not 1000 <= rate <= 384000:
        raise AudioDecodeError(f"WAV format {tag} with {bits}-bit samples cannot be streamed; send 16-bit PCM")
    return RawStream(encoding or "pcm", width, channels, rate)
