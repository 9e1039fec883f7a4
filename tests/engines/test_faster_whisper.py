"""The faster-whisper engine on the real Whisper models of ``hearline[whisper]`` (base, tiny.en), plus a tiny
random-weight model in CTranslate2's real format (tests/helpers/tiny_whisper.py) for what only a model on disk of
our own making can show: local-path resolution, ``hearline.json`` defaults, incomplete directories, downloads.

Word-level bounds: WER of JFK's sentence, measured 0.0 (base and tiny.en) with
``python -m pytest tests/engines/test_faster_whisper.py``.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from hearline.audio.decode import decode_audio
from hearline.config import Settings
from hearline.engines.base import (
    SAMPLE_RATE,
    ModelFilesMissing,
    Segment,
    TranscribeOptions,
    Transcript,
    UnsupportedOption,
    join_text,
)
from hearline.engines.faster_whisper import FALLBACK_TEMPERATURES, FasterWhisperEngine, locate_model
from hearline.models.resolve import FASTER_WHISPER, ModelSpec, load_engine, resolve_model
from tests.helpers.corpus import clip, normalize, wer
from tests.helpers.server import running_server
from tests.helpers.tiny_whisper import HEARLINE_DEFAULTS

JFK = clip("en_fw_jfk")


def make_settings(model_dir: Path, **overrides: Any) -> Settings:
    return Settings.load(model_dir=model_dir, threads=1, max_concurrency_per_model=2, **overrides)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return decode_audio(JFK.path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fw-models")


def _load(name: str, model_dir: Path) -> FasterWhisperEngine:
    settings = make_settings(model_dir)
    loaded = load_engine(resolve_model(name, settings), settings)
    assert isinstance(loaded, FasterWhisperEngine)
    return loaded


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Iterator[FasterWhisperEngine]:
    """Real Whisper base (multilingual)."""
    loaded = _load("base", model_dir)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def english_engine(model_dir: Path) -> Iterator[FasterWhisperEngine]:
    """Real Whisper tiny.en."""
    loaded = _load("tiny.en", model_dir)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def random_engine(tiny_whisper_dir: Path, model_dir: Path) -> Iterator[FasterWhisperEngine]:
    loaded = _load(str(tiny_whisper_dir), model_dir)
    yield loaded
    loaded.close()


def check_transcript(transcript: Transcript, duration: float, streamed: list[Segment] | None = None) -> None:
    """Invariants every transcript must satisfy, whatever the words are."""
    assert transcript.duration == pytest.approx(duration, abs=0.01)
    assert transcript.segments, "speech gives segments"
    assert transcript.text == join_text([s.text for s in transcript.segments])
    if streamed is not None:
        assert [id(s) for s in streamed] == [id(s) for s in transcript.segments]
    previous_start = 0.0
    for index, segment in enumerate(transcript.segments):
        assert segment.id == index
        assert 0.0 <= segment.start <= segment.end <= duration + 1e-6
        assert segment.start >= previous_start
        previous_start = segment.start
        assert segment.tokens and all(isinstance(t, int) for t in segment.tokens)
        assert segment.seek >= 0
        assert segment.avg_logprob is not None and segment.avg_logprob <= 0.0
        assert segment.no_speech_prob is not None and 0.0 <= segment.no_speech_prob <= 1.0
        assert segment.compression_ratio is not None and segment.compression_ratio > 0.0
        assert segment.temperature is not None and 0.0 <= segment.temperature <= 1.0
        word_start = segment.start
        for word in segment.words:
            assert segment.start <= word.start <= word.end <= segment.end
            assert word.start >= word_start
            word_start = word.start
            assert word.probability is not None and 0.0 <= word.probability <= 1.0
            assert word.word


def test_local_path_resolves_and_loads_like_a_real_model(
    random_engine: FasterWhisperEngine, tiny_whisper_dir: Path, model_dir: Path
) -> None:
    engine = random_engine
    spec = resolve_model(str(tiny_whisper_dir), make_settings(model_dir))
    assert spec.engine == FASTER_WHISPER
    assert spec.path == tiny_whisper_dir
    assert engine.kind == "faster-whisper"
    assert engine.model_path == tiny_whisper_dir
    assert engine.device == "cpu"
    assert engine.compute_type == "int8"  # "default" on CPU
    assert engine.model.model.num_workers == 2  # max_concurrency_per_model: concurrent calls decode in parallel
    assert engine.defaults == HEARLINE_DEFAULTS["transcribe"]  # hearline.json next to the weights
    caps = engine.capabilities
    assert caps.translate is True
    assert caps.languages == engine.languages  # exactly the model's language tokens
    assert caps.language_detection is True
    assert caps.native_streaming is False
    assert {"en", "de", "zh", "haw"} <= engine.languages
    size = (tiny_whisper_dir / "model.bin").stat().st_size
    assert size < engine.memory_bytes() < 20 * size + 500 * 1024 * 1024


def test_transcribe_streams_consistent_segments_and_words(engine: FasterWhisperEngine, audio: np.ndarray) -> None:
    streamed: list[Segment] = []
    transcript = engine.transcribe(audio, TranscribeOptions(language="en", word_timestamps=True), streamed.append)
    check_transcript(transcript, JFK.duration, streamed)
    assert transcript.language == "en"
    assert transcript.language_probability == 1.0
    assert transcript.words, "word timestamps were requested"
    assert wer(JFK.text or "", transcript.text) <= 0.05, transcript.text
    assert [normalize(w.word) for w in transcript.words] == normalize(transcript.text).split()
    assert all(s.temperature in FALLBACK_TEMPERATURES for s in transcript.segments)


def test_language_detection_reports_a_model_language(engine: FasterWhisperEngine, audio: np.ndarray) -> None:
    transcript = engine.transcribe(audio, TranscribeOptions(language=None))
    check_transcript(transcript, JFK.duration)
    assert transcript.language == "en"
    assert transcript.language_probability is not None and 0.8 < transcript.language_probability <= 1.0
    assert all(not s.words for s in transcript.segments)  # no word timestamps unless asked


def test_options_reach_faster_whisper(
    engine: FasterWhisperEngine, audio: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    real = engine.model.transcribe

    def spy(audio_arg: np.ndarray, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(audio_arg, **kwargs)

    monkeypatch.setattr(engine.model, "transcribe", spy)
    options = TranscribeOptions(
        language="de",
        task="translate",
        prompt="Guten Tag.",
        temperature=0.4,
        beam_size=2,
        word_timestamps=False,
        vad_filter=True,
        hotwords="Hearline Whisper",
    )
    transcript = engine.transcribe(audio, options)
    assert calls == [
        {
            "language": "de",
            "task": "translate",
            "initial_prompt": "Guten Tag.",
            "temperature": 0.4,
            "beam_size": 2,
            "word_timestamps": False,
            "vad_filter": True,
            "hotwords": "Hearline Whisper",
        }
    ]
    check_transcript(transcript, JFK.duration)
    assert transcript.language == "de"
    assert {s.temperature for s in transcript.segments} == {0.4}  # one temperature, no fallback schedule

    calls.clear()
    engine.transcribe(audio[: SAMPLE_RATE * 3], TranscribeOptions(language="zh-Hans", temperature=0.0))
    assert calls[0]["temperature"] == FALLBACK_TEMPERATURES
    assert calls[0]["language"] == "zh"
    assert calls[0]["initial_prompt"] is None and calls[0]["hotwords"] is None


def test_translate_is_accepted_by_a_multilingual_model(engine: FasterWhisperEngine, audio: np.ndarray) -> None:
    streamed: list[Segment] = []
    transcript = engine.transcribe(audio, TranscribeOptions(task="translate", language="en"), streamed.append)
    check_transcript(transcript, JFK.duration, streamed)
    assert wer(JFK.text or "", transcript.text) <= 0.1, transcript.text  # English "into English": the same words


def test_unknown_language_is_rejected(engine: FasterWhisperEngine, audio: np.ndarray) -> None:
    with pytest.raises(UnsupportedOption, match="xx"):
        engine.transcribe(audio, TranscribeOptions(language="xx"))


def test_empty_audio_gives_an_empty_transcript(engine: FasterWhisperEngine) -> None:
    transcript = engine.transcribe(np.zeros(0, dtype=np.float32), TranscribeOptions())
    assert transcript.segments == [] and transcript.text == "" and transcript.duration == 0.0


def test_concurrent_calls_both_complete(engine: FasterWhisperEngine, audio: np.ndarray) -> None:
    with ThreadPoolExecutor(max_workers=2) as executor:
        futures = [executor.submit(engine.transcribe, audio, TranscribeOptions(language="en")) for _ in range(2)]
        results = [future.result(timeout=300) for future in futures]
    for transcript in results:
        check_transcript(transcript, JFK.duration)


def test_english_only_model_capabilities(english_engine: FasterWhisperEngine, audio: np.ndarray) -> None:
    caps = english_engine.capabilities
    assert caps.translate is False
    assert caps.languages == frozenset({"en"})
    assert caps.language_detection is True
    with pytest.raises(UnsupportedOption, match="translate"):
        english_engine.transcribe(audio, TranscribeOptions(task="translate"))
    with pytest.raises(UnsupportedOption, match="de"):
        english_engine.transcribe(audio, TranscribeOptions(language="de"))
    transcript = english_engine.transcribe(audio, TranscribeOptions(language=None, word_timestamps=True))
    check_transcript(transcript, JFK.duration)
    assert transcript.language == "en"
    assert wer(JFK.text or "", transcript.text) <= 0.05, transcript.text


def test_model_by_name_from_model_dir(tiny_whisper_dir: Path, tmp_path: Path, audio: np.ndarray) -> None:
    installed = tmp_path / "faster-whisper-tiny"
    shutil.copytree(tiny_whisper_dir, installed)
    settings = make_settings(tmp_path, offline=True)

    spec = resolve_model("tiny", settings)
    assert spec.engine == FASTER_WHISPER
    engine = load_engine(spec, settings)
    try:
        assert isinstance(engine, FasterWhisperEngine)
        assert engine.model_path == installed
        assert engine.name == "tiny"
        check_transcript(engine.transcribe(audio, TranscribeOptions(language="en")), JFK.duration)
    finally:
        engine.close()

    # The engine's own lookup (a spec without a path, as for a model the catalog does not know).
    assert locate_model("tiny", None, settings) == installed
    assert locate_model("faster-whisper-tiny", None, settings) == installed
    assert locate_model("Systran/faster-whisper-tiny", None, settings) == installed


@pytest.mark.parametrize("offline", [True, False])
def test_missing_model_offline_names_files_and_pull_command(tmp_path: Path, offline: bool) -> None:
    # offline=False still must not download: the suite runs with HF_HUB_OFFLINE=1 (tests/conftest.py).
    settings = make_settings(tmp_path / "empty-models", offline=offline)
    with pytest.raises(ModelFilesMissing) as raised:
        load_engine(ModelSpec(name="small", engine=FASTER_WHISPER), settings)
    message = str(raised.value)
    for expected in ("model.bin", "config.json", "tokenizer.json", "vocabulary.*", "hearline models pull small"):
        assert expected in message
    assert str(tmp_path / "empty-models" / "faster-whisper-small") in message
    assert not (tmp_path / "empty-models" / "faster-whisper-small").exists()  # nothing was fetched


class _RecordingHub:
    """A real HTTP server on loopback standing in for the Hugging Face hub: records paths, answers 404."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                recorder.paths.append(self.path)
                body = b'{"error": "Repository not found"}'
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    ("name", "repo", "offline"),
    [
        ("tiny", "Systran/faster-whisper-tiny", False),
        ("large-v3-turbo", "mobiuslabsgmbh/faster-whisper-large-v3-turbo", False),
        ("distil-large-v3.5", "distil-whisper/distil-large-v3.5-ct2", False),
        ("tiny", "Systran/faster-whisper-tiny", True),
    ],
)
def test_the_engine_only_looks_for_files_and_never_asks_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, repo: str, offline: bool
) -> None:
    """Downloads are the pool's, before a model loads (tests/models/test_pool.py): online or not, the engine's
    lookup reads the model dir and the Hugging Face cache and names the command that fetches the files."""
    import huggingface_hub.constants

    hub = _RecordingHub()
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        settings = make_settings(tmp_path / "models", offline=offline)
        with pytest.raises(ModelFilesMissing) as raised:
            locate_model(name, None, settings)
    finally:
        hub.close()
    message = str(raised.value)
    assert f"hearline models pull {name}" in message and f"Hugging Face cache ({repo})" in message
    assert hub.paths == []
    assert ("offline" in message) is offline


def test_incomplete_model_directory_names_missing_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model.bin").write_bytes(b"\0" * 16)
    settings = make_settings(tmp_path)
    spec = resolve_model(str(broken), settings)
    assert spec.engine == FASTER_WHISPER
    with pytest.raises(ModelFilesMissing, match=r"config\.json.*tokenizer\.json.*vocabulary"):
        load_engine(spec, settings)


def test_rest_transcription_with_word_timestamps(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "models", model="tiny.en")
    with running_server(settings) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        with JFK.path.open("rb") as fh:
            response = http.post(
                "/v1/audio/transcriptions",
                files={"file": (JFK.path.name, fh, "audio/wav")},
                data={
                    "model": "whisper-1",
                    "response_format": "verbose_json",
                    "timestamp_granularities[]": "word",
                    "language": "en",
                },
            )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["duration"] == pytest.approx(JFK.duration, abs=0.05)
        assert body["segments"], body
        assert body["words"], body
        for segment in body["segments"]:
            assert 0.0 <= segment["start"] <= segment["end"] <= JFK.duration + 1e-6
            assert isinstance(segment["tokens"], list) and segment["tokens"]
        for word in body["words"]:
            assert 0.0 <= word["start"] <= word["end"] <= JFK.duration + 1e-6
            assert isinstance(word["word"], str)
        assert body["text"] == join_text([s["text"] for s in body["segments"]])
        assert wer(JFK.text or "", body["text"]) <= 0.05, body["text"]
        assert [normalize(w["word"]) for w in body["words"]] == normalize(body["text"]).split()

        with JFK.path.open("rb") as fh:
            translated = http.post(
                "/v1/audio/translations",
                files={"file": (JFK.path.name, fh, "audio/wav")},
                data={"model": "whisper-1", "response_format": "json"},
            )
        assert translated.status_code == 400, translated.text  # tiny.en has no translate task: a clear error
        assert "translate" in translated.json()["error"]["message"]
