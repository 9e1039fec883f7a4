"""Transcription deltas that add up to the completed transcript (OpenAI Realtime's contract).

Clients build their live display by appending ``...delta`` events and then expect ``...completed`` to
hold exactly that text.  So a delta carries only words that have firmed up: the LocalAgreement
committed prefix of re-decoding engines (Whisper).  Engines whose final is a separate second pass
(PocketSphinx) report no committed words, so their text firms up only at the final, which is then one
delta, as OpenAI's whisper-1 sends it.  The completed transcript is the text already streamed followed
by the final's remaining words; where the final pass revised a word already streamed, the streamed
word stays (it cannot be taken back) and the final's wording is used for everything after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher

from hearline.engines.base import Word

_PUNCT = re.compile(r"[^\w']+")


def _normal(word: str) -> str:
    return _PUNCT.sub("", word.casefold())


@dataclass
class ItemText:
    """What one item has streamed so far; ``sent`` is always the concatenation of its deltas."""

    sent: str = ""

    def partial(self, committed: str) -> str:
        """The delta a partial's committed prefix allows ("" when nothing new has firmed up)."""
        stable = committed.split()
        done = self.sent.split()
        if len(stable) <= len(done) or [_normal(w) for w in stable[: len(done)]] != [_normal(w) for w in done]:
            return ""
        return self._take(stable[len(done) :])

    def final(self, text: str) -> tuple[str, str, int]:
        """(closing delta, completed transcript, index of the final's first word in that delta)."""
        words = text.split()
        done = self.sent.split()
        first = _end_of(done, words) if done else 0
        delta = self._take(words[first:])
        return delta, self.sent, first

    def _take(self, words: list[str]) -> str:
        if not words:
            return ""
        delta = (" " if self.sent else "") + " ".join(words)
        self.sent += delta
        return delta


def _end_of(done: list[str], words: list[str]) -> int:
    """Index in the final's ``words`` just past the part the streamed words ``done`` already cover."""
    a, b = [_normal(w) for w in done], [_normal(w) for w in words]
    if b[: len(a)] == a:
        return len(a)
    blocks = [m for m in SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks() if m.size]
    if not blocks:
        return min(len(done), len(words))
    last = blocks[-1]
    # streamed words after the last match map one to one onto the final's next words
    return min(len(words), last.b + last.size + (len(a) - last.a - last.size))


def completed_words(streamed: str, words: list[Word], first: int) -> list[Word]:
    """The completed transcript's words for its logprobs: one per word of its text, in order.

    ``streamed`` is the text the deltas carried before the closing one, ``words`` the final's words and
    ``first`` where the closing delta took over.  A streamed word keeps the final's probability where
    the final has the same word at that place; a word the final revised has none (logprob 0.0).
    """
    head: list[Word] = []
    for index, token in enumerate(streamed.split()):
        match = words[index] if index < first and index < len(words) else None
        same = match is not None and _normal(match.word) == _normal(token)
        probability = match.probability if same and match is not None else None
        start, end = (match.start, match.end) if match is not None else (0.0, 0.0)
        head.append(Word(" " + token, start, end, probability))
    return head + words[first:]
