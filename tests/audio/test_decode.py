"""audio/decode.py: every container the API accepts -> 16 kHz mono float32; one error type for bad input."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from hearline.audio.decode import (
    G711_TABLES,
    AudioDecodeError,
    AudioTooLong,
    DecodeCancelled,
    StreamResampler,
    decode_audio,
    float_to_pcm16,
    g711_to_float,
    resample,
    to_mono_float,
)
from hearline.audio.raw_stream import RawStream
from tests.helpers.corpus import clip
from tests.helpers.media import header_only

GO_FORWARD = clip("en_pocketsphinx_goforward")

# (extension, ffmpeg codec arguments); each is what a browser, phone or desktop app typically uploads
CONTAINERS = [
    ("wav", ["-c:a", "pcm_s16le"]),
    ("flac", ["-c:a", "flac"]),
    ("mp3", ["-c:a", "libmp3lame", "-b:a", "64k"]),
    ("ogg", ["-c:a", "libopus", "-b:a", "32k"]),
    ("webm", ["-c:a", "libopus", "-b:a", "32k"]),
    ("m4a", ["-c:a", "aac", "-b:a", "64k"]),
]


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return decode_audio(str(GO_FORWARD.path))


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("media")
    source = str(GO_FORWARD.path)
    for ext, codec in CONTAINERS:
        # stereo at 48 kHz (Opus's native rate) so the decoder really has to convert rate and channels
        _ffmpeg("-i", source, "-ar", "48000", "-ac", "2", *codec, str(out / f"go.{ext}"))
    # video with an audio track, and video without one
    _ffmpeg("-f", "lavfi", "-i", "color=c=black:s=64x64:d=2.8", "-i", source, "-shortest",
            "-c:v", "mpeg4", "-c:a", "aac", str(out / "go.mp4"))  # fmt: skip
    _ffmpeg("-f", "lavfi", "-i", "color=c=black:s=64x64:d=1", "-c:v", "mpeg4", str(out / "silent.mp4"))
    # a stereo file with different content per channel: left = speech, right = silence
    _ffmpeg("-i", source, "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-filter_complex",
            "[0:a][1:a]amerge=inputs=2[a]", "-map", "[a]", "-t", "2.786", "-c:a", "pcm_s16le",
            str(out / "split.wav"))  # fmt: skip
    return out


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Peak normalised cross-correlation: encoders add delay/padding, so compare shape, not samples."""
    n = min(a.size, b.size)
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    corr = np.fft.irfft(np.fft.rfft(a, 2 * n) * np.conj(np.fft.rfft(b, 2 * n)))
    return float(np.max(np.abs(corr)) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize(("ext", "codec"), [*CONTAINERS, ("mp4", [])])
def test_every_container_decodes_to_16k_mono(
    media_dir: Path, reference: np.ndarray, ext: str, codec: list[str]
) -> None:
    audio = decode_audio(str(media_dir / f"go.{ext}"))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size / 16000 - GO_FORWARD.duration) < 0.15  # codec padding only
    assert np.max(np.abs(audio)) <= 1.0
    assert _similarity(audio, reference) > 0.9


def test_file_objects_and_bytes_decode_the_same(media_dir: Path) -> None:
    path = media_dir / "go.flac"
    from_path = decode_audio(str(path))
    from_bytes = decode_audio(path.read_bytes())
    with path.open("rb") as handle:
        from_file = decode_audio(handle)
    assert np.array_equal(from_path, from_bytes) and np.array_equal(from_path, from_file)


def test_split_stereo_keeps_channels_apart(media_dir: Path) -> None:
    both = decode_audio(str(media_dir / "split.wav"), split_stereo=True)
    assert both.shape[0] == 2 and both.dtype == np.float32
    left, right = both
    assert np.sqrt(np.mean(left**2)) > 0.01
    assert np.max(np.abs(right)) < 1e-4
    mono = decode_audio(str(GO_FORWARD.path), split_stereo=True)
    assert mono.shape[0] == 1  # a mono input gives one row


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty"),
        (b"just some text, not audio at all\n" * 20, "not a recognised audio"),
        (np.random.default_rng(3).bytes(40_000), None),
    ],
    ids=["empty", "text", "random"],
)
def test_bad_input_raises_one_error_type(payload: bytes, message: str | None) -> None:
    with pytest.raises(AudioDecodeError, match=message):
        decode_audio(payload)
    with pytest.raises(AudioDecodeError):
        decode_audio(io.BytesIO(payload))


def test_no_audio_stream_and_missing_file(media_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="no audio stream"):
        decode_audio(str(media_dir / "silent.mp4"))
    with pytest.raises(AudioDecodeError):
        decode_audio(str(tmp_path / "absent.wav"))


def test_a_decode_bomb_stops_at_the_limit_with_memory_bounded(tmp_path: Path) -> None:
    """Three hours of silence compress to a small FLAC; decoding it whole would hold 690 MB of samples."""
    bomb = tmp_path / "bomb.flac"
    _ffmpeg(
        "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "10800", "-c:a", "flac", "-sample_fmt", "s16", str(bomb)
    )
    assert bomb.stat().st_size < 3 * 1024 * 1024
    probe = (
        "import sys\n"
        "from hearline.audio.decode import AudioTooLong, decode_audio\n"
        "try:\n"
        "    decode_audio(sys.argv[1], max_seconds=60)\n"
        "except AudioTooLong as exc:\n"
        "    print(exc)\n"
        # VmHWM is this process's own peak; ru_maxrss would carry the parent's over the vfork + exec
        "print(next(int(l.split()[1]) // 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(bomb)], capture_output=True, text=True, check=True)
    message, peak_mb = out.stdout.split("\n")[:2]
    assert message == "the audio is longer than the limit of 60 s"
    assert int(peak_mb) < 200, peak_mb  # measured 52 (the interpreter and PyAV); unbounded it is over 690
    with pytest.raises(AudioTooLong):
        decode_audio(GO_FORWARD.path.read_bytes(), max_seconds=2.0)
    assert decode_audio(GO_FORWARD.path.read_bytes(), max_seconds=3.0).size > 2 * 16000  # under it: whole


def test_a_file_claiming_a_tiny_sample_rate_is_refused() -> None:
    """A WAV header saying 1 Hz: every sample would stand for 16000 of ours (hours from a few kilobytes)."""
    pcm = np.zeros(16000, dtype="<i2").tobytes()
    header = b"RIFF" + (36 + len(pcm)).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    header += (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (1).to_bytes(4, "little")  # PCM, mono, 1 Hz
    header += (2).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    header += b"data" + len(pcm).to_bytes(4, "little")
    with pytest.raises(AudioDecodeError, match="unsupported sample rate 1 Hz"):
        decode_audio(header + pcm)


def test_truncated_files(media_dir: Path) -> None:
    mp3 = (media_dir / "go.mp3").read_bytes()
    half = decode_audio(mp3[: len(mp3) // 2])
    assert 0.5 < half.size / 16000 < GO_FORWARD.duration  # what arrived is decoded, as players do
    with pytest.raises(AudioDecodeError):
        decode_audio(header_only(mp3))  # ID3 tag and the Info frame only: no audio at all


def test_pcm16_round_trip_and_resampling() -> None:
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(24000) / 24000)).astype(np.float32)
    back = RawStream("pcm", 2, 1, 24000).push(float_to_pcm16(tone))
    assert np.max(np.abs(back - tone)) < 1e-4
    resampled = resample(tone, 24000, 16000)
    assert abs(resampled.size - 16000) < 200
    streamed = StreamResampler(24000)
    pieces = [streamed.push(tone[i : i + 4800]) for i in range(0, tone.size, 4800)] + [streamed.flush()]
    assert abs(sum(p.size for p in pieces) - 16000) < 200


def test_pcm_conversion_widths_and_channels() -> None:
    stereo16 = np.array([[16384, 0], [-32768, -32768]], dtype="<i2").tobytes()
    assert np.allclose(to_mono_float(stereo16, 2, 2), [0.25, -1.0])
    assert np.allclose(to_mono_float(bytes([128, 255, 0]), 1, 1), [0.0, 127 / 128, -1.0])
    assert np.allclose(to_mono_float(np.array([2**30], dtype="<i4").tobytes(), 4, 1), [0.5])


@pytest.mark.parametrize("law", ["mulaw", "alaw"])
def test_g711_tables_match_ffmpeg_decoding(law: str) -> None:
    """Our G.711 expansion against ffmpeg's decoder for every one of the 256 codes, and stereo downmix."""
    codes = bytes(range(256))
    pcm = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", law, "-ar", "8000", "-ac", "1", "-i", "-",
         "-f", "s16le", "-"],
        input=codes, check=True, capture_output=True, timeout=60,
    ).stdout  # fmt: skip
    expected = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    np.testing.assert_array_equal(G711_TABLES[law], expected)
    np.testing.assert_array_equal(g711_to_float(codes, law), expected)
    np.testing.assert_allclose(g711_to_float(codes, law, channels=2), expected.reshape(-1, 2).mean(axis=1))


def test_a_set_cancel_event_stops_decoding_before_any_audio_is_returned() -> None:
    cancel = threading.Event()
    assert decode_audio(clip("en_fw_jfk").path, cancel=cancel).size > 0
    cancel.set()
    with pytest.raises(DecodeCancelled):
        decode_audio(clip("en_fw_jfk").path, cancel=cancel)
