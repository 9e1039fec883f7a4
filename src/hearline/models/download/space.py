"""Free space before bytes are written: a download that cannot fit is refused, not left half-written on a full disk.

The need is what the catalog or models.yaml declares (archives count twice: the archive and what it
extracts to), checked before the first request; a source that declares nothing is checked again when
its ``Content-Length`` arrives.  Downloads running beside it reserve what they have still to write.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hearline.models.catalog import ModelEntry
from hearline.models.download.errors import DownloadError

# Left free after any download: the logs, the lock files and the rest of the machine need room too.
HEADROOM_BYTES = 64 * 1024 * 1024


class InsufficientSpace(DownloadError):
    """The model directory's filesystem has too little room for the download; nothing was fetched."""

    def __init__(self, name: str, needed: int, free: int, directory: Path) -> None:
        super().__init__(
            f"not enough free space for {name!r}: it needs {_mb(needed)} MB (with {_mb(HEADROOM_BYTES)} MB "
            f"left over) in {directory}, which has {_mb(free)} MB free; free some space or set another "
            "--model-dir"
        )
        self.needed = needed
        self.free = free


def _mb(count: int) -> str:
    return f"{count / 1_000_000:,.0f}"


def needed_bytes(entry: ModelEntry) -> int:
    """Bytes the install of ``entry`` writes, from its declared sizes (0 when it declares none)."""
    download = entry.size or 0
    installed = int(entry.disk_mb * 1_000_000) if entry.disk_mb else download
    if entry.download_kind == "archive":
        return download + installed  # the .part archive stays until it is extracted
    return max(download, installed)


def free_bytes(directory: Path) -> int:
    """Free bytes on the filesystem ``directory`` is (or will be) created on."""
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def require_space(name: str, directory: Path, needed: int, reserved: int = 0) -> None:
    """Raise :class:`InsufficientSpace` unless ``needed`` bytes fit beside ``reserved`` ones and the headroom."""
    free = free_bytes(directory) - reserved
    if needed + HEADROOM_BYTES > free:
        raise InsufficientSpace(name, needed, max(0, free), directory)
