"""SRT as players read it, to check the subtitles the server writes (and those its clients build)."""

from __future__ import annotations

import re

SRT_CUE = re.compile(r"(\d+)\n(\d{2}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2}):(\d{2}):(\d{2}),(\d{3})\n((?:.+\n?)+)")


def parse_srt(text: str) -> list[tuple[int, float, float, str]]:
    """Strict enough SRT reader: numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, text, blank line."""
    cues = []
    for chunk in text.strip().split("\n\n"):
        match = SRT_CUE.fullmatch(chunk.strip() + "\n")
        if match is None:
            raise ValueError(f"not an SRT cue: {chunk!r}")
        g = match.groups()
        start = int(g[1]) * 3600 + int(g[2]) * 60 + int(g[3]) + int(g[4]) / 1000
        end = int(g[5]) * 3600 + int(g[6]) * 60 + int(g[7]) + int(g[8]) / 1000
        cues.append((int(g[0]), start, end, g[9].strip()))
    return cues
