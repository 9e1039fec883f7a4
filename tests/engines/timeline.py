"""One check for every engine's transcript: times ordered, non-negative and inside the audio."""

from __future__ import annotations

from hearline.engines.base import Transcript


def assert_timeline(transcript: Transcript, duration: float) -> None:
    """Segments and words are ordered, non-negative and inside the audio."""
    previous = 0.0
    for segment in transcript.segments:
        assert 0.0 <= segment.start <= segment.end <= duration + 1e-3, segment
        assert segment.start >= previous - 1e-3, (segment, previous)
        previous = segment.start
        for word in segment.words:
            assert segment.start - 1e-3 <= word.start <= word.end <= segment.end + 1e-3, (word, segment)
    starts = [w.start for w in transcript.words]
    assert starts == sorted(starts)
