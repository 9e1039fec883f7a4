"""ModelPool: one load per model under concurrency, LRU eviction under the memory budget, idle unload,
auto-download on first use (a real tiny sherpa-onnx model over a local HTTP server), offline refusal, and
what a failed auto-download becomes (a known model that could not be fetched vs. an unknown name).

A light fake engine (tests/helpers/fake_engine.py) stands in where only the pool's bookkeeping is tested.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from hearline.config import Settings
from hearline.engines.base import TranscribeOptions, Transcript
from hearline.models.download import ModelNotInstalled, ModelUnavailable
from hearline.models.pool import ModelPool
from hearline.models.resolve import UnknownModel
from tests.helpers.fake_engine import LOADS, fake_settings
from tests.helpers.fileserver import file_server, hub_server, tar_directory
from tests.helpers.polling import until


async def test_concurrent_first_requests_load_once(tmp_path: Path) -> None:
    pool = ModelPool(fake_settings(tmp_path, ["a"]))
    try:
        engines = await asyncio.gather(*(pool.get("a") for _ in range(8)))
        assert LOADS == {"a": 1}
        assert all(engine is engines[0] for engine in engines)
        result = await pool.run(engines[0], engines[0].transcribe, np.zeros(16000, np.float32), TranscribeOptions())
        assert result.text == "fake"
    finally:
        await pool.close()


async def test_concurrent_pocketsphinx_loads_once(tmp_path: Path) -> None:
    pool = ModelPool(Settings.load(model_dir=tmp_path / "m", models_file=tmp_path / "none.yaml"))
    try:
        engines = await asyncio.gather(pool.get(None), pool.get("pocketsphinx"), pool.get("whisper-1"))
        assert engines[0] is engines[1] is engines[2]
        assert pool.loaded() == ["pocketsphinx"] and engines[0].kind == "pocketsphinx"
    finally:
        await pool.close()


async def test_memory_budget_evicts_least_recently_used(tmp_path: Path) -> None:
    pool = ModelPool(fake_settings(tmp_path, ["a", "b", "c"], memory_mb=60, memory_budget_mb=130))
    try:
        a = await pool.get("a")
        await pool.get("b")
        assert sorted(pool.loaded()) == ["a", "b"]
        await pool.get("a")  # a is now more recently used than b
        await pool.get("c")  # 180 MB > 130 MB: b goes
        assert sorted(pool.loaded()) == ["a", "c"]
        assert not a.closed
        await pool.get("b")  # loads again; a is now the least recently used
        assert sorted(pool.loaded()) == ["b", "c"] and a.closed
        assert LOADS == {"a": 1, "b": 2, "c": 1}
    finally:
        await pool.close()


async def test_idle_models_are_unloaded_but_not_the_default(tmp_path: Path) -> None:
    pool = ModelPool(fake_settings(tmp_path, ["a"], idle_unload_s=0.2))
    try:
        await pool.get(None)
        engine = await pool.get("a")
        await until(lambda: "a" not in pool.loaded(), 30, "the idle model unloaded")
        assert pool.loaded() == ["pocketsphinx"] and engine.closed
        await pool.get("a")
        assert LOADS == {"a": 2}
    finally:
        await pool.close()


async def test_missing_model_offline_is_refused_without_network(tmp_path: Path) -> None:
    with file_server() as server:
        url = server.add("/x.tar.bz2", b"never served")
        models_file = tmp_path / "models.yaml"
        models_file.write_text(yaml.safe_dump({"models": {"remote": {"type": "sense_voice", "dir": "remote",
                                                                      "download": {"url": url}}}}))  # fmt: skip
        settings = Settings.load(model_dir=tmp_path / "m", models_file=models_file)  # conftest: HF_HUB_OFFLINE=1
        pool = ModelPool(settings)
        try:
            with pytest.raises(ModelNotInstalled, match="hearline models pull remote") as info:
                await pool.get("remote")
            assert not isinstance(info.value, ModelUnavailable)  # offline "not installed" stays a 404
            assert server.state.requests == []
            assert not pool.loading
        finally:
            await pool.close()


async def test_auto_download_on_first_use_loads_real_sherpa_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers.tiny_sherpa import build_sense_voice

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    subdir = "sherpa-onnx-tiny-sense-voice"
    built = build_sense_voice(tmp_path / "build" / subdir)
    archive = tar_directory(built, subdir)
    with file_server() as server:
        url = server.add(f"/{subdir}.tar.bz2", archive)
        entry = {
            "type": "sense_voice",
            "dir": subdir,
            "files": {"model": "model.int8.onnx", "tokens": "tokens.txt"},
            "download": {"url": url, "archive_subdir": subdir, "sha256": hashlib.sha256(archive).hexdigest()},
        }
        models_file = tmp_path / "models.yaml"
        models_file.write_text(yaml.safe_dump({"models": {"tiny-sv": entry}}))
        pool = ModelPool(Settings.load(model_dir=tmp_path / "models", models_file=models_file))
        try:
            engines = await asyncio.gather(pool.get("tiny-sv"), pool.get("tiny-sv"))
            assert engines[0] is engines[1] and engines[0].kind == "sherpa-onnx"
            assert len(server.state.gets(f"/{subdir}.tar.bz2")) == 1
            assert pool.downloads.get("tiny-sv").state == "done"
            assert (tmp_path / "models" / subdir / "model.int8.onnx").exists()
            audio = np.zeros(16000, np.float32)
            result = await pool.run(engines[0], engines[0].transcribe, audio, TranscribeOptions())
            assert isinstance(result, Transcript) and result.duration == pytest.approx(1.0)
        finally:
            await pool.close()


async def test_failed_auto_download_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with file_server() as server:
        models_file = tmp_path / "models.yaml"
        entry = {"type": "sense_voice", "dir": "gone", "download": {"url": server.url + "/gone.tar.bz2"}}
        models_file.write_text(yaml.safe_dump({"models": {"gone": entry}}))
        pool = ModelPool(Settings.load(model_dir=tmp_path / "m", models_file=models_file))
        try:
            with pytest.raises(ModelUnavailable, match=r"downloading it failed.*HTTP 404.*hearline models pull gone"):
                await pool.get("gone")
            assert len(server.state.gets("/gone.tar.bz2")) == 1 and not pool.loading
            assert pool.downloads.get("gone").state == "error"
        finally:
            await pool.close()


async def test_unreachable_download_is_model_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens at the archive's address: after the retries the model is unavailable, not unknown."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with file_server() as server:
        url = server.url + "/x.tar.bz2"
    models_file = tmp_path / "models.yaml"  # the server is gone: connections are refused
    models_file.write_text(yaml.safe_dump({"models": {"far": {"type": "sense_voice", "download": {"url": url}}}}))
    pool = ModelPool(Settings.load(model_dir=tmp_path / "m", models_file=models_file))
    try:
        with pytest.raises(ModelUnavailable, match="could not connect"):
            await pool.get("far")
        assert not (tmp_path / "m" / "far").exists()
    finally:
        await pool.close()


async def test_hub_repository_that_does_not_exist_is_an_unknown_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``owner/name`` the catalog does not list is a guess at a hub repository; the hub saying no makes it
    an unknown model (404), not a download failure (503)."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with hub_server() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        settings = Settings.load(
            model_dir=tmp_path / "m", models_file=tmp_path / "none.yaml", allow_remote_models=True
        )  # clients may name hub repositories the catalog does not list only when the operator allows it
        pool = ModelPool(settings)
        try:
            with pytest.raises(UnknownModel, match="the hub has no repository 'nobody/no-such-model'"):
                await pool.get("nobody/no-such-model")
            assert hub.state.gets("/api/models/nobody/no-such-model/revision/main")
        finally:
            await pool.close()
