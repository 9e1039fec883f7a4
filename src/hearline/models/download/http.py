"""Resumable HTTP: bytes go to a ``.part`` file and an interruption resumes with ``Range``.

Within a pull it is retried a few times; the partial file is kept, so the next pull resumes it too.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import httpx

from hearline.models.download.errors import DownloadError, RemoteNotFound
from hearline.models.download.progress import Progress
from hearline.models.download.space import require_space

logger = logging.getLogger(__name__)


class _Interrupted(Exception):
    pass


def fetch(url: str, part: Path, progress: Progress, retries: int = 3) -> None:
    """Download ``url`` into ``part``, resuming what is already there; retry interruptions ``retries`` times."""
    attempt = 0
    while True:
        try:
            _fetch_once(url, part, progress)
            return
        except _Interrupted as exc:
            have = part.stat().st_size if part.exists() else 0
            if attempt >= retries:
                if have == 0:
                    raise DownloadError(f"download of {url} failed: {exc}") from exc
                raise DownloadError(
                    f"download of {url} was interrupted after {have} bytes ({exc}); "
                    "the partial file is kept and the next pull resumes it"
                ) from exc
            attempt += 1
            logger.warning("download of %s interrupted at %d bytes (%s); resuming (%d/%d)", url, have, exc, attempt,
                           retries)  # fmt: skip
            time.sleep(min(2.0, 0.2 * attempt))


def _fetch_once(url: str, part: Path, progress: Progress) -> None:
    start = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    timeout = httpx.Timeout(30.0, read=120.0)
    try:
        with (
            httpx.Client(follow_redirects=True, timeout=timeout) as client,
            client.stream("GET", url, headers=headers) as resp,
        ):
            if resp.status_code == 416 and start:
                return  # the part is already complete; verification decides whether it is right
            if resp.status_code >= 400:
                error = RemoteNotFound if resp.status_code in (404, 410) else DownloadError
                raise error(f"download of {url} failed: HTTP {resp.status_code} {resp.reason_phrase}")
            length = resp.headers.get("content-length")
            if resp.status_code == 206:
                mode, offset = "ab", start
                total = _content_range_total(resp.headers.get("content-range"))
                if total is None and length is not None:
                    total = start + int(length)
            else:
                if start:
                    logger.info("server ignored the Range request for %s; restarting from zero", url)
                mode, offset = "wb", 0
                total = int(length) if length is not None else None
            if total is not None:
                require_space(progress.name, part.parent, total - offset)
            progress.update(state="downloading", downloaded=offset, total=total)
            with part.open(mode) as handle:
                for chunk in resp.iter_raw():  # unbuffered: every received byte reaches the .part file
                    handle.write(chunk)
                    progress.update(downloaded=progress.downloaded + len(chunk))
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise _Interrupted(f"could not connect: {exc or type(exc).__name__}") from exc
    except httpx.TransportError as exc:
        raise _Interrupted(str(exc) or type(exc).__name__) from exc
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Interrupted(f"connection closed at {size} of {total} bytes")


def _content_range_total(value: str | None) -> int | None:
    match = re.match(r"bytes \d+-\d+/(\d+)", value or "")
    return int(match.group(1)) if match else None
