"""Train one rung: AdamW, warm-up + cosine or WSD schedule, clipping, evaluation, checkpoints,
resume, and a divergence guard.

`train_rung` is deterministic on CPU for a given plan and seed, including across a kill and
resume: model init, the batch generator's RNG and the optimizer state all live in the checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from scalelab.models.base import Family
from scalelab.records import RungPlan
from scalelab.spec import TrainSpec
from scalelab.tasks.base import Task, autocast
from scalelab.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    save_branch_start,
    save_checkpoint,
)
from scalelab.train.distributed import Ranks
from scalelab.train.diverge import add_loss, divergence, interval_mean, new_window

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class CurvePoint:
    step: int
    tokens: int
    train_loss: float  # mean training loss over the steps since the previous point
    val_loss: float | None
    lr: float


@dataclass
class TrainOutcome:
    status: str  # "done" or "diverged"
    model: torch.nn.Module
    steps: int
    tokens: int
    train_seconds: float
    curve: list[CurvePoint] = field(default_factory=list)
    diverged_step: int | None = None
    diverged_reason: str | None = None


def lr_at(step: int, plan: RungPlan, min_lr_frac: float, decay_shape: str = "1-sqrt") -> float:
    """Linear warm-up to plan.lr, then the plan's schedule down to min_lr_frac·lr:
    - cosine: cosine decay over the rest of the rung;
    - wsd: constant (stable) until the last `plan.decay_steps` steps, then a decay that reaches
      the floor at the last step, as 1 - sqrt(progress) or linearly (`decay_shape`)."""
    if plan.warmup_steps and step < plan.warmup_steps:
        return plan.lr * (step + 1) / plan.warmup_steps
    if plan.schedule == "wsd":
        return _wsd_lr(step, plan, min_lr_frac, decay_shape)
    span = max(1, plan.steps - plan.warmup_steps)
    progress = min(1.0, (step - plan.warmup_steps) / span)
    floor = min_lr_frac * plan.lr
    return floor + 0.5 * (plan.lr - floor) * (1 + math.cos(math.pi * progress))


def _wsd_lr(step: int, plan: RungPlan, min_lr_frac: float, decay_shape: str) -> float:
    start = plan.steps - plan.decay_steps
    if step < start:
        return plan.lr
    # Progress counts the step being taken, so the last step (steps - 1) runs at the floor.
    progress = min(1.0, (step - start + 1) / max(1, plan.decay_steps))
    fall = math.sqrt(progress) if decay_shape == "1-sqrt" else progress
    floor = min_lr_frac * plan.lr
    return floor + (plan.lr - floor) * (1.0 - fall)


# Optimizer steps between reads of the training loss on the host. Reading it (`.item()`) waits
# for the device; on CUDA a read per step stalls the queue of small kernels, so the loss is summed
# on the device and read this often (it is also how often a non-finite loss is caught).
LOSS_READ_EVERY = 10


def make_optimizer(model: torch.nn.Module, t: TrainSpec, lr: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, LayerNorms).

    `fused=True`: one kernel for the whole update, on CPU as on CUDA (measured on 2 CPU cores:
    5% more steps/s than `foreach` at 13k parameters, 2% at 1M; same losses to 4 digits)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(t.beta1, t.beta2), fused=True)


def clip_gradients(params: list[torch.nn.Parameter], max_norm: float,
                   device: torch.device) -> None:
    """`clip_grad_norm_`, with the same result to the bit: the gradients scaled by
    max_norm / (norm + 1e-6) when the norm exceeds max_norm, untouched otherwise (where
    `clip_grad_norm_` multiplies by exactly 1.0). On CPU the norm is read to skip that pass over
    every gradient when it would change nothing (most steps after the first few hundred);
    on CUDA reading it would stall the queue, so the multiply always runs."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    if device.type != "cpu":
        torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
        return
    total = torch.nn.utils.get_total_norm(grads, foreach=True)
    # The coefficient as clip_grads_with_norm_ computes it; a non-finite norm still goes through.
    if not float(max_norm / (total + 1e-6)) >= 1.0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total, foreach=True)


def compiles(t: TrainSpec, device: torch.device) -> bool:
    """`train.compile`, with "auto" = on CUDA only: on 2 CPU cores the inductor compile took
    9-18 s per shape and gained 2-7% per step, never won back within a rung (docs/results.md)."""
    return device.type == "cuda" if t.compile == "auto" else bool(t.compile)


def configure_device(device: torch.device) -> None:
    """Process-wide settings for fast training on `device`: flush subnormals on CPU, TF32
    matmuls on CUDA (the fp32 parts of a bf16-autocast step; ~8x the fp32 rate on an H100)."""
    # Small models drift into subnormal floats, which x86 CPUs process ~10x slower (measured: a
    # 3k-parameter rung took 27 s instead of 2 s); flushing them to zero changes no loss we record.
    torch.set_flush_denormal(True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def train_rung(
    plan: RungPlan,
    task: Task,
    t: TrainSpec,
    device: torch.device,
    ckpt_dir: Path,
    *,
    family: Family | None = None,
    model: torch.nn.Module | None = None,
    on_progress: Callable[[int, float], None] | None = None,
    on_checkpoint: Callable[[list[CurvePoint]], None] | None = None,
    loss_fn: LossFn | None = None,
    branch_saves: Mapping[int, Sequence[Path]] | None = None,
    ranks: Ranks | None = None,
) -> TrainOutcome:
    """Train (or resume) one rung: a fresh `family.build(plan.shape)` model, or the given
    `model`. `on_checkpoint(curve)` runs right after each checkpoint so the caller can record
    the curve so far; `on_progress(step, train_loss)` feeds a progress bar (called for every
    step, in groups of `LOSS_READ_EVERY`, when the losses are read).

    `model` and `loss_fn` serve compression (recovery fine-tunes, distillation) with this same
    loop: `model` is the starting point (the plan still gives steps, lr schedule and batch seed),
    and `loss_fn(outputs, x, y)` replaces the task's training loss (validation stays the task's
    loss).

    `branch_saves` {step: [folders]}: after that step, a full resume point is also written into
    each folder (a WSD trunk hands its stable-phase state to its cool-down branches, whose jobs
    then resume from it; execute/branches.py). A folder that already holds a resume point at or
    past that step is left alone (the branch has begun).

    `ranks`: this process is one of several training the rung together (train/distributed.py
    says how); None, a single process, takes none of those steps.

    `train_seconds` is the time spent in training steps: the periodic evaluations and the
    checkpoint writes are measurement and fault tolerance, timed apart, so throughput and MFU
    describe the training itself (benchmarks/train_throughput.py times the whole call)."""
    configure_device(device)
    torch.manual_seed(plan.seed)
    if model is None:
        if family is None:
            raise TypeError("train_rung needs a family or a model")
        model = family.build(plan.shape)
    model = model.to(device)
    # The compiled module shares the parameters of `model`, which checkpoints and the caller use.
    wrapped = model if ranks is None else ranks.wrap(model)
    forward = torch.compile(wrapped) if compiles(t, device) else wrapped
    opt = make_optimizer(model, t, plan.lr)
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(plan.batch_seed)
    tokens_per_step = plan.units_per_step

    saves = {s: [Path(f) for f in fs] for s, fs in (branch_saves or {}).items()}
    step, elapsed, curve = 0, 0.0, []
    window = new_window()  # sum, count, sum of squares of training losses since the last point
    noise: list[float] = []  # the standard error of each curve point's mean training loss
    last = latest_checkpoint(ckpt_dir)
    if last is not None and ranks is not None:
        state = ranks.restore(last, model, opt)
    elif last is not None:
        state = load_checkpoint(last, model)
        opt.load_state_dict(state["optimizer"])
    if last is not None:
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step, elapsed = state["step"], state["elapsed"]
        curve = [CurvePoint(**p) for p in state["curve"]]
        window = list(state["window"])
        noise = state.get("noise", [])  # absent from checkpoints written before it was kept

    def outcome(status: str, reason: str | None = None) -> TrainOutcome:
        return TrainOutcome(status, model, step, step * tokens_per_step, elapsed, curve,
                            step if status == "diverged" else None, reason)

    model.train()
    pending: list[torch.Tensor] = []  # training losses of the steps not yet read on the host
    t0 = time.perf_counter()
    while step < plan.steps:
        lr = lr_at(step, plan, t.min_lr_frac, t.decay_shape)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = task.batch(plan.batch_size, gen)
        if ranks is not None:  # every rank draws the global batch and keeps its own rows
            x, y = ranks.shard(x, y)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, t.precision):
            outputs = forward(x)
        loss = task.loss(outputs, y) if loss_fn is None else loss_fn(outputs, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(params, t.grad_clip, device)
        opt.step()
        step += 1
        pending.append(loss.detach())
        at_eval = step % t.eval_every == 0 or step == plan.steps
        at_branch = step in saves
        at_ckpt = (step % t.checkpoint_every == 0 or at_branch) and step < plan.steps
        if len(pending) < LOSS_READ_EVERY and not (at_eval or at_ckpt):
            continue
        # One read for the pending steps; each is still checked and reported at its own step.
        first = step - len(pending) + 1
        losses = torch.stack(pending) if ranks is None else ranks.mean(torch.stack(pending))
        for at, train_loss in enumerate(losses.tolist(), start=first):
            if not math.isfinite(train_loss):
                elapsed += time.perf_counter() - t0
                step = at
                return outcome("diverged", f"non-finite training loss ({train_loss}) at step {at}")
            add_loss(window, train_loss)
            if on_progress is not None:
                on_progress(at, train_loss)
        pending.clear()
        if not (at_eval or at_ckpt):
            continue
        elapsed += time.perf_counter() - t0

        if at_eval:
            val = task.evaluate(model, device, t.eval_tokens, precision=t.precision)["loss"]
            mean_train, stderr = interval_mean(window)
            earlier = [p.train_loss for p in curve]
            curve.append(CurvePoint(step, step * tokens_per_step, mean_train, val, lr))
            window = new_window()
            # Judged on the interval's mean TRAINING loss (diverge.py says why and how).
            reason = divergence(earlier, noise, mean_train, val, t.diverge_rise)
            if reason is not None:
                return outcome("diverged", reason)
            noise.append(stderr)
        if at_ckpt:
            # With ranks, all of them gather the full state; the first alone writes it.
            saved = model if ranks is None else ranks.full_model(model)
            state = {
                "optimizer": opt.state_dict() if ranks is None
                else ranks.optimizer_state(model, opt), "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(), "step": step, "elapsed": elapsed,
                "curve": [p.__dict__ for p in curve], "window": window,
                "noise": noise,
            }
            if saved is not None and step % t.checkpoint_every == 0:
                save_checkpoint(ckpt_dir, step, saved, state)
            for folder in saves.get(step, ()) if saved is not None else ():
                save_branch_start(folder, step, saved, state)
            if on_checkpoint is not None and saved is not None and step % t.checkpoint_every == 0:
                on_checkpoint(curve)
        t0 = time.perf_counter()
    elapsed += time.perf_counter() - t0
    return outcome("done")
