"""The packaged catalog: seed 000's table exactly, sherpa-onnx release models, name resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearline.config import Settings
from hearline.models.catalog import SHERPA_TYPES, candidates, load_catalog
from hearline.models.download import ModelNotInstalled
from hearline.models.resolve import UnknownModel, load_engine, resolve_model

# seed 000, "内置模型列表": model -> (repoFile, size in bytes, sha1)
SEED_000 = {
    "tiny": ("ggml-tiny.bin", 77691713, "bd577a113a864445d4c299885e0cb97d4ba92b5f"),
    "tiny.en": ("ggml-tiny.en.bin", 77704715, "c78c86eb1a8faa21b369bcd33207cc90d64ae9df"),
    "base": ("ggml-base.bin", 147951465, "465707469ff3a37a2b9b8d8f89f2f99de7299dac"),
    "base.en": ("ggml-base.en.bin", 147964211, "137c40403d78fd54d454da0f9bd998f78703390c"),
    "sensevoice.small": ("gguf-fp16-sense-voice-small.bin", 469406560, "8176595ec830f32f385ca6d28ad86008db88de32"),
    "small": ("ggml-small.bin", 487601967, "55356645c2b361a969dfd0ef2c5a50d530afd8d5"),
    "small.en": ("ggml-small.en.bin", 487614201, "db8a495a91d927739e50b3fc1cc4c6b8f6c2d022"),
    "medium": ("ggml-medium.bin", 1533763059, "fd9727b6e1217c2f614f9b698455c4ffd82463b4"),
    "ggml-medium-q5_0": ("ggml-medium-q5_0.bin", 539212467, "7718d4c1ec62ca96998f058114db98236937490e"),
    "medium.en": ("ggml-medium.en.bin", 1533774781, "8c30f0e44ce9560643ebd10bbe50cd20eafd3723"),
    "large-v3-turbo-q5_0": ("ggml-large-v3-turbo-q5_0.bin", 574041195, "e050f7970618a659205450ad97eb95a18d69c9ee"),
    "large-v2": ("ggml-large-v2.bin", 3094623691, "0f4c8e34f21cf1a914c59d8b3ce882345ad349d6"),
    "large-v3": ("ggml-large-v3.bin", 3095033483, "ad82bf6a9043ceed055076d0fd39f5f186ff8062"),
    "ggml-large-v2-q5_0": ("ggml-large-v2-q5_0.bin", 1080732091, "00e39f2196344e901b3a2bd5814807a769bd1630"),
}


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings.load(model_dir=tmp_path / "models", models_file=tmp_path / "models.yaml")


def test_every_seed_000_model_is_in_the_catalog_with_its_checksum() -> None:
    by_file = {e.repo_file: e for e in load_catalog().values() if e.repo_file}
    for model, (repo_file, size, sha1) in SEED_000.items():
        entry = by_file[repo_file]
        assert (entry.size, entry.sha1) == (size, sha1), model
        assert entry.engine == "whisper-cpp" and entry.download_kind == "file"
        assert entry.memory_mb and entry.memory_mb > 0
    tiny = load_catalog()["ggml-tiny"]
    assert "realtime" in tiny.tags and tiny.languages is None
    assert load_catalog()["ggml-tiny.en"].languages == ("en",)


def test_sherpa_onnx_models_have_release_archives_and_required_files() -> None:
    sherpa = {name: e for name, e in load_catalog().items() if e.engine == "sherpa-onnx"}
    types = {e.type for e in sherpa.values()}
    assert {"sense_voice", "paraformer", "whisper", "online_transducer"} <= types
    for name, entry in sherpa.items():
        assert set(SHERPA_TYPES[entry.type]) <= set(entry.files), name
        assert entry.url == f"https://github.com/k2-fsa/sherpa-onnx/releases/download/asr-models/{entry.dir}.tar.bz2"
        assert entry.archive_subdir == entry.dir and entry.download_kind == "archive"
        assert entry.streaming == (entry.type == "online_transducer"), name
    assert sherpa["sensevoice-small"].languages == ("zh", "en", "ja", "ko", "yue")
    assert sherpa["zipformer-zh-en-streaming"].languages == ("zh", "en")


def test_faster_whisper_names_map_to_their_repositories() -> None:
    catalog = load_catalog()
    assert catalog["tiny"].repo == "Systran/faster-whisper-tiny" and catalog["tiny"].download_kind == "snapshot"
    assert catalog["large-v3-turbo"].repo == "mobiuslabsgmbh/faster-whisper-large-v3-turbo"
    assert [e.name for e in candidates("turbo", catalog)] == ["large-v3-turbo"]


def test_bare_whisper_names_prefer_the_installed_engine(settings: Settings) -> None:
    # seed 000 says "tiny" for the ggml file; faster-whisper says "tiny" too.  Nothing installed: faster-whisper.
    assert [e.engine for e in candidates("tiny", load_catalog())] == ["faster-whisper", "whisper-cpp"]
    assert resolve_model("tiny", settings).engine == "faster-whisper"
    settings.model_dir.mkdir(parents=True)
    (settings.model_dir / "ggml-tiny.bin").write_bytes(b"ggml")
    spec = resolve_model("tiny", settings)
    assert (spec.name, spec.engine, spec.path) == ("ggml-tiny", "whisper-cpp", settings.model_dir / "ggml-tiny.bin")
    assert spec.options["installed"] is True


def test_sherpa_spec_carries_type_files_and_threads(settings: Settings) -> None:
    spec = resolve_model("sensevoice.small", settings)
    root = settings.model_dir / "sherpa-onnx-sense-voice-zh-en-ja-ko-yue-2024-07-17"
    assert (spec.name, spec.engine, spec.path) == ("sensevoice-small", "sherpa-onnx", root)
    assert spec.options["type"] == "sense_voice"
    assert spec.options["files"] == {"model": str(root / "model.int8.onnx"), "tokens": str(root / "tokens.txt")}
    assert spec.options["use_itn"] is True and spec.options["num_threads"] >= 1
    assert spec.options["installed"] is False


def test_missing_model_names_files_and_pull_command(settings: Settings) -> None:
    spec = resolve_model("zipformer-en-streaming", settings)
    with pytest.raises(ModelNotInstalled) as info:
        load_engine(spec, settings)
    message = str(info.value)
    assert "encoder-epoch-99-avg-1-chunk-16-left-128.int8.onnx" in message and "tokens.txt" in message
    assert "hearline models pull zipformer-en-streaming" in message


def test_offline_message_says_offline(tmp_path: Path) -> None:
    settings = Settings.load(model_dir=tmp_path / "m", models_file=tmp_path / "none.yaml", offline=True)
    with pytest.raises(ModelNotInstalled, match="offline mode is on"):
        load_engine(resolve_model("ggml-base.en", settings), settings)


def test_unknown_names_and_paths(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(UnknownModel):
        resolve_model("no-such-model", settings)
    with pytest.raises(UnknownModel):
        resolve_model(str(tmp_path / "absent"), settings)
    ggml = tmp_path / "my-model.bin"
    ggml.write_bytes(b"x")
    spec = resolve_model(str(ggml), settings)
    assert (spec.engine, spec.path) == ("whisper-cpp", ggml)


def test_default_is_pocketsphinx_unless_configured(settings: Settings) -> None:
    assert resolve_model(None, settings).engine == "pocketsphinx"
    assert resolve_model("whisper-1", settings).engine == "pocketsphinx"
    configured = Settings.load(model_dir=settings.model_dir, models_file=settings.models_file, model="ggml-tiny")
    assert resolve_model(None, configured).name == "ggml-tiny"
