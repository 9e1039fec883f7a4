"""The whisper.cpp engine on a tiny random-weight ggml Whisper file written by ``tests/helpers/tiny_ggml.py``.

pywhispercpp loads the file through whisper.cpp's real ``whisper_model_load`` and decodes real speech
with it; weights are random, so tests assert plumbing (paths, options, times, errors), not words.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest

from hearline.config import Settings
from hearline.engines.base import (
    SAMPLE_RATE,
    EngineError,
    ModelFilesMissing,
    TranscribeOptions,
    UnsupportedOption,
)
from hearline.engines.whisper_cpp import WhisperCppEngine, read_header
from hearline.models.resolve import WHISPER_CPP, ModelSpec, load_engine, resolve_model
from tests.engines.timeline import assert_timeline
from tests.helpers.tiny_ggml import GGML_MAGIC, build_ggml_whisper


@pytest.fixture(scope="module")
def ggml_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # somewhere no catalog knows about
    return build_ggml_whisper(tmp_path_factory.mktemp("elsewhere") / "my-own-whisper.bin")


@pytest.fixture(scope="module")
def engine(ggml_file: Path, settings: Settings) -> WhisperCppEngine:
    spec = resolve_model(str(ggml_file), settings)
    assert spec.engine == WHISPER_CPP
    return load_engine(spec, settings)


def test_absolute_path_to_an_uncatalogued_file_loads(engine: WhisperCppEngine, ggml_file: Path) -> None:
    assert engine.kind == "whisper-cpp"
    assert engine.path == ggml_file
    assert engine.header.multilingual
    assert engine.num_threads == 1
    caps = engine.capabilities
    assert caps.languages is None and caps.translate and caps.language_detection
    assert caps.native_streaming is False
    assert engine.memory_bytes() >= ggml_file.stat().st_size
    with pytest.raises(UnsupportedOption):
        engine.open_stream(TranscribeOptions())


def test_transcribe_with_language_and_prompt(engine: WhisperCppEngine, speech: np.ndarray) -> None:
    seen = []
    options = TranscribeOptions(language="en", prompt="Kennedy inaugural address")
    transcript = engine.transcribe(speech, options, on_segment=seen.append)
    duration = speech.size / SAMPLE_RATE
    assert transcript.duration == pytest.approx(duration)
    assert transcript.language == "en"
    assert transcript.segments, "the tiny model emits a segment on real speech"
    assert seen == transcript.segments  # segments stream out as whisper.cpp produces them
    assert [s.id for s in transcript.segments] == list(range(len(transcript.segments)))
    assert transcript.text == "".join(s.text for s in transcript.segments).strip()
    assert_timeline(transcript, duration)
    params = engine._model._params
    assert params.initial_prompt == "Kennedy inaugural address"
    assert params.language == "en"
    assert params.translate is False


def test_word_timestamps(engine: WhisperCppEngine, speech: np.ndarray) -> None:
    clip_audio = speech[: 5 * SAMPLE_RATE]
    transcript = engine.transcribe(clip_audio, TranscribeOptions(language="en", word_timestamps=True))
    assert transcript.words
    assert_timeline(transcript, 5.0)
    plain = engine.transcribe(clip_audio, TranscribeOptions(language="en"))
    assert plain.words == []


def test_beam_size_and_temperature_follow_each_request(engine: WhisperCppEngine, speech: np.ndarray) -> None:
    """pywhispercpp fixes only default params at load; every call sets its own sampling strategy."""
    import _pywhispercpp as pw

    strategy = pw.whisper_sampling_strategy
    audio = speech[: 5 * SAMPLE_RATE]
    greedy = engine.transcribe(audio, TranscribeOptions(language="en", beam_size=1))
    params = engine._model._params
    assert params.strategy == strategy.WHISPER_SAMPLING_GREEDY
    assert params.temperature == 0.0 and params.temperature_inc == pytest.approx(0.2)  # fallback schedule

    beam = engine.transcribe(audio, TranscribeOptions(language="en", beam_size=3))
    assert params.strategy == strategy.WHISPER_SAMPLING_BEAM_SEARCH and params.beam_search["beam_size"] == 3
    assert_timeline(beam, 5.0)
    # deterministic random weights: the beam reaches whisper.cpp and finds another hypothesis ...
    assert beam.text != greedy.text
    # ... and nothing of it sticks to the next greedy call
    assert engine.transcribe(audio, TranscribeOptions(language="en", beam_size=1)).text == greedy.text
    assert params.strategy == strategy.WHISPER_SAMPLING_GREEDY

    sampled = engine.transcribe(audio, TranscribeOptions(language="en", beam_size=1, temperature=0.6))
    assert params.temperature == pytest.approx(0.6) and params.temperature_inc == 0.0  # one fixed temperature
    assert params.greedy["best_of"] == 5
    assert_timeline(sampled, 5.0)


def test_models_yaml_beam_size_caps_the_request(ggml_file: Path, settings: Settings) -> None:
    import _pywhispercpp as pw

    spec = ModelSpec(name="capped", engine=WHISPER_CPP, path=ggml_file, options={"options": {"beam_size": 1}})
    capped = load_engine(spec, settings)
    assert capped.max_beam_size == 1
    assert capped.beam_width(TranscribeOptions(beam_size=5)) == 1
    capped.transcribe(np.zeros(SAMPLE_RATE, np.float32), TranscribeOptions(language="en"))  # default beam 5
    assert capped._model._params.strategy == pw.whisper_sampling_strategy.WHISPER_SAMPLING_GREEDY


def test_language_detection_and_translate(engine: WhisperCppEngine, speech: np.ndarray) -> None:
    detected = engine.transcribe(speech[: 4 * SAMPLE_RATE], TranscribeOptions())
    assert isinstance(detected.language, str) and 2 <= len(detected.language) <= 3
    assert engine._model._params.language == ""  # "" asks whisper.cpp to detect
    translated = engine.transcribe(speech[: 4 * SAMPLE_RATE], TranscribeOptions(language="de", task="translate"))
    assert translated.language == "de"
    assert engine._model._params.translate is True
    assert_timeline(translated, 4.0)


def test_english_only_model(tmp_path: Path, settings: Settings) -> None:
    path = build_ggml_whisper(tmp_path / "ggml-tiny.en.bin", english_only=True)
    engine = load_engine(resolve_model(str(path), settings), settings)
    assert engine.capabilities.languages == frozenset({"en"})
    assert engine.capabilities.translate is False
    with pytest.raises(UnsupportedOption, match="translate"):
        engine.transcribe(np.zeros(SAMPLE_RATE, np.float32), TranscribeOptions(task="translate"))
    with pytest.raises(UnsupportedOption, match="fr"):
        engine.transcribe(np.zeros(SAMPLE_RATE, np.float32), TranscribeOptions(language="fr"))
    silent = engine.transcribe(np.zeros(SAMPLE_RATE, np.float32), TranscribeOptions())
    assert silent.language == "en"
    assert_timeline(silent, 1.0)


def test_catalog_style_directory_with_named_file(ggml_file: Path, tmp_path: Path, settings: Settings) -> None:
    model_dir = tmp_path / "whisper-cpp-tiny"
    model_dir.mkdir()
    (model_dir / "ggml-tiny.bin").symlink_to(ggml_file)
    spec = ModelSpec(name="tiny-cpp", engine=WHISPER_CPP, path=model_dir, options={"file": "ggml-tiny.bin"})
    engine = load_engine(spec, settings)
    assert engine.path == model_dir / "ggml-tiny.bin"
    # a directory holding exactly one model file needs no name
    assert load_engine(ModelSpec(name="tiny-cpp", engine=WHISPER_CPP, path=model_dir), settings).path.name == (
        "ggml-tiny.bin"
    )


def test_missing_files_are_named_and_never_downloaded(tmp_path: Path, settings: Settings) -> None:
    missing = tmp_path / "ggml-base.en.bin"
    with pytest.raises(ModelFilesMissing, match=re.escape("ggml-base.en.bin")):
        load_engine(ModelSpec(name="base.en", engine=WHISPER_CPP, path=missing), settings)
    with pytest.raises(ModelFilesMissing, match=re.escape("ggml-small.bin")):
        load_engine(
            ModelSpec(name="small", engine=WHISPER_CPP, path=tmp_path, options={"file": "ggml-small.bin"}), settings
        )
    with pytest.raises(ModelFilesMissing, match="no ggml"):
        load_engine(ModelSpec(name="empty", engine=WHISPER_CPP, path=tmp_path), settings)
    with pytest.raises(ModelFilesMissing):
        load_engine(ModelSpec(name="base", engine=WHISPER_CPP, path=None), settings)
    assert list(tmp_path.iterdir()) == []  # nothing was fetched


def test_files_that_are_not_ggml_whisper_models_are_refused(tmp_path: Path, settings: Settings) -> None:
    """whisper.cpp aborts the process on some malformed files; the engine must refuse them first."""
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00" * 4096)
    with pytest.raises(EngineError, match="bad magic"):
        load_engine(resolve_model(str(garbage), settings), settings)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + b"\x00" * 4096)
    with pytest.raises(EngineError, match="GGUF"):
        load_engine(resolve_model(str(gguf), settings), settings)
    weird = tmp_path / "weird.bin"
    weird.write_bytes(struct.pack("<I11i", GGML_MAGIC, 51865, 1500, 16, 3, 1, 448, 16, 3, 1, 80, 1))
    with pytest.raises(EngineError, match="implausible"):
        read_header(weird)
    short = tmp_path / "short.bin"
    short.write_bytes(struct.pack("<I", GGML_MAGIC))
    with pytest.raises(EngineError, match="too short"):
        load_engine(resolve_model(str(short), settings), settings)
