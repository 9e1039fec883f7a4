"""Push parser of fragmented MP4 (ISO BMFF), as Safari's ``MediaRecorder`` writes ``audio/mp4``.

The stream is ``ftyp``, a ``moov`` with the track header (and ``mvex``, which makes it fragmented), then
``moof`` + ``mdat`` pairs.  A ``moof`` is buffered whole (it is small: the sample sizes and offsets of one
fragment); the samples it announces are then cut out of the following ``mdat`` one by one as their bytes
arrive, so a fragment that spans several chunks is decoded progressively and a partial sample simply
waits for more data.  An MP4 whose ``moov`` comes after its media (an ordinary, non-fragmented file)
cannot be streamed and is refused with a clear error.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from hearline.audio.containers.base import MAX_ELEMENT_BYTES, BufferedDemuxer, StreamDecodeError
from hearline.audio.containers.mp4_boxes import BOX, mp4_boxes, mp4_child, mp4_codec, mp4_path, unpack

# Top-level boxes a recorder may write besides ftyp/moov/moof/mdat; skipped without buffering them.
_MP4_SKIPPED = {b"free", b"skip", b"wide", b"udta", b"meta", b"sidx", b"ssix", b"styp", b"prft", b"emsg",
                b"mfra", b"pdin", b"uuid"}  # fmt: skip
_MP4_BUFFERED = {b"ftyp", b"moov", b"moof"}
# tfhd flags
_BASE_DATA_OFFSET = 0x01
_SAMPLE_DESCRIPTION_INDEX = 0x02
_DEFAULT_DURATION = 0x08
_DEFAULT_SIZE = 0x10
_DEFAULT_BASE_IS_MOOF = 0x020000
# trun flags
_DATA_OFFSET = 0x01
_FIRST_SAMPLE_FLAGS = 0x04
_SAMPLE_DURATION = 0x100
_SAMPLE_SIZE = 0x200
_SAMPLE_FLAGS = 0x400
_SAMPLE_CTS = 0x800


@dataclass(frozen=True)
class _TrackDefaults:
    """``trex``: sample defaults a fragment's ``tfhd``/``trun`` may leave out."""

    duration: int = 0
    size: int = 0


class Mp4Demuxer(BufferedDemuxer):
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
        size, kind = BOX.unpack_from(self._buf)
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
        if mp4_child(payload, b"mvex", "moov") is None:
            raise StreamDecodeError(
                "the MP4 stream is not fragmented (its moov has no mvex): live MP4 audio must be fragmented "
                "MP4, as Safari's MediaRecorder writes it"
            )
        for kind, body in mp4_boxes(payload, "moov"):
            if kind == b"trak" and self.codec is None:
                self._on_trak(body)
            elif kind == b"mvex":
                self._on_mvex(body)
        if self.codec is None:
            raise StreamDecodeError("the MP4 stream has no audio track")

    def _on_trak(self, trak: bytes) -> None:
        handler = mp4_path(trak, (b"mdia", b"hdlr"), "track")
        if handler is None or handler[8:12] != b"soun":
            return
        tkhd = mp4_child(trak, b"tkhd", "track")
        if tkhd is None:
            raise StreamDecodeError("corrupt MP4 track: no tkhd")
        (track_id,) = unpack(">I", tkhd, 20 if tkhd[:1] == b"\x01" else 12, "tkhd")
        stsd = mp4_path(trak, (b"mdia", b"minf", b"stbl", b"stsd"), "track")
        if stsd is None or len(stsd) < 8:
            raise StreamDecodeError("corrupt MP4 track: no sample description")
        entry = next(mp4_boxes(stsd[8:], "stsd"), None)
        if entry is None:
            raise StreamDecodeError("corrupt MP4 track: empty sample description")
        self.track = track_id
        self.codec = mp4_codec(*entry)

    def _on_mvex(self, mvex: bytes) -> None:
        for kind, body in mp4_boxes(mvex, "mvex"):
            if kind == b"trex":
                track, _index, duration, size = unpack(">IIII", body, 4, "trex")
                self._defaults[track] = _TrackDefaults(duration=duration, size=size)

    # -- moof: where the fragment's samples are --

    def _on_moof(self, payload: bytes, moof_start: int) -> None:
        if self.codec is None:
            raise self._corrupt("a fragment before the track header (moov)")
        if self._samples:
            raise self._corrupt("a fragment began before the previous one's samples arrived")
        data_end = moof_start  # end of the previous track fragment's data (the implicit base offset)
        for kind, traf in mp4_boxes(payload, "moof"):
            if kind == b"traf":
                data_end = self._on_traf(traf, moof_start, data_end)

    def _on_traf(self, traf: bytes, moof_start: int, previous_end: int) -> int:
        """Queue the audio samples of one track fragment; returns where its data ends."""
        tfhd = mp4_child(traf, b"tfhd", "traf")
        if tfhd is None:
            raise self._corrupt("track fragment without tfhd")
        (flags,) = unpack(">I", tfhd, 0, "tfhd")
        flags &= 0xFFFFFF
        (track,) = unpack(">I", tfhd, 4, "tfhd")
        pos = 8
        base = moof_start if flags & _DEFAULT_BASE_IS_MOOF else previous_end
        if flags & _BASE_DATA_OFFSET:
            (base,) = unpack(">Q", tfhd, pos, "tfhd")
            pos += 8
        pos += 4 if flags & _SAMPLE_DESCRIPTION_INDEX else 0
        pos += 4 if flags & _DEFAULT_DURATION else 0
        default_size = self._defaults.get(track, _TrackDefaults()).size
        if flags & _DEFAULT_SIZE:
            (default_size,) = unpack(">I", tfhd, pos, "tfhd")
        end = base
        for kind, trun in mp4_boxes(traf, "traf"):
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
    (flags,) = unpack(">I", trun, 0, "trun")
    flags &= 0xFFFFFF
    (count,) = unpack(">I", trun, 4, "trun")
    pos = 8
    start = previous_end
    if flags & _DATA_OFFSET:
        (data_offset,) = unpack(">i", trun, pos, "trun")
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
