"""Fetching models: resumable HTTP downloads, hub snapshots, checksums, atomic installs, one download at a time.

Guarantees, because a half-written model is worse than none:
- bytes go to ``<name>.part`` next to the destination; an interrupted transfer resumes with ``Range``
  (within a pull and by the next pull);
- hub snapshots (faster-whisper) download into a temporary directory through ``huggingface_hub``, which
  resumes an interrupted file within the same pull; a pull that still fails removes that directory, so
  the next pull starts the snapshot over (huggingface_hub >= 1.0 discards partial files anyway);
- the finished file is verified (SHA-1/SHA-256 when the catalog knows one, byte size otherwise) before use;
  a mismatch deletes it and installs nothing;
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
from typing import Any

import httpx

from hearline.config import Settings
from hearline.engines.base import ModelFilesMissing
from hearline.models.catalog import FASTER_WHISPER, FASTER_WHISPER_FILES, FASTER_WHISPER_PATTERNS, ModelEntry

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
PARTIAL_DIR = ".hearline-partial"
LOCK_DIR = ".locks"


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
    """``sha256:<hex>`` / ``sha1:<hex>`` when the catalog or models.yaml publishes one."""
    if entry.sha256:
        return f"sha256:{entry.sha256}"
    return f"sha1:{entry.sha1}" if entry.sha1 else None


def verification(entry: ModelEntry) -> str | None:
    """How a download of ``entry`` is checked, in words (``models info``, ``/v1/models``); None: not downloadable.

    The sherpa-onnx release archives publish no checksum, and none is invented: their install checks
    that the extracted archive holds every file the model needs instead.
    """
    kind = entry.download_kind
    if kind is None:
        return None
    names = ", ".join(sorted(set(entry.files.values()))) or None
    if kind == "snapshot":
        needed = ", ".join(sorted(set(entry.files.values()) | set(FASTER_WHISPER_FILES)))
        return (
            "no published checksum; huggingface_hub checks each file's size against the hub "
            f"and the install checks that {needed} exist"
        )
    digest = checksum(entry)
    if digest is not None:
        size = f" and be {entry.size} bytes" if kind == "file" and entry.size else ""
        return f"the download must match {digest}{size}" + (f"; the install checks {names} exist" if names else "")
    if kind == "file":
        size = f"its size ({entry.size} bytes)" if entry.size else "that it downloaded completely"
        return f"no published checksum; the install checks {size}"
    if names:
        return f"no published checksum; the install checks that the archive holds {names}"
    return "no published checksum and no files listed: the archive is installed as it extracts"


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
            _install_archive(entry, model_dir, progress, retries)
        elif kind == "file":
            _install_file(entry, model_dir, progress, retries)
        else:
            _install_snapshot(entry, model_dir, progress)
        logger.info("installed %s in %s (%.1fs)", entry.name, target, time.perf_counter() - started)
    return target


def _staging(target: Path) -> Path:
    staging = target.parent / PARTIAL_DIR
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def _install_file(entry: ModelEntry, model_dir: Path, progress: Progress, retries: int) -> None:
    url = source_url(entry)
    assert url is not None
    target = entry.expected_files(model_dir)[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    part = _staging(target) / f"{_safe(entry.name)}--{target.name}.part"
    fetch(url, part, progress, retries=retries)
    progress.update(state="verifying")
    verify(part, entry, check_size=True)
    os.replace(part, target)


def _install_archive(entry: ModelEntry, model_dir: Path, progress: Progress, retries: int) -> None:
    url = source_url(entry)
    assert url is not None
    target = entry.install_path(model_dir)
    staging = _staging(target)
    archive_name = url.rsplit("/", 1)[-1].split("?", 1)[0]
    part = staging / f"{_safe(entry.name)}--{archive_name}.part"
    fetch(url, part, progress, retries=retries)
    progress.update(state="verifying")
    verify(part, entry, check_size=True)
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
    """A hub repository (faster-whisper models) via ``huggingface_hub.snapshot_download``.

    The endpoint is passed per call because huggingface_hub reads ``HF_ENDPOINT`` once, at import.
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
            snapshot_download(
                entry.repo,
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
        _replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, entry: ModelEntry, check_size: bool = True) -> None:
    """Check the downloaded file against the entry's checksum (and size); delete it on mismatch."""
    problems = []
    if check_size and entry.size is not None and entry.download_kind == "file":
        actual = path.stat().st_size
        if actual != entry.size:
            problems.append(f"size {actual} != expected {entry.size}")
    for algorithm, expected in (("sha256", entry.sha256), ("sha1", entry.sha1)):
        if expected:
            actual_hash = file_digest(path, algorithm)
            if actual_hash.lower() != expected.lower():
                problems.append(f"{algorithm} {actual_hash} != expected {expected}")
            break
    else:
        logger.warning("no checksum known for %s; only its content is checked", entry.name)
    if problems:
        path.unlink(missing_ok=True)
        raise ChecksumMismatch(f"downloaded file for {entry.name!r} is corrupt ({'; '.join(problems)}); removed it")


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
