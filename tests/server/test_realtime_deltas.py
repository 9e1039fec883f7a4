"""Realtime deltas: only firmed-up words are streamed, and they always add up to the completed text."""

from __future__ import annotations

from hearline.engines.base import Word
from hearline.server.realtime_deltas import ItemText, completed_words


def _stream(committed: list[str], final: str) -> tuple[list[str], str]:
    item = ItemText()
    deltas = [d for prefix in committed if (d := item.partial(prefix))]
    closing, completed, _ = item.final(final)
    return deltas + ([closing] if closing else []), completed


def test_committed_words_stream_and_the_final_completes_them() -> None:
    deltas, completed = _stream(
        ["and so", "and so my", "and so my", ""],
        "And so, my fellow Americans, ask not.",
    )
    assert deltas[:2] == ["and so", " my"]
    assert "".join(deltas) == completed
    assert completed == "and so my fellow Americans, ask not."


def test_committed_text_that_contradicts_what_was_sent_streams_nothing() -> None:
    item = ItemText()
    assert item.partial("the quick") == "the quick"
    assert item.partial("the quack brown fox") == ""
    closing, completed, first = item.final("The quick brown fox jumps.")
    assert closing == " brown fox jumps." and completed == "the quick brown fox jumps."
    assert first == 2  # the closing delta starts at the final's third word


def test_a_revised_streamed_word_stays_and_the_rest_follows_the_final() -> None:
    item = ItemText()
    assert item.partial("i scream") == "i scream"
    closing, completed, first = item.final("Ice cream for everyone.")
    assert completed == item.sent == "i scream" + closing
    assert first == 2 and closing == " for everyone."
    assert completed.endswith("for everyone.")


def test_an_utterance_without_committed_words_is_one_delta() -> None:
    """PocketSphinx's partials commit nothing (its final is a second pass): the final is one delta."""
    deltas, completed = _stream([], "Hello there.")
    assert deltas == ["Hello there."] and completed == "Hello there."
    deltas, completed = _stream([], "")
    assert deltas == [] and completed == ""


def test_completed_logprob_words_follow_the_streamed_text_where_the_final_revised_it() -> None:
    item = ItemText()
    assert item.partial("sedatu raveke") == "sedatu raveke"
    final = [Word(" sedatu", 0.0, 0.5, 0.9), Word(" gisile", 0.5, 1.0, 0.8), Word(" sedatu", 1.0, 1.5, 0.7)]
    closing, completed, first = item.final("sedatu gisile sedatu")
    assert completed == "sedatu raveke sedatu" and closing == " sedatu"
    words = completed_words(completed[: len(completed) - len(closing)], final, first)
    assert "".join(w.word for w in words).strip() == completed
    assert [w.probability for w in words] == [0.9, None, 0.7]  # the revised word carries no probability
