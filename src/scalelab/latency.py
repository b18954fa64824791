"""Latency records and the arithmetic on them, without torch (the report and `recommend` read
them too): the spread of a series of timed calls, the rule that flags an unstable one, medians,
speedups, and summary.json's flat form.

A measured latency is `{batch: {"median", "iqr", "repeats", "threads", "remeasured",
"unstable"}}` in ms (what `train.measure.latencies` returns and the store keeps). Wherever one
number per batch is needed (speedups, reference latencies kept in a variant's `extra`, messages,
summary.json) it is the median, flattened by `medians`; the spread goes beside it under the same
name with `_iqr_ms` for `_ms`, and the batches whose latency is flagged under `_unstable` (see
`flat`).

Why a series is flagged: at the default 30 repeats the median of a series has a standard error of
about 1.2533 * sigma / sqrt(30) = 0.17 * IQR (sigma = IQR / 1.349 for a normal spread). With the
IQR at 30% of the median the median is known to about ±5%, and the ratio of two such medians (a
speedup) to about ±7%: the edge of the ±10% a speedup must reproduce to. Steady series of the
tiny models of the tests measure an IQR of 1-25% of their median on a 2-core machine; series
that lost the cores to other processes (an OpenMP barrier waiting a scheduler tick for its
worker thread: calls of 4, 8, ... 100 ms among calls of 0.1 ms) measure 50% to 40,000%. So a
series whose IQR exceeds `UNSTABLE_IQR` times its median is measured again, up to `MAX_SERIES`
series in all, until one is steady; when none is, the steadiest is kept and flagged `unstable`.
Why three and not two: on the idle 2-core machine (default methods, 3 rounds of `compress`,
benchmarks/latency_stability.py) 17 of 18 speedups agreed within 5% across rounds, and the 18th
(prune:0.5 at batch 1, 0.114 ms against 0.059) was a base series and its one re-measurement both
caught in slow spells; a third series costs 30 tiny calls. A series that ran
entirely inside a slow spell has a small IQR and is not caught by this rule: its median is the
slow one (a latency measured on a loaded machine is indicative only).

How a series is timed (`train.measure.latency_ms`), and what was measured before choosing it
(benchmarks/latency_stability.py and one-off probes on a 2-core VM; speedup spreads are the worst
max / min over three rounds, across int8, fp16 and a smaller fp32 model at batch 1 and 32):
- On one CPU thread (`train.measure.LATENCY_THREADS`, its comment gives the measurement).
- One call per sample, not blocks of calls lasting ~1 ms each (timeit's autorange): on the
  loaded machine (load average 5.3, 1 thread) the medians of blocks spread more than those of
  single calls (5.6 against 2.2): a block is long enough to catch a preemption that most calls of
  0.02-0.7 ms escape, and the clock (`time.perf_counter`, well under 1 µs) is far finer than the
  shortest call.
- The base rung timed right before its variant, not interleaved with it: alternating single
  calls changes what is measured (each call follows the other model, which evicted its weights
  from the caches: int8's speedup at batch 32 came out 2.51 interleaved against 3.09 timed in
  turn), and the medians of interleaved blocks spread as much (4.5). The minima of interleaved
  blocks were steady (1.10) but a ratio of minima is not the ratio of the medians that every
  table shows beside a speedup.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

UNSTABLE_IQR = 0.3  # a series is unstable when its IQR exceeds this fraction of its median
MAX_SERIES = 3  # series timed at most, while each is unstable (the reason is above)
UNSTABLE_MARK = " (unstable)"  # what tables print beside a flagged latency


def spread(times_ms: Sequence[float]) -> dict[str, float]:
    """Median and interquartile range of a series of timed calls (ms)."""
    q1, _, q3 = statistics.quantiles(times_ms, n=4)
    return {"median": statistics.median(times_ms), "iqr": q3 - q1}


def relative_iqr(entry: Mapping[str, Any]) -> float:
    """IQR over median of a latency entry (inf for a non-positive median)."""
    median, iqr = float(entry["median"]), float(entry.get("iqr") or 0.0)
    return iqr / median if median > 0 else float("inf")


def is_unstable(entry: Any) -> bool:
    """Whether a latency entry is flagged: its recorded flag, or (records made before the flag
    existed) the same rule applied to its stored median and IQR. A bare number has no spread
    and is never flagged."""
    if not isinstance(entry, Mapping):
        return False
    if "unstable" in entry:
        return bool(entry["unstable"])
    return entry.get("iqr") is not None and relative_iqr(entry) > UNSTABLE_IQR


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


def unstable_batches(latency: Mapping[str, Any] | None) -> list[str]:
    """The batches (as strings, numerically sorted) whose latency entry is flagged."""
    return sorted((str(b) for b, v in (latency or {}).items() if is_unstable(v)), key=int)


def flat(latency: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """The flat form of a measured latency: `{prefix}latency_ms` (medians), `{prefix}latency_
    iqr_ms` (IQRs, where known) and `{prefix}latency_unstable` (flagged batches)."""
    lat = latency or {}
    return {f"{prefix}latency_ms": medians(lat),
            f"{prefix}latency_iqr_ms": {str(b): v.get("iqr") for b, v in lat.items()
                                        if isinstance(v, Mapping)},
            f"{prefix}latency_unstable": unstable_batches(lat)}


def flagged(model: Mapping[str, Any], batch: str | int, prefix: str = "") -> bool:
    """Whether a model's latency at `batch` is flagged, from either form: a store row (latency
    entries with their flag) or summary.json's flat form (`latency_unstable`)."""
    batch = str(batch)
    listed = model.get(f"{prefix}latency_unstable")
    if listed is not None:
        return batch in {str(b) for b in listed}
    return is_unstable((model.get(f"{prefix}latency_ms") or {}).get(batch))


__all__ = ["MAX_SERIES", "UNSTABLE_IQR", "UNSTABLE_MARK", "flagged", "flat", "is_unstable",
           "medians", "relative_iqr", "speedups", "spread", "unstable_batches"]
