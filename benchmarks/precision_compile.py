"""Do bf16 autocast and torch.compile pay off here? Speed and loss of each against fp32 eager.

For each chosen rung of the default ladder, the same `train_rung` (same seed, batches and
schedule) runs in each mode: fp32 eager (the CPU default), bf16 autocast, torch.compile (inductor),
and both. Each (rung, mode) runs in a fresh process, so a compile pays its full cost and leaves
nothing behind (inductor's worker pool slowed the eager runs that followed it in one process).
It reports the steady-state training throughput (from the progress callback's clock, after the
first `WARM_STEPS` steps), the one-off cost of the first steps beyond that rate (the compile),
and the validation loss at the end on the study's final evaluation windows, so a mode that is
faster but trains worse shows it. `train.precision` and `train.compile` default to what this
measured (README, "Precision and compilation").

    python benchmarks/precision_compile.py [--device cpu|cuda] [--rungs 0,5] [--steps 400]
                                           [--modes fp32,bf16,compile,bf16+compile] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from scalelab.ladder import plan_ladder
from scalelab.spec import default_spec
from scalelab.study import resolve
from scalelab.train import measure
from scalelab.train.loop import train_rung

MODES = {"fp32": ("fp32", False), "bf16": ("bf16", False), "compile": ("fp32", True),
         "bf16+compile": ("bf16", True)}


WARM_STEPS = 20  # steps excluded from the steady-state rate (compile, allocator, first touch)


def run_mode(rung: int, device_name: str, steps: int, mode: str) -> dict:
    """One (rung, mode) in this process: steady-state units/s, one-off seconds, final loss."""
    precision, compiled = MODES[mode]
    device = torch.device(device_name)
    spec = default_spec()
    res = resolve(spec)
    plan = plan_ladder(spec, res.task, res.family)[rung]
    p = dataclasses.replace(plan, steps=steps, warmup_steps=max(1, steps // 20))
    t = spec.train.model_copy(update={"checkpoint_every": 10 * steps, "precision": precision,
                                      "compile": compiled})
    clock: dict[int, float] = {}

    def tick(step: int, loss: float) -> None:
        clock[step] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        out = train_rung(p, res.task, t, device, Path(tmp), family=res.family, on_progress=tick)
    # Losses are read in groups, so a step's tick is when its group was read: take the first
    # read at or after WARM_STEPS and the last one.
    warm = [s for s in clock if s >= WARM_STEPS]
    if len(warm) >= 2 and clock[max(warm)] > clock[min(warm)]:
        first, last = min(warm), max(warm)
        rate = (last - first) * plan.units_per_step / (clock[last] - clock[first])
    else:  # too short a run for a steady state: the whole run's rate
        rate = out.tokens / out.train_seconds
    val = res.task.evaluate(out.model, device, spec.train.final_eval_tokens,
                            precision=t.precision)["loss"]
    return {"rung": rung, "shape": plan.describe, "n_nonembed": plan.n_nonembed, "mode": mode,
            "tokens_per_s": rate, "train_seconds": out.train_seconds,
            "one_off_seconds": out.train_seconds - out.tokens / rate, "val_loss": val}


def in_subprocess(rung: int, device: str, steps: int, mode: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--one", str(rung), mode,
                           "--device", device, "--steps", str(steps)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--rungs", default="0,5")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--modes", default="fp32,bf16,compile,bf16+compile")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--one", nargs=2, metavar=("RUNG", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:  # the worker of one (rung, mode): its result as one JSON line
        print(json.dumps(run_mode(int(args.one[0]), args.device, args.steps, args.one[1])))
        return
    modes = args.modes.split(",")
    if unknown := [m for m in modes if m not in MODES]:
        print(f"error: unknown mode {unknown[0]!r} (choose from {', '.join(MODES)})",
              file=sys.stderr)
        sys.exit(2)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        sys.exit(2)
    rows = []
    print(f"{'rung':>4} {'shape':>7} {'mode':>13} {'tokens/s':>10} {'vs fp32':>8} "
          f"{'one-off s':>9} {'val loss':>9} {'Δ loss':>8}")
    for rung in (int(r) for r in args.rungs.split(",")):
        base = None
        for mode in modes:
            row = in_subprocess(rung, args.device, args.steps, mode)
            base = base or row
            row["speedup"] = row["tokens_per_s"] / base["tokens_per_s"]
            row["loss_delta"] = row["val_loss"] - base["val_loss"]
            rows.append(row)
            print(f"{rung:>4} {row['shape']:>7} {mode:>13} {row['tokens_per_s']:>10,.0f} "
                  f"{row['speedup']:>7.2f}x {row['one_off_seconds']:>9.1f} "
                  f"{row['val_loss']:>9.4f} {row['loss_delta']:>+8.4f}")
    device = torch.device(args.device)
    result = {"device": args.device, "machine": measure.machine_info(device)["machine"],
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "date": datetime.date.today().isoformat(), "steps": args.steps, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
