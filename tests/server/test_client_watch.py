"""A REST client that leaves mid-request: its transcription stops (real Whisper base on a real server, httpx).

Ten minutes of real speech take the base model tens of seconds here; the client gives up after a few.
Without the watch the job runs to its end and is answered 200 to nobody; with it the job stops at the
next segment and is recorded as 499 (client closed request), and the model's lanes are free again.
"""

from __future__ import annotations

import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

from hearline.audio.decode import decode_audio, float_to_pcm16
from hearline.engines.base import SAMPLE_RATE
from tests.helpers.corpus import clip, english_clips
from tests.helpers.metrics import metric, scrape
from tests.helpers.polling import eventually
from tests.helpers.server import ServerThread

LONG_SECONDS = 600
ENDPOINT = "/v1/audio/transcriptions"


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The English clips back to back, over and over, to ten minutes (a 16 kHz PCM16 WAV)."""
    pieces = [decode_audio(c.path) for c in english_clips()]
    audio = np.concatenate(pieces * (LONG_SECONDS * SAMPLE_RATE // sum(p.size for p in pieces) + 1))
    path = tmp_path_factory.mktemp("long") / "ten-minutes.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(float_to_pcm16(audio[: LONG_SECONDS * SAMPLE_RATE]))
    return path


def _answered(url: str, status: str) -> float:
    return metric(scrape(url), "hearline_rest_requests_total", endpoint=ENDPOINT, status=status)


def _idle(url: str) -> bool:
    samples = scrape(url)
    return metric(samples, "hearline_work_running") == 0 and metric(samples, "hearline_work_waiting") == 0


def test_a_client_that_leaves_stops_its_transcription(whisper_server: ServerThread, long_speech: Path) -> None:
    url = whisper_server.url
    closed, done = _answered(url, "499"), _answered(url, "200")
    with httpx.Client(timeout=httpx.Timeout(60.0, read=3.0)) as client, pytest.raises(httpx.ReadTimeout):
        client.post(url + ENDPOINT, files={"file": long_speech.open("rb")}, data={"model": "whisper-1"})
    # the connection is closed now: the job must stop long before ten minutes of speech are transcribed
    eventually(lambda: _answered(url, "499") == closed + 1, 60, "the abandoned job to stop")
    eventually(lambda: _idle(url), 30, "the model's lanes to be free")
    assert _answered(url, "200") == done  # nothing was finished for nobody

    response = httpx.post(  # the server goes on serving
        url + ENDPOINT, files={"file": clip("en_fw_jfk").path.open("rb")}, data={"model": "whisper-1"}, timeout=120
    )
    assert response.status_code == 200 and "country" in response.json()["text"].lower()
