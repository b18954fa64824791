"""Throughput of scalelab's trainer against a plain PyTorch loop, in the same run.

A ~1M-non-embedding-parameter GPT rung (the default ladder's largest) on CPU, same batch and
block size, same AdamW settings. Our trainer does everything it does in a study (schedule,
clipping, finite checks, progress callback, periodic evaluation); checkpoints are switched off by
an interval longer than the run, because a plain loop writes none either. Both are timed over the
same number of steps after a warm-up; the order alternates over rounds and the median is kept.

    python benchmarks/train_throughput.py [--steps 150] [--rounds 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from scalelab.ladder import plan_ladder
from scalelab.spec import StudySpec
from scalelab.study import resolve
from scalelab.train import measure
from scalelab.train.loop import train_rung


def plain_loop(plan, task, family, steps: int) -> float:
    """The loop a person writes by hand: seconds for `steps` optimizer steps."""
    torch.manual_seed(plan.seed)
    model = family.build(plan.shape)
    opt = torch.optim.AdamW(model.parameters(), lr=plan.lr, betas=(0.9, 0.99),
                            weight_decay=0.1)
    gen = torch.Generator().manual_seed(plan.seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = task.batch(plan.batch_size, gen)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def our_loop(plan, task, family, spec: StudySpec, steps: int) -> float:
    p = dataclasses.replace(plan, steps=steps, warmup_steps=max(1, steps // 20))
    t = spec.train.model_copy(update={"checkpoint_every": 10 * steps, "eval_every": 50,
                                      "eval_tokens": 4096})
    with tempfile.TemporaryDirectory() as tmp:
        out = train_rung(p, task, t, torch.device("cpu"), Path(tmp), family=family,
                         on_progress=lambda step, loss: None)
    return out.train_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    spec = StudySpec()
    res = resolve(spec)
    task, family = res.task, res.family
    plan = plan_ladder(spec, task, family)[-1]
    tokens = args.steps * plan.units_per_step
    plain_loop(plan, task, family, 10)  # warm-up: allocator, kernels, first-touch of the corpus
    ours_s, plain_s = [], []
    for r in range(args.rounds):
        pair = [("ours", our_loop), ("plain", plain_loop)]
        for name, fn in pair if r % 2 == 0 else pair[::-1]:
            secs = (fn(plan, task, family, spec, args.steps) if name == "ours"
                    else fn(plan, task, family, args.steps))
            (ours_s if name == "ours" else plain_s).append(secs)
    ours_tps = tokens / statistics.median(ours_s)
    plain_tps = tokens / statistics.median(plain_s)
    model = family.build(plan.shape)
    step_flops = measure.train_step_flops(model, task.example_input(plan.batch_size))
    peak = measure.gemm_peak_flops(torch.device("cpu"))
    mfu = step_flops * args.steps / statistics.median(ours_s) / peak
    result = {
        "rung_n_nonembed": plan.n_nonembed, "batch": plan.batch_size,
        "block": plan.shape["block_size"],
        "steps": args.steps, "rounds": args.rounds, "threads": torch.get_num_threads(),
        "ours_tokens_per_s": ours_tps, "plain_tokens_per_s": plain_tps,
        "ratio": ours_tps / plain_tps, "mfu": mfu, "gemm_peak_flops": peak,
        "torch": torch.__version__,
    }
    print(f"{'loop':<8}{'tokens/s':>12}{'median s':>10}")
    print(f"{'ours':<8}{ours_tps:>12,.0f}{statistics.median(ours_s):>10.2f}")
    print(f"{'plain':<8}{plain_tps:>12,.0f}{statistics.median(plain_s):>10.2f}")
    print(f"ratio ours/plain = {result['ratio']:.3f}   MFU = {100 * mfu:.1f}% of "
          f"{peak / 1e9:.0f} GFLOP/s measured GEMM peak ({result['threads']} threads)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
