"""Real uvicorn servers on free loopback ports, in background threads, as the tests and benches run them."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from hearline.config import Settings
from hearline.server.app import create_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerThread:
    """A real uvicorn server for one app, in a background thread, on a free loopback port."""

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        self.port = port or free_port()
        self.config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", **config)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextmanager
def serving(servers: list[uvicorn.Server]) -> Iterator[threading.Thread]:
    """Run ``hearline.server.run.run_servers(servers)`` (what ``hearline serve`` runs) in a thread.

    Yields once every listener has started; on exit stops the main server, which stops the others.
    """
    import asyncio

    from hearline.server import run

    thread = threading.Thread(target=asyncio.run, args=(run.run_servers(servers),), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not all(s.started for s in servers):
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("servers did not start")
            time.sleep(0.05)
        yield thread
    finally:
        servers[0].should_exit = True
        thread.join(timeout=60)


@contextmanager
def running_server(settings: Settings | None = None, **overrides: Any) -> Iterator[ServerThread]:
    """Start ``create_app(settings)`` and wait until the default model is loaded."""
    settings = settings or Settings.load(**overrides)
    app = create_app(settings)
    server = ServerThread(app).start()
    try:
        healthy_within(server.url)  # some tests serve a default model that cannot load
        yield server
    finally:
        server.stop()


def answering(url: str, check: Callable[[httpx.Response], bool], timeout_s: float = 120, **get: Any) -> bool:
    """Poll ``GET url`` until ``check(response)``; False if it never did. ``get``: more httpx.get arguments."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check(httpx.get(url, timeout=5, **get)):
                return True
        except (httpx.HTTPError, ValueError):
            pass  # not listening yet, or not JSON yet
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def is_200(response: httpx.Response) -> bool:
    return response.status_code == 200


def says_ok(response: httpx.Response) -> bool:
    """``/health`` once the default model is loaded."""
    return bool(response.json().get("status") == "ok")


def healthy_within(url: str, timeout_s: float = 120, **get: Any) -> bool:
    """Until ``/health`` says ok; False if it never did (a server whose default model cannot load)."""
    return answering(url + "/health", says_ok, timeout_s, **get)


def wait_healthy(url: str, timeout_s: float = 120, **get: Any) -> None:
    if not healthy_within(url, timeout_s, **get):
        raise RuntimeError(f"{url} did not become healthy")


def wait_spawned(
    process: subprocess.Popen[Any], url: str, check: Callable[[httpx.Response], bool] = is_200, timeout_s: float = 120
) -> None:
    """Until a server started as a process answers ``url`` as ``check`` wants; its output if it exited first."""
    deadline = time.monotonic() + timeout_s
    while not answering(url, check, timeout_s=0):
        if process.poll() is not None:
            output = process.stderr or process.stdout
            said = output.read() if output else ""
            if isinstance(said, bytes):
                said = said.decode(errors="replace")
            raise RuntimeError(f"the server exited with {process.returncode}: {said[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer in {timeout_s} s")
        time.sleep(0.2)
