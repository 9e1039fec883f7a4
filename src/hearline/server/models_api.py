"""``/v1/models``: OpenAI's model list/object shapes plus what a self-hosted server needs to say.

Each object carries OpenAI's ``id``/``object``/``created``/``owned_by`` (so ``client.models.list()`` works)
and Hearline's extras: ``status`` (``loaded`` | ``installed`` | ``downloading`` | ``available``), ``engine``,
``languages``, ``size_bytes``, ``memory_mb``, ``streaming``, ``default``, ``checksum`` (null when none is
published, as for the sherpa-onnx archives) with ``verification`` saying how a download is checked then,
and, while a download runs or after it failed, ``download`` progress.  ``POST /v1/models/{id}`` starts a
download (202; poll with GET); ``DELETE /v1/models/{id}`` unloads (409 while live sessions use it),
and with ``?remove=true`` also deletes the files.  Both change the server: they need the API key when one
is set (``ApiKeyMiddleware``), and without a key only clients on this machine (loopback) may call them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from hearline.config import Settings
from hearline.models.catalog import POCKETSPHINX, ModelEntry
from hearline.models.download import DownloadError, checksum, is_offline, verification
from hearline.models.download import remove as remove_model_files
from hearline.models.download.manager import TooManyDownloads
from hearline.models.download.space import InsufficientSpace
from hearline.models.pool import ModelPool
from hearline.models.registry import RegistryError, all_entries
from hearline.models.resolve import ModelSpec, UnknownModel, shown_name, spec_entry
from hearline.server.errors import APIError

logger = logging.getLogger(__name__)

router = APIRouter()

_POCKETSPHINX_ENTRY = ModelEntry(
    name=POCKETSPHINX,
    engine=POCKETSPHINX,
    languages=("en",),
    tags=("bundled", "realtime", "streaming"),
    description="CMU PocketSphinx with the en-us model bundled in its wheel; needs no download.",
    memory_mb=95,
    streaming=True,
    source="bundled",
)


def _owned_by(entry: ModelEntry) -> str:
    if entry.source == "bundled":
        return "hearline"
    if entry.source == "user":
        return "user"
    if entry.repo and "/" in entry.repo:
        return entry.repo.split("/", 1)[0]
    return "k2-fsa" if entry.url and "k2-fsa" in entry.url else "hearline"


def _created(path: Path | None) -> int:
    try:
        return int(path.stat().st_mtime) if path is not None else 0
    except OSError:
        return 0


def model_object(entry: ModelEntry, spec: ModelSpec | None, pool: ModelPool, default_name: str) -> dict[str, Any]:
    """One model in OpenAI's object shape with Hearline's extra fields."""
    installed = bool(spec.options.get("installed", True)) if spec is not None else False
    path = spec.path if spec is not None else None
    job = pool.downloads.get(entry.name)
    if entry.name in pool.loaded():
        status = "loaded"
    elif job is not None and job.active:
        status = "downloading"
    elif installed:
        status = "installed"
    else:
        status = "available"
    obj: dict[str, Any] = {
        "id": entry.name,
        "object": "model",
        "created": _created(path) if installed else 0,
        "owned_by": _owned_by(entry),
        "status": status,
        "engine": entry.engine,
        "type": entry.type,
        "languages": list(entry.languages) if entry.languages is not None else None,
        "size_bytes": entry.size,
        "disk_mb": entry.disk_size_mb,
        "memory_mb": entry.memory_mb,
        "streaming": entry.streaming,
        "tags": list(entry.tags),
        "aliases": list(entry.aliases),
        "description": entry.description,
        "source": entry.source,
        "default": entry.name == default_name,
        "downloadable": entry.download_kind is not None,
        "checksum": checksum(entry),
        "verification": verification(entry, pool.settings),
        "path": str(path) if installed and path is not None else None,
    }
    if job is not None and (job.active or job.error):
        obj["download"] = job.to_dict()
    return obj


def _entries(settings: Settings) -> dict[str, ModelEntry]:
    try:
        entries = all_entries(settings)
    except RegistryError as exc:
        raise APIError(500, f"models.yaml is invalid: {exc}", type="server_error", code="invalid_registry") from exc
    return {POCKETSPHINX: _POCKETSPHINX_ENTRY, **entries}


def _lookup(pool: ModelPool, model_id: str) -> tuple[ModelEntry, ModelSpec | None]:
    """Resolve an id the way requests do (aliases, repos, paths); 404 in OpenAI's envelope otherwise."""
    try:
        spec = pool.resolve(model_id)
    except UnknownModel as exc:
        message = f"the model {shown_name(model_id)!r} does not exist"
        if exc.reason:  # e.g. why a client's path or repository is refused
            message += f": {exc.reason}"
        raise APIError(404, message, param="model", code="model_not_found") from exc
    except RegistryError as exc:
        raise APIError(500, f"models.yaml is invalid: {exc}", type="server_error", code="invalid_registry") from exc
    entry = spec_entry(spec)
    if entry is None:
        if spec.engine == POCKETSPHINX and spec.path is None:
            entry = _POCKETSPHINX_ENTRY
        else:  # a path on disk
            entry = ModelEntry(name=spec.name, engine=spec.engine, source="path")
    return entry, spec


def is_loopback(host: str | None) -> bool:
    """Whether a client address is this machine (127.0.0.0/8, ::1, or IPv4 loopback mapped into IPv6)."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _require_manager(request: Request) -> None:
    """Pulling and deleting models: with an API key the middleware already checked it; without one, loopback only."""
    settings: Settings = request.app.state.settings
    if settings.api_key:
        return
    host = request.client.host if request.client is not None else None
    if not is_loopback(host):
        raise APIError(
            403,
            "downloading or deleting models is allowed only from the server's own machine unless the server "
            "has an API key (--api-key)",
            code="permission_denied",
        )


def _default_name(pool: ModelPool) -> str:
    try:
        return pool.default_name
    except UnknownModel:
        return ""


@router.get("/v1/models")
async def list_models(request: Request, status: str | None = None, engine: str | None = None) -> JSONResponse:
    """Every model the server knows: bundled, catalog, models.yaml, and any loaded path."""
    pool: ModelPool = request.app.state.pool
    settings: Settings = request.app.state.settings
    data = await asyncio.to_thread(model_listing, pool, settings)
    if status:
        data = [obj for obj in data if obj["status"] == status]
    if engine:
        data = [obj for obj in data if obj["engine"] == engine]
    return JSONResponse({"object": "list", "data": data})


def model_listing(pool: ModelPool, settings: Settings) -> list[dict[str, Any]]:
    """Filesystem checks for ~40 models: run off the event loop."""
    from hearline.models.resolve import spec_for_entry

    default_name = _default_name(pool)
    data = []
    seen = set()
    for name, entry in _entries(settings).items():
        spec = (
            ModelSpec(name=POCKETSPHINX, engine=POCKETSPHINX, options={"installed": True})
            if entry is _POCKETSPHINX_ENTRY
            else spec_for_entry(entry, settings)
        )
        data.append(model_object(entry, spec, pool, default_name))
        seen.add(name)
    for name in pool.loaded():
        if name not in seen:  # loaded by path
            try:
                entry, found = _lookup(pool, name)
            except APIError:
                continue
            data.append(model_object(entry, found, pool, default_name))
    return data


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> JSONResponse:
    pool: ModelPool = request.app.state.pool
    entry, spec = await asyncio.to_thread(_lookup, pool, model_id)
    return JSONResponse(model_object(entry, spec, pool, _default_name(pool)))


@router.post("/v1/models/{model_id:path}")
async def download_model(model_id: str, request: Request) -> JSONResponse:
    """Start downloading a model: 202 while it runs (poll GET), 200 when it is already installed."""
    _require_manager(request)
    pool: ModelPool = request.app.state.pool
    settings: Settings = request.app.state.settings
    entry, spec = await asyncio.to_thread(_lookup, pool, model_id)
    if spec is not None and spec.options.get("installed", True):
        return JSONResponse(model_object(entry, spec, pool, _default_name(pool)), status_code=200)
    if entry.download_kind is None:
        raise APIError(400, f"model {entry.name!r} has no download source; copy its files into place",
                       param="model", code="not_downloadable")  # fmt: skip
    if is_offline(settings):
        raise APIError(
            409,
            f"offline mode is on; cannot download {entry.name!r} (run `hearline models pull {entry.name}` "
            "on a connected machine and copy the model directory)",
            param="model",
            code="offline",
        )
    try:
        pool.downloads.start(entry)
    except TooManyDownloads as exc:
        logger.warning("download refused: %s", exc)  # counted by status (429: busy) with every REST refusal
        raise APIError(429, str(exc), param="model", code="too_many_downloads",
                       headers={"Retry-After": str(exc.retry_after)}) from exc  # fmt: skip
    except InsufficientSpace as exc:
        logger.warning("download refused: %s", exc)
        raise APIError(507, str(exc), param="model", code="insufficient_storage") from exc
    return JSONResponse(model_object(entry, spec, pool, _default_name(pool)), status_code=202)


@router.delete("/v1/models/{model_id:path}")
async def delete_model(model_id: str, request: Request, remove: bool = False) -> JSONResponse:
    """Unload a model; with ``?remove=true`` also delete its files (the bundled model cannot be removed)."""
    _require_manager(request)
    pool: ModelPool = request.app.state.pool
    settings: Settings = request.app.state.settings
    entry, _spec = await asyncio.to_thread(_lookup, pool, model_id)
    users = pool.users_of(entry.name)
    if users:
        raise APIError(409, f"model {entry.name!r} is in use by {users} live session(s); unload it when they end",
                       param="model", code="model_in_use")  # fmt: skip
    unloaded = await pool.unload(entry.name)
    removed = False
    if remove:
        if entry.source in {"bundled", "path"}:
            raise APIError(400, f"model {entry.name!r} is not in the model directory; nothing to remove",
                           param="model", code="not_removable")  # fmt: skip
        job = pool.downloads.get(entry.name)
        if job is not None and job.active:
            raise APIError(409, f"model {entry.name!r} is downloading; try again when it finishes", code="busy")
        try:
            removed = await asyncio.to_thread(remove_model_files, entry, settings)
        except DownloadError as exc:
            raise APIError(400, str(exc), param="model", code="not_removable") from exc
    return JSONResponse(
        {"id": entry.name, "object": "model", "deleted": removed or unloaded, "unloaded": unloaded, "removed": removed}
    )
