"""Plan a ladder: target sizes -> shapes, training units and steps per rung, a size-aware
learning rate.

The plan is pure: the same spec, task and family always give the same rungs, which is what lets
a killed study resume and be checked against the plan stored in its database.
"""

from __future__ import annotations

import math

import numpy as np

from scalelab.errors import UserError
from scalelab.models.base import Family
from scalelab.records import RungPlan
from scalelab.spec import StudySpec
from scalelab.tasks.base import Task


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


def plan_ladder(spec: StudySpec, task: Task, family: Family) -> list[RungPlan]:
    t = spec.train
    per_step = task.units_per_batch(t.batch_size)
    rungs: list[RungPlan] = []
    seen: list[dict] = []
    for target in target_sizes(spec):
        try:
            shape = family.shape_for(target, task.io)
        except ValueError as err:
            raise UserError(f"ladder: {err}") from None
        if shape in seen:
            raise UserError(
                f"ladder: sizes {target:.3g} and a smaller one map to the same shape "
                f"({family.describe(shape)}); space the sizes further apart"
            )
        seen.append(shape)
        n_params, n_nonembed = family.count_params(family.build(shape))
        units = int(t.tokens_per_param * n_nonembed) if t.tokens_per_param else t.tokens
        steps = max(1, math.ceil(units / per_step))
        # With k-fold cross-validation every size is trained once per fold (the rung's
        # `repeat`), from the same seed: the spread across folds is the data's, not the init's.
        seed = t.seed + len(seen) - 1
        for fold in range(getattr(task, "n_folds", 1)):
            rungs.append(RungPlan(
                rung=len(rungs), family=family.name, shape=shape, target_n=target,
                n_params=n_params, n_nonembed=n_nonembed, D=steps * per_step, unit=task.unit,
                steps=steps, batch_size=t.batch_size, units_per_step=per_step,
                lr=learning_rate(spec, n_nonembed), warmup_steps=round(t.warmup_frac * steps),
                seed=seed, repeat=fold, describe=family.describe(shape),
            ))
    return rungs
