"""The built-in model catalog: what a name means, where its files come from, how big it is.

The data lives in ``hearline/data/catalog.yaml`` (packaged) so adding a model is a data change.  The same
:class:`ModelEntry` type also describes the user's own ``models.yaml`` entries (see ``registry.py``), so
resolving, downloading and listing never care where an entry came from.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hearline.models.packages import ModelPackage, package_from_dict

logger = logging.getLogger(__name__)

# Engine names (the same strings as hearline.models.resolve; kept literal here to avoid an import cycle).
WHISPER_CPP = "whisper-cpp"
FASTER_WHISPER = "faster-whisper"
SHERPA_ONNX = "sherpa-onnx"
POCKETSPHINX = "pocketsphinx"

# sherpa-onnx recognizer types: seed 001's four offline ones plus the streaming (online) transducer.
SHERPA_TYPES = {
    "sense_voice": ("model", "tokens"),
    "whisper": ("encoder", "decoder", "tokens"),
    "paraformer": ("paraformer", "tokens"),
    "transducer": ("encoder", "decoder", "joiner", "tokens"),
    "online_transducer": ("encoder", "decoder", "joiner", "tokens"),
}
STREAMING_TYPES = {"online_transducer"}

# The files faster-whisper needs from a CTranslate2 repository.
FASTER_WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json")
FASTER_WHISPER_PATTERNS = ("config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*")


@dataclass(frozen=True)
class ModelEntry:
    """One named model: from the catalog (``source="catalog"``) or the user's models.yaml (``"user"``)."""

    name: str
    engine: str
    type: str | None = None  # sherpa-onnx recognizer type
    languages: tuple[str, ...] | None = None  # None: multilingual
    tags: tuple[str, ...] = ()
    description: str = ""
    aliases: tuple[str, ...] = ()
    dir: str | None = None  # model directory, relative to model_dir (or absolute)
    file: str | None = None  # single-file model (whisper.cpp), relative to model_dir (or absolute)
    files: dict[str, str] = field(default_factory=dict, hash=False, compare=False)  # role -> file in dir
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    repo: str | None = None  # Hugging Face hub repository
    repo_file: str | None = None  # file in ``repo`` (single-file models)
    url: str | None = None  # archive or single-file download URL
    archive_subdir: str | None = None  # directory inside the archive that becomes ``dir``
    size: int | None = None  # download size in bytes
    disk_mb: float | None = None
    memory_mb: float | None = None
    sha1: str | None = None
    sha256: str | None = None
    streaming: bool = False
    source: str = "catalog"
    package: ModelPackage | None = field(default=None, hash=False, compare=False)  # files shipped in wheels

    # -- where the model lives ---------------------------------------------------------------
    def install_path(self, model_dir: Path) -> Path:
        """The file (single-file models) or directory the model is installed as."""
        rel = self.file if self.file and not self.dir else (self.dir or self.name.replace("/", "--"))
        path = Path(rel).expanduser()
        return path if path.is_absolute() else model_dir / path

    def expected_files(self, model_dir: Path) -> list[Path]:
        """Every file that must exist for the model to count as installed."""
        root = self.install_path(model_dir)
        if self.file and not self.dir:
            return [root]
        if self.file:
            return [root / self.file]
        if self.files:
            return [_join(root, name) for name in self.files.values()]
        if self.engine == FASTER_WHISPER:
            return [root / name for name in FASTER_WHISPER_FILES]
        return [root]

    def missing_files(self, model_dir: Path) -> list[Path]:
        return [path for path in self.expected_files(model_dir) if not path.exists()]

    def is_installed(self, model_dir: Path) -> bool:
        return not self.missing_files(model_dir)

    # -- where it comes from -----------------------------------------------------------------
    @property
    def download_kind(self) -> str | None:
        """``"archive"``, ``"file"`` (one file over HTTP or from the hub), ``"snapshot"`` (hub repo) or None."""
        if self.url:
            return "archive" if _is_archive(self.url) else "file"
        if self.repo and self.repo_file:
            return "file"
        if self.repo:
            return "snapshot"
        return None

    @property
    def disk_size_mb(self) -> float | None:
        if self.disk_mb is not None:
            return self.disk_mb
        return round(self.size / 1_000_000) if self.size else None

    @property
    def multilingual(self) -> bool:
        return self.languages is None

    def with_source(self, source: str) -> ModelEntry:
        return replace(self, source=source)


def _join(root: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else root / path


def _is_archive(url: str) -> bool:
    lowered = url.lower().split("?", 1)[0]
    return lowered.endswith((".tar.bz2", ".tbz2", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar", ".zip"))


def entry_from_dict(data: dict[str, Any], source: str = "catalog") -> ModelEntry:
    """Build an entry from catalog.yaml fields (``registry.py`` maps models.yaml's layout onto these)."""
    langs = data.get("languages")
    if isinstance(langs, str):
        langs = [part.strip() for part in langs.split(",") if part.strip()]
    typ = data.get("type")
    streaming = data.get("streaming")
    return ModelEntry(
        name=str(data["name"]),
        engine=str(data["engine"]),
        type=typ,
        languages=tuple(langs) if langs else None,
        tags=tuple(data.get("tags") or ()),
        description=str(data.get("description") or ""),
        aliases=tuple(str(a) for a in data.get("aliases") or ()),
        dir=data.get("dir"),
        file=data.get("file"),
        files={str(k): str(v) for k, v in (data.get("files") or {}).items()},
        options=dict(data.get("options") or {}),
        repo=data.get("repo"),
        repo_file=data.get("repo_file"),
        url=data.get("url"),
        archive_subdir=data.get("archive_subdir"),
        size=int(data["size"]) if data.get("size") else None,
        disk_mb=data.get("disk_mb"),
        memory_mb=data.get("memory_mb"),
        sha1=data.get("sha1"),
        sha256=data.get("sha256"),
        streaming=bool(streaming) if streaming is not None else typ in STREAMING_TYPES,
        source=source,
        package=package_from_dict(data["package"]) if data.get("package") else None,
    )


@functools.lru_cache(maxsize=1)
def load_catalog() -> dict[str, ModelEntry]:
    """The packaged catalog, by canonical name (read once per process)."""
    text = resources.files("hearline.data").joinpath("catalog.yaml").read_text(encoding="utf-8")
    rows = yaml.safe_load(text)["models"]
    entries = {row["name"]: entry_from_dict(row) for row in rows}
    logger.debug("catalog: %d models", len(entries))
    return entries


def candidates(name: str, entries: dict[str, ModelEntry]) -> list[ModelEntry]:
    """Entries a name may mean, best first: exact name, then aliases, then hub repository or directory name.

    Seed 000 calls whisper.cpp's ggml files ``tiny``/``base``/..., which are also faster-whisper's names;
    the resolver picks the first *installed* candidate, so both conventions work.
    """
    found: list[ModelEntry] = []
    if name in entries:
        found.append(entries[name])
    for entry in entries.values():
        if entry not in found and name in entry.aliases:
            found.append(entry)
    for entry in entries.values():
        if entry not in found and name in {entry.repo, entry.dir, entry.file}:
            found.append(entry)
    return found
