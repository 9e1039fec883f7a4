"""Incremental decoding of a live compressed audio stream (browser ``MediaRecorder`` WebM/Opus, Ogg/Opus,
and Safari's fragmented MP4 with AAC or Opus).

A browser sends its recording as a sequence of byte chunks every 100-250 ms; only the first chunk carries
the container header and the chunks are cut at arbitrary byte positions, so they decode only as one
continuous stream.  ``av.open`` cannot be fed incrementally (it pulls from a file object and probes ahead),
which would need a blocking reader thread per session and makes a truncated or garbage stream hard to tell
from a slow one.  Instead this module demultiplexes the containers browsers produce with a small push
parser (EBML for WebM/Matroska, page framing for Ogg, ISO BMFF boxes for fragmented MP4) and hands each
compressed packet to a PyAV codec context as soon as its last byte arrives.  That keeps decoding
synchronous and cheap (well under a millisecond per chunk), needs no thread, and every malformed input is
detected at the byte where it goes wrong and raised as :class:`StreamDecodeError` instead of hanging.

The container is recognised from the first bytes: the EBML magic (WebM), ``OggS`` (Ogg), or an
``ftyp`` box (MP4).  Safari's ``MediaRecorder`` writes ``audio/mp4`` as fragmented MP4: ``ftyp``, a
``moov`` with the track header (and ``mvex``, which makes it fragmented), then ``moof`` + ``mdat`` pairs.
A ``moof`` is buffered whole (it is small: the sample sizes and offsets of one fragment); the samples it
announces are then cut out of the following ``mdat`` one by one as their bytes arrive, so a fragment
that spans several chunks is decoded progressively and a partial sample simply waits for more data.
An MP4 whose ``moov`` comes after its media (an ordinary, non-fragmented file) cannot be streamed and is
refused with a clear error.

Usage::

    decoder = StreamDecoder()
    for chunk in chunks:
        audio = decoder.push(chunk)   # float32 mono 16 kHz, possibly empty
    tail = decoder.finish()           # end of stream; ``decoder.truncated`` tells a cut-off stream
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import av
import numpy as np

from hearline.audio.decode import AudioDecodeError
from hearline.engines.base import SAMPLE_RATE

logger = logging.getLogger(__name__)

MAX_ELEMENT_BYTES = 4 * 1024 * 1024  # a single block/header larger than this means the stream is corrupt
MAX_CONSECUTIVE_PACKET_ERRORS = 20  # undecodable packets in a row before giving up

_EMPTY = np.zeros(0, dtype=np.float32)


class _Demuxer(Protocol):
    """A push parser of one container: bytes in, the audio track's compressed packets out."""

    name: str  # container, as StreamDecoder.container reports it
    unit: str  # what a stream cut short ends inside of, for the truncation message
    codec: tuple[str, bytes] | None  # (PyAV decoder name, extradata) once the track header was parsed

    def feed(self, data: bytes) -> list[bytes]: ...

    def pending_bytes(self) -> int: ...


class StreamDecodeError(AudioDecodeError):
    """The live stream is not a decodable WebM/Ogg/MP4 audio stream (garbage, missing header, corrupt)."""


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
        self._demuxer: _Demuxer | None = None
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
                demuxer = _open_demuxer(bytes(self._head[:_MAGIC_BYTES]))
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


_MAGIC_BYTES = 8  # enough to recognise every container (an MP4 box header)


def _open_demuxer(head: bytes) -> _Demuxer | None:
    """The demuxer for a stream starting with ``head``; None while too few bytes have arrived."""
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return _WebMDemuxer()
    if head[:4] == b"OggS":
        return _OggDemuxer()
    if head[4:8] == b"ftyp":
        return _Mp4Demuxer()
    if len(head) < _MAGIC_BYTES and _could_still_match(head):
        return None
    raise StreamDecodeError(
        "the audio stream does not start with a WebM, Ogg or MP4 header (the first chunk must carry it; "
        "a reconnecting client has to restart its recorder)"
    )


def _could_still_match(head: bytes) -> bool:
    """Whether more bytes could still make ``head`` a recognised start, so that garbage fails at once.

    The first four bytes of an MP4 are its first box's size, which can be anything.
    """
    return len(head) < 4 or b"ftyp".startswith(head[4:])


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


class _BufferedDemuxer:
    """What the push parsers share: the bytes not parsed yet and where they sit in the stream.

    The offset exists for error messages, so a client is told at which byte its stream went wrong.
    """

    label: str  # the container as error messages name it

    def __init__(self) -> None:
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0]
        self._skip = 0  # bytes of an element being skipped still to drop (WebM, MP4)

    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._offset += n

    def _drop_skipped(self) -> bool:
        """Drop what has arrived of an element being skipped; True while more of it is still to come."""
        n = min(self._skip, len(self._buf))
        self._consume(n)
        self._skip -= n
        return self._skip > 0

    def _corrupt(self, what: str) -> StreamDecodeError:
        return StreamDecodeError(f"corrupt {self.label} stream at byte {self._offset}: {what}")


class _WebMDemuxer(_BufferedDemuxer):
    """Push parser of a (live, unknown-size) Matroska stream, yielding the first audio track's packets."""

    name = "webm"
    label = "WebM"
    unit = "WebM block"

    def __init__(self) -> None:
        super().__init__()
        self._seen_ebml = False
        self.track: int | None = None
        self.codec: tuple[str, bytes] | None = None

    def pending_bytes(self) -> int:
        return len(self._buf) + self._skip

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        packets: list[bytes] = []
        while True:
            if self._skip and self._drop_skipped():
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


class _OggDemuxer(_BufferedDemuxer):
    """Push parser of an Ogg stream, yielding the packets of the first logical (Opus) stream."""

    name = "ogg"
    label = "Ogg"
    unit = "Ogg page"

    def __init__(self) -> None:
        super().__init__()
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
                raise self._corrupt("lost page sync")
            header = _OGG_HEADER.size + nsegs
            if len(self._buf) < header:
                break
            lacing = self._buf[_OGG_HEADER.size : header]
            end = header + sum(lacing)
            if len(self._buf) < end:
                break
            body = bytes(self._buf[header:end])
            self._consume(end)
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


# ---------------------------------------------------------------------------------------------------------
# fragmented MP4 (ISO BMFF), as Safari's MediaRecorder writes audio/mp4

_BOX = struct.Struct(">I4s")
# Top-level boxes a recorder may write besides ftyp/moov/moof/mdat; skipped without buffering them.
_MP4_SKIPPED = {b"free", b"skip", b"wide", b"udta", b"meta", b"sidx", b"ssix", b"styp", b"prft", b"emsg",
                b"mfra", b"pdin", b"uuid"}  # fmt: skip
_MP4_BUFFERED = {b"ftyp", b"moov", b"moof"}
_AAC_OBJECT_TYPES = {0x40, 0x66, 0x67, 0x68}  # MPEG-4 audio, MPEG-2 AAC main/LC/SSR
_MP3_OBJECT_TYPES = {0x69, 0x6B}
# tfhd flags
_BASE_DATA_OFFSET = 0x01
_SAMPLE_DESCRIPTION_INDEX = 0x02
_DEFAULT_DURATION = 0x08
_DEFAULT_SIZE = 0x10
_DEFAULT_FLAGS = 0x20
_DEFAULT_BASE_IS_MOOF = 0x020000
# trun flags
_DATA_OFFSET = 0x01
_FIRST_SAMPLE_FLAGS = 0x04
_SAMPLE_DURATION = 0x100
_SAMPLE_SIZE = 0x200
_SAMPLE_FLAGS = 0x400
_SAMPLE_CTS = 0x800


def _mp4_boxes(payload: bytes, what: str) -> Iterator[tuple[bytes, bytes]]:
    """(type, body) of the boxes of a fully buffered container box."""
    pos = 0
    while pos + 8 <= len(payload):
        size, kind = _BOX.unpack_from(payload, pos)
        header = 8
        if size == 1:
            if pos + 16 > len(payload):
                break
            size, header = struct.unpack_from(">Q", payload, pos + 8)[0], 16
        elif size == 0:
            size = len(payload) - pos
        if size < header or pos + size > len(payload):
            raise StreamDecodeError(f"corrupt MP4 {what}: box {kind!r} overruns its parent")
        yield kind, payload[pos + header : pos + size]
        pos += size
    if pos != len(payload):
        raise StreamDecodeError(f"corrupt MP4 {what}: trailing bytes")


def _mp4_child(payload: bytes, kind: bytes, what: str) -> bytes | None:
    return next((body for child, body in _mp4_boxes(payload, what) if child == kind), None)


def _mp4_path(payload: bytes, path: tuple[bytes, ...], what: str) -> bytes | None:
    """The body of the first box along ``path`` (``(b"mdia", b"hdlr")``...), None when absent."""
    body: bytes | None = payload
    for kind in path:
        if body is None:
            return None
        body = _mp4_child(body, kind, what)
    return body


def _unpack(fmt: str, data: bytes, pos: int, what: str) -> tuple[int, ...]:
    try:
        return struct.unpack_from(fmt, data, pos)
    except struct.error as exc:
        raise StreamDecodeError(f"corrupt MP4 {what}: too short") from exc


@dataclass(frozen=True)
class _TrackDefaults:
    """``trex``: sample defaults a fragment's ``tfhd``/``trun`` may leave out."""

    duration: int = 0
    size: int = 0


class _Mp4Demuxer(_BufferedDemuxer):
    """Push parser of a fragmented MP4 stream, yielding the first audio track's samples."""

    name = "mp4"
    label = "MP4"
    unit = "MP4 fragment"

    def __init__(self) -> None:
        super().__init__()
        self._mdat_end: int | None = None  # stream offset where the mdat being read ends (-1: at end of stream)
        self._samples: deque[tuple[int, int]] = deque()  # (stream offset, size) announced, not yet read
        self._seen_ftyp = False
        self.track: int | None = None
        self.codec: tuple[str, bytes] | None = None
        self._defaults: dict[int, _TrackDefaults] = {}

    def pending_bytes(self) -> int:
        """Bytes announced but not delivered: a partial box, a box being skipped, samples still due."""
        due = sum(size for _, size in self._samples)
        return max(len(self._buf), due) + self._skip

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        packets: list[bytes] = []
        while True:
            if self._skip and self._drop_skipped():
                return packets
            if self._mdat_end is not None:
                if not self._read_mdat(packets):
                    return packets
                continue
            header = self._box_header()
            if header is None:
                return packets
            kind, size, header_size = header
            if not self._seen_ftyp and kind != b"ftyp":
                raise StreamDecodeError("the stream does not start with an MP4 ftyp box")
            if kind == b"mdat":
                self._enter_mdat(size, header_size)
            elif kind in _MP4_BUFFERED:
                if size > MAX_ELEMENT_BYTES:
                    raise self._corrupt(f"box {kind!r} claims {size} bytes")
                if len(self._buf) < size:
                    return packets
                start = self._offset
                payload = bytes(self._buf[header_size:size])
                self._consume(size)
                self._on_box(kind, payload, start)
            elif kind in _MP4_SKIPPED:
                if size == 0:
                    raise self._corrupt(f"box {kind!r} has no size")
                self._consume(header_size)
                self._skip = size - header_size
            else:
                raise self._corrupt(f"unexpected box {kind!r}")

    # -- boxes --

    def _box_header(self) -> tuple[bytes, int, int] | None:
        """(type, size, header size) of the box at the start of the buffer; None until it has arrived."""
        if len(self._buf) < 8:
            return None
        size, kind = _BOX.unpack_from(self._buf)
        header = 8
        if size == 1:
            if len(self._buf) < 16:
                return None
            size, header = struct.unpack_from(">Q", self._buf, 8)[0], 16
        if not all(32 <= c < 127 for c in kind):
            raise self._corrupt("invalid box type")
        if size != 0 and size < header:
            raise self._corrupt(f"box {kind!r} is shorter than its header")
        return kind, size, header

    def _on_box(self, kind: bytes, payload: bytes, start: int) -> None:
        if kind == b"ftyp":
            if self._seen_ftyp:
                raise self._corrupt("a second ftyp box inside one stream (a restarted recorder?)")
            self._seen_ftyp = True
        elif kind == b"moov":
            self._on_moov(payload)
        else:
            self._on_moof(payload, start)

    # -- moov: the audio track and its codec --

    def _on_moov(self, payload: bytes) -> None:
        if self.codec is not None:
            raise self._corrupt("a second moov box")
        if _mp4_child(payload, b"mvex", "moov") is None:
            raise StreamDecodeError(
                "the MP4 stream is not fragmented (its moov has no mvex): live MP4 audio must be fragmented "
                "MP4, as Safari's MediaRecorder writes it"
            )
        for kind, body in _mp4_boxes(payload, "moov"):
            if kind == b"trak" and self.codec is None:
                self._on_trak(body)
            elif kind == b"mvex":
                self._on_mvex(body)
        if self.codec is None:
            raise StreamDecodeError("the MP4 stream has no audio track")

    def _on_trak(self, trak: bytes) -> None:
        handler = _mp4_path(trak, (b"mdia", b"hdlr"), "track")
        if handler is None or handler[8:12] != b"soun":
            return
        tkhd = _mp4_child(trak, b"tkhd", "track")
        if tkhd is None:
            raise StreamDecodeError("corrupt MP4 track: no tkhd")
        (track_id,) = _unpack(">I", tkhd, 20 if tkhd[:1] == b"\x01" else 12, "tkhd")
        stsd = _mp4_path(trak, (b"mdia", b"minf", b"stbl", b"stsd"), "track")
        if stsd is None or len(stsd) < 8:
            raise StreamDecodeError("corrupt MP4 track: no sample description")
        entry = next(_mp4_boxes(stsd[8:], "stsd"), None)
        if entry is None:
            raise StreamDecodeError("corrupt MP4 track: empty sample description")
        self.track = track_id
        self.codec = _mp4_codec(*entry)

    def _on_mvex(self, mvex: bytes) -> None:
        for kind, body in _mp4_boxes(mvex, "mvex"):
            if kind == b"trex":
                track, _index, duration, size = _unpack(">IIII", body, 4, "trex")
                self._defaults[track] = _TrackDefaults(duration=duration, size=size)

    # -- moof: where the fragment's samples are --

    def _on_moof(self, payload: bytes, moof_start: int) -> None:
        if self.codec is None:
            raise self._corrupt("a fragment before the track header (moov)")
        if self._samples:
            raise self._corrupt("a fragment began before the previous one's samples arrived")
        data_end = moof_start  # end of the previous track fragment's data (the implicit base offset)
        for kind, traf in _mp4_boxes(payload, "moof"):
            if kind == b"traf":
                data_end = self._on_traf(traf, moof_start, data_end)

    def _on_traf(self, traf: bytes, moof_start: int, previous_end: int) -> int:
        """Queue the audio samples of one track fragment; returns where its data ends."""
        tfhd = _mp4_child(traf, b"tfhd", "traf")
        if tfhd is None:
            raise self._corrupt("track fragment without tfhd")
        (flags,) = _unpack(">I", tfhd, 0, "tfhd")
        flags &= 0xFFFFFF
        (track,) = _unpack(">I", tfhd, 4, "tfhd")
        pos = 8
        base = moof_start if flags & _DEFAULT_BASE_IS_MOOF else previous_end
        if flags & _BASE_DATA_OFFSET:
            (base,) = _unpack(">Q", tfhd, pos, "tfhd")
            pos += 8
        pos += 4 if flags & _SAMPLE_DESCRIPTION_INDEX else 0
        pos += 4 if flags & _DEFAULT_DURATION else 0
        default_size = self._defaults.get(track, _TrackDefaults()).size
        if flags & _DEFAULT_SIZE:
            (default_size,) = _unpack(">I", tfhd, pos, "tfhd")
        end = base
        for kind, trun in _mp4_boxes(traf, "traf"):
            if kind == b"trun":
                samples, end = _trun_samples(trun, base, end, default_size)
                if track == self.track:
                    self._queue(samples)
        return end

    def _queue(self, samples: list[tuple[int, int]]) -> None:
        last = self._samples[-1][0] + self._samples[-1][1] if self._samples else self._offset
        for offset, size in samples:
            if size <= 0 or size > MAX_ELEMENT_BYTES:
                raise self._corrupt(f"a sample of {size} bytes")
            if offset < last:
                raise self._corrupt("sample data lies before the current position (interleaved or overlapping)")
            self._samples.append((offset, size))
            last = offset + size

    # -- mdat: the samples themselves, cut out as their bytes arrive --

    def _enter_mdat(self, size: int, header_size: int) -> None:
        if self.codec is None:
            raise StreamDecodeError(
                "the MP4 stream has media data before its track header (moov): it cannot be decoded as it "
                "arrives; live MP4 audio must be fragmented MP4 with the moov first"
            )
        self._consume(header_size)
        self._mdat_end = self._offset + size - header_size if size else -1

    def _read_mdat(self, packets: list[bytes]) -> bool:
        """Take the complete samples of the current mdat; False when more bytes are needed."""
        end = self._mdat_end
        while self._samples:
            offset, size = self._samples[0]
            if end is not None and end >= 0 and offset >= end:
                break  # the next samples are in a later mdat
            if end is not None and end >= 0 and offset + size > end:
                raise self._corrupt("a sample overruns its media data box")
            gap = offset - self._offset
            if gap > 0:
                n = min(gap, len(self._buf))
                self._consume(n)
                if n < gap:
                    return False
            if len(self._buf) < size:
                return False
            packets.append(bytes(self._buf[:size]))
            self._consume(size)
            self._samples.popleft()
        if end is None or end < 0:
            # an mdat running to the end of the stream with no samples due: nothing more is decodable
            self._consume(len(self._buf))
            return False
        self._skip = end - self._offset
        self._mdat_end = None
        return True


def _trun_samples(trun: bytes, base: int, previous_end: int, default_size: int) -> tuple[list[tuple[int, int]], int]:
    """(stream offset, size) of a track run's samples, and where its data ends."""
    (flags,) = _unpack(">I", trun, 0, "trun")
    flags &= 0xFFFFFF
    (count,) = _unpack(">I", trun, 4, "trun")
    pos = 8
    start = previous_end
    if flags & _DATA_OFFSET:
        (data_offset,) = _unpack(">i", trun, pos, "trun")
        start = base + data_offset
        pos += 4
    pos += 4 if flags & _FIRST_SAMPLE_FLAGS else 0
    fields = [bit for bit in (_SAMPLE_DURATION, _SAMPLE_SIZE, _SAMPLE_FLAGS, _SAMPLE_CTS) if flags & bit]
    if count * 4 * len(fields) > len(trun) - pos:
        raise StreamDecodeError(f"corrupt MP4 trun: {count} samples do not fit")
    size_field = fields.index(_SAMPLE_SIZE) if _SAMPLE_SIZE in fields else None
    samples = []
    offset = start
    for i in range(count):
        size = default_size
        if size_field is not None:
            (size,) = struct.unpack_from(">I", trun, pos + 4 * (i * len(fields) + size_field))
        samples.append((offset, size))
        offset += size
    return samples, offset


def _mp4_codec(kind: bytes, entry: bytes) -> tuple[str, bytes]:
    """(PyAV decoder, extradata) of an audio sample entry (``mp4a`` with AAC or MP3, ``Opus``)."""
    # AudioSampleEntry: 8 bytes of SampleEntry, then 20 (QuickTime sound description v1: 36, v2: 56)
    (version,) = _unpack(">H", entry, 8, "sample entry")
    children = entry[{0: 28, 1: 44, 2: 64}.get(version, 28) :]
    if kind == b"mp4a":
        esds = _mp4_child(children, b"esds", "sample entry")
        wave = _mp4_child(children, b"wave", "sample entry") if esds is None else None
        if wave is not None:  # QuickTime puts esds inside a wave box
            esds = _mp4_child(wave, b"esds", "wave")
        if esds is None:
            raise StreamDecodeError("corrupt MP4 track: mp4a without esds")
        return _esds_codec(esds)
    if kind == b"Opus":
        dops = _mp4_child(children, b"dOps", "sample entry")
        if dops is None:
            raise StreamDecodeError("corrupt MP4 track: Opus without dOps")
        return "opus", _opus_head(dops)
    raise StreamDecodeError(f"unsupported MP4 audio codec {kind.decode('ascii', 'replace')!r} (AAC or Opus expected)")


def _descriptor(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, body start, body end) of an MPEG-4 descriptor at ``pos``."""
    tag, length, pos = data[pos], 0, pos + 1
    for _ in range(4):
        byte = data[pos]
        pos += 1
        length = (length << 7) | (byte & 0x7F)
        if not byte & 0x80:
            break
    return tag, pos, pos + length


def _esds_codec(esds: bytes) -> tuple[str, bytes]:
    """Decoder and AudioSpecificConfig from an ``esds`` (ES_Descriptor > DecoderConfigDescriptor)."""
    try:
        tag, pos, end = _descriptor(esds, 4)
        if tag != 0x03:
            raise StreamDecodeError("corrupt MP4 esds: no ES descriptor")
        flags = esds[pos + 2]
        pos += 3
        pos += 2 if flags & 0x80 else 0
        pos += 1 + esds[pos] if flags & 0x40 else 0
        pos += 2 if flags & 0x20 else 0
        tag, pos, end = _descriptor(esds, pos)
        if tag != 0x04:
            raise StreamDecodeError("corrupt MP4 esds: no decoder configuration")
        object_type = esds[pos]
        extradata = b""
        if pos + 13 < end:
            tag, start, stop = _descriptor(esds, pos + 13)
            extradata = esds[start:stop] if tag == 0x05 else b""
    except IndexError as exc:
        raise StreamDecodeError("corrupt MP4 esds: too short") from exc
    if object_type in _AAC_OBJECT_TYPES:
        if not extradata:
            raise StreamDecodeError("corrupt MP4 esds: AAC without its AudioSpecificConfig")
        return "aac", extradata
    if object_type in _MP3_OBJECT_TYPES:
        return "mp3", b""
    raise StreamDecodeError(f"unsupported MP4 audio object type 0x{object_type:02X} (AAC expected)")


def _opus_head(dops: bytes) -> bytes:
    """The Ogg ``OpusHead`` packet (libopus's extradata) from an MP4 ``dOps`` box (big-endian fields)."""
    if len(dops) < 11:
        raise StreamDecodeError("corrupt MP4 dOps: too short")
    channels, pre_skip, rate, gain, family = struct.unpack_from(">BHIhB", dops, 1)
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, rate, gain, family) + dops[11:]
