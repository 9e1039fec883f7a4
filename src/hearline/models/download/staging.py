"""The model directory's consistency: one lock per model, a staging directory, installs by rename.

Staging sits in the model directory (same filesystem), so the final rename is atomic and a model
directory either exists complete or not at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

PARTIAL_DIR = ".hearline-partial"
LOCK_DIR = ".locks"


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


@contextlib.contextmanager
def model_lock(model_dir: Path, name: str) -> Iterator[None]:
    """Exclusive lock for one model across threads and processes (``flock`` per open file)."""
    lock_dir = model_dir / LOCK_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f"{safe_name(name)}.lock").open("a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def staging_dir(target: Path) -> Path:
    staging = target.parent / PARTIAL_DIR
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def replace_dir(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; an existing target (forced re-install) is swapped out first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = target.parent / PARTIAL_DIR / f"old-{target.name}-{os.getpid()}-{time.time_ns()}"
        os.rename(target, old)
    os.rename(source, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
