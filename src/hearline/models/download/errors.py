"""What a download raises: every failure to fetch is a DownloadError, a missing model a ModelNotInstalled."""

from __future__ import annotations

from pathlib import Path

from hearline.engines.base import ModelFilesMissing


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
