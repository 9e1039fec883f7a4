"""The sherpa-onnx engine on tiny random-weight models written in sherpa-onnx's real file format.

The models are built by ``tests/helpers/tiny_sherpa/`` (ONNX graphs with the metadata sherpa-onnx reads), so
everything from file discovery through sherpa-onnx's own feature extraction, decoding and result
objects runs for real.  Weights are random: tests assert plumbing, never words.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from hearline.config import Settings
from hearline.engines import segments
from hearline.engines import sherpa_onnx as engine_mod
from hearline.engines.base import (
    SAMPLE_RATE,
    EngineError,
    ModelFilesMissing,
    TranscribeOptions,
    UnsupportedOption,
    Word,
)
from hearline.models.resolve import SHERPA_ONNX, ModelSpec, load_engine, resolve_model
from tests.engines.timeline import assert_timeline
from tests.helpers.tiny_sherpa import (
    WHISPER_LANGUAGES,
    build_offline_transducer,
    build_paraformer,
    build_sense_voice,
    build_streaming_zipformer2,
    build_whisper,
)

# ----------------------------------------------------------------------------------------- sense_voice


def test_sense_voice_loads_from_a_path_and_transcribes(sense_voice_dir: Path, settings: Settings, speech) -> None:
    spec = resolve_model(str(sense_voice_dir), settings)
    assert spec.engine == SHERPA_ONNX
    engine = load_engine(spec, settings)
    assert engine.kind == "sherpa-onnx"
    assert engine.type == "sense_voice"
    caps = engine.capabilities
    assert caps.native_streaming is False
    assert caps.language_detection is True
    assert caps.languages == frozenset({"zh", "en", "ja", "ko", "yue"})
    assert engine.memory_bytes() > 0

    seen = []
    transcript = engine.transcribe(speech, TranscribeOptions(), on_segment=seen.append)
    duration = speech.size / SAMPLE_RATE
    assert transcript.duration == pytest.approx(duration)
    assert transcript.segments, "the tiny model emits tokens on real speech"
    assert seen == transcript.segments
    assert transcript.text == "".join(s.text for s in transcript.segments).strip()
    assert transcript.words, "SenseVoice token timestamps become words"
    # The model's language query says <|en|> for "auto": the detected language is reported.
    assert transcript.language == "en"
    assert_timeline(transcript, duration)
    with pytest.raises(UnsupportedOption):
        engine.open_stream(TranscribeOptions())


def test_sense_voice_language_binds_a_cached_recognizer(sense_voice_dir: Path, settings: Settings, speech) -> None:
    engine = load_engine(resolve_model(str(sense_voice_dir), settings), settings)
    short = speech[: 3 * SAMPLE_RATE]
    result = engine.transcribe(short, TranscribeOptions(language="zh"))
    assert result.language == "zh"
    first = engine._recognizers[("zh", "transcribe")]
    engine.transcribe(short, TranscribeOptions(language="zh-CN"))
    assert engine._recognizers[("zh", "transcribe")] is first  # reused, not rebuilt
    for language in ("ja", "ko", "yue"):
        engine.transcribe(short, TranscribeOptions(language=language))
    assert len(engine._recognizers) == engine_mod.RECOGNIZER_CACHE
    assert ("zh", "transcribe") not in engine._recognizers  # least recently used went first
    with pytest.raises(UnsupportedOption, match="fr"):
        engine.transcribe(short, TranscribeOptions(language="fr"))
    with pytest.raises(UnsupportedOption, match="translate"):
        engine.transcribe(short, TranscribeOptions(task="translate"))


def test_sense_voice_registry_entry_with_files_and_options(sense_voice_dir: Path, settings: Settings) -> None:
    """A seed-001 models.yaml entry (type, files, options) loads with its options applied."""
    spec = ModelSpec(
        name="sensevoice-small",
        engine=SHERPA_ONNX,
        path=sense_voice_dir,
        options={
            "type": "sense_voice",
            "files": {"model": "model.int8.onnx", "tokens": "tokens.txt"},
            "options": {"use_itn": False, "language": "ko"},
            "num_threads": 2,
        },
    )
    engine = load_engine(spec, Settings.load())
    assert engine.use_itn is False
    assert engine.default_language == "ko"
    assert engine.num_threads == 2
    assert list(engine._recognizers) == [("ko", "transcribe")]
    result = engine.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32), TranscribeOptions())
    assert result.language == "ko"
    # settings.threads wins over the registry's num_threads
    assert load_engine(spec, settings).num_threads == 1


def test_long_audio_is_decoded_in_pieces_with_absolute_times(sense_voice_dir: Path, settings: Settings, speech):
    engine = load_engine(resolve_model(str(sense_voice_dir), settings), settings)
    long = np.concatenate([speech, speech, speech])  # 33 s: more than one piece
    pieces = list(segments.split_long(long))
    assert len(pieces) >= 2
    assert all(p.size <= segments.MAX_PIECE_S * SAMPLE_RATE for _, p in pieces)
    assert sum(p.size for _, p in pieces) == long.size
    transcript = engine.transcribe(long, TranscribeOptions())
    duration = long.size / SAMPLE_RATE
    assert_timeline(transcript, duration)
    assert transcript.segments[-1].end > pieces[-1][0] / SAMPLE_RATE, "later pieces' times are offset"
    assert [s.id for s in transcript.segments] == list(range(len(transcript.segments)))


def test_missing_files_are_named(tmp_path: Path, settings: Settings) -> None:
    model_dir = build_sense_voice(tmp_path / "sv")
    (model_dir / "tokens.txt").unlink()
    spec = ModelSpec(name="sv", engine=SHERPA_ONNX, path=model_dir, options={"type": "sense_voice"})
    with pytest.raises(ModelFilesMissing, match=re.escape("tokens.txt")):
        load_engine(spec, settings)

    spec = ModelSpec(
        name="sv",
        engine=SHERPA_ONNX,
        path=model_dir,
        options={"type": "whisper", "files": {"encoder": "tiny-encoder.int8.onnx", "tokens": "tokens.txt"}},
    )
    with pytest.raises(ModelFilesMissing) as info:
        load_engine(spec, settings)
    message = str(info.value)
    for expected in ("tiny-encoder.int8.onnx", "decoder", "tokens.txt"):
        assert expected in message

    with pytest.raises(ModelFilesMissing, match="does not exist"):
        load_engine(ModelSpec(name="gone", engine=SHERPA_ONNX, path=tmp_path / "gone"), settings)
    with pytest.raises(ModelFilesMissing, match="no sherpa-onnx model recognised"):
        load_engine(ModelSpec(name="empty", engine=SHERPA_ONNX, path=tmp_path), settings)


def test_model_without_required_metadata_is_an_error_not_an_exit(tmp_path: Path, settings: Settings) -> None:
    """sherpa-onnx exits the process on a missing metadata key; the engine must refuse first."""
    model_dir = build_sense_voice(tmp_path / "sv", omit_meta=("lfr_window_size",))
    with pytest.raises(EngineError, match="lfr_window_size"):
        load_engine(ModelSpec(name="sv", engine=SHERPA_ONNX, path=model_dir), settings)
    model_dir = build_sense_voice(tmp_path / "sv2", omit_meta=("lang_yue",))
    with pytest.raises(EngineError, match="lang_yue"):
        load_engine(ModelSpec(name="sv", engine=SHERPA_ONNX, path=model_dir), settings)

    streaming = build_streaming_zipformer2(tmp_path / "zf")
    encoder = onnx.load(str(streaming / "encoder.onnx"))
    kept = [p for p in encoder.metadata_props if p.key != "left_context_len"]
    del encoder.metadata_props[:]
    encoder.metadata_props.extend(kept)
    onnx.save(encoder, str(streaming / "encoder.onnx"))
    with pytest.raises(EngineError, match="left_context_len"):
        load_engine(ModelSpec(name="zf", engine=SHERPA_ONNX, path=streaming), settings)


def test_unknown_type_is_rejected(sense_voice_dir: Path, settings: Settings) -> None:
    spec = ModelSpec(name="x", engine=SHERPA_ONNX, path=sense_voice_dir, options={"type": "nemo_rnnt"})
    with pytest.raises(EngineError, match="nemo_rnnt"):
        load_engine(spec, settings)


def test_metadata_reader_matches_onnx(sense_voice_dir: Path, zipformer_dir: Path) -> None:
    for path in (sense_voice_dir / "model.int8.onnx", zipformer_dir / "encoder.onnx"):
        model = onnx.load(str(path))
        assert engine_mod.onnx_metadata(path) == {p.key: p.value for p in model.metadata_props}
        assert engine_mod.onnx_output_names(path) == [o.name for o in model.graph.output]


# ------------------------------------------------------------------------- paraformer, offline transducer


def test_paraformer_inferred_and_transcribes(tmp_path: Path, settings: Settings, speech) -> None:
    model_dir = build_paraformer(tmp_path / "sherpa-onnx-paraformer-zh-tiny")
    engine = load_engine(resolve_model(str(model_dir), settings), settings)
    assert engine.type == "paraformer"  # model.int8.onnx without SenseVoice's metadata
    assert engine.files["paraformer"] == model_dir / "model.int8.onnx"
    assert engine.capabilities.native_streaming is False
    assert engine.capabilities.word_timestamps is False  # an export without CIF peaks has no token times
    transcript = engine.transcribe(speech, TranscribeOptions(language="zh"))
    assert transcript.segments
    assert transcript.language == "zh"
    assert transcript.words == []
    assert [(s.start, s.end) for s in transcript.segments] == [(0.0, round(speech.size / SAMPLE_RATE, 3))]
    assert_timeline(transcript, speech.size / SAMPLE_RATE)
    # seed 001 names the file role "paraformer"
    spec = ModelSpec(
        name="paraformer-zh",
        engine=SHERPA_ONNX,
        path=model_dir,
        options={"type": "paraformer", "files": {"paraformer": "model.int8.onnx", "tokens": "tokens.txt"}},
    )
    assert load_engine(spec, settings).type == "paraformer"


def test_paraformer_with_timestamps_gives_words(tmp_path: Path, settings: Settings, speech) -> None:
    """An export with us_alphas/us_cif_peak (FunASR timestamp models): sherpa-onnx's token times become words."""
    model_dir = build_paraformer(tmp_path / "sherpa-onnx-paraformer-zh-tiny-ts", timestamps=True)
    assert engine_mod.onnx_output_names(model_dir / "model.int8.onnx")[-2:] == ["us_alphas", "us_cif_peak"]
    engine = load_engine(resolve_model(str(model_dir), settings), settings)
    assert engine.type == "paraformer" and engine.capabilities.word_timestamps is True
    duration = speech.size / SAMPLE_RATE
    transcript = engine.transcribe(speech, TranscribeOptions(language="zh"))
    words = transcript.words
    assert len(words) > 10
    assert [w.start for w in words[:4]] == pytest.approx([0.0, 0.18, 0.36, 0.54])  # the model's peaks
    assert all(w.word and "@@" not in w.word for w in words)
    assert_timeline(transcript, duration)
    assert transcript.text == "".join(s.text for s in transcript.segments).strip()


def test_paraformer_pieces_and_mixed_script_joining() -> None:
    times = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    words = engine_mod.paraformer_words(["你", "好", "hel@@", "lo", "the", "</s>"], times, 2.0)
    assert [(w.word, w.start, w.end) for w in words] == [
        ("你", 0.0, 0.2), ("好", 0.2, 0.4), ("hello", 0.4, 0.8), ("the", 0.8, 1.8)
    ]  # fmt: skip
    assert segments.join_words([w.word for w in words]) == "你好 hello the"
    assert segments.join_words(["we", "go"]) == "we go" and segments.join_words(["我", "们"]) == "我们"


def test_offline_transducer_inferred_and_transcribes(tmp_path: Path, settings: Settings, speech) -> None:
    model_dir = build_offline_transducer(tmp_path / "sherpa-onnx-zipformer-en-tiny")
    engine = load_engine(resolve_model(str(model_dir), settings), settings)
    assert engine.type == "transducer"
    assert engine.files["encoder"].name == "encoder-epoch-99-avg-1.int8.onnx"  # int8 preferred
    assert engine.capabilities.native_streaming is False
    with pytest.raises(UnsupportedOption):
        engine.open_stream(TranscribeOptions())
    transcript = engine.transcribe(speech, TranscribeOptions())
    assert transcript.words
    assert all(isinstance(w.start, float) for w in transcript.words)
    assert_timeline(transcript, speech.size / SAMPLE_RATE)


# -------------------------------------------------------------------------------------------- whisper


def test_whisper_onnx_languages_tasks_and_cache(tmp_path: Path, settings: Settings, speech) -> None:
    model_dir = build_whisper(tmp_path / "sherpa-onnx-whisper-tiny", prefix="tiny")
    # no type given: encoder + decoder without a joiner is a Whisper export; files use the size prefix
    engine = load_engine(ModelSpec(name="whisper-tiny", engine=SHERPA_ONNX, path=model_dir), settings)
    assert engine.type == "whisper"
    assert engine.files["tokens"].name == "tiny-tokens.txt"
    caps = engine.capabilities
    assert caps.languages == frozenset(WHISPER_LANGUAGES)  # from the model's metadata
    assert caps.translate and caps.language_detection and not caps.native_streaming

    short = speech[: 4 * SAMPLE_RATE]
    detected = engine.transcribe(short, TranscribeOptions())
    assert detected.language in WHISPER_LANGUAGES
    assert detected.segments
    assert_timeline(detected, 4.0)
    german = engine.transcribe(short, TranscribeOptions(language="de"))
    assert german.language == "de"
    engine.transcribe(short, TranscribeOptions(language="de", task="translate"))
    assert {("de", "transcribe"), ("de", "translate")} <= set(engine._recognizers)
    # sherpa-onnx would exit the process on a language the model lacks: refused here instead
    with pytest.raises(UnsupportedOption, match="fr"):
        engine.transcribe(short, TranscribeOptions(language="fr"))


def test_whisper_onnx_segment_times_come_from_the_model(tmp_path: Path, settings: Settings, speech) -> None:
    """A plain export has no cross-attention output: Whisper's timestamp tokens give segment times, no words."""
    model_dir = build_whisper(tmp_path / "sherpa-onnx-whisper-tiny", prefix="tiny")
    engine = load_engine(ModelSpec(name="whisper-tiny", engine=SHERPA_ONNX, path=model_dir), settings)
    assert engine._whisper_timing == {"enable_segment_timestamps": True}
    assert engine.capabilities.word_timestamps is False
    short = speech[: 8 * SAMPLE_RATE]
    transcript = engine.transcribe(short, TranscribeOptions(language="en"))
    assert transcript.segments and transcript.words == []
    assert transcript.segments[0].start > 0.0  # where the model put it, not the start of the piece
    assert_timeline(transcript, 8.0)

    spec = ModelSpec(
        name="whisper-tiny", engine=SHERPA_ONNX, path=model_dir, options={"options": {"segment_timestamps": False}}
    )
    plain = load_engine(spec, settings)
    assert plain._whisper_timing == {}
    untimed = plain.transcribe(short, TranscribeOptions(language="en"))
    assert [(s.start, s.end) for s in untimed.segments] == [(0.0, 8.0)]  # one segment per decoded piece


def test_whisper_onnx_with_attention_gives_words(tmp_path: Path, settings: Settings, speech) -> None:
    """A decoder exported with cross_attention_weights: sherpa-onnx's DTW token times become words."""
    model_dir = build_whisper(tmp_path / "sherpa-onnx-whisper-tiny-attn", prefix="tiny", attention=True)
    assert "cross_attention_weights" in engine_mod.onnx_output_names(model_dir / "tiny-decoder.onnx")
    engine = load_engine(ModelSpec(name="whisper-tiny-attn", engine=SHERPA_ONNX, path=model_dir), settings)
    assert engine._whisper_timing == {"enable_token_timestamps": True}
    assert engine.capabilities.word_timestamps is True
    short = speech[: 8 * SAMPLE_RATE]
    transcript = engine.transcribe(short, TranscribeOptions(language="en"))
    assert len(transcript.words) > 3
    assert any(w.end < w.start + 1.0 for w in transcript.words)  # ends from the token durations
    assert_timeline(transcript, 8.0)


def test_model_segments_without_durations_run_to_the_next_start() -> None:
    result = type("Result", (), {})()
    result.tokens, result.timestamps = [], []
    result.segment_texts = [" one", " two", " three"]
    result.segment_timestamps = [0.5, 3.0, 2.0]  # a confused model: the third starts before the second
    result.segment_durations = [0.0, 1.0, 0.0]
    found = engine_mod.result_segments(result, 20.0, 10.0, first_id=4)
    assert [(s.id, s.start, s.end, s.text) for s in found] == [
        (4, 20.5, 23.0, " one"), (5, 23.0, 24.0, " two"), (6, 23.0, 30.0, " three")
    ]  # fmt: skip
    assert engine_mod.tokens_to_words([" a", "b", " c"], [0.0, 0.1, 0.5], 2.0, [0.1, 0.2, 0.3]) == [
        Word("ab", 0.0, 0.3), Word("c", 0.5, 0.8)
    ]  # fmt: skip


def test_english_only_whisper_onnx(tmp_path: Path, settings: Settings) -> None:
    model_dir = build_whisper(tmp_path / "sherpa-onnx-whisper-tiny.en", prefix="tiny.en", multilingual=False)
    spec = ModelSpec(
        name="whisper-tiny.en",
        engine=SHERPA_ONNX,
        path=model_dir,
        options={
            "type": "whisper",
            "files": {
                "encoder": "tiny.en-encoder.onnx",
                "decoder": "tiny.en-decoder.onnx",
                "tokens": "tiny.en-tokens.txt",
            },
        },
    )
    engine = load_engine(spec, settings)
    assert engine.capabilities.languages == frozenset({"en"})
    assert engine.capabilities.translate is False
    with pytest.raises(UnsupportedOption, match="translate"):
        engine.transcribe(np.zeros(SAMPLE_RATE, np.float32), TranscribeOptions(task="translate"))
    result = engine.transcribe(np.zeros(SAMPLE_RATE, np.float32), TranscribeOptions())
    assert result.duration == pytest.approx(1.0)
