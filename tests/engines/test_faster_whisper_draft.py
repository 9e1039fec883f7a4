"""Draft windows (``TranscribeOptions.draft``, live partial passes) on real Whisper base and real speech.

A draft is encoded with its audio and ten seconds of silence instead of a 30 s window and may write a bounded
number of tokens; a final is neither.  Measured with ``python -m pytest tests/engines/test_faster_whisper_draft.py
-s`` (printed): draft WER 0.000 vs full windows 0.000 on these clips; ``python bench/whisper_draft.py`` over every
English reference clip: 0.084 vs 0.087 (base), 0.080 vs 0.064 (tiny.en) at 0.59 and 0.63 of the time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from hearline.audio.decode import decode_audio
from hearline.config import Settings
from hearline.engines.base import TranscribeOptions, WindowRequest
from hearline.engines.faster_whisper import FasterWhisperEngine
from hearline.engines.faster_whisper.draft import DRAFT_PAD_FRAMES, draft_tokens, encoded_frames
from hearline.models.resolve import load_engine, resolve_model
from tests.helpers.corpus import clip, wer

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


class _Recorder:
    """Stands between faster-whisper and its CTranslate2 model to see what each call was given."""

    def __init__(self, engine: FasterWhisperEngine) -> None:
        self.engine, self.real = engine, engine.model.model
        self.encoded: list[int] = []  # input frames of each encode
        self.max_lengths: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def encode(self, features: Any, *args: Any, **kwargs: Any) -> Any:
        self.encoded.append(np.asarray(features).shape[-1])
        return self.real.encode(features, *args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        self.max_lengths.append(kwargs["max_length"])
        return self.real.generate(*args, **kwargs)

    def __enter__(self) -> _Recorder:
        self.engine.model.model = self
        return self

    def __exit__(self, *_: object) -> None:
        self.engine.model.model = self.real


def test_the_encoder_input_and_token_limits() -> None:
    assert encoded_frames(300, draft=False) == 3000  # a final: a full window whatever its length
    assert encoded_frames(50, draft=True) == 1500 and encoded_frames(300, draft=True) == 1500
    assert encoded_frames(501, draft=True) == 2000 and encoded_frames(2100, draft=True) == 3000
    assert encoded_frames(50, draft=True) - 50 >= DRAFT_PAD_FRAMES  # never less silence than that
    assert draft_tokens(50) == draft_tokens(500) < draft_tokens(501) < draft_tokens(3000)


def test_drafts_read_as_well_as_full_windows_from_a_shorter_encode(engine: FasterWhisperEngine) -> None:
    audios = [decode_audio(clip(c).path) for c in ENGLISH]
    refs = [clip(c).text or "" for c in ENGLISH]
    with _Recorder(engine) as seen:
        drafts = [engine.transcribe(a, DRAFT) for a in audios]  # a draft transcribe takes the window path
        full = [engine.transcribe(a, PARTIAL) for a in audios]
    draft_encodes = seen.encoded[: len(audios)]
    assert draft_encodes == [encoded_frames(a.size // 160, draft=True) for a in audios]
    assert all(frames < 3000 for frames in draft_encodes) and 3000 in seen.encoded[len(audios) :]
    draft_wer, full_wer = wer(refs, [t.text for t in drafts]), wer(refs, [t.text for t in full])
    print(f"draft WER {draft_wer:.3f} vs full windows {full_wer:.3f}; draft encoder input {draft_encodes}")
    assert draft_wer <= full_wer + DRAFT_MARGIN
    for transcript, audio in zip(drafts, audios, strict=True):
        words = transcript.words
        assert words and all(0 <= w.start <= w.end <= audio.size / 16000 + 0.01 for w in words)


def test_a_draft_writes_a_bounded_number_of_tokens(engine: FasterWhisperEngine) -> None:
    audio = decode_audio(clip("en_fw_jfk").path)[:8000]  # half a second: "And so"
    with _Recorder(engine) as seen:
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
