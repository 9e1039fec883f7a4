"""The bundled English recognizer: PocketSphinx with the en-us model that ships inside its wheel.

It needs no download, which is why it is the default.  A PocketSphinx ``Decoder`` is stateful, costs
~90 MB and holds the GIL for the whole of each call, so every decoder lives in its own worker process
(:mod:`.worker`) and is leased from a small bounded pool: offline calls
hold one for the call, live streams hold one only while an utterance is open.  The thread that waits
on a worker's pipe releases the GIL, so the event loop and other sessions keep running.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hearline.config import Settings
    from hearline.models.resolve import ModelSpec

from hearline.audio.decode import float_to_pcm16
from hearline.engines.base import (
    SAMPLE_RATE,
    Capabilities,
    Engine,
    EngineError,
    EngineStream,
    ModelFilesMissing,
    Segment,
    SegmentCallback,
    TranscribeOptions,
    Transcript,
    join_text,
)
from hearline.engines.pocketsphinx.stream import PocketSphinxStream, _words
from hearline.engines.segments import group_words, split_long

logger = logging.getLogger(__name__)

WORKER_MEMORY = 200 * 1024 * 1024  # resident size of one worker process with its decoders
_CAPS = Capabilities(
    languages=frozenset({"en"}),
    translate=False,
    native_streaming=True,
    word_timestamps=True,
    language_detection=False,
)


def bundled_model_dir() -> Path:
    import pocketsphinx

    return Path(pocketsphinx.get_model_path()) / "en-us"


class DecoderProcess:
    """One decoder in a child process, driven synchronously over pipes (one caller at a time)."""

    def __init__(self, model_dir: Path, spare: bool = False) -> None:
        """Start the child and wait for its model to load.  A ``spare`` returns at once (its first call
        waits for the rest of the load) and loads the partial-decoding decoder up front too, as spares
        are started ahead of live streams (see the worker's ``serve``)."""
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hearline.engines.pocketsphinx.worker",
                 str(to_child_r), str(from_child_w), str(model_dir), *(["eager"] if spare else [])],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._send_conn = Connection(to_child_w, readable=False)
        self._recv_conn = Connection(from_child_r, writable=False)
        self._ready = False
        if not spare:
            self._wait_ready()

    def _wait_ready(self) -> None:
        if not self._ready:
            self._expect(self._recv())
            self._ready = True

    def call(self, command: str, *args: Any) -> Any:
        self._wait_ready()
        try:
            self._send_conn.send((command, *args))
        except (BrokenPipeError, OSError) as exc:
            raise EngineError(f"PocketSphinx worker is gone: {exc}") from exc
        return self._expect(self._recv())

    def _recv(self) -> tuple[str, Any]:
        try:
            return self._recv_conn.recv()
        except (EOFError, OSError) as exc:
            raise EngineError(f"PocketSphinx worker exited (code {self.process.poll()})") from exc

    @staticmethod
    def _expect(reply: tuple[str, Any]) -> Any:
        status, value = reply
        if status == "error":
            raise EngineError(f"PocketSphinx failed: {value}")
        return value

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        with suppress(BrokenPipeError, OSError):
            self._send_conn.send(("close",))
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self._send_conn.close()
        self._recv_conn.close()


class PocketSphinxEngine(Engine):
    kind = "pocketsphinx"

    def __init__(
        self,
        name: str = "pocketsphinx-en-us",
        model_dir: Path | None = None,
        max_decoders: int = 8,
        offline_reserve: int = 1,
    ):
        super().__init__(name)
        self.model_dir = model_dir or bundled_model_dir()
        self._check_files()
        self._offline_reserve = max(1, offline_reserve)
        self._max_decoders = max(self._offline_reserve + 1, max_decoders)
        self._idle: queue.SimpleQueue[DecoderProcess] = queue.SimpleQueue()
        self._workers: list[DecoderProcess] = []
        self._lock = threading.Lock()
        self._closed = False
        self._live = False  # a live stream was opened: keep a spare decoder loading (see _keep_a_spare)
        self._available = threading.Semaphore(self._max_decoders)
        self._lease_count_lock = threading.Lock()
        self._leases = 0  # decoders lent out now (a semaphore does not say)
        # Start one worker up front so a broken install fails at load time, not on the first request.
        self._idle.put(self._new_worker())

    @property
    def capabilities(self) -> Capabilities:
        return _CAPS

    @property
    def max_open_streams(self) -> int:
        """Live utterances that may hold a decoder at once.

        ``offline_reserve`` decoders stay free for whole-utterance passes (offline calls, live finals):
        the pool runs that many batch jobs at once, so a live step taking a decoder for a new utterance
        never has to wait for a batch job to end.
        """
        return self._max_decoders - self._offline_reserve

    @property
    def leases_in_use(self) -> int:
        with self._lease_count_lock:
            return self._leases

    def memory_bytes(self) -> int:
        return len(self._workers) * WORKER_MEMORY

    def _check_files(self) -> None:
        expected = ["mdef", "means", "variances", "transition_matrices"]
        missing = [name for name in expected if not (self.model_dir / "en-us" / name).exists()]
        for name in ("en-us.lm.bin", "cmudict-en-us.dict"):
            if not (self.model_dir / name).exists():
                missing.append(name)
        if missing:
            raise ModelFilesMissing(f"PocketSphinx model in {self.model_dir} is missing: {', '.join(missing)}")

    def _new_worker(self, spare: bool = False) -> DecoderProcess:
        worker = DecoderProcess(self.model_dir, spare=spare)
        with self._lock:
            self._workers.append(worker)
        return worker

    def _keep_a_spare(self) -> None:
        """Start loading another decoder when the last idle one is leased, so the next lease finds one
        ready: a lease that had to start a process waited ~0.5 s for the model to load, and a live
        session's partials stalled that long (lag spikes while sessions ramp up).  The child loads in
        parallel; whoever leases it before it is ready waits only for the rest of the load.  Only once
        live streams are in use: offline requests alone wait for nothing that short, and a spare costs a
        process (``WORKER_MEMORY``)."""
        with self._lock:
            wanted = self._live and self._idle.empty() and len(self._workers) < self._max_decoders and not self._closed
        if wanted:
            try:
                self._idle.put(self._new_worker(spare=True))
            except OSError as exc:  # only a head start: the next lease starts one itself and reports
                logger.warning("could not start a spare PocketSphinx worker: %s", exc)

    def _discard(self, worker: DecoderProcess) -> None:
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
        worker.stop()

    @contextmanager
    def lease(self) -> Iterator[DecoderProcess]:
        """Borrow a decoder process; blocks while all ``max_decoders`` are in use."""
        self._available.acquire()
        with self._lease_count_lock:
            self._leases += 1
        try:
            worker = None
            while worker is None:
                try:
                    candidate = self._idle.get_nowait()
                except queue.Empty:
                    candidate = self._new_worker()
                if candidate.alive:
                    worker = candidate
                else:
                    self._discard(candidate)
            self._keep_a_spare()
            healthy = False
            try:
                yield worker
                healthy = True
            finally:
                if healthy or worker.alive:
                    self._idle.put(worker)
                else:
                    self._discard(worker)
        finally:
            with self._lease_count_lock:
                self._leases -= 1
            self._available.release()

    def transcribe(
        self,
        audio: np.ndarray,
        options: TranscribeOptions,
        on_segment: SegmentCallback | None = None,
    ) -> Transcript:
        self.check_options(options)
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        duration = audio.size / SAMPLE_RATE
        segments: list[Segment] = []
        with self.lease() as worker:
            for offset, chunk in split_long(audio):
                raw = worker.call("decode", float_to_pcm16(chunk))
                for segment in group_words(_words(raw, offset / SAMPLE_RATE), first_id=len(segments)):
                    segments.append(segment)
                    if on_segment is not None:
                        on_segment(segment)
        return Transcript(
            text=join_text([s.text for s in segments]),
            segments=segments,
            language="en",
            language_probability=None,
            duration=duration,
        )

    def open_stream(self, options: TranscribeOptions) -> EngineStream:
        self.check_options(options)
        self._live = True
        return PocketSphinxStream(self, options)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._workers = list(self._workers), []
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                break
        for worker in workers:
            worker.stop()


def load(spec: ModelSpec, settings: Settings) -> PocketSphinxEngine:
    """Entry point used by :func:`hearline.models.resolve.load_engine`."""
    return PocketSphinxEngine(
        name=spec.name,
        model_dir=spec.path,
        max_decoders=max(8, 2 * settings.max_concurrency_per_model),
        offline_reserve=settings.batch_capacity,  # as many offline calls as the pool runs at once
    )
