"""Background downloads for the REST API and the pool: at most one per model per process."""

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

logger = logging.getLogger(__name__)


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
