"""Plan a ladder: target sizes -> shapes, training units and steps per rung, a size-aware
learning rate.

The plan is pure: the same spec, task and family always give the same rungs, which is what lets
a killed study resume and be checked against the plan stored in its database.
"""

from __future__ import annotations

import math

from scalelab.errors import UserError
from scalelab.models.base import Family
from scalelab.records import RungPlan
from scalelab.spec import StudySpec
from scalelab.tasks.base import Task


def target_sizes(spec: StudySpec) -> list[float]:
    return spec.ladder.targets()


def learning_rate(spec: StudySpec, n_nonembed: int) -> float:
    t = spec.train
    return t.lr * (n_nonembed / t.lr_ref_nonembed) ** t.lr_exponent


def repeats_of(spec: StudySpec, target: float) -> int:
    """How many times a size is trained: `ladder.repeats`, or once at and above
    `ladder.repeats_below`."""
    lad = spec.ladder
    if lad.repeats_below is not None and target >= lad.repeats_below:
        return 1
    return lad.repeats


def plan_ladder(spec: StudySpec, task: Task, family: Family) -> list[RungPlan]:
    """One rung per size and repeat. A rung's `repeat` is its seed repeat (`ladder.repeats`),
    or its fold for a k-fold task; a study cannot have both (one clear line if asked)."""
    t = spec.train
    per_step = task.units_per_batch(t.batch_size)
    n_folds = getattr(task, "n_folds", 1)
    if n_folds > 1 and spec.ladder.repeats > 1:
        raise UserError(f"ladder.repeats: the task's {n_folds} folds already train every size "
                        f"{n_folds} times (the folds are its repeats); drop ladder.repeats or "
                        "the task's folds")
    sizes = target_sizes(spec)
    rungs: list[RungPlan] = []
    seen: list[dict] = []
    for target in sizes:
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
        steps = max(1, math.ceil(int(t.budget(n_nonembed)) / per_step))
        # With k-fold cross-validation every size is trained once per fold (the rung's
        # `repeat`), from the same seed: the spread across folds is the data's, not the init's.
        # Seed repeats differ in their seed: repeat r of size i has seed + i + r * sizes, so
        # repeat 0 keeps the seed a ladder without repeats has, and no two rungs share one.
        size_index = len(seen) - 1
        for repeat in range(max(n_folds, repeats_of(spec, target))):
            seed = t.seed + size_index + (0 if n_folds > 1 else repeat * len(sizes))
            rungs.append(RungPlan(
                rung=len(rungs), family=family.name, shape=shape, target_n=target,
                n_params=n_params, n_nonembed=n_nonembed, D=steps * per_step, unit=task.unit,
                steps=steps, batch_size=t.batch_size, units_per_step=per_step,
                lr=learning_rate(spec, n_nonembed), warmup_steps=round(t.warmup_frac * steps),
                seed=seed, repeat=repeat, describe=family.describe(shape),
            ))
    return rungs
