"""OpenAI's multipart form for ``/v1/audio/transcriptions`` and ``/translations``: read and validated.

Split from :mod:`hearline.server.openai_rest` (which keeps the routes and SSE streaming) so each stays
small: this module owns the upload size limit (counted while the body streams in, spooled to disk by
Starlette) and the field parsing (``list[]`` brackets, booleans as strings, nested ``key[sub]`` objects).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.types import Message, Receive

from hearline import formats
from hearline.engines.base import Task, TranscribeOptions
from hearline.languages import engine_code, prompt_for
from hearline.server.errors import APIError, UploadTooLarge, drain_body

B = TypeVar("B", bool, bool | None)

#: room for the multipart framing and the small text fields on top of the file-size limit
FORM_OVERHEAD_BYTES = 256 * 1024
#: an oversize body is read and discarded up to this much before answering 413, so the client (which
#: sends the whole body before reading) sees the error instead of a connection reset
REJECT_DRAIN_BYTES = 64 * 1024 * 1024

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}
GRANULARITIES = {"word", "segment"}
INCLUDES = {"logprobs"}


# -- upload limit ----------------------------------------------------------------------------------
class LimitedReceive:
    """Wraps ASGI ``receive`` to count body bytes and stop the upload as soon as it passes the limit."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self.limit = limit
        self.received = 0
        self.complete = False

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
            if self.received > self.limit:
                raise UploadTooLarge(self.limit - FORM_OVERHEAD_BYTES)
        return message


async def read_form(request: Request, max_upload_bytes: int) -> FormData:
    """Parse the multipart form with the size limit enforced by Content-Length and while streaming."""
    limit = max_upload_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        await drain_body(request.receive, min(int(declared), REJECT_DRAIN_BYTES))
        raise UploadTooLarge(max_upload_bytes)
    receive = LimitedReceive(request.receive, limit)
    try:
        return await Request(request.scope, receive).form(max_files=1, max_fields=64)
    except UploadTooLarge:
        if not receive.complete:
            await drain_body(request.receive, REJECT_DRAIN_BYTES)
        raise UploadTooLarge(max_upload_bytes) from None


# -- form fields -----------------------------------------------------------------------------------
@dataclass
class AudioRequest:
    """Everything a transcription/translation request asked for, validated."""

    upload: UploadFile
    model: str | None
    response_format: str
    stream: bool
    options: TranscribeOptions
    words: bool = False
    logprobs: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise APIError(400, f"'{name}' must be a text field, not a file", param=name, code="invalid_value")
    return value.strip()


def _bool(form: FormData, name: str, default: B) -> bool | B:
    value = _text(form, name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise APIError(400, f"'{name}' must be true or false, got {value!r}", param=name, code="invalid_value")


def _list(form: FormData, name: str) -> list[str]:
    """A list field sent bracketed (``name[]``, what the SDKs send), bare, repeated or comma-separated."""
    values: list[str] = []
    for key in (f"{name}[]", name):
        for raw in form.getlist(key):
            if not isinstance(raw, str):
                raise APIError(400, f"'{name}' must be text", param=name, code="invalid_value")
            values.extend(part.strip() for part in raw.split(",") if part.strip())
    return values


def _temperature(form: FormData) -> float:
    value = _text(form, "temperature")
    if value is None or value == "":
        return 0.0
    try:
        temperature = float(value)
    except ValueError:
        raise APIError(
            400, f"'temperature' must be a number, got {value!r}", param="temperature", code="invalid_value"
        ) from None
    if not math.isfinite(temperature) or not 0.0 <= temperature <= 1.0:
        raise APIError(400, "'temperature' must be between 0 and 1", param="temperature", code="invalid_value")
    return temperature


def _beam_size(form: FormData) -> int:
    value = _text(form, "beam_size")
    if not value:
        return TranscribeOptions.beam_size
    if not value.isdigit() or not 1 <= int(value) <= 20:
        raise APIError(400, "'beam_size' must be an integer from 1 to 20", param="beam_size", code="invalid_value")
    return int(value)


def _chunking(form: FormData) -> dict[str, Any] | None:
    """``chunking_strategy`` as ``auto``, a JSON object, or ``chunking_strategy[type]=server_vad`` fields."""
    nested = {
        key[len("chunking_strategy[") : -1]: value
        for key, value in form.multi_items()
        if key.startswith("chunking_strategy[") and key.endswith("]") and isinstance(value, str)
    }
    raw = _text(form, "chunking_strategy")
    if raw is None and not nested:
        return None
    if raw is not None and raw != "auto":
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if parsed == "auto":
            raw = "auto"
        elif not isinstance(parsed, dict):
            raise APIError(
                400,
                '\'chunking_strategy\' must be "auto" or a JSON object like {"type": "server_vad"}',
                param="chunking_strategy",
                code="invalid_value",
            )
        else:
            nested = {**parsed, **nested}
    if raw == "auto" and not nested:
        return {"type": "auto"}
    if nested.get("type") != "server_vad":
        raise APIError(
            400, "chunking_strategy.type must be 'server_vad'", param="chunking_strategy", code="invalid_value"
        )
    return nested


def parse_request(form: FormData, task: Task) -> AudioRequest:
    """Validate the form; cheap checks come before the upload is decoded."""
    upload = form.get("file")
    if upload is None:
        raise APIError(400, "you must provide a 'file' to transcribe", param="file", code="missing_file")
    if not isinstance(upload, UploadFile):
        raise APIError(400, "'file' must be a file upload, not a text field", param="file", code="invalid_file")

    response_format = (_text(form, "response_format") or "json").lower()
    if response_format not in formats.RESPONSE_FORMATS:
        raise APIError(
            400,
            f"unknown response_format {response_format!r}; expected one of {', '.join(formats.RESPONSE_FORMATS)}",
            param="response_format",
            code="invalid_value",
        )

    granularities = [g.lower() for g in _list(form, "timestamp_granularities")]
    unknown = [g for g in granularities if g not in GRANULARITIES]
    if unknown:
        raise APIError(
            400,
            f"unknown timestamp granularity {unknown[0]!r}; expected 'word' or 'segment'",
            param="timestamp_granularities",
            code="invalid_value",
        )
    includes = _list(form, "include")
    unknown = [i for i in includes if i not in INCLUDES]
    if unknown:
        raise APIError(400, f"unknown include {unknown[0]!r}", param="include", code="invalid_value")

    language_field = _text(form, "language") if task == "transcribe" else None
    language = engine_code(language_field)  # UnknownLanguage -> 400
    prompt = _text(form, "prompt") or prompt_for(language_field)
    chunking = _chunking(form)
    words = "word" in granularities
    options = TranscribeOptions(
        language=language,
        task=task,
        prompt=prompt,
        temperature=_temperature(form),
        beam_size=_beam_size(form),
        word_timestamps=words or bool(includes),
        vad_filter=_bool(form, "vad_filter", default=True if chunking is not None else None),
        hotwords=_text(form, "hotwords") or None,
    )
    return AudioRequest(
        upload=upload,
        model=_text(form, "model") or None,
        response_format=response_format,
        stream=_bool(form, "stream", default=False),
        options=options,
        words=words,
        logprobs="logprobs" in includes,
    )
