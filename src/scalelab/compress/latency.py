"""Latency dicts, one way: a measured latency is `{batch: {"median", "iqr", ...}}` (what
`train.measure.latencies` returns); everywhere a single number per batch is needed (speedups,
stored reference latencies, messages) it is the median, flattened by `medians`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def medians(latency: Mapping[str, Any] | None) -> dict[str, float]:
    """`{batch: median ms}` of a measured latency dict (values that are already numbers, as in
    summary.json, pass through)."""
    out: dict[str, float] = {}
    for batch, value in (latency or {}).items():
        out[str(batch)] = float(value["median"] if isinstance(value, Mapping) else value)
    return out


def speedups(base: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> dict[str, float]:
    """base / new per batch size both measured (either form of `medians`' input)."""
    b, n = medians(base), medians(new)
    return {k: b[k] / v for k, v in n.items() if k in b and v > 0}


__all__ = ["medians", "speedups"]
