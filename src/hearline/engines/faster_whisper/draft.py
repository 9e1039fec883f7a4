"""Draft windows: a live partial pass, redone every step and only its agreed prefix kept, made cheaper.

* Encoded with ``DRAFT_PAD_FRAMES`` of silence after its audio, rounded up to ``DRAFT_STEP_FRAMES``, instead of
  padded to 30 s.  The encoder is most of a pass's cost and grows with its input; Whisper needs trailing
  silence (with none it writes nonsense) but not 30 s of it (``bench/whisper_draft.py`` prints WER and time
  for several paddings).
* Decoded to at most ``draft_tokens``: a draft that loops ("....", a phrase again and again) would otherwise
  run to Whisper's 448 tokens, seconds of a live session's time.

Finals never are drafts.  A live final is encoded as a draft is (``TranscribeOptions.short_window``, unless
the server runs with ``--live-final-window full``), but decoded whole: no token limit, continued where its
decode stopped, its temperature fallback the long-form loop's; offline transcription sees full windows.
``bench/whisper_draft.py --final`` prints what the shorter encode does to accuracy and time.
"""

from __future__ import annotations

from hearline.engines.base import TranscribeOptions

#: Silence a draft window is encoded with after its audio (mel frames, 100 per second) ...
DRAFT_PAD_FRAMES = 1000
#: ... rounded up to a multiple of this, so drafts of similar length share an encode.
DRAFT_STEP_FRAMES = 500
#: Tokens a draft may write: this many, plus DRAFT_TOKENS_PER_S per second of its audio (rounded up like its
#: encode, so drafts that share an encode share a ``generate``).  Fast speech stays under 8 a second.
DRAFT_TOKENS = 16
DRAFT_TOKENS_PER_S = 15


def short_encode(options: TranscribeOptions) -> bool:
    """Whether the encoder sees a short window for ``options``: a draft, or a live final's ``short_window``."""
    return options.draft or options.short_window


def encoded_frames(frames: int, short: bool, full: int = 3000) -> int:
    """Mel frames the encoder sees for a window of ``frames`` content frames: ``full`` (30 s), or for a short
    window (a draft) its audio and ``DRAFT_PAD_FRAMES`` of silence, rounded up to ``DRAFT_STEP_FRAMES``."""
    if not short:
        return full
    return min(full, -(-(frames + DRAFT_PAD_FRAMES) // DRAFT_STEP_FRAMES) * DRAFT_STEP_FRAMES)


def draft_tokens(frames: int) -> int:
    """The most tokens a draft of ``frames`` content frames may write."""
    seconds = -(-frames // DRAFT_STEP_FRAMES) * DRAFT_STEP_FRAMES / 100
    return DRAFT_TOKENS + int(DRAFT_TOKENS_PER_S * seconds)
