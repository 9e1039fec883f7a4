"""Incremental decoding of a live compressed audio stream (browser ``MediaRecorder`` WebM/Opus, Ogg/Opus).

A browser sends its recording as a sequence of byte chunks every 100-250 ms; only the first chunk carries
the container header and the chunks are cut at arbitrary byte positions, so they decode only as one
continuous stream.  ``av.open`` cannot be fed incrementally (it pulls from a file object and probes ahead),
which would need a blocking reader thread per session and makes a truncated or garbage stream hard to tell
from a slow one.  Instead this module demultiplexes the two containers browsers produce with a small
push parser (EBML for WebM/Matroska, page framing for Ogg) and hands each compressed packet to a PyAV codec
context as soon as its last byte arrives.  That keeps decoding synchronous and cheap (well under a
millisecond per chunk), needs no thread, and every malformed input is detected at the byte where it goes
wrong and raised as :class:`StreamDecodeError` instead of hanging.

Usage::

    decoder = StreamDecoder()
    for chunk in chunks:
        audio = decoder.push(chunk)   # float32 mono 16 kHz, possibly empty
    tail = decoder.finish()           # end of stream; ``decoder.truncated`` tells a cut-off stream
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator

import av
import numpy as np

from hearline.audio.decode import AudioDecodeError
from hearline.engines.base import SAMPLE_RATE

logger = logging.getLogger(__name__)

MAX_ELEMENT_BYTES = 4 * 1024 * 1024  # a single block/header larger than this means the stream is corrupt
MAX_CONSECUTIVE_PACKET_ERRORS = 20  # undecodable packets in a row before giving up

_EMPTY = np.zeros(0, dtype=np.float32)


class StreamDecodeError(AudioDecodeError):
    """The live stream is not a decodable WebM/Ogg audio stream (garbage, missing header, corrupt)."""


# -- Matroska / WebM element ids (with their length marker, as written in the file) --
_EBML = 0x1A45DFA3
_DOCTYPE = 0x4282
_SEGMENT = 0x18538067
_CLUSTER = 0x1F43B675
_TRACKS = 0x1654AE6B
_TRACK_ENTRY = 0xAE
_TRACK_NUMBER = 0xD7
_TRACK_TYPE = 0x83
_CODEC_ID = 0x86
_CODEC_PRIVATE = 0x63A2
_AUDIO = 0xE1
_CHANNELS = 0x9F
_SIMPLE_BLOCK = 0xA3
_BLOCK_GROUP = 0xA0
_BLOCK = 0xA1

# Masters whose children are parsed in place (they may have unknown size in a live stream).
_ENTERED = {_SEGMENT, _CLUSTER, _BLOCK_GROUP}
# Elements that may legitimately appear at segment, cluster or block-group level and are skipped.
_SKIPPED = {
    0x114D9B74,  # SeekHead
    0x1549A966,  # Info
    0x1C53BB6B,  # Cues
    0x1254C367,  # Tags
    0x1043A770,  # Chapters
    0x1941A469,  # Attachments
    0xEC,  # Void
    0xBF,  # CRC-32
    0xE7,  # Cluster Timestamp
    0xA7,  # Position
    0xAB,  # PrevSize
    0x5854,  # SilentTracks
    0x9B,  # BlockDuration
    0xFB,  # ReferenceBlock
    0xFA,  # ReferencePriority
    0xA4,  # CodecState
    0x75A1,  # BlockAdditions
    0x75A2,  # DiscardPadding
}
_CODECS = {"A_OPUS": "opus", "A_VORBIS": "vorbis"}


class StreamDecoder:
    """Push compressed bytes in, get 16 kHz mono float32 out as soon as each packet is complete."""

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self.sample_rate = sample_rate
        self.bytes_received = 0
        self.truncated = False  # set by finish() when the stream ended inside an element/page
        self._demuxer: _WebMDemuxer | _OggDemuxer | None = None
        self._head = bytearray()  # first bytes, until the container can be recognised
        self._codec: av.AudioCodecContext | None = None
        self._resampler: av.AudioResampler | None = None
        self._errors = 0
        self._failed: StreamDecodeError | None = None
        self._finished = False

    @property
    def container(self) -> str | None:
        """``"webm"`` or ``"ogg"`` once recognised."""
        if self._demuxer is None:
            return None
        return "ogg" if isinstance(self._demuxer, _OggDemuxer) else "webm"

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
                if len(self._head) < 4:
                    return _EMPTY
                self._demuxer = _open_demuxer(bytes(self._head[:4]))
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
                raise StreamDecodeError("the audio stream is too short to be WebM or Ogg")
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

    def _decode_packets(self, packets: list[bytes | None]) -> np.ndarray:
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


def _open_demuxer(magic: bytes) -> _WebMDemuxer | _OggDemuxer:
    if magic == b"\x1a\x45\xdf\xa3":
        return _WebMDemuxer()
    if magic == b"OggS":
        return _OggDemuxer()
    raise StreamDecodeError(
        "the audio stream does not start with a WebM or Ogg header (the first chunk must carry it; "
        "a reconnecting client has to restart its recorder)"
    )


def _open_codec(name: str, extradata: bytes) -> av.AudioCodecContext:
    try:
        ctx = av.CodecContext.create(name, "r")
        if extradata:
            ctx.extradata = extradata
        if name == "opus":
            ctx.sample_rate = 48000
        ctx.open()
    except av.error.FFmpegError as exc:
        raise StreamDecodeError(f"cannot open the {name} decoder: {exc}") from exc
    return ctx  # type: ignore[return-value]


def _collect(frames: list[av.AudioFrame]) -> np.ndarray:
    if not frames:
        return _EMPTY
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------------------
# WebM / Matroska


def _read_vint(buf: bytes | bytearray, pos: int, *, keep_marker: bool) -> tuple[int, int] | None:
    """EBML variable-size integer at ``pos``: ``(value, length)``; None when more bytes are needed.

    With ``keep_marker`` (element ids) the length marker stays in the value; sizes whose bits are all
    ones mean "unknown size" and are returned as -1.
    """
    if pos >= len(buf):
        return None
    first = buf[pos]
    if first == 0:
        raise StreamDecodeError(f"corrupt WebM stream: invalid variable-length integer at byte {pos}")
    length = 9 - first.bit_length()
    if pos + length > len(buf):
        return None
    value = first if keep_marker else first & (0xFF >> length)
    all_ones = value == (0xFF >> length)
    for i in range(1, length):
        byte = buf[pos + i]
        value = (value << 8) | byte
        all_ones = all_ones and byte == 0xFF
    if not keep_marker and all_ones:
        return -1, length
    return value, length


def _children(payload: bytes) -> Iterator[tuple[int, bytes]]:
    """The child elements of a fully buffered master element."""
    pos = 0
    while pos < len(payload):
        ident = _read_vint(payload, pos, keep_marker=True)
        size = _read_vint(payload, pos + ident[1], keep_marker=False) if ident else None
        if ident is None or size is None or size[0] < 0:
            raise StreamDecodeError("corrupt WebM header: bad element inside a master element")
        start = pos + ident[1] + size[1]
        end = start + size[0]
        if end > len(payload):
            raise StreamDecodeError("corrupt WebM header: element overruns its parent")
        yield ident[0], payload[start:end]
        pos = end


def _uint(data: bytes) -> int:
    return int.from_bytes(data, "big") if data else 0


class _WebMDemuxer:
    """Push parser of a (live, unknown-size) Matroska stream, yielding the first audio track's packets."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip = 0  # bytes of a skipped element still to drop
        self._offset = 0  # stream offset of _buf[0], for error messages
        self._seen_ebml = False
        self.track: int | None = None
        self.codec: tuple[str, bytes] | None = None

    def pending_bytes(self) -> int:
        return len(self._buf) + self._skip

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        packets: list[bytes] = []
        while True:
            if self._skip:
                n = min(self._skip, len(self._buf))
                del self._buf[:n]
                self._offset += n
                self._skip -= n
                if self._skip:
                    return packets
            ident = _read_vint(self._buf, 0, keep_marker=True)
            if ident is None:
                return packets
            if ident[1] > 4:
                raise self._corrupt("invalid element id")
            size = _read_vint(self._buf, ident[1], keep_marker=False)
            if size is None:
                return packets
            element, (length, header) = ident[0], (size[0], ident[1] + size[1])
            if not self._seen_ebml and element != _EBML:
                raise StreamDecodeError("the stream does not start with a WebM header")
            if element in _ENTERED:
                self._consume(header)
                continue
            if length < 0:
                raise self._corrupt(f"element 0x{element:X} has an unknown size")
            if element in _SKIPPED:
                self._consume(header)
                self._skip = length
                continue
            if element not in (_EBML, _TRACKS, _SIMPLE_BLOCK, _BLOCK):
                raise self._corrupt(f"unexpected element 0x{element:X}")
            if length > MAX_ELEMENT_BYTES:
                raise self._corrupt(f"element 0x{element:X} claims {length} bytes")
            if len(self._buf) < header + length:
                return packets
            payload = bytes(self._buf[header : header + length])
            self._consume(header + length)
            if element == _EBML:
                self._on_ebml_header(payload)
            elif element == _TRACKS:
                self._on_tracks(payload)
            else:
                packets.extend(self._on_block(payload))

    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._offset += n

    def _corrupt(self, what: str) -> StreamDecodeError:
        return StreamDecodeError(f"corrupt WebM stream at byte {self._offset}: {what}")

    def _on_ebml_header(self, payload: bytes) -> None:
        if self._seen_ebml:
            # A second header means a new recording was concatenated (a restarted recorder); the old
            # track header no longer applies.
            raise self._corrupt("a second WebM header inside one stream")
        self._seen_ebml = True
        for element, data in _children(payload):
            if element == _DOCTYPE and data.rstrip(b"\0") not in (b"webm", b"matroska"):
                raise StreamDecodeError(f"unsupported EBML document type {data!r}")

    def _on_tracks(self, payload: bytes) -> None:
        if self.codec is not None:
            return
        for element, entry in _children(payload):
            if element != _TRACK_ENTRY:
                continue
            fields = dict(_children(entry))
            codec_id = fields.get(_CODEC_ID, b"").rstrip(b"\0").decode("ascii", "replace")
            if _uint(fields.get(_TRACK_TYPE, b"")) != 2 and not codec_id.startswith("A_"):
                continue
            if codec_id not in _CODECS:
                raise StreamDecodeError(f"unsupported audio codec {codec_id!r} (Opus or Vorbis expected)")
            self.track = _uint(fields.get(_TRACK_NUMBER, b""))
            self.codec = (_CODECS[codec_id], fields.get(_CODEC_PRIVATE, b""))
            return
        raise StreamDecodeError("the WebM stream has no audio track")

    def _on_block(self, payload: bytes) -> list[bytes]:
        if self.track is None:
            raise self._corrupt("audio data before the track header")
        track = _read_vint(payload, 0, keep_marker=False)
        if track is None or len(payload) < track[1] + 3:
            raise self._corrupt("block too short")
        if track[0] != self.track:
            return []
        pos = track[1] + 2
        flags = payload[pos]
        pos += 1
        lacing = (flags >> 1) & 3
        if lacing == 0:
            return [payload[pos:]]
        return self._delace(payload, pos, lacing)

    def _delace(self, payload: bytes, pos: int, lacing: int) -> list[bytes]:
        """Split a laced block (Xiph = 1, fixed = 2, EBML = 3) into its frames."""
        if pos >= len(payload):
            raise self._corrupt("laced block too short")
        count = payload[pos] + 1
        pos += 1
        sizes: list[int] = []
        if lacing == 1:
            for _ in range(count - 1):
                size = 0
                while True:
                    if pos >= len(payload):
                        raise self._corrupt("bad Xiph lacing")
                    size += payload[pos]
                    pos += 1
                    if payload[pos - 1] != 255:
                        break
                sizes.append(size)
        elif lacing == 3:
            first = _read_vint(payload, pos, keep_marker=False)
            if first is None:
                raise self._corrupt("bad EBML lacing")
            sizes.append(first[0])
            pos += first[1]
            for _ in range(count - 2):
                delta = _read_vint(payload, pos, keep_marker=False)
                if delta is None:
                    raise self._corrupt("bad EBML lacing")
                bias = (1 << (7 * delta[1] - 1)) - 1
                sizes.append(sizes[-1] + delta[0] - bias)
                pos += delta[1]
        remaining = len(payload) - pos
        if lacing == 2:
            if remaining % count:
                raise self._corrupt("bad fixed-size lacing")
            sizes = [remaining // count] * count
        else:
            sizes.append(remaining - sum(sizes))
        if any(s < 0 for s in sizes) or sum(sizes) != remaining:
            raise self._corrupt("lace sizes do not match the block")
        frames = []
        for size in sizes:
            frames.append(payload[pos : pos + size])
            pos += size
        return frames


# ---------------------------------------------------------------------------------------------------------
# Ogg


_OGG_HEADER = struct.Struct("<4sBBqIIIB")  # capture, version, flags, granule, serial, sequence, crc, segments


class _OggDemuxer:
    """Push parser of an Ogg stream, yielding the packets of the first logical (Opus) stream."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._offset = 0
        self._serial: int | None = None
        self._partial = bytearray()  # a packet continued on the next page
        self._packet_index = 0
        self.codec: tuple[str, bytes] | None = None

    def pending_bytes(self) -> int:
        return len(self._buf) + len(self._partial)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        packets: list[bytes] = []
        while len(self._buf) >= _OGG_HEADER.size:
            capture, version, flags, _granule, serial, _seq, _crc, nsegs = _OGG_HEADER.unpack_from(self._buf)
            if capture != b"OggS" or version != 0:
                raise StreamDecodeError(f"corrupt Ogg stream at byte {self._offset}: lost page sync")
            header = _OGG_HEADER.size + nsegs
            if len(self._buf) < header:
                break
            lacing = self._buf[_OGG_HEADER.size : header]
            end = header + sum(lacing)
            if len(self._buf) < end:
                break
            body = bytes(self._buf[header:end])
            del self._buf[:end]
            self._offset += end
            if self._serial is None:
                if not flags & 0x02:
                    raise StreamDecodeError("the Ogg stream does not begin with a stream header page")
                self._serial = serial
            if serial != self._serial:
                continue
            pos = 0
            for value in lacing:
                self._partial += body[pos : pos + value]
                pos += value
                if value < 255:
                    packet = bytes(self._partial)
                    self._partial.clear()
                    packets.extend(self._on_packet(packet))
        return packets

    def _on_packet(self, packet: bytes) -> list[bytes]:
        index = self._packet_index
        self._packet_index += 1
        if index == 0:
            if not packet.startswith(b"OpusHead"):
                raise StreamDecodeError("unsupported Ogg codec (only Opus is accepted)")
            self.codec = ("opus", packet)
            return []
        if index == 1:  # OpusTags
            return []
        return [packet]
