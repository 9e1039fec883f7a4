"""Seed 000's language table: package data == the seed, served by /v1/languages, every code accepted by /start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hearline import languages
from hearline.config import Settings
from hearline.server.app import create_app
from tests.helpers.corpus import AUDIO_DIR
from tests.helpers.pulse import PulseDaemon
from tests.helpers.server import ServerThread

SEED = next((AUDIO_DIR.parent / "seeds").glob("000_*.txt"))
FIELDS = ("code", "name", "displayName", "whisperCode", "whisperPrompt", "bingCode", "googleCode")


def seed_table() -> list[dict[str, str | None]]:
    """The markdown table under the seed's language heading, with empty cells and ``null`` as None."""
    text = SEED.read_text(encoding="utf-8")
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != len(FIELDS) or cells[0] == "code" or set(cells[0]) <= {"-"}:
            continue
        rows.append({f: (None if c in {"", "null"} else c) for f, c in zip(FIELDS, cells, strict=True)})
    return rows


def test_package_table_is_the_seed_table() -> None:
    seed = seed_table()
    assert len(seed) > 100 and seed[0]["code"] == "auto" and seed[1]["code"] == "n/a"
    assert [lang.as_dict() for lang in languages.table()] == seed


def test_mappings() -> None:
    assert languages.engine_code("zh-Hans") == "zh" and languages.engine_code("yue-Hant") == "yue"
    assert languages.engine_code("auto") is None
    assert languages.prompt_for("zh-Hans") == "以下是普通话的句子。"
    assert languages.prompt_for("zh-Hant") == "以下是普通話的句子。"
    assert languages.prompt_for("en") is None
    with pytest.raises(languages.UnknownLanguage):
        languages.lookup("xx")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_whisper_dir: Path, pulse: PulseDaemon
) -> Iterator[ServerThread]:
    settings = Settings.load(
        model_dir=tmp_path_factory.mktemp("models"),
        pulse_server=pulse.server,
        allow_model_paths=[tiny_whisper_dir],  # the tests name it by path, as a client
    )
    srv = ServerThread(create_app(settings), timeout_graceful_shutdown=3).start()
    try:
        yield srv
    finally:
        httpx.get(srv.url + "/stop", timeout=60)
        srv.stop()


def test_languages_endpoint_answers_for_the_model_in_use(server: ServerThread, tiny_whisper_dir: Path) -> None:
    body = httpx.get(server.url + "/v1/languages", timeout=30).json()  # the default: English-only PocketSphinx
    assert body["object"] == "list" and body["model"] == "pocketsphinx"
    usage = {row["code"]: row["usage"] for row in body["data"]}
    assert usage == {"auto": ["lang_from"], "en": ["lang_from"], "n/a": ["lang_to"]}

    # a multilingual Whisper: every table row whose language it knows, as the seed's table has it
    body = httpx.get(server.url + "/v1/languages", params={"model": str(tiny_whisper_dir)}, timeout=60).json()
    served = body["data"]
    table = {row["code"]: row for row in seed_table()}
    assert all({f: row[f] for f in FIELDS} == table[row["code"]] for row in served)
    usage = {row["code"]: row["usage"] for row in served}
    assert len(usage) > 90 and {"de", "fr", "ja", "zh-Hans"} <= set(usage)
    assert "yue-Hant" not in usage  # a v1/v2 vocabulary has no Cantonese token: not offered
    assert usage["auto"] == ["lang_from"] and usage["n/a"] == ["lang_to"]
    assert usage["en"] == ["lang_from", "lang_to"] and usage["de"] == ["lang_from"]  # Whisper translates into English


def start(server: ServerThread, **params: str) -> dict[str, Any]:
    r = httpx.get(server.url + "/start", params={"source": "system", **params}, timeout=120)
    body = r.json()
    assert r.status_code == 200 and body["code"] == 0, (params, body)
    return body


def test_every_code_is_accepted_by_start(server: ServerThread, tiny_whisper_dir: Path) -> None:
    model = str(tiny_whisper_dir)  # multilingual, so every spoken language is allowed
    rows = httpx.get(server.url + "/v1/languages", params={"model": model}, timeout=30).json()["data"]
    codes = [row["code"] for row in rows]
    for code in codes:
        if code == "n/a":
            continue
        body = start(server, model=model, lang_from=code)
        assert body["data"]["lang_from"] == code
        service = server.config.app.state.captions
        options = service._run.session.options
        expected = languages.engine_code(code)
        assert options.language == expected, code
        assert options.prompt == languages.prompt_for(code), code
    for code in codes:
        if code == "auto":
            continue
        body = start(server, lang_from="en", lang_to=code)
        assert body["data"]["lang_to"] == code
    # Codes are matched case-insensitively and answered in the table's spelling.
    assert start(server, model=model, lang_from="ZH-hant")["data"]["lang_from"] == "zh-Hant"
    assert start(server, lang_to="YUE-HANS")["data"]["lang_to"] == "yue-Hans"
