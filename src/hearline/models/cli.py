"""``hearline models list | pull NAME | rm NAME | info NAME | import PATH``.

``import`` is the offline-deployment path (seed 004): a model directory, ggml file or release archive copied
from a connected machine is installed into the model directory exactly as ``pull`` would have (catalog
entries keep their names), and anything the catalog does not know gets its own models.yaml entry.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hearline.config import Settings
from hearline.engines.base import ModelFilesMissing
from hearline.models import download
from hearline.models.catalog import POCKETSPHINX, SHERPA_ONNX, WHISPER_CPP, ModelEntry
from hearline.models.registry import RegistryError, all_entries, registry_path, save_entry
from hearline.models.resolve import UnknownModel, resolve_model, spec_entry, spec_for_entry

logger = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.bz2", ".tbz2", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar", ".zip")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` command to the CLI (``args.func(args)`` runs it and returns the exit code)."""
    parser = subparsers.add_parser("models", help="list, download, remove and import models")
    _common(parser)
    sub = parser.add_subparsers(dest="models_command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="catalog, models.yaml and installed models")
    _common(p)
    p.add_argument("--installed", action="store_true", help="only models whose files are present")
    p.add_argument("--engine", help="only this engine (whisper-cpp, faster-whisper, sherpa-onnx)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("pull", help="download a model (resumable, verified, atomic)")
    _common(p)
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="download again even when installed")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("rm", help="delete a model's files from the model directory")
    _common(p)
    p.add_argument("name")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("info", help="everything known about a model")
    _common(p)
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("import", help="install a model directory, ggml file or archive copied from elsewhere")
    _common(p)
    p.add_argument("path", type=Path)
    p.add_argument("--name", help="registry name for a model the catalog does not know")
    p.add_argument("--type", help="sherpa-onnx type (sense_voice, whisper, paraformer, transducer, online_transducer)")
    p.set_defaults(func=cmd_import)


def _common(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: do not overwrite the same options given to the top-level parser.
    parser.add_argument("--model-dir", type=Path, default=argparse.SUPPRESS, help="model directory")
    parser.add_argument("--offline", action="store_true", default=argparse.SUPPRESS, help="never use the network")
    parser.add_argument("--models-file", type=Path, default=argparse.SUPPRESS, help="models.yaml to use")


def _settings(args: argparse.Namespace) -> Settings:
    existing = getattr(args, "settings", None)
    if isinstance(existing, Settings):
        return existing
    return Settings.load(
        model_dir=getattr(args, "model_dir", None),
        offline=getattr(args, "offline", None) or None,
        models_file=getattr(args, "models_file", None),
        config_file=getattr(args, "config_file", None),
    )


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _fmt_mb(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value / 1000:.1f} GB" if value >= 1000 else f"{value:.0f} MB"


# -- list / info -----------------------------------------------------------------------------------
def _describe(entry: ModelEntry, settings: Settings, default: str) -> dict[str, Any]:
    spec = spec_for_entry(entry, settings)
    installed = bool(spec.options.get("installed"))
    return {
        "name": entry.name,
        "engine": entry.engine,
        "type": entry.type,
        "status": "installed" if installed else "available",
        "default": entry.name == default,
        "languages": list(entry.languages) if entry.languages is not None else None,
        "disk_mb": entry.disk_size_mb,
        "memory_mb": entry.memory_mb,
        "streaming": entry.streaming,
        "tags": list(entry.tags),
        "aliases": list(entry.aliases),
        "source": entry.source,
        "path": str(spec.path) if spec.path is not None else None,
        "description": entry.description,
    }


def _default_name(settings: Settings) -> str:
    try:
        return resolve_model(None, settings).name
    except UnknownModel:
        return ""


def cmd_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    default = _default_name(settings)
    rows: list[dict[str, Any]] = [
        {"name": POCKETSPHINX, "engine": POCKETSPHINX, "type": None, "status": "installed",
         "default": default == POCKETSPHINX, "languages": ["en"], "disk_mb": 0, "memory_mb": 95,
         "streaming": True, "tags": ["bundled"], "aliases": [], "source": "bundled", "path": None,
         "description": "bundled PocketSphinx en-us"},
    ]  # fmt: skip
    rows += [_describe(entry, settings, default) for entry in all_entries(settings).values()]
    if args.installed:
        rows = [row for row in rows if row["status"] == "installed"]
    if args.engine:
        rows = [row for row in rows if row["engine"] == args.engine]
    if args.json:
        _print_json(rows)
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"models (model dir: {settings.model_dir})")
    for column in ("name", "engine", "status", "disk", "memory"):
        table.add_column(column, no_wrap=True)
    table.add_column("languages", max_width=24)
    table.add_column("tags", max_width=28)
    for row in rows:
        langs = ",".join(row["languages"]) if row["languages"] else "multilingual"
        name = row["name"] + (" *" if row["default"] else "")
        status = row["status"]
        table.add_row(name, row["engine"], status, _fmt_mb(row["disk_mb"]), _fmt_mb(row["memory_mb"]), langs,
                      ",".join(row["tags"]))  # fmt: skip
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)  # piped output: do not squeeze names into 80 columns
    console.print(table)
    print("* default model; `hearline models pull NAME` downloads one")
    return 0


def _find(name: str, settings: Settings) -> ModelEntry:
    spec = resolve_model(name, settings, client=False)  # the operator's own command line: paths and repos allowed
    entry = spec_entry(spec)
    if entry is None:
        raise UnknownModel(f"{name} (not a catalog or models.yaml model)")
    return entry


def cmd_info(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        entry = _find(args.name, settings)
    except UnknownModel as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = _describe(entry, settings, _default_name(settings))
    info.update(
        repo=entry.repo,
        url=download.source_url(entry),
        archive_subdir=entry.archive_subdir,
        size_bytes=entry.size,
        sha1=entry.sha1,
        sha256=entry.sha256,
        verification=download.verification(entry, settings),
        expected_files=[str(p) for p in entry.expected_files(settings.model_dir)],
        missing_files=[str(p) for p in entry.missing_files(settings.model_dir)],
        options=entry.options,
        registry=str(registry_path(settings)),
    )
    if args.json:
        _print_json(info)
    else:
        for key, value in info.items():
            if value not in (None, [], {}, ""):
                print(f"{key:15} {value}")
    return 0


# -- pull / rm -------------------------------------------------------------------------------------
def cmd_pull(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        entry = _find(args.name, settings)
    except UnknownModel as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if download.is_offline(settings) and (args.force or not entry.is_installed(settings.model_dir)):
        print(f"error: {download.missing_message(entry, settings.model_dir, offline=True)}", file=sys.stderr)
        return 1
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(f"{entry.name}", total=None)

        def on_update(p: download.Progress) -> None:
            bar.update(task, completed=p.downloaded, total=p.total, description=f"{entry.name} [{p.state}]")

        progress = download.Progress(entry.name, on_update=on_update)
        try:
            path = download.pull(entry, settings, progress=progress, force=args.force)
        except (download.DownloadError, ModelFilesMissing) as exc:
            bar.stop()
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"{entry.name}: installed at {path}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        entry = _find(args.name, settings)
        removed = download.remove(entry, settings)
    except UnknownModel as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except download.DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{entry.name}: {'removed' if removed else 'was not installed'}")
    return 0


# -- import ----------------------------------------------------------------------------------------
def cmd_import(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        name, path = import_model(args.path, settings, name=args.name, model_type=args.type)
    except (download.DownloadError, RegistryError, UnknownModel, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{name}: installed at {path}")
    return 0


def import_model(
    source: Path, settings: Settings, name: str | None = None, model_type: str | None = None
) -> tuple[str, Path]:
    """Install a model from a local directory, ggml file or archive; returns (name, installed path)."""
    source = source.expanduser().resolve()
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    model_dir = settings.model_dir
    model_dir.mkdir(parents=True, exist_ok=True)
    entries = all_entries(settings)
    lower = source.name.lower()
    if source.is_file() and lower.endswith(ARCHIVE_SUFFIXES):
        stem = source.name[: -len(next(s for s in ARCHIVE_SUFFIXES if lower.endswith(s)))]
        entry = _match(entries, name, archive=source.name, dirname=stem)
        staging = model_dir / download.PARTIAL_DIR
        staging.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="import-", dir=staging))
        try:
            download.extract(source, tmp, source.name)
            children = list(tmp.iterdir())
            root = children[0] if len(children) == 1 and children[0].is_dir() else tmp
            if entry is not None and entry.archive_subdir and (tmp / entry.archive_subdir).is_dir():
                root = tmp / entry.archive_subdir
            return _install_dir(root, entry, settings, name or (root.name if root != tmp else stem), model_type)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if source.is_dir():
        entry = _match(entries, name, dirname=source.name)
        staging = model_dir / download.PARTIAL_DIR
        staging.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="import-", dir=staging))
        try:
            copy = tmp / source.name
            shutil.copytree(source, copy)
            return _install_dir(copy, entry, settings, name or source.name, model_type)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    # a single file: whisper.cpp ggml/gguf
    entry = _match(entries, name, filename=source.name)
    if entry is not None:
        target = entry.expected_files(model_dir)[0]
        _copy_file(source, target, entry)
        return entry.name, target
    if source.suffix.lower() not in {".bin", ".gguf", ".ggml"}:
        raise ValueError(f"{source.name}: expected a model directory, an archive or a ggml .bin/.gguf file")
    target = model_dir / source.name
    _copy_file(source, target, None)
    reg_name = name or source.stem
    save_entry(settings, reg_name, {"type": "whisper_cpp", "file": source.name})
    return reg_name, target


def _match(
    entries: dict[str, ModelEntry],
    name: str | None,
    archive: str | None = None,
    dirname: str | None = None,
    filename: str | None = None,
) -> ModelEntry | None:
    if name and name in entries:
        return entries[name]
    for entry in entries.values():
        if archive and entry.url and entry.url.rsplit("/", 1)[-1] == archive:
            return entry
        if dirname and dirname in {entry.dir, entry.archive_subdir}:
            return entry
        if filename and entry.engine == WHISPER_CPP and filename == Path(entry.file or "").name:
            return entry
    return None


def _copy_file(source: Path, target: Path, entry: ModelEntry | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.parent / download.PARTIAL_DIR / f"import--{target.name}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, part)
    if entry is not None:
        download.verify(part, entry, check_size=True)
    part.replace(target)


def _install_dir(
    root: Path, entry: ModelEntry | None, settings: Settings, name: str, model_type: str | None
) -> tuple[str, Path]:
    model_dir = settings.model_dir
    if entry is not None:
        missing = [rel for rel in entry.files.values() if not (root / rel).exists()]
        if missing:
            raise download.DownloadError(f"{root.name} lacks {', '.join(missing)} needed by {entry.name!r}")
        target = entry.install_path(model_dir)
        download.replace_dir(root, target)
        return entry.name, target
    data: dict[str, Any] = {"dir": root.name}
    if (root / "model.bin").exists():
        data["type"] = "faster_whisper"
    elif any(root.glob("*.onnx")) or any(root.glob("*tokens.txt")):
        if model_type:
            data["type"] = model_type
        else:
            data["engine"] = SHERPA_ONNX  # type inferred from the files by the engine
    elif model_type:
        data["type"] = model_type
    else:
        raise ValueError(f"{root.name}: cannot tell which engine this model is for; pass --type")
    target = model_dir / root.name
    download.replace_dir(root, target)
    save_entry(settings, name, data)
    logger.info("registered %s in %s", name, registry_path(settings))
    return name, target
