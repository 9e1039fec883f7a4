"""Raw audio in arbitrary chunks: frames carried across pushes, streamed WAV headers read, bad ones refused."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from hearline.audio.decode import AudioDecodeError, decode_audio, to_mono_float
from hearline.audio.raw_stream import RawStream, is_wav_start, parse_wav_header
from tests.helpers.corpus import clip


def test_frames_split_anywhere_decode_as_whole() -> None:
    pcm = (np.arange(-3000, 3000, 7, dtype="<i2").reshape(-1, 2)).tobytes()  # stereo 16-bit
    stream = RawStream("pcm", 2, 2, 16000)
    pieces = [stream.push(pcm[i : i + 5]) for i in range(0, len(pcm), 5)]  # 5 bytes: never a whole frame
    np.testing.assert_array_equal(np.concatenate(pieces), to_mono_float(pcm, 2, 2))
    assert stream.push(b"\x01").size == 0 and stream.finish().size == 0  # a partial frame is dropped


def test_streamed_wav_header_sets_the_format() -> None:
    wav = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(clip("en_pocketsphinx_goforward").path),
         "-ar", "44100", "-ac", "2", "-f", "wav", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert is_wav_start(wav[:12])
    assert parse_wav_header(wav[:30]) is None  # not complete yet
    found = parse_wav_header(wav[:4096])
    assert found is not None
    stream, offset = found
    assert (stream.sample_rate, stream.channels, stream.width) == (44100, 2, 2)
    audio = stream.push(wav[offset:])
    reference = decode_audio(wav, sample_rate=44100)
    assert abs(len(audio) - len(reference)) <= 1
    assert np.corrcoef(audio[: len(reference)], reference[: len(audio)])[0, 1] > 0.99


def test_unstreamable_wav_is_refused() -> None:
    adpcm = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(clip("en_pocketsphinx_goforward").path),
         "-c:a", "adpcm_ms", "-f", "wav", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    with pytest.raises(AudioDecodeError, match="cannot be streamed"):
        parse_wav_header(adpcm[:4096])
    with pytest.raises(AudioDecodeError, match="too long"):
        parse_wav_header(b"RIFF\xff\xff\xff\xffWAVE" + b"LIST" + (2**30).to_bytes(4, "little") + bytes(70000))
