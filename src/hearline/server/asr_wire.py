"""The ``/asr`` wire model: transcript state, full updates and diffs (pure, so unit-testable without a server).

Lines: one line per utterance.  Finished utterances (``Final`` events) are fixed lines; the open
utterance's committed text (LocalAgreement prefix) is shown as a provisional last line that grows in place
and is replaced in place by the final text; its uncommitted tail is ``buffer_transcription``.  A gap of
at least ``SILENCE_LINE_S`` between speech (from the VAD's speech end to the next speech start, also
before the first and after the last speech) becomes a ``speaker: -2`` line with empty text.

Diff mode (``mode=diff``).  The first update is ``{"type": "snapshot", "seq": 1, ...full update...}``;
every later one is::

    {"type": "diff", "seq": N, "n_lines": K, "lines_pruned": P,
     "replaced_lines": [{"index": i, "line": {...}}, ...], "new_lines": [...],
     "status": ..., "buffer_transcription": ..., "buffer_diarization": ..., "buffer_translation": ...,
     "remaining_time_transcription": ..., "remaining_time_diarization": ...}

``seq`` increases by one per message.  A client holding the previous ``lines`` applies it as
:func:`apply_diff` does: drop ``lines_pruned`` lines from the front (lines the server no longer keeps,
see below), truncate to ``n_lines - len(new_lines)`` (a provisional line can disappear when its
utterance turns out to be empty), replace ``lines[index]`` for each ``replaced_lines`` entry (indices
after pruning), append ``new_lines``; the result has ``n_lines`` lines and equals the full-mode
``lines``.  Unlike the reference implementation, a line that changed in place is never re-sent inside
``new_lines``, so a client that only appends does not duplicate lines; it just misses in-place
corrections (and removed provisional lines).
With ``language=auto`` each final line also carries ``detected_language``.

Bounded lines.  A session may run for hours, so the server keeps only the newest ``asr_max_lines``
(setting, default ``DEFAULT_MAX_LINES``) fixed lines; older ones are pruned from the front, and the
full-mode ``lines`` are those kept (plus the provisional line).  Sessions with fewer lines are not
affected.  Diff mode states each pruning as ``lines_pruned`` (lines of the client's previous list that
are gone), so :func:`apply_diff` still reproduces the full-mode ``lines`` exactly; a client that wants
the whole transcript keeps the lines it is told to drop.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hearline import languages
from hearline.config import Settings
from hearline.engines.segments import CJK
from hearline.live.session import Error, Event, Final, Lag, Partial, Silence, SpeechStarted

DEFAULT_MAX_LINES = 1000  # fixed lines kept per session (Settings.asr_max_lines); older ones are pruned
SILENCE_LINE_S = 5.0  # silences at least this long get their own speaker -2 line, as in WhisperLiveKit


def format_time(seconds: float) -> str:
    """``H:MM:SS.cc`` as WhisperLiveKit writes timestamps."""
    cs = max(0, round(seconds * 100))
    return f"{cs // 360000}:{cs // 6000 % 60:02d}:{cs % 6000 // 100:02d}.{cs % 100:02d}"


@dataclass(frozen=True)
class AsrParams:
    language: str | None  # engine ISO code; None = detect per utterance
    prompt: str | None
    mode: str
    target_language: str | None
    model: str | None = None  # None: the server's default model


def parse_params(query: Any, settings: Settings) -> AsrParams:
    """Validate the query string; raises ValueError with a client-facing message."""
    raw_language = query.get("language") or settings.language or languages.AUTO
    mode = (query.get("mode") or "full").strip().lower()
    if mode not in ("full", "diff"):
        raise ValueError(f"unknown mode {mode!r}; use 'full' or 'diff'")
    try:
        language = languages.engine_code(raw_language)
        prompt = languages.prompt_for(raw_language)
        target = query.get("target_language") or None
        if target is not None and target.strip().lower() in ("", languages.AUTO, languages.NONE):
            target = None
        if target is not None:
            target = languages.lookup(target).code
    except languages.UnknownLanguage as exc:
        raise ValueError(str(exc)) from exc
    model = (query.get("model") or "").strip() or None
    return AsrParams(language=language, prompt=prompt, mode=mode, target_language=target, model=model)


# ---------------------------------------------------------------------------------------------------------
# transcript state -> full updates -> diffs (pure; unit-testable without a server)


@dataclass
class _Open:
    utterance_id: int
    start: float
    committed: str
    tail: str
    end: float


@dataclass
class TranscriptState:
    """What the client should currently see, built from LiveSession events."""

    report_language: bool = False
    max_lines: int = DEFAULT_MAX_LINES  # fixed lines kept; the oldest beyond this are pruned
    lines: list[dict[str, Any]] = field(default_factory=list)  # fixed lines (finals, silences), by start
    _starts: list[float] = field(default_factory=list)  # numeric start of each fixed line
    in_speech: bool = False
    speech_end: float = 0.0  # where the last speech ended (VAD endpoint), on the audio clock
    open: _Open | None = None
    heard: bool = False
    error: str | None = None
    error_sticky: bool = False
    lag: float = 0.0
    last_final_id: int = -1
    _ids: list[int | None] = field(default_factory=list)  # utterance id of each fixed line (None: silence)
    translations: dict[int, str] = field(default_factory=dict)
    pending_translation: dict[int, str] = field(default_factory=dict)  # utterance id -> text, in order
    _keys: list[int] = field(default_factory=list)  # identity of each fixed line (insertion serial), for diffs
    _serial: int = 0
    pruned: int = 0  # fixed lines dropped so far

    def apply(self, event: Event, now: float) -> None:
        """Fold one event in; ``now`` is the session's audio clock (end of a provisional line)."""
        if isinstance(event, SpeechStarted):
            self.heard = True
            if not self.in_speech:  # not a forced split of running speech
                self._silence(self.speech_end, event.start)
            self.in_speech = True
        elif isinstance(event, Partial):
            if event.utterance_id <= self.last_final_id:
                return  # late partial of an utterance already final
            self.heard = True
            committed, tail = _split_committed(event.text, event.committed)
            self.open = _Open(event.utterance_id, event.start, committed, tail, max(now, event.start))
        elif isinstance(event, Final):
            self.heard = True
            self.last_final_id = max(self.last_final_id, event.utterance_id)
            if self.open is not None and self.open.utterance_id <= event.utterance_id:
                self.open = None
            text = event.text.strip()
            if text:
                line: dict[str, Any] = {
                    "speaker": 1,
                    "text": text,
                    "start": format_time(event.start),
                    "end": format_time(event.end),
                }
                if self.report_language and event.language:
                    line["detected_language"] = event.language
                self._insert(event.start, line, event.utterance_id)
        elif isinstance(event, Silence):
            # VAD endpoint: speech ended at ``start``; the gap is judged when speech resumes
            self.in_speech = False
            self.speech_end = event.start
        elif isinstance(event, Lag):
            self.lag = max(0.0, round(event.seconds, 1))
        elif isinstance(event, Error):
            self.set_error(event.message, sticky=event.fatal)

    def end_of_audio(self, now: float) -> None:
        """All text is out: no lag; a long trailing silence (or a stream without speech) gets its line."""
        self.lag = 0.0
        if not self.in_speech:
            self._silence(self.speech_end, now)

    def _silence(self, start: float, end: float) -> None:
        if end - start >= SILENCE_LINE_S:
            self._insert(start, {"speaker": -2, "text": "", "start": format_time(start), "end": format_time(end)})

    def _insert(self, start: float, line: dict[str, Any], utterance_id: int | None = None) -> None:
        """Keep lines in time order: a final can arrive after the next utterance has started."""
        index = bisect.bisect_right(self._starts, start)
        self._starts.insert(index, start)
        self.lines.insert(index, line)
        self._ids.insert(index, utterance_id)
        self._serial += 1
        self._keys.insert(index, self._serial)
        self._prune()

    def _prune(self) -> None:
        """Bounded memory: drop the oldest fixed lines beyond ``max_lines`` (and their translations)."""
        excess = len(self.lines) - max(1, self.max_lines)
        if excess <= 0:
            return
        for utterance_id in self._ids[:excess]:
            if utterance_id is not None:
                self.translations.pop(utterance_id, None)
        del self.lines[:excess], self._starts[:excess], self._ids[:excess], self._keys[:excess]
        self.pruned += excess

    def translation_requested(self, utterance_id: int, text: str) -> None:
        self.pending_translation[utterance_id] = text

    def translated(self, utterance_id: int, text: str | None) -> None:
        """A translation arrived (``None``: it failed or was skipped)."""
        self.pending_translation.pop(utterance_id, None)
        if text is not None and utterance_id in self._ids:
            self.translations[utterance_id] = text

    def set_error(self, message: str, sticky: bool = True) -> None:
        self.error = message
        self.error_sticky = sticky

    def update(self) -> dict[str, Any]:
        """The full-mode update for the current state (a fresh dict; safe to keep)."""
        lines = [dict(line) for line in self.lines]
        for line, utterance_id in zip(lines, self._ids, strict=True):
            if utterance_id is not None and utterance_id in self.translations:
                line["translation"] = self.translations[utterance_id]
        provisional = self._provisional_line()
        if provisional is not None:
            lines.append(provisional)
        buffer = _spaced_tail(lines[-1]["text"] if lines else "", self.open.tail if self.open is not None else "")
        status = "active_transcription" if self.heard else "no_audio_detected"
        message: dict[str, Any] = {"status": status}
        if self.error is not None:
            message = {"status": "error", "error": self.error}
        message.update(
            lines=lines,
            buffer_transcription=buffer,
            buffer_diarization="",
            buffer_translation=" ".join(self.pending_translation.values()),
            remaining_time_transcription=self.lag,
            remaining_time_diarization=0.0,
        )
        return message

    def line_keys(self) -> list[int | None]:
        """Identity of each line of :meth:`update` (``None``: the provisional line), for :class:`DiffEncoder`."""
        keys: list[int | None] = list(self._keys)
        if self._provisional_line() is not None:
            keys.append(None)
        return keys

    def _provisional_line(self) -> dict[str, Any] | None:
        """The open utterance's committed text as a line that grows in place (None when there is none)."""
        if self.open is None or not self.open.committed:
            return None
        return {
            "speaker": 1,
            "text": self.open.committed,
            "start": format_time(self.open.start),
            "end": format_time(self.open.end),
        }

    def sent(self) -> None:
        """A transient (non-fatal) error is shown in one update only."""
        if self.error is not None and not self.error_sticky:
            self.error = None


def _split_committed(text: str, committed: str) -> tuple[str, str]:
    """(committed, uncommitted tail) of a partial, word-aligned and stripped."""
    words, done = text.split(), committed.split()
    if done and words[: len(done)] == done:
        return " ".join(done), " ".join(words[len(done) :])
    return "", " ".join(words)


class DiffEncoder:
    """Turns successive full updates into one snapshot and then diffs (see the module docstring)."""

    def __init__(self) -> None:
        self.seq = 0
        self._lines: list[dict[str, Any]] | None = None
        self._keys: list[Hashable | None] = []

    def encode(self, update: dict[str, Any], keys: Sequence[Hashable | None] | None = None) -> dict[str, Any]:
        """The message for ``update``; ``keys`` (:meth:`TranscriptState.line_keys`) identify its lines.

        Pruned lines are found by identity, not by content: without keys nothing counts as pruned and
        the diff still applies, only less compactly (lines shifted by a pruning are sent as replaced).
        """
        self.seq += 1
        lines: list[dict[str, Any]] = update["lines"]
        previous, self._lines = self._lines, [dict(line) for line in lines]
        previous_keys, self._keys = self._keys, list(keys) if keys is not None else [None] * len(lines)
        if previous is None:
            return {"type": "snapshot", "seq": self.seq, **update}
        pruned = _pruned(previous_keys, self._keys)
        kept = previous[pruned:]
        common = min(len(kept), len(lines))
        replaced = [{"index": i, "line": lines[i]} for i in range(common) if kept[i] != lines[i]]
        rest = {key: value for key, value in update.items() if key != "lines"}
        return {
            "type": "diff",
            "seq": self.seq,
            "n_lines": len(lines),
            "lines_pruned": pruned,
            "replaced_lines": replaced,
            "new_lines": lines[len(kept) :],
            **rest,
        }


def _pruned(previous: list[Hashable | None], current: list[Hashable | None]) -> int:
    """How many of the previous lines, from the front, are gone (pruned): fixed lines are only ever
    removed that way, so the leading run of previous keys missing from ``current`` is exactly that."""
    present = {key for key in current if key is not None}
    count = 0
    for key in previous:
        if key is None or key in present:
            break
        count += 1
    return count


def apply_diff(lines: list[dict[str, Any]], message: dict[str, Any]) -> list[dict[str, Any]]:
    """The reference client rule for diff mode; returns the new ``lines``."""
    if message.get("type") == "snapshot":
        return list(message["lines"])
    result = list(lines[message.get("lines_pruned", 0) :])
    new_lines = message.get("new_lines", [])
    del result[message["n_lines"] - len(new_lines) :]
    for entry in message.get("replaced_lines", []):
        result[entry["index"]] = entry["line"]
    result.extend(new_lines)
    if len(result) != message["n_lines"]:
        raise ValueError(f"diff {message.get('seq')} does not apply: {len(result)} != {message['n_lines']} lines")
    return result


def _spaced_tail(line_text: str, tail: str) -> str:
    """The buffer as the reference server sends it: clients print it right after the last line's text.

    WhisperLiveKit's tokens carry their leading space, so its page joins ``text + buffer`` as they come;
    without the space two words would run together (no space between CJK characters, as in the text).
    """
    if not tail or not line_text or line_text[-1].isspace() or tail[0].isspace():
        return tail
    if CJK.match(line_text[-1]) and CJK.match(tail[0]):
        return tail
    return " " + tail
