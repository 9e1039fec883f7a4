"""Fetching models: resumable HTTP downloads, hub snapshots, checksums, atomic installs, one download at a time.

Guarantees, because a half-written model is worse than none:
- bytes go to ``<name>.part`` next to the destination; an interrupted transfer resumes with ``Range``
  (within a pull and by the next pull) (:mod:`.http`);
- hub snapshots (faster-whisper) download into a temporary directory through ``huggingface_hub``; a pull
  that still fails removes that directory, so the next pull starts the snapshot over (:mod:`.hub`);
- the finished file is verified before use against a checksum its publisher publishes: the catalog's or
  models.yaml's SHA-1/SHA-256 when it gives one, else the one fetched when the download starts (the hub's
  per-file metadata of the downloaded commit, or GitHub's release-asset digest, :mod:`.github`).  A mismatch
  deletes the download and installs nothing; where the publisher gives no checksum the download goes on,
  checked by size and contents only, and a warning says why (:mod:`.checksums`);
- archives are extracted into a temporary directory on the same filesystem and renamed into place, so a
  model directory either exists complete or not at all; an ``fcntl`` lock per model makes a second process
  (or thread) wait and then find the model installed (:mod:`.staging`, :mod:`.install`);
- offline mode (``HEARLINE_OFFLINE=1``, ``settings.offline`` or ``HF_HUB_OFFLINE=1``) never opens a socket:
  a missing model is a :class:`ModelNotInstalled` naming the expected files and the command to fetch them;
- every failure to fetch is a :class:`DownloadError` (whatever HTTP client huggingface_hub uses), and
  :class:`RemoteNotFound` when the server says the file or repository does not exist (:mod:`.errors`).
"""

from hearline.models.download.checksums import (
    ChecksumUnavailable,
    PublishedChecksum,
    checksum,
    declared_checksum,
    file_digest,
    verify,
)
from hearline.models.download.errors import (
    ChecksumMismatch,
    DownloadError,
    ModelNotInstalled,
    ModelUnavailable,
    OfflineMode,
    RemoteNotFound,
)
from hearline.models.download.github import GitHubAsset, github_release_asset, github_release_checksum
from hearline.models.download.http import fetch
from hearline.models.download.hub import hub_files
from hearline.models.download.install import extract, install_package, pull, remove, verification
from hearline.models.download.manager import DownloadManager
from hearline.models.download.progress import Progress
from hearline.models.download.sources import hf_endpoint, is_offline, missing_message, source_url
from hearline.models.download.staging import LOCK_DIR, PARTIAL_DIR, model_lock, replace_dir

__all__ = [
    "LOCK_DIR",
    "PARTIAL_DIR",
    "ChecksumMismatch",
    "ChecksumUnavailable",
    "DownloadError",
    "DownloadManager",
    "GitHubAsset",
    "ModelNotInstalled",
    "ModelUnavailable",
    "OfflineMode",
    "Progress",
    "PublishedChecksum",
    "RemoteNotFound",
    "checksum",
    "declared_checksum",
    "extract",
    "fetch",
    "file_digest",
    "github_release_asset",
    "github_release_checksum",
    "hf_endpoint",
    "hub_files",
    "install_package",
    "is_offline",
    "missing_message",
    "model_lock",
    "pull",
    "remove",
    "replace_dir",
    "source_url",
    "verification",
    "verify",
]
