"""Audio as browsers and phones stream it, made from real clips with ffmpeg: Chrome's WebM/Opus (clusters of
unknown size), Ogg/Opus, Safari's fragmented MP4, cut into the pieces ``MediaRecorder.start(250)`` delivers.

Shared by the stream-decoder tests and the live doors' tests (what a browser client sends).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

UNKNOWN_SIZE = b"\x01\xff\xff\xff\xff\xff\xff\xff"


def encode_opus(path: Path, container: str = "webm", bitrate: str = "32k") -> bytes:
    """Encode an audio file to Opus at 48 kHz mono in ``webm`` or ``ogg``, written to a pipe (live style)."""
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-ac", "1", "-ar", "48000",
         "-c:a", "libopus", "-b:a", bitrate, "-f", container, "pipe:1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return result.stdout


def _vint(data: bytes, pos: int) -> tuple[int, int]:
    length = 9 - data[pos].bit_length()
    value = data[pos] & (0xFF >> length)
    for i in range(1, length):
        value = (value << 8) | data[pos + i]
    return value, length


def browser_webm(path: Path) -> bytes:
    """WebM/Opus as Chrome's MediaRecorder writes it: unknown-size Segment and Clusters."""
    data = encode_opus(path, "webm")
    out = bytearray()
    pos = 0
    while pos < len(data):
        ident_len = 9 - data[pos].bit_length()
        ident = data[pos : pos + ident_len]
        size, size_len = _vint(data, pos + ident_len)
        body = pos + ident_len + size_len
        if ident in (b"\x18\x53\x80\x67", b"\x1f\x43\xb6\x75"):  # Segment, Cluster: enter, unknown size
            out += ident + UNKNOWN_SIZE
            pos = body
        else:
            out += data[pos : body + size]
            pos = body + size
    return bytes(out)


def browser_chunks(data: bytes, duration_s: float, chunk_s: float = 0.25) -> list[bytes]:
    """Cut a stream into pieces of the byte size of ``chunk_s`` seconds, as MediaRecorder delivers them."""
    step = max(1, int(len(data) / duration_s * chunk_s))
    return [data[i : i + step] for i in range(0, len(data), step)]


FRAGMENTED = "frag_keyframe+empty_moov+default_base_moof"


def safari_mp4(path: Path, codec: str = "aac", movflags: str = FRAGMENTED, *extra: str) -> bytes:
    """The clip as (by default fragmented) MP4 at 48 kHz mono, written to a pipe as a live muxer does."""
    bitrate = "64k" if codec == "aac" else "32k"
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-ac", "1", "-ar", "48000",
         "-c:a", codec, "-b:a", bitrate, "-movflags", movflags, *extra, "-f", "mp4", "pipe:1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return result.stdout
