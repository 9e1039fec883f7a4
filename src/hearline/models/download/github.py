"""The sha256 digest GitHub's release API publishes for a release asset, asked when its download starts.

Release URLs are recognised under ``settings.github_url`` and the API is ``settings.github_api``.
When GitHub gives none (older assets have no digest, rate limit, unreachable API) the caller is told why
and the download goes on, content-checked only.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import httpx

from hearline import __version__
from hearline.config import Settings
from hearline.models.catalog import ModelEntry
from hearline.models.download.checksums import ChecksumUnavailable, PublishedChecksum, declared_checksum
from hearline.models.download.sources import is_offline

logger = logging.getLogger(__name__)

# The release-assets listing gives at most 100 assets a page; give up after this many pages (2000 assets),
# since an unauthenticated client has 60 API requests an hour.
MAX_ASSET_PAGES = 20


@dataclass(frozen=True)
class GitHubAsset:
    """A release asset named by its download URL ``<web>/<owner>/<repo>/releases/download/<tag>/<name>``."""

    owner: str
    repo: str
    tag: str
    name: str


_RELEASE_PATH = re.compile(r"([^/]+)/([^/]+)/releases/download/(.+)/([^/]+)")


def github_release_asset(url: str, settings: Settings) -> GitHubAsset | None:
    """The release asset ``url`` downloads, or None when it is not a release download URL of ``github_url``."""
    base = settings.github_url.rstrip("/") + "/"
    if not url.lower().startswith(base.lower()):
        return None
    match = _RELEASE_PATH.fullmatch(url[len(base) :].split("?", 1)[0].split("#", 1)[0])
    if match is None:
        return None
    owner, repo, tag, name = (unquote(part) for part in match.groups())
    return GitHubAsset(owner, repo, tag, name)


def github_release_checksum(asset: GitHubAsset, settings: Settings) -> PublishedChecksum:
    """The sha256 ``digest`` and ``size`` GitHub's REST API publishes for ``asset``.

    ``GET /repos/{owner}/{repo}/releases/tags/{tag}`` embeds the release's assets; if the asset is not
    among them the paginated ``/releases/{id}/assets`` listing is walked (``Link: rel="next"``).  Raises
    :class:`ChecksumUnavailable` naming why when there is none to use: offline (no request is made),
    unreachable API, unknown release or asset, rate limit, or an asset without a digest.
    """
    if is_offline(settings):
        raise ChecksumUnavailable("offline mode is on, so GitHub's API was not asked")
    api = settings.github_api.rstrip("/")
    repo_path = f"{api}/repos/{quote(asset.owner, safe='')}/{quote(asset.repo, safe='')}"
    headers = {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": f"hearline/{__version__}",
    }
    with httpx.Client(headers=headers, timeout=httpx.Timeout(30.0), follow_redirects=True) as client:
        release = _github_json(client, f"{repo_path}/releases/tags/{quote(asset.tag, safe='')}")
        if not isinstance(release, dict):
            raise ChecksumUnavailable(f"{api} answered the release query with {type(release).__name__}, not a release")
        found = _find_asset(release.get("assets"), asset.name)
        if found is None and release.get("id") is not None:
            found = _page_assets(client, f"{repo_path}/releases/{release['id']}/assets?per_page=100", asset.name)
    label = f"{asset.owner}/{asset.repo} release {asset.tag!r}"
    if found is None:
        raise ChecksumUnavailable(f"GitHub lists no asset {asset.name!r} in {label}")
    digest = found.get("digest")
    if not digest:
        raise ChecksumUnavailable(f"GitHub publishes no digest for {asset.name!r} in {label} (older assets have none)")
    algorithm, _, hexdigest = str(digest).partition(":")
    if algorithm.lower() != "sha256" or not re.fullmatch(r"[0-9a-fA-F]{64}", hexdigest):
        raise ChecksumUnavailable(f"GitHub's digest {digest!r} for {asset.name!r} is not a sha256 this code knows")
    size = found.get("size")
    return PublishedChecksum(
        "sha256", hexdigest.lower(), size if isinstance(size, int) else None, f"GitHub's release API ({label})"
    )


def _github_get(client: httpx.Client, url: str) -> httpx.Response:
    try:
        resp = client.get(url)
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise ChecksumUnavailable(f"GitHub's API could not be reached at {url} ({reason})") from exc
    if resp.status_code in (403, 429) and resp.headers.get("x-ratelimit-remaining") == "0":
        raise ChecksumUnavailable(f"GitHub's API rate limit is spent (HTTP {resp.status_code}); try again later")
    if resp.status_code == 404:
        raise ChecksumUnavailable(f"GitHub's API has no {url.split('/repos/', 1)[-1]} (HTTP 404)")
    if resp.status_code >= 400:
        raise ChecksumUnavailable(f"GitHub's API answered HTTP {resp.status_code} {resp.reason_phrase} for {url}")
    return resp


def _github_json(client: httpx.Client, url: str) -> Any:
    return _json_body(_github_get(client, url))


def _json_body(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError as exc:
        raise ChecksumUnavailable(f"GitHub's API answered {resp.url} with invalid JSON ({exc})") from exc


def _find_asset(assets: Any, name: str) -> dict[str, Any] | None:
    if not isinstance(assets, list):
        return None
    return next((a for a in assets if isinstance(a, dict) and a.get("name") == name), None)


def _page_assets(client: httpx.Client, url: str | None, name: str) -> dict[str, Any] | None:
    """Walk the release's asset listing page by page (bounded) until ``name`` turns up."""
    for _ in range(MAX_ASSET_PAGES):
        if url is None:
            return None
        resp = _github_get(client, url)
        found = _find_asset(_json_body(resp), name)
        if found is not None:
            return found
        url = resp.links.get("next", {}).get("url")
    logger.warning("stopped looking for %s after %d pages of release assets", name, MAX_ASSET_PAGES)
    return None


def url_checksum(entry: ModelEntry, url: str, settings: Settings) -> tuple[PublishedChecksum | None, str | None]:
    """The checksum a URL download is verified against, or why there is none (for the warning)."""
    declared = declared_checksum(entry)
    if declared is not None:
        return declared, None
    asset = github_release_asset(url, settings)
    if asset is None:
        return None, "neither the catalog/models.yaml nor its source publishes a checksum"
    try:
        published = github_release_checksum(asset, settings)
    except ChecksumUnavailable as exc:
        return None, str(exc)
    logger.info("%s: GitHub publishes sha256 %s for %s", entry.name, published.hexdigest, asset.name)
    return published, None
