"""LocalAgreement-2 on real Whisper tiny.en and real speech, called as the live decoder calls it (no server).

What a partial carries beside its text: the timed words behind it (what Deepgram's interims send), on the
session clock, in the text's order, the committed ones a prefix of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hearline.audio.decode import decode_audio
from hearline.config import Settings
from hearline.engines.base import SAMPLE_RATE, Engine, TranscribeOptions
from hearline.live.local_agreement import LocalAgreementPolicy
from hearline.models.resolve import load_engine, resolve_model
from tests.helpers import clip, normalize

START_S = 5.0  # the utterance begins five seconds into the session
STEP_S = 0.5


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    settings = Settings.load(model_dir=Path(tmp_path_factory.mktemp("la-models")), threads=2)
    engine = load_engine(resolve_model("tiny.en", settings), settings)
    yield engine
    engine.close()


def test_partials_carry_their_timed_words_on_the_session_clock(tiny_en: Engine) -> None:
    audio = decode_audio(clip("en_fw_jfk").path)
    policy = LocalAgreementPolicy(tiny_en, TranscribeOptions(language="en"), partial_interval_s=STEP_S)
    policy.begin(int(START_S * SAMPLE_RATE))
    step = int(STEP_S * SAMPLE_RATE)
    results = []
    for offset in range(0, audio.size, step):
        result = policy.partial(audio[offset : offset + step])
        if result is not None and result.text:
            results.append((result, START_S + (offset + step) / SAMPLE_RATE))
    assert results and any(r.committed for r, _ in results)
    for result, fed_until in results:
        assert normalize(" ".join(w.word for w in result.words)) == normalize(result.text), result
        starts = [w.start for w in result.words]
        assert starts == sorted(starts)
        assert all(START_S - 0.05 <= w.start <= w.end <= fed_until + 0.05 for w in result.words), result.words
        committed = normalize(" ".join(w.word for w in result.words[: len(result.committed.split())]))
        assert committed == normalize(result.committed)
    assert "country" in normalize(results[-1][0].text)
