"""Prompting live Whisper with the session's earlier finals, on vs off (not a test): ``python bench/live_prompt.py``.

Whisper can be given earlier text as context (faster-whisper's ``initial_prompt``; offline it conditions each
30 s window on the previous one).  A live session's utterances are decoded one by one, so the question is
whether handing each utterance the session's last finals as its prompt helps or hurts.  For each language,
every reference clip of it (<= 20 s) is streamed, one after another with 1.5 s pauses, through one
``LiveSession`` pushed as fast as it takes the audio; once as Hearline does it (the client's prompt only: off)
and once with the last ``PROMPT_CHARS`` of the session's finals as the prompt of every later pass (on).  Printed:
corpus WER of the finals against the references, both ways, same run, same model.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.corpus import manifest, wer  # noqa: E402

from hearline.config import Settings  # noqa: E402
from hearline.live.local_agreement import PROMPT_CHARS, LocalAgreementPolicy  # noqa: E402
from hearline.live.session import Final, LiveOptions, LiveSession  # noqa: E402
from hearline.models.pool import ModelPool  # noqa: E402
from live_streams import SR, corpus_audio  # noqa: E402


async def finals_of(pool: ModelPool, clips: list, language: str, context: bool) -> str:
    session = LiveSession(pool, None, LiveOptions(language=language))
    await session.start()
    policy = session._policy
    assert isinstance(policy, LocalAgreementPolicy)
    texts: list[str] = []

    async def read() -> None:
        async for event in session.events():
            if isinstance(event, Final) and event.text:
                texts.append(event.text)
                if context:  # every later pass, partial and final, is prompted with the finals so far
                    policy._options = dataclasses.replace(policy._options, prompt=" ".join(texts)[-PROMPT_CHARS:])

    reader = asyncio.create_task(read())
    audio = corpus_audio(clips, gap_s=1.5)
    for i in range(0, audio.size, SR):
        await session.push(audio[i : i + SR])
    await session.flush()
    await reader
    await session.close()
    return " ".join(texts)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pool = ModelPool(Settings.load(model_dir=Path(tmp) / "models", model=args.model))
        engine = await pool.get(None)
        print(f"model {engine.name}; context: the last {PROMPT_CHARS} characters of the session's finals")
        print(f"{'language':>8} {'clips':>5} {'audio s':>8} {'WER off':>8} {'WER on':>7}")
        for language in args.languages:
            clips = [c for c in manifest() if c.language == language and c.text and c.duration <= 20]
            if not clips:
                continue
            reference = " ".join(c.text or "" for c in clips)
            off = wer(reference, await finals_of(pool, clips, language, context=False))
            on = wer(reference, await finals_of(pool, clips, language, context=True))
            seconds = sum(c.duration for c in clips)
            print(f"{language:>8} {len(clips):>5} {seconds:>8.0f} {off:>8.3f} {on:>7.3f}", flush=True)
        await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--languages", nargs="+", default=["en", "de", "es", "fr", "pt"])
    asyncio.run(main(parser.parse_args()))
