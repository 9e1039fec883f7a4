"""Translators behind an HTTP server: LibreTranslate and an OpenAI-compatible chat endpoint."""

from __future__ import annotations

import json
from typing import Any

import httpx

from hearline.live.translate.base import TranslationFailed, TranslationRequest, Translator, display, iso


class _HttpTranslator(Translator):
    def __init__(self, url: str, api_key: str | None, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def _post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        try:
            response = await self._client.post(self.url + path, json=body, headers=headers or {})
        except httpx.HTTPError as exc:
            raise TranslationFailed(f"{self.name} server unreachable at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise TranslationFailed(f"{self.name} server answered {response.status_code}: {response.text[:200]}")
        try:
            return response.json()
        except json.JSONDecodeError as exc:
            raise TranslationFailed(f"{self.name} server answered non-JSON: {response.text[:200]}") from exc

    async def close(self) -> None:
        await self._client.aclose()


def libretranslate_code(code: str | None) -> str:
    """LibreTranslate's codes: ISO-639-1, ``zh-Hans`` as ``zh`` and ``zh-Hant`` as ``zt``; unknown: ``auto``."""
    if code is None:
        return "auto"
    if code.lower() == "zh-hant":
        return "zt"
    return iso(code) or "auto"


class LibreTranslateTranslator(_HttpTranslator):
    name = "libretranslate"

    async def translate(self, request: TranslationRequest) -> str:
        body: dict[str, Any] = {
            "q": request.text,
            "source": libretranslate_code(request.source),
            "target": libretranslate_code(request.target),
            "format": "text",
        }
        if self.api_key:
            body["api_key"] = self.api_key
        answer = await self._post("/translate", body)
        if not isinstance(answer, dict) or not isinstance(answer.get("translatedText"), str):
            raise TranslationFailed(f"libretranslate answer has no translatedText: {str(answer)[:200]}")
        return str(answer["translatedText"])


class OpenAIChatTranslator(_HttpTranslator):
    name = "openai"

    def __init__(self, url: str, api_key: str | None, timeout_s: float, model: str | None) -> None:
        super().__init__(url, api_key, timeout_s)
        self.model = model or "default"

    async def translate(self, request: TranslationRequest) -> str:
        system = (
            f"You translate live captions from {display(request.source)} into {display(request.target)}. "
            "Answer with the translation only, no notes or quotes."
        )
        body = {
            "model": self.model,
            "temperature": 0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": request.text}],
        }
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        answer = await self._post("/chat/completions", body, headers)
        try:
            return str(answer["choices"][0]["message"]["content"]).strip()
        except (KeyError, IndexError, TypeError) as exc:
            raise TranslationFailed(f"chat answer has no choices[0].message.content: {str(answer)[:200]}") from exc
