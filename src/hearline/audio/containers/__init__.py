"""Push parsers (demultiplexers) of the containers browsers record live audio in: WebM, Ogg, fragmented MP4.

``av.open`` cannot be fed incrementally (it pulls from a file object and probes ahead), so each container
has a small parser here that takes arbitrary byte chunks and returns the audio track's compressed packets
as soon as their last byte has arrived.  Every malformed input is detected at the byte where it goes wrong
and raised as :class:`StreamDecodeError` instead of hanging.  ``hearline.audio.stream`` decodes the packets.
"""

from __future__ import annotations

from hearline.audio.containers.base import Demuxer, StreamDecodeError
from hearline.audio.containers.mp4 import Mp4Demuxer
from hearline.audio.containers.ogg import OggDemuxer
from hearline.audio.containers.webm import WebMDemuxer

__all__ = ["MAGIC_BYTES", "Demuxer", "StreamDecodeError", "open_demuxer"]

MAGIC_BYTES = 8  # enough to recognise every container (an MP4 box header)


def open_demuxer(head: bytes) -> Demuxer | None:
    """The demuxer for a stream starting with ``head``; None while too few bytes have arrived.

    The container is recognised from the first bytes: the EBML magic (WebM), ``OggS`` (Ogg), or an
    ``ftyp`` box (MP4).
    """
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return WebMDemuxer()
    if head[:4] == b"OggS":
        return OggDemuxer()
    if head[4:8] == b"ftyp":
        return Mp4Demuxer()
    if len(head) < MAGIC_BYTES and _could_still_match(head):
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
