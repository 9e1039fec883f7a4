"""WhisperLiveKit ``/asr``'s wire state without a server: times, query parameters, the line buffer, full
updates and diffs (``TranscriptState``, ``DiffEncoder``), fed scripted LiveSession events."""

from __future__ import annotations

import random
from typing import Any

import pytest

from hearline.config import Settings
from hearline.live.session import Error, Final, Lag, Partial, Silence, SpeechStarted
from hearline.server.asr_wire import DiffEncoder, TranscriptState, apply_diff, format_time, parse_params


def test_format_time() -> None:
    assert format_time(0) == "0:00:00.00"
    assert format_time(1.0) == "0:00:01.00"
    assert format_time(61.257) == "0:01:01.26"
    assert format_time(3600 + 59.999) == "1:01:00.00"


def test_parse_params() -> None:
    settings = Settings.load()
    params = parse_params({"language": "en", "mode": "diff", "target_language": "fr"}, settings)
    assert (params.language, params.mode, params.target_language) == ("en", "diff", "fr")
    assert parse_params({}, settings).language is None  # auto
    assert parse_params({"language": "auto"}, settings).mode == "full"
    with pytest.raises(ValueError, match="mode"):
        parse_params({"mode": "delta"}, settings)
    with pytest.raises(ValueError, match="unknown language"):
        parse_params({"language": "xx"}, settings)
    with pytest.raises(ValueError, match="unknown language"):
        parse_params({"target_language": "qq"}, settings)


def _scripted_events() -> list[Any]:
    """Partials whose committed prefix grows, finals that differ from it, an empty utterance, silences."""
    return [
        SpeechStarted(0, 6.0),  # after 6 s of silence: a leading silence line
        Partial(0, "hello", 6.0),
        Partial(0, "hello word", 6.0, committed="hello"),
        Lag(0.42),
        Partial(0, "hello world how", 6.0, committed="hello world"),
        Silence(8.1, 8.6),
        SpeechStarted(1, 15.5),  # 7.4 s after the speech ended: a silence line, before the final of 0
        Final(0, "Hello world, how are you?", 6.0, 8.1),  # takes the provisional line's place, in order
        Partial(1, "um", 15.5, committed="um"),
        Silence(16.0, 16.5),
        Final(1, "", 15.5, 16.0),  # empty utterance: its provisional line disappears
        Partial(1, "late partial", 15.5),  # of a finished utterance: ignored
        SpeechStarted(2, 16.7),
        Partial(2, "fine", 16.7, committed="fine"),
        Partial(2, "fine thanks", 16.7, committed="fine"),
        Error("engine hiccup"),
        SpeechStarted(3, 31.7),  # forced split of running speech: no silence line
        Final(2, "Fine, thanks.", 16.7, 31.7),
        Final(3, "Bye.", 31.7, 32.5),
    ]


def test_the_buffer_joins_the_last_line_as_the_reference_page_prints_it() -> None:
    """WhisperLiveKit's page prints ``line.text + buffer_transcription``: words stay apart, CJK stays joined."""
    state = TranscriptState()
    state.apply(Partial(1, "it was mr coulter", 0.0, committed="it was"), now=1.0)
    update = state.update()
    assert update["lines"][-1]["text"] + update["buffer_transcription"] == "it was mr coulter"
    state.apply(Partial(1, "我们 今天", 0.0, committed="我们"), now=1.5)
    update = state.update()
    assert update["lines"][-1]["text"] + update["buffer_transcription"] == "我们今天"
    state.apply(Final(1, "It was Mr. Coulter.", 0.0, 2.0), now=2.0)
    state.apply(Partial(2, "then", 2.5), now=3.0)
    update = state.update()
    assert update["lines"][-1]["text"] + update["buffer_transcription"] == "It was Mr. Coulter. then"


def test_full_updates_and_diffs_reproduce_the_lines() -> None:
    state = TranscriptState()
    encoder = DiffEncoder()
    client: list[dict[str, Any]] = []
    seen_replaced = seen_removed = False
    updates = [state.update()]
    client = apply_diff(client, encoder.encode(updates[0]))
    assert updates[0]["status"] == "no_audio_detected" and updates[0]["lines"] == []
    for event in _scripted_events():
        state.apply(event, now=getattr(event, "start", 0.0) + 0.5)
        update = state.update()
        state.sent()
        if update == updates[-1]:
            continue
        updates.append(update)
        message = encoder.encode(update)
        assert message["type"] == "diff" and message["seq"] == encoder.seq
        assert "lines" not in message
        seen_replaced |= bool(message["replaced_lines"])
        seen_removed |= message["n_lines"] < len(client)
        for entry in message["replaced_lines"]:  # in-place changes are never re-sent as new lines
            assert entry["line"] not in message["new_lines"]
        client = apply_diff(client, message)
        assert client == update["lines"]
    assert seen_replaced and seen_removed
    final = updates[-1]
    assert [(line["speaker"], line["text"]) for line in final["lines"]] == [
        (-2, ""),
        (1, "Hello world, how are you?"),
        (-2, ""),
        (1, "Fine, thanks."),
        (1, "Bye."),
    ]
    assert (final["lines"][0]["start"], final["lines"][0]["end"]) == ("0:00:00.00", "0:00:06.00")
    assert (final["lines"][2]["start"], final["lines"][2]["end"]) == ("0:00:08.10", "0:00:15.50")
    assert final["status"] == "active_transcription" and final["buffer_transcription"] == ""
    assert any(u["status"] == "error" and u["error"] == "engine hiccup" for u in updates)
    assert any(u["remaining_time_transcription"] == 0.4 for u in updates)
    # the buffer carries its leading space, as the reference server's tokens do: a page joining
    # ``text + buffer`` shows "hello world how", not "hello worldhow"
    provisional = [u for u in updates if u["buffer_transcription"] == " how"]
    assert provisional and provisional[0]["lines"][-1]["text"] == "hello world"
    state.end_of_audio(45.0)  # still in speech (no endpoint yet): no trailing silence line
    assert len(state.update()["lines"]) == 5
    state.apply(Silence(32.5, 33.0), 33.0)
    state.end_of_audio(45.0)
    assert state.update()["lines"][-1] == {"speaker": -2, "text": "", "start": "0:00:32.50", "end": "0:00:45.00"}


def _long_session_events(utterances: int, seed: int = 5) -> list[Any]:
    """Many utterances: partials, long gaps (silence lines), empty utterances, finals arriving late."""
    rng = random.Random(seed)
    events: list[Any] = []
    late: list[Final] = []
    clock = 0.0
    for u in range(utterances):
        start = clock + (rng.choice([6.0, 7.5]) if u % 4 == 0 else 0.7)
        events.append(SpeechStarted(u, start))
        events.extend(late)  # a previous final delivered after this utterance began
        late = []
        events.append(Partial(u, f"word{u} more", start))
        events.append(Partial(u, f"word{u} more text", start, committed=f"word{u} more"))
        end = start + rng.uniform(1.0, 3.0)
        events.append(Silence(end, end + 0.5))
        final = Final(u, "" if u % 7 == 3 else f"Utterance {u}.", start, end)
        if u % 5 == 2:
            late.append(final)
        else:
            events.append(final)
        clock = end
    return events + late


@pytest.mark.parametrize("max_lines", [1, 3, 1000])
def test_pruned_lines_are_stated_so_diffs_reproduce_every_full_update(max_lines: int) -> None:
    """A long session keeps at most ``max_lines`` fixed lines; each diff, applied by the documented
    client rule, gives exactly the full-mode lines of that moment."""
    state = TranscriptState(max_lines=max_lines)
    encoder = DiffEncoder()
    previous_keys = state.line_keys()
    client = apply_diff([], encoder.encode(state.update(), previous_keys))
    last = state.update()
    pruned_total = 0
    for event in _long_session_events(60):
        state.apply(event, now=getattr(event, "start", 0.0) + 0.5)
        update, keys = state.update(), state.line_keys()
        if update == last:
            continue
        last = update
        assert len(update["lines"]) <= max_lines + 1  # plus the provisional line
        message = encoder.encode(update, keys)
        previous = client
        client = apply_diff(client, message)
        assert client == update["lines"], message["seq"]
        pruned = message["lines_pruned"]
        pruned_total += pruned
        # exactly the leading fixed lines the client had that are gone (unique by content here); a
        # provisional line (always last) that vanished was truncated, not pruned
        fixed = previous[:-1] if previous_keys and previous_keys[-1] is None else previous
        gone = next((i for i, line in enumerate(fixed) if line in update["lines"]), len(fixed))
        assert pruned == gone, (message["seq"], pruned, gone)
        previous_keys = keys
    if max_lines < 1000:
        assert pruned_total > 0 and state.pruned >= pruned_total
        assert len(state.lines) == max_lines
    else:
        assert pruned_total == 0 and state.pruned == 0  # a shorter session than the cap: nothing changes
        spoken, silences = sum(u % 7 != 3 for u in range(60)), sum(u % 4 == 0 for u in range(60))
        assert len(state.lines) == spoken + silences  # every non-empty final and every silence line


def test_diff_rejects_a_client_that_lost_a_message() -> None:
    encoder = DiffEncoder()
    state = TranscriptState()
    apply_diff([], encoder.encode(state.update()))
    state.apply(Final(0, "one", 0.0, 1.0), 1.0)
    encoder.encode(state.update())  # lost
    state.apply(Final(1, "two", 1.0, 2.0), 2.0)
    with pytest.raises(ValueError):
        apply_diff([], encoder.encode(state.update()))
