"""server/captions.py: /start bodies.  Whatever arrives, the answer is the captions shape, never a 500.

The shared PocketSphinx server on a real port; bodies that cannot be parameters are refused before any
capture is touched (no audio device is needed), and parameters that do parse reach validation (40001).
"""

from __future__ import annotations

import contextlib
import itertools
import json
from pathlib import Path

import httpx
import pytest

from hearline.config import Settings
from tests.helpers.polling import eventually
from tests.helpers.server import ServerThread, running_server


@pytest.mark.parametrize(
    ("content", "ctype", "says"),
    [
        (b"[" * 100_000, "application/json", "larger than 64 KiB"),
        (b"[" * 60_000, "application/json", "nested too deep"),
        (b'{"source": "system"', "application/json", "not valid JSON"),
        (b"\xff\xfe{}", "application/json", "not valid JSON"),
        (b'["source", "system"]', "application/json", "JSON object"),
        (b"source=system&&=", "application/x-www-form-urlencoded", "not a valid form"),
        (b"source=system", "text/plain", "unsupported body type"),
        (b"--x\r\nContent-Disposition: form-data\r\n\r\nbroken", "multipart/form-data; boundary=x", "valid form"),
    ],
    ids=["huge", "deep", "truncated", "not-utf8", "array", "bad-form", "text-plain", "bad-multipart"],
)
def test_a_body_that_is_not_parameters_is_40004(server: ServerThread, content: bytes, ctype: str, says: str) -> None:
    response = httpx.post(server.url + "/start", content=content, headers={"Content-Type": ctype}, timeout=60)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 40004 and body["data"] == {"running": False}
    assert says in body["message"], body["message"]
    assert httpx.post(server.url + "/stop", timeout=60).json()["code"] == 0  # and the server goes on


def test_parameters_from_every_body_kind_reach_validation(server: ServerThread) -> None:
    url = server.url + "/start"
    answers = [
        httpx.post(url, json={"source": "bogus"}, timeout=60),
        httpx.post(url, data={"source": "bogus"}, timeout=60),
        httpx.post(url, files={"source": (None, "bogus")}, timeout=60),
        httpx.post(url + "?source=bogus", timeout=60),
    ]
    for answer in answers:
        assert answer.status_code == 400 and answer.json()["code"] == 40001, answer.text


def test_events_subscribers_are_capped(tmp_path: Path) -> None:
    settings = Settings.load(model_dir=tmp_path / "models", model="pocketsphinx", captions_max_subscribers=2)
    with running_server(settings) as server, contextlib.ExitStack() as streams:
        url = server.url + "/events"
        lines = []
        for _ in range(2):
            response = streams.enter_context(httpx.stream("GET", url, timeout=30))
            lines.append(response.iter_lines())  # kept: a dropped iterator closes its stream
            assert response.status_code == 200 and "event: open" in itertools.islice(lines[-1], 4)
        with httpx.stream("GET", url, timeout=30) as refused:
            assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
            body = json.loads(refused.read())
        assert body["code"] == 50303 and "2 subscribers" in body["message"]
        streams.close()  # both leave: places free again (the server notices at its next ping)
        hub = server.config.app.state.captions.hub
        eventually(lambda: hub.subscribers == 0, 30, "the subscribers to be forgotten")
        with httpx.stream("GET", url, timeout=30) as again:
            assert again.status_code == 200
