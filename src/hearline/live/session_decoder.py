"""The decoder task of a live session: partials for the open utterance, finals for closed ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable

from hearline.engines.base import SAMPLE_RATE
from hearline.live.events import Error, Final, Partial
from hearline.live.policies import FinalJob, Policy, Result
from hearline.live.session_state import PARTIAL_RETRY_S, THIN_PARTIAL_S, SessionState
from hearline.live.utterance import _Utterance
from hearline.models.pool import ServerBusy
from hearline.models.scheduler import Work

logger = logging.getLogger("hearline.live.session")  # the session's logger, as before the split


class SessionDecoder(SessionState):
    """The decoder task's steps, mixed into :class:`~hearline.live.session.LiveSession`."""

    # -- decoder task: partials and finals -----------------------------------------------------
    async def _decoder_loop(self) -> None:
        assert self._policy is not None
        policy = self._policy
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._utts:
                    if not await self._step(policy, self._utts[0]):
                        break
                if self._flushing and not self._utts and not self._finals:
                    self._drained.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("live session decoder failed")
            await self._emit(Error(f"live transcription failed: {exc}", fatal=True))
            self._end_events()

    def _done_with_head(self) -> None:
        utt = self._utts.popleft()
        self._processed = utt.start_sample + utt.fed
        self._room.set()
        self._progress.set()

    async def _step(self, policy: Policy, utt: _Utterance) -> bool:
        """Do one job for the oldest utterance; False when there is nothing to do until more input."""
        if utt.dropped:
            if utt.guess is not None:
                utt.guess.cancel()
            if self._latest_partial is not None and self._latest_partial.utterance_id == utt.id:
                self._latest_partial = None
            if utt.begun:
                await self._job(policy.discard, work=Work.STREAM_STEP)
                self._release_slot()
            self._done_with_head()
            return True
        if not utt.begun:
            if self._slot is not None and not self._holding_slot:
                await self._slot.acquire()
                self._holding_slot = True
            policy.begin(utt.start_sample)
            utt.begun = True
        if utt.closed:
            await self._close_utterance(policy, utt)
            return True
        if utt.paused and not utt.guess_tried:
            return await self._guess(policy, utt)
        if utt.paused and utt.guess is not None and policy.finals_from_audio:
            # The final is being prepared from the utterance's audio: decoding the pause's silence
            # would only take CPU from it.
            if utt.pending:
                audio = utt.take()
                policy.hold(audio)
                utt.fed += int(audio.size)
                self._room.set()
            return False
        if utt.pending < self._partial_step(policy):
            return False
        audio = utt.take()
        skip = self._partial_skip(policy, audio.size)
        try:
            # A busy pool may refuse partial work, unless the input is waiting on it (then it is the
            # only way forward and must queue like a final).
            work = Work.STREAM_STEP if self._input_waiting else Work.PARTIAL  # the input waits on this step
            result = await self._job(policy.partial, audio, skip, work=work, engine=self.partial_engine)
        except ServerBusy:
            utt.give_back(audio)  # newer audio joins it; the next step decodes all of it
            await asyncio.sleep(PARTIAL_RETRY_S)
            return True
        except Exception as exc:
            logger.exception("partial decoding failed")
            await self._emit(Error(f"partial transcription failed: {exc}"))
            result = None
        utt.fed += int(audio.size)
        self.partial_skipped += skip
        self._room.set()
        # Emitted even if the utterance closed meanwhile (input ran ahead): it still precedes the final.
        # While a final prepared in this pause is pending or shown, the quicker first-pass hypothesis
        # of the silence after it would only flicker.
        if result is not None and result.text and utt.guess is None:
            start = round(utt.speech_sample / SAMPLE_RATE, 3)
            await self._emit(Partial(utt.id, result.text, start, committed=result.committed, words=result.words))
        self._progress.set()
        return True

    def _partial_step(self, policy: Policy) -> int:
        """Audio a partial step waits for: the policy's step, or, for a policy that re-decodes its window (each
        pass costs about the same however little audio is new), ``THIN_PARTIAL_S`` of it while the model's
        finals hold every batch slot: the live text thins out, the finals keep up.  The decoder looks again
        every ``PARTIAL_RETRY_S`` meanwhile, so partials resume as soon as the finals let go."""
        step = policy.batch_samples
        if not policy.finals_from_audio or self.engine is None or not self.pool.batch_saturated(self.engine):
            return step
        asyncio.get_running_loop().call_later(PARTIAL_RETRY_S, self._wake.set)
        return max(step, int(THIN_PARTIAL_S * SAMPLE_RATE))

    def _partial_skip(self, policy: Policy, pending: int) -> int:
        """Leading samples the partial step may pass over, for a policy whose final decodes them anyway.

        Incremental decoding costs the same per second of audio however it is batched, so for native
        streaming "coalescing" partial work has to mean decoding less of it:

        * while every batch slot is busy with finals (or requests), partial decoding would take CPU
          from work someone waits for, so it passes over all of its audio (bench/live.py's overload
          trial shows what this does to lag and final latency);
        * further behind than ``max_partial_behind_s``, only the newest ``batch_samples`` are decoded.

        Only the live text thins out while the machine is overloaded; every final covers all audio.
        """
        limit = int(self.options.max_partial_behind_s * SAMPLE_RATE)
        if not policy.can_skip or limit <= 0:
            return 0
        if self.engine is not None and self.pool.batch_saturated(self.engine):
            return pending
        if pending <= limit:
            return 0
        return pending - min(pending, policy.batch_samples)

    async def _close_utterance(self, policy: Policy, utt: _Utterance) -> None:
        """End the head utterance and queue its final; a final pass that is a job runs on its own."""
        audio = utt.take()
        guess, utt.guess = utt.guess, None
        if guess is not None and not guess.done() and utt.guess_started is not None and not utt.guess_started.is_set():
            # Admitted on spare capacity but not running yet (its thread is still busy, e.g. loading a
            # model): it is a final now, and the final pass below is queued as one, ahead of any
            # speculative work.
            guess.cancel()
        source: Result | Awaitable[Result]
        try:
            prepared = _result_of(guess)
            job = policy.final_job(utt.audio(), utt.start_sample, utt.sound_end) if policy.finals_from_audio else None
            if job is not None:
                policy.discard()  # the final needs nothing of the policy; no job of it is in flight
                source = prepared if prepared is not None else self._final_pass(job, guess)
            elif prepared is not None:
                # Speech never resumed after the pause the final was prepared in: the audio since is
                # silence and the prepared result is the final.
                source = await self._job(policy.final_from_guess, prepared, work=Work.STREAM_STEP)
            else:
                outcome = await self._job(policy.final, audio, utt.sound_end, work=Work.STREAM_STEP)
                source = self._final_pass(outcome, guess)
        except Exception as exc:
            logger.exception("final decoding failed")
            await self._emit(Error(f"transcription of an utterance failed: {exc}"))
            source = Result(text="")
        utt.fed += int(audio.size)
        self._release_slot()
        previous = self._finals[-1] if self._finals else None
        delivery = asyncio.create_task(self._deliver_final(utt, source, previous), name="live-final")
        self._finals.append(delivery)
        delivery.add_done_callback(self._final_delivered)
        self._done_with_head()

    async def _final_pass(self, outcome: Result | FinalJob, guess: asyncio.Future[Result | None] | None) -> Result:
        """The final: the one still being prepared from the pause if that succeeds, else ``outcome``."""
        if guess is not None:
            await asyncio.wait([guess])
            prepared = _result_of(guess)
            if prepared is not None:
                return prepared
        if isinstance(outcome, Result):
            return outcome
        return await self._job(outcome, work=Work.FINAL)  # a final is never refused

    async def _deliver_final(
        self, utt: _Utterance, source: Result | Awaitable[Result], previous: asyncio.Task[None] | None
    ) -> None:
        if isinstance(source, Result):
            result = source
        else:
            try:
                result = await source
            except Exception as exc:
                logger.exception("final decoding failed")
                await self._emit(Error(f"transcription of an utterance failed: {exc}"))
                result = Result(text="")
        if previous is not None:
            await asyncio.wait([previous])  # finals go out in utterance order
        await self._emit_final(utt, result)
        latest = self._latest_partial
        if latest is not None and latest.utterance_id > utt.id:
            # The next utterance's text went out before this final: show it again after it.
            await self._emit(latest)

    def _final_delivered(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._finals.remove(task)
        self._progress.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error("delivering a final failed", exc_info=task.exception())
        self._room.set()
        self._wake.set()

    async def _guess(self, policy: Policy, utt: _Utterance) -> bool:
        """Start preparing the final during a pause, so it is ready when the endpoint confirms the pause."""
        utt.guess_tried = True
        audio = utt.take()
        try:
            # Optional work: a busy pool may refuse it (the final is then computed at the endpoint).
            outcome = await self._job(policy.guess_final, audio, utt.pause_end, work=Work.PARTIAL)
        except ServerBusy:
            utt.give_back(audio)
            return True
        except Exception as exc:
            logger.exception("preparing a final failed")
            await self._emit(Error(f"preparing the final of an utterance failed: {exc}"))
            outcome = None
        utt.fed += int(audio.size)
        self._room.set()
        if outcome is None or not utt.paused or utt.closed:
            return True  # nothing to gain, or speech resumed while the job ran (stale)
        self._prepare_guess(utt, outcome)
        return True

    def _guess_from_audio(self, utt: _Utterance) -> None:
        """A pause was heard: for a policy whose final needs only the audio, start preparing it now, on the
        event loop, without waiting for the partial step in flight (which would add its run time)."""
        policy = self._policy
        if policy is None or not policy.finals_from_audio or utt.closed or utt.dropped:
            return
        job = policy.final_job(utt.audio(), utt.start_sample, utt.pause_end)
        if job is not None:
            utt.guess_tried = True
            self._prepare_guess(utt, job)

    def _prepare_guess(self, utt: _Utterance, outcome: Result | FinalJob) -> None:
        if isinstance(outcome, Result):
            future: asyncio.Future[Result | None] = asyncio.get_running_loop().create_future()
            future.set_result(outcome)
        else:
            started = threading.Event()

            def prepare(job: FinalJob = outcome) -> Result:
                started.set()
                return job()

            utt.guess_started = started
            task = asyncio.create_task(self._prepare(prepare), name="live-guess")
            self._guesses.add(task)
            task.add_done_callback(self._guesses.discard)
            future = task
        utt.guess = future
        future.add_done_callback(lambda done: self._show_guess(utt, done))

    async def _prepare(self, job: FinalJob) -> Result | None:
        try:
            return await self._job(job, work=Work.SPECULATIVE_FINAL)
        except ServerBusy:
            return None
        except Exception:
            logger.exception("preparing a final failed")  # the final pass at the endpoint reports it
            return None

    def _show_guess(self, utt: _Utterance, done: asyncio.Future[Result | None]) -> None:
        """The prepared final, shown as the utterance's last partial while the endpoint is awaited."""
        self._progress.set()  # settle(partial=True) waits for it
        if utt.guess is not done or utt.closed or self._closed:
            return
        result = _result_of(done)
        if result is not None and result.text:
            start = round(utt.speech_sample / SAMPLE_RATE, 3)
            self._emit_nowait(Partial(utt.id, result.text, start, words=result.words))

    async def _emit_final(self, utt: _Utterance, result: Result) -> None:
        speech_start = utt.speech_sample / SAMPLE_RATE
        speech_end = (utt.end_sample if utt.end_sample is not None else utt.start_sample + utt.fed) / SAMPLE_RATE
        words = result.words
        start = min(speech_start, words[0].start) if words else speech_start
        end = max(speech_end, words[-1].end) if words else speech_end
        language = result.language or self.options.language
        await self._emit(Final(utt.id, result.text, round(start, 3), round(end, 3), list(words), language))


def _result_of(future: asyncio.Future[Result | None] | None) -> Result | None:
    """The result of a finished, successful preparation; None otherwise."""
    if future is None or not future.done() or future.cancelled() or future.exception() is not None:
        return None
    return future.result()
