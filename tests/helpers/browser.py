"""Headless Chromium for the page tests: launch flags, a fake microphone fed by a real clip, console capture.

Chromium plays ``--use-file-for-fake-audio-capture`` as the microphone (48 kHz WAV); the ``%noloop`` suffix
plays it once and then silence, without it the clip loops.  Every ``getUserMedia`` starts the file over.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
BASE_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

#: what Chromium itself logs when a connection is refused (server down); the page logs nothing then
NETWORK_REFUSED = re.compile(
    r"(WebSocket connection to .* failed|Failed to load resource: net::ERR_CONNECTION_(REFUSED|RESET|CLOSED))"
)


def to_48k_wav(source: Path, target: Path) -> Path:
    """Resample a corpus clip to the 48 kHz mono 16-bit WAV Chromium's fake capture device expects."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-ar", "48000", "-ac", "1", "-c:a", "pcm_s16le",
         str(target)],
        check=True, timeout=60,
    )  # fmt: skip
    return target


def launch(playwright: Any, fake_audio: Path, loop: bool = False) -> Any:
    audio = str(fake_audio) + ("" if loop else "%noloop")
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[*BASE_ARGS, f"--use-file-for-fake-audio-capture={audio}"],
    )


@dataclass
class Console:
    """Console errors and uncaught exceptions of every page of a browser context."""

    errors: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def attach(self, context: Any) -> Console:
        context.on("console", self._on_console)
        context.on("weberror", lambda err: self.errors.append(f"pageerror: {err.error}"))
        return self

    def _on_console(self, msg: Any) -> None:
        self.messages.append(f"{msg.type}: {msg.text}")
        if msg.type == "error":
            self.errors.append(msg.text)

    def unexpected(self, allow: re.Pattern[str] | None = None) -> list[str]:
        return [e for e in self.errors if allow is None or not allow.search(e)]


# The page's own record of what the transcript showed, in order: "partial" whenever the live tail is on
# screen, "committed" whenever the number of committed lines grows; and the upload progress bar's values.
TRANSCRIPT_OBSERVER = """
window.__shown = [];
document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("transcript");
  if (!box) return;
  let committed = 0;
  let partial = false;
  new MutationObserver(() => {
    const p = box.querySelector(".partial");
    const now = Boolean(p && p.textContent.trim());
    if (now && !partial) window.__shown.push("partial");
    partial = now;
    const n = box.querySelectorAll(".line:not(.pending) .text").length;
    if (n > committed) { committed = n; window.__shown.push("committed"); }
  }).observe(box, { childList: true, subtree: true, characterData: true });
  const bar = document.getElementById("upload-progress");
  window.__progress = [];
  new MutationObserver(() => {
    if (bar.hasAttribute("value")) window.__progress.push(bar.value);
  }).observe(bar, { attributes: true, attributeFilter: ["value"] });
});
"""
