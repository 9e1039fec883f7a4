"""Draft windows (``TranscribeOptions.draft``, live partial passes) on real Whisper base and real speech.

A draft is encoded with its audio and ten seconds of silence instead of a 30 s window and may write a bounded
number of tokens; a final is neither, but may be encoded as short (``short_window``, ``--live-final-window
short``) and is then still decoded whole.  Measured with ``python -m pytest tests/engines/test_faster_whisper_draft.py
-s`` (printed): draft WER 0.000 vs full windows 0.000 on these clips; ``python bench/whisper_draft.py`` over every
English reference clip: 0.084 vs 0.087 (base), 0.080 vs 0.064 (tiny.en) at 0.59 and 0.63 of the time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from hearline.audio.decode import decode_audio
from hearline.config import Settings
from hearline.engines.base import TranscribeOptions, WindowRequest
from hearline.engines.faster_whisper import FasterWhisperEngine
from hearline.engines.faster_whisper.draft import DRAFT_PAD_FRAMES, draft_tokens, encoded_frames
from hearline.models.resolve import load_engine, resolve_model
from tests.helpers.corpus import clip, wer
from tests.helpers.whisper_calls import WhisperCalls

ENGLISH = ["en_fw_jfk", "en_ljspeech_LJ001-0001", "en_librivox_sense_and_sensibility_01_0880"]
PARTIAL = TranscribeOptions(language="en", beam_size=1, fallback=False, word_timestamps=True, vad_filter=False)
DRAFT = dataclasses.replace(PARTIAL, draft=True)
#: a draft may lose this much WER against the full window (measured +0.000 here, -0.003 base / +0.016 tiny.en
#: over the whole English set)
DRAFT_MARGIN = 0.03


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FasterWhisperEngine]:
    settings = Settings.load(model_dir=tmp_path_factory.mktemp("fw-draft"), threads=2)
    loaded = load_engine(resolve_model("base", settings), settings)
    assert isinstance(loaded, FasterWhisperEngine)
    yield loaded
    loaded.close()


def test_the_encoder_input_and_token_limits() -> None:
    assert encoded_frames(300, short=False) == 3000  # a final: a full window whatever its length
    assert encoded_frames(50, short=True) == 1500 and encoded_frames(300, short=True) == 1500
    assert encoded_frames(501, short=True) == 2000 and encoded_frames(2100, short=True) == 3000
    assert encoded_frames(50, short=True) - 50 >= DRAFT_PAD_FRAMES  # never less silence than that
    assert draft_tokens(50) == draft_tokens(500) < draft_tokens(501) < draft_tokens(3000)


def test_drafts_read_as_well_as_full_windows_from_a_shorter_encode(engine: FasterWhisperEngine) -> None:
    audios = [decode_audio(clip(c).path) for c in ENGLISH]
    refs = [clip(c).text or "" for c in ENGLISH]
    with WhisperCalls(engine) as seen:
        drafts = [engine.transcribe(a, DRAFT) for a in audios]  # a draft transcribe takes the window path
        full = [engine.transcribe(a, PARTIAL) for a in audios]
    draft_encodes = seen.encoded[: len(audios)]
    assert draft_encodes == [encoded_frames(a.size // 160, short=True) for a in audios]
    assert all(frames < 3000 for frames in draft_encodes) and 3000 in seen.encoded[len(audios) :]
    draft_wer, full_wer = wer(refs, [t.text for t in drafts]), wer(refs, [t.text for t in full])
    print(f"draft WER {draft_wer:.3f} vs full windows {full_wer:.3f}; draft encoder input {draft_encodes}")
    assert draft_wer <= full_wer + DRAFT_MARGIN
    for transcript, audio in zip(drafts, audios, strict=True):
        words = transcript.words
        assert words and all(0 <= w.start <= w.end <= audio.size / 16000 + 0.01 for w in words)


def test_a_draft_writes_a_bounded_number_of_tokens(engine: FasterWhisperEngine) -> None:
    audio = decode_audio(clip("en_fw_jfk").path)[:8000]  # half a second: "And so"
    with WhisperCalls(engine) as seen:
        engine.decode_windows([WindowRequest(audio, DRAFT)])
        engine.decode_windows([WindowRequest(audio, PARTIAL)])
    draft_length, full_length = seen.max_lengths
    assert full_length == 448 and draft_length < 448
    assert draft_length - draft_tokens(50) <= 8  # the rest is the prompt: SOT, language, task


def test_a_drafts_text_does_not_depend_on_its_batch(engine: FasterWhisperEngine) -> None:
    short, long = (decode_audio(clip(c).path) for c in ("en_pocketsphinx_goforward", "en_fw_jfk"))
    alone = engine.decode_windows([WindowRequest(short, DRAFT)])[0]
    mixed = engine.decode_windows(
        [WindowRequest(long, DRAFT), WindowRequest(short, DRAFT), WindowRequest(long, PARTIAL)]
    )
    assert mixed[1].text == alone.text and "country" in mixed[0].text and "country" in mixed[2].text


FINAL = TranscribeOptions(language="en", word_timestamps=True)  # beam 5, fallback, the engine's VAD
SHORT_FINAL = dataclasses.replace(FINAL, short_window=True)


def test_a_short_window_final_is_encoded_short_but_decoded_whole(engine: FasterWhisperEngine) -> None:
    """No token limit and the full search: only the encoder's input is a draft's."""
    audios = [decode_audio(clip(c).path) for c in ENGLISH]
    refs = [clip(c).text or "" for c in ENGLISH]
    short, full = [], []
    for audio in audios:
        with WhisperCalls(engine) as seen:
            short.append(engine.transcribe(audio, SHORT_FINAL))
        assert seen.encoded[0] < 3000 and seen.max_lengths and set(seen.max_lengths) == {448}
        with WhisperCalls(engine) as seen:
            full.append(engine.transcribe(audio, FINAL))
        assert seen.encoded[0] == 3000
    short_wer, full_wer = wer(refs, [t.text for t in short]), wer(refs, [t.text for t in full])
    print(f"short-window final WER {short_wer:.3f} vs full windows {full_wer:.3f}")
    assert short_wer <= full_wer + DRAFT_MARGIN
    assert all(t.words for t in short)


def test_a_short_window_final_that_fails_the_thresholds_is_decoded_as_offline(
    engine: FasterWhisperEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its temperature fallback is the long-form loop's, over a full window (not the short window again)."""
    monkeypatch.setitem(engine.defaults, "log_prob_threshold", 0.0)  # every decode now looks wrong
    audio = decode_audio(clip("en_fw_jfk").path)
    with WhisperCalls(engine) as seen:
        transcript = engine.transcribe(audio, SHORT_FINAL)
    assert seen.encoded[0] < 3000 and 3000 in seen.encoded[1:], seen.encoded
    assert "country" in transcript.text.lower()
