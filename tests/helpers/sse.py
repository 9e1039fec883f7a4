"""A Server-Sent Events reader for ``/events`` (the captions feed), as ``curl -N`` or an overlay reads it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

SSE_WAIT_S = 120.0  # how long SSEClient.wait_for waits for what must eventually arrive (never a timing assertion)


class SSEClient:
    """Reads ``/events`` in a thread and keeps every event (name, data, id)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.events: list[tuple[str, dict[str, Any], int | None]] = []
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=httpx.Timeout(30.0, read=None))
        self._stream = self._client.stream("GET", url + "/events", headers=headers or {})
        self._response = self._stream.__enter__()
        assert self._response.status_code == 200
        assert self._response.headers["content-type"].startswith("text/event-stream")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        name, data, eid = "message", "", None
        try:
            for line in self._response.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                elif line.startswith("id:"):
                    eid = int(line[3:].strip())
                elif line == "" and data:
                    with self._lock:
                        self.events.append((name, json.loads(data), eid))
                    name, data, eid = "message", "", None
        except (httpx.HTTPError, RuntimeError, ValueError):
            return  # closed by close() or by the server

    def snapshot(self) -> list[tuple[str, dict[str, Any], int | None]]:
        with self._lock:
            return list(self.events)

    def wait_for(self, predicate: Callable[[list[tuple[str, dict[str, Any], int | None]]], bool]) -> bool:
        deadline = time.monotonic() + SSE_WAIT_S
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):
                return True
            time.sleep(0.1)
        return predicate(self.snapshot())

    def finals(self) -> list[dict[str, Any]]:
        return [d for n, d, _ in self.snapshot() if n == "captions" and d["is_final"]]

    def close(self) -> None:
        self._stream.__exit__(None, None, None)
        self._client.close()
        self._thread.join(timeout=10)
