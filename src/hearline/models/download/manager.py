"""Background downloads for the REST API and the pool: one per model, a few at a time, each checked to fit."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from hearline.config import Settings
from hearline.engines.base import ModelFilesMissing
from hearline.models.catalog import ModelEntry
from hearline.models.download.errors import DownloadError
from hearline.models.download.install import pull
from hearline.models.download.progress import Progress
from hearline.models.download.space import needed_bytes, require_space

logger = logging.getLogger(__name__)

# A model download rarely finishes sooner; the client is told to look again then (Retry-After).
DOWNLOAD_RETRY_S = 30


class TooManyDownloads(DownloadError):
    """``--max-downloads`` downloads are running; this one was not started."""

    def __init__(self, limit: int, running: list[str]) -> None:
        super().__init__(
            f"the server is already downloading {limit} model(s) ({', '.join(running)}), its maximum "
            "(--max-downloads); retry when one finishes"
        )
        self.limit = limit
        self.retry_after = DOWNLOAD_RETRY_S


class DownloadManager:
    """One download per model per process, at most ``settings.max_downloads`` at once, none that cannot fit.

    The limit and the free-space check are decided under one lock when a download is claimed, so a burst
    of requests cannot start more than the limit or together overcommit the disk: each running download
    reserves the bytes it has still to write.  Progress stays readable while it runs and after it ends.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._jobs: dict[str, Progress] = {}
        self._needs: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Progress | None:
        return self._jobs.get(name)

    def active(self) -> list[str]:
        return [name for name, job in self._jobs.items() if job.active]

    def start(self, entry: ModelEntry) -> Progress:
        """Start downloading in a background thread (or return the download already running).

        Raises :class:`TooManyDownloads` or :class:`~.space.InsufficientSpace` without starting anything.
        """
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
            running = self.active()
            limit = self.settings.max_downloads
            if limit > 0 and len(running) >= limit:
                raise TooManyDownloads(limit, running)
            need = needed_bytes(entry)
            require_space(entry.name, self.settings.model_dir, need, reserved=self._reserved(running))
            self._needs[entry.name] = need
            job = self._jobs[entry.name] = Progress(entry.name)
            return job, True

    def _reserved(self, running: list[str]) -> int:
        """Bytes the running downloads have still to write (what they declared, less what they wrote)."""
        return sum(max(0, self._needs.get(name, 0) - self._jobs[name].downloaded) for name in running)

    def _run(self, entry: ModelEntry, job: Progress) -> None:
        try:
            pull(entry, self.settings, progress=job)
        except (DownloadError, ModelFilesMissing, OSError) as exc:
            logger.error("download of %s failed: %s", entry.name, exc)
