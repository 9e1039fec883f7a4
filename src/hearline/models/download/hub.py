"""Hugging Face hub downloads: snapshots (faster-whisper) and single hub files, verified per commit.

A snapshot downloads into a staging directory through ``huggingface_hub`` (which resumes a file within
the same pull); a pull that still fails removes that directory, so the next one starts over.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from hearline.models.catalog import FASTER_WHISPER, FASTER_WHISPER_FILES, FASTER_WHISPER_PATTERNS, ModelEntry
from hearline.models.download.checksums import PublishedChecksum, mismatches
from hearline.models.download.errors import ChecksumMismatch, DownloadError, RemoteNotFound
from hearline.models.download.progress import Progress
from hearline.models.download.sources import hf_endpoint
from hearline.models.download.staging import replace_dir, safe_name, staging_dir

if TYPE_CHECKING:
    from huggingface_hub.hf_api import RepoSibling

logger = logging.getLogger(__name__)


def install_snapshot(entry: ModelEntry, model_dir: Path, progress: Progress) -> None:
    """A hub repository (faster-whisper models) via ``huggingface_hub.snapshot_download``, then verified.

    The repository's file metadata is read first (:func:`hub_files`) and the snapshot is taken at that
    commit, so the checksums and the bytes belong to the same revision even if ``main`` moves meanwhile;
    every downloaded file is checked against them before the directory is installed.  The endpoint is
    passed per call because huggingface_hub reads ``HF_ENDPOINT`` once, at import.
    """
    from huggingface_hub import snapshot_download

    assert entry.repo is not None
    target = entry.install_path(model_dir)
    staging = staging_dir(target)
    tmp = Path(tempfile.mkdtemp(prefix=f"{safe_name(entry.name)}-", dir=staging))
    progress.update(state="downloading")
    patterns = list(FASTER_WHISPER_PATTERNS) if entry.engine == FASTER_WHISPER else None
    try:
        try:
            commit, published = hub_files(entry.repo)
            snapshot_download(
                entry.repo,
                revision=commit,
                local_dir=tmp,
                allow_patterns=patterns,
                endpoint=os.environ.get("HF_ENDPOINT") or None,
                tqdm_class=_progress_tqdm(progress),
            )
        except hub_errors() as exc:
            raise hub_download_error(entry.repo, exc) from exc
        shutil.rmtree(tmp / ".cache", ignore_errors=True)
        required = set(entry.files.values()) | (set(FASTER_WHISPER_FILES) if entry.engine == FASTER_WHISPER else set())
        missing = sorted(name for name in required if not (tmp / name).exists())
        if missing:
            raise DownloadError(f"{entry.repo} lacks {', '.join(missing)}")
        progress.update(state="verifying")
        _verify_snapshot(tmp, entry, commit, published)
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def hub_files(repo: str) -> tuple[str, dict[str, PublishedChecksum | None]]:
    """The commit ``main`` points at and, per file, the checksum the hub publishes for it there.

    ``model_info(files_metadata=True)`` (``GET /api/models/{repo}/revision/main?blobs=true``) lists every
    file with its size, git blob id and, for LFS files, the sha256 of the content.  Raises what the hub
    client raises (see :func:`hub_errors`).
    """
    from huggingface_hub import HfApi

    info = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None).model_info(repo, revision="main", files_metadata=True)
    if not info.sha:
        raise DownloadError(f"the hub at {hf_endpoint()} gave no commit for {repo}")
    commit = str(info.sha)
    source = f"the hub ({repo}@{commit[:12]})"
    return commit, {sibling.rfilename: _sibling_checksum(sibling, source) for sibling in info.siblings or []}


def _sibling_checksum(sibling: RepoSibling, source: str) -> PublishedChecksum | None:
    """An LFS file's content sha256, else the git blob id of a file stored in git itself (None: no metadata)."""
    if sibling.lfs is not None and sibling.lfs.sha256:
        return PublishedChecksum("sha256", sibling.lfs.sha256.lower(), sibling.lfs.size, source)
    if sibling.blob_id:
        return PublishedChecksum("git-blob-sha1", sibling.blob_id.lower(), sibling.size, source)
    return None


def hub_file_checksum(entry: ModelEntry, url: str) -> tuple[str, PublishedChecksum | None, str | None]:
    """For a single hub file without a declared checksum: the URL pinned to the hub's commit and its checksum.

    When the hub's metadata cannot be had the file is still fetched from ``url`` (a plain mirror serves
    files without the API), checked by size only, and the reason is returned for the warning.
    """
    assert entry.repo is not None and entry.repo_file is not None
    try:
        commit, published = hub_files(entry.repo)
    except hub_errors() as exc:
        error = hub_download_error(entry.repo, exc)
        if isinstance(error, RemoteNotFound):
            raise error from exc
        return url, None, f"the hub's file metadata could not be read ({error})"
    if entry.repo_file not in published:
        raise RemoteNotFound(f"{entry.repo} at {commit} has no file {entry.repo_file!r}")
    pinned = f"{hf_endpoint()}/{entry.repo}/resolve/{commit}/{quote(entry.repo_file)}"
    expected = published[entry.repo_file]
    return pinned, expected, None if expected else f"the hub publishes no checksum for {entry.repo_file}"


def _verify_snapshot(
    root: Path, entry: ModelEntry, commit: str, published: dict[str, PublishedChecksum | None]
) -> None:
    """Check every downloaded file against the hub's checksum for ``commit``; ChecksumMismatch names the bad ones."""
    problems: list[str] = []
    checked = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        if name not in published:
            problems.append(f"{name}: not a file of {entry.repo}@{commit}")
            continue
        expected = published[name]
        if expected is None:
            logger.warning("%s: the hub publishes no checksum for %s; only its presence is checked", entry.name, name)
            continue
        problems.extend(f"{name}: {problem}" for problem in mismatches(path, expected))
        checked += 1
    if problems:
        raise ChecksumMismatch(
            f"download of {entry.repo} for {entry.name!r} does not match the hub's checksums "
            f"({'; '.join(problems)}); nothing was installed"
        )
    logger.info("%s: %d files match the checksums the hub publishes for %s@%s", entry.name, checked, entry.repo,
                commit)  # fmt: skip


def hub_errors() -> tuple[type[BaseException], ...]:
    """What a failed ``snapshot_download`` raises: hub errors are OSError, except the HTTP client's own.

    huggingface_hub lets transport errors of its HTTP client through once its retries are spent
    (``httpx2`` in 2.x, ``httpx`` in 1.x, ``requests`` in 0.x; only the imported ones can occur), and
    raises ValueError for an invalid repository id.
    """
    clients = (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException"))
    found = [getattr(sys.modules[name], attr) for name, attr in clients if name in sys.modules]
    return (OSError, ValueError, *(cls for cls in found if isinstance(cls, type)))


def hub_download_error(repo: str, exc: BaseException) -> DownloadError:
    """RemoteNotFound when the hub says the repository or revision does not exist, else DownloadError."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    detail = " ".join(str(exc).split())  # hub messages span several lines
    detail = detail if len(detail) <= 300 else detail[:297] + "..."
    message = f"could not download {repo} from {hf_endpoint()}: {type(exc).__name__}: {detail}"
    missing = isinstance(exc, (RepositoryNotFoundError, RevisionNotFoundError)) and not isinstance(exc, GatedRepoError)
    return RemoteNotFound(message) if missing else DownloadError(message)


def _progress_tqdm(progress: Progress) -> type:
    """A tqdm class that mirrors huggingface_hub's byte counts into ``progress`` (its progress hook).

    The bars are disabled, and a disabled tqdm neither counts nor keeps ``unit``, so each bar counts
    its own bytes.  huggingface_hub >= 0.33 reports a snapshot on shared bars (bytes received and bytes
    written, whose totals it raises as it learns file sizes); older releases use one bar per file, of
    which ``model.bin`` is nearly all the bytes.  The largest bar is therefore the download's progress
    in every version, where a sum would count bytes twice.
    """
    from tqdm.auto import tqdm

    bars: list[Any] = []
    lock = threading.Lock()

    class _Tqdm(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            self.counts_bytes = kwargs.get("unit") == "B"
            self.count = int(kwargs.get("initial") or 0)
            super().__init__(*args, **kwargs)
            if self.counts_bytes:
                with lock:
                    bars.append(self)
                self.publish()

        def update(self, n: float | None = 1) -> bool | None:
            if self.counts_bytes and n:
                self.count += int(n)
                self.publish()
            return super().update(n)

        def publish(self) -> None:
            with lock:
                done = max(bar.count for bar in bars)
                total = max(int(bar.total or 0) for bar in bars)
            progress.update(downloaded=done, total=total or None)

    return _Tqdm
