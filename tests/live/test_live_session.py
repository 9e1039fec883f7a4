"""LiveSession driven directly with a real ModelPool and the bundled PocketSphinx model on real speech."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hearline.audio.decode import decode_audio, resample
from hearline.config import Settings
from hearline.engines.base import TranscribeOptions
from hearline.live.policies import NativePolicy
from hearline.live.session import Final, LiveOptions, LiveSession, Partial, SpeechStarted
from hearline.models.pool import ModelPool
from hearline.models.scheduler import Work
from tests.helpers.corpus import clip, wer
from tests.helpers.polling import until


@pytest.fixture
async def pool(tmp_path: Path):
    pool = ModelPool(Settings.load(model_dir=tmp_path / "models"))
    yield pool
    await pool.close()


def audio_of(clip_id: str) -> np.ndarray:
    return decode_audio(clip(clip_id).path)


def reading(session: LiveSession) -> tuple[list, asyncio.Task[None]]:
    """Start collecting the session's events; the task ends when the event stream does."""
    events: list = []

    async def read() -> None:
        async for event in session.events():
            events.append(event)

    return events, asyncio.create_task(read())


async def run_session(
    session: LiveSession,
    audio: np.ndarray,
    rate: int = 16000,
    chunk_s: float = 0.1,
    speed: float | None = None,
) -> list:
    """Push ``audio`` in chunks (at ``speed`` x real time, or as fast as accepted), flush, return events."""
    events, reader = reading(session)
    step = int(chunk_s * rate)
    started = time.perf_counter()
    for i in range(0, audio.size, step):
        await session.push(audio[i : i + step], rate)
        if speed:
            due = started + (i + step) / rate / speed
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
    await session.flush()
    await reader
    await session.close()
    return events


def finals(events: list) -> list[Final]:
    return [e for e in events if isinstance(e, Final)]


def final_text(events: list) -> str:
    return " ".join(e.text for e in finals(events) if e.text)


async def test_event_order_and_timestamps_at_real_time_pace(pool: ModelPool) -> None:
    audio = audio_of("en_pocketsphinx_goforward")
    session = LiveSession(pool, None, LiveOptions(language="en"))
    await session.start()
    events = await run_session(session, audio, speed=1.0)

    kinds = [e.type for e in events if e.type in {"speech_started", "partial", "final"}]
    assert kinds[0] == "speech_started"
    assert "partial" in kinds, kinds
    assert kinds[-1] == "final"
    # Per utterance: speech_started, then partials, then exactly one final.
    for utt in {e.utterance_id for e in events if isinstance(e, SpeechStarted)}:
        own = [e.type for e in events if getattr(e, "utterance_id", None) == utt]
        assert own[0] == "speech_started" and own[-1] == "final" and own.count("final") == 1, own
        assert set(own[1:-1]) <= {"partial"}, own
    duration = audio.size / 16000
    for event in finals(events):
        assert 0.0 <= event.start < event.end <= duration + 0.05
        assert event.language == "en"
        for word in event.words:
            assert event.start - 0.01 <= word.start <= word.end <= event.end + 0.01
    assert session.audio_seconds == pytest.approx(duration, abs=0.01)
    assert wer(clip("en_pocketsphinx_goforward").text, final_text(events)) <= 0.25
    assert any(e.type == "lag" for e in events)


async def test_gap_between_two_clips_gives_two_finals(pool: ModelPool) -> None:
    first, second = audio_of("en_pocketsphinx_goforward"), audio_of("en_ljspeech_LJ001-0002")
    gap = np.zeros(2 * 16000, dtype=np.float32)
    audio = np.concatenate([first, gap, second])
    session = LiveSession(pool, None, LiveOptions(language="en"))
    await session.start()
    events = await run_session(session, audio)

    results = [e for e in finals(events) if e.text]
    assert len(results) == 2, [(e.start, e.end, e.text) for e in results]
    boundary = first.size / 16000
    assert results[0].end <= boundary + 0.1
    assert results[1].start >= boundary + gap.size / 16000 - 0.35  # prefix padding reaches into the gap
    assert wer("go forward ten meters", results[0].text) <= 0.25
    assert "comparatively" in results[1].text
    silences = [e for e in events if e.type == "silence"]
    # The endpoint between them: speech ended near the end of the first clip.
    assert any(1.5 <= s.start <= boundary + 0.1 and s.end > s.start for s in silences), silences


async def test_streamed_finals_match_offline_transcription(pool: ModelPool) -> None:
    """The streamed final text is about as good as the offline transcription of the same clip.

    Measured (PocketSphinx en-us): jfk offline WER 0.23, streamed 0.27-0.45 across runs (the live
    pipeline cuts at pauses, so each utterance loses the language-model context of the one before);
    over 6 clips (bench/live.py --quick) streaming 0.280 vs offline 0.269.  The bound is offline + 0.3.
    """
    item = clip("en_fw_jfk")
    audio = audio_of(item.id)
    engine = await pool.get(None)
    offline = await pool.run(engine, engine.transcribe, audio, TranscribeOptions(language="en"))
    session = LiveSession(pool, None, LiveOptions(language="en"))
    await session.start()
    events = await run_session(session, audio, chunk_s=0.25)
    streamed = final_text(events)
    assert wer(item.text, streamed) <= wer(item.text, offline.text) + 0.3, (streamed, offline.text)
    # Utterances follow each other on the sample clock.
    ends = [(e.start, e.end) for e in finals(events)]
    assert all(a[1] <= b[0] + 0.05 for a, b in itertools.pairwise(ends))


async def test_other_sample_rates_are_resampled(pool: ModelPool) -> None:
    audio = audio_of("en_pocketsphinx_goforward")
    at_44k = resample(audio, 16000, 44100)
    session = LiveSession(pool, None, LiveOptions(language="en"))
    await session.start()
    events = await run_session(session, at_44k, rate=44100)
    assert session.audio_seconds == pytest.approx(audio.size / 16000, abs=0.05)
    assert wer("go forward ten meters", final_text(events)) <= 0.25


async def test_local_agreement_policy_commits_prefixes(pool: ModelPool) -> None:
    """The re-decoding policy (used for Whisper) run on PocketSphinx's offline decoder."""
    item = clip("en_fw_jfk")
    audio = audio_of(item.id)
    # Without VAD the whole clip is one open utterance, so partials come however loaded the machine is.
    options = LiveOptions(language="en", policy="local_agreement", partial_interval_s=0.5, vad=False)
    session = LiveSession(pool, None, options)
    await session.start()
    events = await run_session(session, audio, speed=1.5)
    partials = [e for e in events if isinstance(e, Partial)]
    assert partials
    for event in partials:
        assert event.text.startswith(event.committed)
    # Committed text only grows within an utterance.
    by_utt: dict[int, list[str]] = {}
    for event in partials:
        by_utt.setdefault(event.utterance_id, []).append(event.committed)
    for seq in by_utt.values():
        assert all(b.startswith(a) for a, b in itertools.pairwise(seq)), seq
    assert wer(item.text, final_text(events)) <= 0.5


async def test_end_utterance_and_no_vad(pool: ModelPool) -> None:
    audio = audio_of("en_pocketsphinx_goforward")
    session = LiveSession(pool, None, LiveOptions(language="en", vad=False))
    await session.start()
    events, reader = reading(session)
    await session.push(audio)
    session.end_utterance()  # like a Realtime commit: the final comes without waiting for silence
    await session.push(np.zeros(8000, dtype=np.float32))
    await session.flush()
    await reader
    await session.close()
    results = finals(events)
    assert len(results) == 2  # the committed speech, then the trailing silence as its own utterance
    assert wer("go forward ten meters", results[0].text) <= 0.25
    assert results[0].end <= audio.size / 16000 + 0.05
    assert results[1].text == ""


async def test_discard_drops_the_open_utterance(pool: ModelPool) -> None:
    audio = audio_of("en_pocketsphinx_goforward")
    session = LiveSession(pool, None, LiveOptions(language="en", vad=False))
    await session.start()
    events, reader = reading(session)
    await session.push(audio)
    session.discard()
    await session.flush()
    await reader
    await session.close()
    assert not finals(events)


def _engine_idle(engine) -> bool:  # type: ignore[no-untyped-def]
    """All PocketSphinx decoder leases returned."""
    return engine.leases_in_use == 0


async def test_close_mid_utterance_leaves_nothing_behind(pool: ModelPool) -> None:
    audio = audio_of("en_fw_jfk")
    engine = await pool.get(None)
    # Warm up once so lazily created executor threads exist before the baseline is taken.
    warm = LiveSession(pool, None, LiveOptions(language="en"))
    await warm.start()
    await run_session(warm, audio[: 16000 * 2])
    tasks_before = {t for t in asyncio.all_tasks() if not t.done()}
    threads_before = set(threading.enumerate())

    sessions = [LiveSession(pool, None, LiveOptions(language="en")) for _ in range(3)]
    for session in sessions:
        await session.start()
        reader_events: list = []

        async def read(s: LiveSession = session, out: list = reader_events) -> None:
            async for event in s.events():
                out.append(event)

        reader = asyncio.create_task(read())
        # Speech onset is at 0.3 s: 1.5 s leaves an utterance open with a decoder leased.
        for i in range(0, 16000 * 3 // 2, 1600):
            await session.push(audio[i : i + 1600])
        for _ in range(100):  # a partial is likely by 5 s; the close must leave nothing behind either way
            if any(isinstance(e, Partial) for e in reader_events):
                break
            await asyncio.sleep(0.05)
        await session.close()
        await asyncio.wait_for(reader, 10)  # events() ends on close
        await session.close()  # idempotent

    assert _engine_idle(engine)
    assert {t for t in asyncio.all_tasks() if not t.done()} <= tasks_before | {asyncio.current_task()}
    # Only the bounded executors' reusable workers may have been added; nothing per session.
    new = [t.name for t in set(threading.enumerate()) - threads_before]
    assert all(name.startswith(("hearline-infer", "asyncio_")) for name in new), new


async def test_final_prepared_in_a_pause_is_dropped_when_speech_resumes(pool: ModelPool) -> None:
    """A pause shorter than the endpoint: the final prepared in it is stale and both halves are in the final."""
    half = audio_of("en_pocketsphinx_goforward")
    pause = np.zeros(int(0.3 * 16000), dtype=np.float32)  # > pause_ms, < silence_ms 500
    audio = np.concatenate([half, pause, half])
    session = LiveSession(pool, None, LiveOptions(language="en", silence_ms=500, pause_ms=200))
    await session.start()
    events = await run_session(session, audio, speed=4.0)
    results = [e for e in finals(events) if e.text]
    text = " ".join(e.text for e in results)
    assert wer("go forward ten meters go forward ten meters", text) <= 0.25, text
    assert results[-1].end >= (half.size + pause.size) / 16000 + 1.0  # the last final reaches into the second half


async def test_final_prepared_in_the_pause_before_the_endpoint(
    pool: ModelPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without resumed speech the prepared final is the final: one full pass per utterance, not two."""
    engine = await pool.get(None)
    audio = audio_of("en_pocketsphinx_goforward")
    offline = await pool.run(engine, engine.transcribe, audio, TranscribeOptions(language="en"))

    def stream_twice() -> tuple[str, str, int]:
        stream = engine.open_stream(TranscribeOptions(language="en"))
        try:
            stream.accept(audio)
            job = stream.snapshot_final()
            assert job is not None
            guess = job()
            stream.end()
            leases_after_end = engine.leases_in_use
            stream.accept(audio)
            again = stream.finish()
            return guess.text, again.text, leases_after_end
        finally:
            stream.close()

    guess, again, leases = await asyncio.get_running_loop().run_in_executor(None, stream_twice)
    assert guess == offline.text  # the same full pass as offline decoding
    assert again == offline.text
    assert leases == 0 and engine.leases_in_use == 0

    passes: list[float] = []
    transcribe = engine.transcribe

    def counting(samples: np.ndarray, options: TranscribeOptions, on_segment=None):  # type: ignore[no-untyped-def]
        passes.append(samples.size / 16000)
        return transcribe(samples, options, on_segment)

    monkeypatch.setattr(engine, "transcribe", counting)
    session = LiveSession(pool, None, LiveOptions(language="en", pause_ms=200))
    await session.start()
    gap = np.zeros(16000, dtype=np.float32)
    events = await run_session(session, np.concatenate([audio, gap, audio, gap]), speed=4.0)
    results = [e for e in finals(events) if e.text]
    assert len(results) == 2 and all(wer("go forward ten meters", e.text) <= 0.25 for e in results)
    assert len(passes) == 2, passes  # the pass started in each pause became that utterance's final


async def test_partial_work_that_falls_behind_skips_to_the_newest_audio(pool: ModelPool) -> None:
    """Audio pushed far faster than it is decoded: partials pass over older audio, the final loses nothing."""
    engine = await pool.get(None)
    audio = audio_of("en_ljspeech_LJ001-0001")
    offline = await pool.run(engine, engine.transcribe, audio, TranscribeOptions(language="en"))
    results = {}
    for behind in (0.0, 0.3):
        # vad=False: the whole clip is one utterance, ended by flush, so its final is comparable to offline
        session = LiveSession(pool, None, LiveOptions(language="en", vad=False, max_partial_behind_s=behind))
        await session.start()
        events = await run_session(session, audio, chunk_s=1.0)
        results[behind] = (session.partial_skipped, events)
    for behind, (_, events) in results.items():
        assert [e.text for e in finals(events)] == [offline.text], behind
        assert any(isinstance(e, Partial) and e.text for e in events), behind
    assert results[0.0][0] == 0  # 0 turns skipping off
    assert results[0.3][0] > 0  # 1 s blocks arrive faster than 0.3 s behind allows


async def test_partials_pass_over_audio_while_every_batch_slot_is_busy(pool: ModelPool) -> None:
    """While finals or requests hold every batch slot, partial decoding would take CPU from them: partial
    steps pass over their audio instead, and the final (queued until a slot frees) still covers all of it."""
    engine = await pool.get(None)
    audio = audio_of("en_ljspeech_LJ001-0001")
    offline = await pool.run(engine, engine.transcribe, audio, TranscribeOptions(language="en"))
    capacity = pool.settings.batch_capacity
    started, unblock = threading.Semaphore(0), threading.Event()

    def hold_a_batch_slot() -> None:
        started.release()
        unblock.wait(30)

    holders = [asyncio.create_task(pool.run(engine, hold_a_batch_slot, work=Work.FINAL)) for _ in range(capacity)]
    session = LiveSession(pool, None, LiveOptions(language="en", vad=False))
    try:
        for _ in range(capacity):
            assert await asyncio.to_thread(started.acquire, True, 10)
        assert pool.batch_saturated(engine)
        await session.start()
        events, reader = reading(session)
        for i in range(0, audio.size, 1600):
            await session.push(audio[i : i + 1600])
        # All of it, but for the samples short of a VAD window or of a partial step.
        passed_over = audio.size - 512 - NativePolicy.batch_samples
        await until(lambda: session.partial_skipped >= passed_over, 20, "the audio passed over")
        assert session.partial_skipped >= passed_over
        assert not any(isinstance(e, Partial) and e.text for e in events)
        assert not finals(events)  # the final pass waits for a batch slot
        unblock.set()
        await asyncio.gather(*holders)
        assert not pool.batch_saturated(engine)
        await session.flush()
        await reader
        assert [e.text for e in finals(events)] == [offline.text]
    finally:
        unblock.set()
        await session.close()


async def test_start_rejects_unsupported_language(pool: ModelPool) -> None:
    from hearline.engines.base import UnsupportedOption

    session = LiveSession(pool, None, LiveOptions(language="de"))
    with pytest.raises(UnsupportedOption):
        await session.start()
    await session.close()
