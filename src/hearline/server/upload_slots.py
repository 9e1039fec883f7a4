"""How many uploads are read and decoded at once (``--max-uploads``), on both REST doors together.

Each upload may hold up to ``--max-upload-mb`` of body and ``--max-audio-minutes`` of samples while it is
read and decoded, before the model's queue sees it; so past the limit a new upload is refused at once
(429 + ``Retry-After``, in the door's shape) rather than decoded side by side until memory runs out.
Transcription itself is bounded by the pool's gates; Deepgram's pre-recorded door keeps its place until it
answers, since its body stays in memory until then.  The refusal's ``Retry-After`` is the longer of a read's
few seconds and the default model's queue: an upload retried sooner would only wait there.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from typing import Any

from hearline.server.errors import APIError

logger = logging.getLogger(__name__)

RETRY_S = 2  # an upload's read + decode is seconds: the slot is free again soon


class UploadsFull(APIError):
    def __init__(self, limit: int, retry_after: float = RETRY_S) -> None:
        super().__init__(
            429,
            f"{limit} uploads are being read and decoded already, the most this server takes at once; retry shortly",
            code="too_many_uploads",
            headers={"Retry-After": str(max(RETRY_S, math.ceil(retry_after)))},
        )


@contextlib.contextmanager
def upload_slot(state: Any) -> Iterator[None]:
    """Hold one of ``settings.max_uploads`` places for the body's read and decode; :class:`UploadsFull` if none."""
    limit = int(state.settings.max_uploads)
    if limit <= 0:
        yield
        return
    active = getattr(state, "uploads_active", 0)
    if active >= limit:
        logger.info("upload refused: %d already being read and decoded", active)
        raise UploadsFull(limit, state.pool.expected_wait())
    state.uploads_active = active + 1
    try:
        yield
    finally:
        state.uploads_active -= 1
