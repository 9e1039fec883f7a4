"""CORS: listed origins get credentials; ``*`` lets any page read responses but never with credentials."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from hearline.config import Settings
from hearline.server.app import create_app


@pytest.mark.parametrize(
    ("origins", "credentials"), [(["https://app.example"], "true"), (["*"], None)]
)  # fmt: skip
async def test_wildcard_origins_never_allow_credentials(
    tmp_path: Path, origins: list[str], credentials: str | None
) -> None:
    app = create_app(Settings.load(model_dir=tmp_path / "models", cors_origins=origins), preload=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        preflight = await client.options(
            "/v1/audio/transcriptions",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        plain = await client.get("/health", headers={"Origin": "https://app.example"})
    assert preflight.status_code == 200
    for response in (preflight, plain):
        assert response.headers.get("access-control-allow-credentials") == credentials
        assert response.headers.get("access-control-allow-origin") in ("https://app.example", "*")
    if credentials is None:
        assert plain.headers["access-control-allow-origin"] == "*"  # not the caller's origin reflected
