"""sherpa-onnx models: offline SenseVoice / Whisper / Paraformer / transducer, and streaming transducers.

Which factory to call comes from ``spec.options["type"]`` (seed 001's names ``sense_voice``,
``whisper``, ``paraformer``, ``transducer``, plus ``online_transducer`` for streaming models) or is
inferred from the files in ``spec.path`` and the ONNX metadata sherpa-onnx itself keys on.  Metadata
is read by walking the ONNX file's top-level protobuf fields with seeks, so inference and validation
cost a few reads even for a 1 GB model, and a model missing a key sherpa-onnx requires becomes a clear
error here instead of sherpa-onnx exiting the whole process.

SenseVoice and Whisper bind the language (and Whisper the task) when the recognizer is built, so the
engine keeps a small LRU of recognizers keyed by them.  Streaming transducers give true incremental
partials through :meth:`SherpaOnnxEngine.open_stream`.

Timing.  SenseVoice and transducers always give token times, hence words.  Paraformer and Whisper give
them only for exports that carry the extra outputs sherpa-onnx reads, so the engine looks at the graph:
- Paraformer: ``us_alphas``/``us_cif_peak`` (FunASR's timestamp exports) -> a start per token (character
  or word piece), hence words; without them each decoded piece (<= 20 s) is one segment with no words.
- Whisper: a decoder with ``cross_attention_weights`` (sherpa-onnx's ``export-onnx-with-attention.py``)
  -> ``enable_token_timestamps`` (DTW over cross-attention), hence words; otherwise
  ``enable_segment_timestamps`` (Whisper's own timestamp tokens, option ``segment_timestamps: false``
  turns it off) -> segment times inside each piece but no words.  sherpa-onnx releases without these
  ``from_whisper`` options give one segment per piece.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hearline.engines.base import (
    SAMPLE_RATE,
    Capabilities,
    Engine,
    EngineError,
    EngineStream,
    ModelFilesMissing,
    Segment,
    SegmentCallback,
    TranscribeOptions,
    Transcript,
    UnsupportedOption,
    Word,
    join_text,
)
from hearline.engines.segments import CJK, group_words, split_long

logger = logging.getLogger(__name__)

SENSE_VOICE = "sense_voice"
WHISPER = "whisper"
PARAFORMER = "paraformer"
TRANSDUCER = "transducer"
ONLINE_TRANSDUCER = "online_transducer"
TYPES = (SENSE_VOICE, WHISPER, PARAFORMER, TRANSDUCER, ONLINE_TRANSDUCER)
_TYPE_ALIASES = {
    "sensevoice": SENSE_VOICE,
    "sense-voice": SENSE_VOICE,
    "offline_transducer": TRANSDUCER,
    "online-transducer": ONLINE_TRANSDUCER,
    "streaming_transducer": ONLINE_TRANSDUCER,
    "streaming-transducer": ONLINE_TRANSDUCER,
    "streaming_zipformer": ONLINE_TRANSDUCER,
    "zipformer2": ONLINE_TRANSDUCER,
}

# The files each type needs (role -> what the role is called in models.yaml ``files``).
ROLES: dict[str, tuple[str, ...]] = {
    SENSE_VOICE: ("model", "tokens"),
    WHISPER: ("encoder", "decoder", "tokens"),
    PARAFORMER: ("paraformer", "tokens"),
    TRANSDUCER: ("encoder", "decoder", "joiner", "tokens"),
    ONLINE_TRANSDUCER: ("encoder", "decoder", "joiner", "tokens"),
}

SENSE_VOICE_LANGUAGES = frozenset({"zh", "en", "ja", "ko", "yue"})
# Offline models are fed at most segments.MAX_PIECE_S (20 s) per call: SenseVoice and Whisper are trained
# on <= 30 s and attention cost grows with the square of the length.
STREAM_TAIL_PADDING_S = 0.5  # silence fed before input_finished() so the last chunk is decoded
RECOGNIZER_CACHE = 3  # recognizers per engine for models that bind language/task at load

# Metadata keys whose absence makes sherpa-onnx exit the process (SHERPA_ONNX_READ_META_DATA), per
# (type, file role); see sherpa-onnx/csrc/offline-*-model.cc and online-*-transducer-model.cc.
_SENSE_VOICE_LANG_KEYS = tuple(f"lang_{c}" for c in ("auto", "zh", "en", "ja", "ko", "yue"))
_REQUIRED_META: dict[tuple[str, str], tuple[str, ...]] = {
    (SENSE_VOICE, "model"): ("vocab_size", "lfr_window_size", "lfr_window_shift", "normalize_samples"),
    (PARAFORMER, "paraformer"): ("vocab_size", "lfr_window_size", "lfr_window_shift", "neg_mean", "inv_stddev"),
    (WHISPER, "encoder"): (
        "n_mels", "n_text_layer", "n_text_ctx", "n_text_state", "n_vocab", "sot", "eot", "blank_id",
        "translate", "transcribe", "is_multilingual", "no_timestamps", "no_speech", "sot_sequence",
    ),
    (TRANSDUCER, "decoder"): ("vocab_size", "context_size"),
    (ONLINE_TRANSDUCER, "encoder"): ("model_type",),
    (ONLINE_TRANSDUCER, "decoder"): ("vocab_size", "context_size"),
}  # fmt: skip
# Extra keys that depend on what the metadata itself says.
_SENSE_VOICE_FULL = ("with_itn", "without_itn", *_SENSE_VOICE_LANG_KEYS, "neg_mean", "inv_stddev")
_ZIPFORMER2_STREAMING = (
    "encoder_dims", "query_head_dims", "value_head_dims", "num_heads", "num_encoder_layers",
    "cnn_module_kernels", "left_context_len", "T", "decode_chunk_len",
)  # fmt: skip


# --------------------------------------------------------------------------------------- ONNX metadata


def _read_varint(fh) -> int | None:  # type: ignore[no-untyped-def]
    shift = 0
    value = 0
    while True:
        byte = fh.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("bad varint")


def _parse_entry(data: bytes) -> tuple[str, str]:
    """A StringStringEntryProto: field 1 key, field 2 value."""
    key = value = ""
    pos = 0
    while pos < len(data):
        tag, pos = _varint_at(data, pos)
        length, pos = _varint_at(data, pos)
        text = data[pos : pos + length].decode("utf-8", "replace")
        pos += length
        if tag >> 3 == 1:
            key = text
        elif tag >> 3 == 2:
            value = text
    return key, value


def _varint_at(data: bytes, pos: int) -> tuple[int, int]:
    shift = 0
    value = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def onnx_metadata(path: Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file (ModelProto field 14), skipping the graph with seeks."""
    meta: dict[str, str] = {}
    try:
        with open(path, "rb") as fh:
            for number, length in _length_fields(fh):
                if number == 14:
                    key, value = _parse_entry(fh.read(length))
                    meta[key] = value
    except (OSError, ValueError, IndexError) as exc:
        raise EngineError(f"{path} is not a readable ONNX model: {exc}") from exc
    return meta


def onnx_output_names(path: Path) -> list[str]:
    """Names of the graph's outputs (ModelProto.graph = 7, GraphProto.output = 12, ValueInfoProto.name = 1).

    sherpa-onnx switches optional timing on by the outputs a graph has; reading them with seeks past the
    weights costs a few reads even for a large model, like :func:`onnx_metadata`.
    """
    names: list[str] = []
    try:
        with open(path, "rb") as fh:
            for number, length in _length_fields(fh):
                if number == 7:  # the graph; fh is now at its value
                    graph_end = fh.tell() + length
                    break
            else:
                return names
            for number, length in _length_fields(fh, end=graph_end):
                if number == 12:
                    names.append(_string_field(fh.read(length), 1))
    except (OSError, ValueError, IndexError) as exc:
        raise EngineError(f"{path} is not a readable ONNX model: {exc}") from exc
    return names


def _length_fields(fh, end: int | None = None) -> Iterator[tuple[int, int]]:  # type: ignore[no-untyped-def]
    """``(field number, length)`` of each length-delimited field of a message read from ``fh`` (up to ``end``).

    At each yield ``fh`` is at the field's value; a value the caller does not read is seeked past, so a
    model's weights are never read.  Fields of other wire types are skipped.
    """
    while end is None or fh.tell() < end:
        tag = _read_varint(fh)
        if tag is None:
            return
        length = _skip(fh, tag & 7)
        if length is None:
            continue
        start = fh.tell()
        yield tag >> 3, length
        if fh.tell() == start:
            fh.seek(length, os.SEEK_CUR)


def _skip(fh, wire: int) -> int | None:  # type: ignore[no-untyped-def]
    """Seek past one field value; return the length of a length-delimited one (read nothing)."""
    if wire == 0:
        _read_varint(fh)
    elif wire == 1:
        fh.seek(8, os.SEEK_CUR)
    elif wire == 5:
        fh.seek(4, os.SEEK_CUR)
    elif wire == 2:
        return _read_varint(fh)
    else:
        raise ValueError(f"unexpected wire type {wire}")
    return None


def _string_field(data: bytes, number: int) -> str:
    """The first string field ``number`` of a small message held in memory."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint_at(data, pos)
        wire = tag & 7
        if wire == 0:
            _, pos = _varint_at(data, pos)
            continue
        if wire in (1, 5):
            pos += 8 if wire == 1 else 4
            continue
        length, pos = _varint_at(data, pos)
        if tag >> 3 == number:
            return data[pos : pos + length].decode("utf-8", "replace")
        pos += length
    return ""


def has_output(path: Path, name: str, min_outputs: int) -> bool:
    """Whether a graph has the output sherpa-onnx looks for (by name, or by the output count it checks)."""
    names = onnx_output_names(path)
    return name in names or len(names) >= min_outputs


# ----------------------------------------------------------------------------------------- model files


@dataclass(frozen=True)
class SherpaFiles:
    type: str
    files: dict[str, Path]  # role -> path


def _options(spec: Any) -> dict[str, Any]:
    """models.yaml keeps type/files at the top and model options under ``options``; accept both."""
    merged: dict[str, Any] = {}
    raw = dict(spec.options or {})
    nested = raw.pop("options", None)
    merged.update(raw)
    if isinstance(nested, dict):
        merged.update(nested)
    return merged


def _candidates(directory: Path, role: str) -> list[Path]:
    """Files that could play ``role`` in a sherpa-onnx release directory, best first (int8 first)."""
    if role == "tokens":
        # Whisper exports name it "<size>-tokens.txt" (e.g. tiny.en-tokens.txt)
        exact = directory / "tokens.txt"
        others = sorted(p for p in directory.glob("*tokens.txt") if p.is_file() and p != exact)
        return ([exact] if exact.is_file() else []) + others
    if role in ("model", "paraformer"):
        names = [directory / n for n in ("model.int8.onnx", "model.onnx", "paraformer.int8.onnx", "paraformer.onnx")]
        return [p for p in names if p.is_file()]
    found = [p for p in directory.glob(f"*{role}*.onnx") if p.is_file()]
    return sorted(found, key=lambda p: (".int8." not in p.name, len(p.name), p.name))


def _default_name(role: str) -> str:
    return {"tokens": "tokens.txt", "model": "model.int8.onnx", "paraformer": "model.int8.onnx"}.get(
        role, f"{role}.onnx"
    )


def locate_files(spec: Any) -> SherpaFiles:
    """Decide the model type and the file for each role; raise ModelFilesMissing naming what is absent."""
    opts = _options(spec)
    directory = Path(spec.path) if spec.path is not None else None
    if directory is None:
        raise ModelFilesMissing(f"sherpa-onnx model {spec.name!r} has no directory on disk")
    if not directory.is_dir():
        raise ModelFilesMissing(f"sherpa-onnx model {spec.name!r}: directory {directory} does not exist")
    explicit: dict[str, str] = {str(k): str(v) for k, v in (opts.get("files") or {}).items()}
    model_type = _normal_type(opts.get("type"))
    if model_type is None:
        model_type = _infer_type(directory, explicit)
    if model_type == PARAFORMER and "model" in explicit and "paraformer" not in explicit:
        explicit["paraformer"] = explicit["model"]  # asr2clip users may call the file "model"
    files: dict[str, Path] = {}
    missing: list[str] = []
    for role in ROLES[model_type]:
        if role in explicit:
            path = Path(explicit[role]).expanduser()
            path = path if path.is_absolute() else directory / path
            if path.is_file():
                files[role] = path
            else:
                missing.append(f"{role}: {path}")
            continue
        found = _candidates(directory, role)
        if found:
            files[role] = found[0]
        else:
            missing.append(f"{role}: {directory / _default_name(role)}")
    if missing:
        raise ModelFilesMissing(f"sherpa-onnx {model_type} model {spec.name!r} is missing files: " + "; ".join(missing))
    if model_type == TRANSDUCER and (opts.get("streaming") or _is_streaming(files["encoder"])):
        # seed 001 says "transducer" for any transducer; a streaming encoder needs the online recognizer.
        model_type = ONLINE_TRANSDUCER
    _check_metadata(model_type, files)
    return SherpaFiles(model_type, files)


def _normal_type(value: Any) -> str | None:
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    text = _TYPE_ALIASES.get(text, text)
    if text not in TYPES:
        raise EngineError(f"unknown sherpa-onnx model type {value!r}; expected one of {', '.join(TYPES)}")
    return text


def _infer_type(directory: Path, explicit: dict[str, str]) -> str:
    roles = set(explicit)
    if "paraformer" in roles:
        return PARAFORMER
    if {"encoder", "decoder", "joiner"} <= roles or _candidates(directory, "joiner"):
        encoder = explicit.get("encoder")
        encoder_path = directory / encoder if encoder else next(iter(_candidates(directory, "encoder")), None)
        if encoder_path is not None and encoder_path.is_file() and _is_streaming(encoder_path):
            return ONLINE_TRANSDUCER
        return TRANSDUCER
    if {"encoder", "decoder"} <= roles or (_candidates(directory, "encoder") and _candidates(directory, "decoder")):
        return WHISPER
    model = explicit.get("model")
    model_path = directory / model if model else next(iter(_candidates(directory, "model")), None)
    if model_path is not None and model_path.is_file():
        meta = onnx_metadata(model_path)
        if "with_itn" in meta or "lang_auto" in meta or "sense" in meta.get("model_type", "").lower():
            return SENSE_VOICE
        if "paraformer" in meta.get("model_type", "").lower() or "lfr_window_size" in meta:
            return PARAFORMER
        return SENSE_VOICE
    raise ModelFilesMissing(
        f"no sherpa-onnx model recognised in {directory}: expected tokens.txt with model.int8.onnx or "
        "model.onnx (sense_voice, paraformer), encoder/decoder/joiner *.onnx (transducer) or "
        "encoder/decoder *.onnx (whisper)"
    )


def _is_streaming(encoder: Path) -> bool:
    """Streaming transducer encoders carry the chunk geometry (T, decode_chunk_len) in their metadata."""
    meta = onnx_metadata(encoder)
    return "decode_chunk_len" in meta or "T" in meta


def _check_metadata(model_type: str, files: dict[str, Path]) -> None:
    for (kind, role), required in _REQUIRED_META.items():
        if kind != model_type:
            continue
        meta = onnx_metadata(files[role])
        keys = list(required)
        if model_type == SENSE_VOICE and "Nano" not in meta.get("comment", ""):
            keys += _SENSE_VOICE_FULL  # FunASR Nano exports do without these
        if model_type == WHISPER and meta.get("is_multilingual", "0").strip() not in ("0", ""):
            keys += ["all_language_tokens", "all_language_codes"]
        if model_type == ONLINE_TRANSDUCER and role == "encoder" and meta.get("model_type") == "zipformer2":
            keys += _ZIPFORMER2_STREAMING
        absent = [key for key in keys if key not in meta]
        if absent:
            raise EngineError(
                f"{files[role]} lacks the ONNX metadata sherpa-onnx needs for a {model_type} model: "
                f"{', '.join(absent)} (was it exported with sherpa-onnx's scripts?)"
            )


# ------------------------------------------------------------------------------------------- the engine


def _lang_code(value: str | None) -> str | None:
    """``<|en|>`` / ``en`` -> ``en``; empty -> None."""
    if not value:
        return None
    code = value.strip().strip("<|>").lower()
    return None if code in ("", "auto") else code


class SherpaOnnxEngine(Engine):
    kind = "sherpa-onnx"

    def __init__(self, name: str, located: SherpaFiles, options: dict[str, Any], num_threads: int) -> None:
        super().__init__(name)
        import sherpa_onnx

        self._so = sherpa_onnx
        self.type = located.type
        self.files = located.files
        self.options = options
        self.num_threads = max(1, num_threads)
        self.use_itn = bool(options.get("use_itn", True))
        self.default_language = _lang_code(str(options.get("language") or "")) or None
        self.decoding_method = str(options.get("decoding_method", "greedy_search"))
        # Other types only have greedy search, and sherpa-onnx exits the process when asked for more.
        allowed = ("greedy_search", "modified_beam_search") if self.type in (TRANSDUCER, ONLINE_TRANSDUCER) else ()
        if self.decoding_method != "greedy_search" and self.decoding_method not in allowed:
            raise EngineError(f"decoding_method {self.decoding_method!r} is not available for {self.type} models")
        self._whisper_languages: frozenset[str] | None = None
        self._english_only = False
        if self.type == WHISPER:
            # sherpa-onnx exits the process on a language the model lacks, so know them up front.
            meta = onnx_metadata(self.files["encoder"])
            if "is_multilingual" in meta:
                self._english_only = meta["is_multilingual"].strip() in ("0", "false", "False")
            else:
                self._english_only = ".en" in self.files["encoder"].name
            codes = [c.strip().lower() for c in meta.get("all_language_codes", "").split(",") if c.strip()]
            self._whisper_languages = frozenset(codes) or None
        self._whisper_timing = self._whisper_timing_kwargs() if self.type == WHISPER else {}
        # Paraformer exports with timestamps have 4 outputs: logits, token_num, us_alphas, us_cif_peak.
        self._paraformer_times = self.type == PARAFORMER and has_output(self.files["paraformer"], "us_cif_peak", 4)
        self._caps = self._capabilities()
        languages = self._caps.languages
        if self.default_language and languages is not None and self.default_language not in languages:
            raise EngineError(
                f"model {name!r} is configured with language {self.default_language!r}, which it does not "
                f"support (supported: {', '.join(sorted(languages))})"
            )
        self._lock = threading.Lock()
        self._recognizers: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._file_bytes = sum(p.stat().st_size for p in self.files.values())
        # Build the default recognizer now so a broken model fails at load time, not on first use.
        self._recognizer(self.default_language, "transcribe")

    # -- description --

    def _capabilities(self) -> Capabilities:
        configured = self.options.get("languages")
        languages: frozenset[str] | None = frozenset(str(x).lower() for x in configured) if configured else None
        if self.type == SENSE_VOICE:
            return Capabilities(
                languages=languages or SENSE_VOICE_LANGUAGES,
                translate=False,
                native_streaming=False,
                word_timestamps=True,
                language_detection=True,
            )
        if self.type == WHISPER:
            return Capabilities(
                languages=frozenset({"en"}) if self._english_only else (languages or self._whisper_languages),
                translate=not self._english_only,
                native_streaming=False,
                word_timestamps=bool(self._whisper_timing.get("enable_token_timestamps")),
                language_detection=not self._english_only,
            )
        if self.type == PARAFORMER:
            return Capabilities(
                languages=languages or frozenset({"zh", "en"}),
                word_timestamps=self._paraformer_times,
            )
        return Capabilities(
            languages=languages,
            translate=False,
            native_streaming=self.type == ONLINE_TRANSDUCER,
            word_timestamps=True,
            language_detection=False,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def memory_bytes(self) -> int:
        with self._lock:
            count = max(1, len(self._recognizers))
        # ONNX Runtime keeps roughly the weights plus arena buffers per session.
        return int(self._file_bytes * 1.5 * count) + 64 * 1024 * 1024

    # -- recognizers --

    def _whisper_timing_kwargs(self) -> dict[str, bool]:
        """``from_whisper`` keywords for the finest timing this export and sherpa-onnx version give.

        Token times need cross-attention outputs (without them sherpa-onnx only warns on every decode);
        segment times come from Whisper's timestamp tokens, which any export has.
        """
        supported = inspect.signature(self._so.OfflineRecognizer.from_whisper).parameters
        if "enable_token_timestamps" in supported and has_output(self.files["decoder"], "cross_attention_weights", 4):
            return {"enable_token_timestamps": True}
        if "enable_segment_timestamps" in supported and bool(self.options.get("segment_timestamps", True)):
            return {"enable_segment_timestamps": True}
        logger.info("sherpa-onnx %s: Whisper results carry no timestamps; one segment per piece", self.name)
        return {}

    def _binds_language(self) -> bool:
        return self.type in (SENSE_VOICE, WHISPER)

    def _recognizer(self, language: str | None, task: str) -> Any:
        """The recognizer for (language, task), building it (LRU-cached) for types that bind them."""
        key = (language or "", task) if self._binds_language() else ("", "transcribe")
        with self._lock:
            recognizer = self._recognizers.get(key)
            if recognizer is not None:
                self._recognizers.move_to_end(key)
                return recognizer
            recognizer = self._build(*key)
            self._recognizers[key] = recognizer
            while len(self._recognizers) > RECOGNIZER_CACHE:
                evicted, _ = self._recognizers.popitem(last=False)
                logger.info("sherpa-onnx %s: dropped recognizer for %s", self.name, evicted)
            return recognizer

    def _build(self, language: str, task: str) -> Any:
        so = self._so
        f = {role: str(path) for role, path in self.files.items()}
        threads = self.num_threads
        logger.info(
            "sherpa-onnx %s: building %s recognizer (language=%r task=%s)", self.name, self.type, language, task
        )
        try:
            if self.type == SENSE_VOICE:
                return so.OfflineRecognizer.from_sense_voice(
                    model=f["model"],
                    tokens=f["tokens"],
                    num_threads=threads,
                    language=language,
                    use_itn=self.use_itn,
                )
            if self.type == WHISPER:
                return so.OfflineRecognizer.from_whisper(
                    encoder=f["encoder"],
                    decoder=f["decoder"],
                    tokens=f["tokens"],
                    num_threads=threads,
                    language=language or ("en" if self._english_only else ""),
                    task=task,
                    tail_paddings=int(self.options.get("tail_paddings", -1)),
                    **self._whisper_timing,
                )
            if self.type == PARAFORMER:
                return so.OfflineRecognizer.from_paraformer(
                    paraformer=f["paraformer"], tokens=f["tokens"], num_threads=threads
                )
            if self.type == TRANSDUCER:
                return so.OfflineRecognizer.from_transducer(
                    encoder=f["encoder"],
                    decoder=f["decoder"],
                    joiner=f["joiner"],
                    tokens=f["tokens"],
                    num_threads=threads,
                    decoding_method=self.decoding_method,
                    model_type=str(self.options.get("model_type", "transducer")),
                    modeling_unit=str(self.options.get("modeling_unit", "cjkchar")),
                )
            return so.OnlineRecognizer.from_transducer(
                tokens=f["tokens"],
                encoder=f["encoder"],
                decoder=f["decoder"],
                joiner=f["joiner"],
                num_threads=threads,
                decoding_method=self.decoding_method,
                enable_endpoint_detection=False,
            )
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"sherpa-onnx could not load {self.type} model {self.name!r}: {exc}") from exc

    # -- offline --

    def check_options(self, options: TranscribeOptions) -> None:
        super().check_options(options)
        if options.task == "translate" and self._english_only:
            raise UnsupportedOption(f"model {self.name!r} is English-only and cannot translate")

    def _language_for(self, options: TranscribeOptions) -> str | None:
        if options.language:
            return options.language.split("-")[0].lower()
        return self.default_language

    def transcribe(
        self,
        audio: np.ndarray,
        options: TranscribeOptions,
        on_segment: SegmentCallback | None = None,
    ) -> Transcript:
        self.check_options(options)
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        duration = audio.size / SAMPLE_RATE
        language = self._language_for(options)
        recognizer = self._recognizer(language, options.task)
        segments: list[Segment] = []
        detected: str | None = None
        for offset, piece in split_long(audio):
            start_s = offset / SAMPLE_RATE
            result = self._decode_piece(recognizer, piece)
            detected = detected or _lang_code(getattr(result, "lang", "") or "")
            found = result_segments(
                result, start_s, piece.size / SAMPLE_RATE, first_id=len(segments), paraformer=self.type == PARAFORMER
            )
            for segment in found:
                segments.append(segment)
                if on_segment is not None:
                    on_segment(segment)
        return Transcript(
            text=join_text([s.text for s in segments]),
            segments=segments,
            language=language or detected,
            language_probability=None,
            duration=duration,
        )

    def _decode_piece(self, recognizer: Any, piece: np.ndarray) -> Any:
        if self.type == ONLINE_TRANSDUCER:
            stream = recognizer.create_stream()
            stream.accept_waveform(SAMPLE_RATE, piece)
            stream.accept_waveform(SAMPLE_RATE, np.zeros(int(STREAM_TAIL_PADDING_S * SAMPLE_RATE), np.float32))
            stream.input_finished()
            while recognizer.is_ready(stream):
                recognizer.decode_stream(stream)
            return _OnlineResult.of(recognizer, stream)
        stream = recognizer.create_stream()
        stream.accept_waveform(SAMPLE_RATE, piece)
        recognizer.decode_stream(stream)
        return stream.result

    # -- streaming --

    def open_stream(self, options: TranscribeOptions) -> EngineStream:
        if self.type != ONLINE_TRANSDUCER:
            return super().open_stream(options)
        self.check_options(options)
        return SherpaOnlineStream(self, self._recognizer(None, "transcribe"))

    def close(self) -> None:
        with self._lock:
            self._recognizers.clear()


@dataclass
class _OnlineResult:
    """The fields of an online result that :func:`result_segments` reads, like OfflineRecognitionResult."""

    text: str
    tokens: list[str]
    timestamps: list[float]
    lang: str = ""

    @classmethod
    def of(cls, recognizer: Any, stream: Any) -> _OnlineResult:
        text = recognizer.get_result(stream)
        tokens = list(recognizer.tokens(stream)) if hasattr(recognizer, "tokens") else []
        timestamps = list(recognizer.timestamps(stream)) if hasattr(recognizer, "timestamps") else []
        return cls(text=str(text), tokens=[str(t) for t in tokens], timestamps=[float(t) for t in timestamps])


class SherpaOnlineStream(EngineStream):
    """One streaming-transducer utterance at a time; ``finish`` starts a fresh stream for the next one."""

    def __init__(self, engine: SherpaOnnxEngine, recognizer: Any) -> None:
        self._engine = engine
        self._recognizer = recognizer
        self._stream = recognizer.create_stream()
        self._samples = 0

    def accept(self, audio: np.ndarray) -> None:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size == 0:
            return
        self._stream.accept_waveform(SAMPLE_RATE, audio)
        self._samples += audio.size
        while self._recognizer.is_ready(self._stream):
            self._recognizer.decode_stream(self._stream)

    def partial(self) -> str:
        return _clean_text(str(self._recognizer.get_result(self._stream)))

    def finish(self) -> Transcript:
        duration = self._samples / SAMPLE_RATE
        stream = self._stream
        if self._samples:
            tail = np.zeros(int(STREAM_TAIL_PADDING_S * SAMPLE_RATE), dtype=np.float32)
            stream.accept_waveform(SAMPLE_RATE, tail)
        stream.input_finished()
        while self._recognizer.is_ready(stream):
            self._recognizer.decode_stream(stream)
        result = _OnlineResult.of(self._recognizer, stream)
        self._stream = self._recognizer.create_stream()
        self._samples = 0
        segments = result_segments(result, 0.0, duration)
        return Transcript(join_text([s.text for s in segments]), segments, None, None, duration)

    def close(self) -> None:
        self._stream = None


# ------------------------------------------------------------------------------------ result conversion


def _clean_text(text: str) -> str:
    return " ".join(text.replace("▁", " ").split()) if not CJK.search(text) else text.replace("▁", " ").strip()


def _token_text(token: str) -> str:
    return token.replace("▁", " ")


def _starts_word(token: str) -> bool:
    return token.startswith((" ", "▁")) or bool(CJK.match(token))


_SPECIAL_TOKENS = ("<s>", "</s>", "<unk>", "<blk>", "<blank>")


def _is_special(token: str) -> bool:
    return token.startswith("<|") or token in _SPECIAL_TOKENS


def tokens_to_words(
    tokens: list[str], times: list[float], end_s: float, durations: list[float] | None = None
) -> list[Word]:
    """Merge BPE pieces into words (a piece starting with a space or ▁ opens one; CJK chars are words).

    A word ends where the next one starts (at most 1 s later) unless the model gives token durations
    (Whisper's DTW times do): then it ends where its last piece does.
    """
    words: list[tuple[str, float, float | None]] = []
    for i, (token, start) in enumerate(zip(tokens, times, strict=False)):
        if _is_special(token):
            continue
        text = _token_text(token)
        piece_end = start + durations[i] if durations is not None and i < len(durations) else None
        if not words or _starts_word(token) or CJK.match(words[-1][0][-1:] or ""):
            words.append((text.strip(), start, piece_end))
        else:
            words[-1] = (words[-1][0] + text, words[-1][1], piece_end)
    return _timed_words(words, end_s)


def paraformer_words(tokens: list[str], times: list[float], end_s: float) -> list[Word]:
    """Paraformer pieces as words: every token is one (a CJK character or an English word) except that
    a piece ending in ``@@`` continues into the next (``hel@@ lo`` -> ``hello``)."""
    words: list[tuple[str, float, float | None]] = []
    joining = False
    for token, start in zip(tokens, times, strict=False):
        if _is_special(token):
            continue
        text = token[:-2] if token.endswith("@@") else token
        if joining and words:
            words[-1] = (words[-1][0] + text, words[-1][1], None)
        else:
            words.append((text, start, None))
        joining = token.endswith("@@")
    return _timed_words(words, end_s)


def _timed_words(words: list[tuple[str, float, float | None]], end_s: float) -> list[Word]:
    result: list[Word] = []
    for i, (text, start, own_end) in enumerate(words):
        if not text:
            continue
        nxt = words[i + 1][1] if i + 1 < len(words) else end_s
        end = min(own_end, end_s) if own_end is not None else min(nxt, start + 1.0, end_s)
        result.append(Word(word=text, start=round(start, 3), end=round(max(start, end), 3)))
    return result


def result_words(result: Any, length_s: float, paraformer: bool = False) -> list[Word]:
    """Words (times relative to the piece) from a result's token times; [] when it has none."""
    tokens = [str(t) for t in (getattr(result, "tokens", []) or [])]
    times = [float(t) for t in (getattr(result, "timestamps", []) or [])]
    if not tokens or len(times) != len(tokens):
        return []
    times = [min(max(0.0, t), length_s) for t in times]
    # Timestamps are token starts and should not decrease; enforce it so consumers can rely on it.
    times = [float(t) for t in np.maximum.accumulate(times)]
    if paraformer:
        return paraformer_words(tokens, times, length_s)
    durations = [float(d) for d in (getattr(result, "durations", []) or [])]
    return tokens_to_words(tokens, times, length_s, durations if len(durations) == len(tokens) else None)


def result_segments(
    result: Any, offset_s: float, length_s: float, first_id: int = 0, paraformer: bool = False
) -> list[Segment]:
    """Segments (absolute times) from a sherpa-onnx result of one piece starting at ``offset_s``.

    Finest timing first: token times become words grouped at pauses; else the model's own segments
    (Whisper timestamp tokens) without words; else the piece's text spans the whole piece.
    """
    words = result_words(result, length_s, paraformer)
    if words:
        shifted = [Word(w.word, round(offset_s + w.start, 3), round(offset_s + w.end, 3)) for w in words]
        return group_words(shifted, first_id)
    texts = list(getattr(result, "segment_texts", []) or [])
    if texts:
        return _model_segments(result, texts, offset_s, length_s, first_id)
    text = _clean_text(str(getattr(result, "text", "") or ""))
    if not text:
        return []
    return [Segment(id=first_id, start=round(offset_s, 3), end=round(offset_s + length_s, 3), text=" " + text)]


def _model_segments(result: Any, texts: list[str], offset_s: float, length_s: float, first_id: int) -> list[Segment]:
    """The model's segments; one without a duration (the last, unterminated one) runs to the next start."""
    starts = [min(length_s, max(0.0, float(t))) for t in (getattr(result, "segment_timestamps", []) or [])]
    lengths = [float(d) for d in (getattr(result, "segment_durations", []) or [])]
    segments: list[Segment] = []
    floor = 0.0  # keep segment starts ordered even when a model is confused
    for i, text in enumerate(texts):
        if not text.strip():
            continue
        start = floor = max(starts[i] if i < len(starts) else 0.0, floor)
        nxt = starts[i + 1] if i + 1 < len(starts) else length_s
        end = start + lengths[i] if i < len(lengths) and lengths[i] > 0 else max(nxt, start)
        segments.append(
            Segment(
                id=first_id + len(segments),
                start=round(offset_s + start, 3),
                end=round(offset_s + max(start, min(end, length_s)), 3),
                text=" " + _clean_text(text),
            )
        )
    return segments


# ------------------------------------------------------------------------------------------ utilities


def _num_threads(spec: Any, settings: Any, opts: dict[str, Any]) -> int:
    if getattr(settings, "threads", 0):
        return int(settings.threads)
    if opts.get("num_threads"):
        return int(opts["num_threads"])
    return max(1, min(4, os.cpu_count() or 1))


def load(spec, settings):  # type: ignore[no-untyped-def]
    """Entry point used by :func:`hearline.models.resolve.load_engine`."""
    opts = _options(spec)
    located = locate_files(spec)
    return SherpaOnnxEngine(spec.name, located, opts, _num_threads(spec, settings, opts))
