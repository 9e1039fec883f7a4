"""/v1/models on a real server, through the official ``openai`` SDK and httpx.

Pulling and deleting models needs the API key, or, without one, a loopback client.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import websockets
import yaml

from hearline.config import Settings
from hearline.server.app import create_app
from hearline.server.models_api import is_loopback
from tests.helpers.corpus import clip, pcm16
from tests.helpers.fileserver import FileServer, file_server, make_tar_bz2
from tests.helpers.polling import eventually
from tests.helpers.server import running_server

SUBDIR = "sherpa-onnx-api-test"
ARCHIVE = make_tar_bz2({f"{SUBDIR}/model.int8.onnx": b"m" * 200_000, f"{SUBDIR}/tokens.txt": b"<blk> 0\n"})


def _settings(tmp_path: Path, url: str, **overrides) -> Settings:
    models_file = tmp_path / "models.yaml"
    entry = {
        "type": "sense_voice",
        "dir": SUBDIR,
        "files": {"model": "model.int8.onnx", "tokens": "tokens.txt"},
        "languages": ["en"],
        "download": {"url": url, "archive_subdir": SUBDIR, "sha256": hashlib.sha256(ARCHIVE).hexdigest()},
    }
    models_file.write_text(yaml.safe_dump({"models": {"api-test": entry}}))
    return Settings.load(model_dir=tmp_path / "models", models_file=models_file, **overrides)


@pytest.fixture()
def files() -> FileServer:
    with file_server() as srv:
        yield srv


def test_sdk_lists_and_retrieves_models(tmp_path: Path, files: FileServer) -> None:
    settings = _settings(tmp_path, files.add(f"/{SUBDIR}.tar.bz2", ARCHIVE))
    with running_server(settings) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
        models = {m.id: m for m in client.models.list()}
        assert {"pocketsphinx", "sensevoice-small", "ggml-tiny", "tiny", "api-test"} <= set(models)
        ps = models["pocketsphinx"]
        assert ps.object == "model" and ps.owned_by == "hearline"
        assert ps.model_extra["status"] == "loaded" and ps.model_extra["default"] is True
        sv = models["sensevoice-small"]
        assert sv.model_extra["status"] == "available" and sv.model_extra["engine"] == "sherpa-onnx"
        assert sv.model_extra["languages"] == ["zh", "en", "ja", "ko", "yue"]
        assert models["ggml-tiny"].model_extra["size_bytes"] == 77691713
        assert models["ggml-tiny"].model_extra["checksum"].startswith("sha1:")
        assert sv.model_extra["checksum"] is None  # none known before the download ...
        verification = sv.model_extra["verification"]  # ... so GitHub's release API is asked when it starts
        assert "sha256 digest and size GitHub's release API publishes" in verification
        assert verification.endswith("the install checks that the archive holds model.int8.onnx, tokens.txt")
        assert ps.model_extra["verification"] is None  # bundled: nothing to download
        assert models["api-test"].owned_by == "user"

        retrieved = client.models.retrieve("sensevoice.small")  # aliases resolve to the canonical id
        assert retrieved.id == "sensevoice-small"
        assert client.models.retrieve("Systran/faster-whisper-tiny").id == "tiny"  # ids may contain "/"
        with pytest.raises(openai.NotFoundError) as info:
            client.models.retrieve("no-such-model")
        assert info.value.body["code"] == "model_not_found"

        installed = httpx.get(server.url + "/v1/models", params={"status": "loaded"}).json()["data"]
        assert [m["id"] for m in installed] == ["pocketsphinx"]


def test_download_progress_unload_and_remove(tmp_path: Path, files: FileServer, monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    files.state.delay_s = 0.01
    settings = _settings(tmp_path, files.add(f"/{SUBDIR}.tar.bz2", ARCHIVE))
    with running_server(settings) as server:
        started = httpx.post(server.url + "/v1/models/api-test")
        assert started.status_code == 202
        assert started.json()["status"] in {"downloading", "installed"}
        eventually(
            lambda: httpx.get(server.url + "/v1/models/api-test").json()["status"] == "installed", 60, "the install"
        )
        obj = httpx.get(server.url + "/v1/models/api-test").json()
        assert obj["status"] == "installed" and obj["path"] == str(settings.model_dir / SUBDIR)
        assert len(files.state.gets(f"/{SUBDIR}.tar.bz2")) == 1
        assert httpx.post(server.url + "/v1/models/api-test").status_code == 200  # already installed

        unload = httpx.delete(server.url + "/v1/models/pocketsphinx").json()
        assert unload == {"id": "pocketsphinx", "object": "model", "deleted": True, "unloaded": True, "removed": False}
        assert httpx.get(server.url + "/v1/models/pocketsphinx").json()["status"] == "installed"

        removed = httpx.delete(server.url + "/v1/models/api-test", params={"remove": "true"}).json()
        assert removed["removed"] is True and not (settings.model_dir / SUBDIR).exists()
        assert httpx.get(server.url + "/v1/models/api-test").json()["status"] == "available"
        refused = httpx.delete(server.url + "/v1/models/pocketsphinx", params={"remove": "true"})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "not_removable"


def test_offline_download_request_is_refused(tmp_path: Path, files: FileServer) -> None:
    settings = _settings(tmp_path, files.add(f"/{SUBDIR}.tar.bz2", ARCHIVE), offline=True)
    with running_server(settings) as server:
        response = httpx.post(server.url + "/v1/models/api-test")
        assert response.status_code == 409
        error = response.json()["error"]
        assert error["code"] == "offline" and "hearline models pull api-test" in error["message"]
        assert httpx.post(server.url + "/v1/models/nope").status_code == 404
    assert files.state.requests == []


def test_api_key_is_required_when_configured(tmp_path: Path, files: FileServer) -> None:
    settings = _settings(tmp_path, files.add(f"/{SUBDIR}.tar.bz2", ARCHIVE), api_key="secret")
    with running_server(settings) as server:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.url + "/v1", api_key="wrong").models.list()
        ids = [m.id for m in openai.OpenAI(base_url=server.url + "/v1", api_key="secret").models.list()]
        assert "pocketsphinx" in ids


def _transcribe(client: openai.OpenAI, model: str) -> openai.APIStatusError:
    audio = clip("en_pocketsphinx_goforward").path
    with pytest.raises(openai.APIStatusError) as info:
        client.audio.transcriptions.create(model=model, file=(audio.name, audio.read_bytes()))
    body = info.value.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return info.value


def test_failed_auto_download_is_503_unknown_and_offline_are_404(
    tmp_path: Path, files: FileServer, monkeypatch
) -> None:
    """A model the server knows but cannot fetch now is the server's problem (503); an unknown name, or a
    missing model in offline mode, is the request's (404)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    settings = _settings(tmp_path, files.url + "/moved-away.tar.bz2")  # the archive answers 404
    with running_server(settings) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        failed = _transcribe(client, "api-test")
        assert failed.status_code == 503
        error = failed.response.json()["error"]
        assert error["code"] == "model_unavailable" and error["type"] == "server_error" and error["param"] == "model"
        assert "downloading it failed" in error["message"] and "HTTP 404" in error["message"]
        assert "hearline models pull api-test" in error["message"]
        assert len(files.state.gets("/moved-away.tar.bz2")) == 1

        unknown = _transcribe(client, "no-such-model")
        assert unknown.status_code == 404 and unknown.response.json()["error"]["code"] == "model_not_found"

    offline = _settings(tmp_path, files.url + "/moved-away.tar.bz2", offline=True)
    with running_server(offline) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        missing = _transcribe(client, "api-test")
        assert missing.status_code == 404
        error = missing.response.json()["error"]
        assert error["code"] == "model_not_found" and "offline mode is on" in error["message"]
    assert len(files.state.gets("/moved-away.tar.bz2")) == 1  # offline: not asked again


async def test_a_model_in_use_by_a_live_session_is_not_unloaded(tmp_path: Path) -> None:
    """DELETE during a live session: 409, and the session goes on to its final; once it ends, 200."""
    with running_server(Settings.load(model_dir=tmp_path / "models", model="pocketsphinx")) as server:
        pool = server.config.app.state.pool
        async with websockets.connect(server.ws_url + "/stt") as ws:
            assert json.loads(await ws.recv())["type"] == "connected"
            await ws.send(json.dumps({"command": "start"}))
            pcm = pcm16("en_pocketsphinx_goforward")
            await ws.send(pcm[: len(pcm) // 2])
            await asyncio.to_thread(eventually, lambda: pool.users_of("pocketsphinx") == 1)
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                refused = await client.delete("/v1/models/pocketsphinx")
                assert refused.status_code == 409
                error = refused.json()["error"]
                assert error["code"] == "model_in_use" and "1 live session" in error["message"]
                assert (await client.delete("/v1/models/pocketsphinx?remove=true")).status_code == 409
            await ws.send(pcm[len(pcm) // 2 :])
            await ws.send(json.dumps({"command": "stop"}))
            while (message := json.loads(await asyncio.wait_for(ws.recv(), 60)))["type"] != "final":
                assert message["type"] != "error", message
            assert "forward" in message["text"].lower()
        await asyncio.to_thread(eventually, lambda: pool.users_of("pocketsphinx") == 0)
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            unloaded = await client.delete("/v1/models/pocketsphinx")
        assert unloaded.status_code == 200 and unloaded.json()["unloaded"] is True


# -- pulling and deleting: API key, or loopback ---------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True), ("127.3.4.5", True), ("::1", True), ("::ffff:127.0.0.1", True),
        ("192.168.1.20", False), ("10.0.0.1", False), ("::ffff:192.168.1.20", False), ("fe80::1", False),
        ("0.0.0.0", False), ("localhost", False), ("", False), (None, False),
    ],
)  # fmt: skip
def test_is_loopback(host: str | None, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_pull_and_delete_from_loopback_without_a_key(tmp_path: Path) -> None:
    settings = Settings.load(model_dir=tmp_path / "models", model="pocketsphinx")
    with running_server(settings) as srv:
        _pull_and_delete(srv.url)


def _pull_and_delete(url: str) -> None:
    assert httpx.post(url + "/v1/models/pocketsphinx", timeout=60).status_code == 200  # installed already
    deleted = httpx.delete(url + "/v1/models/pocketsphinx", timeout=60)
    assert deleted.status_code == 200 and deleted.json()["id"] == "pocketsphinx"


async def _from(app: Any, host: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """The real app over ASGI with a chosen client address (a LAN client cannot be faked over loopback TCP)."""
    transport = httpx.ASGITransport(app=app, client=(host, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://hearline.lan") as client:
        return await client.request(method, path, **kwargs)


async def test_pull_and_delete_from_the_lan_need_the_api_key(tmp_path: Path) -> None:
    # listening on the LAN (a server bound to loopback refuses the LAN's Host names before anything else)
    app = create_app(Settings.load(model_dir=tmp_path / "models", model="pocketsphinx", host="0.0.0.0"))
    try:
        for method in ("POST", "DELETE"):
            refused = await _from(app, "192.168.1.20", method, "/v1/models/pocketsphinx")
            assert refused.status_code == 403, method
            error = refused.json()["error"]
            assert error["type"] == "invalid_request_error" and error["code"] == "permission_denied"
            assert "--api-key" in error["message"]
        listed = await _from(app, "192.168.1.20", "GET", "/v1/models")  # reading stays open
        assert listed.status_code == 200
        assert (await _from(app, "127.0.0.1", "POST", "/v1/models/pocketsphinx")).status_code == 200

        app.state.settings = Settings.load(
            model_dir=tmp_path / "models", model="pocketsphinx", host="0.0.0.0", api_key="k"
        )
        assert (await _from(app, "192.168.1.20", "POST", "/v1/models/pocketsphinx")).status_code == 401
        keyed = await _from(app, "192.168.1.20", "POST", "/v1/models/pocketsphinx", headers={"X-API-Key": "k"})
        assert keyed.status_code == 200
        keyed = await _from(app, "192.168.1.20", "DELETE", "/v1/models/pocketsphinx", headers={"X-API-Key": "k"})
        assert keyed.status_code == 200
    finally:
        await app.state.pool.close()
