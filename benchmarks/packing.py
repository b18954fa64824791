"""K small GPT rungs trained as one pack (`scalelab.train.pack`) against the same K one after
another through `train_rung`, in the same run.

The K models share a shape and differ in seed and learning rate (a tuning trial or a seed repeat
is exactly this). Both sides do the same work: the same steps, batches, schedules, clipping and
one final validation each (periodic evaluation and checkpoints are switched off by intervals
longer than the run). Each side is timed wall-clock, model building included, after a short
warm-up of both; the order alternates over rounds and the median is kept. `ratio` = sequential
seconds / packed seconds. The final training losses of the two sides are compared as a check
that they trained the same models: reported, not asserted, because the rounding gap grows with
steps and learning rate (fp32 on CPU: 4e-7 after 60 steps, 2.5e-4 after the default 150 at lr
6e-3; larger under bf16 autocast on CUDA; tests/train/test_pack.py shows it is rounding).

Defaults: on CUDA, 16 models of 4x128 (0.83M parameters, the issue's 16 x 0.9M case); on CPU, 4
models of 2x32 (36k parameters), about a minute on 2 cores.

    python benchmarks/packing.py [--device auto|cpu|cuda] [--k K] [--nonembed N] [--steps S]
                                 [--rounds R] [--batch B] [--forward bmm|vmap] [--json OUT]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from scalelab.errors import UserError
from scalelab.ladder import LM_LR
from scalelab.models import get_family
from scalelab.models.base import Family
from scalelab.records import RungPlan
from scalelab.spec import TrainSpec
from scalelab.tasks import get_task
from scalelab.tasks.base import Task
from scalelab.train import measure
from scalelab.train.loop import train_rung
from scalelab.train.pack import train_packed

BLOCK = 64
DEFAULTS = {  # per device type: models, non-embedding size, steps, rounds
    "cuda": {"k": 16, "nonembed": 8e5, "steps": 200, "rounds": 3},
    "cpu": {"k": 4, "nonembed": 2e4, "steps": 150, "rounds": 3},
}


def make_plans(family: Family, task: Task, k: int, nonembed: float, steps: int,
               batch: int, t: TrainSpec) -> list[RungPlan]:
    """K plans of one shape; seeds 0..K-1 and learning rates spread over 4x around t.lr, as a
    learning-rate search would be."""
    shape = family.shape_for(nonembed, task.io)
    n_params, n_nonembed = family.count_params(family.build(shape))
    units = task.units_per_batch(batch)
    lrs = [t.lr * 2.0 ** (2 * i / max(1, k - 1) - 1) for i in range(k)]
    return [RungPlan(rung=i, family=family.name, shape=shape, target_n=nonembed,
                     n_params=n_params, n_nonembed=n_nonembed, D=steps * units,
                     unit=task.unit, steps=steps, batch_size=batch, units_per_step=units,
                     lr=lr, warmup_steps=max(1, steps // 20), seed=i,
                     describe=family.describe(shape))
            for i, lr in enumerate(lrs)]


def sequential(plans: list[RungPlan], task: Task, family: Family, t: TrainSpec,
               device: torch.device) -> tuple[float, list[float]]:
    """Seconds for the K plans through train_rung one after another; their last train losses."""
    losses = []
    t0 = time.perf_counter()
    for plan in plans:
        with tempfile.TemporaryDirectory() as tmp:
            out = train_rung(plan, task, t, device, Path(tmp), family=family)
        losses.append(out.curve[-1].train_loss)
    _sync(device)
    return time.perf_counter() - t0, losses


def packed(plans: list[RungPlan], task: Task, family: Family, t: TrainSpec,
           device: torch.device, forward: str) -> tuple[float, list[float]]:
    """Seconds for the K plans as one pack; their last train losses."""
    t0 = time.perf_counter()
    outs = train_packed(plans, task, t, device, family=family, forward=forward)
    _sync(device)
    return time.perf_counter() - t0, [o.curve[-1].train_loss for o in outs]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--k", type=int, default=None, help="models per pack (16 cuda, 4 cpu)")
    ap.add_argument("--nonembed", type=float, default=None,
                    help="non-embedding parameters per model (8e5 cuda, 2e4 cpu)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--forward", default="bmm", choices=["bmm", "vmap"])
    ap.add_argument("--json", type=Path, default=None)
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    device = measure.resolve_device(args.device)
    d = DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    k, steps = args.k or d["k"], args.steps or d["steps"]
    rounds, nonembed = args.rounds or d["rounds"], args.nonembed or d["nonembed"]
    if min(k, steps, rounds, args.batch) < 1:
        raise UserError("--k, --steps, --rounds and --batch must be at least 1")
    family, task = get_family("gpt", block_size=BLOCK), get_task("pycode", context=BLOCK)
    # lr: the library's language-model rate (a bare TrainSpec leaves it to the study to choose)
    t = TrainSpec(lr=LM_LR, eval_every=10 * steps, checkpoint_every=10 * steps, eval_tokens=4096)
    plans = make_plans(family, task, k, nonembed, steps, args.batch, t)
    warm = make_plans(family, task, k, nonembed, 3, args.batch, t)
    sequential(warm, task, family, t, device)  # allocator, kernels, first touch of the corpus
    packed(warm, task, family, t, device, args.forward)
    seq_s, pack_s, diffs = [], [], []
    for r in range(rounds):
        sides = ["sequential", "packed"] if r % 2 == 0 else ["packed", "sequential"]
        got = {}
        for side in sides:
            got[side] = (sequential(plans, task, family, t, device) if side == "sequential"
                         else packed(plans, task, family, t, device, args.forward))
        seq_s.append(got["sequential"][0])
        pack_s.append(got["packed"][0])
        diffs += [abs(a - b) / abs(b) for a, b in zip(got["packed"][1], got["sequential"][1],
                                                       strict=True)]
    tokens = k * steps * plans[0].units_per_step
    seq, pk = statistics.median(seq_s), statistics.median(pack_s)
    info = measure.machine_info(device)
    return {
        "device": str(device), "machine": info["machine"], "gpu": info.get("gpu"),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "k": k, "shape": plans[0].describe, "n_params": plans[0].n_params,
        "n_nonembed": plans[0].n_nonembed, "batch": args.batch, "block": BLOCK, "steps": steps,
        "rounds": rounds, "forward": args.forward, "lrs": [p.lr for p in plans],
        "sequential_s": seq, "packed_s": pk, "sequential_rounds_s": seq_s,
        "packed_rounds_s": pack_s, "ratio": seq / pk,
        "sequential_tokens_per_s": tokens / seq, "packed_tokens_per_s": tokens / pk,
        "max_rel_train_loss_diff": max(diffs),
    }


def print_table(r: dict) -> None:
    print(f"{r['k']} models of {r['shape']} ({r['n_params']:,} parameters, "
          f"{r['n_nonembed']:,} non-embedding), batch {r['batch']} x {r['block']}, "
          f"{r['steps']} steps, {r['device']} ({r['machine']}, {r['threads']} threads), "
          f"median of {r['rounds']} rounds")
    print(f"{'way':<20}{'seconds':>10}{'tokens/s':>14}")
    print(f"{'one after another':<20}{r['sequential_s']:>10.2f}"
          f"{r['sequential_tokens_per_s']:>14,.0f}")
    print(f"{'packed (' + r['forward'] + ')':<20}{r['packed_s']:>10.2f}"
          f"{r['packed_tokens_per_s']:>14,.0f}")
    print(f"ratio sequential/packed = {r['ratio']:.2f}x   max relative difference of the final "
          f"train losses = {r['max_rel_train_loss_diff']:.1e}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
