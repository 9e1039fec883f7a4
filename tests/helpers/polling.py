"""Waiting for what must eventually happen: a deadline for correctness, never a timing assertion."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

STEP_S = 0.05


def eventually(check: Callable[[], object], timeout: float = 120.0, what: str = "condition") -> None:
    """Poll ``check()`` until it is true; an AssertionError naming ``what`` if it never is."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(STEP_S)


async def until(check: Callable[[], object], timeout: float = 120.0, what: str = "condition") -> None:
    """:func:`eventually` for a test's event loop: the loop keeps running between looks."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(STEP_S)
