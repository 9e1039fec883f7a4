"""One Settings object for the whole process.

Precedence (lowest to highest): built-in defaults < config file (TOML or YAML) < environment
(``HEARLINE_*``) < explicit keyword arguments (the CLI passes its flags this way).  Keeping a single
object means every module reads the same values and tests can build isolated servers cheaply.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)


def default_data_dir() -> Path:
    """XDG data directory; models and the models.yaml registry live here."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "hearline"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEARLINE_", extra="ignore", validate_default=True)

    # -- where a config file may come from (only read through env or the constructor) --
    config_file: Path | None = None

    # -- network --
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    cors_origins: list[str] = Field(default_factory=list)
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    stt_port: int | None = None
    vosk_port: int | None = None
    captions_port: int | None = None
    wyoming_port: int = 0  # Wyoming (Home Assistant) TCP listener; 0: off
    wyoming_zeroconf: bool = False  # advertise the Wyoming listener over mDNS

    # -- models --
    model: str | None = None  # None: the bundled default (PocketSphinx) unless another is installed
    language: str | None = None  # None or "auto": detect
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = "default"
    threads: int = 0  # 0: let the engine choose
    model_dir: Path = Field(default_factory=lambda: default_data_dir() / "models")
    offline: bool = False
    memory_budget_mb: int = 8192
    malloc_arenas: int = Field(default=2, ge=0)  # glibc malloc arenas of `serve` (0: glibc's default)
    idle_unload_s: float = 0.0  # 0: never unload idle models
    auto_download: bool = True  # fetch a missing catalog/models.yaml model on first use (never when offline)
    # Model downloads running at once (0: no limit); one more is refused with 429 until one finishes.
    # Each is a thread and a share of the link and the disk; two keep a pull going beside a first-use fetch.
    max_downloads: int = Field(default=2, ge=0)
    models_file: Path | None = None  # the models.yaml registry; None: <data dir>/models.yaml
    # Where release downloads are recognised and their published digests asked (GitHub Enterprise:
    # https://HOST and https://HOST/api/v3).
    github_url: str = "https://github.com"
    github_api: str = "https://api.github.com"
    # Model names from clients (every door) are names, never paths or downloads of arbitrary repositories,
    # unless the operator opts in: paths inside these directories (after resolving symlinks and ``..``;
    # env: a ``os.pathsep``-separated list or a JSON list) ...
    allow_model_paths: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # ... and hub repositories the catalog does not list (which may download).
    allow_remote_models: bool = False

    # -- inference scheduling --
    workers: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1))
    max_concurrency_per_model: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1))
    max_queue_per_model: int = 16
    # Window decodes of every live session of a model gathered into one batched call (engines that can,
    # Whisper): at most this many per call (1: no batching), waiting at most this long for the batch to fill.
    batch_size: int = Field(default=8, ge=1)
    batch_wait_ms: float = Field(default=15.0, ge=0)
    # A faster model for live partials beside a slower, better one for finals (``tiny.en`` with ``base``):
    # used by the live sessions whose language and task it supports; finals always come from the session's
    # own model.  None: partials from the session's model.
    partial_model: str | None = None
    # How a live final's encoder sees its utterance (Whisper): "short", the utterance and some silence, as partial
    # drafts are, then decoded whole (the 30 s window's fixed encoder cost was most of a final's latency);
    # "full", a 30 s window, as offline transcription has.  bench/live.py --final-window prints both.
    live_final_window: Literal["full", "short"] = "short"
    drain_timeout: float = 30.0  # seconds a SIGTERM waits for live sessions' finals before stopping

    # -- REST --
    max_upload_mb: float = 200.0
    # Longest audio an upload may decode to (0: no limit).  A small compressed file can claim hours;
    # decoding stops at the limit, so one request holds at most this much audio in memory.
    max_audio_minutes: float = Field(default=120.0, ge=0)
    max_uploads: int = Field(default=4, ge=0)  # uploads read and decoded at once (0: no limit); more get 429

    # -- live --
    pcm_input: bool = False
    vad_silence_ms: int = 500
    max_utterance_s: float = 15.0
    ping_interval_s: float = 15.0
    # A live WebSocket with no message from its client for this long is closed (0: never).
    live_idle_timeout_s: float = Field(default=300.0, ge=0)
    # An upload whose body stops arriving for this long between chunks is answered 408 (0: never).
    upload_timeout_s: float = Field(default=60.0, ge=0)
    asr_max_lines: int = Field(default=1000, ge=1)  # /asr transcript lines kept per session (bounded memory)
    # Open live sessions (every door together) before a new one is refused at the handshake (503 +
    # Retry-After, so a load balancer retries another replica); 0: no limit.  32 by default: a live
    # session holds a decoder stream and buffers, and far more than a few dozen on one box means each
    # gets its finals late; an operator with a bigger machine raises it.
    max_sessions: int = Field(default=32, ge=0)
    # Live sessions per model, by model name (aliases allowed): a model on a small machine keeps up with
    # fewer sessions than the server holds.  Env: ``base=4,tiny.en=8`` or a JSON object; a model not named
    # is limited by ``max_sessions`` alone.
    max_sessions_per_model: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    # A live session longer than this (wall clock) gets the finals of what it sent and is closed (0: never);
    # the client reconnects.  A working day by default: long enough for any meeting, short enough that a
    # forgotten client does not hold a place for good.
    max_session_minutes: float = Field(default=480.0, ge=0)

    # -- connections (every listener, each counted on its own) --
    # Open connections (HTTP and WebSocket, a handshake included) before more get 503 + Retry-After;
    # 0: no limit.  By default well inside the process's file-descriptor limit.
    max_connections: int = Field(default_factory=lambda: _default_max_connections(), ge=0)
    # A request (or WebSocket handshake) whose headers are not complete this long after the connection
    # opened or the previous request ended gets 408 and is closed (0: never).
    header_timeout_s: float = Field(default=10.0, ge=0)

    # -- captions (seed 000: /start /stop /events) and capture --
    pulse_server: str | None = None  # PulseAudio/PipeWire server for capture; None: the session default
    capture_stall_s: float = 10.0  # a capture that delivers no audio this long counts as a lost device
    capture_retry_max_s: float = 10.0  # reconnect backoff ceiling after a lost device
    captions_backlog: int = 500  # events kept for Last-Event-ID resumption
    captions_subscriber_queue: int = 256  # events buffered per SSE subscriber before it is dropped as too slow
    captions_max_subscribers: int = Field(default=100, ge=1)  # /events streams open at once; more get 503
    translator: Literal["auto", "whisper", "ctranslate2", "libretranslate", "openai", "none"] = "auto"
    translate_url: str | None = None  # LibreTranslate base URL or OpenAI-compatible base URL (…/v1)
    translate_api_key: str | None = None
    translate_model: str | None = None  # CTranslate2 model directory, or the chat model name for "openai"
    translate_timeout_s: float = 30.0
    translate_queue: int = 32  # finals waiting for translation before the oldest is skipped

    log_level: str = "info"

    @field_validator("language")
    @classmethod
    def _auto_is_none(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() in {"", "auto"}:
            return None
        return value.strip()

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("max_sessions_per_model", mode="before")
    @classmethod
    def _split_limits(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                return json.loads(text)
            value = [part for part in text.split(",") if part.strip()]
        if isinstance(value, list):
            pairs = [str(part).split("=", 1) for part in value]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError("per-model session limits are NAME=COUNT pairs, e.g. base=4")
            return {name.strip(): int(count) for name, count in pairs}
        return value

    @field_validator("allow_model_paths", mode="before")
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(os.pathsep) if part.strip()]
        if isinstance(value, Path):
            return [value]
        return value

    @property
    def data_dir(self) -> Path:
        return self.model_dir.parent

    @property
    def batch_capacity(self) -> int:
        """Jobs each lane of a model admits at once: as many as it has threads, so waiting happens in the
        scheduler's gate (by priority), never in an executor's first-come-first-served queue."""
        return max(1, min(self.max_concurrency_per_model, self.workers))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_audio_seconds(self) -> float | None:
        return self.max_audio_minutes * 60 or None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_path(init_settings, env_settings)
        if path is not None:
            if path.suffix.lower() in {".yaml", ".yml"}:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
            else:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Build settings, dropping ``None`` overrides so unset CLI flags do not mask lower layers."""
        return cls(**{key: value for key, value in overrides.items() if value is not None})


def _default_max_connections() -> int:
    """1000, or fewer when the soft file-descriptor limit leaves less room (models, devices, logs need some)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 1000
    if soft == resource.RLIM_INFINITY:
        return 1000
    return max(16, min(1000, soft - 128))


def _config_path(*sources: PydanticBaseSettingsSource) -> Path | None:
    for source in sources:
        value = source().get("config_file")
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"config file not found: {path}")
            return path
    return None
