"""Resident memory of a process tree, for the benchmarks.

PocketSphinx decodes in worker processes, so a server's or session's memory is its own RSS plus its
descendants'; measuring the parent alone would hide most of it.
"""

from __future__ import annotations

import os
from pathlib import Path


def tree_rss_mb(pid: int | None = None) -> float:
    root = os.getpid() if pid is None else pid
    total_kb = 0
    for proc in [root, *descendants(root)]:
        try:
            lines = Path(f"/proc/{proc}/status").read_text().splitlines()
        except FileNotFoundError:
            continue  # exited between listing and reading
        total_kb += next(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return total_kb / 1024


def descendants(pid: int) -> list[int]:
    children: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return []
    for task in tasks:
        try:
            children.extend(int(c) for c in (task / "children").read_text().split())
        except FileNotFoundError:
            continue  # the thread ended between listing and reading (the pool retires idle threads)
    return [c for child in children for c in (child, *descendants(child))]
