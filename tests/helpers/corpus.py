"""The speech corpus in ``../shared/audio`` (clips and their reference transcripts) and WER against it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import jiwer

from hearline.audio.decode import decode_audio, float_to_pcm16

AUDIO_DIR = (Path(__file__).resolve().parents[2] / ".." / "shared" / "audio").resolve()


@dataclass(frozen=True)
class Clip:
    id: str
    path: Path
    language: str
    duration: float
    text: str | None


def manifest() -> list[Clip]:
    rows = json.loads((AUDIO_DIR / "manifest.json").read_text())
    return [Clip(r["id"], AUDIO_DIR / r["file"], r["language"], float(r["duration_s"]), r.get("text")) for r in rows]


def english_clips() -> list[Clip]:
    """English mono clips with a human reference transcript."""
    return [
        c for c in manifest()
        if c.language == "en" and c.text and "stereo" not in c.id and "multilingual" not in c.id
    ]  # fmt: skip


def clip(clip_id: str) -> Clip:
    return next(c for c in manifest() if c.id == clip_id)


def normalize(text: str) -> str:
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^\w' ]+", " ", text)
    return " ".join(text.split())


def wer(reference: str | list[str], hypothesis: str | list[str]) -> float:
    if isinstance(reference, str):
        return jiwer.wer(normalize(reference), normalize(hypothesis))  # type: ignore[arg-type]
    return jiwer.wer([normalize(r) for r in reference], [normalize(h) for h in hypothesis])


def english_dictionary() -> set[str]:
    """Words of the English pronunciation dictionary PocketSphinx ships (to tell English text from other text)."""
    import pocketsphinx

    path = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    return {line.split(" ", 1)[0].split("(", 1)[0] for line in path.read_text(encoding="utf-8").splitlines() if line}


def pcm16(clip_id: str) -> bytes:
    """A corpus clip as 16 kHz mono s16le, what raw-PCM doors take."""
    return float_to_pcm16(decode_audio(clip(clip_id).path))
