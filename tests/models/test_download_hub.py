"""Hub snapshots (faster-whisper) against a loopback stand-in hub: pulls, retries, checksums, unknown repos."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hearline.audio.decode import decode_audio
from hearline.config import Settings
from hearline.engines.base import SAMPLE_RATE, ModelFilesMissing, TranscribeOptions
from hearline.models import download
from hearline.models.download import (
    ChecksumMismatch,
    DownloadError,
    ModelUnavailable,
    RemoteNotFound,
)
from hearline.models.pool import ModelPool
from hearline.models.registry import all_entries
from hearline.models.resolve import FASTER_WHISPER, hub_entry, load_engine, resolve_model
from tests.helpers.corpus import clip
from tests.helpers.fileserver import (
    HubServer,
    hub_server,
)
from tests.models.downloads import leftovers, settings_with

pytestmark = pytest.mark.usefixtures("online")  # tests/models/conftest.py: only the loopback hub

HUB_REPO = "Systran/faster-whisper-tiny"  # what the catalog's "tiny" downloads
HUB_INSTALLED = ("config.json", "model.bin", "preprocessor_config.json", "tokenizer.json", "vocabulary.json")


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    """The stand-in hub; huggingface_hub in this process talks to it and caches under tmp_path."""
    import huggingface_hub.constants

    # huggingface_hub reads HF_HUB_OFFLINE and its cache location once, at import (conftest sets offline)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with hub_server() as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.url)  # set after import: the download passes it per call
        yield srv


@pytest.fixture()
def repo_files(tiny_whisper_dir: Path) -> dict[str, bytes]:
    """The tiny faster-whisper model as a hub repository holds it, plus files the download must skip."""
    files = {path.name: path.read_bytes() for path in tiny_whisper_dir.iterdir() if path.is_file()}
    files["README.md"] = b"# tiny random Whisper for hearline tests\n"
    files["pytorch_model.bin"] = b"not for CTranslate2"
    return files


def _transcribes(model_path: Path, settings: Settings) -> None:
    spec = resolve_model("tiny", settings)
    assert spec.engine == FASTER_WHISPER and spec.options["installed"] and spec.path == model_path
    engine = load_engine(spec, settings)
    try:
        audio = decode_audio(clip("en_fw_jfk").path)[: 3 * SAMPLE_RATE]
        transcript = engine.transcribe(audio, TranscribeOptions(language="en", beam_size=1, temperature=0.5))
    finally:
        engine.close()
    assert transcript.segments and transcript.duration == pytest.approx(3.0)


def test_hub_pull_via_cli_then_loads_and_transcribes(hub: HubServer, repo_files: dict, tmp_path: Path) -> None:
    """``hearline models pull tiny`` in a fresh process, HF_ENDPOINT set before huggingface_hub is imported."""
    hub.add_repo(HUB_REPO, repo_files)
    settings = settings_with(tmp_path, {}, threads=1)
    env = {k: v for k, v in os.environ.items() if k not in {"HF_HUB_OFFLINE", "HEARLINE_OFFLINE"}}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"))
    cmd = [
        sys.executable, "-c", "from hearline.cli import main; raise SystemExit(main())",
        "models", "pull", "tiny",
        "--model-dir", str(settings.model_dir), "--models-file", str(settings.models_file),
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode()
    target = settings.model_dir / "faster-whisper-tiny"
    assert f"tiny: installed at {target}".encode() in done.stdout
    assert sorted(p.name for p in target.iterdir()) == sorted(HUB_INSTALLED)  # allow_patterns applied
    for name in HUB_INSTALLED:
        assert (target / name).read_bytes() == repo_files[name], name
    assert leftovers(settings.model_dir) == []
    assert len(hub.cdn.state.gets(hub.lfs_path(repo_files["model.bin"]))) == 1  # model.bin came from the CDN
    _transcribes(target, settings)


def test_hub_snapshot_progress_retry_and_no_refetch(hub: HubServer, repo_files: dict, tmp_path: Path) -> None:
    """In-process pull: a transfer cut short is retried by huggingface_hub, progress counts the bytes once."""
    hub.add_repo(HUB_REPO, repo_files)
    model_bin = hub.lfs_path(repo_files["model.bin"])
    hub.cdn.state.cut[model_bin] = 300_000
    settings = settings_with(tmp_path, {}, threads=1)
    progress = download.Progress("tiny")
    path = download.pull(all_entries(settings)["tiny"], settings, progress=progress)

    assert path == settings.model_dir / "faster-whisper-tiny"
    assert sorted(p.name for p in path.iterdir()) == sorted(HUB_INSTALLED)
    assert (path / "model.bin").read_bytes() == repo_files["model.bin"]
    assert len(hub.cdn.state.gets(model_bin)) == 2  # cut, then fetched again within the same pull
    expected = sum(len(repo_files[name]) for name in HUB_INSTALLED)
    assert progress.state == "done" and progress.total == expected and progress.downloaded == expected
    assert leftovers(settings.model_dir) == []
    before = len(hub.state.requests)
    assert download.pull(all_entries(settings)["tiny"], settings) == path
    assert len(hub.state.requests) == before  # installed: nothing asked of the hub


@pytest.mark.parametrize("failure", ["http-500", "connection-dropped"])
def test_failed_hub_download_installs_nothing(hub: HubServer, repo_files: dict, tmp_path: Path, failure: str) -> None:
    """model.bin fails after the small files arrived: no model directory, no partial files, a DownloadError.

    "connection-dropped" ends every transfer after the headers: huggingface_hub retries (about 5 s) and
    then lets its HTTP client's error through, which must still become a DownloadError.
    """
    hub.add_repo(HUB_REPO, repo_files)
    model_bin = hub.lfs_path(repo_files["model.bin"])
    if failure == "http-500":
        hub.cdn.state.broken[model_bin] = 500
    else:
        hub.cdn.state.drop.add(model_bin)
    settings = settings_with(tmp_path, {})
    entry = all_entries(settings)["tiny"]
    with pytest.raises(DownloadError, match=f"could not download {HUB_REPO} from {hub.url}") as info:
        download.pull(entry, settings)
    assert not isinstance(info.value, RemoteNotFound)
    assert hub.state.gets(f"/api/models/{HUB_REPO}/revision/main")  # it did get that far
    assert not (settings.model_dir / "faster-whisper-tiny").exists()
    assert leftovers(settings.model_dir) == []
    assert {p.name for p in settings.model_dir.iterdir()} == {download.LOCK_DIR, download.PARTIAL_DIR}
    assert resolve_model("tiny", settings).options["installed"] is False

    hub.cdn.state.broken.clear()
    hub.cdn.state.drop.clear()
    assert download.pull(entry, settings).joinpath("model.bin").read_bytes() == repo_files["model.bin"]


def test_unknown_hub_repository_is_remote_not_found(hub: HubServer, tmp_path: Path) -> None:
    settings = settings_with(tmp_path, {})
    with pytest.raises(RemoteNotFound, match="RepositoryNotFoundError"):
        download.pull(hub_entry("nobody/no-such-model"), settings)
    assert hub.state.gets("/api/models/nobody/no-such-model/revision/main")
    assert leftovers(settings.model_dir) == []


async def test_first_use_download_is_the_pools_atomic_and_follows_auto_download(
    hub: HubServer, repo_files: dict, tmp_path: Path
) -> None:
    """A missing faster-whisper model is fetched by the pool before it loads, through the one atomic pull (the
    engine itself only looks for files)."""
    hub.add_repo(HUB_REPO, repo_files)
    model_bin = hub.lfs_path(repo_files["model.bin"])
    hub.cdn.state.broken[model_bin] = 503
    settings = settings_with(tmp_path, {}, threads=1)
    pool = ModelPool(settings)
    try:
        with pytest.raises(ModelUnavailable, match="downloading it failed"):
            await pool.get("tiny")
        assert not (settings.model_dir / "faster-whisper-tiny").exists()  # no directory without model.bin
        assert leftovers(settings.model_dir) == []

        requests = len(hub.state.requests)
        no_auto = ModelPool(settings_with(tmp_path, {}, auto_download=False))
        try:
            with pytest.raises(ModelFilesMissing, match="downloads on first use are off") as info:
                await no_auto.get("tiny")
        finally:
            await no_auto.close()
        assert not isinstance(info.value, ModelUnavailable) and len(hub.state.requests) == requests

        hub.cdn.state.broken.clear()
        await pool.get("tiny")
        assert (settings.model_dir / "faster-whisper-tiny" / "model.bin").read_bytes() == repo_files["model.bin"]
    finally:
        await pool.close()


def test_hub_snapshot_is_verified_against_the_hubs_checksums(hub: HubServer, repo_files: dict, tmp_path: Path) -> None:
    """The hub publishes sha256 (LFS) and git blob ids (other files); bytes that differ install nothing.

    huggingface_hub itself checks only sizes, so a same-size corruption must be caught by Hearline.
    """
    bad_model = bytes(b ^ 0xFF for b in repo_files["model.bin"][:64]) + repo_files["model.bin"][64:]
    bad_config = repo_files["config.json"].replace(b"{", b" ", 1)
    settings = settings_with(tmp_path, {}, threads=1)
    entry = all_entries(settings)["tiny"]
    for served, what in (({"model.bin": bad_model}, "model.bin: sha256"),
                         ({"config.json": bad_config}, "config.json: git-blob-sha1")):  # fmt: skip
        hub.add_repo(HUB_REPO, repo_files, served=served)
        with pytest.raises(ChecksumMismatch, match=what) as info:
            download.pull(entry, settings)
        assert "published by the hub" in str(info.value) and "nothing was installed" in str(info.value)
        assert not (settings.model_dir / "faster-whisper-tiny").exists()
        assert leftovers(settings.model_dir) == []
    hub.add_repo(HUB_REPO, repo_files)  # the hub serves the right bytes again
    path = download.pull(entry, settings)
    assert (path / "model.bin").read_bytes() == repo_files["model.bin"]


def test_hub_file_without_declared_checksum_uses_the_hubs(hub: HubServer, tmp_path: Path) -> None:
    """A single hub file with no sha1 in models.yaml: fetched at the commit the metadata names, then checked."""
    body = os.urandom(300_000)
    entry_yaml = {"type": "whisper_cpp", "repo": "someone/whisper.cpp", "repo_file": "ggml-test.bin"}
    settings = settings_with(tmp_path, {"ggml-test": entry_yaml})
    entry = all_entries(settings)["ggml-test"]
    assert "checksum the hub publishes for ggml-test.bin" in download.verification(entry, settings)

    commit = hub.add_repo("someone/whisper.cpp", {"ggml-test.bin": body}, lfs=("ggml-test.bin",),
                          served={"ggml-test.bin": os.urandom(len(body))})  # fmt: skip
    with pytest.raises(ChecksumMismatch, match=r"sha256 .* published by the hub"):
        download.pull(entry, settings)
    assert not (settings.model_dir / "ggml-test.bin").exists() and leftovers(settings.model_dir) == []
    assert hub.state.gets(f"/someone/whisper.cpp/resolve/{commit}/ggml-test.bin")  # pinned to the commit

    hub.add_repo("someone/whisper.cpp", {"ggml-test.bin": body}, lfs=("ggml-test.bin",))
    assert download.pull(entry, settings).read_bytes() == body
