"""Translators for caption finals: a tiny random-weight CTranslate2 model built here, and the HTTP shapes
(LibreTranslate, OpenAI chat) against a local server; then the whole path through /start and /events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from hearline.config import Settings
from hearline.live.translate import (
    CTranslate2Translator,
    LibreTranslateTranslator,
    OpenAIChatTranslator,
    Translation,
    TranslationEvent,
    TranslationFailed,
    TranslationFailure,
    TranslationRequest,
    TranslationWorker,
    TranslatorUnavailable,
    make_translator,
)
from hearline.models.pool import ModelPool
from hearline.server.app import create_app
from tests.helpers.corpus import clip
from tests.helpers.polling import until
from tests.helpers.pulse import PulseDaemon
from tests.helpers.server import ServerThread
from tests.helpers.sse import SSEClient

WORDS = ("hello", "world", "good", "morning", "how", "are", "you", "thank", "very", "much", "the", "of", "and")
LANG_TOKENS = ["eng_Latn", "deu_Latn", "fra_Latn", "zho_Hans"]


def build_tiny_translation_model(out: Path, d_model: int = 32, seed: int = 0) -> Path:
    """A random-weight NLLB-style Transformer in CTranslate2's format plus a word-level tokenizer.json."""
    from ctranslate2.specs import transformer_spec
    from tokenizers import Tokenizer, models, pre_tokenizers

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab = ["<unk>", "<s>", "</s>", *LANG_TOKENS, *WORDS]
    size = len(vocab)
    spec = transformer_spec.TransformerSpec.from_config((1, 1), 2)
    ffn = 4 * d_model

    def shape_of(name: str) -> tuple[int, ...] | None:
        if name.endswith(("gamma", "beta")):
            return (d_model,)
        if name.endswith(("embeddings_0/weight", "embeddings/weight", "projection/weight")):
            return (size, d_model)
        if "self_attention/linear_0" in name:
            return (3 * d_model, d_model)
        if "/attention/linear_1" in name:
            return (2 * d_model, d_model)
        if "attention/linear_" in name:
            return (d_model, d_model)
        if "ffn/linear_0" in name:
            return (ffn, d_model)
        if "ffn/linear_1" in name:
            return (d_model, ffn)
        return None

    def fill(scope: Any, prefix: str) -> None:
        for key, value in list(vars(scope).items()):
            name = f"{prefix}/{key}"
            if isinstance(value, list):
                for i, item in enumerate(value):
                    fill(item, f"{name}_{i}")
            elif hasattr(value, "__dict__") and not isinstance(value, (np.ndarray, str, bytes)):
                fill(value, name)
            elif value is None and (shape := shape_of(name)) is not None:
                if name.endswith("gamma"):
                    setattr(scope, key, np.ones(shape, np.float32))
                elif name.endswith("beta"):
                    setattr(scope, key, np.zeros(shape, np.float32))
                else:
                    setattr(scope, key, (rng.standard_normal(shape) * 0.2).astype(np.float32))

    fill(spec.encoder, "encoder")
    fill(spec.decoder, "decoder")
    spec.register_source_vocabulary(vocab)
    spec.register_target_vocabulary(vocab)
    spec.validate()
    spec.save(str(out))

    tokenizer = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<unk>", "<s>", "</s>", *LANG_TOKENS])
    tokenizer.save(str(out / "tokenizer.json"))
    return out


@pytest.fixture(scope="module")
def tiny_mt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_translation_model(tmp_path_factory.mktemp("mt") / "tiny-nllb")


# -- a local server speaking LibreTranslate's and OpenAI chat's shapes ------------------------------
class FakeTranslationServer:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.fail_next = 0
        app = FastAPI()

        @app.post("/translate")
        async def libre(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append(("libre", body))
            if self.fail_next:
                self.fail_next -= 1
                return JSONResponse({"error": "boom"}, status_code=500)
            return JSONResponse({"translatedText": f"[{body['target']}] {body['q']}"})

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append(("chat", {**body, "authorization": request.headers.get("authorization")}))
            text = body["messages"][-1]["content"]
            return JSONResponse(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": f" <{text}> "}}],
                }
            )

        self.server = ServerThread(app)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeTranslationServer]:
    server = FakeTranslationServer()
    server.server.start()
    try:
        yield server
    finally:
        server.server.stop()


def request(caption_id: int, text: str = "hello world", source: str | None = "en", target: str = "de") -> Any:
    return TranslationRequest(caption_id, text, source, target)


# -- translators ------------------------------------------------------------------------------------
async def test_ctranslate2_translator_runs_a_real_model(tiny_mt: Path) -> None:
    translator = CTranslate2Translator(tiny_mt)
    try:
        assert translator.family == "nllb"
        out = await translator.translate(request(1, "good morning how are you", "en", "de"))
        assert isinstance(out, str)
        assert "deu_Latn" not in out and "</s>" not in out  # language/special tokens are not text
        assert await translator.translate(request(2, "hello", "zh-Hans", "fr")) is not None
        with pytest.raises(TranslationFailed):  # the tiny model has no Japanese token
            await translator.translate(request(3, "hello", "en", "ja"))
    finally:
        await translator.close()


def test_ctranslate2_translator_needs_a_model(tmp_path: Path) -> None:
    with pytest.raises(TranslatorUnavailable):
        CTranslate2Translator(tmp_path)


async def test_libretranslate_shape(fake: FakeTranslationServer) -> None:
    translator = LibreTranslateTranslator(fake.server.url, "key-1", 10)
    try:
        assert await translator.translate(request(1, "hello", "en", "zh-Hant")) == "[zt] hello"
        kind, body = fake.requests[-1]
        assert kind == "libre"
        assert body == {"q": "hello", "source": "en", "target": "zt", "format": "text", "api_key": "key-1"}
        assert await translator.translate(request(2, "hallo", None, "zh-Hans")) == "[zh] hallo"
        assert fake.requests[-1][1]["source"] == "auto"
    finally:
        await translator.close()


async def test_openai_chat_shape(fake: FakeTranslationServer) -> None:
    translator = OpenAIChatTranslator(fake.server.url + "/v1", "sk-local", 10, "qwen2.5")
    try:
        assert await translator.translate(request(1, "good morning", "en", "de")) == "<good morning>"
        kind, body = fake.requests[-1]
        assert kind == "chat" and body["model"] == "qwen2.5" and body["authorization"] == "Bearer sk-local"
        assert body["messages"][0]["role"] == "system" and "German" in body["messages"][0]["content"]
        assert body["messages"][-1] == {"role": "user", "content": "good morning"}
    finally:
        await translator.close()


async def test_unreachable_server_is_a_translation_failure() -> None:
    translator = LibreTranslateTranslator("http://127.0.0.1:9", None, 5)
    try:
        with pytest.raises(TranslationFailed):
            await translator.translate(request(1))
    finally:
        await translator.close()


async def test_worker_keeps_order_reports_failures_and_never_blocks(fake: FakeTranslationServer) -> None:
    published: list[TranslationEvent] = []

    async def publish(event: TranslationEvent) -> None:
        published.append(event)

    worker = TranslationWorker(LibreTranslateTranslator(fake.server.url, None, 10), publish, maxsize=3)
    fake.fail_next = 1
    worker.start()
    try:
        skipped = [worker.submit(request(i, f"caption {i}")) for i in range(1, 6)]  # returns at once
        # The queue holds 3: while nothing ran yet, submitting 5 skipped the two oldest still queued.
        assert [s.caption_id for s in skipped if s is not None] == [1, 2]
        await until(lambda: len(published) == 3, 10, "three results")
        assert [(type(e), e.caption_id) for e in published] == [
            (TranslationFailure, 3), (Translation, 4), (Translation, 5),
        ]  # fmt: skip
        assert isinstance(published[0], TranslationFailure) and published[0].message.startswith("translation failed: ")
        assert published[1] == Translation(4, "[de] caption 4", "en", "de", "libretranslate")
    finally:
        await worker.close()


def test_translator_choice(tiny_mt: Path, tmp_path: Path) -> None:
    pool = ModelPool(Settings(model_dir=tmp_path))
    assert make_translator(Settings(model_dir=tmp_path), pool, "tiny", "en", engine_translates=True).name == "whisper"
    with pytest.raises(TranslatorUnavailable):  # Whisper only translates into English
        make_translator(Settings(model_dir=tmp_path, translator="whisper"), pool, "tiny", "de", True)
    with pytest.raises(TranslatorUnavailable):
        make_translator(Settings(model_dir=tmp_path), pool, None, "de", engine_translates=False)
    chosen = make_translator(Settings(model_dir=tmp_path, translate_model=str(tiny_mt)), pool, None, "de", False)
    assert chosen.name == "ctranslate2"
    asyncio.run(chosen.close())
    libre = Settings(model_dir=tmp_path, translate_url="http://127.0.0.1:1")
    assert make_translator(libre, pool, None, "de", False).name == "libretranslate"
    chat = Settings(model_dir=tmp_path, translate_url="http://127.0.0.1:1/v1", translator="openai")
    assert make_translator(chat, pool, None, "de", False).name == "openai"


# -- end to end: speech in, captions and their translations out over SSE ----------------------------
def play(pulse: PulseDaemon, clip_id: str) -> None:
    pulse.play_to_the_end(clip(clip_id).path)


def captions_with_translations(
    server: ServerThread, pulse: PulseDaemon, clip_id: str, **extra: str
) -> list[tuple[str, Any]]:
    sse = SSEClient(server.url)
    try:
        params = {"source": "system", "lang_from": "en", "lang_to": "de", **extra}
        r = httpx.get(server.url + "/start", params=params, timeout=60)
        assert r.json()["code"] == 0, r.json()
        assert r.json()["data"]["translator"] is not None
        play(pulse, clip_id)

        def translated_all(ev: list[tuple[str, dict[str, Any], int | None]]) -> bool:
            finals = {d["id"] for n, d, _ in ev if n == "captions" and d["is_final"] and d["text"].strip()}
            done = {d["id"] for n, d, _ in ev if n in {"translate", "error"} and "id" in d}
            return bool(finals) and finals <= done

        assert sse.wait_for(translated_all)
        httpx.get(server.url + "/stop", timeout=60)
        return [(n, d) for n, d, _ in sse.snapshot() if n in {"captions", "translate", "error"}]
    finally:
        sse.close()


def check_translations_follow_their_captions(events: list[tuple[str, Any]], translator: str, to: str = "de") -> None:
    finals = [d for n, d in events if n == "captions" and d["is_final"] and d["text"].strip()]
    translations = [d for n, d in events if n == "translate"]
    assert finals and [t["id"] for t in translations] == [f["id"] for f in finals]  # every final, in order
    for t in translations:
        final_at = next(
            i for i, (n, d) in enumerate(events) if n == "captions" and d["is_final"] and d["id"] == t["id"]
        )
        assert events.index(("translate", t)) > final_at  # a translation never precedes its caption
        assert t["translator"] == translator and t["lang_to"] == to and isinstance(t["text"], str)


def test_libretranslate_translations_over_sse(pulse: PulseDaemon, fake: FakeTranslationServer, tmp_path: Path) -> None:
    settings = Settings.load(
        ping_interval_s=0.5,
        model_dir=tmp_path,
        pulse_server=pulse.server,
        translator="libretranslate",
        translate_url=fake.server.url,
    )
    server = ServerThread(create_app(settings), timeout_graceful_shutdown=3).start()
    try:
        events = captions_with_translations(server, pulse, "en_pocketsphinx_goforward")
    finally:
        server.stop()
    check_translations_follow_their_captions(events, "libretranslate")
    final = next(d for n, d in events if n == "captions" and d["is_final"] and d["text"].strip())
    translation = next(d for n, d in events if n == "translate" and d["id"] == final["id"])
    assert translation["text"] == f"[de] {final['text']}"


def test_ctranslate2_translations_over_sse(pulse: PulseDaemon, tiny_mt: Path, tmp_path: Path) -> None:
    settings = Settings.load(
        ping_interval_s=0.5,
        model_dir=tmp_path,
        pulse_server=pulse.server,
        translator="ctranslate2",
        translate_model=str(tiny_mt),
    )
    server = ServerThread(create_app(settings), timeout_graceful_shutdown=3).start()
    try:
        events = captions_with_translations(server, pulse, "en_pocketsphinx_goforward")
    finally:
        server.stop()
    check_translations_follow_their_captions(events, "ctranslate2")


def test_start_without_a_translator_still_captions(pulse: PulseDaemon, tmp_path: Path) -> None:
    settings = Settings.load(model_dir=tmp_path, pulse_server=pulse.server)
    server = ServerThread(create_app(settings), timeout_graceful_shutdown=3).start()
    try:
        body = httpx.get(server.url + "/start", params={"lang_to": "zh-Hans"}, timeout=60).json()
        assert body["code"] == 0 and body["data"]["translator"] is None
        assert "without translation" in body["message"]
        assert json.dumps(httpx.get(server.url + "/stop", timeout=60).json()["data"]["lang_to"]) == '"zh-Hans"'
    finally:
        server.stop()


async def test_whisper_translator_uses_the_engines_translate_task(tiny_whisper_dir: Path, tmp_path: Path) -> None:
    pool = ModelPool(Settings(model_dir=tmp_path, allow_model_paths=[tiny_whisper_dir]))  # named by path below
    try:
        engine = await pool.get(str(tiny_whisper_dir))
        assert engine.capabilities.translate
        translator = make_translator(Settings(model_dir=tmp_path), pool, str(tiny_whisper_dir), "en", True)
        audio = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
        text = await translator.translate(TranslationRequest(7, "hallo welt", "de", "en", audio))
        assert isinstance(text, str)  # random weights: plumbing only
        with pytest.raises(TranslationFailed):  # no audio kept for the caption
            await translator.translate(TranslationRequest(8, "hallo", "de", "en", None))
    finally:
        await pool.close()


def test_whisper_translate_task_over_sse(pulse: PulseDaemon, tiny_whisper_dir: Path, tmp_path: Path) -> None:
    settings = Settings.load(
        ping_interval_s=0.5, model_dir=tmp_path, pulse_server=pulse.server, allow_model_paths=[tiny_whisper_dir]
    )  # /start names the model by path, as a client
    server = ServerThread(create_app(settings), timeout_graceful_shutdown=3).start()
    try:
        events = captions_with_translations(
            server, pulse, "en_pocketsphinx_goforward", model=str(tiny_whisper_dir), lang_from="de", lang_to="en"
        )
    finally:
        server.stop()
    # Random weights: the text is gibberish, the plumbing (audio of each final -> translate task) is real.
    check_translations_follow_their_captions(events, "whisper", to="en")
