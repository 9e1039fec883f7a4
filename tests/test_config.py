"""Settings precedence: defaults < config file < HEARLINE_* env < flags, and the CLI's mapping onto it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hearline.cli import build_parser, settings_from_args
from hearline.config import Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HEARLINE_PORT", "HEARLINE_MODEL", "HEARLINE_API_KEY", "HEARLINE_CONFIG_FILE", "HEARLINE_LANGUAGE"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_bind_loopback() -> None:
    settings = Settings.load()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.api_key is None
    assert settings.model is None
    assert settings.max_upload_bytes == 200 * 1024 * 1024


def test_precedence_file_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "hearline.toml"
    config.write_text('port = 9001\nmodel = "tiny"\nmax_upload_mb = 5\nlanguage = "de"\n')
    from_file = Settings.load(config_file=config)
    assert (from_file.port, from_file.model, from_file.max_upload_mb, from_file.language) == (9001, "tiny", 5, "de")

    monkeypatch.setenv("HEARLINE_PORT", "9002")
    from_env = Settings.load(config_file=config)
    assert from_env.port == 9002  # env beats file
    assert from_env.model == "tiny"  # file still beats defaults

    from_flag = Settings.load(config_file=config, port=9003, model=None)
    assert from_flag.port == 9003  # flags beat env
    assert from_flag.model == "tiny"  # an unset flag (None) does not mask lower layers


def test_yaml_config_via_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "hearline.yaml"
    config.write_text("api_key: from-yaml\ncors_origins: [https://a.example, https://b.example]\n")
    monkeypatch.setenv("HEARLINE_CONFIG_FILE", str(config))
    settings = Settings.load()
    assert settings.api_key == "from-yaml"
    assert settings.cors_origins == ["https://a.example", "https://b.example"]


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config file not found"):
        Settings.load(config_file=tmp_path / "absent.toml")


def test_value_normalisation() -> None:
    assert Settings.load(language="auto").language is None
    assert Settings.load(language=" en ").language == "en"
    assert Settings.load(cors_origins="https://a.example, https://b.example").cors_origins == [
        "https://a.example",
        "https://b.example",
    ]
    assert Settings.load(max_upload_mb=0.5).max_upload_bytes == 512 * 1024
    with pytest.raises(ValidationError):
        Settings.load(device="tpu")


def test_serve_flags_map_onto_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARLINE_API_KEY", "env-key")
    args = build_parser().parse_args(
        [
            "serve", "--host", "0.0.0.0", "--port", "8123", "--model", "base", "--language", "fr",
            "--device", "auto", "--compute-type", "int8", "--threads", "3", "--model-dir", str(tmp_path),
            "--max-upload-mb", "12.5", "--cors-origins", "https://x.example", "--stt-port", "8765",
            "--vosk-port", "2700", "--captions-port", "35123", "--pcm-input", "--offline", "--log-level", "debug",
        ]
    )  # fmt: skip
    settings = settings_from_args(args)
    assert settings.host == "0.0.0.0" and settings.port == 8123
    assert settings.model == "base" and settings.language == "fr"
    assert settings.device == "auto" and settings.compute_type == "int8" and settings.threads == 3
    assert settings.model_dir == tmp_path and settings.max_upload_mb == 12.5
    assert settings.cors_origins == ["https://x.example"]
    assert (settings.stt_port, settings.vosk_port, settings.captions_port) == (8765, 2700, 35123)
    assert settings.pcm_input is True and settings.offline is True and settings.log_level == "debug"
    assert settings.api_key == "env-key"  # not given as a flag: env shows through

    flagged = settings_from_args(build_parser().parse_args(["serve", "--api-key", "flag-key"]))
    assert flagged.api_key == "flag-key"
    plain = settings_from_args(build_parser().parse_args(["serve"]))
    assert plain.pcm_input is False and plain.offline is False  # store_true flags unset -> defaults


def test_serve_ssl_flags(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    args = build_parser().parse_args(["serve", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)])
    settings = settings_from_args(args)
    assert settings.ssl_certfile == cert and settings.ssl_keyfile == key
    from hearline.server.run import uvicorn_options

    options = uvicorn_options(settings)
    assert options["ssl_certfile"] == str(cert) and options["ssl_keyfile"] == str(key)
    assert options["host"] == "127.0.0.1"
