"""Downloads against a local HTTP server: verify, resume, refuse offline, lock, install atomically.

Hub snapshots (faster-whisper) run through the real ``huggingface_hub.snapshot_download`` against
``tests.helpers.fileserver.HubServer``, a loopback stand-in for the hub and its LFS CDN serving the tiny
CTranslate2 model the faster-whisper tests build.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hearline.config import Settings
from hearline.models import download
from hearline.models.download import (
    ChecksumMismatch,
    DownloadError,
    ModelNotInstalled,
    OfflineMode,
)
from hearline.models.registry import all_entries
from hearline.models.resolve import load_engine, resolve_model
from tests.helpers.fileserver import (
    FileServer,
    GitHubServer,
    github_server,
    make_tar_bz2,
)
from tests.models.downloads import leftovers, settings_with

SUBDIR = "sherpa-onnx-test-model-2026-01-01"
ARCHIVE_PATH = f"/asr-models/{SUBDIR}.tar.bz2"
# ~1.5 MB of incompressible bytes so a transfer can be cut in the middle
MODEL_BYTES = os.urandom(1_500_000)
ARCHIVE = make_tar_bz2(
    {f"{SUBDIR}/model.int8.onnx": MODEL_BYTES, f"{SUBDIR}/tokens.txt": b"<blk> 0\n", f"{SUBDIR}/README.md": b"x"}
)


pytestmark = pytest.mark.usefixtures("online")  # tests/models/conftest.py: only their own loopback servers


def _archive_entry(url: str, sha256: str | None) -> dict:
    download_block = {"url": url, "archive_subdir": SUBDIR}
    if sha256:
        download_block["sha256"] = sha256
    return {
        "type": "sense_voice",
        "dir": SUBDIR,
        "files": {"model": "model.int8.onnx", "tokens": "tokens.txt"},
        "download": download_block,
    }


def test_archive_download_verifies_and_installs_atomically(server: FileServer, tmp_path: Path) -> None:
    url = server.add(ARCHIVE_PATH, ARCHIVE)
    settings = settings_with(tmp_path, {"test-model": _archive_entry(url, hashlib.sha256(ARCHIVE).hexdigest())})
    entry = all_entries(settings)["test-model"]
    assert not entry.is_installed(settings.model_dir)

    progress = download.Progress("test-model")
    path = download.pull(entry, settings, progress=progress)

    assert path == settings.model_dir / SUBDIR
    assert (path / "model.int8.onnx").read_bytes() == MODEL_BYTES
    assert (path / "tokens.txt").exists()
    assert progress.state == "done" and progress.downloaded == len(ARCHIVE) == progress.total
    assert leftovers(settings.model_dir) == []  # archive and temp dir are gone
    spec = resolve_model("test-model", settings)
    assert spec.options["installed"] is True
    assert spec.options["files"]["model"] == str(path / "model.int8.onnx")
    # a second pull finds it installed and does not fetch again
    download.pull(entry, settings)
    assert len(server.state.gets(ARCHIVE_PATH)) == 1


def test_checksum_mismatch_installs_nothing(server: FileServer, tmp_path: Path) -> None:
    url = server.add(ARCHIVE_PATH, ARCHIVE)
    settings = settings_with(tmp_path, {"test-model": _archive_entry(url, "0" * 64)})
    entry = all_entries(settings)["test-model"]
    with pytest.raises(ChecksumMismatch, match="sha256"):
        download.pull(entry, settings)
    assert not (settings.model_dir / SUBDIR).exists()
    assert leftovers(settings.model_dir) == []  # the corrupt archive was deleted, not kept for resume
    with pytest.raises(ModelNotInstalled, match="hearline models pull test-model"):
        load_engine(resolve_model("test-model", settings), settings)


def test_interrupted_transfer_resumes_with_range(server: FileServer, tmp_path: Path) -> None:
    url = server.add(ARCHIVE_PATH, ARCHIVE)
    settings = settings_with(tmp_path, {"test-model": _archive_entry(url, hashlib.sha256(ARCHIVE).hexdigest())})
    entry = all_entries(settings)["test-model"]
    half = len(ARCHIVE) // 2
    server.state.cut[ARCHIVE_PATH] = half

    with pytest.raises(DownloadError, match="interrupted"):
        download.pull(entry, settings, retries=0)
    assert not (settings.model_dir / SUBDIR).exists()
    parts = leftovers(settings.model_dir)
    assert len(parts) == 1 and parts[0].name.endswith(".part")
    assert parts[0].stat().st_size == half

    download.pull(entry, settings)
    gets = server.state.gets(ARCHIVE_PATH)
    assert [g.range for g in gets] == [None, f"bytes={half}-"]
    assert (settings.model_dir / SUBDIR / "model.int8.onnx").read_bytes() == MODEL_BYTES


def test_interruption_is_retried_automatically(server: FileServer, tmp_path: Path) -> None:
    url = server.add(ARCHIVE_PATH, ARCHIVE)
    settings = settings_with(tmp_path, {"test-model": _archive_entry(url, hashlib.sha256(ARCHIVE).hexdigest())})
    server.state.cut[ARCHIVE_PATH] = 100_000
    download.pull(all_entries(settings)["test-model"], settings, retries=2)
    assert [g.range for g in server.state.gets(ARCHIVE_PATH)] == [None, "bytes=100000-"]
    assert (settings.model_dir / SUBDIR / "tokens.txt").exists()


def test_404_is_a_clear_error(server: FileServer, tmp_path: Path) -> None:
    settings = settings_with(tmp_path, {"test-model": _archive_entry(server.url + "/missing.tar.bz2", None)})
    with pytest.raises(DownloadError, match="HTTP 404"):
        download.pull(all_entries(settings)["test-model"], settings)
    assert not (settings.model_dir / SUBDIR).exists()


@pytest.mark.parametrize("how", ["settings", "HEARLINE_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_never_touches_the_network(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    url = server.add(ARCHIVE_PATH, ARCHIVE)
    if how == "settings":
        settings = settings_with(tmp_path, {"test-model": _archive_entry(url, None)}, offline=True)
    else:
        monkeypatch.setenv(how, "1")
        settings = settings_with(tmp_path, {"test-model": _archive_entry(url, None)})
    entry = all_entries(settings)["test-model"]
    with pytest.raises(OfflineMode) as info:
        download.pull(entry, settings)
    message = str(info.value)
    assert "model.int8.onnx" in message and "tokens.txt" in message
    assert "hearline models pull test-model" in message and "offline" in message
    assert server.state.requests == []


def test_hub_file_honours_hf_endpoint_and_sha1(server: FileServer, tmp_path: Path, monkeypatch) -> None:
    body = os.urandom(200_000)
    server.add("/someone/whisper.cpp/resolve/main/ggml-test.bin", body)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    entry_yaml = {
        "type": "whisper_cpp",
        "repo": "someone/whisper.cpp",
        "repo_file": "ggml-test.bin",
        "sha1": hashlib.sha1(body).hexdigest(),
        "size": len(body),
    }
    settings = settings_with(tmp_path, {"ggml-test": entry_yaml})
    path = download.pull(all_entries(settings)["ggml-test"], settings)
    assert path == settings.model_dir / "ggml-test.bin" and path.read_bytes() == body
    spec = resolve_model("ggml-test", settings)
    assert spec.engine == "whisper-cpp" and spec.path == path and spec.options["installed"]
    assert download.remove(all_entries(settings)["ggml-test"], settings) is True
    assert not path.exists()


def test_concurrent_pulls_download_once(server: FileServer, tmp_path: Path) -> None:
    url = server.add(ARCHIVE_PATH, ARCHIVE)
    server.state.delay_s = 0.005  # make the transfers overlap
    settings = settings_with(tmp_path, {"test-model": _archive_entry(url, hashlib.sha256(ARCHIVE).hexdigest())})
    entry = all_entries(settings)["test-model"]
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(download.pull(entry, settings))
        except (download.DownloadError, OSError) as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert results == [settings.model_dir / SUBDIR] * 3
    assert len(server.state.gets(ARCHIVE_PATH)) == 1


def test_two_processes_pull_once_via_cli(server: FileServer, tmp_path: Path) -> None:
    url = server.add(ARCHIVE_PATH, ARCHIVE)
    server.state.delay_s = 0.005
    settings = settings_with(tmp_path, {"test-model": _archive_entry(url, hashlib.sha256(ARCHIVE).hexdigest())})
    env = {k: v for k, v in os.environ.items() if k not in {"HF_HUB_OFFLINE", "HEARLINE_OFFLINE"}}
    cmd = [
        sys.executable, "-c", "from hearline.cli import main; raise SystemExit(main())",
        "models", "pull", "test-model",
        "--model-dir", str(settings.model_dir), "--models-file", str(settings.models_file),
    ]  # fmt: skip
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        assert b"installed at" in out
    assert len(server.state.gets(ARCHIVE_PATH)) == 1
    assert (settings.model_dir / SUBDIR / "model.int8.onnx").read_bytes() == MODEL_BYTES


def test_download_manager_reports_progress(server: FileServer, tmp_path: Path) -> None:
    url = server.add(ARCHIVE_PATH, ARCHIVE)
    settings = settings_with(tmp_path, {"test-model": _archive_entry(url, hashlib.sha256(ARCHIVE).hexdigest())})
    manager = download.DownloadManager(settings)
    entry = all_entries(settings)["test-model"]
    job = manager.start(entry)
    assert manager.start(entry) is job  # a second start joins the running download
    assert job.done.wait(60)
    assert job.to_dict()["state"] == "done" and job.to_dict()["fraction"] == 1.0
    assert manager.ensure(entry) == settings.model_dir / SUBDIR


# -- GitHub release assets (the sherpa-onnx archives) ------------------------------------------------
@pytest.fixture()
def github() -> GitHubServer:
    with github_server() as srv:
        yield srv


def _github_settings(tmp_path: Path, github: GitHubServer, url: str) -> Settings:
    return settings_with(
        tmp_path, {"test-model": _archive_entry(url, None)}, github_url=github.url, github_api=github.url
    )


@pytest.mark.parametrize("embedded", [True, False], ids=["release-lists-assets", "paginated-asset-listing"])
def test_release_asset_is_verified_against_githubs_digest(github: GitHubServer, tmp_path: Path, embedded) -> None:
    other = {f"other-{i}.tar.bz2": os.urandom(100) for i in range(3)}
    urls = github.add_release("k2-fsa", "sherpa-onnx", "asr-models", {**other, f"{SUBDIR}.tar.bz2": ARCHIVE},
                              embedded=embedded)  # fmt: skip
    settings = _github_settings(tmp_path, github, urls[f"{SUBDIR}.tar.bz2"])
    entry = all_entries(settings)["test-model"]
    assert "GitHub's release API" in download.verification(entry, settings)
    path = download.pull(entry, settings)
    assert (path / "model.int8.onnx").read_bytes() == MODEL_BYTES
    assert github.state.gets("/repos/k2-fsa/sherpa-onnx/releases/tags/asr-models")
    listing_pages = [r for r in github.state.requests if "/assets" in r.path]
    assert len(listing_pages) == (0 if embedded else 4)  # the wanted asset is on the last of 4 pages


def test_release_asset_that_differs_from_githubs_digest_installs_nothing(github: GitHubServer, tmp_path: Path) -> None:
    urls = github.add_release("k2-fsa", "sherpa-onnx", "asr-models", {f"{SUBDIR}.tar.bz2": ARCHIVE},
                              digests={f"{SUBDIR}.tar.bz2": "sha256:" + "ab" * 32})  # fmt: skip
    settings = _github_settings(tmp_path, github, urls[f"{SUBDIR}.tar.bz2"])
    with pytest.raises(ChecksumMismatch, match="GitHub's release API \\(k2-fsa/sherpa-onnx release 'asr-models'\\)"):
        download.pull(all_entries(settings)["test-model"], settings)
    assert not (settings.model_dir / SUBDIR).exists() and leftovers(settings.model_dir) == []


@pytest.mark.parametrize("case", ["no-digest", "unknown-release", "api-down"])
def test_release_asset_without_a_digest_is_content_checked_with_a_warning(
    github: GitHubServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    """Older assets have no digest, and the API may be unreachable: the download goes on, and says so."""
    name = f"{SUBDIR}.tar.bz2"
    urls = github.add_release("k2-fsa", "sherpa-onnx", "asr-models", {name: ARCHIVE}, digests={name: None})
    settings = _github_settings(tmp_path, github, urls[name])
    reason = {
        "no-digest": "GitHub publishes no digest",
        "unknown-release": "HTTP 404",
        "api-down": "could not be reached",
    }
    if case == "unknown-release":
        del github.state.files["/repos/k2-fsa/sherpa-onnx/releases/tags/asr-models"]
    elif case == "api-down":
        settings = settings.model_copy(update={"github_api": "http://127.0.0.1:9"})  # nothing listens on port 9
    with caplog.at_level("WARNING", logger="hearline.models.download"):
        path = download.pull(all_entries(settings)["test-model"], settings)
    assert (path / "model.int8.onnx").read_bytes() == MODEL_BYTES
    assert reason[case] in caplog.text and "only its contents are checked" in caplog.text
