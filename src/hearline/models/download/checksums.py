"""Checksums a download must match: declared in the catalog/models.yaml or published by its source.

A mismatch deletes the file, so nothing corrupt is installed or resumed.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from hearline.models.catalog import ModelEntry
from hearline.models.download.errors import ChecksumMismatch

logger = logging.getLogger(__name__)

CHUNK = 1 << 20


@dataclass(frozen=True)
class PublishedChecksum:
    """A checksum (and size) a download must match, with who published it (for messages)."""

    algorithm: str  # "sha256" | "sha1" | "git-blob-sha1" (git's object id of a file: sha1 of "blob <len>\0" + bytes)
    hexdigest: str
    size: int | None
    source: str


class ChecksumUnavailable(Exception):
    """The publisher's API gave no usable checksum; the message says why (the download is content-checked)."""


def declared_checksum(entry: ModelEntry) -> PublishedChecksum | None:
    """The catalog's or models.yaml's checksum; it always wins over one fetched at download time."""
    source = "the catalog" if entry.source == "catalog" else "models.yaml"
    if entry.sha256:
        return PublishedChecksum("sha256", entry.sha256, None, source)
    if entry.sha1:
        return PublishedChecksum("sha1", entry.sha1, None, source)
    return None


def checksum(entry: ModelEntry) -> str | None:
    """``sha256:<hex>`` / ``sha1:<hex>`` when the catalog or models.yaml gives one.

    None means the expected checksum is not known before the download: it is then asked of the publisher
    when the download starts (see :func:`verification`).
    """
    declared = declared_checksum(entry)
    return f"{declared.algorithm}:{declared.hexdigest}" if declared else None


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


def mismatches(path: Path, expected: PublishedChecksum) -> list[str]:
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
        problems.extend(mismatches(path, expected))
    else:
        logger.warning("no checksum to verify %s against (%s); only its %s checked", entry.name,
                       unverified_reason or "none is published",
                       "contents are" if entry.download_kind == "archive" else "size is")  # fmt: skip
    if problems:
        path.unlink(missing_ok=True)
        raise ChecksumMismatch(f"downloaded file for {entry.name!r} is corrupt ({'; '.join(problems)}); removed it")
    if expected is not None:
        logger.info("%s matches %s %s from %s", entry.name, expected.algorithm, expected.hexdigest, expected.source)
