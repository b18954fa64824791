"""Throughput of scalelab's trainer against a plain PyTorch loop, in the same run, per rung size.

For each chosen rung of the default ladder (by default the smallest, a middle one and the largest,
~13k to ~1M non-embedding parameters), on CPU or CUDA, with the same batch, block size and AdamW
settings:

- plain: the loop a person writes by hand: `AdamW(model.parameters())` with its defaults, bf16
  autocast on CUDA (as anyone would there), nothing else;
- ours: a `train_rung` call as a study makes it (schedule, clipping, finite checks, a progress
  callback, the periodic evaluation at the study's own interval and size); only checkpoints are
  switched off by an interval longer than the run, because the plain loop writes none either.

Ours is timed two ways: `ours` is the trainer's own `train_seconds`, the time in training steps
that every rung's throughput and MFU are computed from (the periodic evaluation is measurement,
timed apart); `ours_wall` is the wall clock around the whole call, evaluation and set-up
included. The headline ratio is ours/plain in training throughput; the wall ratio is printed
beside it. Both run the same number of steps after a warm-up; the order alternates over rounds
and the median of each is kept. MFU is the counted FLOPs of a training step (torch's flop
counter) × steps / ours, against the GEMM peak measured in the same run and, on CUDA, the
vendor's bf16 peak.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--rungs 0,3,6] [--steps 250]
                                          [--rounds 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from scalelab.ladder import plan_ladder
from scalelab.spec import StudySpec, default_spec
from scalelab.study import resolve
from scalelab.tasks.base import autocast
from scalelab.train import measure
from scalelab.train.loop import configure_device, train_rung


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(plan, task, family, device: torch.device, steps: int) -> float:
    """The loop a person writes by hand: seconds for `steps` optimizer steps."""
    torch.manual_seed(plan.seed)
    model = family.build(plan.shape).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=plan.lr, betas=(0.9, 0.99),
                            weight_decay=0.1)
    gen = torch.Generator().manual_seed(plan.seed)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = task.batch(plan.batch_size, gen)
        x, y = x.to(device), y.to(device)
        with autocast(device):
            logits = model(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return time.perf_counter() - t0


def our_loop(plan, task, family, spec: StudySpec, device: torch.device,
             steps: int) -> tuple[float, float]:
    """(seconds in training steps, wall-clock seconds) of a `train_rung` call of `steps`."""
    p = dataclasses.replace(plan, steps=steps, warmup_steps=max(1, steps // 20))
    t = spec.train.model_copy(update={"checkpoint_every": 10 * steps})
    with tempfile.TemporaryDirectory() as tmp:
        _sync(device)
        t0 = time.perf_counter()
        out = train_rung(p, task, t, device, Path(tmp), family=family,
                         on_progress=lambda step, loss: None)
        _sync(device)
        return out.train_seconds, time.perf_counter() - t0


def measure_rung(plan, task, family, spec, device, steps: int, rounds: int,
                 gemm_peak: float, vendor_peak: float | None) -> dict:
    plain_loop(plan, task, family, device, 5)  # warm-up: allocator, kernels, corpus first-touch
    ours_s: list[float] = []
    wall_s: list[float] = []
    plain_s: list[float] = []

    def run_ours() -> None:
        in_steps, wall = our_loop(plan, task, family, spec, device, steps)
        ours_s.append(in_steps)
        wall_s.append(wall)

    for r in range(rounds):
        runs = [run_ours, lambda: plain_s.append(plain_loop(plan, task, family, device, steps))]
        for fn in runs if r % 2 == 0 else runs[::-1]:
            fn()
    ours, plain = statistics.median(ours_s), statistics.median(plain_s)
    wall = statistics.median(wall_s)
    tokens = steps * plan.units_per_step
    model = family.build(plan.shape).to(device)
    step_flops = measure.train_step_flops(model, task.example_input(plan.batch_size).to(device))
    flops_per_s = step_flops * steps / ours
    return {
        "rung": plan.rung, "n_nonembed": plan.n_nonembed, "shape": plan.describe,
        "batch": plan.batch_size, "block": plan.shape.get("block_size"),
        "ours_s": ours_s, "ours_wall_s": wall_s, "plain_s": plain_s,
        "ours_tokens_per_s": tokens / ours, "plain_tokens_per_s": tokens / plain,
        "ratio": plain / ours, "wall_ratio": plain / wall, "step_flops": step_flops,
        "mfu": flops_per_s / gemm_peak,
        "mfu_vendor": flops_per_s / vendor_peak if vendor_peak else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--rungs", default=None,
                    help="comma-separated rung indices of the default ladder "
                         "(default: smallest, middle, largest)")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        sys.exit(2)

    device = torch.device(args.device)
    configure_device(device)
    spec = default_spec()
    res = resolve(spec)
    task, family = res.task, res.family
    plans = plan_ladder(spec, task, family)
    picks = ([int(i) for i in args.rungs.split(",")] if args.rungs
             else sorted({0, len(plans) // 2, len(plans) - 1}))
    gemm_peak = measure.gemm_peak_flops(device)
    vendor_peak = measure.vendor_peak_flops(device)
    rows = [measure_rung(plans[i], task, family, spec, device, args.steps, args.rounds,
                         gemm_peak, vendor_peak) for i in picks]
    largest = rows[-1]
    result = {
        "device": args.device, "machine": measure.machine_info(device)["machine"],
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "date": datetime.date.today().isoformat(), "steps": args.steps, "rounds": args.rounds,
        "gemm_peak_flops": gemm_peak, "vendor_peak_flops": vendor_peak, "rungs": rows,
        # The headline figures are the largest rung's (the one that dominates a study's time).
        "ratio": largest["ratio"], "wall_ratio": largest["wall_ratio"], "mfu": largest["mfu"],
        "ours_tokens_per_s": largest["ours_tokens_per_s"],
        "plain_tokens_per_s": largest["plain_tokens_per_s"],
    }
    print(f"{'rung':>4} {'N (non-emb)':>12} {'shape':>7} {'ours tok/s':>11} {'plain tok/s':>12} "
          f"{'ours/plain':>11} {'wall ratio':>11} {'MFU':>6}"
          + (f" {'MFU vendor':>11}" if vendor_peak else ""))
    for r in rows:
        print(f"{r['rung']:>4} {r['n_nonembed']:>12,} {r['shape']:>7} "
              f"{r['ours_tokens_per_s']:>11,.0f} {r['plain_tokens_per_s']:>12,.0f} "
              f"{r['ratio']:>11.3f} {r['wall_ratio']:>11.3f} {100 * r['mfu']:>5.1f}%"
              + (f" {100 * r['mfu_vendor']:>10.1f}%" if vendor_peak else ""))
    print(f"ratio ours/plain = {result['ratio']:.3f} at the largest rung (median of "
          f"{args.rounds} rounds, training throughput; whole call with its evaluation "
          f"{result['wall_ratio']:.3f})   MFU = {100 * result['mfu']:.1f}% of "
          f"{gemm_peak / 1e9:.0f} GFLOP/s measured GEMM peak ({result['threads']} threads, "
          f"{args.device})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
