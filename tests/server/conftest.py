"""Browser fixtures for the page tests: one headless Chromium per module whose fake microphone plays a
real clip (LJ001-0001, 9.7 s) at 48 kHz, and a console that collects what the page logs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, sync_playwright

from tests.helpers.browser import TRANSCRIPT_OBSERVER, Console, launch, to_48k_wav
from tests.helpers.corpus import clip

MIC_CLIP = clip("en_ljspeech_LJ001-0001")


@pytest.fixture(scope="module")
def fake_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return to_48k_wav(MIC_CLIP.path, tmp_path_factory.mktemp("audio") / "mic48k.wav")


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Any, fake_audio: Path) -> Iterator[Any]:
    b = launch(playwright, fake_audio)
    yield b
    b.close()


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser: Any, console: Console) -> Iterator[Page]:
    context = browser.new_context(accept_downloads=True)
    console.attach(context)
    context.add_init_script(TRANSCRIPT_OBSERVER)
    p = context.new_page()
    yield p
    context.close()
