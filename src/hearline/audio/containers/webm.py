"""Push parser of the WebM (Matroska) stream a browser's ``MediaRecorder`` writes: EBML elements.

A live recording has unknown-size Segment and Cluster elements, so those masters are entered in place
rather than buffered; every other element is either buffered whole (bounded by ``MAX_ELEMENT_BYTES``)
or skipped as its bytes arrive.
"""

from __future__ import annotations

from collections.abc import Iterator

from hearline.audio.containers.base import MAX_ELEMENT_BYTES, BufferedDemuxer, StreamDecodeError

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


class WebMDemuxer(BufferedDemuxer):
    """Push parser of a (live, unknown-size) Matroska stream, yielding the first audio track's packets."""

    name = "webm"
    label = "WebM"
    unit = "WebM block"

    def __init__(self) -> None:
        super().__init__()
        self._seen_ebml = False
        self.track: int | None = None

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
