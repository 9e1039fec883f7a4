"""server/captions.py: /start bodies.  Whatever arrives, the answer is the captions shape, never a 500.

The shared PocketSphinx server on a real port; bodies that cannot be parameters are refused before any
capture is touched (no audio device is needed), and parameters that do parse reach validation (40001).
"""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import ServerThread


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
