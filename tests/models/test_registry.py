"""models.yaml: asr2clip's format (seed 001) verbatim, overrides, the default model, import."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hearline.cli import main
from hearline.config import Settings
from hearline.models.cli import import_model
from hearline.models.registry import RegistryError, all_entries, load_registry
from hearline.models.resolve import resolve_model
from tests.helpers.fileserver import make_tar_bz2

# seed 001, "注册表格式", verbatim
SEED_001_REGISTRY = """\
default_model: sensevoice-small
num_threads: 4

models:
  sensevoice-small:
    type: sense_voice
    dir: sherpa-onnx-sense-voice-zh-en-ja-ko-yue-2024-07-17
    files:
      model: model.int8.onnx
      tokens: tokens.txt
    options:
      use_itn: true
      language: ""          # 空字符串 = 自动检测
    download:
      url: "https://github.com/k2-fsa/sherpa-onnx/releases/download/asr-models/sherpa-onnx-sense-voice-zh-en-ja-ko-yue-2024-07-17.tar.bz2"
      archive_subdir: sherpa-onnx-sense-voice-zh-en-ja-ko-yue-2024-07-17
"""

# seed 001, "添加模型", verbatim
SEED_001_ADD_MODEL = """\
models:
  # ... 已有模型 ...
  whisper-large-v3:
    type: whisper
    dir: sherpa-onnx-whisper-large-v3
    files:
      encoder: encoder.int8.onnx
      decoder: decoder.int8.onnx
      tokens: tokens.txt
    options:
      language: en
"""

SENSE_DIR = "sherpa-onnx-sense-voice-zh-en-ja-ko-yue-2024-07-17"


def _settings(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "models.yaml"
    path.write_text(text, encoding="utf-8")
    return Settings.load(model_dir=tmp_path / "models", models_file=path)


def test_seed_001_registry_parses_unchanged(tmp_path: Path) -> None:
    settings = _settings(tmp_path, SEED_001_REGISTRY)
    registry = load_registry(settings)
    assert registry.default_model == "sensevoice-small" and registry.num_threads == 4
    entry = registry.entries["sensevoice-small"]
    assert (entry.engine, entry.type, entry.dir, entry.source) == ("sherpa-onnx", "sense_voice", SENSE_DIR, "user")
    assert entry.files == {"model": "model.int8.onnx", "tokens": "tokens.txt"}
    assert entry.options == {"use_itn": True, "language": ""}
    assert entry.archive_subdir == SENSE_DIR and entry.download_kind == "archive"
    assert entry.languages == ("zh", "en", "ja", "ko", "yue")  # inherited from the catalog entry
    spec = resolve_model("sensevoice-small", settings)
    assert spec.options["num_threads"] == 4 and spec.options["language"] == ""


def test_seed_001_default_model_falls_back_until_installed(tmp_path: Path, whisper_default: None) -> None:
    settings = _settings(tmp_path, SEED_001_REGISTRY)
    assert resolve_model(None, settings).name == "base"  # sensevoice-small is not installed: the packaged Whisper
    root = settings.model_dir / SENSE_DIR
    root.mkdir(parents=True)
    (root / "model.int8.onnx").write_bytes(b"onnx")
    (root / "tokens.txt").write_text("<blk> 0\n")
    spec = resolve_model(None, settings)
    assert (spec.name, spec.engine, spec.options["installed"]) == ("sensevoice-small", "sherpa-onnx", True)


def test_seed_001_added_whisper_model(tmp_path: Path) -> None:
    settings = _settings(tmp_path, SEED_001_ADD_MODEL)
    spec = resolve_model("whisper-large-v3", settings)
    root = settings.model_dir / "sherpa-onnx-whisper-large-v3"
    assert (spec.engine, spec.options["type"], spec.path) == ("sherpa-onnx", "whisper", root)
    assert spec.options["files"]["encoder"] == str(root / "encoder.int8.onnx")
    assert spec.options["language"] == "en"
    assert "sensevoice-small" in all_entries(settings)  # the catalog is still there


def test_models_list_cli_shows_registry_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = _settings(tmp_path, SEED_001_REGISTRY + SEED_001_ADD_MODEL.replace("models:\n", "", 1))
    code = main(["models", "list", "--json", "--model-dir", str(settings.model_dir),
                 "--models-file", str(settings.models_file)])  # fmt: skip
    assert code == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["sensevoice-small"]["source"] == "user" and rows["sensevoice-small"]["status"] == "available"
    assert rows["whisper-large-v3"]["engine"] == "sherpa-onnx"
    assert rows["pocketsphinx"]["default"] is True and rows["pocketsphinx"]["status"] == "installed"
    assert "ggml-large-v3" in rows and "zipformer-en-streaming" in rows


def test_cli_info_names_expected_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = _settings(tmp_path, SEED_001_REGISTRY)
    code = main(["models", "info", "sensevoice.small", "--json", "--model-dir", str(settings.model_dir),
                 "--models-file", str(settings.models_file)])  # fmt: skip
    assert code == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "sensevoice-small"
    assert info["missing_files"] == [str(settings.model_dir / SENSE_DIR / f) for f in ("model.int8.onnx", "tokens.txt")]
    # no checksum in the catalog for the sherpa-onnx archives: GitHub's release API is asked for the
    # asset's digest when the download starts, and info says so and what is checked if it has none
    assert info["sha256"] is None and info["sha1"] is None
    assert info["verification"].startswith("the download must match the sha256 digest and size GitHub's release API")
    assert info["verification"].endswith("the install checks that the archive holds model.int8.onnx, tokens.txt")
    assert main(["models", "info", "nope", "--models-file", str(settings.models_file)]) == 2
    assert main(["models", "info", "paraformer-zh", "--model-dir", str(settings.model_dir)]) == 0
    assert "verification    the download must match the sha256 digest and size GitHub's" in capsys.readouterr().out


def test_invalid_registry_is_reported_with_its_path(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "models: [1, 2]\n")
    with pytest.raises(RegistryError, match=str(settings.models_file)):
        load_registry(settings)


def test_user_entry_overrides_catalog_entry(tmp_path: Path) -> None:
    text = "models:\n  ggml-tiny:\n    type: whisper_cpp\n    file: /opt/models/custom-tiny.bin\n"
    entry = all_entries(_settings(tmp_path, text))["ggml-tiny"]
    assert entry.source == "user" and entry.file == "/opt/models/custom-tiny.bin"
    assert entry.sha1 is None  # the catalog's checksum belongs to another file


def test_import_catalog_archive_and_unknown_directory(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "")
    archive = tmp_path / f"{SENSE_DIR}.tar.bz2"
    archive.write_bytes(make_tar_bz2({f"{SENSE_DIR}/model.int8.onnx": b"m", f"{SENSE_DIR}/tokens.txt": b"t"}))
    name, path = import_model(archive, settings)
    assert (name, path) == ("sensevoice-small", settings.model_dir / SENSE_DIR)
    assert resolve_model("sensevoice-small", settings).options["installed"] is True

    custom = tmp_path / "my-ct2-model"
    custom.mkdir()
    for file in ("model.bin", "config.json", "tokenizer.json"):
        (custom / file).write_text("{}")
    name, path = import_model(custom, settings, name="my-whisper")
    assert path == settings.model_dir / "my-ct2-model" and (custom / "model.bin").exists()  # copied, not moved
    saved = yaml.safe_load(settings.models_file.read_text())
    assert saved["models"]["my-whisper"] == {"dir": "my-ct2-model", "type": "faster_whisper"}
    spec = resolve_model("my-whisper", settings)
    assert (spec.engine, spec.path, spec.options["installed"]) == ("faster-whisper", path, True)
