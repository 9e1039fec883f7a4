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


def header_only(mp3: bytes) -> bytes:
    """The ID3 tag and the Xing/Info frame of an MP3: headers, no audio frames."""
    marker = max(mp3.find(b"Info"), mp3.find(b"Xing"))
    assert marker > 0
    start = mp3.rfind(b"\xff", 0, marker)  # sync of the Info frame
    for i in range(marker, len(mp3) - 1):
        if i > start + 4 and mp3[i] == 0xFF and mp3[i + 1] & 0xE0 == 0xE0:
            return mp3[:i]
    raise AssertionError("no audio frame after the Info frame")


#: sox ``synth`` arguments of each non-speech probe (10 s, 16 kHz mono)
NO_SPEECH_PROBES = {
    "silence": ["trim", "0", "10"],
    "hum": ["synth", "10", "sine", "50", "vol", "0.3"],
    "noise": ["synth", "10", "whitenoise", "vol", "0.1"],
    "music": ["synth", "10", "pluck", "C3", "pluck", "E3", "pluck", "G3", "remix", "-", "tremolo", "2", "90"],
    "clicks": ["synth", "0.002", "square", "1000", "pad", "0", "0.498", "repeat", "19"],
}


def no_speech_probes(folder: Path) -> dict[str, Path]:
    """Write the probes into ``folder``; returns name -> WAV path."""
    probes = {}
    for name, effects in NO_SPEECH_PROBES.items():
        path = folder / f"{name}.wav"
        channels = "3" if "remix" in effects else "1"
        subprocess.run(["sox", "-n", "-r", "16000", "-b", "16", "-c", channels, str(path), *effects], check=True)
        probes[name] = path
    return probes
