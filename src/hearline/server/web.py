"""The browser pages: ``GET /`` (live transcription, file upload) and ``GET /captions`` (caption overlay).

Plain HTML/CSS/JS shipped inside the package (``server/web/``), no build step.  Every URL the pages use
is relative (``static/app.js``, ``asr``, ``v1/models`` ...), so the pages also work behind a reverse proxy
that mounts Hearline under a path prefix.  Static files are served by a route rather than a mounted
``StaticFiles`` app because ``include_router`` does not carry mounts over; the route only serves regular
files that resolve inside the web directory.
"""

from __future__ import annotations

import logging
import mimetypes
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse, Response

logger = logging.getLogger(__name__)

router = APIRouter()

WEB_DIR = Path(str(resources.files("hearline.server").joinpath("web"))).resolve()
#: the pages change with the package version; make browsers revalidate instead of caching stale JS
NO_CACHE = {"Cache-Control": "no-cache"}

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}


def _page(name: str) -> FileResponse:
    return FileResponse(WEB_DIR / name, media_type=_TYPES[".html"], headers=NO_CACHE)


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return _page("index.html")


@router.get("/captions", include_in_schema=False)
async def captions_page() -> FileResponse:
    return _page("captions.html")


@router.get("/captions/", include_in_schema=False)
async def captions_slash() -> RedirectResponse:
    # relative URLs in the page assume it is served at ``.../captions``; ``captions/`` would break them
    return RedirectResponse("../captions", status_code=307)


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    return FileResponse(WEB_DIR / "icon.svg", media_type=_TYPES[".svg"], headers=NO_CACHE)


@router.get("/static/{path:path}", include_in_schema=False)
async def static(path: str) -> Response:
    target = (WEB_DIR / path).resolve()
    if not target.is_relative_to(WEB_DIR) or not target.is_file():
        raise HTTPException(status_code=404, detail="not found")
    media_type = _TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(target, media_type=media_type, headers=NO_CACHE)
