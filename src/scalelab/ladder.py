"""Plan a ladder: target sizes -> shapes, training units and steps per rung, a size-aware
learning rate; on two axes, a grid of (N, D) or IsoFLOP budgets, and WSD cool-down branches.

The plan is pure: the same spec, task and family always give the same rungs, which is what lets
a killed study resume and be checked against the plan stored in its database.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

import torch

from scalelab.errors import UserError
from scalelab.models.base import Family
from scalelab.records import RungPlan
from scalelab.spec import StudySpec
from scalelab.tasks.base import Task

# Defaults of a spec that leaves out train.lr or train.tokens (resolve_train), chosen per task.
LM_LR = 3e-3  # a language model (a sequence task) at lr_ref_nonembed: the default study's rate
VECTOR_LR = 1e-3  # a model of vectors or images (MLP, CNN, a custom factory): Adam's usual rate
TEXT_UNITS = 4_000_000  # a text's budget in its own unit (bytes or tokens) for every rung
# A task that knows its training rows (a table, digits) trains for a whole number of epochs:
# about TABLE_EXAMPLES examples (enough optimizer steps for a small model to settle, ~1,900 at
# batch 16), but no fewer than MIN_EPOCHS passes over a large table and no more than MAX_EPOCHS
# over a small one (past that a small model only memorises its rows).
TABLE_EXAMPLES = 30_000
MIN_EPOCHS = 3
MAX_EPOCHS = 100


def default_epochs(train_rows: int) -> int:
    """The epochs a table of `train_rows` rows trains for when its spec gives no budget."""
    return min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TABLE_EXAMPLES / train_rows)))


def resolve_train(spec: StudySpec, task: Task, family: Family) -> StudySpec:
    """The spec with what it left out of `train` chosen for its task and family:
    - `lr`: LM_LR for a language model (a sequence task), VECTOR_LR for any other model (the
      size rule lr_ref_nonembed / lr_exponent applies to either);
    - `tokens` (when neither it nor tokens_per_param is given): `default_epochs` passes over the
      training rows of a task that knows them (`task.train_units`; examples), else TEXT_UNITS.
    The study stores the spec this returns, so a resume, `show` and the report see the values
    chosen, and resolving a stored spec again changes nothing."""
    t = spec.train
    update: dict = {}
    if t.lr is None:
        update["lr"] = LM_LR if task.io.kind == "sequence" else VECTOR_LR
    if t.tokens is None and t.tokens_per_param is None:
        rows = getattr(task, "train_units", None)
        by_rows = rows and task.unit == "example"
        update["tokens"] = default_epochs(rows) * rows if by_rows else TEXT_UNITS
    if not update:
        return spec
    return spec.model_copy(update={"train": t.model_copy(update=update)})


def target_sizes(spec: StudySpec) -> list[float]:
    return spec.ladder.targets()


def learning_rate(spec: StudySpec, n_nonembed: int) -> float:
    t = spec.train
    return t.lr * (n_nonembed / t.lr_ref_nonembed) ** t.lr_exponent


def data_seed(spec: StudySpec, repeat: int) -> int | None:
    """The batch stream's seed with `train.shared_data_order`: every size of repeat r reads the
    stream of seed + r (common random numbers: the sizes differ by their models, not by which
    windows of the corpus they happened to see; on the default study this cut the spread between
    seeds, see docs/results.md). None: each rung reads the stream of its own seed."""
    return spec.train.seed + repeat if spec.train.shared_data_order else None


def repeats_of(spec: StudySpec, target: float) -> int:
    """How many times a size is trained: `ladder.repeats`, or once at and above
    `ladder.repeats_below`."""
    lad = spec.ladder
    if lad.repeats_below is not None and target >= lad.repeats_below:
        return 1
    return lad.repeats


def schedule_of(spec: StudySpec) -> str:
    """The learning-rate schedule: `train.schedule`, or by default wsd on a two-axis ladder
    (every smaller D of a size is a cool-down branch of one run, so a D sweep costs about one
    run per size; Hägele et al. 2024 measured it matching cosine runs) and cosine on an N-only
    ladder (one D per size: nothing to share, and the default study stays as it was)."""
    if spec.train.schedule is not None:
        return spec.train.schedule
    return "wsd" if spec.ladder.two_axis else "cosine"


def _check_folds(spec: StudySpec, task: Task) -> int:
    n_folds = getattr(task, "n_folds", 1)
    if n_folds > 1 and spec.ladder.repeats > 1:
        raise UserError(f"ladder.repeats: the task's {n_folds} folds already train every size "
                        f"{n_folds} times (the folds are its repeats); drop ladder.repeats or "
                        "the task's folds")
    return n_folds


def _shape(family: Family, task: Task, target: float, where: str = "ladder") -> dict:
    try:
        return family.shape_for(target, task.io)
    except ValueError as err:
        raise UserError(f"{where}: {err}") from None


def plan_ladder(spec: StudySpec, task: Task, family: Family) -> list[RungPlan]:
    """One rung per size and repeat (an N-only ladder), or per (N, D) and repeat (a grid or
    IsoFLOP budgets). A rung's `repeat` is its seed repeat (`ladder.repeats`), or its fold for a
    k-fold task; a study cannot have both (one clear line if asked). Every problem with the
    ladder is a UserError here, before anything is written."""
    spec = resolve_train(spec, task, family)
    if spec.ladder.two_axis:
        return _plan_two_axis(spec, task, family)
    t = spec.train
    per_step = task.units_per_batch(t.batch_size)
    n_folds = _check_folds(spec, task)
    sizes = target_sizes(spec)
    rungs: list[RungPlan] = []
    seen: list[dict] = []
    for target in sizes:
        shape = _shape(family, task, target)
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
                train_units=getattr(task, "train_units", None),
                data_seed=data_seed(spec, repeat),
            ))
    if schedule_of(spec) == "wsd":  # asked for on an N-only ladder: every rung its own trunk
        rungs = wsd_branches([replace(p, schedule="wsd") for p in rungs], t.warmup_frac,
                             t.decay_frac)
    return rungs


# -- two axes: a grid of (N, D) or IsoFLOP budgets ------------------------------------------------

# The fewest optimizer steps an IsoFLOP rung may get: below this a run is all warm-up and decay
# and its loss says little about its size (a budget that small is refused, naming the size).
MIN_ISOFLOP_STEPS = 10


# Distinct (N, D) points a two-axis ladder needs: one more than the 5 parameters of the law it
# is fitted with (laws/two_axis.py refuses fewer), checked here so that it is refused before
# anything trains rather than after.
MIN_TWO_AXIS_POINTS = 6


@dataclass(frozen=True)
class _Cell:
    """One (N, D) point before seeds and schedule: its size and its number of steps."""

    target: float
    shape: dict
    n_params: int
    n_nonembed: int
    steps: int
    budget: float | None = None


def isoflop_sizes(budget: float, points: int, span: float, tokens_per_param: float) -> list[float]:
    """The `points` target sizes of one budget: the first guess N0 = sqrt(C / (6 ·
    tokens_per_param)) (C = 6·N·D with D = tokens_per_param·N), and the `points` sizes of the log
    grid r^k (r = span^(2/(points-1)), the same grid for every budget) nearest N0, centred on
    it: about N0/span .. N0·span."""
    ratio = span ** (2.0 / (points - 1))
    k0 = math.log(math.sqrt(budget / (6.0 * tokens_per_param))) / math.log(ratio)
    first = round(k0 - (points - 1) / 2)
    return [ratio ** (first + i) for i in range(points)]


def flops_per_step(family: Family, task: Task, shape: dict, batch_size: int) -> int:
    """Measured FLOPs of one training step of this shape (torch's flop counter, the same
    function that measures every trained rung), not 6·N: at small sizes the attention and the
    head make 6N far off."""
    # measure.py is a leaf of train/ (it imports tasks.base only); the count must be the very
    # one a rung's recorded `flops` comes from, so D = C / (FLOPs per unit) matches it.
    from scalelab.train.measure import train_step_flops

    with torch.random.fork_rng(devices=[]):  # building a model draws from the global RNG
        model = family.build(shape)
    return train_step_flops(model, task.example_input(batch_size))


def _sized(family: Family, task: Task, target: float, where: str) -> tuple[dict, int, int]:
    shape = _shape(family, task, target, where)
    n_params, n_nonembed = family.count_params(family.build(shape))
    return shape, n_params, n_nonembed


def _isoflop_cells(spec: StudySpec, task: Task, family: Family) -> list[_Cell]:
    iso = spec.ladder.isoflop
    assert iso is not None
    batch = spec.train.batch_size
    per_step = task.units_per_batch(batch)
    step_flops: dict[str, int] = {}  # by shape: every budget shares the grid's sizes
    cells = []
    for budget in iso.budgets:
        where = f"ladder.isoflop: budget {budget:.3g} FLOPs"
        seen: list[dict] = []
        for target in isoflop_sizes(budget, iso.points, iso.span, iso.tokens_per_param):
            shape, n_params, n_nonembed = _sized(family, task, target, where)
            key = json.dumps(shape, sort_keys=True)
            if key not in step_flops:
                step_flops[key] = flops_per_step(family, task, shape, batch)
            steps = round(budget / step_flops[key])
            # Before the shape check: a budget below the family's smallest shape maps its sizes
            # to that one shape, and "too small" is the reason to give.
            if steps < MIN_ISOFLOP_STEPS:
                raise UserError(
                    f"{where} is too small for size {family.describe(shape)} ({n_nonembed:,} "
                    f"non-embedding): a step of {per_step:,} {task.unit}s costs "
                    f"{step_flops[key]:.3g} FLOPs, so it gets {steps} steps (at least "
                    f"{MIN_ISOFLOP_STEPS}); raise it to {MIN_ISOFLOP_STEPS * step_flops[key]:.3g} "
                    "or more")
            if shape in seen:
                raise UserError(f"{where}: sizes {target:.3g} and a smaller one map to the same "
                                f"shape ({family.describe(shape)}); raise span or lower points")
            seen.append(shape)
            cells.append(_Cell(target, shape, n_params, n_nonembed, steps, float(budget)))
    return cells


def _grid_cells(spec: StudySpec, task: Task, family: Family) -> list[_Cell]:
    lad = spec.ladder
    per_step = task.units_per_batch(spec.train.batch_size)
    cells: list[_Cell] = []
    seen: list[dict] = []
    for target in target_sizes(spec):
        shape, n_params, n_nonembed = _sized(family, task, target, "ladder")
        if shape in seen:
            raise UserError(f"ladder: sizes {target:.3g} and a smaller one map to the same shape "
                            f"({family.describe(shape)}); space the sizes further apart")
        seen.append(shape)
        if lad.tokens is not None:
            budgets = sorted(float(d) for d in lad.tokens)
        else:
            budgets = sorted(r * n_nonembed for r in lad.tokens_per_param or [])
        steps = [max(1, math.ceil(int(d) / per_step)) for d in budgets]
        if len(set(steps)) < len(steps):
            raise UserError(f"ladder: two D values of size {family.describe(shape)} round to the "
                            f"same number of steps (batches of {per_step:,} {task.unit}s); "
                            "space them further apart")
        cells += [_Cell(target, shape, n_params, n_nonembed, s) for s in steps]
    return cells


def _plan_two_axis(spec: StudySpec, task: Task, family: Family) -> list[RungPlan]:
    """Rungs of the grid or the budgets: seeds by size (every D of a size shares its size's
    seed, as a cool-down branch shares its trunk's), then the schedule."""
    t = spec.train
    n_folds = _check_folds(spec, task)
    per_step = task.units_per_batch(t.batch_size)
    cells = _isoflop_cells(spec, task, family) if spec.ladder.isoflop is not None \
        else _grid_cells(spec, task, family)
    order = sorted({c.n_nonembed for c in cells})
    schedule = schedule_of(spec)
    rungs: list[RungPlan] = []
    for c in cells:
        size_index = order.index(c.n_nonembed)
        for repeat in range(max(n_folds, repeats_of(spec, c.target))):
            seed = t.seed + size_index + (0 if n_folds > 1 else repeat * len(order))
            rungs.append(RungPlan(
                rung=len(rungs), family=family.name, shape=c.shape, target_n=c.target,
                n_params=c.n_params, n_nonembed=c.n_nonembed, D=c.steps * per_step,
                unit=task.unit, steps=c.steps, batch_size=t.batch_size,
                units_per_step=per_step, lr=learning_rate(spec, c.n_nonembed),
                warmup_steps=round(t.warmup_frac * c.steps), seed=seed, repeat=repeat,
                describe=family.describe(c.shape), budget=c.budget, schedule=schedule,
                train_units=getattr(task, "train_units", None),
                data_seed=data_seed(spec, repeat)))
    keys = [p.key for p in rungs]
    if len(set(keys)) < len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise UserError(f"ladder: two rungs of size {dup[0]:.3g} get the same D ({dup[1]:,}); "
                        "space the budgets or D values further apart")
    points = len({(p.n_nonembed, p.D) for p in rungs})
    if points < MIN_TWO_AXIS_POINTS:
        raise UserError(f"ladder: {points} distinct (N, D) points; the two-axis law L(N, D) = "
                        "E + A·N^-alpha + B·D^-beta has 5 parameters and needs at least "
                        f"{MIN_TWO_AXIS_POINTS} (add sizes, D values or budgets)")
    return wsd_branches(rungs, t.warmup_frac, t.decay_frac) if schedule == "wsd" else rungs


def wsd_branches(rungs: list[RungPlan], warmup_frac: float,
                 decay_frac: float) -> list[RungPlan]:
    """The WSD plan of a ladder: within each run group (same shape, seed and repeat, so the same
    initial weights and batches), the longest rung is the trunk and every shorter one a
    cool-down branch of it.

    Every rung decays over its last `decay_frac` of steps (at least one); a branch starts from
    the trunk's state at its own decay start, `branch_step` = steps - decay_steps, which the
    trunk reaches in its stable phase (its own decay starts later). The group shares one warm-up,
    `warmup_frac` of its shortest rung, so the trunk and every branch agree on the learning rate
    at every step before the branch point: a branch is then exactly the WSD run of its own D."""
    groups: dict[tuple, list[RungPlan]] = {}
    for p in rungs:
        groups.setdefault((json.dumps(p.shape, sort_keys=True), p.seed, p.repeat), []).append(p)
    out = {p.rung: p for p in rungs}
    for group in groups.values():
        warmup = round(warmup_frac * min(p.steps for p in group))
        trunk = max(group, key=lambda p: p.steps)
        for p in group:
            decay = max(1, round(decay_frac * p.steps))
            branch = p.steps - decay
            is_branch = p is not trunk and branch > 0
            out[p.rung] = replace(p, warmup_steps=warmup, decay_steps=decay,
                                  trunk=trunk.rung if is_branch else None,
                                  branch_step=branch if is_branch else None)
    return [out[p.rung] for p in rungs]
