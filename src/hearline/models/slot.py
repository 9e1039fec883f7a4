"""One model's place in the pool: its engine once loaded, the gates that admit its work, its batcher.

The pool keeps one per model name; the gates are made when the engine is loaded, sized from what the engine
declares (a batching model admits many jobs to its lanes, since they wait in the batcher, and its unbatched
work one per replica at a gate of its own).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from hearline.engines.base import Engine, Transcript, WindowRequest
from hearline.models.resolve import ModelSpec
from hearline.models.scheduler import RULES, Batcher, Lane, PriorityGate, Work


@dataclass
class ModelSlot:
    spec: ModelSpec
    engine: Engine | None = None
    load_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    lanes: dict[bool, PriorityGate] | None = None  # live lane (True) and batch lane (False)
    batcher: Batcher[WindowRequest, Transcript] | None = None  # window decodes of all sessions, batched
    solo: PriorityGate | None = None  # a batching model's work that does not batch: a place per replica
    last_used: float = field(default_factory=time.monotonic)

    def open_gates(self, capacity: int, batcher: Batcher[WindowRequest, Transcript] | None) -> None:
        """Fresh gates for a newly loaded engine: ``capacity`` jobs per lane, times the batch size when the
        model batches (admitted jobs wait in the batcher, not on a core)."""
        self.batcher = batcher
        self.solo = PriorityGate(batcher.parallel) if batcher is not None else None
        if batcher is not None:
            capacity *= batcher.size
        self.lanes = {True: PriorityGate(capacity), False: PriorityGate(capacity)}

    def gate(self, work: Work) -> PriorityGate:
        """The gate that admits ``work`` (the slot is loaded)."""
        assert self.lanes is not None
        rule = RULES[work]
        if self.solo is not None and not rule.batched:
            return self.solo
        return self.lanes[rule.lane is Lane.LIVE]

    def _gates(self) -> list[PriorityGate]:
        return [*(self.lanes or {}).values(), *([self.solo] if self.solo is not None else [])]

    @property
    def active(self) -> int:
        return sum(gate.active for gate in self._gates())

    @property
    def waiting(self) -> int:
        return sum(gate.waiting for gate in self._gates())

    @property
    def batching(self) -> int:
        """Admitted jobs that may submit to the batcher, one window at a time each."""
        return sum(gate.active for gate in self.lanes.values()) if self.lanes else 0
