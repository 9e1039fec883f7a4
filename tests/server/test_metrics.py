"""GET /metrics (Prometheus text format) after real traffic, and GET /ready, on real servers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from prometheus_client import REGISTRY

from hearline.config import Settings
from hearline.server.app import create_app
from tests.helpers.corpus import clip, pcm16
from tests.helpers.doors import recv_json, send_audio
from tests.helpers.metrics import metric, scrape
from tests.helpers.server import ServerThread, running_server

CLIP = "en_pocketsphinx_goforward"
KEY = "metrics-secret"


def transcribe(url: str, **headers: str) -> httpx.Response:
    with clip(CLIP).path.open("rb") as audio:
        return httpx.post(
            url + "/v1/audio/transcriptions",
            files={"file": ("clip.wav", audio, "audio/wav")},
            data={"model": "whisper-1"},
            headers=headers,
            timeout=120,
        )


async def stt_session(ws_url: str) -> None:
    async with websockets.connect(ws_url + "/stt") as ws:
        assert (await recv_json(ws))["type"] == "connected"
        await ws.send(json.dumps({"command": "start"}))
        assert await recv_json(ws) == {"type": "session_started"}
        await send_audio(ws, pcm16(CLIP))
        await ws.send(json.dumps({"command": "stop"}))
        while (await recv_json(ws))["type"] != "session_ended":  # the server closes the session before this
            pass


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server of its own: the counters start at zero and only this module's traffic moves them."""
    model_dir = tmp_path_factory.mktemp("metrics-models")
    with running_server(Settings.load(model_dir=Path(model_dir), model="pocketsphinx")) as srv:
        yield srv


def test_counters_follow_rest_and_live_traffic(metrics_server: ServerThread) -> None:
    before = scrape(metrics_server.url)
    assert metric(before, "hearline_model_loads_total", model="pocketsphinx") >= 1  # the preload
    assert metric(before, "hearline_live_sessions_opened_total") == 0

    response = transcribe(metrics_server.url)
    assert response.status_code == 200, response.text
    listen = httpx.post(metrics_server.url + "/v1/listen", content=clip(CLIP).path.read_bytes(), timeout=120)
    assert listen.status_code == 200, listen.text  # Deepgram's pre-recorded door
    asyncio.run(stt_session(metrics_server.ws_url))

    after = scrape(metrics_server.url)
    duration = clip(CLIP).duration
    assert metric(after, "hearline_live_sessions_opened_total", door="stt", model="pocketsphinx") == 1
    assert metric(after, "hearline_live_sessions_open", door="stt") == 0  # closed before session_ended
    assert metric(after, "hearline_audio_received_seconds_total", door="stt") == pytest.approx(duration, abs=0.05)
    assert metric(after, "hearline_audio_received_seconds_total", door="rest") == pytest.approx(duration, abs=0.05)
    assert metric(after, "hearline_audio_received_seconds_total", door="deepgram") == pytest.approx(duration, abs=0.05)
    assert (
        metric(after, "hearline_rest_requests_total", method="POST", endpoint="/v1/audio/transcriptions", status="200")
        == 1
    )
    # the two uploads; the live session's steps count under their own kinds
    assert metric(after, "hearline_inference_seconds_count", model="pocketsphinx", kind="request") == 2
    assert metric(after, "hearline_inference_seconds_count", model="pocketsphinx") >= 2
    assert metric(after, "hearline_inference_seconds_sum", model="pocketsphinx") > 0
    assert metric(after, "hearline_model_loads_total", model="pocketsphinx") >= 1
    assert ("hearline_work_waiting", frozenset({("model", "pocketsphinx")})) in after
    assert metric(after, "hearline_work_waiting", model="pocketsphinx") == 0  # nothing is running now
    # the scrape before this one is counted too, by its route template
    assert metric(after, "hearline_rest_requests_total", endpoint="/metrics", status="200") >= 1


def test_unknown_paths_share_one_label_and_count_as_refusals(metrics_server: ServerThread) -> None:
    before = scrape(metrics_server.url)
    for path in ("/no/such/a", "/no/such/b"):
        assert httpx.get(metrics_server.url + path, timeout=30).status_code == 404
    after = scrape(metrics_server.url)
    unmatched = "hearline_rest_requests_total"
    assert (
        metric(after, unmatched, endpoint="unmatched", status="404")
        - metric(before, unmatched, endpoint="unmatched", status="404")
        == 2
    )
    assert not any("/no/such" in dict(series).get("endpoint", "") for _, series in after)
    refused = metric(after, "hearline_refusals_total", reason="not_found")
    assert refused - metric(before, "hearline_refusals_total", reason="not_found") == 2


def test_ready_follows_the_default_model_and_draining(tmp_path: Path) -> None:
    app = create_app(Settings.load(model_dir=tmp_path, model="pocketsphinx"), preload=False)
    server = ServerThread(app).start()
    try:
        ready = httpx.get(server.url + "/ready", timeout=30)
        assert (ready.status_code, ready.json()) == (503, {"status": "loading"})
        assert httpx.get(server.url + "/health", timeout=30).json() == {"status": "loading"}  # liveness: 200
        assert metric(scrape(server.url), "hearline_model_loads_total") == 0

        assert transcribe(server.url).status_code == 200  # loads the default model
        ready = httpx.get(server.url + "/ready", timeout=30)
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})

        app.state.pool.draining = True
        ready = httpx.get(server.url + "/ready", timeout=30)
        assert (ready.status_code, ready.json()) == (503, {"status": "draining"})
        app.state.pool.draining = False

        deleted = httpx.delete(server.url + "/v1/models/pocketsphinx", timeout=60)
        assert deleted.status_code == 200 and deleted.json()["unloaded"] is True
        ready = httpx.get(server.url + "/ready", timeout=30)
        assert (ready.status_code, ready.json()) == (503, {"status": "loading"})
        samples = scrape(server.url)
        assert metric(samples, "hearline_model_loads_total", model="pocketsphinx") == 1
        assert metric(samples, "hearline_model_evictions_total", model="pocketsphinx", reason="request") == 1
    finally:
        server.stop()


def test_metrics_needs_the_key_when_one_is_set(tmp_path: Path) -> None:
    with running_server(Settings.load(model_dir=tmp_path, model="pocketsphinx", api_key=KEY)) as srv:
        refused = httpx.get(srv.url + "/metrics", timeout=30)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
        ready = httpx.get(srv.url + "/ready", timeout=30)  # public, like /health
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        samples = scrape(srv.url, Authorization=f"Bearer {KEY}")
        assert metric(samples, "hearline_rest_requests_total", endpoint="/metrics", status="401") == 1
        assert metric(samples, "hearline_refusals_total", reason="unauthorized") == 1


def test_each_app_has_its_own_registry(tmp_path: Path) -> None:
    first = create_app(Settings.load(model_dir=tmp_path, model="pocketsphinx"), preload=False)
    second = create_app(Settings.load(model_dir=tmp_path, model="pocketsphinx"), preload=False)
    assert first.state.metrics.registry is not second.state.metrics.registry
    first.state.metrics.refused("busy")
    assert first.state.metrics.registry.get_sample_value("hearline_refusals_total", {"reason": "busy"}) == 1
    assert second.state.metrics.registry.get_sample_value("hearline_refusals_total", {"reason": "busy"}) is None
    assert not any(family.name.startswith("hearline_") for family in REGISTRY.collect())  # the default registry
