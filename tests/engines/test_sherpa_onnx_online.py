"""sherpa-onnx's streaming (online) transducer: native partials, the live pipeline, refused options.

Tiny random-weight models in sherpa-onnx's real file format (``tests/helpers/tiny_sherpa``): tests assert
plumbing, never words.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from hearline.config import Settings
from hearline.engines.base import (
    SAMPLE_RATE,
    EngineError,
    TranscribeOptions,
)
from hearline.live.session import Final, LiveOptions, LiveSession, Partial
from hearline.models.pool import ModelPool
from hearline.models.resolve import SHERPA_ONNX, ModelSpec, load_engine, resolve_model
from tests.engines.timeline import assert_timeline
from tests.helpers.polling import until

# ----------------------------------------------------------------------- streaming (online) transducer


def test_streaming_transducer_partials_and_finish(zipformer_dir: Path, settings: Settings, speech) -> None:
    spec = resolve_model(str(zipformer_dir), settings)
    engine = load_engine(spec, settings)
    assert engine.type == "online_transducer"
    assert engine.capabilities.native_streaming is True
    assert engine.capabilities.word_timestamps is True

    stream = engine.open_stream(TranscribeOptions())
    assert stream.partial() == ""
    partials: list[str] = []
    chunk = SAMPLE_RATE // 10
    for start in range(0, speech.size, chunk):
        stream.accept(speech[start : start + chunk])
        partials.append(stream.partial())
    growing = [p for p in partials if p]
    assert growing, "partials appear while audio is still arriving"
    assert partials.index(growing[0]) < len(partials) // 2
    for earlier, later in itertools.pairwise(growing):
        assert later.startswith(earlier)  # greedy transducer hypotheses only grow
    final = stream.finish()
    duration = speech.size / SAMPLE_RATE
    assert final.duration == pytest.approx(duration)
    assert final.text.startswith(growing[-1].split()[0])
    assert final.words
    assert_timeline(final, duration)

    # The stream is ready for the next utterance, with times relative to its own start.
    assert stream.partial() == ""
    second = speech[: 2 * SAMPLE_RATE]
    stream.accept(second)
    again = stream.finish()
    assert again.duration == pytest.approx(2.0)
    assert_timeline(again, 2.0)
    assert stream.finish().text == ""  # an empty utterance is fine
    stream.close()


def test_live_partials_never_skip_audio_of_a_single_pass_stream(
    zipformer_dir: Path, settings: Settings, speech
) -> None:
    """The transducer's final is its own decoding state: partial work that falls behind must not skip."""
    from hearline.live.policies import NativePolicy

    engine = load_engine(resolve_model(str(zipformer_dir), settings), settings)
    policy = NativePolicy(engine, TranscribeOptions())
    policy.begin(0)
    policy.partial(speech[:SAMPLE_RATE])
    assert policy.can_skip is False
    policy.close()


def test_streaming_transducer_offline_transcribe(zipformer_dir: Path, settings: Settings, speech) -> None:
    engine = load_engine(resolve_model(str(zipformer_dir), settings), settings)
    transcript = engine.transcribe(speech, TranscribeOptions())
    assert transcript.segments
    assert_timeline(transcript, speech.size / SAMPLE_RATE)


def test_seed_transducer_type_on_a_streaming_model_uses_the_online_recognizer(
    zipformer_dir: Path, settings: Settings
) -> None:
    spec = ModelSpec(
        name="zipformer",
        engine=SHERPA_ONNX,
        path=zipformer_dir,
        options={
            "type": "transducer",
            "files": {
                "encoder": "encoder.onnx",
                "decoder": "decoder.onnx",
                "joiner": "joiner.onnx",
                "tokens": "tokens.txt",
            },
        },
    )
    engine = load_engine(spec, settings)
    assert engine.type == "online_transducer"
    assert engine.capabilities.native_streaming is True


async def test_live_session_uses_native_streaming_partials(zipformer_dir: Path, speech, tmp_path: Path) -> None:
    """The live pipeline drives the streaming transducer through open_stream(): partials, then a final.

    VAD is off so the utterance stays open until flush(): partials then depend on nothing but the
    engine answering, not on how fast the test pushes audio.
    """
    pool = ModelPool(Settings.load(threads=1, model_dir=tmp_path / "models", allow_model_paths=[zipformer_dir]))
    session = LiveSession(pool, str(zipformer_dir), LiveOptions(language="en", vad=False))
    events: list[object] = []
    try:
        await session.start()
        assert session.engine is not None and session.engine.capabilities.native_streaming

        async def read() -> None:
            async for event in session.events():
                events.append(event)

        reader = asyncio.create_task(read())
        chunk = SAMPLE_RATE // 5
        half = speech.size // 2
        for start in range(0, half, chunk):
            await session.push(speech[start : min(start + chunk, half)], SAMPLE_RATE)
        await until(lambda: any(isinstance(e, Partial) for e in events), 60, "a partial")
        for start in range(half, speech.size, chunk):
            await session.push(speech[start : start + chunk], SAMPLE_RATE)
        await session.flush()
        await reader
    finally:
        await session.close()
        await pool.close()
    partials = [e for e in events if isinstance(e, Partial)]
    finals = [e for e in events if isinstance(e, Final)]
    assert partials, "native streaming yields partials while the utterance is open"
    assert len(finals) == 1 and finals[0].text
    assert events.index(partials[0]) < events.index(finals[0])
    assert 0.0 <= finals[0].start <= finals[0].end <= speech.size / SAMPLE_RATE + 1e-3
    assert finals[0].words


def test_options_that_would_make_sherpa_onnx_exit_are_refused(
    sense_voice_dir: Path, zipformer_dir: Path, settings: Settings, speech
) -> None:
    """sherpa-onnx calls exit() on an unknown decoding method or Whisper language: the engine refuses first."""
    bad_method = ModelSpec(
        name="sv", engine=SHERPA_ONNX, path=sense_voice_dir, options={"decoding_method": "modified_beam_search"}
    )
    with pytest.raises(EngineError, match="modified_beam_search"):
        load_engine(bad_method, settings)
    bad_language = ModelSpec(name="sv", engine=SHERPA_ONNX, path=sense_voice_dir, options={"language": "fr"})
    with pytest.raises(EngineError, match="fr"):
        load_engine(bad_language, settings)
    # transducers do have beam search
    beam = ModelSpec(
        name="zf", engine=SHERPA_ONNX, path=zipformer_dir, options={"decoding_method": "modified_beam_search"}
    )
    engine = load_engine(beam, settings)
    stream = engine.open_stream(TranscribeOptions())
    stream.accept(speech[: 3 * SAMPLE_RATE])
    assert_timeline(stream.finish(), 3.0)
