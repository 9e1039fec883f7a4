"""The server's Prometheus metrics: one :class:`Metrics` (and one ``CollectorRegistry``) per app.

Nothing is created at import time and the process-wide default registry is never used, so tests can
build many apps in one process.  The app factory creates a :class:`Metrics`, keeps it on
``app.state.metrics`` and hands it to the model pool; the live doors count their sessions through
:mod:`hearline.server.live_socket`, the HTTP middleware in :mod:`hearline.server.monitoring` counts
REST requests.  Everything is updated on the event loop's thread.

Names (all prefixed ``hearline_``):

* ``live_sessions_open{door,model}`` (gauge), ``live_sessions_opened_total{door,model}`` (counter)
* ``audio_received_seconds_total{door}``: seconds of audio received: by live sessions as it arrives
  (``door``: ``stt``, ``asr``, ``vosk``, ``wyoming``, ``deepgram``, ``realtime``, ``captions``) and by uploads
  (``rest``; Deepgram's pre-recorded ``/v1/listen`` counts under ``deepgram``)
* ``rest_requests_total{method,endpoint,status}``: HTTP requests by route template
* ``inference_seconds{model,kind}`` (histogram): time in a worker thread per pool job; ``kind`` is the
  scheduler's kind of work (``partial``, ``stream_step``, ``final``, ``speculative_final``, ``request``,
  ``translation``)
* ``work_waiting{model}``, ``work_running{model}`` (gauges): pool jobs waiting at / admitted by the gates
* ``window_batches_total{model,size}``: batched window decodes run (live sessions' Whisper windows decoded
  together), by batch size; since the model was loaded
* ``model_loads_total{model}``, ``model_load_seconds_total{model}``, ``model_evictions_total{model,reason}``
  (``reason``: ``budget`` | ``idle`` | ``request``)
* ``work_refused_total{model,kind}``: pool jobs refused by a busy model (what a REST 429 or a skipped
  live partial or speculative final comes from)
* ``refusals_total{reason}``: requests and work refused (``busy``, ``unauthorized``, ``bad_request``,
  ``too_large``, ``not_found``, ``max_sessions``, ``max_connections``, ``header_timeout``,
  ``insufficient_storage``, and live sessions closed at ``max_session_length``)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "hearline_"

#: inference job durations: short live steps (tens of ms) up to long batch requests (minutes)
INFERENCE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, float("inf"))


class CountedSession(Protocol):
    """What :class:`Metrics` reads from a live session it counts."""

    @property
    def audio_seconds(self) -> float: ...


#: a pool's jobs per model: ``{model: (waiting, running)}``
WorkSource = Callable[[], Mapping[str, tuple[int, int]]]
#: a pool's batched calls per model: ``{model: {batch size: calls}}``
BatchSource = Callable[[], Mapping[str, Mapping[int, int]]]


class Metrics:
    """Every metric of one app, registered in its own :class:`CollectorRegistry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.sessions_opened = Counter(
            PREFIX + "live_sessions_opened", "Live sessions started, by door and model", ["door", "model"], registry=reg
        )
        self.rest_requests = Counter(
            PREFIX + "rest_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "endpoint", "status"],
            registry=reg,
        )
        self.inference_seconds = Histogram(
            PREFIX + "inference_seconds",
            "Seconds a pool job ran in a worker thread, by model and kind of work",
            ["model", "kind"],
            buckets=INFERENCE_BUCKETS,
            registry=reg,
        )
        self.model_loads = Counter(PREFIX + "model_loads", "Models loaded", ["model"], registry=reg)
        self.model_load_seconds = Counter(
            PREFIX + "model_load_seconds", "Seconds spent loading models", ["model"], registry=reg
        )
        self.model_evictions = Counter(
            PREFIX + "model_evictions",
            "Models unloaded, by reason (budget, idle, request)",
            ["model", "reason"],
            registry=reg,
        )
        self.work_refused = Counter(
            PREFIX + "work_refused",
            "Pool jobs refused because the model was busy (REST 429s, skipped live partials and guesses), by kind",
            ["model", "kind"],
            registry=reg,
        )
        self.refusals = Counter(PREFIX + "refusals", "Requests and work refused, by reason", ["reason"], registry=reg)
        self._live = _LiveCollector()
        self._work = _WorkCollector()
        reg.register(self._live)
        reg.register(self._work)
        self._batches = _BatchCollector()
        reg.register(self._batches)

    # -- live sessions ----------------------------------------------------------------------------
    def session_opened(self, door: str, model: str, session: CountedSession) -> None:
        self.sessions_opened.labels(door, model).inc()
        self._live.opened(door, model, session)

    def session_closed(self, session: CountedSession) -> None:
        self._live.closed(session)

    def audio_received(self, door: str, seconds: float) -> None:
        """Audio a request brought in whole (REST uploads); live sessions count theirs as it arrives."""
        self._live.add_audio(door, seconds)

    # -- the pool ---------------------------------------------------------------------------------
    def watch_work(self, source: WorkSource) -> None:
        """Report ``source()`` (a pool's waiting and running jobs per model) at every scrape."""
        self._work.source = source

    def watch_batches(self, source: BatchSource) -> None:
        """Report ``source()`` (a pool's batched window decodes per model and size) at every scrape."""
        self._batches.source = source

    def inference(self, model: str, kind: str, seconds: float) -> None:
        self.inference_seconds.labels(model, kind).observe(seconds)

    def model_loaded(self, model: str, seconds: float) -> None:
        self.model_loads.labels(model).inc()
        self.model_load_seconds.labels(model).inc(seconds)

    def model_evicted(self, model: str, reason: str) -> None:
        self.model_evictions.labels(model, reason).inc()

    def job_refused(self, model: str, kind: str) -> None:
        self.work_refused.labels(model, kind).inc()

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def rest_request(self, method: str, endpoint: str, status: int) -> None:
        self.rest_requests.labels(method, endpoint, str(status)).inc()


class _LiveCollector(Collector):
    """Open sessions and audio received, read from the sessions themselves at scrape time.

    Audio counts as it arrives (an open session's ``audio_seconds``), and is folded into a per-door
    total when the session closes, so the counter never goes back.
    """

    def __init__(self) -> None:
        self._open: dict[int, tuple[str, str, CountedSession]] = {}
        self._open_counts: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._closed_audio: defaultdict[str, float] = defaultdict(float)

    def opened(self, door: str, model: str, session: CountedSession) -> None:
        if id(session) in self._open:
            return
        self._open[id(session)] = (door, model, session)
        self._open_counts[(door, model)] += 1
        self._closed_audio[door] += 0.0  # the door shows up in the audio counter from its first session

    def add_audio(self, door: str, seconds: float) -> None:
        self._closed_audio[door] += seconds

    def closed(self, session: CountedSession) -> None:
        entry = self._open.pop(id(session), None)
        if entry is None:
            return
        door, model, _ = entry
        self._open_counts[(door, model)] -= 1
        self._closed_audio[door] += session.audio_seconds

    def collect(self) -> Iterable[Metric]:
        sessions, received = self._families()
        for (door, model), count in sorted(self._open_counts.items()):
            sessions.add_metric([door, model], count)
        audio = dict(self._closed_audio)
        for door, _, session in self._open.values():
            audio[door] = audio.get(door, 0.0) + session.audio_seconds
        for door, seconds in sorted(audio.items()):
            received.add_metric([door], seconds)
        return [sessions, received]

    def describe(self) -> Iterable[Metric]:
        return self._families()

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, CounterMetricFamily]:
        return (
            GaugeMetricFamily(PREFIX + "live_sessions_open", "Live sessions open now", labels=["door", "model"]),
            CounterMetricFamily(
                PREFIX + "audio_received_seconds",
                "Seconds of audio received (live sessions, REST uploads), by door",
                labels=["door"],
            ),
        )


class _WorkCollector(Collector):
    """Pool jobs waiting at and admitted by each model's gates, read from the pool at scrape time."""

    def __init__(self) -> None:
        self.source: WorkSource | None = None

    def collect(self) -> Iterable[Metric]:
        waiting, running = self._families()
        for model, (waits, runs) in sorted((self.source() if self.source else {}).items()):
            waiting.add_metric([model], waits)
            running.add_metric([model], runs)
        return [waiting, running]

    def describe(self) -> Iterable[Metric]:
        return self._families()

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(PREFIX + "work_waiting", "Pool jobs waiting for a worker, by model", labels=["model"]),
            GaugeMetricFamily(PREFIX + "work_running", "Pool jobs running, by model", labels=["model"]),
        )


class _BatchCollector(Collector):
    """Batched window decodes by model and batch size, read from the pool's batchers at scrape time."""

    def __init__(self) -> None:
        self.source: BatchSource | None = None

    def collect(self) -> Iterable[Metric]:
        (batches,) = self._families()
        for model, sizes in sorted((self.source() if self.source else {}).items()):
            for size, calls in sorted(sizes.items()):
                batches.add_metric([model, str(size)], calls)
        return [batches]

    def describe(self) -> Iterable[Metric]:
        return self._families()

    @staticmethod
    def _families() -> tuple[CounterMetricFamily]:
        return (
            CounterMetricFamily(
                PREFIX + "window_batches",
                "Batched window decodes run, by model and batch size",
                labels=["model", "size"],
            ),
        )
