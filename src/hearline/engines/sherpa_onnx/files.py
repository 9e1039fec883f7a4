"""Which sherpa-onnx model type a directory holds and which file plays each role.

The type comes from ``spec.options["type"]`` (seed 001's names ``sense_voice``, ``whisper``,
``paraformer``, ``transducer``, plus ``online_transducer`` for streaming models) or is inferred from
the files and the ONNX metadata sherpa-onnx itself keys on; the metadata is checked here so a model
lacking a required key fails with a clear error instead of sherpa-onnx exiting the process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hearline.engines.base import EngineError, ModelFilesMissing
from hearline.engines.sherpa_onnx.metadata import onnx_metadata

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
