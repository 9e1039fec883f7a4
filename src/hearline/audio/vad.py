"""Silero VAD (v6) through onnxruntime, using the ONNX file that ships inside the faster-whisper wheel.

No download is needed: ``faster_whisper/assets/silero_vad_v6.onnx`` is part of the installed wheel.
This export takes windows of 512 new samples (16 kHz, 32 ms) each prefixed with the previous window's
last 64 samples, plus an LSTM state ``(h, c)`` of shape (1, 1, 128).  The batch dimension is treated as
time by the recurrent part, so a whole run of consecutive windows can be scored in one call while the
state carries over between calls: that is what makes streaming cheap.

One :class:`onnxruntime.InferenceSession` is shared by the process (its ``run`` is thread-safe);
each live stream keeps its own small state in a :class:`VADStream`.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from hearline.engines.base import SAMPLE_RATE

logger = logging.getLogger(__name__)

WINDOW = 512  # samples of new audio per window at 16 kHz
CONTEXT = 64  # samples of the previous window prepended to each window
WINDOW_S = WINDOW / SAMPLE_RATE
_STATE_SHAPE = (1, 1, 128)


class VADUnavailable(RuntimeError):
    """The Silero model file or onnxruntime is missing."""


def model_path() -> Path:
    """Location of the Silero VAD ONNX file inside the installed faster-whisper package."""
    try:
        resource = importlib.resources.files("faster_whisper") / "assets" / "silero_vad_v6.onnx"
    except ModuleNotFoundError as exc:
        raise VADUnavailable("faster-whisper is not installed; it ships the Silero VAD model") from exc
    path = Path(str(resource))
    if not path.is_file():
        raise VADUnavailable(f"Silero VAD model not found at {path}")
    return path


_session_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _session() -> Any:
    """The shared inference session, created on first use (never at import)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise VADUnavailable("onnxruntime is not installed") from exc
    opts = onnxruntime.SessionOptions()
    # Windows are tiny: one thread per call is fastest and leaves the cores to the recognizer.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = False
    opts.log_severity_level = 4
    return onnxruntime.InferenceSession(str(model_path()), sess_options=opts, providers=["CPUExecutionProvider"])


def load() -> None:
    """Create the shared session now (so the first stream does not pay for it mid-audio)."""
    with _session_lock:
        _session()


class VADStream:
    """Speech probabilities for a stream of 16 kHz float32 audio, one per 512-sample window.

    ``process`` may be given blocks of any size; samples that do not fill a window wait for the next
    call.  Blocking (onnxruntime): call it from a worker thread for large blocks.
    """

    def __init__(self) -> None:
        load()
        self._session = _session()
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def skip_pending(self) -> None:
        """Forget samples that do not fill a window (the caller consumed them elsewhere); state is kept."""
        self._pending = np.zeros(0, dtype=np.float32)

    @property
    def pending_samples(self) -> int:
        """Samples received but not yet scored (less than one window)."""
        return int(self._pending.size)

    def process(self, audio: np.ndarray) -> np.ndarray:
        """Score every complete window now available; returns float32 probabilities in [0, 1]."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if self._pending.size:
            audio = np.concatenate([self._pending, audio])
        count = audio.size // WINDOW
        self._pending = audio[count * WINDOW :].copy()
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        windows = audio[: count * WINDOW].reshape(count, WINDOW)
        contexts = np.empty((count, CONTEXT), dtype=np.float32)
        contexts[0] = self._context
        if count > 1:
            contexts[1:] = windows[:-1, -CONTEXT:]
        self._context = windows[-1, -CONTEXT:].copy()
        batch = np.concatenate([contexts, windows], axis=1)
        probs, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        return np.asarray(probs, dtype=np.float32).reshape(-1)


def speech_probabilities(audio: np.ndarray) -> np.ndarray:
    """Probabilities for a whole clip (one per 512-sample window; a partial last window is dropped)."""
    return VADStream().process(audio)


def speech_regions(
    audio: np.ndarray,
    threshold: float = 0.5,
    min_silence_ms: int = 500,
    pad_ms: int = 100,
) -> list[tuple[float, float]]:
    """(start, end) seconds of speech in a clip, with hysteresis and padding (offline helper)."""
    probs = speech_probabilities(audio)
    neg = max(0.01, threshold - 0.15)
    min_silence = max(1, round(min_silence_ms / 1000 / WINDOW_S))
    regions: list[tuple[float, float]] = []
    start: int | None = None
    quiet = 0
    for i, p in enumerate(probs):
        if start is None:
            if p >= threshold:
                start, quiet = i, 0
        elif p < neg:
            quiet += 1
            if quiet >= min_silence:
                regions.append((start * WINDOW_S, (i - quiet + 1) * WINDOW_S))
                start = None
        else:
            quiet = 0
    if start is not None:
        regions.append((start * WINDOW_S, len(probs) * WINDOW_S))
    pad = pad_ms / 1000
    duration = audio.size / SAMPLE_RATE
    return [(max(0.0, s - pad), min(duration, e + pad)) for s, e in regions]
