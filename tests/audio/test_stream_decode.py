"""audio/stream.py: a browser-like WebM/Opus (and Ogg/Opus, and Safari's fragmented MP4) stream decoded
chunk by chunk.

The streams are real clips encoded with ffmpeg at 48 kHz (as a browser records) and cut into pieces of
the byte size of ~250 ms of audio, as ``MediaRecorder.start(250)`` delivers them.  ``browser_webm``
rewrites ffmpeg's clusters to unknown size, which is what Chrome's live muxer writes; ``safari_mp4`` is
fragmented MP4 (``ftyp``, ``moov`` with ``mvex``, then ``moof`` + ``mdat``), what Safari's ``audio/mp4``
MediaRecorder writes, with AAC (or Opus).
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hearline.audio.decode import decode_audio
from hearline.audio.stream import StreamDecodeError, StreamDecoder
from tests.helpers.corpus import clip
from tests.helpers.media import FRAGMENTED, browser_chunks, browser_webm, encode_opus, safari_mp4


def _decode_chunks(chunks: list[bytes]) -> tuple[np.ndarray, StreamDecoder]:
    decoder = StreamDecoder()
    parts = [decoder.push(chunk) for chunk in chunks]
    parts.append(decoder.finish())
    return np.concatenate(parts), decoder


def _assert_same_audio(streamed: np.ndarray, whole: np.ndarray) -> None:
    # Opus end padding: the whole-file demuxer trims the last frame's padding (13.5 ms here) using the
    # final granule / DiscardPadding, which a live stream does not have yet; allow 20 ms.
    assert abs(len(streamed) - len(whole)) <= 320, (len(streamed), len(whole))
    n = min(len(streamed), len(whole))
    assert np.corrcoef(streamed[:n], whole[:n])[0, 1] > 0.999
    assert streamed.dtype == np.float32


def _stream_as_browser(data: bytes, duration: float) -> tuple[StreamDecoder, np.ndarray]:
    """Push ``data`` in a browser's 250 ms pieces; checks the audio comes out as the data arrives, not at the end."""
    chunks = browser_chunks(data, duration)
    assert len(chunks) >= 40  # ~11 s in 250 ms pieces
    decoder = StreamDecoder()
    outputs = [decoder.push(chunk) for chunk in chunks]
    assert sum(len(o) for o in outputs[: len(outputs) // 2]) > 16000 * duration / 3
    outputs.append(decoder.finish())
    return decoder, np.concatenate(outputs)


def test_browser_webm_in_250ms_chunks_equals_whole_file_decode() -> None:
    speech = clip("en_fw_jfk")
    data = browser_webm(speech.path)
    decoder, streamed = _stream_as_browser(data, speech.duration)
    assert decoder.container == "webm" and not decoder.truncated
    _assert_same_audio(streamed, decode_audio(data))
    # and the decoded audio is the clip itself
    original = decode_audio(speech.path)
    assert abs(len(streamed) - len(original)) <= 320
    n = min(len(streamed), len(original))
    assert np.corrcoef(streamed[:n], original[:n])[0, 1] > 0.95


def test_random_chunk_boundaries_give_identical_audio() -> None:
    speech = clip("en_pocketsphinx_goforward")
    data = browser_webm(speech.path)
    rng = random.Random(7)
    chunks, pos = [], 0
    while pos < len(data):
        size = rng.choice([1, 2, 3, 7, 50, 333, 1500])
        chunks.append(data[pos : pos + size])
        pos += size
    by_random, _ = _decode_chunks(chunks)
    by_whole, _ = _decode_chunks([data])
    assert np.array_equal(by_random, by_whole)


def test_ogg_opus_stream() -> None:
    speech = clip("en_ljspeech_LJ001-0002")
    data = encode_opus(speech.path, "ogg")
    streamed, decoder = _decode_chunks(browser_chunks(data, speech.duration, 0.1))
    assert decoder.container == "ogg" and not decoder.truncated
    _assert_same_audio(streamed, decode_audio(data))


def test_ffmpeg_known_size_webm_also_decodes() -> None:
    speech = clip("en_uberi_english")
    data = encode_opus(speech.path, "webm")
    streamed, _ = _decode_chunks(browser_chunks(data, speech.duration))
    _assert_same_audio(streamed, decode_audio(data))


def test_random_bytes_raise_a_clear_error() -> None:
    garbage = np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    decoder = StreamDecoder()
    with pytest.raises(StreamDecodeError, match="does not start with a WebM, Ogg or MP4 header"):
        decoder.push(garbage)
    with pytest.raises(StreamDecodeError):  # stays failed
        decoder.push(b"\x1a\x45\xdf\xa3")


def test_stream_without_its_header_is_rejected() -> None:
    """A reconnecting client that did not restart its recorder sends chunks from the middle."""
    speech = clip("en_pocketsphinx_goforward")
    chunks = browser_chunks(browser_webm(speech.path), speech.duration)
    decoder = StreamDecoder()
    with pytest.raises(StreamDecodeError, match="header"):
        decoder.push(chunks[3])


def test_garbage_after_a_valid_header_is_an_error_not_a_hang() -> None:
    speech = clip("en_pocketsphinx_goforward")
    chunks = browser_chunks(browser_webm(speech.path), speech.duration)
    decoder = StreamDecoder()
    decoded = sum(len(decoder.push(c)) for c in chunks[:4])
    assert decoded > 0
    garbage = np.random.default_rng(2).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    with pytest.raises(StreamDecodeError, match="corrupt WebM stream"):
        decoder.push(garbage)


def test_truncated_stream_keeps_the_audio_before_the_cut() -> None:
    speech = clip("en_fw_jfk")
    data = browser_webm(speech.path)
    cut = data[: len(data) // 2 + 17]  # mid-block
    streamed, decoder = _decode_chunks(browser_chunks(cut, speech.duration / 2))
    assert decoder.truncated
    whole = decode_audio(speech.path)
    assert 0.35 * len(whole) < len(streamed) < 0.65 * len(whole)
    n = len(streamed) - 2000
    assert np.corrcoef(streamed[:n], whole[:n])[0, 1] > 0.95


def test_empty_and_too_short_streams() -> None:
    with pytest.raises(StreamDecodeError, match="empty"):
        StreamDecoder().finish()
    decoder = StreamDecoder()
    assert decoder.push(b"\x1a\x45").size == 0
    with pytest.raises(StreamDecodeError, match="too short"):
        decoder.finish()
    header_only = browser_webm(clip("en_pocketsphinx_goforward").path)[:40]
    decoder = StreamDecoder()
    decoder.push(header_only)
    with pytest.raises(StreamDecodeError, match="before its audio track header"):
        decoder.finish()


# ---------------------------------------------------------------------------------------------------------
# fragmented MP4 (Safari)

AAC_PRIMING = 341  # AAC's 1024-sample encoder delay at 48 kHz, in 16 kHz samples (no edit list in a live fMP4)


def test_fragmented_mp4_aac_in_250ms_chunks_equals_whole_file_decode() -> None:
    speech = clip("en_fw_jfk")
    data = safari_mp4(speech.path)
    assert data[4:8] == b"ftyp"
    decoder, streamed = _stream_as_browser(data, speech.duration)  # MP4: a fragment's samples as they arrive
    assert decoder.container == "mp4" and not decoder.truncated
    whole = decode_audio(data)
    assert len(streamed) == len(whole)
    assert np.corrcoef(streamed, whole)[0, 1] > 0.999
    original = decode_audio(speech.path)  # the clip itself, behind the encoder's priming samples
    n = min(len(streamed) - AAC_PRIMING, len(original))
    assert np.corrcoef(streamed[AAC_PRIMING : AAC_PRIMING + n], original[:n])[0, 1] > 0.95


@pytest.mark.parametrize(
    ("codec", "movflags", "extra"),
    [
        ("aac", "empty_moov+default_base_moof", ("-frag_duration", "250000")),  # a fragment per 250 ms
        ("aac", "frag_keyframe+empty_moov", ()),  # offsets relative to the moof without default_base_moof
        ("libopus", FRAGMENTED, ()),  # Opus in MP4 (dOps)
    ],
)
def test_fragmented_mp4_variants_at_random_chunk_boundaries(codec: str, movflags: str, extra: tuple[str, ...]) -> None:
    speech = clip("en_pocketsphinx_goforward")
    data = safari_mp4(speech.path, codec, movflags, *extra)
    rng = random.Random(11)
    chunks, pos = [], 0
    while pos < len(data):
        size = rng.choice([1, 2, 7, 50, 333, 1500, 4000])
        chunks.append(data[pos : pos + size])
        pos += size
    by_random, decoder = _decode_chunks(chunks)
    assert decoder.container == "mp4" and not decoder.truncated
    by_whole, _ = _decode_chunks([data])
    assert np.array_equal(by_random, by_whole)
    whole = decode_audio(data)
    assert len(by_random) == len(whole) and np.corrcoef(by_random, whole)[0, 1] > 0.999


def plain_mp4(path: Path, out: Path, *extra: str) -> bytes:
    """An ordinary (non-fragmented) MP4 file; the muxer needs a seekable output for it."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-ac", "1", "-c:a", "aac", *extra,
         str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    return out.read_bytes()


def test_mp4_that_is_not_fragmented_is_refused_clearly(tmp_path: Path) -> None:
    speech = clip("en_pocketsphinx_goforward")
    # moov first, but with ordinary sample tables; then ffmpeg's default layout, moov at the end
    faststart = plain_mp4(speech.path, tmp_path / "faststart.mp4", "-movflags", "+faststart")
    with pytest.raises(StreamDecodeError, match="not fragmented"):
        _decode_chunks(browser_chunks(faststart, speech.duration))
    moov_last = plain_mp4(speech.path, tmp_path / "plain.mp4")
    with pytest.raises(StreamDecodeError, match="media data before its track header"):
        _decode_chunks(browser_chunks(moov_last, speech.duration))


def test_truncated_fragmented_mp4_keeps_the_audio_before_the_cut() -> None:
    speech = clip("en_fw_jfk")
    data = safari_mp4(speech.path)
    streamed, decoder = _decode_chunks(browser_chunks(data[: len(data) // 2 + 17], speech.duration / 2))
    assert decoder.truncated and "MP4 fragment" in decoder.truncation
    whole = decode_audio(speech.path)
    assert 0.35 * len(whole) < len(streamed) < 0.65 * len(whole)
    n = len(streamed) - 2000
    assert np.corrcoef(streamed[AAC_PRIMING:n], whole[: n - AAC_PRIMING])[0, 1] > 0.95
    decoder = StreamDecoder()
    decoder.push(data[:300])  # inside the moov
    with pytest.raises(StreamDecodeError, match="before its audio track header"):
        decoder.finish()


def test_garbage_inside_a_fragmented_mp4_is_an_error_not_a_hang() -> None:
    speech = clip("en_pocketsphinx_goforward")
    data = safari_mp4(speech.path)
    garbage = np.random.default_rng(4).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    decoder = StreamDecoder()
    ftyp = int.from_bytes(data[:4], "big")
    moov = int.from_bytes(data[ftyp : ftyp + 4], "big")
    assert decoder.push(data[: ftyp + moov]).size == 0  # the headers
    with pytest.raises(StreamDecodeError, match="corrupt MP4 stream"):
        decoder.push(garbage)
