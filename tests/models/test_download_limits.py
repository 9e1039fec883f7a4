"""Downloads that refuse instead of collapsing: free space checked before bytes are written, a cap on how many run.

Real transfers against a loopback file server that logs every request; the free space is the real disk's.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

from hearline.models import download
from hearline.models.download.space import InsufficientSpace, free_bytes
from hearline.models.registry import all_entries
from tests.helpers.fileserver import FileServer
from tests.helpers.metrics import metric, scrape
from tests.helpers.polling import eventually
from tests.helpers.server import running_server
from tests.models.downloads import settings_with

PAYLOAD = os.urandom(600_000)  # ten 64 KiB chunks: with a delay per chunk a transfer takes a while


pytestmark = pytest.mark.usefixtures("online")  # tests/models/conftest.py: only their own loopback servers


def _ggml(url: str, size: int | None = None) -> dict:
    """A single-file (whisper.cpp) models.yaml entry fetched from ``url``."""
    block: dict = {"url": url, "sha256": hashlib.sha256(PAYLOAD).hexdigest()}
    if size is not None:
        block["size"] = size
    return {"engine": "whisper.cpp", "file": url.rsplit("/", 1)[-1], "download": block}


def test_a_declared_size_beyond_the_free_space_is_refused_before_any_request(
    server: FileServer, tmp_path: Path
) -> None:
    url = server.add("/huge.bin", PAYLOAD)
    huge = free_bytes(tmp_path) + 10**9
    settings = settings_with(tmp_path, {"huge": _ggml(url, size=huge)})
    entry = all_entries(settings)["huge"]

    with pytest.raises(InsufficientSpace, match="not enough free space for 'huge'"):
        download.pull(entry, settings)
    manager = download.DownloadManager(settings)
    with pytest.raises(InsufficientSpace):
        manager.start(entry)
    assert server.state.requests == []
    assert manager.get("huge") is None and manager.active() == []
    assert not (settings.model_dir / "huge.bin").exists()


def test_a_content_length_beyond_the_free_space_stops_before_writing(server: FileServer, tmp_path: Path) -> None:
    url = server.add("/lying.bin", PAYLOAD)
    server.state.lengths["/lying.bin"] = free_bytes(tmp_path) + 10**9  # nothing declared: the server's word
    settings = settings_with(tmp_path, {"lying": _ggml(url)})
    entry = all_entries(settings)["lying"]

    with pytest.raises(InsufficientSpace, match="not enough free space for 'lying'"):
        download.pull(entry, settings, retries=0)
    assert len(server.state.gets("/lying.bin")) == 1  # not retried: more tries cannot make room
    partial = settings.model_dir / download.PARTIAL_DIR
    assert not partial.exists() or all(p.stat().st_size == 0 for p in partial.iterdir())


def test_running_downloads_reserve_what_they_still_have_to_write(server: FileServer, tmp_path: Path) -> None:
    server.state.delay_s = 0.3
    share = int(free_bytes(tmp_path) * 0.6)  # each fits alone, the two do not
    settings = settings_with(
        tmp_path,
        {"first": _ggml(server.add("/first.bin", PAYLOAD), size=share),
         "second": _ggml(server.add("/second.bin", PAYLOAD), size=share)},
    )  # fmt: skip
    entries = all_entries(settings)
    manager = download.DownloadManager(settings)
    first = manager.start(entries["first"])
    with pytest.raises(InsufficientSpace):
        manager.start(entries["second"])
    assert first.active and server.state.gets("/second.bin") == []
    assert first.done.wait(60)
    assert first.state == "error"  # the declared size was a fiction: the size check after the transfer says so


def test_past_max_downloads_the_server_answers_429_then_accepts_when_one_finishes(
    server: FileServer, tmp_path: Path
) -> None:
    server.state.delay_s = 0.2
    settings = settings_with(
        tmp_path,
        {"first": _ggml(server.add("/first.bin", PAYLOAD)), "second": _ggml(server.add("/second.bin", PAYLOAD))},
        max_downloads=1,
    )
    with running_server(settings) as srv:
        assert httpx.post(srv.url + "/v1/models/first").status_code == 202
        refused = httpx.post(srv.url + "/v1/models/second")
        assert refused.status_code == 429 and refused.headers["retry-after"] == "30"
        error = refused.json()["error"]
        assert error["code"] == "too_many_downloads" and "(first)" in error["message"]
        assert server.state.gets("/second.bin") == []
        assert metric(scrape(srv.url), "hearline_refusals_total", reason="busy") == 1

        eventually(lambda: httpx.get(srv.url + "/v1/models/first").json()["status"] == "installed", 60,
                   "the first download to finish")  # fmt: skip
        assert httpx.post(srv.url + "/v1/models/second").status_code == 202
        assert httpx.post(srv.url + "/v1/models/first").status_code == 200  # installed: not downloaded again


def test_pulling_a_model_too_big_for_the_disk_is_507(server: FileServer, tmp_path: Path) -> None:
    url = server.add("/huge.bin", PAYLOAD)
    settings = settings_with(tmp_path, {"huge": _ggml(url, size=free_bytes(tmp_path) + 10**9)})
    with running_server(settings) as srv:
        refused = httpx.post(srv.url + "/v1/models/huge")
        assert refused.status_code == 507
        assert refused.json()["error"]["code"] == "insufficient_storage"
        assert "not enough free space" in refused.json()["error"]["message"]
        assert httpx.get(srv.url + "/v1/models/huge").json()["status"] == "available"
        assert metric(scrape(srv.url), "hearline_refusals_total", reason="insufficient_storage") == 1
    assert server.state.requests == []
