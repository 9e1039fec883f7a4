"""Batched Whisper decoding of independent ≤ 30 s windows (one per live session) in one CTranslate2 call.

``WhisperModel.transcribe`` decodes one clip at a time; a scheduler serving many sessions gains throughput by
stacking their windows into one ``encode`` and one ``generate`` per compatible group.  Each window is decoded
the way faster-whisper decodes the first window of a clip without VAD (same features, prompt, thresholds,
timestamp splitting, word alignment), reusing faster-whisper's own helpers on ``engine.model``.

Choices where a batch cannot mirror the single-clip loop exactly:

* temperature fallback: a window failing the compression-ratio or log-prob threshold is re-decoded alone
  through ``engine.transcribe`` (which owns the full fallback schedule) and that result is used;
* a window whose decode stops before its end (last segment without a closing timestamp) has the remainder
  decoded alone through ``engine.transcribe``, prompted with the window's text (as faster-whisper conditions
  on previous text), and those segments are appended shifted;
* a prompt's context is cut to a power-of-two number of tokens (newest kept; see :func:`_bucketed`);
* ``hallucination_silence_threshold`` (off by default) is not applied; VAD is never applied here: a request
  the engine's VAD cut (``speech.speech_window``) carries its speech spans and gets its times mapped back;
* a draft window (``TranscribeOptions.draft``: a live partial pass) is encoded shorter and decoded shorter
  (:mod:`.draft`), and not continued where its decode stopped.  Windows are encoded in groups of one input
  length, so a window's text never depends on its batch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hearline.engines.base import (
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    EngineError,
    Segment,
    TranscribeOptions,
    Transcript,
    UnsupportedOption,
    WindowRequest,
    join_text,
)
from hearline.engines.faster_whisper.draft import draft_tokens, encoded_frames, short_encode
from hearline.engines.faster_whisper.segments import _convert
from hearline.engines.faster_whisper.speech import restore
from hearline.engines.guards import LoopGuard

if TYPE_CHECKING:
    from hearline.engines.faster_whisper.engine import FasterWhisperEngine

logger = logging.getLogger(__name__)

#: One Whisper window: longer audio needs the sequential long-form loop of ``engine.transcribe``.
MAX_SAMPLES = WINDOW_SAMPLES

__all__ = ["MAX_SAMPLES", "WindowRequest", "batch_key", "decode_windows"]


def batch_key(options: TranscribeOptions) -> Hashable:
    """What must be equal to share one ``generate`` call: its search parameters.

    Language, task, prompt and hotwords live in each window's own prompt, and word timestamps, fallback and the
    no-speech guard are applied per window afterwards, so they do not split a batch.
    """
    return (max(1, int(options.beam_size)), max(0.0, float(options.temperature)))


@dataclass
class _Window:
    """One request's decoding state between the batched steps."""

    audio: np.ndarray
    options: TranscribeOptions
    kwargs: dict[str, Any]
    frames: int  # content frames (mel frames of real audio, <= 3000)
    mel: np.ndarray | None = None  # the content frames' features, until encoded
    language: str | None = None
    probability: float | None = None
    tokenizer: Any = None
    prompt: list[int] = dataclasses.field(default_factory=list)
    subsegments: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seek: int = 0
    single_ending: bool = True
    result: Transcript | None = None


class _Prealigned:
    """Stands in for the ``WhisperModel`` inside ``add_word_timestamps``, with the alignment already computed.

    Lets one batched ``align`` serve all windows while each window's word post-processing starts afresh
    (``last_speech_timestamp`` = 0), exactly as a single-window decode does.
    """

    def __init__(self, frames_per_second: float, alignment: list[dict[str, Any]]) -> None:
        self.frames_per_second = frames_per_second
        self._alignment = alignment

    def find_alignment(self, *_args: Any, **_kwargs: Any) -> list[list[dict[str, Any]]]:
        return [self._alignment]


def _take(encoder_output: Any, indices: list[int], total: int) -> Any:
    """Rows ``indices`` of a batched encoder output (the output itself when all rows are wanted)."""
    if indices == list(range(total)):
        return encoder_output
    import ctranslate2

    on_cpu = encoder_output if encoder_output.device == "cpu" else encoder_output.to_device(ctranslate2.Device.cpu)
    rows = np.ascontiguousarray(np.asarray(on_cpu)[indices])
    view = ctranslate2.StorageView.from_array(rows)
    return view if encoder_output.device == "cpu" else view.to_device(ctranslate2.Device.cuda)


def decode_windows(engine: FasterWhisperEngine, requests: Sequence[WindowRequest]) -> list[Transcript]:
    """Each request decoded as ONE 30 s Whisper window, all in one encode and one generate per batch key."""
    windows: list[_Window] = []
    for request in requests:
        audio = np.ascontiguousarray(np.asarray(request.audio, dtype=np.float32).reshape(-1))
        if audio.size > MAX_SAMPLES:
            raise ValueError(f"a window holds at most 30 s of audio, got {audio.size / SAMPLE_RATE:.2f} s")
        engine.check_options(request.options)
        kwargs = engine.transcribe_kwargs(request.options)  # maps the language; UnsupportedOption if unknown
        windows.append(_Window(audio, request.options, kwargs, frames=0, language=kwargs["language"]))
    if engine._closed.is_set():
        raise EngineError(f"model {engine.name!r} has been unloaded")
    live = [w for w in windows if w.audio.size > 0]
    for window in windows:
        if window.audio.size == 0:  # like engine.transcribe: nothing to decode
            window.result = Transcript("", [], window.language, None, 0.0)
    try:
        if live:
            _decode(engine, live)
    except EngineError:
        raise
    except ValueError as exc:  # faster-whisper's answer to options it cannot honour
        raise UnsupportedOption(f"model {engine.name!r}: {exc}") from exc
    except RuntimeError as exc:
        raise EngineError(f"model {engine.name!r} failed: {exc}") from exc
    return [restore(w.result, r) for w, r in zip(windows, requests, strict=True) if w.result is not None]


def _decode(engine: FasterWhisperEngine, windows: list[_Window]) -> None:
    model = engine.model
    full = model.feature_extractor.nb_max_frames
    groups: dict[int, list[_Window]] = {}
    for window in windows:
        mel = model.feature_extractor(window.audio)
        window.frames = min(mel.shape[-1] - 1, full)
        window.mel = mel[:, : window.frames]
        groups.setdefault(encoded_frames(window.frames, short_encode(window.options), full), []).append(window)
    for length, group in groups.items():
        _decode_group(engine, group, length)


def _decode_group(engine: FasterWhisperEngine, windows: list[_Window], length: int) -> None:
    """Windows encoded at one input length: one ``encode``, then ``generate`` and ``align`` per compatible set."""
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer

    model = engine.model
    features = []
    for window in windows:
        assert window.mel is not None
        features.append(pad_or_trim(window.mel, length))
        window.mel = None
    encoder_output = model.encode(np.stack(features).astype(np.float32))
    total = len(windows)

    multilingual = bool(model.model.is_multilingual)
    detect = [i for i, w in enumerate(windows) if w.language is None]
    if detect and multilingual:
        for i, scores in zip(detect, model.model.detect_language(_take(encoder_output, detect, total)), strict=True):
            token, probability = scores[0]
            windows[i].language, windows[i].probability = token[2:-2], float(probability)
    for window in windows:
        if window.language is None or not multilingual:
            window.language = "en" if not multilingual else window.language
        if window.probability is None:
            window.probability = 1.0  # given (or the only language): what faster-whisper reports

    tokenizers: dict[tuple[str | None, str], Any] = {}
    for window in windows:
        key = (window.language, window.options.task)
        if key not in tokenizers:
            tokenizers[key] = Tokenizer(model.hf_tokenizer, multilingual, task=key[1], language=key[0])
        window.tokenizer = tokenizers[key]
        initial = window.kwargs.get("initial_prompt")
        previous = window.tokenizer.encode(" " + initial.strip()) if isinstance(initial, str) else []
        prompt = model.get_prompt(
            window.tokenizer,
            previous,
            without_timestamps=False,
            prefix=window.kwargs.get("prefix"),
            hotwords=window.kwargs.get("hotwords"),
        )
        window.prompt = _bucketed(prompt, prompt.index(window.tokenizer.sot))

    groups: dict[tuple[Hashable, int, int], list[int]] = {}
    for i, window in enumerate(windows):
        sot = window.prompt.index(window.tokenizer.sot)  # CTranslate2 needs it at one position in a batch
        groups.setdefault((batch_key(window.options), _max_length(model, window), sot), []).append(i)
    for (_, max_length, _), indices in groups.items():
        _generate(engine, [windows[i] for i in indices], _take(encoder_output, indices, total), max_length)

    _add_words(engine, windows, encoder_output)
    for window in windows:
        if window.result is None:
            window.result = _finish(engine, window)


def _bucketed(prompt: list[int], sot: int) -> list[int]:
    """The prompt with its context (between ``<|startofprev|>`` and SOT) cut to a power of two, oldest first.

    ``generate`` needs SOT at the same position in every row of a batch.  Cutting each window's context to a
    bucket of its own length (never by more than half, keeping the newest text) lets windows of similar context
    share a batch while a window's result never depends on what else is in its batch.
    """
    context = max(0, sot - 1)
    excess = context - (1 << (context.bit_length() - 1) if context else 0)
    return prompt if excess == 0 else prompt[:1] + prompt[1 + excess :]


def _max_length(model: Any, window: _Window) -> int:
    new_tokens = window.kwargs.get("max_new_tokens")
    max_length = int(model.max_length) if new_tokens is None else len(window.prompt) + int(new_tokens)
    if max_length > model.max_length:
        raise ValueError(f"prompt of {len(window.prompt)} tokens + max_new_tokens exceeds {model.max_length}")
    if window.options.draft:
        max_length = min(max_length, len(window.prompt) + draft_tokens(window.frames))
    return max_length


def _generate(engine: FasterWhisperEngine, windows: list[_Window], encoder_output: Any, max_length: int) -> None:
    """One ``generate`` for windows sharing a batch key, then faster-whisper's per-window guards."""
    from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

    model = engine.model
    kw = windows[0].kwargs  # model defaults are per engine; the batch key fixes beam size and temperature
    temperatures = kw["temperature"] if isinstance(kw["temperature"], (list, tuple)) else [kw["temperature"]]
    temperature = float(temperatures[0])
    if temperature > 0:
        search: dict[str, Any] = dict(
            beam_size=1, num_hypotheses=kw.get("best_of", 5), sampling_topk=0, sampling_temperature=temperature
        )
    else:
        search = dict(beam_size=kw["beam_size"], patience=kw.get("patience", 1))
    suppress = kw.get("suppress_tokens", [-1])
    length_penalty = kw.get("length_penalty", 1)
    results = model.model.generate(
        encoder_output,
        [w.prompt for w in windows],
        length_penalty=length_penalty,
        repetition_penalty=kw.get("repetition_penalty", 1),
        no_repeat_ngram_size=kw.get("no_repeat_ngram_size", 0),
        max_length=max_length,
        return_scores=True,
        return_no_speech_prob=True,
        suppress_blank=kw.get("suppress_blank", True),
        suppress_tokens=get_suppressed_tokens(windows[0].tokenizer, list(suppress)) if suppress else suppress,
        max_initial_timestamp_index=round(kw.get("max_initial_timestamp", 1.0) / model.time_precision),
        **search,
    )
    cr_limit = kw.get("compression_ratio_threshold", 2.4)
    lp_limit = kw.get("log_prob_threshold", -1.0)
    ns_limit = kw.get("no_speech_threshold", 0.6)
    for window, result in zip(windows, results, strict=True):
        tokens = list(result.sequences_ids[0])
        avg_logprob = result.scores[0] * (len(tokens) ** length_penalty) / (len(tokens) + 1)
        compression_ratio = get_compression_ratio(window.tokenizer.decode(tokens).strip())
        no_speech = float(result.no_speech_prob)
        low_logprob = lp_limit is not None and avg_logprob < lp_limit
        needs_fallback = (cr_limit is not None and compression_ratio > cr_limit) or low_logprob
        if ns_limit is not None and no_speech > ns_limit and low_logprob:
            needs_fallback = False  # silence, as generate_with_fallback decides
        if needs_fallback and len(temperatures) > 1:
            logger.debug("window fails the thresholds (cr %.2f, logprob %.2f): decoding it alone",
                         compression_ratio, avg_logprob)  # fmt: skip
            window.result = engine.transcribe(  # the long-form loop with its temperature fallback, a full window
                window.audio, dataclasses.replace(window.options, vad_filter=False, draft=False, short_window=False)
            )
            continue
        if ns_limit is not None and no_speech > ns_limit and not (lp_limit is not None and avg_logprob > lp_limit):
            window.result = Transcript("", [], window.language, window.probability, window.audio.size / SAMPLE_RATE)
            continue
        frames = window.frames
        window.subsegments, window.seek, window.single_ending = model._split_segments_by_timestamps(
            tokenizer=window.tokenizer,
            tokens=tokens,
            time_offset=0.0,
            segment_size=frames,
            segment_duration=frames * model.feature_extractor.time_per_frame,
            seek=0,
        )
        for sub in window.subsegments:
            sub.update(avg_logprob=avg_logprob, compression_ratio=compression_ratio,
                       no_speech_prob=no_speech, temperature=temperature)  # fmt: skip


def _add_words(engine: FasterWhisperEngine, windows: list[_Window], encoder_output: Any) -> None:
    """Word times: one ``align`` per (language, task) (its SOT sequence), post-processed per window."""
    from faster_whisper.transcribe import WhisperModel
    from faster_whisper.utils import get_end

    model = engine.model
    groups: dict[int, list[int]] = {}
    for i, window in enumerate(windows):
        if window.result is None and window.options.word_timestamps and window.subsegments:
            groups.setdefault(id(window.tokenizer), []).append(i)
    for indices in groups.values():
        tokenizer = windows[indices[0]].tokenizer
        text_tokens = [
            [t for sub in windows[i].subsegments for t in sub["tokens"] if t < tokenizer.eot] for i in indices
        ]
        alignments = model.find_alignment(
            tokenizer, text_tokens, _take(encoder_output, indices, len(windows)), [windows[i].frames for i in indices]
        )
        for i, alignment in zip(indices, alignments, strict=True):
            window = windows[i]
            WhisperModel.add_word_timestamps(
                _Prealigned(model.frames_per_second, alignment),
                [window.subsegments],
                tokenizer,
                None,
                window.frames,
                window.kwargs.get("prepend_punctuations", "\"'“¿([{-"),
                window.kwargs.get("append_punctuations", "\"'.。,，!！?？:：”)]}、"),
                0.0,
            )
            if not window.single_ending:  # faster-whisper resumes after the last word
                last_word_end = get_end(window.subsegments)
                if last_word_end is not None and last_word_end > 0:
                    window.seek = round(last_word_end * model.frames_per_second)


def _finish(engine: FasterWhisperEngine, window: _Window) -> Transcript:
    """Segments like ``engine.transcribe`` builds them; the undecoded remainder of the window decoded alone."""
    from faster_whisper.transcribe import Segment as RawSegment
    from faster_whisper.transcribe import Word as RawWord

    duration = window.audio.size / SAMPLE_RATE
    segments: list[Segment] = []
    guard = LoopGuard()
    last_start = 0.0

    def add(raw: Any) -> None:
        nonlocal last_start
        if guard.drops(raw.text, raw.compression_ratio):
            logger.info("dropped a repetition loop at %.1f s: %.80r", raw.start, raw.text)
            return
        segment = _convert(raw, len(segments), duration, last_start)
        last_start = segment.start
        segments.append(segment)

    for sub in window.subsegments:
        text = window.tokenizer.decode(sub["tokens"])
        if sub["start"] == sub["end"] or not text.strip():
            continue
        words = [RawWord(**w) for w in sub.get("words", [])] if window.options.word_timestamps else None
        add(RawSegment(id=len(segments) + 1, seek=0, start=sub["start"], end=sub["end"], text=text,
                       tokens=sub["tokens"], avg_logprob=sub["avg_logprob"], compression_ratio=sub["compression_ratio"],
                       no_speech_prob=sub["no_speech_prob"], words=words, temperature=sub["temperature"]))  # fmt: skip

    start = window.seek * engine.model.feature_extractor.hop_length
    # A draft stops where its decode stopped: the next partial pass decodes the rest anyway.
    if window.seek < window.frames and start < window.audio.size and not window.options.draft:
        offset = start / SAMPLE_RATE
        context = " ".join(p for p in (window.options.prompt, join_text([s.text for s in segments])) if p)
        rest = engine.transcribe(
            window.audio[start:],
            dataclasses.replace(
                window.options,
                language=window.language,
                prompt=context or None,
                vad_filter=False,
                draft=False,
                # a short window's rest is a shorter short window; a rest that is the whole clip again (nothing
                # decoded) takes the long-form loop, so this never repeats itself
                short_window=window.options.short_window and start > 0,
            ),
        )
        logger.debug("window continued at %.2f s: %d more segments", offset, len(rest.segments))
        for s in rest.segments:
            words = [dataclasses.replace(w, start=w.start + offset, end=w.end + offset) for w in s.words]
            shifted = dataclasses.replace(s, start=s.start + offset, end=s.end + offset, words=words)
            add(dataclasses.replace(shifted, seek=s.seek + window.seek))

    return Transcript(
        text=join_text([s.text for s in segments]),
        segments=segments,
        language=window.language,
        language_probability=window.probability,
        duration=duration,
    )
