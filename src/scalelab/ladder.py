"""Plan a ladder: target sizes -> shapes, tokens and steps per rung, a size-aware learning rate.

The plan is pure: the same spec always gives the same rungs, which is what lets a killed study
resume and be checked against the plan stored in its database.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from scalelab.errors import UserError
from scalelab.models import gpt
from scalelab.spec import StudySpec


@dataclass(frozen=True)
class RungPlan:
    rung: int
    target_nonembed: float
    n_layer: int
    d_model: int
    n_head: int
    block_size: int
    vocab_size: int
    share_layers: bool
    n_params: int
    n_nonembed: int
    tokens: int
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    seed: int

    def config(self) -> gpt.GPTConfig:
        return gpt.GPTConfig(self.n_layer, self.d_model, self.n_head, self.block_size,
                             self.vocab_size, self.share_layers)

    def to_dict(self) -> dict:
        return asdict(self)


def target_sizes(spec: StudySpec) -> list[float]:
    lad = spec.ladder
    if lad.sizes is not None:
        return sorted(float(s) for s in lad.sizes)
    if lad.n_rungs == 1:
        return [float(lad.max_nonembed)]
    return [float(s) for s in np.geomspace(lad.min_nonembed, lad.max_nonembed, lad.n_rungs)]


def learning_rate(spec: StudySpec, n_nonembed: int) -> float:
    t = spec.train
    return t.lr * (n_nonembed / t.lr_ref_nonembed) ** t.lr_exponent


def plan_ladder(spec: StudySpec, vocab_size: int) -> list[RungPlan]:
    fam, t = spec.family, spec.train
    tokens_per_step = t.batch_size * fam.block_size
    rungs: list[RungPlan] = []
    seen: set[tuple[int, int]] = set()
    for target in target_sizes(spec):
        try:
            cfg = gpt.shape_for(target, fam.block_size, vocab_size, fam.share_layers)
        except ValueError as err:
            raise UserError(f"ladder: {err}") from None
        if (cfg.n_layer, cfg.d_model) in seen:
            raise UserError(
                f"ladder: sizes {target:.3g} and a smaller one map to the same shape "
                f"({cfg.n_layer} layers x {cfg.d_model}); space the sizes further apart"
            )
        seen.add((cfg.n_layer, cfg.d_model))
        n_params, n_nonembed = gpt.count_params(gpt.build(cfg))
        tokens = int(t.tokens_per_param * n_nonembed) if t.tokens_per_param else t.tokens
        steps = max(1, math.ceil(tokens / tokens_per_step))
        rungs.append(RungPlan(
            rung=len(rungs), target_nonembed=target, n_layer=cfg.n_layer, d_model=cfg.d_model,
            n_head=cfg.n_head, block_size=fam.block_size, vocab_size=vocab_size,
            share_layers=fam.share_layers, n_params=n_params, n_nonembed=n_nonembed,
            tokens=steps * tokens_per_step, steps=steps, batch_size=t.batch_size,
            lr=learning_rate(spec, n_nonembed), warmup_steps=round(t.warmup_frac * steps),
            seed=t.seed + len(rungs),
        ))
    return rungs
