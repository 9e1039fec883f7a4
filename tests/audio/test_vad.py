"""Silero VAD from the faster-whisper wheel, streamed; and the segmenter built on it."""

from __future__ import annotations

import numpy as np
import onnxruntime

from hearline.audio.decode import decode_audio
from hearline.audio.vad import WINDOW, VADStream, model_path, speech_probabilities, speech_regions
from hearline.live.segmenter import Audio, Begin, End, Pause, Resume, Segmenter
from tests.helpers.corpus import clip


def test_model_ships_in_the_wheel_with_the_expected_signature() -> None:
    path = model_path()
    assert path.is_file() and path.name == "silero_vad_v6.onnx"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input", "h", "c"]
    assert [o.name for o in session.get_outputs()] == ["speech_probs", "hn", "cn"]


def test_speech_scores_high_and_silence_low() -> None:
    speech = decode_audio(clip("en_pocketsphinx_goforward").path)
    silence = np.zeros(16000, dtype=np.float32)
    probs = speech_probabilities(np.concatenate([silence, speech, silence]))
    per_second = 16000 // WINDOW
    assert probs[: per_second - 2].max() < 0.1  # leading silence
    assert probs[per_second : per_second + 3 * per_second].max() > 0.8  # the words
    assert probs[-per_second + 16 :].max() < 0.2  # trailing silence, after the hangover


def test_streaming_in_any_block_size_equals_one_pass() -> None:
    audio = decode_audio(clip("en_fw_jfk").path)
    whole = speech_probabilities(audio)
    stream = VADStream()
    rng = np.random.default_rng(1)
    parts, position = [], 0
    while position < audio.size:
        size = int(rng.integers(1, 5000))
        parts.append(stream.process(audio[position : position + size]))
        position += size
    streamed = np.concatenate(parts)
    assert streamed.size == whole.size == audio.size // WINDOW
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_speech_regions_separate_two_clips() -> None:
    first = decode_audio(clip("en_pocketsphinx_goforward").path)
    second = decode_audio(clip("en_ljspeech_LJ001-0002").path)
    audio = np.concatenate([first, np.zeros(32000, dtype=np.float32), second])
    regions = speech_regions(audio)
    assert len(regions) == 2, regions
    boundary = first.size / 16000
    assert regions[0][1] <= boundary + 0.1
    assert regions[1][0] >= boundary + 1.8


def _windows(probs: list[float]) -> tuple[np.ndarray, np.ndarray]:
    audio = np.repeat(np.asarray(probs, dtype=np.float32), WINDOW)  # sample value = its window's prob
    return audio, np.asarray(probs, dtype=np.float32)


def test_segmenter_endpoints_after_silence_with_prefix_padding() -> None:
    seg = Segmenter(threshold=0.5, silence_ms=320, prefix_padding_ms=64, max_utterance_s=30)
    probs = [0.0] * 10 + [0.9] * 20 + [0.0] * 15 + [0.9] * 5 + [0.0] * 3
    audio, p = _windows(probs)
    actions = seg.push(audio, p)
    begins = [a for a in actions if isinstance(a, Begin)]
    ends = [a for a in actions if isinstance(a, End)]
    assert [b.speech_sample for b in begins] == [10 * WINDOW, 45 * WINDOW]
    assert begins[0].start_sample == 8 * WINDOW  # two windows (64 ms) of padding
    assert begins[0].audio.size == 3 * WINDOW
    assert len(ends) == 1 and ends[0].speech_end_sample == 30 * WINDOW and ends[0].reason == "silence"
    assert ends[0].at_sample == 40 * WINDOW  # 10 quiet windows = 320 ms
    body = sum(a.audio.size for a in actions[: actions.index(ends[0])] if isinstance(a, Audio))
    assert body == (40 - 11) * WINDOW
    assert seg.open  # the second utterance is still open
    tail = seg.end("flush")
    assert isinstance(tail[-1], End) and tail[-1].reason == "flush"


def test_segmenter_splits_at_max_length_and_continues() -> None:
    seg = Segmenter(threshold=0.5, silence_ms=500, prefix_padding_ms=0, max_utterance_s=1.0)
    audio, p = _windows([0.9] * 80)  # 2.56 s of uninterrupted speech
    actions = seg.push(audio, p)
    ends = [a for a in actions if isinstance(a, End)]
    begins = [a for a in actions if isinstance(a, Begin)]
    assert [e.reason for e in ends] == ["max_length", "max_length"]
    assert len(begins) == 3
    assert all(b.start_sample == e.at_sample for e, b in zip(ends, begins[1:], strict=True))  # no gap, no overlap


def test_segmenter_without_vad_opens_on_first_audio() -> None:
    seg = Segmenter(use_vad=False, max_utterance_s=60)
    actions = seg.push(np.zeros(WINDOW * 4 + 100, dtype=np.float32), None)
    assert isinstance(actions[0], Begin) and actions[0].start_sample == 0
    tail = seg.end("forced")
    assert isinstance(tail[0], Audio) and tail[0].audio.size == 100
    assert isinstance(tail[-1], End)


def test_segmenter_announces_pauses_before_the_endpoint_and_resumed_speech() -> None:
    seg = Segmenter(threshold=0.5, silence_ms=320, prefix_padding_ms=0, max_utterance_s=30, pause_ms=96)
    # speech, a 5-window pause (over 96 ms, under 320 ms), speech, then silence up to the endpoint
    probs = [0.9] * 10 + [0.0] * 5 + [0.9] * 10 + [0.0] * 12
    audio, p = _windows(probs)
    actions = seg.push(audio, p)
    kinds = [type(a).__name__ for a in actions if not isinstance(a, Audio)]
    assert kinds == ["Begin", "Pause", "Resume", "Pause", "End"]
    pauses = [a for a in actions if isinstance(a, Pause)]
    assert [a.speech_end_sample for a in pauses] == [10 * WINDOW, 25 * WINDOW]
    # Everything before a notice is already handed over, so a final prepared then covers all the speech.
    first_pause = actions.index(pauses[0])
    handed = sum(a.audio.size for a in actions[:first_pause] if isinstance(a, (Begin, Audio)))
    assert handed == 13 * WINDOW  # 10 speech windows + the 3 quiet ones that made the pause


def test_segmenter_reports_where_sound_ends_after_the_speech() -> None:
    """Windows between the two thresholds (a word trailing off) do not move the speech end that the
    silence is timed from, but they are sound: a final pass must not cut them off."""
    seg = Segmenter(threshold=0.5, silence_ms=320, prefix_padding_ms=0, max_utterance_s=30, pause_ms=96)
    audio, p = _windows([0.9] * 10 + [0.4] * 4 + [0.0] * 12)
    actions = seg.push(audio, p)
    pause = next(a for a in actions if isinstance(a, Pause))
    end = next(a for a in actions if isinstance(a, End))
    assert (pause.speech_end_sample, pause.sound_end_sample) == (10 * WINDOW, 14 * WINDOW)
    assert (end.speech_end_sample, end.sound_end_sample) == (10 * WINDOW, 14 * WINDOW)
    assert end.at_sample == 20 * WINDOW  # the endpoint is still timed from the speech end


def test_segmenter_pause_notices_off_by_default_and_without_vad() -> None:
    probs = [0.9] * 10 + [0.0] * 20
    audio, p = _windows(probs)
    for seg in (Segmenter(silence_ms=320), Segmenter(use_vad=False, pause_ms=96)):
        actions = seg.push(audio, None if not seg.use_vad else p)
        assert not [a for a in actions if isinstance(a, Pause | Resume)]
