"""ISO BMFF boxes that MP4 streams buffer whole (``moov``, ``moof``), and the audio codec of a track.

These read fully buffered payloads only; the incremental part (what arrives when) is in ``mp4.py``.
The sample entry yields the PyAV decoder name and its extradata: AAC's AudioSpecificConfig from
``esds``, or for Opus the ``OpusHead`` libopus expects, rebuilt from ``dOps``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from hearline.audio.containers.base import StreamDecodeError

BOX = struct.Struct(">I4s")
_AAC_OBJECT_TYPES = {0x40, 0x66, 0x67, 0x68}  # MPEG-4 audio, MPEG-2 AAC main/LC/SSR
_MP3_OBJECT_TYPES = {0x69, 0x6B}


def mp4_boxes(payload: bytes, what: str) -> Iterator[tuple[bytes, bytes]]:
    """(type, body) of the boxes of a fully buffered container box."""
    pos = 0
    while pos + 8 <= len(payload):
        size, kind = BOX.unpack_from(payload, pos)
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


def mp4_child(payload: bytes, kind: bytes, what: str) -> bytes | None:
    return next((body for child, body in mp4_boxes(payload, what) if child == kind), None)


def mp4_path(payload: bytes, path: tuple[bytes, ...], what: str) -> bytes | None:
    """The body of the first box along ``path`` (``(b"mdia", b"hdlr")``...), None when absent."""
    body: bytes | None = payload
    for kind in path:
        if body is None:
            return None
        body = mp4_child(body, kind, what)
    return body


def unpack(fmt: str, data: bytes, pos: int, what: str) -> tuple[int, ...]:
    try:
        return struct.unpack_from(fmt, data, pos)
    except struct.error as exc:
        raise StreamDecodeError(f"corrupt MP4 {what}: too short") from exc


def mp4_codec(kind: bytes, entry: bytes) -> tuple[str, bytes]:
    """(PyAV decoder, extradata) of an audio sample entry (``mp4a`` with AAC or MP3, ``Opus``)."""
    # AudioSampleEntry: 8 bytes of SampleEntry, then 20 (QuickTime sound description v1: 36, v2: 56)
    (version,) = unpack(">H", entry, 8, "sample entry")
    children = entry[{0: 28, 1: 44, 2: 64}.get(version, 28) :]
    if kind == b"mp4a":
        esds = mp4_child(children, b"esds", "sample entry")
        wave = mp4_child(children, b"wave", "sample entry") if esds is None else None
        if wave is not None:  # QuickTime puts esds inside a wave box
            esds = mp4_child(wave, b"esds", "wave")
        if esds is None:
            raise StreamDecodeError("corrupt MP4 track: mp4a without esds")
        return _esds_codec(esds)
    if kind == b"Opus":
        dops = mp4_child(children, b"dOps", "sample entry")
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
