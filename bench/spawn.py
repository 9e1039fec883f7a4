"""A ``hearline serve`` subprocess for the benchmarks, and what its process tree holds (threads).

A subprocess, so that its RSS and threads (counted with its worker processes) are the server's alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from procmem import descendants


def start_server(port: int, data_dir: str, args: list[str]) -> subprocess.Popen[bytes]:
    """Start ``hearline serve --port PORT ARGS...`` with its data in ``data_dir``; return once /health is ok."""
    env = {**os.environ, "XDG_DATA_HOME": data_dir, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "hearline.cli", "serve", "--port", str(port), "--log-level", "warning", *args]
    proc = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json().get("status") == "ok":
                return proc
        except (httpx.HTTPError, ValueError):
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become healthy")


def tree_threads(pid: int) -> int:
    """Threads of ``pid`` and its descendants."""
    total = 0
    for proc in [pid, *descendants(pid)]:
        try:
            total += len(list(Path(f"/proc/{proc}/task").iterdir()))
        except FileNotFoundError:
            continue
    return total
