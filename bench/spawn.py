"""A ``hearline serve`` subprocess for the benchmarks, and what its process tree holds (threads).

A subprocess, so that its RSS and threads (counted with its worker processes) are the server's alone.
The bench scripts put the repository root on ``sys.path`` before importing this (for ``tests.helpers``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.server import free_port, says_ok, wait_spawned

from procmem import descendants


def start_server(port: int, data_dir: str, args: list[str]) -> subprocess.Popen[bytes]:
    """Start ``hearline serve --port PORT ARGS...`` with its data in ``data_dir``; return once /health is ok."""
    env = {**os.environ, "XDG_DATA_HOME": data_dir, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "hearline.cli", "serve", "--port", str(port), "--log-level", "warning", *args]
    proc = subprocess.Popen(command, env=env)
    try:
        wait_spawned(proc, f"http://127.0.0.1:{port}/health", says_ok, timeout_s=180)
    except RuntimeError:
        proc.kill()
        raise
    return proc


@dataclass(frozen=True)
class Spawned:
    port: int
    process: subprocess.Popen[bytes]
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def spawned(args: list[str]) -> Iterator[Spawned]:
    """A ``hearline serve`` on a free port with a data directory of its own, stopped when the block ends."""
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        server = Spawned(port, start_server(port, data_dir, args), Path(data_dir))
        try:
            yield server
        finally:
            server.process.terminate()
            server.process.wait(timeout=60)


def tree_threads(pid: int) -> int:
    """Threads of ``pid`` and its descendants."""
    total = 0
    for proc in [pid, *descendants(pid)]:
        try:
            total += len(list(Path(f"/proc/{proc}/task").iterdir()))
        except FileNotFoundError:
            continue
    return total
