"""Bad input and overload: each answers OpenAI's error envelope with the right status (so the SDK raises
the matching exception class), and the server keeps answering afterwards.

Truncated MP3 policy: like media players, the server decodes whatever complete frames arrived and
transcribes those (200 with a prefix of the text); a fragment holding only headers (ID3 tag and the
Xing/Info frame, no audio) is a 400.
"""

from __future__ import annotations

import logging
import random
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fastapi import FastAPI
from openai import OpenAI

from hearline.config import Settings
from hearline.server.app import create_app
from hearline.server.errors import is_public
from tests.helpers.corpus import clip
from tests.helpers.media import header_only
from tests.helpers.polling import eventually
from tests.helpers.server import ServerThread, running_server

GO_FORWARD = clip("en_pocketsphinx_goforward")
EXPECTED = "go forward ten meters"


@pytest.fixture(scope="module")
def client(server: ServerThread) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def _good() -> tuple[str, bytes]:
    return (GO_FORWARD.path.name, GO_FORWARD.path.read_bytes())


def _still_answers(client: OpenAI) -> None:
    assert client.audio.transcriptions.create(model="whisper-1", file=_good()).text == EXPECTED


def _envelope(error: openai.APIStatusError) -> dict[str, object]:
    body = error.response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.fixture(scope="module")
def mp3(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    target = tmp_path_factory.mktemp("mp3") / "go.mp3"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(GO_FORWARD.path), "-codec:a", "libmp3lame", "-b:a", "64k",
         str(target)],
        check=True,
    )  # fmt: skip
    return target.read_bytes()


@pytest.mark.parametrize(
    ("name", "payload", "message"),
    [
        ("empty.wav", b"", "empty"),
        ("noise.wav", random.Random(7).randbytes(50_000), "decode"),
        ("notes.wav", b"This is a text file pretending to be a WAV.\n" * 40, "not a recognised audio"),
    ],
    ids=["empty", "random", "text"],
)
def test_undecodable_upload_is_400(client: OpenAI, name: str, payload: bytes, message: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(model="whisper-1", file=(name, payload))
    error = _envelope(info.value)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "file"
    assert message in str(error["message"])
    _still_answers(client)


def test_truncated_mp3_decodes_what_is_there(client: OpenAI, mp3: bytes) -> None:
    full = client.audio.transcriptions.create(model="whisper-1", file=("go.mp3", mp3), response_format="verbose_json")
    half = client.audio.transcriptions.create(
        model="whisper-1", file=("go.mp3", mp3[: len(mp3) // 2]), response_format="verbose_json"
    )
    assert 0 < half.duration < full.duration
    assert full.text.startswith(half.text.split()[0])  # the first words survive the cut

    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(model="whisper-1", file=("go.mp3", header_only(mp3)))
    assert _envelope(info.value)["param"] == "file"
    _still_answers(client)


def test_missing_file_field(server: ServerThread, client: OpenAI) -> None:
    response = httpx.post(server.url + "/v1/audio/transcriptions", data={"model": "whisper-1"}, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "file"
    assert response.json()["error"]["type"] == "invalid_request_error"
    # a text field called "file" is not a file either
    response = httpx.post(server.url + "/v1/audio/transcriptions", data={"file": "hello"}, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == "file"
    # not multipart at all
    response = httpx.post(server.url + "/v1/audio/transcriptions", json={"file": "x"}, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == "file"
    _still_answers(client)


def test_unknown_response_format(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(model="whisper-1", file=_good(), response_format="xml")  # type: ignore[arg-type]
    assert _envelope(info.value)["param"] == "response_format"
    _still_answers(client)


@pytest.mark.parametrize("temperature", ["hot", "nan", "3"])
def test_bad_temperature(client: OpenAI, temperature: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(model="whisper-1", file=_good(), temperature=temperature)  # type: ignore[arg-type]
    assert _envelope(info.value)["param"] == "temperature"
    _still_answers(client)


def test_bad_granularity_and_include(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(
            model="whisper-1",
            file=_good(),
            response_format="verbose_json",
            timestamp_granularities=["sentence"],  # type: ignore[list-item]
        )
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper-1", file=_good(), include=["everything"])  # type: ignore[list-item]
    _still_answers(client)


def test_unknown_model_is_404(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.audio.transcriptions.create(model="no-such-model", file=_good())
    error = _envelope(info.value)
    assert error["param"] == "model" and error["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(model="/no/such/dir", file=_good())
    _still_answers(client)


def test_unknown_route_and_method_in_envelope(server: ServerThread) -> None:
    response = httpx.get(server.url + "/v1/nothing-here", timeout=60)
    assert response.status_code == 404 and "error" in response.json()
    response = httpx.get(server.url + "/v1/audio/transcriptions", timeout=60)
    assert response.status_code == 405 and response.json()["error"]["type"] == "invalid_request_error"


def test_validation_errors_use_the_envelope() -> None:
    """FastAPI's own parameter validation (used by other routers) also answers 400 in the envelope."""
    app: FastAPI = create_app(Settings.load(), preload=False)

    @app.get("/typed")
    async def typed(n: int) -> dict[str, int]:
        return {"n": n}

    server = ServerThread(app).start()
    try:
        response = httpx.get(server.url + "/typed", params={"n": "many"}, timeout=60)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == "n"
        assert httpx.get(server.url + "/typed", params={"n": "4"}, timeout=60).json() == {"n": 4}
    finally:
        server.stop()


# -- upload limit and disconnects -------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_limit_server() -> Iterator[ServerThread]:
    with running_server(Settings.load(max_upload_mb=0.25, max_audio_minutes=0.1)) as srv:
        yield srv


def test_oversize_upload_is_413(small_limit_server: ServerThread) -> None:
    client = OpenAI(base_url=small_limit_server.url + "/v1", api_key="x", max_retries=0)
    big = ("big.wav", b"\0" * (1024 * 1024))
    with pytest.raises(openai.APIStatusError) as info:
        client.audio.transcriptions.create(model="whisper-1", file=big)
    assert info.value.status_code == 413
    assert _envelope(info.value)["code"] == "file_too_large"
    _still_answers(client)


def test_audio_longer_than_the_limit_is_a_clear_400_on_both_rest_doors(
    small_limit_server: ServerThread, tmp_path: Path
) -> None:
    """A small file that decodes to more than --max-audio-minutes (here 6 s): refused, not transcribed."""
    long = tmp_path / "long.flac"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "20",
                    "-c:a", "flac", "-sample_fmt", "s16", str(long)], check=True)  # fmt: skip
    assert long.stat().st_size < 0.25 * 1024 * 1024  # under the upload limit: only the duration refuses it
    client = OpenAI(base_url=small_limit_server.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(model="whisper-1", file=long)
    error = _envelope(info.value)
    assert (error["code"], error["param"]) == ("audio_too_long", "file")
    assert "6 s" in str(error["message"]) and "max-audio-minutes" in str(error["message"])
    listen = small_limit_server.url + "/v1/listen"
    for query, body in [("", long.read_bytes()), ("?encoding=mulaw&sample_rate=8000", b"\xff" * 8000 * 20)]:
        response = httpx.post(listen + query, content=body, timeout=60)
        assert response.status_code == 400, query
        assert "longer than the limit of 6 s" in response.json()["err_msg"], query
    _still_answers(client)  # a 2.8 s clip is under the limit


def test_oversize_chunked_upload_is_413(small_limit_server: ServerThread) -> None:
    """No Content-Length: the limit is enforced while the body streams in."""
    boundary = "hearlineboundary"

    def body() -> Iterator[bytes]:
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
               "Content-Type: audio/wav\r\n\r\n").encode()  # fmt: skip
        for _ in range(64):
            yield b"\1" * 16384
        yield f"\r\n--{boundary}--\r\n".encode()

    response = httpx.post(
        small_limit_server.url + "/v1/audio/transcriptions",
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=60,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    client = OpenAI(base_url=small_limit_server.url + "/v1", api_key="x", max_retries=0)
    _still_answers(client)


def test_uploads_past_the_limit_are_429_on_both_doors_until_a_place_frees(tmp_path: Path) -> None:
    """One place (--max-uploads 1) held by an upload that stalls: the next ones are refused at once, in each
    door's shape; when the stalled one times out (408) the place is free again."""
    settings = Settings.load(model_dir=tmp_path / "models", model="pocketsphinx", max_uploads=1, upload_timeout_s=2)
    with running_server(settings) as srv, socket.create_connection(("127.0.0.1", srv.port), timeout=60) as held:
        held.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
        )
        eventually(lambda: getattr(srv.config.app.state, "uploads_active", 0) == 1, 30, "the upload to hold its place")
        client = OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.RateLimitError) as refused:
            client.audio.transcriptions.create(model="whisper-1", file=_good())
        assert _envelope(refused.value)["code"] == "too_many_uploads"
        assert int(refused.value.response.headers["retry-after"]) >= 1
        listen = httpx.post(srv.url + "/v1/listen", content=GO_FORWARD.path.read_bytes(), timeout=60)
        assert listen.status_code == 429 and "uploads" in listen.json()["err_msg"]
        assert held.recv(65536).startswith(b"HTTP/1.1 408")  # the stalled upload times out and lets go
        eventually(lambda: srv.config.app.state.uploads_active == 0, 30, "the place to be free")
        _still_answers(client)


def test_client_disconnecting_mid_upload(
    client: OpenAI, server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    boundary = "cut"
    head = (
        f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 5000000\r\n\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    ).encode()
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(head + GO_FORWARD.path.read_bytes()[:40_000])
            # the socket is closed with most of the declared body never sent
        _still_answers(client)
    assert any("disconnected" in r.getMessage() for r in caplog.records), caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_streaming_client_going_away_stops_the_engine(
    client: OpenAI, server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    long_clip = clip("en_librivox_sonnet001")  # 53 s: many segments still to come when the client leaves
    with caplog.at_level(logging.INFO, logger="hearline.server.openai_rest"):
        with httpx.stream(
            "POST",
            server.url + "/v1/audio/transcriptions",
            data={"stream": "true"},
            files={"file": (long_clip.path.name, long_clip.path.read_bytes())},
            timeout=120,
        ) as response:
            first = next(line for line in response.iter_lines() if line)
        assert first.startswith('data: {"type": "transcript.text.delta"')
        eventually(lambda: "went away" in caplog.text, what="the server to notice")
        assert "streaming client went away; stopped transcribing" in caplog.text
        _still_answers(client)


# -- auth ------------------------------------------------------------------------------------------
def test_api_key(tmp_path: Path) -> None:
    with running_server(Settings.load(api_key="s3cret")) as srv:
        wrong = OpenAI(base_url=srv.url + "/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            wrong.audio.transcriptions.create(model="whisper-1", file=_good())
        assert _envelope(info.value)["code"] == "invalid_api_key"
        assert info.value.status_code == 401

        right = OpenAI(base_url=srv.url + "/v1", api_key="s3cret", max_retries=0)
        _still_answers(right)
        url = srv.url + "/v1/audio/transcriptions"
        assert (
            httpx.post(url, files={"file": _good()}, headers={"X-API-Key": "s3cret"}, timeout=60).json()["text"]
            == EXPECTED
        )
        assert (
            httpx.post(url, files={"file": _good()}, params={"token": "s3cret"}, timeout=60).json()["text"] == EXPECTED
        )
        assert httpx.post(url, files={"file": _good()}, timeout=60).status_code == 401
        assert httpx.get(srv.url + "/health", timeout=60).json() == {"status": "ok"}  # probes need no key
        models = httpx.get(srv.url + "/v1/models", timeout=60)
        assert models.status_code == 401 and models.json()["error"]["code"] == "invalid_api_key"
    # the web pages and their assets load without a key (they pass ?token= on their WebSockets)
    assert all(is_public("GET", path) for path in ("/", "/captions", "/static/app.js", "/health"))
    assert not any(is_public("GET", path) for path in ("/v1/models", "/v1/audio/transcriptions", "/start"))


def test_cors_preflight_without_key() -> None:
    with running_server(Settings.load(api_key="k", cors_origins="https://app.example")) as srv:
        response = httpx.options(
            srv.url + "/v1/audio/transcriptions",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
            timeout=60,
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        denied = httpx.post(srv.url + "/v1/audio/transcriptions", headers={"Origin": "https://app.example"}, timeout=60)
        assert denied.status_code == 401
        assert denied.headers["access-control-allow-origin"] == "https://app.example"  # browsers can read it


# -- overload --------------------------------------------------------------------------------------
def test_busy_is_429_with_retry_after() -> None:
    # the model's gate refuses here, not the upload limit (its own test above)
    settings = Settings.load(max_concurrency_per_model=1, max_queue_per_model=0, workers=2, max_uploads=0)
    long_clip = clip("en_fleurs_en_002")  # 11.5 s: each request holds the only slot for a while
    payload = (long_clip.path.name, long_clip.path.read_bytes())
    with running_server(settings) as srv:
        client = OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
        outcomes: list[object] = []
        lock = threading.Lock()
        barrier = threading.Barrier(6)

        def one() -> None:
            barrier.wait()
            try:
                result: object = client.audio.transcriptions.create(model="whisper-1", file=payload).text
            except openai.RateLimitError as exc:
                result = exc
            with lock:
                outcomes.append(result)

        threads = [threading.Thread(target=one) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        busy = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
        done = [o for o in outcomes if isinstance(o, str)]
        assert len(busy) + len(done) == 6
        assert done and busy
        assert int(busy[0].response.headers["retry-after"]) >= 1
        assert _envelope(busy[0])["code"] == "server_busy"
        _still_answers(client)
