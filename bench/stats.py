"""Percentiles as the bench scripts print them: nearest-rank, so a p95 is a latency that was observed."""

from __future__ import annotations

import math


def pct(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile of ``values`` (NaN for none)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def fmt(values: list[float]) -> str:
    """``p50 ... s  p95 ... s  (n=...)``: one latency figure line."""
    return f"p50 {pct(values, 50):.2f} s  p95 {pct(values, 95):.2f} s  (n={len(values)})"
