"""The bound on uploads read and decoded at once: a refusal's ``Retry-After`` is the model's real queue.

Driven through a real ``ModelPool`` holding a fake model's jobs (tests/helpers/fake_engine.py), so the queue
is known exactly; tests/server/test_rest_errors.py covers the refusal on both REST doors of a real server.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from hearline.models.pool import ModelPool
from hearline.models.resolve import ENGINE_MODULES
from hearline.server.upload_slots import RETRY_S, UploadsFull, upload_slot
from tests.helpers.fake_engine import fake_settings


def _refusal(state: SimpleNamespace) -> int:
    with pytest.raises(UploadsFull) as refused, upload_slot(state):
        pass
    assert refused.value.status == 429 and refused.value.code == "too_many_uploads"
    return int(refused.value.headers["Retry-After"])


async def test_a_refused_upload_is_told_the_model_queue_it_would_join(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ENGINE_MODULES, "fake", "tests.helpers.fake_engine")
    settings = fake_settings(
        tmp_path, ["a"], model="a", max_uploads=1, workers=1, max_concurrency_per_model=1, max_queue_per_model=8
    )
    pool = ModelPool(settings)
    engine = await pool.get("a")
    state = SimpleNamespace(settings=settings, pool=pool, uploads_active=1)
    assert _refusal(state) == RETRY_S  # an idle model: only the read ahead of it
    release = threading.Event()

    def job() -> None:
        release.wait(10)

    try:
        release.set()
        await pool.run(engine, lambda: time.sleep(1.5))  # transcriptions take 1.5 s here
        release.clear()
        queue = [asyncio.create_task(pool.run(engine, job)) for _ in range(4)]
        await asyncio.sleep(0.2)
        assert pool.work_by_model()["a"] == (3, 1)
        retry = _refusal(state)
        assert retry == math.ceil(pool.expected_wait()) and retry >= 4 * 1.5  # three queued and itself, 1.5 s each
        release.set()
        await asyncio.gather(*queue)
    finally:
        release.set()
        await pool.close()
