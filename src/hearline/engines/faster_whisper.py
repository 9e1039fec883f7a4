"""Whisper through faster-whisper (CTranslate2): the accurate, multilingual engine.

A model is named by size (``tiny`` .. ``large-v3-turbo``, ``*.en``, ``distil-*``), by hub repository
(``Systran/faster-whisper-small``) or given as a local directory.  Names are looked up, in order, in
``settings.model_dir`` (``faster-whisper-<name>/``), in the Hugging Face cache, and only then fetched
from the hub, and only when neither ``settings.offline`` nor ``HF_HUB_OFFLINE`` forbids it, so an
offline server never blocks on the network and says exactly which files it is missing instead.

One ``WhisperModel`` serves every caller: CTranslate2 runs ``num_workers`` replicas over shared weights,
so up to that many ``transcribe`` calls (one per pool worker thread) decode in parallel.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hearline.config import Settings
    from hearline.models.resolve import ModelSpec

from hearline.engines.base import (
    SAMPLE_RATE,
    Capabilities,
    Engine,
    EngineError,
    ModelFilesMissing,
    Segment,
    SegmentCallback,
    TranscribeOptions,
    Transcript,
    UnsupportedOption,
    Word,
    join_text,
)
from hearline.engines.guards import LoopGuard

logger = logging.getLogger(__name__)

#: Hub repositories of the published CTranslate2 conversions, by short name.
HUB_REPOS: dict[str, str] = {
    "tiny.en": "Systran/faster-whisper-tiny.en",
    "tiny": "Systran/faster-whisper-tiny",
    "base.en": "Systran/faster-whisper-base.en",
    "base": "Systran/faster-whisper-base",
    "small.en": "Systran/faster-whisper-small.en",
    "small": "Systran/faster-whisper-small",
    "medium.en": "Systran/faster-whisper-medium.en",
    "medium": "Systran/faster-whisper-medium",
    "large-v1": "Systran/faster-whisper-large-v1",
    "large-v2": "Systran/faster-whisper-large-v2",
    "large-v3": "Systran/faster-whisper-large-v3",
    "large": "Systran/faster-whisper-large-v3",
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "distil-small.en": "Systran/faster-distil-whisper-small.en",
    "distil-medium.en": "Systran/faster-distil-whisper-medium.en",
    "distil-large-v2": "Systran/faster-distil-whisper-large-v2",
    "distil-large-v3": "Systran/faster-distil-whisper-large-v3",
    "distil-large-v3.5": "distil-whisper/distil-large-v3.5-ct2",
}

#: What a model directory must hold (``vocabulary.*`` is .txt or .json depending on the converter).
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
VOCABULARY_GLOB = "vocabulary.*"
HUB_PATTERNS = ["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"]

#: Per-model transcription defaults may sit next to the weights (``hearline.json``:
#: ``{"transcribe": {...}}``) or come from the registry (``ModelSpec.options["transcribe"]``).
DEFAULTS_FILE = "hearline.json"

#: faster-whisper's temperature fallback schedule, used when the request leaves temperature at 0.
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)

# Resident size relative to model.bin: weights (int8 on CPU shrinks float16 files, so this is generous)
# plus activations, the KV cache and the feature extractor's buffers.
MEMORY_FACTOR = 1.5
PER_WORKER_BYTES = 40 * 1024 * 1024


def short_name(name: str) -> str:
    """``faster-whisper-small`` / ``Systran/faster-whisper-small`` -> ``small``; other names unchanged."""
    base = name.rsplit("/", 1)[-1]
    for prefix in ("faster-whisper-", "faster-distil-whisper-"):
        if base.startswith(prefix):
            rest = base[len(prefix) :]
            return ("distil-" + rest) if prefix == "faster-distil-whisper-" else rest
    return base


def hub_repo(name: str) -> str | None:
    """The hub repository for a model name, or ``None`` when it has none."""
    if "/" in name:
        return name
    return HUB_REPOS.get(short_name(name))


def missing_files(path: Path) -> list[str]:
    """Files a faster-whisper model directory lacks (empty list: complete)."""
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if not any(path.glob(VOCABULARY_GLOB)):
        missing.append(VOCABULARY_GLOB)
    return missing


def model_dir_candidates(name: str, model_dir: Path) -> list[Path]:
    """Where ``hearline models pull NAME`` (or a user) puts a model inside ``model_dir``."""
    short = short_name(name)
    names = [f"faster-whisper-{short}", short]
    if "/" in name:
        names += [name.rsplit("/", 1)[-1], name.replace("/", "--")]
    seen: list[Path] = []
    for candidate in names:
        path = model_dir / candidate
        if path not in seen:
            seen.append(path)
    return seen


def hub_offline(settings: Any) -> bool:
    """True when no download may be attempted (``--offline`` or ``HF_HUB_OFFLINE``)."""
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return bool(settings.offline) or env in {"1", "true", "yes", "on"}


def _expected_message(name: str, searched: list[str], reason: str) -> str:
    files = ", ".join((*REQUIRED_FILES, VOCABULARY_GLOB))
    where = "; ".join(searched)
    return (
        f"faster-whisper model {name!r} is not available {reason}: expected {files} "
        f"(searched: {where}). Fetch it with `hearline models pull {name}` on a machine with network "
        f"access (or copy the files into one of those directories)."
    )


def locate_model(name: str, path: Path | None, settings: Any, repo: str | None = None) -> Path:
    """The directory holding model ``name``, downloading it only when allowed.

    Raises ModelFilesMissing naming the files and the command that fetches them.
    """
    if path is not None:
        missing = missing_files(path) if path.is_dir() else list(REQUIRED_FILES)
        if missing:
            raise ModelFilesMissing(
                f"{path} is not a complete faster-whisper model directory: missing {', '.join(missing)}"
            )
        return path

    searched: list[str] = []
    model_dir = Path(settings.model_dir).expanduser()
    for candidate in model_dir_candidates(name, model_dir):
        searched.append(str(candidate))
        if candidate.is_dir() and not missing_files(candidate):
            return candidate

    repo = repo or hub_repo(name)
    if repo is None:
        raise ModelFilesMissing(_expected_message(name, searched, "(no hub repository is known for it)"))

    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    searched.append(f"Hugging Face cache ({repo})")
    try:
        cached = Path(huggingface_hub.snapshot_download(repo, local_files_only=True, allow_patterns=HUB_PATTERNS))
        if not missing_files(cached):
            return cached
    except (LocalEntryNotFoundError, OSError) as exc:
        logger.debug("%s not in the Hugging Face cache: %s", repo, exc)

    if hub_offline(settings):
        raise ModelFilesMissing(_expected_message(name, searched, "offline"))
    if not getattr(settings, "auto_download", True):
        raise ModelFilesMissing(_expected_message(name, searched, "and downloads on first use are off"))

    target = model_dir / f"faster-whisper-{short_name(name)}"
    logger.info("downloading %s from the Hugging Face hub into %s", repo, target)
    from hearline.models.catalog import FASTER_WHISPER, ModelEntry
    from hearline.models.download import DownloadError, ModelUnavailable, OfflineMode, pull

    entry = ModelEntry(name=name, engine=FASTER_WHISPER, repo=repo, dir=target.name, source="hub")
    try:
        # the models' own downloader: atomic (a failed download leaves no partial model directory),
        # locked against a concurrent pull, HF_ENDPOINT read per call
        pull(entry, settings)
    except OfflineMode as exc:
        raise ModelFilesMissing(_expected_message(name, searched, "offline")) from exc
    except DownloadError as exc:
        reason = f"and the download failed ({exc})"
        raise ModelUnavailable(_expected_message(name, searched, reason), name) from exc
    missing = missing_files(target)
    if missing:
        raise ModelFilesMissing(f"download of {repo} into {target} is incomplete: missing {', '.join(missing)}")
    return target


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def resolve_compute_type(compute_type: str, device: str) -> str:
    """``default`` means int8 on CPU (fast, small) and float16 on CUDA."""
    if compute_type and compute_type != "default":
        return compute_type
    return "float16" if device == "cuda" else "int8"


def _transcribe_parameters() -> set[str]:
    from faster_whisper import WhisperModel

    return set(inspect.signature(WhisperModel.transcribe).parameters) - {"self", "audio"}


def read_defaults(model_path: Path, spec_options: dict[str, Any]) -> dict[str, Any]:
    """Transcription keyword defaults for this model (file next to the weights, then registry options)."""
    defaults: dict[str, Any] = {}
    file = model_path / DEFAULTS_FILE
    if file.is_file():
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EngineError(f"cannot read {file}: {exc}") from exc
        defaults.update(data.get("transcribe", {}) if isinstance(data, dict) else {})
    defaults.update(spec_options.get("transcribe", {}) or {})
    allowed = _transcribe_parameters()
    unknown = sorted(set(defaults) - allowed)
    for key in unknown:
        logger.warning("ignoring unknown faster-whisper transcribe default %r for %s", key, model_path)
        defaults.pop(key)
    return defaults


class FasterWhisperEngine(Engine):
    kind = "faster-whisper"

    def __init__(
        self,
        name: str,
        model_path: Path,
        *,
        device: str = "cpu",
        compute_type: str = "default",
        cpu_threads: int = 0,
        num_workers: int = 1,
        defaults: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name)
        from faster_whisper import WhisperModel

        self.model_path = Path(model_path)
        self.device = resolve_device(device)
        self.compute_type = resolve_compute_type(compute_type, self.device)
        self.num_workers = max(1, num_workers)
        self.defaults = dict(defaults or {})
        logger.info(
            "loading faster-whisper %s from %s (device=%s, compute_type=%s, threads=%s, workers=%d)",
            name, self.model_path, self.device, self.compute_type, cpu_threads or "auto", self.num_workers,
        )  # fmt: skip
        try:
            self.model = WhisperModel(
                str(self.model_path),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=max(0, cpu_threads),
                num_workers=self.num_workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise EngineError(f"cannot load faster-whisper model {name!r} from {self.model_path}: {exc}") from exc
        self.multilingual = bool(self.model.model.is_multilingual)
        self._languages = self._model_languages()
        self._caps = Capabilities(
            languages=self._languages,  # exactly the model's language tokens
            translate=self.multilingual,
            native_streaming=False,
            word_timestamps=True,
            language_detection=True,
        )
        self._closed = threading.Event()

    def _model_languages(self) -> frozenset[str]:
        if not self.multilingual:
            return frozenset({"en"})
        tokenizer = self.model.hf_tokenizer
        return frozenset(
            code for code in self.model.supported_languages if tokenizer.token_to_id(f"<|{code}|>") is not None
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def languages(self) -> frozenset[str]:
        """ISO codes this model accepts for ``language``."""
        return self._languages

    def memory_bytes(self) -> int:
        try:
            size = (self.model_path / "model.bin").stat().st_size
        except OSError:
            return 0
        return int(size * MEMORY_FACTOR) + PER_WORKER_BYTES * self.num_workers

    def _language(self, code: str | None) -> str | None:
        if code is None:
            return None
        from hearline.languages import UnknownLanguage, engine_code

        try:
            iso = engine_code(code)
        except UnknownLanguage:
            iso = code.strip().split("-")[0].split("_")[0].lower()
        if iso is None:
            return None
        if iso not in self._languages:
            raise UnsupportedOption(f"model {self.name!r} does not support language {code!r}")
        return iso

    def transcribe_kwargs(self, options: TranscribeOptions) -> dict[str, Any]:
        """faster-whisper ``transcribe`` keywords for ``options`` (model defaults underneath)."""
        kwargs: dict[str, Any] = dict(self.defaults)
        temperature: float | tuple[float, ...] = (
            FALLBACK_TEMPERATURES if options.temperature <= 0 and options.fallback else max(0.0, options.temperature)
        )
        kwargs.update(
            language=self._language(options.language),
            task=options.task,
            initial_prompt=options.prompt or None,
            temperature=temperature,
            beam_size=max(1, int(options.beam_size)),
            word_timestamps=bool(options.word_timestamps),
            # no words from no speech: Whisper writes text over silence, hum and noise unless VAD skips it
            vad_filter=True if options.vad_filter is None else options.vad_filter,
            hotwords=options.hotwords or None,
        )
        return kwargs

    def transcribe(
        self,
        audio: np.ndarray,
        options: TranscribeOptions,
        on_segment: SegmentCallback | None = None,
    ) -> Transcript:
        self.check_options(options)
        if self._closed.is_set():
            raise EngineError(f"model {self.name!r} has been unloaded")
        audio = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
        duration = audio.size / SAMPLE_RATE
        kwargs = self.transcribe_kwargs(options)
        segments: list[Segment] = []
        if audio.size == 0:
            return Transcript("", [], kwargs["language"], None, 0.0)
        try:
            generator, info = self.model.transcribe(audio, **kwargs)
            last_start = 0.0
            guard = LoopGuard()
            for raw in generator:  # segments come out as each 30 s window is decoded
                if guard.drops(raw.text, raw.compression_ratio):
                    logger.info("dropped a repetition loop at %.1f s: %.80r", raw.start, raw.text)
                    continue
                segment = _convert(raw, len(segments), duration, last_start)
                last_start = segment.start
                segments.append(segment)
                if on_segment is not None:
                    on_segment(segment)
        except ValueError as exc:  # faster-whisper's answer to options it cannot honour
            raise UnsupportedOption(f"model {self.name!r}: {exc}") from exc
        except RuntimeError as exc:
            raise EngineError(f"model {self.name!r} failed: {exc}") from exc
        return Transcript(
            text=join_text([s.text for s in segments]),
            segments=segments,
            language=info.language,
            language_probability=float(info.language_probability) if info.language_probability is not None else None,
            duration=duration,
        )

    def close(self) -> None:
        self._closed.set()
        model = getattr(self, "model", None)
        if model is not None:
            try:
                model.model.unload_model()
            except (RuntimeError, AttributeError) as exc:
                logger.debug("unload of %s: %s", self.name, exc)


def _clamp(value: float, low: float, high: float) -> float:
    return round(min(max(float(value), low), high), 3)


def _convert(raw: Any, index: int, duration: float, last_start: float) -> Segment:
    """faster-whisper segment -> ours, times clamped to the audio and kept non-decreasing.

    Whisper can predict timestamps past the end of a short clip (the window is padded to 30 s);
    clients rely on segments and words staying inside ``[0, duration]``.
    """
    start = _clamp(raw.start, last_start, duration)
    end = _clamp(raw.end, start, duration)
    words: list[Word] = []
    word_start = start
    for w in raw.words or []:
        ws = _clamp(w.start, word_start, end)
        we = _clamp(w.end, ws, end)
        words.append(Word(word=w.word, start=ws, end=we, probability=float(w.probability)))
        word_start = ws
    return Segment(
        id=index,
        start=start,
        end=end,
        text=raw.text,
        words=words,
        avg_logprob=float(raw.avg_logprob),
        no_speech_prob=float(raw.no_speech_prob),
        compression_ratio=float(raw.compression_ratio),
        temperature=float(raw.temperature) if raw.temperature is not None else None,
        tokens=[int(t) for t in raw.tokens],
        seek=int(raw.seek),
    )


def default_threads(num_workers: int) -> int:
    """Intra-op threads per replica when the user did not choose: split the cores, never oversubscribe."""
    return max(1, (os.cpu_count() or 1) // max(1, num_workers))


def load(spec: ModelSpec, settings: Settings) -> FasterWhisperEngine:
    """Entry point used by :func:`hearline.models.resolve.load_engine`."""
    path = locate_model(spec.name, spec.path, settings, repo=spec.repo)
    num_workers = max(1, settings.max_concurrency_per_model)
    return FasterWhisperEngine(
        name=spec.name,
        model_path=path,
        device=settings.device,
        compute_type=settings.compute_type,
        cpu_threads=settings.threads or default_threads(num_workers),
        num_workers=num_workers,
        defaults=read_defaults(path, spec.options),
    )
