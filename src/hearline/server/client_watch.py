"""Work for a REST client that has gone stops: decoding, queued and running transcription alike.

Once a request's whole body has been read, the next ASGI message is the client's ``http.disconnect``;
a task waits for it and sets a :class:`threading.Event` that worker threads check where work can stop:
between decoded packets, before a queued job starts, and after each segment an engine emits.  The
work in flight ends with :class:`ClientGone` (a Starlette ``ClientDisconnect``, so the app's handler
ends the ASGI cycle).  Threads are never killed mid-call: the scheduler's lane stays held until the
thread returns, so what it admits next is what the cores can take.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import ClientDisconnect
from starlette.types import Receive

T = TypeVar("T")


class ClientGone(ClientDisconnect):
    """Raised in a worker thread: the client that asked for this work has disconnected."""


class ClientWatch:
    """Notices a REST client's disconnect while its request is being worked on (start after the body is read)."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.gone = threading.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin watching: only once the body has been read, since the watch consumes every later message."""
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="client-watch")

    async def stop(self) -> None:
        """Stop watching (before a response that listens for the disconnect itself, and at the end)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.gone.set()
                return

    def check(self, *_: Any) -> None:
        """Raise :class:`ClientGone` if the client has left (an engine's ``on_segment`` callback)."""
        if self.gone.is_set():
            raise ClientGone

    def guard(self, fn: Callable[..., T]) -> Callable[..., T]:
        """``fn`` that does not start for a client that left while the job waited for its turn."""

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> T:
            self.check()
            return fn(*args, **kwargs)

        return guarded
