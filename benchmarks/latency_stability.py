"""Latency stability of `scalelab compress`: the same variants measured several times, the
current way and the old way, in one process and under the same load.

It trains a tiny study (a 2-rung MLP ladder on scikit-learn's digits, about 30 s on 2 cores) in
a temporary folder, or reuses `--study FOLDER`, then runs the compression driver
(`scalelab.compress.compress_study`, what `scalelab compress` calls) with the default methods
that apply (`--methods` for others) on copies of it, `--rounds` times each way, alternating the two
ways round by round:

- now: CPU latency timed on `train.measure.LATENCY_THREADS` threads (set around each timing and
  restored), ONNX Runtime sessions without spin-waiting (`export.ort_session`), each latency the
  median of the fastest of 5 sub-series of calls back to back over 0.1 s at least
  (`latency.min_span_s`, `latency.fastest`), and a measurement whose IQR is over
  `latency.UNSTABLE_IQR` of its median taken again and flagged when still unstable;
- old: timing on the process's threads (all cores), ONNX Runtime's default (its threads spin
  after every run) and one series of consecutive calls per latency, never flagged (as at
  b309b61). `--no-old` skips it.

It prints each variant's median latency and speedup over the base rung per round, their spread
across rounds (max / min), and writes them as JSON. The cause is measured first (`--probe`
rounds): the CPU a session burns in the 20 ms after a run, and the medians of PyTorch series of
the base rung timed right after an ONNX Runtime series (with spinning on, off) or with none before
it, on the process's threads and on `LATENCY_THREADS`: how often one is far slower than the best
(median over twice the best series median) and their spread (max / min); conditions alternate
round by round so the machine's load hits them alike.

    .venv/bin/python benchmarks/latency_stability.py \
        --json benchmarks/results/latency_stability_idle_default.json

The target (issue 21): speedups within 10% of each other (max / min <= 1.10) across 3 rounds on
an idle machine. On a loaded machine the figures are indicative: the load is printed with them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

SPEC = """name: latency-stability
task: {name: digits}
family: {name: mlp, depth: 2}
ladder: {sizes: [1.0e4, 1.0e5]}
train: {tokens: 6000, batch_size: 64, lr: 3.0e-3, eval_every: 50, checkpoint_every: 500,
        eval_tokens: 400, final_eval_tokens: 400}
measure: {latency_repeats: 30}
fit: {bootstrap: 10}
device: cpu
"""
WAYS = ("now", "old")


def machine_load() -> dict[str, Any]:
    """The 1-minute load average and, where the kernel reports it, the share of the last 10 s in
    which some task waited for a CPU (pressure stall information)."""
    out: dict[str, Any] = {"loadavg_1m": os.getloadavg()[0], "cpu_pressure_some_avg10": None}
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        out["cpu_pressure_some_avg10"] = float(first.split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        pass
    return out


def train_study(root: Path) -> Path:
    spec = root / "spec.yaml"
    spec.write_text(SPEC)
    folder = root / "study"
    subprocess.run([sys.executable, "-m", "scalelab", "run", str(spec), "--out", str(folder)],
                   check=True, capture_output=True, text=True)
    return folder


@contextmanager
def old_way() -> Iterator[None]:
    """Timing on the process's threads, ONNX Runtime's default spinning, one series of
    consecutive calls and no re-measurement (the b309b61 measurement)."""
    from scalelab import export, latency
    from scalelab.train import measure

    session, line, threads = export.ort_session, latency.UNSTABLE_IQR, measure.LATENCY_THREADS
    calls, span = latency.SUBSERIES_CALLS, latency.SPAN_PER_REPEAT_S
    export.ort_session = lambda path: session(path, spin=True)
    latency.UNSTABLE_IQR = math.inf
    latency.SUBSERIES_CALLS = math.inf  # one sub-series: the repeats back to back
    latency.SPAN_PER_REPEAT_S = 0.0  # and no more calls than the repeats
    measure.LATENCY_THREADS = torch.get_num_threads()
    try:
        yield
    finally:
        export.ort_session, latency.UNSTABLE_IQR = session, line
        latency.SUBSERIES_CALLS, measure.LATENCY_THREADS = calls, threads
        latency.SPAN_PER_REPEAT_S = span


def compress_once(folder: Path, methods: str | None) -> dict[str, dict]:
    """One compression of `methods` (None: the default methods that apply; remade, as `scalelab
    compress` does); per variant its median latencies, flagged batches, the base medians it was
    compared with and speedups."""
    from scalelab import latency
    from scalelab.compress import compress_study
    from scalelab.spec import parse_spec
    from scalelab.storage import StudyStore
    from scalelab.study import resolve

    with StudyStore.create_or_open(folder) as store:
        spec = parse_spec(store.study()["spec"], "study.db spec")
        res = resolve(spec, out=folder)
        if spec.measure.threads:
            torch.set_num_threads(spec.measure.threads)
        records = compress_study(store, spec, res.task, res.family, torch.device("cpu"),
                                 methods=methods, redo=True)
    out = {}
    for v in records:
        ex = v.extra or {}
        out[v.name] = {"latency_ms": latency.medians(v.latency_ms),
                       "unstable": latency.unstable_batches(v.latency_ms),
                       "base_latency_ms": ex.get("base_latency_ms"),
                       "base_unstable": ex.get("base_latency_unstable", []),
                       "speedup": ex.get("speedup") or {}}
    return out


def compress_in_process(folder: Path, way: str, methods: str | None,
                        threads: int | None) -> dict[str, dict]:
    """`compress_once` in a process of its own, as each `scalelab compress` run is: a process
    keeps nothing (thread pools, ONNX Runtime sessions still spinning, allocator state) from the
    round before. Measured: in one process, the round after an old-way round timed its first
    variants' base series at twice their usual latency (int8 and bf16 at 2.2-2.4x, not flagged)."""
    cmd = [sys.executable, __file__, "--worker", way, "--worker-folder", str(folder)]
    if methods:
        cmd += ["--methods", methods]
    if threads:
        cmd += ["--threads", str(threads)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])


def worker(way: str, folder: Path, methods: str | None) -> None:
    """One compression, the way `way` says; prints its variants as one line of JSON."""
    if way == "old":
        with old_way():
            variants = compress_once(folder, methods)
    else:
        variants = compress_once(folder, methods)
    print(json.dumps(variants))


def spread(values: list[float]) -> float | None:
    """max / min of positive values (None when fewer than two)."""
    vals = [v for v in values if v and v > 0]
    return max(vals) / min(vals) if len(vals) >= 2 else None


def timed_series(call: Callable[[], Any], repeats: int = 30, warmup: int = 5) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


NO_ORT_LATENCY_THREADS = "no ORT before, LATENCY_THREADS"


def probe(folder: Path, rounds: int, tmp: Path) -> dict[str, Any]:
    """The causes: CPU burnt after an ONNX Runtime run, and slow or scattered PyTorch series
    right after ONNX Runtime series, with spinning on / off / no ONNX Runtime, on the process's
    threads, and with no ONNX Runtime on `LATENCY_THREADS` (conditions alternate)."""
    from scalelab.compress.load import load_rung_model
    from scalelab.export import EXPORT_BATCH, export_onnx, ort_session
    from scalelab.spec import parse_spec
    from scalelab.storage import StudyStore
    from scalelab.study import resolve
    from scalelab.train.measure import timing_threads

    with StudyStore.open_readonly(folder) as store:
        spec = parse_spec(store.study()["spec"], "study.db spec")
        row = store.rungs()[-1]
    res = resolve(spec, out=folder)
    task, cpu = res.task, torch.device("cpu")
    model = load_rung_model(folder, row, res.family, cpu).eval()
    path = tmp / "probe.onnx"
    export_onnx(model, path, res.task.example_input(EXPORT_BATCH))
    sessions = {"spin on (ORT default)": ort_session(path, spin=True),
                "spin off (scalelab)": ort_session(path), "no ORT before": None,
                NO_ORT_LATENCY_THREADS: None}
    name = sessions["spin off (scalelab)"].get_inputs()[0].name
    xs = {b: task.example_input(b) for b in (1, 32)}
    feeds = {b: {name: x.numpy()} for b, x in xs.items()}
    burnt: dict[str, list[float]] = {k: [] for k in sessions if sessions[k] is not None}
    torch_ms: dict[str, list[float]] = {k: [] for k in sessions}
    threads = {k: torch.get_num_threads() for k in sessions}
    with torch.no_grad():
        for _ in range(rounds):
            for key, sess in sessions.items():
                time.sleep(0.2)  # the previous condition's threads stop spinning: not counted
                if sess is not None:
                    for b in (1, 32):  # the int8 variant's fp32 series, as the driver runs it
                        timed_series(lambda s=sess, b=b: s.run(None, feeds[b]))
                    c0 = time.process_time()  # the process's CPU while the caller sleeps
                    time.sleep(0.02)
                    burnt[key].append((time.process_time() - c0) * 1e3)
                    sess.run(None, feeds[32])
                if key == NO_ORT_LATENCY_THREADS:
                    with timing_threads(cpu):
                        threads[key] = torch.get_num_threads()
                        torch_ms[key].append(timed_series(lambda: model(xs[32])))
                else:
                    torch_ms[key].append(timed_series(lambda: model(xs[32])))
    best = min(min(v) for v in torch_ms.values())
    rows = {}
    for key, meds in torch_ms.items():
        rows[key] = {"threads": threads[key], "torch_b32_series_medians_ms": meds,
                     "slow_series": sum(m > 2 * best for m in meds), "rounds": rounds,
                     "series_median_spread": spread(meds),
                     "cpu_ms_burnt_in_20ms_after_run": (statistics.median(burnt[key])
                                                        if key in burnt else None)}
    return {"best_series_median_ms": best, "conditions": rows}


def print_probe(p: dict[str, Any]) -> None:
    print(f"\ncause: PyTorch b32 series of the base rung right after ONNX Runtime series "
          f"(best series median {p['best_series_median_ms']:.3f} ms)")
    print(f"{'condition':34s} {'threads':>7s} {'CPU ms burnt in 20 ms after a run':>34s} "
          f"{'series > 2x best':>17s} {'median of medians':>18s} {'max/min':>8s}")
    for key, r in p["conditions"].items():
        burnt = r["cpu_ms_burnt_in_20ms_after_run"]
        print(f"{key:34s} {r['threads']:>7d} {'-' if burnt is None else f'{burnt:.2f}':>34s} "
              f"{r['slow_series']:>10d} / {r['rounds']:<4d} "
              f"{statistics.median(r['torch_b32_series_medians_ms']):>18.3f} "
              f"{_ratio(r['series_median_spread']):>8s}")


def stability(runs: dict[str, list[dict]]) -> dict[str, Any]:
    """Per way, variant and batch: speedups and medians per round and their max / min."""
    out: dict[str, Any] = {}
    for way, rounds in runs.items():
        table = {}
        for name in rounds[0]["variants"]:
            for b in sorted(rounds[0]["variants"][name]["latency_ms"], key=int):
                vs = [r["variants"][name] for r in rounds]
                speed = [v["speedup"].get(b) for v in vs]
                lat = [v["latency_ms"].get(b) for v in vs]
                table[f"{name} b{b}"] = {
                    "speedup": speed, "speedup_spread": spread(speed),
                    "latency_ms": lat, "latency_spread": spread(lat),
                    "flagged_rounds": sum(b in v["unstable"] or b in v["base_unstable"]
                                          for v in vs)}
        worst = [r["speedup_spread"] for r in table.values() if r["speedup_spread"]]
        out[way] = {"rows": table, "worst_speedup_spread": max(worst) if worst else None}
    return out


def print_stability(stab: dict[str, Any], rounds: int) -> None:
    print(f"\n{'way':4s} {'variant, batch':18s} {'speedup per round':>26s} {'max/min':>8s} "
          f"{'latency ms per round':>30s} {'max/min':>8s} flagged")
    for way, s in stab.items():
        for key, r in s["rows"].items():
            sp = " ".join("-" if v is None else f"{v:7.2f}" for v in r["speedup"])
            lat = " ".join("-" if v is None else f"{v:9.3g}" for v in r["latency_ms"])
            sps, lats = (_ratio(r["speedup_spread"]), _ratio(r["latency_spread"]))
            print(f"{way:4s} {key:18s} {sp:>26s} {sps:>8s} {lat:>30s} {lats:>8s} "
                  f"{r['flagged_rounds']}/{rounds}")
    now, old = (stab.get(w, {}).get("worst_speedup_spread") for w in WAYS)
    print(f"\nworst speedup max/min across rounds: now {_ratio(now)}, old {_ratio(old)} "
          f"(target <= 1.10 on an idle machine)")


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, default=None,
                    help="a trained study folder to copy (default: train a tiny one)")
    ap.add_argument("--methods", default=None,
                    help="comma-separated methods [default: the default methods that apply]")
    ap.add_argument("--rounds", type=int, default=3, help="compressions per way")
    ap.add_argument("--probe", type=int, default=20, help="rounds of the cause measurement")
    ap.add_argument("--no-old", action="store_true", help="skip the old way (half the time)")
    ap.add_argument("--threads", type=int, default=None,
                    help="the process's torch threads: evaluation, the old way's timing [default: "
                         "all cores; a study whose spec sets measure.threads uses its own]")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--worker", choices=WAYS, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        worker(args.worker, args.worker_folder, args.methods)
        return
    from scalelab.train.measure import LATENCY_THREADS
    ways = WAYS[:1] if args.no_old else WAYS

    load: list[dict] = [dict(machine_load(), at="start")]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        source = args.study or train_study(tmp)
        copies = {way: tmp / way for way in ways}
        for folder in copies.values():
            shutil.copytree(source, folder)
        cause = probe(copies["now"], args.probe, tmp) if args.probe else None
        if cause:
            print_probe(cause)
        runs: dict[str, list[dict]] = {way: [] for way in ways}
        for i in range(args.rounds):
            for way in ways:
                before = machine_load()
                variants = compress_in_process(copies[way], way, args.methods, args.threads)
                runs[way].append({"round": i + 1, "load_before": before,
                                  "load_after": machine_load(), "variants": variants})
                print(f"round {i + 1} {way}: load {before['loadavg_1m']:.2f} -> "
                      f"{runs[way][-1]['load_after']['loadavg_1m']:.2f}", flush=True)
    load.append(dict(machine_load(), at="end"))
    stab = stability(runs)
    print_stability(stab, args.rounds)
    loads = ", ".join(f"{x['at']} loadavg {x['loadavg_1m']:.2f}, CPU pressure (some, 10 s) "
                      f"{x['cpu_pressure_some_avg10']}%" for x in load)
    print(f"torch threads {torch.get_num_threads()} (latency timing now: {LATENCY_THREADS}) on "
          f"{os.cpu_count()} cores; machine load: {loads}")
    now, old = (stab.get(w, {}).get("worst_speedup_spread") for w in WAYS)
    result = {"methods": args.methods or "default", "rounds": args.rounds,
              "threads": torch.get_num_threads(), "latency_threads": LATENCY_THREADS,
              "cpu_count": os.cpu_count(), "load": load, "cause": cause, "runs": runs,
              "stability": stab, "ratio_old_over_now_worst_speedup_spread":
              (old / now if now and old else None)}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
