"""Packing small models: K same-shape GPT rungs (other seeds, other learning rates) trained
together as one batched model.

What is packed: K `RungPlan`s of family `gpt` that share the shape, the batch size and the
number of steps (`check_packable`). Each keeps what makes it its own run: its seed (the init is
`family.build(shape)` right after `torch.manual_seed(seed)`, as `train_rung` does), its batch
stream (its own `torch.Generator().manual_seed(seed)` and the same `task.batch` calls), its
schedule (`lr_at` of its own plan: lr, warm-up), its gradient clipping (the norm of its own
gradients), its divergence guard and its curve. Each model comes back as a `TrainOutcome` holding
a plain `GPT` module, so whatever follows `train_rung` (measure, checkpoint, record) follows a
pack unchanged.

Decision: batched weights, not `vmap`.
- Weights: one (K, P) tensor holds the K models' parameters, a row per model, and every GPT
  parameter is a (K, ...) view of its columns. Linear layers are grouped GEMMs (`baddbmm` over
  the leading K axis); LayerNorm, GELU and attention see K folded into the batch. Attention
  therefore is an ordinary `scaled_dot_product_attention` call on (K·B, heads, T, head_dim):
  flash attention works on a GPU, because there is no `vmap` for its backward to refuse ("LSE is
  not correctly aligned"). The issue's reference measured naive `vmap` with the math kernel at
  3.6x for 16 models; grouped GEMMs launch one model's number of kernels for all K.
- Optimizer: AdamW over the (K, P) rows with a per-row lr column. Stacked parameters cannot be
  split into per-model param groups of `torch.optim.AdamW`, and K optimizers over views would
  launch K times the kernels. The update is written op for op as `torch.optim.AdamW(foreach=True)`
  does it (decoupled decay on matrices only, the same scalars computed in Python doubles): bit
  for bit that update given the same gradients (checked on CPU). `make_optimizer`'s `fused=True`
  kernel rounds differently (6e-8 after 5 steps), inside the noise the tests allow. Clipping
  takes each row's own gradient norm, with clip_grad_norm_'s formula.
- `forward="vmap"` (`torch.func.functional_call` + `vmap` over the same views) is kept as the
  generic reference the batched forward is tested against, and as the benchmark's comparison; on
  CUDA it runs with the efficient and math attention kernels only.

Numerics: the batched GEMMs sum in another order than a single model's, so packed and alone
agree to fp32 rounding, not bit for bit; training amplifies that rounding as it amplifies a
change of thread count (tests/train/test_pack.py: 3e-7 relative over 50 steps, more for long hot
runs in fp32, a few loss ulps in float64).

Speed: on a CPU a step of these models is compute-bound, so packing gains little (a loaded
2-core machine, 1 thread, 4 x 2x32 and 8 x 1x16: 1.04-1.35x over several runs). The gain is on a
GPU, where one small model's step is a few hundred tiny kernel launches and a pack's is the same
launches on K times the data; not yet measured (benchmarks/packing.py --device cuda).

A diverged model is recorded at its step, like `train_rung`, and its row keeps computing (rows
never mix) but is no longer read. Packs are not checkpointed: they serve short runs (tuning
trials, seed repeats), and a killed pack starts over.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch.func import functional_call, vmap
from torch.nn import functional as F

from scalelab.models.base import Family
from scalelab.models.gpt import GPT, GPTConfig
from scalelab.records import RungPlan
from scalelab.spec import TrainSpec
from scalelab.tasks.base import EVAL_BATCH, Task, autocast
from scalelab.train.diverge import add_loss, divergence, interval_mean, new_window
from scalelab.train.loop import (
    LOSS_READ_EVERY,
    CurvePoint,
    TrainOutcome,
    configure_device,
    lr_at,
)

Forward = Literal["bmm", "vmap"]
ADAM_EPS = 1e-8  # torch.optim.AdamW's default, which make_optimizer keeps
# The (K, P) layout gives each parameter's gradient row gaps; autograd warns that such a layout
# "may impair performance", but accumulating into it is one strided add, which we want.
_LAYOUT_WARNING = "grad and param do not obey the gradient layout contract"


# -- what can be packed ---------------------------------------------------------------------------

def _pack_key(plan: RungPlan) -> tuple:
    return (plan.family, tuple(sorted(plan.shape.items())), plan.batch_size, plan.steps,
            plan.units_per_step)


def check_packable(plans: Sequence[RungPlan]) -> None:
    """Raise ValueError unless the plans can train as one pack: family gpt, one shape, one
    batch size and one number of steps (the pack steps all of them together)."""
    if not plans:
        raise ValueError("a pack needs at least one plan")
    if any(p.family != "gpt" for p in plans):
        raise ValueError("only family 'gpt' can be packed; got "
                         f"{sorted({p.family for p in plans})}")
    keys = {_pack_key(p) for p in plans}
    if len(keys) > 1:
        raise ValueError("packed plans must share shape, batch_size and steps; got "
                         f"{len(keys)} different combinations")


def packable_groups(plans: Sequence[RungPlan], max_k: int) -> list[list[RungPlan]]:
    """Plans grouped into packs of at most max_k (same family gpt, shape, batch and steps), in
    the order of first appearance: how seed repeats and tuning trials would be handed to
    `train_packed`. Plans of other families come back as packs of one."""
    if max_k < 1:
        raise ValueError("max_k must be at least 1")
    groups: dict[tuple, list[list[RungPlan]]] = {}
    order: list[list[RungPlan]] = []
    for plan in plans:
        if plan.family != "gpt":
            order.append([plan])
            continue
        packs = groups.setdefault(_pack_key(plan), [])
        if not packs or len(packs[-1]) == max_k:
            packs.append([])
            order.append(packs[-1])
        packs[-1].append(plan)
    return order


# -- K models as one set of stacked weights -------------------------------------------------------

class PackedGPT:
    """K GPTs of one config as (K, ...) views of one (K, P) parameter tensor.

    `params[name]` has GPT's parameter names (tied head excluded, as `named_parameters` does)
    and a leading K axis; `flat` is the (K, P) storage the optimizer updates in place and
    `grad` the (K, P) storage autograd accumulates into. Columns hold the matrices (weight
    decay) first, then vectors, so decay is one slice."""

    def __init__(self, models: Sequence[GPT], device: torch.device):
        template = models[0]
        names = [n for n, _ in template.named_parameters()]
        _check_known_parameters(template.cfg, names)
        tensors = dict(template.named_parameters())
        ordered = ([n for n in names if tensors[n].dim() >= 2]
                   + [n for n in names if tensors[n].dim() < 2])
        self.cfg: GPTConfig = template.cfg
        self.k = len(models)
        self.ln_eps = template.blocks[0].ln1.eps
        self.template = copy.deepcopy(template).to(device)
        for p in self.template.parameters():
            p.requires_grad_(False)  # the template only lends its structure (unpack, vmap)
        sizes = [tensors[n].numel() for n in ordered]
        self.n_decay = sum(s for n, s in zip(ordered, sizes, strict=True)
                           if tensors[n].dim() >= 2)
        self.flat = torch.empty(self.k, sum(sizes), device=device)
        self.grad = torch.zeros_like(self.flat)
        self.params: dict[str, torch.Tensor] = {}
        start = 0
        with torch.no_grad():
            for name, size in zip(ordered, sizes, strict=True):
                cols = slice(start, start + size)
                for row, model in enumerate(models):
                    self.flat[row, cols] = model.get_parameter(name).detach().reshape(-1)
                shape = (self.k, *tensors[name].shape)
                # detach() of a view: a leaf that shares flat's storage, so in-place optimizer
                # updates of flat are the parameters' updates.
                leaf = self.flat[:, cols].view(shape).detach().requires_grad_(True)
                leaf.grad = self.grad[:, cols].view(shape)
                self.params[name] = leaf
                start += size

    @classmethod
    def build(cls, plans: Sequence[RungPlan], family: Family,
              device: torch.device) -> PackedGPT:
        """Each plan's model initialised exactly as `train_rung` initialises it alone."""
        models = []
        for plan in plans:
            torch.manual_seed(plan.seed)
            model = family.build(plan.shape)
            if not isinstance(model, GPT):
                raise ValueError(f"family {family.name!r} builds {type(model).__name__}, not GPT")
            models.append(model)
        return cls(models, device)

    def zero_grad(self) -> None:
        # In place: each parameter's .grad is a view of self.grad and must stay one.
        self.grad.zero_()

    def backward(self, loss: torch.Tensor) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_LAYOUT_WARNING)
            loss.backward()

    def forward(self, idx: torch.Tensor, how: Forward = "bmm") -> torch.Tensor:
        """Logits (K, B, T, vocab) of the K models on idx (K, B, T), model k on idx[k]."""
        if how == "vmap":
            return self._forward_vmap(idx)
        if how != "bmm":
            raise ValueError(f"forward must be 'bmm' or 'vmap', not {how!r}")
        return self._forward_bmm(idx)

    def _forward_bmm(self, idx: torch.Tensor) -> torch.Tensor:
        k, b, t = idx.shape
        cfg, p = self.cfg, self.params
        x = _embed(p["wte.weight"], idx) + p["wpe.weight"][:, :t].unsqueeze(1)
        x = x.view(k, b * t, cfg.d_model)
        for layer in range(cfg.n_layer):
            pre = f"blocks.{0 if cfg.share_layers else layer}."
            x = x + self._attention(self._norm(x, pre + "ln1"), pre + "attn", b, t)
            h = _linear(self._norm(x, pre + "ln2"), p[pre + "mlp.fc.weight"],
                        p[pre + "mlp.fc.bias"])
            x = x + _linear(F.gelu(h), p[pre + "mlp.proj.weight"], p[pre + "mlp.proj.bias"])
        x = self._norm(x, "ln_f")
        logits = torch.bmm(x, p["wte.weight"].transpose(1, 2))  # the tied head
        return logits.view(k, b, t, cfg.vocab_size)

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        # F.layer_norm takes one (d,) affine; the K affines are applied after it.
        w, bias = self.params[name + ".weight"], self.params[name + ".bias"]
        return F.layer_norm(x, x.shape[-1:], eps=self.ln_eps) * w.unsqueeze(1) + bias.unsqueeze(1)

    def _attention(self, x: torch.Tensor, pre: str, b: int, t: int) -> torch.Tensor:
        cfg, p, k = self.cfg, self.params, self.k
        inner = cfg.n_head * cfg.head_dim
        q, kk, v = _linear(x, p[pre + ".qkv.weight"], p[pre + ".qkv.bias"]).split(inner, dim=2)
        # K folded into the batch: one plain SDPA call, so every kernel (flash too) applies.
        q, kk, v = (z.reshape(k * b, t, cfg.n_head, cfg.head_dim).transpose(1, 2)
                    for z in (q, kk, v))
        y = F.scaled_dot_product_attention(q, kk, v, is_causal=True)
        y = y.transpose(1, 2).reshape(k, b * t, inner)
        return _linear(y, p[pre + ".proj.weight"], p[pre + ".proj.bias"])

    def _forward_vmap(self, idx: torch.Tensor) -> torch.Tensor:
        def one(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            # functional_call ties head.weight to the wte.weight we pass, as in the module.
            return functional_call(self.template, params, (x,))

        with _vmap_safe_attention(idx.device), warnings.catch_warnings():
            # On CPU, SDPA has no vmap batching rule and runs as a loop over the K models:
            # slower, and said once per call; this path is the reference, not the fast one.
            warnings.filterwarnings("ignore", message="There is a performance drop")
            return vmap(one)(self.params, idx)

    @torch.no_grad()
    def unpack(self, k: int) -> GPT:
        """Model k as a plain GPT module (a copy, on the pack's device)."""
        model = copy.deepcopy(self.template)
        for name, param in model.named_parameters():
            param.copy_(self.params[name][k])
            param.requires_grad_(True)
        return model


def _check_known_parameters(cfg: GPTConfig, names: Sequence[str]) -> None:
    """The batched forward re-implements GPT.forward; refuse a GPT whose parameters it does not
    know (the module changed) rather than train something else."""
    blocks = 1 if cfg.share_layers else cfg.n_layer
    per_block = [f"{m}.{w}" for m in ("ln1", "attn.qkv", "attn.proj", "ln2", "mlp.fc",
                                      "mlp.proj") for w in ("weight", "bias")]
    expected = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"}
    expected |= {f"blocks.{i}.{n}" for i in range(blocks) for n in per_block}
    if set(names) != expected:
        raise ValueError("pack.py's batched forward does not know this GPT's parameters "
                         f"(unknown: {sorted(set(names) - expected)}, missing: "
                         f"{sorted(expected - set(names))}); update PackedGPT._forward_bmm")


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """K linear layers at once: x (K, M, in), w (K, out, in), b (K, out) -> (K, M, out)."""
    return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


def _embed(wte: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Row idx[k] of table k: one embedding lookup into the K tables laid end to end."""
    k, vocab, d = wte.shape
    offsets = torch.arange(k, device=idx.device).view(k, 1, 1) * vocab
    return F.embedding(idx + offsets, wte.reshape(k * vocab, d))


def _vmap_safe_attention(device: torch.device):
    # Flash attention's backward refuses vmap's batched layout; efficient and math do not.
    if device.type != "cuda":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


# -- optimizer and clipping over the (K, P) rows --------------------------------------------------

class StackedAdamW:
    """AdamW over the rows of a PackedGPT, row k with learning rate lrs[k].

    Same arithmetic, in the same order and with the same scalars (computed in Python doubles,
    cast once by the kernels), as `torch.optim.AdamW(foreach=True)` with decoupled weight decay
    on the matrices only, which is what `make_optimizer` builds for one model."""

    def __init__(self, pack: PackedGPT, t: TrainSpec):
        self.pack = pack
        self.betas = (t.beta1, t.beta2)
        self.weight_decay = t.weight_decay
        self.exp_avg = torch.zeros_like(pack.flat)
        self.exp_avg_sq = torch.zeros_like(pack.flat)
        self.steps = 0

    def _column(self, values: Sequence[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64).to(self.pack.flat).unsqueeze(1)

    @torch.no_grad()
    def step(self, lrs: Sequence[float]) -> None:
        flat, grad, (beta1, beta2) = self.pack.flat, self.pack.grad, self.betas
        self.steps += 1
        if self.weight_decay:
            decay = [1 - lr * self.weight_decay for lr in lrs]
            flat[:, : self.pack.n_decay].mul_(self._column(decay))
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** self.steps
        bias_correction2_sqrt = (1 - beta2 ** self.steps) ** 0.5
        step_size = [(lr / bias_correction1) * -1 for lr in lrs]
        denom = self.exp_avg_sq.sqrt().div_(bias_correction2_sqrt).add_(ADAM_EPS)
        # p + s·m / d as addcdiv(value=s) computes it, with s per row (bitwise the same on CPU).
        flat.addcdiv_(self.exp_avg * self._column(step_size), denom)


@torch.no_grad()
def clip_per_model(pack: PackedGPT, max_norm: float) -> torch.Tensor:
    """clip_grad_norm_ for each model on its own; returns the K gradient norms.

    One norm over each row, where clip_grad_norm_ takes the norm of per-parameter norms: the
    same number up to rounding (the gradients themselves already differ from a model alone by
    the batched GEMMs' summation order), for one kernel instead of one per parameter."""
    norms = torch.linalg.vector_norm(pack.grad, dim=1)
    coef = (max_norm / (norms + 1e-6)).clamp_(max=1.0)  # clip_grad_norm_'s formula
    pack.grad.mul_(coef.unsqueeze(1))
    return norms


# -- training -------------------------------------------------------------------------------------

@dataclass
class _Run:
    """One packed model's bookkeeping, the same as train_rung keeps for a model alone."""

    plan: RungPlan
    curve: list[CurvePoint] = field(default_factory=list)
    window: list[float] = field(default_factory=new_window)
    noise: list[float] = field(default_factory=list)  # standard errors of the curve's means
    outcome: TrainOutcome | None = None

    @property
    def active(self) -> bool:
        return self.outcome is None

    def finish(self, pack: PackedGPT, k: int, step: int, seconds: float, status: str,
               reason: str | None = None) -> None:
        self.outcome = TrainOutcome(status, pack.unpack(k), step,
                                    step * self.plan.units_per_step, seconds, self.curve,
                                    step if status == "diverged" else None, reason)

    def train_loss(self, loss: float) -> str | None:
        """Record one step's loss; the reason to stop if it is not finite."""
        if not math.isfinite(loss):
            return f"non-finite training loss ({loss})"
        add_loss(self.window, loss)
        return None

    def evaluated(self, step: int, val: float, lr: float, rise: float) -> str | None:
        """Close the interval with its validation loss; the reason to stop if it diverged."""
        mean_train, stderr = interval_mean(self.window)
        earlier = [p.train_loss for p in self.curve]
        self.curve.append(CurvePoint(step, step * self.plan.units_per_step, mean_train, val, lr))
        self.window = new_window()
        # The guard train_rung applies (diverge.py).
        reason = divergence(earlier, self.noise, mean_train, val, rise)
        self.noise.append(stderr)
        return reason


def _batches(task: Task, batch_size: int, gens: Sequence[torch.Generator],
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Each model's next batch from its own generator, stacked to (K, B, ...)."""
    pairs = [task.batch(batch_size, g) for g in gens]
    x = torch.stack([p[0] for p in pairs]).to(device, non_blocking=True)
    y = torch.stack([p[1] for p in pairs]).to(device, non_blocking=True)
    return x, y


def _losses(task: Task, out: torch.Tensor, y: torch.Tensor,
            reduction: str = "mean") -> torch.Tensor:
    """The task's loss of each model, (K,). unbind, not out[k]: the backward of K selects
    fills K zero tensors the size of all K models' logits; unbind's is one stack."""
    return torch.stack([task.loss(o, t, reduction=reduction)
                        for o, t in zip(out.unbind(0), y.unbind(0), strict=True)])


@torch.no_grad()
def evaluate_packed(pack: PackedGPT, task: Task, device: torch.device, n_units: int,
                    how: Forward = "bmm", precision: str = "auto") -> list[float]:
    """Each model's validation loss over the task's fixed batches, as `task.evaluate` sums it
    (per-batch sums in fp32, added up as Python floats, divided by the target count)."""
    xs, ys = task.eval_data(n_units, "val")
    totals, count = [0.0] * pack.k, 0
    for i in range(0, xs.size(0), EVAL_BATCH):
        x, y = xs[i : i + EVAL_BATCH].to(device), ys[i : i + EVAL_BATCH].to(device)
        with autocast(device, precision):
            out = pack.forward(x.expand(pack.k, *x.shape), how)
        sums = _losses(task, out, y.expand(pack.k, *y.shape), reduction="sum")
        totals = [a + b for a, b in zip(totals, sums.tolist(), strict=True)]
        count += y.numel()
    return [total / count for total in totals]


class _Clock:
    """Seconds spent in training steps: evaluation is measurement and is timed apart, as
    train_rung times it."""

    def __init__(self) -> None:
        self.seconds, self._t0 = 0.0, time.perf_counter()

    def pause(self) -> None:
        self.seconds += time.perf_counter() - self._t0

    def resume(self) -> None:
        self._t0 = time.perf_counter()


def train_packed(
    plans: Sequence[RungPlan],
    task: Task,
    t: TrainSpec,
    device: torch.device,
    *,
    family: Family,
    forward: Forward = "bmm",
    on_progress: Callable[[int, list[float]], None] | None = None,
) -> list[TrainOutcome]:
    """Train the plans as one pack; one `TrainOutcome` per plan, in order, as `train_rung` would
    give for each alone (fp32: the same curve to rounding). `train_seconds` is the model's share
    of the pack's time in training steps (that time / K), so the K shares add up to what the
    pack cost. `on_progress(step, losses)` gets the K training losses of every step, read in
    groups of LOSS_READ_EVERY steps as train_rung reads them."""
    check_packable(plans)
    configure_device(device)  # train_rung's settings: flush subnormals on CPU, TF32 on CUDA
    pack = PackedGPT.build(plans, family, device)
    opt = StackedAdamW(pack, t)
    gens = [torch.Generator().manual_seed(p.batch_seed) for p in plans]
    runs = [_Run(p) for p in plans]
    pending: list[torch.Tensor] = []  # (K,) losses of the steps not yet read on the host
    clock = _Clock()
    for step in range(1, plans[0].steps + 1):
        lrs = [lr_at(step - 1, p, t.min_lr_frac) for p in plans]
        pending.append(_train_step(pack, opt, task, t, device, forward, gens,
                                   plans[0].batch_size, lrs))
        at_eval = step % t.eval_every == 0 or step == plans[0].steps
        if len(pending) < LOSS_READ_EVERY and not at_eval:
            continue
        # One read for the pending steps; it waits for the device, so it is training time.
        # Each step is still checked and reported at its own number.
        rows = torch.stack(pending).tolist()
        clock.pause()
        _read_losses(runs, pack, rows, step - len(pending) + 1, clock.seconds, on_progress)
        pending.clear()
        if at_eval:
            _evaluate(runs, pack, task, t, device, forward, step, lrs, clock.seconds)
        if not any(r.active for r in runs):
            break
        clock.resume()
    return [r.outcome for r in runs if r.outcome is not None]


def _train_step(pack: PackedGPT, opt: StackedAdamW, task: Task, t: TrainSpec,
                device: torch.device, forward: Forward, gens: Sequence[torch.Generator],
                batch_size: int, lrs: list[float]) -> torch.Tensor:
    """One optimizer step of every model; their (K,) training losses, not yet read."""
    x, y = _batches(task, batch_size, gens, device)
    with autocast(device, t.precision):
        out = pack.forward(x, forward)
    losses = _losses(task, out, y)
    pack.zero_grad()
    pack.backward(losses.sum())  # rows never mix, so each model gets its own gradient
    clip_per_model(pack, t.grad_clip)
    opt.step(lrs)
    return losses.detach()


def _read_losses(runs: list[_Run], pack: PackedGPT, rows: list[list[float]], first: int,
                 seconds: float, on_progress: Callable[[int, list[float]], None] | None) -> None:
    """Record the steps first, first+1, ...: each active model stops at its first non-finite
    loss, as train_rung does."""
    for at, losses in enumerate(rows, start=first):
        for i, run in enumerate(runs):
            if run.active and (reason := run.train_loss(losses[i])) is not None:
                run.finish(pack, i, at, seconds / len(runs), "diverged",
                           f"{reason} at step {at}")
        if on_progress is not None:
            on_progress(at, losses)


def _evaluate(runs: list[_Run], pack: PackedGPT, task: Task, t: TrainSpec,
              device: torch.device, forward: Forward, step: int, lrs: list[float],
              seconds: float) -> None:
    """A curve point for each active model, its divergence guard, and its outcome at the end."""
    if not any(r.active for r in runs):
        return
    vals = evaluate_packed(pack, task, device, t.eval_tokens, forward, t.precision)
    for i, run in enumerate(runs):
        if not run.active:
            continue
        if (reason := run.evaluated(step, vals[i], lrs[i], t.diverge_rise)) is not None:
            run.finish(pack, i, step, seconds / len(runs), "diverged", reason)
        elif step == run.plan.steps:
            run.finish(pack, i, step, seconds / len(runs), "done")
