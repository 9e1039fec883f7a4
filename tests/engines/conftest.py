"""Fixtures shared by the sherpa-onnx engine tests: tiny real-format models and real speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hearline.audio.decode import decode_audio
from hearline.config import Settings
from tests.helpers.corpus import clip
from tests.helpers.tiny_sherpa import build_sense_voice, build_streaming_zipformer2


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings.load(threads=1)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return decode_audio(clip("en_fw_jfk").path)


@pytest.fixture(scope="module")
def sense_voice_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sense_voice(tmp_path_factory.mktemp("sherpa") / "sherpa-onnx-sense-voice-tiny")


@pytest.fixture(scope="module")
def zipformer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_streaming_zipformer2(tmp_path_factory.mktemp("sherpa") / "sherpa-onnx-streaming-zipformer-tiny")
