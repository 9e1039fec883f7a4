"""The user's ``models.yaml``: asr2clip's registry format (seed 001), read unchanged.

::

    default_model: sensevoice-small
    num_threads: 4
    models:
      sensevoice-small:
        type: sense_voice            # sherpa-onnx type, or whisper_cpp / faster_whisper / pocketsphinx
        dir: sherpa-onnx-sense-voice-zh-en-ja-ko-yue-2024-07-17   # relative to the model dir
        files: {model: model.int8.onnx, tokens: tokens.txt}
        options: {use_itn: true, language: ""}
        download: {url: "https://.../x.tar.bz2", archive_subdir: x}

Hearline also understands optional extras per entry (``engine``, ``languages``, ``description``, ``file``,
``repo``, ``memory_mb``, ``streaming``, ``download.sha256``/``sha1``).  User entries override catalog entries
of the same name; metadata they leave out (languages, sizes, checksums) is inherited from the catalog entry
with the same name or directory, so a copied asr2clip file still lists proper languages.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from hearline.config import Settings
from hearline.models.catalog import (
    FASTER_WHISPER,
    POCKETSPHINX,
    SHERPA_ONNX,
    SHERPA_TYPES,
    WHISPER_CPP,
    ModelEntry,
    entry_from_dict,
    load_catalog,
)

logger = logging.getLogger(__name__)

REGISTRY_FILE = "models.yaml"

_TYPE_ENGINES = {
    "whisper_cpp": WHISPER_CPP,
    "whisper-cpp": WHISPER_CPP,
    "ggml": WHISPER_CPP,
    "faster_whisper": FASTER_WHISPER,
    "faster-whisper": FASTER_WHISPER,
    "ctranslate2": FASTER_WHISPER,
    "pocketsphinx": POCKETSPHINX,
}


class RegistryError(ValueError):
    """models.yaml cannot be understood; the message names the file and the entry."""


@dataclass
class Registry:
    path: Path
    default_model: str | None = None
    num_threads: int | None = None
    entries: dict[str, ModelEntry] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


def registry_path(settings: Settings) -> Path:
    explicit = settings.models_file
    return Path(explicit).expanduser() if explicit else settings.data_dir / REGISTRY_FILE


def engine_for_type(typ: str | None, engine: str | None = None) -> str:
    if engine:
        return engine
    if typ in SHERPA_TYPES or typ is None:
        return SHERPA_ONNX
    if typ in _TYPE_ENGINES:
        return _TYPE_ENGINES[typ]
    return SHERPA_ONNX  # unknown sherpa-onnx type: the engine reports it with a clear message


def entry_from_yaml(name: str, data: dict[str, Any], catalog: dict[str, ModelEntry] | None = None) -> ModelEntry:
    """One ``models.<name>`` block → :class:`ModelEntry` (inheriting metadata from the catalog)."""
    if not isinstance(data, dict):
        raise RegistryError(f"models.{name} must be a mapping, got {type(data).__name__}")
    download = data.get("download") or {}
    if not isinstance(download, dict):
        raise RegistryError(f"models.{name}.download must be a mapping")
    typ = data.get("type")
    engine = engine_for_type(typ, data.get("engine"))
    row: dict[str, Any] = {
        "name": name,
        "engine": engine,
        "type": typ if engine == SHERPA_ONNX else None,
        "languages": data.get("languages"),
        "tags": data.get("tags"),
        "description": data.get("description"),
        "aliases": data.get("aliases"),
        "dir": data.get("dir"),
        "file": data.get("file") or data.get("path"),
        "files": data.get("files"),
        "options": data.get("options"),
        "repo": data.get("repo") or download.get("repo"),
        "repo_file": data.get("repo_file") or download.get("repo_file"),
        "url": download.get("url") or data.get("url"),
        "archive_subdir": download.get("archive_subdir"),
        "size": download.get("size") or data.get("size"),
        "disk_mb": data.get("disk_mb"),
        "memory_mb": data.get("memory_mb"),
        "sha1": download.get("sha1") or data.get("sha1"),
        "sha256": download.get("sha256") or data.get("sha256"),
        "streaming": data.get("streaming"),
    }
    if engine == WHISPER_CPP and row["file"] is None and row["repo_file"] and not row["dir"]:
        row["file"] = row["repo_file"]
    if engine == WHISPER_CPP and row["file"] is None and row["url"] and not row["dir"]:
        row["file"] = row["url"].rsplit("/", 1)[-1].split("?", 1)[0]
    entry = entry_from_dict(row, source="user")
    return _inherit(entry, catalog if catalog is not None else load_catalog())


def _inherit(entry: ModelEntry, catalog: dict[str, ModelEntry]) -> ModelEntry:
    base = catalog.get(entry.name)
    if base is None or (entry.dir and base.dir != entry.dir):
        base = next((e for e in catalog.values() if entry.dir and e.dir == entry.dir), base)
    if base is None or base.engine != entry.engine:
        return entry
    # checksums and sizes describe one download: inherit them only when the user's entry fetches the same thing
    same_source = bool(entry.url and entry.url == base.url) or bool(
        entry.repo and entry.repo == base.repo and entry.repo_file == base.repo_file
    )
    return replace(
        entry,
        languages=entry.languages if entry.languages is not None else base.languages,
        tags=entry.tags or base.tags,
        description=entry.description or base.description,
        aliases=entry.aliases or (base.aliases if base.name == entry.name else ()),
        memory_mb=entry.memory_mb if entry.memory_mb is not None else base.memory_mb,
        disk_mb=entry.disk_mb if entry.disk_mb is not None else base.disk_mb,
        size=entry.size if entry.size is not None else (base.size if same_source else None),
        sha1=entry.sha1 or (base.sha1 if same_source else None),
        sha256=entry.sha256 or (base.sha256 if same_source else None),
        streaming=entry.streaming or base.streaming,
    )


def parse_registry(path: Path, text: str, catalog: dict[str, ModelEntry] | None = None) -> Registry:
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise RegistryError(f"{path}: expected a mapping with default_model / num_threads / models")
    models = raw.get("models") or {}
    if not isinstance(models, dict):
        raise RegistryError(f"{path}: 'models' must be a mapping of name -> entry")
    entries: dict[str, ModelEntry] = {}
    for name, data in models.items():
        try:
            entries[str(name)] = entry_from_yaml(str(name), data, catalog)
        except (RegistryError, KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"{path}: models.{name}: {exc}") from exc
    threads = raw.get("num_threads")
    return Registry(
        path=path,
        default_model=str(raw["default_model"]) if raw.get("default_model") else None,
        num_threads=int(threads) if threads else None,
        entries=entries,
        raw=raw,
    )


_cache: dict[Path, tuple[tuple[int, int], Registry]] = {}
_cache_lock = threading.Lock()


def load_registry(settings: Settings) -> Registry:
    """The user's registry (empty when there is no models.yaml); re-read only when the file changes."""
    path = registry_path(settings)
    try:
        stat = path.stat()
        mtime = (stat.st_mtime_ns, stat.st_size)
    except FileNotFoundError:
        return Registry(path=path)
    with _cache_lock:
        cached = _cache.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
    registry = parse_registry(path, path.read_text(encoding="utf-8"))
    with _cache_lock:
        _cache[path] = (mtime, registry)
    return registry


def all_entries(settings: Settings) -> dict[str, ModelEntry]:
    """Catalog entries overridden/extended by the user's registry."""
    merged = dict(load_catalog())
    merged.update(load_registry(settings).entries)
    return merged


def save_entry(settings: Settings, name: str, data: dict[str, Any]) -> Path:
    """Add or replace ``models.<name>`` in models.yaml (atomically; other entries are kept as they were)."""
    path = registry_path(settings)
    raw: dict[str, Any] = {}
    if path.exists():
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    raw.setdefault("models", {})
    if raw["models"] is None:
        raw["models"] = {}
    raw["models"][name] = data
    _write(path, raw)
    return path


def remove_entry(settings: Settings, name: str) -> bool:
    path = registry_path(settings)
    if not path.exists():
        return False
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if name not in (raw.get("models") or {}):
        return False
    del raw["models"][name]
    _write(path, raw)
    return True


def _write(path: Path, raw: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(tmp, path)
