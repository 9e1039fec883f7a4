"""The input task of a live session: pushed audio through VAD and the segmenter into utterances."""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from hearline.engines.base import SAMPLE_RATE
from hearline.live.events import Error, Lag, Silence, SpeechStarted
from hearline.live.segmenter import Action, Audio, Begin, Drop, End, Pause, Resume
from hearline.live.session_state import (
    _FLUSH,
    _WAKE,
    INPUT_QUEUE_ITEMS,
    LAG_EVERY_S,
    MAX_BEHIND_S,
    MAX_OPEN_UTTERANCES,
    MAX_PENDING_FINALS,
    SessionState,
)
from hearline.live.utterance import _Utterance

logger = logging.getLogger("hearline.live.session")  # the session's logger, as before the split


class SessionInput(SessionState):
    """The input task's steps, mixed into :class:`~hearline.live.session.LiveSession`."""

    # -- input task: VAD and segmentation ------------------------------------------------------
    async def _input_loop(self) -> None:
        try:
            while True:
                item = await self._input.get()
                batch = [item]
                while len(batch) < INPUT_QUEUE_ITEMS:
                    try:
                        batch.append(self._input.get_nowait())
                    except asyncio.QueueEmpty:
                        break
                self._queued -= sum(int(entry.size) for entry in batch if isinstance(entry, np.ndarray))
                self._space.set()
                flush = False
                parts: list[np.ndarray] = []
                for entry in batch:
                    if entry is _FLUSH:
                        flush = True
                        break
                    if entry is _WAKE:
                        continue
                    if self._commands and self._commands[0][0] <= self._consumed + sum(p.size for p in parts):
                        await self._process(parts)
                        parts = []
                        await self._apply_commands()
                    parts.append(entry)
                await self._process(parts)
                await self._apply_commands()
                if flush:
                    await self._finish_input()
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("live session input failed")
            await self._emit(Error(f"live transcription failed: {exc}", fatal=True))
            self._end_events()

    async def _process(self, parts: list[np.ndarray]) -> None:
        if not parts:
            return
        audio = parts[0] if len(parts) == 1 else np.concatenate(parts)
        assert self._segmenter is not None
        probs = None
        if self._vad is not None:
            probs = await asyncio.get_running_loop().run_in_executor(None, self._vad.process, audio)
        actions = self._segmenter.push(audio, probs)
        self._consumed += int(audio.size)
        for action in actions:
            await self._handle(action)
        self._progress.set()  # after the actions: settle() must see the utterances they closed
        if self._consumed >= self._next_lag:
            self._next_lag = self._consumed + int(LAG_EVERY_S * SAMPLE_RATE)
            await self._emit(Lag(round(self.lag_seconds, 3)))
        # Backpressure: while the decoder is behind, stop taking input (push() then waits), so the
        # session holds a few seconds of audio, not however much the client can send.
        while not self._closed and (
            len(self._utts) >= MAX_OPEN_UTTERANCES
            or len(self._finals) >= MAX_PENDING_FINALS
            or self._consumed - self._processed_position() > MAX_BEHIND_S * SAMPLE_RATE
        ):
            self._input_waiting = True
            self._room.clear()
            self._wake.set()
            await self._room.wait()
        self._input_waiting = False

    async def _apply_commands(self) -> None:
        assert self._segmenter is not None
        while self._commands and self._commands[0][0] <= self._consumed:
            _, kind = self._commands.popleft()
            actions = self._segmenter.end("forced") if kind == "end" else self._segmenter.drop()
            if self._vad is not None:
                self._vad.skip_pending()  # the segmenter took (or dropped) the samples short of a window
            for action in actions:
                await self._handle(action)
            self._progress.set()  # settle() waits for applied commands

    async def _finish_input(self) -> None:
        assert self._segmenter is not None
        for action in self._segmenter.end("flush"):
            await self._handle(action)
        self._drained.clear()
        self._wake.set()
        await self._drained.wait()
        self._end_events()

    async def _handle(self, action: Action) -> None:
        if isinstance(action, Begin):
            utt = _Utterance(action.utterance_id, action.start_sample, action.speech_sample, action.audio)
            self._utts.append(utt)
            await self._emit(SpeechStarted(action.utterance_id, round(action.speech_sample / SAMPLE_RATE, 3)))
        elif isinstance(action, Audio):
            if self._utts and not self._utts[-1].closed:
                self._utts[-1].add(action.audio)
        elif isinstance(action, End):
            if self._utts and not self._utts[-1].closed:
                utt = self._utts[-1]
                utt.closed = True
                utt.end_sample = action.speech_end_sample
                utt.sound_end = action.sound_end_sample
                if action.reason == "silence":
                    await self._emit(
                        Silence(
                            round(action.speech_end_sample / SAMPLE_RATE, 3), round(action.at_sample / SAMPLE_RATE, 3)
                        )
                    )
        elif isinstance(action, Drop) and self._utts and not self._utts[-1].closed:
            self._utts[-1].dropped = True
            self._utts[-1].closed = True
        elif isinstance(action, Pause) and self._utts and not self._utts[-1].closed:
            self._utts[-1].paused = True
            self._utts[-1].pause_end = action.sound_end_sample
            self._guess_from_audio(self._utts[-1])
        elif isinstance(action, Resume) and self._utts and not self._utts[-1].closed:
            utt = self._utts[-1]
            if utt.guess is not None:
                utt.guess.cancel()  # stale: saves the work if the pool has not started it
            utt.paused, utt.guess, utt.guess_tried, utt.guess_started = False, None, False, None
        self._wake.set()
