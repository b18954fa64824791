"""Training throughput of one rung on K processes (`execute: {processes: K}`) against one process,
in the same run, with the same global batch and steps.

Each configuration trains the same rung (the `gpt` family on `pycode`, its shape chosen by
`--size`) through the local executor: 1 process with all the machine's threads, then K ranks
with DDP and with FSDP2 (gloo on CPU, NCCL on CUDA), each rank with its share of the threads.
Throughput is the rung's own (units per second of training steps, evaluation timed apart, as
every rung records it); `wall` is the clock around the whole job, the ranks' start-up included.
The ratio is each configuration's throughput over the 1-process one's; the final validation
losses are printed beside it (they agree to rounding: the same global batch).

    python benchmarks/ranks_throughput.py [--processes 2] [--size 1e5] [--steps 200]
                                          [--device cpu] [--json OUT]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from scalelab.execute.base import Finished, Job, Workload
from scalelab.execute.local import LocalExecutor
from scalelab.ladder import plan_ladder
from scalelab.models import get_family
from scalelab.spec import parse_spec
from scalelab.tasks import get_task

BLOCK = 64
BATCH = 16


def _spec(size: float, steps: int, processes: int, sharding: str, device: str) -> dict:
    return {"name": "ranks-bench", "family": {"block_size": BLOCK}, "ladder": {"sizes": [size]},
            "train": {"tokens": steps * BATCH * BLOCK, "batch_size": BATCH,
                      "eval_every": steps, "checkpoint_every": 10 * steps,
                      "eval_tokens": 4096, "final_eval_tokens": 8192},
            "device": device, "execute": {"processes": processes, "sharding": sharding}}


def run_one(size: float, steps: int, processes: int, sharding: str, device: str) -> dict:
    spec = parse_spec(_spec(size, steps, processes, sharding, device))
    task, family = get_task("pycode", context=BLOCK), get_family("gpt", block_size=BLOCK)
    work = Workload(task, family, spec, device, None)
    plan = plan_ladder(spec, task, family)[0]
    with tempfile.TemporaryDirectory() as tmp:
        job = Job("rung-0", plan, str(Path(tmp) / "rung-0"), None, spec.train, full=False)
        events: list = []
        t0 = time.perf_counter()
        LocalExecutor().run([job], work, events.append)
        wall = time.perf_counter() - t0
    done = events[-1]
    if not isinstance(done, Finished):
        raise SystemExit(f"{processes} x {sharding}: {done}")
    r = done.result
    return {"processes": processes, "sharding": sharding, "n_params": plan.n_params,
            "steps": r.steps, "units_per_s": r.D / r.train_seconds, "wall_s": wall,
            "val_loss": r.val_loss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--size", type=float, default=1e5, help="target non-embedding parameters")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    configs = [(1, "ddp"), (args.processes, "ddp"), (args.processes, "fsdp")]
    rows = [run_one(args.size, args.steps, k, s, args.device) for k, s in configs]
    base = rows[0]["units_per_s"]
    print(f"{'config':>12} {'units/s':>10} {'ratio':>6} {'wall s':>7} {'val loss':>10}")
    for row in rows:
        row["ratio"] = row["units_per_s"] / base
        name = "1 process" if row["processes"] == 1 else f"{row['processes']} {row['sharding']}"
        print(f"{name:>12} {row['units_per_s']:>10.0f} {row['ratio']:>6.2f} "
              f"{row['wall_s']:>7.1f} {row['val_loss']:>10.6f}")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "date": datetime.date.today().isoformat(), "machine": platform.platform(),
            "cpu_threads": torch.get_num_threads(), "device": args.device,
            "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
