"""A download's state, updated by the worker and read by the REST API and the CLI's progress line."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Progress:
    """A download's state, shared with the REST API (read from other threads; plain fields only)."""

    name: str
    state: str = "queued"  # queued | waiting | downloading | verifying | extracting | done | error
    downloaded: int = 0
    total: int | None = None
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False)
    started: float = field(default_factory=time.time)
    finished_at: float | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    on_update: Callable[[Progress], None] | None = field(default=None, repr=False)

    def update(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self, key, value)
        if self.on_update is not None:
            self.on_update(self)

    def finish(self, error: str | None = None) -> None:
        self.update(state="error" if error else "done", error=error, finished_at=time.time())
        self.done.set()

    @property
    def active(self) -> bool:
        return not self.done.is_set()

    def to_dict(self) -> dict[str, Any]:
        fraction = round(self.downloaded / self.total, 4) if self.total else None
        return {
            "state": self.state,
            "downloaded_bytes": self.downloaded,
            "total_bytes": self.total,
            "fraction": fraction,
            "error": self.error,
        }
