"""Push parser of an Ogg/Opus stream: page framing, then packets reassembled across pages.

Only the first logical stream is decoded (its beginning-of-stream page fixes the serial); pages of other
logical streams are dropped, and the Opus identification and comment headers are consumed here.
"""

from __future__ import annotations

import struct

from hearline.audio.containers.base import BufferedDemuxer, StreamDecodeError

_OGG_HEADER = struct.Struct("<4sBBqIIIB")  # capture, version, flags, granule, serial, sequence, crc, segments


class OggDemuxer(BufferedDemuxer):
    """Push parser of an Ogg stream, yielding the packets of the first logical (Opus) stream."""

    name = "ogg"
    label = "Ogg"
    unit = "Ogg page"

    def __init__(self) -> None:
        super().__init__()
        self._serial: int | None = None
        self._partial = bytearray()  # a packet continued on the next page
        self._packet_index = 0

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
