"""Do bf16 autocast and torch.compile pay off here? Speed and loss of each against fp32 eager.

For each chosen rung of the default ladder, the same `train_rung` (same seed, batches and
schedule) runs in each mode: fp32 eager (the CPU default), bf16 autocast, torch.compile (inductor),
and both. It reports training tokens/s (the trainer's own step time), the one-off compile time
(wall time minus step time, minus the eager run's own evaluation time), and the validation loss
at the end on the study's final evaluation windows, so a mode that is faster but trains worse
shows it. The settings `train.precision` and `train.compile` default to what this measured
(README, "Precision and compilation").

    python benchmarks/precision_compile.py [--device cpu|cuda] [--rungs 0,5] [--steps 400]
                                           [--modes fp32,bf16,compile,bf16+compile] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from scalelab.ladder import plan_ladder
from scalelab.spec import StudySpec
from scalelab.study import resolve
from scalelab.train import measure
from scalelab.train.loop import train_rung

MODES = {"fp32": ("fp32", False), "bf16": ("bf16", False), "compile": ("fp32", True),
         "bf16+compile": ("bf16", True)}


def run_mode(plan, task, family, spec: StudySpec, device, steps: int, mode: str) -> dict:
    precision, compiled = MODES[mode]
    p = dataclasses.replace(plan, steps=steps, warmup_steps=max(1, steps // 20))
    t = spec.train.model_copy(update={"checkpoint_every": 10 * steps, "precision": precision,
                                      "compile": compiled})
    torch._dynamo.reset()  # every compiled mode pays its own compile, as a fresh study would
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = train_rung(p, task, t, device, Path(tmp), family=family)
        wall = time.perf_counter() - t0
    val = task.evaluate(out.model, device, spec.train.final_eval_tokens)["loss"]
    return {"mode": mode, "tokens_per_s": out.tokens / out.train_seconds,
            "train_seconds": out.train_seconds, "wall_seconds": wall, "val_loss": val}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--rungs", default="0,5")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--modes", default="fp32,bf16,compile,bf16+compile")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    modes = args.modes.split(",")
    if unknown := [m for m in modes if m not in MODES]:
        print(f"error: unknown mode {unknown[0]!r} (choose from {', '.join(MODES)})",
              file=sys.stderr)
        sys.exit(2)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        sys.exit(2)
    device = torch.device(args.device)
    spec = StudySpec()
    res = resolve(spec)
    plans = plan_ladder(spec, res.task, res.family)
    rows = []
    print(f"{'rung':>4} {'shape':>7} {'mode':>13} {'tokens/s':>10} {'vs fp32':>8} "
          f"{'one-off s':>9} {'val loss':>9} {'Δ loss':>8}")
    for i in (int(r) for r in args.rungs.split(",")):
        plan = plans[i]
        base = None
        for mode in modes:
            row = {"rung": i, "shape": plan.describe, "n_nonembed": plan.n_nonembed,
                   **run_mode(plan, res.task, res.family, spec, device, args.steps, mode)}
            base = base or row
            row["speedup"] = row["tokens_per_s"] / base["tokens_per_s"]
            row["loss_delta"] = row["val_loss"] - base["val_loss"]
            # Time outside the steps beyond the first mode's own (its evaluations): the compile.
            row["one_off_seconds"] = ((row["wall_seconds"] - row["train_seconds"])
                                      - (base["wall_seconds"] - base["train_seconds"]))
            rows.append(row)
            print(f"{i:>4} {plan.describe:>7} {mode:>13} {row['tokens_per_s']:>10,.0f} "
                  f"{row['speedup']:>7.2f}x {row['one_off_seconds']:>9.1f} "
                  f"{row['val_loss']:>9.4f} {row['loss_delta']:>+8.4f}")
    result = {"device": args.device, "machine": measure.machine_info(device)["machine"],
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "date": datetime.date.today().isoformat(), "steps": args.steps, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
