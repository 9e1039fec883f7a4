"""The captions overlay page (/captions) in a real headless Chromium: following the captions feed, and
captioning the (fake) microphone; the examples/ WebSocket demo page against /asr from another origin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse

from hearline.config import Settings
from hearline.server.app import create_app
from hearline.server.captions import get_service
from tests.helpers.browser import Console
from tests.helpers.corpus import clip, normalize
from tests.helpers.server import ServerThread

pytestmark = pytest.mark.browser

CLIP = clip("en_ljspeech_LJ001-0001")
NO_HSCROLL = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"


def test_captions_overlay_follows_events(browser: Any, console: Console) -> None:
    app = create_app(Settings.load())

    async def publish(request: Request) -> dict[str, int]:  # test-only door into the captions feed
        body = await request.json()
        message = get_service(request.app.state).hub.publish(body["event"], body["data"])
        return {"id": message.id or 0}

    app.add_api_route("/_test/publish", publish, methods=["POST"])
    srv = ServerThread(app).start()
    try:
        context = browser.new_context(viewport={"width": 320, "height": 480})
        console.attach(context)
        page = context.new_page()
        page.goto(srv.url + "/captions?lines=2&transparent=1")
        page.wait_for_function("window.getComputedStyle(document.body).backgroundColor === 'rgba(0, 0, 0, 0)'")
        page.goto(srv.url + "/captions?lines=2")
        page.wait_for_function("/Waiting for captions/.test(document.getElementById('status').textContent)")

        def send(event: str, **data: Any) -> None:
            httpx.post(srv.url + "/_test/publish", json={"event": event, "data": data}, timeout=10).raise_for_status()

        common = {"language": "en", "start": 0.0, "end": 1.0}
        send("captions", id=1, text="hello wor", is_final=False, **common)
        page.wait_for_function("document.querySelector('.cap.partial')?.textContent === 'hello wor'")
        send("captions", id=1, text="hello world", is_final=True, **common)
        send("captions", id=2, text="second line", is_final=True, **common)
        send("captions", id=3, text="third", is_final=False, **common)
        send("translate", id=2, text="zweite Zeile", lang_from="en", lang_to="de", translator="test")
        page.wait_for_function("document.querySelector('.cap .translation')?.textContent === 'zweite Zeile'")
        caps = page.locator(".cap")
        assert caps.count() == 2  # ?lines=2: the oldest line scrolled away
        assert caps.nth(0).inner_text().startswith("second line")
        assert caps.nth(1).inner_text() == "third" and "partial" in (caps.nth(1).get_attribute("class") or "")
        assert page.evaluate(NO_HSCROLL)
        context.close()
    finally:
        srv.stop()
    assert console.unexpected() == [], console.messages


def test_captions_overlay_from_microphone_and_demo_page(browser: Any, server: ServerThread, console: Console) -> None:
    context = browser.new_context()
    console.attach(context)
    page = context.new_page()
    page.goto(server.url + "/captions?source=mic&lines=3")
    page.wait_for_function("document.querySelectorAll('.cap').length > 0", timeout=90_000)
    assert page.locator(".cap").count() <= 3

    # examples/websocket-demo.html from another loopback web server, pointed at this server's /asr
    demo_app = FastAPI()
    demo_file = Path(__file__).resolve().parents[2] / "examples" / "websocket-demo.html"
    demo_app.add_api_route("/demo.html", lambda: FileResponse(demo_file, media_type="text/html"))
    demo_server = ServerThread(demo_app).start()
    try:
        page.goto(demo_server.url + "/demo.html")
        assert page.input_value("#url") == demo_server.ws_url + "/asr"  # defaults to its own origin
        page.fill("#url", server.ws_url + "/asr")
        page.click("#start")
        page.wait_for_function("document.getElementById('text').textContent.trim().length > 0", timeout=90_000)
        page.click("#stop")
        page.wait_for_function("document.getElementById('log').textContent === 'session ended'", timeout=150_000)
        heard = set(normalize(page.inner_text("#text")).split())
        assert len(heard & set(normalize(CLIP.text or "").split())) >= 2, heard
    finally:
        demo_server.stop()
    context.close()
    assert console.unexpected() == [], console.messages
