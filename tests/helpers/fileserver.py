"""A local HTTP file server for download tests: Range support, request log, and transfers cut short on demand.

:class:`HubServer` adds what ``huggingface_hub.snapshot_download`` asks a Hugging Face hub for, so hub
downloads run for real against loopback (see its docstring).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar


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
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> extra response headers
    redirects: dict[str, str] = field(default_factory=dict)  # path -> absolute URL answered with 302
    broken: dict[str, int] = field(default_factory=dict)  # path -> status every GET gets (HEAD still works)
    drop: set[str] = field(default_factory=set)  # paths whose every GET ends after the headers
    missing_headers: dict[str, str] = field(default_factory=dict)  # extra headers on every 404
    lengths: dict[str, int] = field(default_factory=dict)  # path -> the Content-Length claimed (a lying server)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def gets(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == "GET" and r.path == path]


def _handler(state: FileServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def do_GET(self) -> None:
            self._answer(head=False)

        def _simple(self, status: int, payload: bytes, headers: dict[str, str], head: bool) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if not head:
                self.wfile.write(payload)

        def _answer(self, head: bool) -> None:
            path = self.path.split("?", 1)[0]
            with state.lock:
                state.requests.append(Request("HEAD" if head else "GET", path, self.headers.get("Range")))
                body = state.files.get(path)
                extra = dict(state.headers.get(path, {}))
                redirect = state.redirects.get(path)
                broken = None if head else state.broken.get(path)
                cut = None if head else state.cut.pop(path, 0 if path in state.drop else None)
            if redirect is not None:
                self._simple(302, b"", {**extra, "Location": redirect}, head)
                return
            if body is None:
                self._simple(404, b"not found", state.missing_headers, head)
                return
            if broken is not None:
                self._simple(broken, b"server error", {}, head)
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
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(state.lengths.get(path, len(chunk))))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if head:
                return
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

    def add(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> str:
        self.state.files[path] = body
        if headers:
            self.state.headers[path] = dict(headers)
        return self.url + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


S = TypeVar("S", bound="FileServer")


@contextmanager
def file_server(kind: type[S] = FileServer) -> Iterator[S]:  # type: ignore[assignment]
    server = kind()
    server.thread.start()
    try:
        yield server
    finally:
        server.close()


class HubServer(FileServer):
    """A stand-in Hugging Face hub serving model repositories the way ``snapshot_download`` reads them.

    What huggingface_hub 2.x asks for (and 0.x/1.x, which read ``siblings`` instead of the tree):

    - ``GET /api/models/{repo}/revision/{rev}``: ``id``, ``sha`` (the commit) and ``siblings``;
    - ``GET /api/models/{repo}/tree/{commit}?recursive=...``: one ``{type, path, size, oid[, lfs]}`` per file;
    - ``HEAD /{repo}/resolve/{commit}/{file}``: ``X-Repo-Commit``, ``ETag`` and ``Content-Length``; for a
      large (LFS) file a 302 to another origin (``cdn``) carrying ``X-Linked-Etag``/``X-Linked-Size``,
      whose metadata huggingface_hub then uses without following the redirect;
    - ``GET`` of the same URL (or the CDN location) for the bytes, with ``Range`` for resumption.

    Unknown repositories answer 404 with ``X-Error-Code: RepoNotFound`` like the real hub.
    """

    def __init__(self, cdn: FileServer) -> None:
        super().__init__()
        self.cdn = cdn
        self.state.missing_headers = {"X-Error-Code": "RepoNotFound"}

    def add_repo(
        self,
        repo: str,
        files: dict[str, bytes],
        lfs: tuple[str, ...] = ("model.bin",),
        served: dict[str, bytes] | None = None,
    ) -> str:
        """Publish ``files`` as ``repo`` at ``main``; returns the commit hash.

        The metadata (``siblings`` with ``blobId``/``size``/``lfs.sha256``, as ``?blobs=true`` returns
        them, and the tree) describes ``files``; ``served`` replaces the bytes actually sent for some
        files, to stand in for a corrupted transfer or a tampered mirror.
        """
        commit = hashlib.sha1(repo.encode() + b"".join(files[name] for name in sorted(files))).hexdigest()
        siblings = [self._sibling(name, data, name in lfs) for name, data in files.items()]
        info = {"id": repo, "modelId": repo, "sha": commit, "private": False, "siblings": siblings}
        tree = [self._tree_entry(name, data, name in lfs) for name, data in files.items()]
        sent = {**files, **(served or {})}
        for revision in ("main", commit):
            self.add(f"/api/models/{repo}/revision/{revision}", _json(info), {"Content-Type": "application/json"})
            self.add(f"/api/models/{repo}/tree/{revision}", _json(tree), {"Content-Type": "application/json"})
            for name, data in files.items():
                self._add_file(repo, revision, commit, name, data, name in lfs, sent[name])
        return commit

    @staticmethod
    def _sibling(name: str, data: bytes, lfs: bool) -> dict[str, object]:
        sibling: dict[str, object] = {"rfilename": name, "size": len(data), "blobId": _git_blob_id(data)}
        if lfs:
            sibling["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return sibling

    @staticmethod
    def _tree_entry(name: str, data: bytes, lfs: bool) -> dict[str, object]:
        entry: dict[str, object] = {"type": "file", "path": name, "size": len(data), "oid": _git_blob_id(data)}
        if lfs:
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    def _add_file(self, repo: str, revision: str, commit: str, name: str, data: bytes, lfs: bool, sent: bytes) -> None:
        path = f"/{repo}/resolve/{revision}/{name}"
        if not lfs:
            self.add(path, sent, {"X-Repo-Commit": commit, "ETag": f'"{_git_blob_id(data)}"'})
            return
        sha256 = hashlib.sha256(data).hexdigest()
        location = self.cdn.add(f"/lfs/{sha256}", sent, {"ETag": f'"{sha256}"'})
        self.state.redirects[path] = location
        self.state.headers[path] = {
            "X-Repo-Commit": commit,
            "ETag": f'"{_git_blob_id(data)}"',
            "X-Linked-Etag": f'"{sha256}"',
            "X-Linked-Size": str(len(data)),
        }

    def lfs_path(self, data: bytes) -> str:
        """The CDN path serving an LFS file's bytes (to cut or break its transfers)."""
        return f"/lfs/{hashlib.sha256(data).hexdigest()}"


@contextmanager
def hub_server() -> Iterator[HubServer]:
    """A hub and its CDN on two loopback ports (two origins, as huggingface.co and its LFS CDN are)."""
    with file_server() as cdn:
        hub = HubServer(cdn)
        hub.thread.start()
        try:
            yield hub
        finally:
            hub.close()


class GitHubServer(FileServer):
    """A stand-in github.com and api.github.com on one loopback port, for release-asset downloads.

    ``/{owner}/{repo}/releases/download/{tag}/{name}`` serves an asset's bytes and
    ``/repos/{owner}/{repo}/releases/tags/{tag}`` the release as the REST API does, with each asset's
    ``name``, ``size`` and ``digest`` (``sha256:<hex>``; GitHub has published one for every asset since
    June 2025, older assets have ``null``).  Point ``HEARLINE_GITHUB_URL`` and ``HEARLINE_GITHUB_API``
    at :attr:`url`.
    """

    def add_release(
        self,
        owner: str,
        repo: str,
        tag: str,
        assets: dict[str, bytes],
        digests: dict[str, str | None] | None = None,
        embedded: bool = True,
    ) -> dict[str, str]:
        """Publish ``assets``; returns each one's download URL.

        ``digests`` overrides what the API publishes for some assets (``None``: no digest, as for
        assets uploaded before GitHub computed them).  With ``embedded=False`` the release object lists
        no assets and the ``/releases/{id}/assets`` listing serves them one per page, linked by
        ``Link: rel="next"``, as for a release with many assets.
        """
        release_id = abs(hash((owner, repo, tag))) % 10**9
        urls = {
            name: self.add(f"/{owner}/{repo}/releases/download/{tag}/{name}", data) for name, data in assets.items()
        }
        objects = [
            {
                "name": name,
                "size": len(data),
                "digest": (digests or {}).get(name, f"sha256:{hashlib.sha256(data).hexdigest()}"),
                "browser_download_url": urls[name],
            }
            for name, data in assets.items()
        ]
        api = {"Content-Type": "application/json"}
        release = {"id": release_id, "tag_name": tag, "assets": objects if embedded else []}
        self.add(f"/repos/{owner}/{repo}/releases/tags/{tag}", _json(release), api)
        listing = f"/repos/{owner}/{repo}/releases/{release_id}/assets"
        for page, asset in enumerate(objects):
            here = listing if page == 0 else f"{listing}/page{page + 1}"
            headers = dict(api)
            if page + 1 < len(objects):
                headers["Link"] = f'<{self.url}{listing}/page{page + 2}>; rel="next"'
            self.add(here, _json([asset]), headers)
        return urls


@contextmanager
def github_server() -> Iterator[GitHubServer]:
    with file_server(GitHubServer) as server:
        yield server


def _json(data: object) -> bytes:
    return json.dumps(data).encode()


def _git_blob_id(data: bytes) -> str:
    """The git object id of a file, which the hub reports as ``oid`` and as the ETag of small files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


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
