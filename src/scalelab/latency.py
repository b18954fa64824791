"""Latency records and the arithmetic on them, without torch (the report and `recommend` read
them too): how a latency is estimated from sub-series of timed calls, the rule that flags an
unstable one, medians, speedups, and summary.json's flat form.

A measured latency is `{batch: {"median", "iqr", "repeats", "calls", "subseries", "threads",
"remeasured", "unstable"}}` in ms (what `train.measure.latencies` returns and the store keeps).
Wherever one number per batch is needed (speedups, reference latencies kept in a variant's
`extra`, messages, summary.json) it is the median, flattened by `medians`; the spread goes beside
it under the same name with `_iqr_ms` for `_ms`, and the batches whose latency is flagged under
`_unstable` (see `flat`).

How a latency is taken (`train.measure.latency_ms`): the model is called back to back, with no
pause, until at least `repeats` calls and at least `min_span_s(repeats)` seconds (0.1 s at the
default 30 repeats) have passed; those calls are split into `subseries_count(repeats)`
consecutive sub-series of equal size (5 at 30 repeats, one below 9: `split`), and the latency is
the median of the fastest sub-series, with that sub-series' IQR (`fastest`). Why: the machine
has slow spells in which calls run 1.2-2x slower for up to tens of ms, and one series of 30
calls of these models lasts 0.6-10 ms, so it can fall entirely inside a spell: all its calls
are slow alike, its IQR is small and no rule on the series can tell it from a steady one. Calls
covering 0.1 s outlast a spell, and the fastest fifth of them is the latency the model has when
the machine lets it run (timeit's reasoning: the low end is the figure, the rest is
interference). Measured (benchmarks/latency_estimators.py, 12 rounds, estimators rotated round
by round; speedups of prune:0.5, bf16 and int8 over a 99,690-parameter MLP at batch 1 and 32;
benchmarks/RESULTS.md), worst speedup max/min over the 12 rounds on the idle 2-core machine:
one series of 30 (the first rule) 1.79; 5 sub-series of 6 calls started 60 ms apart with a
sleep between them (the second rule) 2.39; calls back to back for 0.25 s, fastest of 5 chunks,
1.05; for 0.1 s 1.04 (this rule). The sleeping rule had won under load (1.07-1.09 against
1.11-1.43) and lost idle: after a pause of tens of ms an idle core's first calls run slow (it
has dropped its clock or been descheduled), so every sub-series started cold. Calling without
pause keeps the core busy throughout. The cost: 0.1 s per latency for models whose calls last
well under 3 ms, nothing more for slower ones; with the tests' 3 repeats 10 ms and one
sub-series.

Why a measurement is flagged: a kept sub-series whose IQR exceeds `UNSTABLE_IQR` times its median
had its calls disturbed (an OpenMP barrier or the timing thread waiting a scheduler tick: calls
of 4, 8, ... 100 ms among calls of 0.1 ms measure an IQR of 50% to 40,000% of the median; steady
series of the tests' tiny models 1-25%). Such a measurement is taken again, up to `MAX_SERIES`
in all, until one is steady; when none is, the steadiest is kept and flagged `unstable`. Why
three and not two: on the idle 2-core machine a latency and its one re-measurement were both
caught in slow spells. A latency measured on a loaded machine is indicative only.

How the calls are timed, and what was measured before choosing it (benchmarks/latency_stability.py
and one-off probes on a 2-core VM; speedup spreads are the worst max / min over three rounds):
- On one CPU thread (`train.measure.LATENCY_THREADS`, its comment gives the measurement).
- One call per sample, not blocks of calls lasting ~1 ms each (timeit's autorange): on the
  loaded machine (load average 5.3, 1 thread) the medians of blocks spread more than those of
  single calls (5.6 against 2.2): a block is long enough to catch a preemption that most calls of
  0.02-0.7 ms escape, and the clock (`time.perf_counter`, well under 1 µs) is far finer than the
  shortest call.
- The base rung timed right before its variant, not interleaved call by call: alternating single
  calls changes what is measured (each call follows the other model, which evicted its weights
  from the caches: int8's speedup at batch 32 came out 2.51 interleaved against 3.09 timed in
  turn).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

UNSTABLE_IQR = 0.3  # a measurement is unstable when its IQR exceeds this fraction of its median
MAX_SERIES = 3  # measurements taken at most, while each is unstable (the reason is above)
SUBSERIES_CALLS = 6  # `repeats` per sub-series, about (`subseries_count`)
SPAN_PER_REPEAT_S = 0.1 / 30  # seconds of calls at least per repeat (`min_span_s`)
UNSTABLE_MARK = " (unstable)"  # what tables print beside a flagged latency


def spread(times_ms: Sequence[float]) -> dict[str, float]:
    """Median and interquartile range of a series of timed calls (ms)."""
    q1, _, q3 = statistics.quantiles(times_ms, n=4)
    return {"median": statistics.median(times_ms), "iqr": q3 - q1}


def subseries_count(repeats: int) -> int:
    """How many sub-series a latency of `repeats` splits its calls into: `repeats /
    SUBSERIES_CALLS` rounded, at least one."""
    return max(1, round(repeats / SUBSERIES_CALLS))


def min_span_s(repeats: int) -> float:
    """Seconds a latency of `repeats` keeps calling the model, at least (0.1 s at 30)."""
    return repeats * SPAN_PER_REPEAT_S


def split(times: Sequence[float], k: int) -> list[list[float]]:
    """`times` as k consecutive sub-series whose sizes differ by one at most."""
    n = len(times)
    sizes = [n // k + (i < n % k) for i in range(k)]
    starts = [sum(sizes[:i]) for i in range(k)]
    return [list(times[a:a + m]) for a, m in zip(starts, sizes, strict=True)]


def fastest(subseries: Sequence[Sequence[float]]) -> dict[str, float]:
    """Median and IQR (ms) of the sub-series with the lowest median: the latency the model has
    outside the machine's slow spells (the reason is above)."""
    return min((spread(s) for s in subseries), key=lambda e: e["median"])


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


__all__ = ["MAX_SERIES", "SPAN_PER_REPEAT_S", "SUBSERIES_CALLS", "UNSTABLE_IQR", "UNSTABLE_MARK",
           "fastest", "flagged", "flat", "is_unstable", "medians", "min_span_s", "relative_iqr",
           "speedups", "split", "spread", "subseries_count", "unstable_batches"]
