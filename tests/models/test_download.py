"""Downloads against a local HTTP server: verify, resume, refuse offline, lock, install atomically.

Hub snapshots (faster-whisper) run through the real ``huggingface_hub.snapshot_download`` against
``tests.fileserver.HubServer``, a loopback stand-in for the hub and its LFS CDN serving the tiny
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
import yaml

from hearline.audio.decode import decode_audio
from hearline.config import Settings
from hearline.engines.base import SAMPLE_RATE, ModelFilesMissing, TranscribeOptions
from hearline.models import download
from hearline.models.download import (
    ChecksumMismatch,
    DownloadError,
    ModelNotInstalled,
    ModelUnavailable,
    OfflineMode,
    RemoteNotFound,
)
from hearline.models.registry import all_entries
from hearline.models.resolve import FASTER_WHISPER, hub_entry, load_engine, resolve_model
from tests.fileserver import (
    FileServer,
    GitHubServer,
    HubServer,
    github_server,
    hub_server,
    make_tar_bz2,
)
from tests.helpers import clip

SUBDIR = "sherpa-onnx-test-model-2026-01-01"
ARCHIVE_PATH = f"/asr-models/{SUBDIR}.tar.bz2"
# ~1.5 MB of incompressible bytes so a transfer can be cut in the middle
MODEL_BYTES = os.urandom(1_500_000)
ARCHIVE = make_tar_bz2(
    {f"{SUBDIR}/model.int8.onnx": MODEL_BYTES, f"{SUBDIR}/tokens.txt": b"<blk> 0\n", f"{SUBDIR}/README.md": b"x"}
)


pytestmark = pytest.mark.usefixtures("online")  # tests/models/conftest.py: only their own loopback servers


def _settings(tmp_path: Path, models: dict, **overrides) -> Settings:
    models_file = tmp_path / "models.yaml"
    models_file.write_text(yaml.safe_dump({"models": models}))
    return Settings.load(model_dir=tmp_path / "models", models_file=models_file, **overrides)


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


def _leftovers(model_dir: Path) -> list[Path]:
    partial = model_dir / download.PARTIAL_DIR
    return sorted(partial.iterdir()) if partial.exists() else []


def test_archive_download_verifies_and_installs_atomically(server: FileServer, tmp_path: Path) -> None:
    url = server.add(ARCHIVE_PATH, ARCHIVE)
    settings = _settings(tmp_path, {"test-model": _archive_entry(url, hashlib.sha256(ARCHIVE).hexdigest())})
    entry = all_entries(settings)["test-model"]
    assert not entry.is_installed(settings.model_dir)

    progress = download.Progress("test-model")
    path = download.pull(entry, settings, progress=progress)

    assert path == settings.model_dir / SUBDIR
    assert (path / "model.int8.onnx").read_bytes() == MODEL_BYTES
    assert (path / "tokens.txt").exists()
    assert progress.state == "done" and progress.downloaded == len(ARCHIVE) == progress.total
    assert _leftovers(settings.model_dir) == []  # archive and temp dir are gone
    spec = resolve_model("test-model", settings)
    assert spec.options["installed"] is True
    assert spec.options["files"]["model"] == str(path / "model.int8.onnx")
    # a second pull finds it installed and does not fetch again
    download.pull(entry, settings)
    assert len(server.state.gets(ARCHIVE_PATH)) == 1


def test_checksum_mismatch_installs_nothing(server: FileServer, tmp_path: Path) -> None:
    url = server.add(ARCHIVE_PATH, ARCHIVE)
    settings = _settings(tmp_path, {"test-model": _archive_entry(url, "0" * 64)})
    entry = all_entries(settings)["test-model"]
    with pytest.raises(ChecksumMismatch, match="sha256"):
        download.pull(entry, settings)
    assert not (settings.model_dir / SUBDIR).exists()
    assert _leftovers(settings.model_dir) == []  # the corrupt archive was deleted, not kept for resume
    with pytest.raises(ModelNotInstalled, match="hearline models pull test-model"):
        load_engine(resolve_model("test-model", settings), settings)


def test_interrupted_transfer_resumes_with_range(server: FileServer, tmp_path: Path) -> None:
    url = server.add(ARCHIVE_PATH, ARCHIVE)
    settings = _settings(tmp_path, {"test-model": _archive_entry(url, hashlib.sha256(ARCHIVE).hexdigest())})
    entry = all_entries(settings)["test-model"]
    half = len(ARCHIVE) // 2
    server.state.cut[ARCHIVE_PATH] = half

    with pytest.raises(DownloadError, match="interrupted"):
        download.pull(entry, settings, retries=0)
    assert not (settings.model_dir / SUBDIR).exists()
    parts = _leftovers(settings.model_dir)
    assert len(parts) == 1 and parts[0].name.endswith(".part")
    assert parts[0].stat().st_size == half

    download.pull(entry, settings)
    gets = server.state.gets(ARCHIVE_PATH)
    assert [g.range for g in gets] == [None, f"bytes={half}-"]
    assert (settings.model_dir / SUBDIR / "model.int8.onnx").read_bytes() == MODEL_BYTES


def test_interruption_is_retried_automatically(server: FileServer, tmp_path: Path) -> None:
    url = server.add(ARCHIVE_PATH, ARCHIVE)
    settings = _settings(tmp_path, {"test-model": _archive_entry(url, hashlib.sha256(ARCHIVE).hexdigest())})
    server.state.cut[ARCHIVE_PATH] = 100_000
    download.pull(all_entries(settings)["test-model"], settings, retries=2)
    assert [g.range for g in server.state.gets(ARCHIVE_PATH)] == [None, "bytes=100000-"]
    assert (settings.model_dir / SUBDIR / "tokens.txt").exists()


def test_404_is_a_clear_error(server: FileServer, tmp_path: Path) -> None:
    settings = _settings(tmp_path, {"test-model": _archive_entry(server.url + "/missing.tar.bz2", None)})
    with pytest.raises(DownloadError, match="HTTP 404"):
        download.pull(all_entries(settings)["test-model"], settings)
    assert not (settings.model_dir / SUBDIR).exists()


@pytest.mark.parametrize("how", ["settings", "HEARLINE_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_never_touches_the_network(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    url = server.add(ARCHIVE_PATH, ARCHIVE)
    if how == "settings":
        settings = _settings(tmp_path, {"test-model": _archive_entry(url, None)}, offline=True)
    else:
        monkeypatch.setenv(how, "1")
        settings = _settings(tmp_path, {"test-model": _archive_entry(url, None)})
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
    settings = _settings(tmp_path, {"ggml-test": entry_yaml})
    path = download.pull(all_entries(settings)["ggml-test"], settings)
    assert path == settings.model_dir / "ggml-test.bin" and path.read_bytes() == body
    spec = resolve_model("ggml-test", settings)
    assert spec.engine == "whisper-cpp" and spec.path == path and spec.options["installed"]
    assert download.remove(all_entries(settings)["ggml-test"], settings) is True
    assert not path.exists()


def test_concurrent_pulls_download_once(server: FileServer, tmp_path: Path) -> None:
    url = server.add(ARCHIVE_PATH, ARCHIVE)
    server.state.delay_s = 0.005  # make the transfers overlap
    settings = _settings(tmp_path, {"test-model": _archive_entry(url, hashlib.sha256(ARCHIVE).hexdigest())})
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
    settings = _settings(tmp_path, {"test-model": _archive_entry(url, hashlib.sha256(ARCHIVE).hexdigest())})
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
    settings = _settings(tmp_path, {"test-model": _archive_entry(url, hashlib.sha256(ARCHIVE).hexdigest())})
    manager = download.DownloadManager(settings)
    entry = all_entries(settings)["test-model"]
    job = manager.start(entry)
    assert manager.start(entry) is job  # a second start joins the running download
    assert job.done.wait(60)
    assert job.to_dict()["state"] == "done" and job.to_dict()["fraction"] == 1.0
    assert manager.ensure(entry) == settings.model_dir / SUBDIR


# -- hub snapshots (faster-whisper) ----------------------------------------------------------------
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
    settings = _settings(tmp_path, {}, threads=1)
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
    assert _leftovers(settings.model_dir) == []
    assert len(hub.cdn.state.gets(hub.lfs_path(repo_files["model.bin"]))) == 1  # model.bin came from the CDN
    _transcribes(target, settings)


def test_hub_snapshot_progress_retry_and_no_refetch(hub: HubServer, repo_files: dict, tmp_path: Path) -> None:
    """In-process pull: a transfer cut short is retried by huggingface_hub, progress counts the bytes once."""
    hub.add_repo(HUB_REPO, repo_files)
    model_bin = hub.lfs_path(repo_files["model.bin"])
    hub.cdn.state.cut[model_bin] = 300_000
    settings = _settings(tmp_path, {}, threads=1)
    progress = download.Progress("tiny")
    path = download.pull(all_entries(settings)["tiny"], settings, progress=progress)

    assert path == settings.model_dir / "faster-whisper-tiny"
    assert sorted(p.name for p in path.iterdir()) == sorted(HUB_INSTALLED)
    assert (path / "model.bin").read_bytes() == repo_files["model.bin"]
    assert len(hub.cdn.state.gets(model_bin)) == 2  # cut, then fetched again within the same pull
    expected = sum(len(repo_files[name]) for name in HUB_INSTALLED)
    assert progress.state == "done" and progress.total == expected and progress.downloaded == expected
    assert _leftovers(settings.model_dir) == []
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
    settings = _settings(tmp_path, {})
    entry = all_entries(settings)["tiny"]
    with pytest.raises(DownloadError, match=f"could not download {HUB_REPO} from {hub.url}") as info:
        download.pull(entry, settings)
    assert not isinstance(info.value, RemoteNotFound)
    assert hub.state.gets(f"/api/models/{HUB_REPO}/revision/main")  # it did get that far
    assert not (settings.model_dir / "faster-whisper-tiny").exists()
    assert _leftovers(settings.model_dir) == []
    assert {p.name for p in settings.model_dir.iterdir()} == {download.LOCK_DIR, download.PARTIAL_DIR}
    assert resolve_model("tiny", settings).options["installed"] is False

    hub.cdn.state.broken.clear()
    hub.cdn.state.drop.clear()
    assert download.pull(entry, settings).joinpath("model.bin").read_bytes() == repo_files["model.bin"]


def test_unknown_hub_repository_is_remote_not_found(hub: HubServer, tmp_path: Path) -> None:
    settings = _settings(tmp_path, {})
    with pytest.raises(RemoteNotFound, match="RepositoryNotFoundError"):
        download.pull(hub_entry("nobody/no-such-model"), settings)
    assert hub.state.gets("/api/models/nobody/no-such-model/revision/main")
    assert _leftovers(settings.model_dir) == []


def test_engine_download_on_load_is_atomic_and_follows_auto_download(
    hub: HubServer, repo_files: dict, tmp_path: Path
) -> None:
    """Loading a missing faster-whisper model outside the pool downloads through the same atomic pull."""
    hub.add_repo(HUB_REPO, repo_files)
    model_bin = hub.lfs_path(repo_files["model.bin"])
    hub.cdn.state.broken[model_bin] = 503
    settings = _settings(tmp_path, {}, threads=1)
    with pytest.raises(ModelUnavailable, match="download failed"):
        load_engine(resolve_model("tiny", settings), settings)
    assert not (settings.model_dir / "faster-whisper-tiny").exists()  # no directory without model.bin
    assert _leftovers(settings.model_dir) == []

    requests = len(hub.state.requests)
    no_auto = _settings(tmp_path, {}, auto_download=False)
    with pytest.raises(ModelFilesMissing, match="downloads on first use are off") as info:
        load_engine(resolve_model("tiny", no_auto), no_auto)
    assert not isinstance(info.value, ModelUnavailable) and len(hub.state.requests) == requests

    hub.cdn.state.broken.clear()
    engine = load_engine(resolve_model("tiny", settings), settings)
    engine.close()
    assert (settings.model_dir / "faster-whisper-tiny" / "model.bin").read_bytes() == repo_files["model.bin"]


def test_hub_snapshot_is_verified_against_the_hubs_checksums(hub: HubServer, repo_files: dict, tmp_path: Path) -> None:
    """The hub publishes sha256 (LFS) and git blob ids (other files); bytes that differ install nothing.

    huggingface_hub itself checks only sizes, so a same-size corruption must be caught by Hearline.
    """
    bad_model = bytes(b ^ 0xFF for b in repo_files["model.bin"][:64]) + repo_files["model.bin"][64:]
    bad_config = repo_files["config.json"].replace(b"{", b" ", 1)
    settings = _settings(tmp_path, {}, threads=1)
    entry = all_entries(settings)["tiny"]
    for served, what in (({"model.bin": bad_model}, "model.bin: sha256"),
                         ({"config.json": bad_config}, "config.json: git-blob-sha1")):  # fmt: skip
        hub.add_repo(HUB_REPO, repo_files, served=served)
        with pytest.raises(ChecksumMismatch, match=what) as info:
            download.pull(entry, settings)
        assert "published by the hub" in str(info.value) and "nothing was installed" in str(info.value)
        assert not (settings.model_dir / "faster-whisper-tiny").exists()
        assert _leftovers(settings.model_dir) == []
    hub.add_repo(HUB_REPO, repo_files)  # the hub serves the right bytes again
    path = download.pull(entry, settings)
    assert (path / "model.bin").read_bytes() == repo_files["model.bin"]


def test_hub_file_without_declared_checksum_uses_the_hubs(hub: HubServer, tmp_path: Path) -> None:
    """A single hub file with no sha1 in models.yaml: fetched at the commit the metadata names, then checked."""
    body = os.urandom(300_000)
    entry_yaml = {"type": "whisper_cpp", "repo": "someone/whisper.cpp", "repo_file": "ggml-test.bin"}
    settings = _settings(tmp_path, {"ggml-test": entry_yaml})
    entry = all_entries(settings)["ggml-test"]
    assert "checksum the hub publishes for ggml-test.bin" in download.verification(entry, settings)

    commit = hub.add_repo("someone/whisper.cpp", {"ggml-test.bin": body}, lfs=("ggml-test.bin",),
                          served={"ggml-test.bin": os.urandom(len(body))})  # fmt: skip
    with pytest.raises(ChecksumMismatch, match=r"sha256 .* published by the hub"):
        download.pull(entry, settings)
    assert not (settings.model_dir / "ggml-test.bin").exists() and _leftovers(settings.model_dir) == []
    assert hub.state.gets(f"/someone/whisper.cpp/resolve/{commit}/ggml-test.bin")  # pinned to the commit

    hub.add_repo("someone/whisper.cpp", {"ggml-test.bin": body}, lfs=("ggml-test.bin",))
    assert download.pull(entry, settings).read_bytes() == body


# -- GitHub release assets (the sherpa-onnx archives) ------------------------------------------------
@pytest.fixture()
def github() -> GitHubServer:
    with github_server() as srv:
        yield srv


def _github_settings(tmp_path: Path, github: GitHubServer, url: str) -> Settings:
    return _settings(tmp_path, {"test-model": _archive_entry(url, None)}, github_url=github.url, github_api=github.url)


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
    assert not (settings.model_dir / SUBDIR).exists() and _leftovers(settings.model_dir) == []


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
