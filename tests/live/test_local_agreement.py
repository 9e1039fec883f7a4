"""LocalAgreement-2 on real Whisper tiny.en and real speech, called as the live decoder calls it (no server).

What a partial carries beside its text: the timed words behind it (what Deepgram's interims send), on the
session clock, in the text's order, the committed ones a prefix of them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hearline.audio.decode import decode_audio
from hearline.config import Settings
from hearline.engines.base import SAMPLE_RATE, Engine, TranscribeOptions
from hearline.live.local_agreement import LocalAgreementPolicy
from hearline.models.resolve import load_engine, resolve_model
from tests.helpers.corpus import clip, normalize

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


class _ScriptedEngine:
    """A stand-in re-decoding engine for the LocalAgreement logic alone (no model involved).

    The audio carries its own sample index (value = index * 1e-7), so the engine knows which absolute
    stretch of a fixed word script a window covers: words wholly inside are returned correctly, a word
    cut by the window's end comes back misspelt (an unstable tail, as a real decoder gives).
    """

    name = "scripted"
    kind = "test"

    def __init__(self, words: int) -> None:
        from hearline.engines.base import Capabilities

        self.capabilities = Capabilities(native_streaming=False)
        self.script = [(f"w{i}", i * 0.5 + 0.05, i * 0.5 + 0.45) for i in range(words)]
        self.windows: list[float] = []
        self.prompts: list[str | None] = []

    def transcribe(self, audio, options, on_segment=None):  # type: ignore[no-untyped-def]
        from hearline.engines.base import Segment, Transcript, Word

        first = round(float(audio[0]) * 1e7) / 16000
        last = first + audio.size / 16000
        self.windows.append(audio.size / 16000)
        self.prompts.append(options.prompt)
        words = []
        for text, start, end in self.script:
            if start >= first and end <= last:
                words.append(Word(text, start - first, end - first))
            elif start >= first and start < last:
                words.append(Word(text + "x", start - first, last - first))
        segment = Segment(0, 0.0, audio.size / 16000, " ".join(w.word for w in words), words)
        return Transcript(segment.text, [segment], "en", None, audio.size / 16000)


def test_local_agreement_commits_trims_and_finalises() -> None:
    from hearline.live.local_agreement import LocalAgreementPolicy

    seconds = 40
    engine = _ScriptedEngine(words=seconds * 2)
    policy = LocalAgreementPolicy(engine, TranscribeOptions(language="en"), partial_interval_s=0.5)  # type: ignore[arg-type]
    audio = (np.arange(seconds * 16000, dtype=np.float64) * 1e-7).astype(np.float32)
    policy.begin(0)
    committed: list[str] = []
    step = 8000
    for i in range(0, audio.size - step, step):
        result = policy.partial(audio[i : i + step])
        assert result is not None and result.text.startswith(result.committed)
        committed.append(result.committed)
    assert all(b.startswith(a) for a, b in itertools.pairwise(committed))
    assert len(committed[-1].split()) > 60  # it commits as it goes
    assert max(engine.windows) <= 15.0  # the re-decoded window is trimmed at committed words
    assert any(p and "w3" in p for p in engine.prompts)  # trimmed committed text becomes the prompt
    policy.hold(audio[audio.size - step :])
    final = policy.final_job(audio, 0)()  # a fresh pass over the whole utterance, not the trimmed window
    expected = [w for w, _, _ in engine.script]
    assert final.text.split() == expected
    assert [w.word for w in final.words] == expected
    for word, (_, start, end) in zip(final.words, engine.script, strict=True):
        assert word.start == pytest.approx(start, abs=0.01) and word.end == pytest.approx(end, abs=0.01)
