"""A local HTTP file server for download tests: Range support, request log, and transfers cut short on demand."""

from __future__ import annotations

import io
import re
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Request:
    method: str
    path: str
    range: str | None


@dataclass
class FileServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    cut: dict[str, int] = field(default_factory=dict)  # path -> bytes to send before dropping (next request only)
    delay_s: float = 0.0  # pause between 64 KiB chunks (to make concurrent downloads overlap)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def gets(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == "GET" and r.path == path]


def _handler(state: FileServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            with state.lock:
                state.requests.append(Request("GET", path, self.headers.get("Range")))
                body = state.files.get(path)
                cut = state.cut.pop(path, None)
            if body is None:
                payload = b"not found"
                self.send_response(404)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            start = 0
            match = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
            if match:
                start = int(match.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            chunk = body[start:]
            self.send_header("Content-Length", str(len(chunk)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if cut is not None:
                self.wfile.write(chunk[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            for offset in range(0, len(chunk), 65536):
                self.wfile.write(chunk[offset : offset + 65536])
                if state.delay_s:
                    time.sleep(state.delay_s)

    return Handler


class FileServer:
    def __init__(self) -> None:
        self.state = FileServerState()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, path: str, body: bytes) -> str:
        self.state.files[path] = body
        return self.url + path


@contextmanager
def file_server() -> Iterator[FileServer]:
    server = FileServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def make_tar_bz2(files: dict[str, bytes]) -> bytes:
    """A .tar.bz2 archive (in memory) holding ``files`` (relative paths -> contents)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tar_directory(directory: Path, arcname: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as tf:
        tf.add(directory, arcname=arcname)
    return buffer.getvalue()
