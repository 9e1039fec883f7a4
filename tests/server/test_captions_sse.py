"""The captions feed's wire form: each typed captions event as the SSE bytes subscribers receive."""

from __future__ import annotations

from hearline.live.captions_events import (
    AudioSkipped,
    Caption,
    CaptionsStopped,
    CaptureLost,
    NoTranslation,
    ServiceClosing,
    SessionProblem,
    TranslationSkipped,
)
from hearline.live.translate import Translation, TranslationFailure
from hearline.server.captions_sse import EventHub, Message


def test_every_captions_event_has_its_documented_sse_form() -> None:
    """The SSE bytes of each typed event: names, ids, keys and their order are the wire format."""
    hub = EventHub(backlog=20, subscriber_queue=20)
    sub, _ = hub.subscribe()
    events = [
        Caption(7, 1.23456, 2.5, "hello wor", False, None),
        Caption(7, 1.23456, 2.0004, "hello world", True, "en"),
        Translation(7, "hallo Welt", "en", "de", "libretranslate"),
        TranslationFailure(8, "translation failed: timed out"),
        TranslationSkipped(9),
        NoTranslation("captions without translation to de: no translator"),
        SessionProblem("engine broke", True),
        AudioSkipped(80000 / 16000),
        CaptureLost("device gone", "sink.monitor", 0.5),
        CaptionsStopped(),
        ServiceClosing(),
    ]
    for event in events:
        hub.emit(event)
    got = b"".join(sub.queue.get_nowait().encode() for _ in range(sub.queue.qsize())).decode()
    expected = [
        'id: 1\nevent: captions\ndata: {"id": 7, "start": 1.235, "end": 2.5, "text": "hello wor", "is_final": false, '
        '"language": null}',
        'id: 2\nevent: captions\ndata: {"id": 7, "start": 1.235, "end": 2.0, "text": "hello world", '
        '"is_final": true, "language": "en"}',
        'id: 3\nevent: translate\ndata: {"id": 7, "text": "hallo Welt", "lang_from": "en", "lang_to": "de", '
        '"translator": "libretranslate"}',
        'id: 4\nevent: error\ndata: {"message": "translation failed: timed out", "id": 8, "kind": "translate"}',
        'id: 5\nevent: error\ndata: {"message": "translation backlog full; caption not translated", '
        '"kind": "translate", "id": 9}',
        'id: 6\nevent: error\ndata: {"message": "captions without translation to de: no translator", '
        '"kind": "translate"}',
        'id: 7\nevent: error\ndata: {"message": "engine broke", "kind": "session", "fatal": true}',
        'id: 8\nevent: error\ndata: {"message": "captions fell behind; skipped 5.0s of audio", "kind": "lag"}',
        'id: 9\nevent: error\ndata: {"message": "device gone", "kind": "capture", "device": "sink.monitor", '
        '"retry_in": 0.5}',
        'id: 10\nevent: close\ndata: {"message": "captions stopped", "reason": "stopped"}',
        'event: close\ndata: {"message": "server shutting down"}',  # shutdown: not resumable
    ]
    assert got == "".join(e + "\n\n" for e in expected)
    assert hub.last_id == 10


def test_hub_drops_a_slow_subscriber_without_slowing_others() -> None:
    hub = EventHub(backlog=5, subscriber_queue=4)
    slow, _ = hub.subscribe()
    fast, _ = hub.subscribe()
    received = []
    for i in range(10):
        hub.publish("captions", {"id": i})
        while not fast.queue.empty():
            received.append(fast.queue.get_nowait().data["id"])
    assert received == list(range(10))  # the reading subscriber got everything, in order
    assert slow.dropped and hub.subscribers == 1
    left = [slow.queue.get_nowait() for _ in range(slow.queue.qsize())]
    assert [(m.event, m.data["kind"]) for m in left] == [("error", "slow_subscriber")]


def test_hub_backlog_resumes_and_reports_a_gap() -> None:
    hub = EventHub(backlog=5, subscriber_queue=4)
    ids = [hub.publish("captions", {"n": i}).id for i in range(10)]
    _, replay = hub.subscribe(last_event_id=ids[7])
    assert [m.id for m in replay] == ids[8:]
    _, replay = hub.subscribe(last_event_id=ids[1])  # 3..5 expired from the 5-event backlog
    assert replay[0].event == "error" and replay[0].data["kind"] == "backlog"
    assert [m.id for m in replay[1:]] == ids[5:]
    _, replay = hub.subscribe()
    assert replay == [] and "id: " not in Message(None, "ping", {}).encode().decode()
    assert hub.publish("translate", {"id": 1}).encode().decode().startswith(f"id: {ids[-1] + 1}\nevent: translate\n")
