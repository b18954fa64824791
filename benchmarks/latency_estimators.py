"""How one latency should be estimated from timed calls, measured: the machine's slow spells, and
what each estimator of a latency (and of a speedup, a ratio of two) does with them.

The models are those of benchmarks/latency_stability.py's tiny study, built directly (timing does
not depend on trained weights): its 99,690-parameter MLP on digits (64 -> 280 -> 280 -> 10) as
the base, and three variants of it: the MLP pruned to half its hidden width (`prune:0.5`), the
base in bf16, and the base quantized to int8 in ONNX Runtime (`int8`). All timing is on one
thread (`train.measure.LATENCY_THREADS`).

1. Spells: the base at batch 32 called back to back for `--trace` seconds, each call's wall time
   and the thread's CPU time; a call is slow when it takes over 1.2x the trace's median. Prints
   the share of slow calls, how long runs of slow calls last, and whether the thread lost its
   core (wall >> CPU) or the core ran slower (CPU time itself up).
2. Estimators, each giving every variant's speedup over the base at batch 1 and 32, `--rounds`
   times, estimators in a rotated order round by round so the load hits them alike:
   - `series`: one series of 30 consecutive calls, its median, measured again (up to 3 series)
     while its IQR is over 30% of the median (the rule before sub-series);
   - `min-of-spread KxSs` (one per `--spread` entry): 30 calls in K sub-series whose starts lie
     S / K seconds apart, each after one untimed call; the median of the fastest sub-series
     (`scalelab.latency.fastest`; the library's rule is 5 sub-series 60 ms apart, `5x0.3`);
   - `pooled`: the first spread's calls, the median of all of them;
   - `busy KxSs` (one per `--busy` entry): calls back to back for S seconds (at least 30),
     no pause, split into K consecutive sub-series; the median of the fastest;
   - `paired`: the base's and the variant's sub-series interleaved as the first spread, the
     median of the ratios of paired sub-series medians (a speedup only).
   For each: speedup max/min across all rounds and the share of windows of 3 consecutive rounds
   (3 `compress` runs) within 10%, the base latency's max/min, and the wall time one latency
   costs.

    .venv/bin/python benchmarks/latency_estimators.py --spread 5x0.3,3x0.3,10x0.3,5x0.15 \
        --json benchmarks/results/latency_estimators_loaded.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

Call = Callable[[], Any]
REPEATS = 30
SLOW = 1.2  # a call over this multiple of the trace's median is slow


def mlp(hidden: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 10)).eval()


def models(tmp: Path) -> dict[str, nn.Module]:
    from scalelab.compress.quantize import int8_dynamic

    base = mlp(280)
    q, _, _, _ = int8_dynamic(base, torch.zeros(2, 64), tmp / "q.onnx")
    return {"base": base, "prune:0.5": mlp(140),
            "bf16": nn.Sequential(copy.deepcopy(base).to(torch.bfloat16)), "int8": q}


def caller(model: nn.Module, batch: int) -> Call:
    x = torch.randn(batch, 64)
    if next(iter(model.parameters()), torch.zeros(())).dtype == torch.bfloat16:
        x = x.to(torch.bfloat16)
    return lambda: model(x)


def timed(call: Call, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def iqr(xs: list[float]) -> float:
    q1, _, q3 = statistics.quantiles(xs, n=4)
    return q3 - q1


def series(call: Call) -> float:
    timed(call, 5)
    tries = [timed(call, REPEATS)]
    while iqr(tries[-1]) > 0.3 * statistics.median(tries[-1]) and len(tries) < 3:
        tries.append(timed(call, REPEATS))
    return statistics.median(min(tries, key=lambda t: iqr(t) / statistics.median(t)))


def spread_subseries(calls: list[Call], k: int, span: float) -> list[list[list[float]]]:
    """k sub-series of REPEATS // k timed calls of each of `calls` in turn, each after one
    untimed call (caches warm again after the pause), their starts `span` / k apart: per call,
    the sub-series' times."""
    m = REPEATS // k
    out: list[list[list[float]]] = [[] for _ in calls]
    start = time.perf_counter()
    for i in range(k):
        for j, call in enumerate(calls):
            call()
            out[j].append(timed(call, m))
        wait = start + (i + 1) * span / k - time.perf_counter()
        if wait > 0 and i < k - 1:
            time.sleep(wait)
    return out


def busy_subseries(call: Call, k: int, span: float) -> list[list[float]]:
    """Calls back to back (no pause: the core never idles) until `span` seconds and at least
    REPEATS calls have passed, in k consecutive sub-series of equal count."""
    call()
    times: list[float] = []
    end = time.perf_counter() + span
    while len(times) < REPEATS or time.perf_counter() < end:
        times.extend(timed(call, 1))
    m = len(times) // k
    return [times[i * m:(i + 1) * m] for i in range(k)]


def fastest(subs: list[list[float]]) -> float:
    """The library's latency of these sub-series (the median of the fastest)."""
    from scalelab.latency import fastest as library_fastest

    return library_fastest(subs)["median"]


def pooled(subs: list[list[float]]) -> float:
    return statistics.median([t for s in subs for t in s])


def trace(call: Call, seconds: float) -> dict[str, Any]:
    """Calls back to back: wall and thread CPU per call; the slow calls and their runs."""
    timed(call, 20)
    walls, cpus, starts = [], [], []
    end = time.perf_counter() + seconds
    while (t0 := time.perf_counter()) < end:
        c0 = time.thread_time()
        call()
        walls.append((time.perf_counter() - t0) * 1e3)
        cpus.append((time.thread_time() - c0) * 1e3)
        starts.append(t0)
    med = statistics.median(walls)
    slow = [w > SLOW * med for w in walls]
    runs, i = [], 0
    while i < len(slow):
        if slow[i]:
            j = i
            while j + 1 < len(slow) and slow[j + 1]:
                j += 1
            runs.append((starts[j] - starts[i]) * 1e3 + walls[j])
            i = j + 1
        else:
            i += 1
    slow_w = [w for w, s in zip(walls, slow, strict=True) if s]
    slow_c = [c for c, s in zip(cpus, slow, strict=True) if s]
    cpu_med = statistics.median(cpus)
    return {"calls": len(walls), "median_ms": med, "cpu_median_ms": cpu_med,
            "slow_share": sum(slow) / len(slow),
            "slow_share_of_time": sum(slow_w) / sum(walls),
            "slow_calls_cpu_over_median": (statistics.median(slow_c) / cpu_med
                                           if slow_c else None),
            "slow_calls_cpu_share_of_wall": (sum(slow_c) / sum(slow_w) if slow_w else None),
            "slow_runs": len(runs),
            "slow_run_ms_p50_p90_max": (
                [statistics.median(runs),
                 statistics.quantiles(runs, n=10, method="inclusive")[-1], max(runs)]
                if len(runs) >= 2 else None)}


def one_round(fns: dict[str, dict[int, Call]], configs: list[tuple[int, float]],
              shift: int, busy: list[tuple[int, float]] = ()) -> dict:
    """Each estimator's base latency and speedups for every variant and batch; `configs`: the
    (sub-series, span) of the spread estimators (the first also for `spread-pooled`, `paired`)."""
    spreads = {f"spread {k}x{span:g}s": (k, span) for k, span in configs}
    busies = {f"busy {k}x{span:g}s": (k, span) for k, span in busy}
    kinds = ["series", "paired", *spreads, *busies]
    kinds = kinds[shift % len(kinds):] + kinds[:shift % len(kinds)]
    out: dict[str, dict] = {"cost_s": {}}
    k0, span0 = configs[0]
    for kind in kinds:
        t0 = time.perf_counter()
        n_lat = 0
        for name, by_batch in fns.items():
            if name == "base":
                continue
            for b, call in by_batch.items():
                base = fns["base"][b]
                key = f"{name} b{b}"
                if kind == "series":
                    lb, lv = series(base), series(call)
                    out.setdefault("series", {})[key] = {"base": lb, "speedup": lb / lv}
                    n_lat += 2
                elif kind == "paired":
                    sb, sv = spread_subseries([base, call], k0, span0)
                    ratios = [statistics.median(a) / statistics.median(c)
                              for a, c in zip(sb, sv, strict=True)]
                    out.setdefault("paired", {})[key] = {"base": fastest(sb),
                                                         "speedup": statistics.median(ratios)}
                    n_lat += 1  # one pair: the same span as one latency of the others
                elif kind in busies:
                    k, span = busies[kind]
                    sb, sv = busy_subseries(base, k, span), busy_subseries(call, k, span)
                    out.setdefault(f"min-of-{kind}", {})[key] = {
                        "base": fastest(sb), "speedup": fastest(sb) / fastest(sv)}
                    n_lat += 2
                else:
                    k, span = spreads[kind]
                    sb, = spread_subseries([base], k, span)
                    sv, = spread_subseries([call], k, span)
                    out.setdefault(f"min-of-{kind}", {})[key] = {
                        "base": fastest(sb), "speedup": fastest(sb) / fastest(sv),
                        "base_second_over_fastest": sorted(map(statistics.median, sb))[1]
                        / fastest(sb)}
                    if (k, span) == (k0, span0):
                        out.setdefault("pooled", {})[key] = {"base": pooled(sb),
                                                             "speedup": pooled(sb) / pooled(sv)}
                    n_lat += 2
        out["cost_s"][kind] = (time.perf_counter() - t0) / n_lat
    return out


def summarize(rounds: list[dict]) -> dict[str, Any]:
    out = {}
    for est in [e for e in rounds[0] if e != "cost_s"]:
        rows, in10, windows = {}, 0, 0
        for key in rounds[0][est]:
            sp = [r[est][key]["speedup"] for r in rounds]
            base = [r[est][key]["base"] for r in rounds]
            wins = [max(sp[i:i + 3]) / min(sp[i:i + 3]) for i in range(max(len(sp) - 2, 1))]
            in10 += sum(w <= 1.10 for w in wins)
            windows += len(wins)
            rows[key] = {"speedups": sp, "speedup_max_min": max(sp) / min(sp),
                         "worst_3_round_window": max(wins),
                         "base_max_min": max(base) / min(base)}
        out[est] = {"rows": rows, "windows_within_10pct": in10 / windows,
                    "worst_speedup_max_min": max(r["speedup_max_min"] for r in rows.values()),
                    "median_speedup_max_min": statistics.median(
                        r["speedup_max_min"] for r in rows.values()),
                    "median_base_max_min": statistics.median(
                        r["base_max_min"] for r in rows.values())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--spread", default="5x0.3",
                    help="comma-separated SUBSERIESxSPAN_S of the spread estimators")
    ap.add_argument("--busy", default="",
                    help="comma-separated SUBSERIESxSPAN_S of back-to-back estimators: calls "
                         "without pauses for SPAN seconds, the fastest of SUBSERIES chunks")
    ap.add_argument("--trace", type=float, default=3.0, help="seconds of back-to-back calls")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    configs = [(int(k), float(s)) for k, s in (c.split("x") for c in args.spread.split(","))]
    busy = [(int(k), float(s)) for k, s in (c.split("x") for c in args.busy.split(",") if c)]
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        ms = models(Path(tmp))
        fns = {n: {b: caller(m, b) for b in (1, 32)} for n, m in ms.items()}
        spells = trace(fns["base"][32], args.trace)
        print("spells (base b32 back to back):", json.dumps(spells))
        rounds = []
        for i in range(args.rounds):
            rounds.append(one_round(fns, configs, i, busy))
            print(f"round {i + 1}: load {os.getloadavg()[0]:.2f}", flush=True)
    summary = summarize(rounds)
    cost = {e: statistics.median(r["cost_s"][e] for r in rounds) for e in rounds[0]["cost_s"]}
    print(f"\n{'estimator':24s} {'3-run windows <=1.10':>21s} {'worst max/min':>14s} "
          f"{'median max/min':>15s} {'base lat max/min':>17s}")
    for est, s in summary.items():
        print(f"{est:24s} {s['windows_within_10pct']:>21.0%} {s['worst_speedup_max_min']:>14.2f} "
              f"{s['median_speedup_max_min']:>15.2f} {s['median_base_max_min']:>17.2f}")
    for est, s in summary.items():
        print(f"\n{est}: speedup max/min per row (over {args.rounds} rounds), worst 3-run window")
        for key, r in s["rows"].items():
            print(f"  {key:14s} {r['speedup_max_min']:6.2f} {r['worst_3_round_window']:6.2f}  "
                  + " ".join(f"{v:.2f}" for v in r["speedups"]))
    print(f"\nwall s per latency: {json.dumps({k: round(v, 3) for k, v in cost.items()})}; "
          f"load {load0:.2f} -> {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "spells": spells, "summary": summary,
                                         "cost_s_per_latency": cost, "rounds": rounds},
                                        indent=1))


if __name__ == "__main__":
    main()
