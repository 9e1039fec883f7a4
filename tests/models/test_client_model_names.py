"""Model names that come from the network are data: never paths the server opens, never hub downloads.

Every door resolves a client's name through ``ModelPool.resolve`` (``resolve_model(..., client=True)``):
a path, ``..``, ``~user`` or a hub repository the catalog does not list is refused with the door's own
"unknown model" error, before any file is opened or stat-ed and before any hub is asked.  The operator's
``--model``, the CLI, ``allow_model_paths`` and ``allow_remote_models`` keep paths and repositories usable.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pocketsphinx
import pytest
from websockets.asyncio.client import connect

from hearline.cli import build_parser, main, settings_from_args
from hearline.config import Settings
from hearline.models.pool import ModelPool
from hearline.models.resolve import (
    SHOWN_NAME_CHARS,
    ModelNameRefused,
    UnknownModel,
    is_path_like,
    resolve_model,
)
from hearline.server.app import create_app
from tests.helpers.corpus import clip
from tests.helpers.fileserver import hub_server
from tests.helpers.server import ServerThread, running_server

GO_FORWARD = clip("en_pocketsphinx_goforward")
#: the bundled PocketSphinx model as a directory path (what an operator may pass as --model)
PS_DIR = str(Path(pocketsphinx.get_model_path()) / "en-us")
#: the first bytes of the file a client names; the old error quoted them ("bad magic 0x...")
SECRET = b"TOPSECRET-first-bytes-0123456789"
SECRET_HEX = SECRET[:4][::-1].hex()  # how a little-endian "bad magic 0x..." would spell them


def _audio() -> tuple[str, bytes]:
    return (GO_FORWARD.path.name, GO_FORWARD.path.read_bytes())


def _leaks(text: str) -> bool:
    return SECRET.decode() in text or SECRET[:8].decode() in text or SECRET_HEX in text.lower()


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file whose name a client sends as its model (``.bin``: what whisper.cpp would try to read)."""
    path = tmp_path_factory.mktemp("private") / "secret.bin"
    path.write_bytes(SECRET + bytes(64))
    return path


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server with the defaults: no key, no opt-ins."""
    with running_server(Settings.load(model_dir=tmp_path_factory.mktemp("models"), model="pocketsphinx")) as server:
        yield server


def _refused_names(secret: Path) -> list[str]:
    return [
        str(secret),  # absolute
        os.path.relpath(secret),  # relative to the server's working directory
        "./" + os.path.relpath(secret),
        "..",
        "../" * 12 + str(secret).lstrip("/"),
        "~root",
        "~root/.ssh/id_rsa",
        f"models/../../{secret.name}",
        "a/b/c",
        "C:\\Windows\\win.ini",
    ]


# -- the decision, from the name alone -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("/etc/passwd", True), ("..", True), ("../x", True), ("./m", True), ("~root", True), ("~/m", True),
        ("a/../b", True), ("a/b/c", True), ("a\\b", True), (".hidden", True),
        ("tiny", False), ("Systran/faster-whisper-tiny", False), ("owner/repo", False), ("sensevoice-small", False),
    ],
)  # fmt: skip
def test_is_path_like(name: str, expected: bool) -> None:
    assert is_path_like(name) is expected


def test_client_paths_are_refused_without_touching_the_file(
    secret_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings.load(model_dir=tmp_path / "models", model="pocketsphinx")
    touched: list[str] = []
    real_stat, real_open = os.stat, os.open

    def watched(path: Any) -> bool:
        text = os.fsdecode(path) if isinstance(path, str | bytes | os.PathLike) else ""
        return "secret" in text or text == "/root" or text.startswith("/root/")

    def stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if watched(path):
            touched.append(str(path))
        return real_stat(path, *args, **kwargs)

    def open_(path: Any, *args: Any, **kwargs: Any) -> Any:
        if watched(path):
            touched.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "open", open_)
    for name in _refused_names(secret_file):
        with pytest.raises(ModelNameRefused) as refused:
            resolve_model(name, settings, client=True)
        assert isinstance(refused.value, UnknownModel)
        assert not _leaks(str(refused.value)), name
    assert touched == []
    monkeypatch.undo()
    # The operator (CLI, --model, models.yaml) still names paths: this one is really read and rejected.
    with pytest.raises(UnknownModel):
        resolve_model("/no/such/dir", settings)
    assert resolve_model(PS_DIR, settings).engine == "pocketsphinx"


def test_errors_quote_at_most_a_hundred_characters_of_the_name(tmp_path: Path) -> None:
    settings = Settings.load(model_dir=tmp_path / "models", model="pocketsphinx")
    long_name = "/" + "x" * 5000
    with pytest.raises(ModelNameRefused) as refused:
        resolve_model(long_name, settings, client=True)
    shown = str(refused.value)  # "/" and 99 x's of the name, then "..."
    assert "'/" + "x" * (SHOWN_NAME_CHARS - 1) + "...'" in shown and "x" * SHOWN_NAME_CHARS not in shown
    with pytest.raises(UnknownModel) as unknown:
        resolve_model("y" * 5000, settings, client=True)
    assert "y" * (SHOWN_NAME_CHARS + 1) not in str(unknown.value)


def test_known_names_still_resolve_for_clients(tmp_path: Path) -> None:
    settings = Settings.load(model_dir=tmp_path / "models", model="pocketsphinx")
    for name in (None, "", "default", "whisper-1", "pocketsphinx", "en-us"):
        assert resolve_model(name, settings, client=True).name == "pocketsphinx"
    assert resolve_model("tiny", settings, client=True).options["entry"].name == "tiny"  # catalog name
    hub_id = resolve_model("Systran/faster-whisper-tiny", settings, client=True)  # catalog's hub-style id
    assert hub_id.name == "tiny" and hub_id.options["source"] != "hub"
    with pytest.raises(ModelNameRefused, match="--allow-remote-models"):
        resolve_model("someone/whisper-finetune", settings, client=True)
    remote = Settings.load(model_dir=tmp_path / "models", model="pocketsphinx", allow_remote_models=True)
    assert resolve_model("someone/whisper-finetune", remote, client=True).repo == "someone/whisper-finetune"
    for odd in ("someone/" + "w" * 300, "some one/repo", "x/..", "-x/y"):  # never a hub request for these
        with pytest.raises(UnknownModel):
            resolve_model(odd, remote, client=True)
    # the operator's own --model, however a request spells it, stays the operator's
    ps_dir = PS_DIR
    configured = Settings.load(model_dir=tmp_path / "models", model=ps_dir)
    for name in (None, "default", ps_dir):
        assert resolve_model(name, configured, client=True).path == Path(ps_dir)


def test_an_installed_hub_repository_may_be_named(tmp_path: Path) -> None:
    """A repository the operator pulled (``hearline models pull owner/repo``) is an installed model."""
    settings = Settings.load(model_dir=tmp_path / "models", model="pocketsphinx")
    installed = tmp_path / "models" / "someone--whisper-finetune"
    installed.mkdir(parents=True)
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        (installed / name).write_bytes(b"x")
    spec = resolve_model("someone/whisper-finetune", settings, client=True)
    assert spec.options["installed"] is True and spec.path == installed


# -- every door refuses, without echoing the file -------------------------------------------------


def test_rest_refuses_paths(srv: ServerThread, secret_file: Path) -> None:
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
    for name in _refused_names(secret_file):
        with pytest.raises(openai.NotFoundError) as refused:
            client.audio.transcriptions.create(model=name, file=_audio())
        body: Any = refused.value.body
        assert body["code"] == "model_not_found" and body["param"] == "model", name
        assert not _leaks(json.dumps(body)), name
    with pytest.raises(openai.NotFoundError) as refused:
        client.models.retrieve(str(secret_file).lstrip("/"))  # the SDK joins the id into the path
    assert not _leaks(json.dumps(refused.value.body))
    # the server keeps serving
    assert client.audio.transcriptions.create(model="whisper-1", file=_audio()).text == "go forward ten meters"


async def test_asr_refuses_paths(srv: ServerThread, secret_file: Path) -> None:
    for name in (str(secret_file), "..", "~root"):
        async with connect(srv.ws_url + "/asr?" + httpx.QueryParams(model=name, language="en").__str__()) as ws:
            raw = await asyncio.wait_for(ws.recv(), 60)
            message = json.loads(raw)
            assert message["type"] == "error" and "not found" in message["error"], name
            assert not _leaks(str(raw))
            await ws.wait_closed()
            assert ws.close_code == 4400


def test_deepgram_refuses_paths(srv: ServerThread, secret_file: Path) -> None:
    for name in (str(secret_file), "~root", ".."):
        response = httpx.post(srv.url + "/v1/listen", params={"model": name}, content=_audio()[1], timeout=60)
        assert response.status_code == 400, (name, response.text)
        assert not _leaks(response.text)


async def test_realtime_refuses_paths(srv: ServerThread, secret_file: Path) -> None:
    # the model in the URL ...
    query = httpx.QueryParams(intent="transcription", model=str(secret_file))
    async with connect(f"{srv.ws_url}/v1/realtime?{query}") as ws:
        raw = await asyncio.wait_for(ws.recv(), 60)
        event = json.loads(raw)
        assert event["type"] == "error" and event["error"]["code"] == "model_not_found"
        assert not _leaks(str(raw))
        await ws.wait_closed()
    # ... and in a session update
    session = {"type": "transcription", "audio": {"input": {"transcription": {"model": str(secret_file)}}}}
    async with connect(f"{srv.ws_url}/v1/realtime?intent=transcription") as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 60))["type"] == "session.created"
        await ws.send(json.dumps({"type": "session.update", "session": session}))
        raw = await asyncio.wait_for(ws.recv(), 60)
        event = json.loads(raw)
        assert event["type"] == "error" and event["error"]["code"] == "model_not_found", event
        assert not _leaks(str(raw))


def test_captions_doors_refuse_paths(srv: ServerThread, secret_file: Path) -> None:
    for path, params in (
        ("/v1/languages", {"model": str(secret_file)}),
        ("/start", {"source": "system", "model": str(secret_file)}),
        ("/start", {"source": "system", "model": "~root"}),
    ):
        response = httpx.get(srv.url + path, params=params, timeout=60)
        assert response.status_code == 404, (path, params, response.text)
        assert path != "/start" or response.json()["code"] == 40401  # the captions door's "unknown model"
        assert not _leaks(response.text)


async def test_wyoming_refuses_paths(tmp_path: Path, secret_file: Path) -> None:
    from wyoming.asr import Transcribe
    from wyoming.client import AsyncTcpClient
    from wyoming.error import Error

    from hearline.server.wyoming import WyomingServer

    app = create_app(Settings.load(model_dir=tmp_path / "models", model="pocketsphinx"))
    server = WyomingServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        for name in (str(secret_file), "..", "nobody/no-such-model"):
            client = AsyncTcpClient("127.0.0.1", server.port)
            await client.connect()
            try:
                await client.write_event(Transcribe(name=name).event())
                event = await asyncio.wait_for(client.read_event(), 60)
            finally:
                await client.disconnect()
            assert event is not None and Error.is_type(event.type), name
            error = Error.from_event(event)
            assert "not found" in error.text and not _leaks(error.text), name
    finally:
        await server.stop()
        await app.state.pool.close()


# -- unknown hub repositories: not a single request to the hub ------------------------------------


@pytest.fixture()
def online_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with hub_server() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub


def test_unknown_hub_repository_is_refused_without_asking_the_hub(online_hub: Any, tmp_path: Path) -> None:
    settings = Settings.load(model_dir=tmp_path / "models", model="pocketsphinx", models_file=tmp_path / "none.yaml")
    with running_server(settings) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        for name in ("nobody/no-such-model", "distil-nothing", "faster-whisper-nothing"):
            with pytest.raises(openai.NotFoundError) as refused:
                client.audio.transcriptions.create(model=name, file=_audio())
            assert "--allow-remote-models" in refused.value.message
        pull = httpx.post(server.url + "/v1/models/nobody/no-such-model", timeout=60)  # from loopback: allowed
        assert pull.status_code == 404 and pull.json()["error"]["code"] == "model_not_found"
        assert httpx.get(server.url + "/v1/models/nobody/no-such-model", timeout=60).status_code == 404
    assert online_hub.state.requests == []


def test_allow_remote_models_lets_clients_name_hub_repositories(online_hub: Any, tmp_path: Path) -> None:
    settings = Settings.load(
        model_dir=tmp_path / "models", model="pocketsphinx", models_file=tmp_path / "none.yaml",
        allow_remote_models=True,
    )  # fmt: skip
    with running_server(settings) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.NotFoundError, match="the hub has no repository 'nobody/no-such-model'"):
            client.audio.transcriptions.create(model="nobody/no-such-model", file=_audio())
    assert online_hub.state.gets("/api/models/nobody/no-such-model/revision/main")  # it was asked this time


# -- allow_model_paths ------------------------------------------------------------------------------


def test_allow_model_paths_admits_paths_inside_only(tmp_path: Path, secret_file: Path) -> None:
    allowed = tmp_path / "allowed"
    shutil.copytree(PS_DIR, allowed / "ps")
    (allowed / "link-out").symlink_to(secret_file)  # inside by name, outside in fact
    (allowed / "sub").mkdir()
    settings = Settings.load(
        model_dir=tmp_path / "models", model="pocketsphinx", allow_model_paths=[allowed], threads=1
    )
    assert resolve_model(str(allowed / "ps"), settings, client=True).path == allowed / "ps"
    assert resolve_model(str(allowed / "sub" / ".." / "ps"), settings, client=True).path == allowed / "ps"
    for name in (str(allowed / "link-out"), str(allowed / ".." / secret_file.name), str(secret_file), "~root"):
        with pytest.raises(ModelNameRefused):
            resolve_model(name, settings, client=True)
    with pytest.raises(UnknownModel):
        resolve_model(str(allowed / "missing"), settings, client=True)
    with running_server(settings) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        text = client.audio.transcriptions.create(model=str(allowed / "ps"), file=_audio()).text
        assert text == "go forward ten meters"
        with pytest.raises(openai.NotFoundError) as refused:
            client.audio.transcriptions.create(model=str(allowed / "link-out"), file=_audio())
        assert not _leaks(json.dumps(refused.value.body))


async def test_pool_get_refuses_and_cli_model_is_trusted(tmp_path: Path, secret_file: Path) -> None:
    ps_dir = PS_DIR
    pool = ModelPool(Settings.load(model_dir=tmp_path / "models", model=ps_dir, threads=1))
    try:
        with pytest.raises(ModelNameRefused):
            await pool.get(str(secret_file))
        engine = await pool.get(ps_dir)  # the configured --model, named as the CLI does
        assert engine.kind == "pocketsphinx"
    finally:
        await pool.close()


def test_cli_transcribe_takes_a_model_path(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["transcribe", "--model", PS_DIR, str(GO_FORWARD.path)])
    assert code == 0
    assert capsys.readouterr().out.strip() == "go forward ten meters"


def test_settings_from_env_and_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.load().allow_model_paths == [] and Settings.load().allow_remote_models is False
    monkeypatch.setenv("HEARLINE_ALLOW_MODEL_PATHS", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    monkeypatch.setenv("HEARLINE_ALLOW_REMOTE_MODELS", "true")
    settings = Settings.load()
    assert settings.allow_model_paths == [tmp_path / "a", tmp_path / "b"] and settings.allow_remote_models
    monkeypatch.delenv("HEARLINE_ALLOW_MODEL_PATHS")
    monkeypatch.delenv("HEARLINE_ALLOW_REMOTE_MODELS")
    args = build_parser().parse_args(["serve", "--allow-model-paths", "/m1", "/m2", "--allow-remote-models"])
    flagged = settings_from_args(args)
    assert flagged.allow_model_paths == [Path("/m1"), Path("/m2")] and flagged.allow_remote_models is True
    plain = settings_from_args(build_parser().parse_args(["serve"]))
    assert plain.allow_model_paths == [] and plain.allow_remote_models is False
