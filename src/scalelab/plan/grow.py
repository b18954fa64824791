"""Grow a study toward a target size, one rung at a time, each forecast before it trains
(`scalelab grow`).

A step: propose the next rung (`propose`: of adding each candidate size, or more seeds at a
size the study has, which most narrows the spread of the law's prediction at the target per
FLOP, by the plan's simulation: `plan.simulation.simulate_many` over the study as it stands
and each candidate added to it, drawn from the study's law plus its noise); record the study
law's prediction for each of its rungs with the interval of one run there (`forecast`) in the
study's `forecasts` table BEFORE it trains; train it as a rung of the study (`run_study` with
the study's own ladder plus every grown rung: the executor pipeline, its ladder entry, its
refit and outputs), which records what it measured beside its forecast. Repeat for `steps`
steps toward the target, until the study's interval at the target lies within the tolerance,
or until the budget is spent.

A grown rung follows the study's rules: its shape is the family's for its size, its D the
spec's D rule (a law in N alone was measured under one D rule and says nothing of another), its
learning rate the spec's rule; a seed no rung of the study has.

Forecasts are pre-registered: a rerun of the same grow (after a kill, say) finds the step whose
rungs did not finish, trains them (from their checkpoints) and keeps the forecast recorded
before the kill; the storage never rewrites one (`StudyStorage.add_forecasts`). `steps` and the
budget count every step toward this target, so a rerun resumes the grow rather than starting
another: give a larger `steps` to grow further.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np

from scalelab.errors import UserError
from scalelab.plan.search import CostModel
from scalelab.plan.simulation import LEVEL, MAX_SIZES, Ladder, NoiseModel, simulate_many
from scalelab.plan.source import Source, law_record, realizer, study_source
from scalelab.records import FINISHED, RungPlan

if TYPE_CHECKING:
    from scalelab.execute.base import ExecuteOptions, Executor, Observer
    from scalelab.models.base import Family
    from scalelab.spec import StudySpec
    from scalelab.tasks.base import Task

FACTORS = (1.5, 2.0, 3.0, 4.0)  # a new size: the largest measured one times these
SEEDS = (1, 2, 3)  # runs a step adds at its size
MIN_REACH = 2.0  # a grown size stays at least this many times below the target
SIMS = 200


@dataclass(frozen=True)
class Proposal:
    """The next step: `seeds` runs at size `n` (non-embedding; `key_n` the target N a rung of
    it is planned for), their FLOPs, and the simulated 95% spread of the error at the target
    before (`width_now`) and after it (`width`)."""

    n: float
    key_n: float
    seeds: int
    flops: float
    width_now: float
    width: float
    describe: str

    def record(self) -> dict[str, Any]:
        return {"n": self.n, "seeds": self.seeds, "flops": self.flops,
                "width_now": self.width_now, "width": self.width, "ladder": self.describe}


def done_rungs(rungs: Sequence[dict]) -> list[dict]:
    from scalelab.study import finished

    return finished(list(rungs))


def study_ladder(rungs: Sequence[dict]) -> Ladder:
    """The study's finished rungs as a ladder: each size and its number of runs."""
    counts: dict[float, int] = {}
    for r in done_rungs(rungs):
        n = float(r["n_nonembed"])
        counts[n] = counts.get(n, 0) + 1
    sizes = tuple(sorted(counts))
    return Ladder(sizes, counts=tuple(counts[n] for n in sizes))


def _added(ladder: Ladder, n: float, seeds: int) -> Ladder:
    counts = dict(zip(ladder.sizes, ladder.counts or (), strict=True))
    counts[n] = counts.get(n, 0) + seeds
    sizes = tuple(sorted(counts))
    return Ladder(sizes, counts=tuple(counts[s] for s in sizes))


def candidate_steps(ladder: Ladder, target: float, realize: Callable[[float], float]
                    ) -> list[tuple[float, int]]:
    """(size, seeds) of every candidate step: 1 to 3 seeds at a new size (the largest measured
    times 1.5 to 4, on the family's shapes, at least MIN_REACH below the target, while the
    ladder stays within the sizes a simulation fits) or at a size the study has."""
    largest = ladder.sizes[-1]
    new = sorted({realize(largest * f) for f in FACTORS})
    new = [n for n in new if largest < n <= target / MIN_REACH]
    if len(ladder.sizes) >= MAX_SIZES:
        new = []
    return [(n, s) for n in [*ladder.sizes, *new] for s in SEEDS]


def propose(src: Source, rungs: Sequence[dict], target: float, realize: Callable[[float], float],
            budget_left: float | None, *, sims: int = SIMS, seed: int = 0) -> Proposal | None:
    """The candidate step that most narrows the simulated spread of the error at the target per
    FLOP, of those that narrow it by more than twice the standard error of the difference (when
    none does, the one that leaves the narrowest spread), among those within `budget_left`;
    None when none is."""
    ladder = study_ladder(rungs)
    steps = [(n, s) for n, s in candidate_steps(ladder, target, realize)
             if budget_left is None or src.cost.run_flops(n) * s <= budget_left]
    if not steps:
        return None
    ladders = [ladder, *(_added(ladder, n, s) for n, s in steps)]
    out = simulate_many(ladders, src.noise, target, sims=sims, seed=seed)
    now, now_se = spread(out[0].errors, seed)
    rows, margins = [], []
    for (n, s), lad, o in zip(steps, ladders[1:], out[1:], strict=True):
        width, se = spread(o.errors, seed)
        rows.append(Proposal(n, key_of(rungs, n), s, src.cost.run_flops(n) * s, now, width,
                             lad.describe()))
        margins.append(2.0 * math.hypot(now_se, se))
    # A cheap step whose gain is within the simulation's noise would win per FLOP by luck.
    narrowing = [p for p, m in zip(rows, margins, strict=True) if p.width_now - p.width > m]
    if narrowing:
        return max(narrowing, key=lambda p: (p.width_now - p.width) / p.flops)
    return min(rows, key=lambda p: p.width)


def spread(errors: np.ndarray, seed: int, resamples: int = 200) -> tuple[float, float]:
    """The central 95% range of simulated errors (as `Outcome.record`'s spread_width) and its
    standard error over bootstrap resamples of the errors."""
    def width(e: np.ndarray) -> np.ndarray:
        lo, hi = np.quantile(e, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=-1)
        return hi - lo

    rng = np.random.default_rng(seed)
    boot = errors[rng.integers(0, len(errors), (resamples, len(errors)))]
    return float(width(errors)), float(width(boot).std())


def key_of(rungs: Sequence[dict], n: float) -> float:
    """The target N the study planned its rungs of size n for (n itself for a new size)."""
    return next((float(r["key_n"]) for r in rungs if float(r["n_nonembed"]) == n), n)


def step_plans(spec: StudySpec, task: Task, family: Family, rungs: Sequence[dict],
               proposal: Proposal) -> list[RungPlan]:
    """The rungs of a step, planned by the study's own ladder rules (`plan_ladder` on a ladder
    of its one size, so its shape, D, steps and learning rate are what the study would plan),
    numbered after the study's rungs, their repeats after the size's own (the same data
    stream a repeat of that number reads), each with a seed no rung has."""
    from scalelab.ladder import plan_ladder

    same = [r for r in rungs if float(r["n_nonembed"]) == proposal.n]
    first = 1 + max((r["repeat"] for r in same), default=-1)
    ladder = spec.ladder.model_copy(update={"sizes": [proposal.key_n],
                                            "repeats": first + proposal.seeds,
                                            "repeats_below": None})
    planned = plan_ladder(spec.model_copy(update={"ladder": ladder}), task, family)[first:]
    if any(p.n_nonembed != proposal.n for p in planned):
        raise UserError(f"grow: size {proposal.key_n:.6g} plans a model of "
                        f"{planned[0].n_nonembed:,} parameters, not {proposal.n:,.0f}")
    rung = 1 + max(r["rung"] for r in rungs)
    seed = 1 + max(r["seed"] for r in rungs)
    return [replace(p, rung=rung + i, seed=seed + i) for i, p in enumerate(planned)]


def law_interval(fit: dict, n: float) -> tuple[float, float | None, float | None]:
    """(point, lo, hi) of the study's law at n: its bootstrap interval (None without one)."""
    from scalelab.laws.study import predict_band

    point, lo, hi = (float(v[0]) for v in predict_band(fit, [n]))
    return (point, None, None) if math.isnan(lo) else (point, lo, hi)


def half_width(point: float, lo: float | None, hi: float | None) -> float | None:
    """The interval's larger distance from its point, relative to it."""
    return None if lo is None or hi is None else max(hi / point - 1.0, 1.0 - lo / point)


def forecast(fit: dict, noise: NoiseModel, n: float) -> dict[str, Any]:
    """The prediction for one run at n and its interval: the law's point, and its bootstrap
    interval (how far the law itself may be off) widened by one run's noise there (a run lands
    about the law's mean with that sd of log loss), the two added in quadrature in log space,
    each side apart. A run's noise is its seed noise and, when the study's sizes sit off its law
    by more than their seeds explain (`simulation.shape_offsets`), that spread too: a new size is
    a new shape, with an offset of its own. (A study without repeats measures its noise from its
    law's residuals, which hold the shapes' offsets already.)"""
    level = float(fit.get("level") or 0.95)
    point, lo, hi = law_interval(fit, n)
    seed_sigma = float(noise.sigma_at(np.array([n]))[0])
    shape_sigma = float((noise.record.get("shapes") or {}).get("sigma") or 0.0)
    sigma = math.hypot(seed_sigma, shape_sigma)
    z = NormalDist().inv_cdf((1 + level) / 2)
    down = math.log(point / lo) if lo is not None else 0.0
    up = math.log(hi / point) if hi is not None else 0.0
    return {"predicted": point, "level": level,
            "lo": point * math.exp(-math.hypot(down, z * sigma)),
            "hi": point * math.exp(math.hypot(up, z * sigma)),
            "detail": {"law_lo": lo, "law_hi": hi, "sigma": sigma, "seed_sigma": seed_sigma,
                       "shape_sigma": shape_sigma, "noise": noise.source,
                       "law": dict(fit["params"])}}


@dataclass
class GrowState:
    """What the study holds now: its records as a plan reads a summary (`study`, `rungs` as
    the storage rows, `fits`), its fit record of val_loss, and its forecasts."""

    summary: dict[str, Any]
    fit: dict[str, Any]
    forecasts: list[dict]  # every forecast of the study
    mine: list[dict]  # those toward this target

    @property
    def rungs(self) -> list[dict]:
        return self.summary["rungs"]

    @property
    def spec(self) -> dict[str, Any]:
        return self.summary["study"]["spec"]

    def steps(self) -> int:
        return len({f["step"] for f in self.mine})

    def spent(self, cost: CostModel) -> float:
        """FLOPs of this grow's rungs: measured, else as the cost model expects."""
        by_rung = {r["rung"]: r for r in self.rungs}
        return sum(by_rung.get(f["rung"], {}).get("flops") or cost.run_flops(f["n"])
                   for f in self.mine)

    def unfinished(self) -> list[dict]:
        status = {r["rung"]: r["status"] for r in self.rungs}
        return [f for f in self.mine if status.get(f["rung"]) not in FINISHED]


def read_state(folder: Path, target: float) -> GrowState:
    from scalelab.storage import StudyStore

    with StudyStore.open_readonly(folder) as store:
        study = store.study()
        if study is None:
            raise UserError(f"{folder} has no study recorded")
        summary = {"study": study, "rungs": store.rungs(), "fits": store.fits()}
        forecasts = store.forecasts()
    return GrowState(summary, law_record(summary, folder), forecasts,
                     [f for f in forecasts if f["target"] == target])


def _noise_level(summary: dict, fit: dict, noise: float | None) -> float | None:
    """The noise to assume, None to measure it from the seed repeats: a study without repeats
    takes the sd of its law's residuals (its fit's noise record) unless `noise` is given."""
    if noise is not None:
        return noise
    from scalelab.laws.noise import repeat_noise

    done = done_rungs(summary["rungs"])
    if repeat_noise([r["n_nonembed"] for r in done], [r["val_loss"] for r in done]) is not None:
        return None
    sigma = (fit.get("noise") or {}).get("sigma")
    if not sigma:
        raise UserError("the study has no seed repeats and its law no residual noise to "
                        "measure; give --noise (e.g. --noise 1%) to assume one")
    return float(sigma)


def check_target(state: GrowState, target: float, folder: Path) -> None:
    sizes = [float(r["n_nonembed"]) for r in done_rungs(state.rungs)]
    if target <= max(sizes):
        raise UserError(f"--target {target:.4g} is inside the measured range of {folder} "
                        f"(up to {max(sizes):,.0f}): its loss is measured, not predicted; "
                        f"grow toward a target above {max(sizes):,.0f}")


@dataclass
class GrowOutcome:
    """How a grow ended: `stop` in words, the target's interval then, and this grow's
    forecasts with their outcomes."""

    stop: str
    target: float
    point: float
    lo: float | None
    hi: float | None
    forecasts: list[dict]


def grow(folder: str | Path, target: float, *, tolerance: float = 0.02, steps: int = 3,
         budget: float | None = None, seconds: float | None = None,
         noise: float | None = None, sims: int = SIMS, seed: int = 0,
         execute: ExecuteOptions | None = None, executor: Executor | None = None,
         observers: Sequence[Observer] = (), task: Task | None = None,
         family: Family | None = None, say: Callable[[str], None] = lambda line: None,
         on_rung_done: Callable[[RungPlan, dict], None] | None = None) -> GrowOutcome:
    """Grow the study in `folder` toward `target` (see the module docstring). `budget` in FLOPs
    or `seconds` of training at the study's measured rate; `noise` (sd of log loss) replaces
    the study's measured noise; `say` gets a line for each step. Bad input is a UserError
    before anything is recorded."""
    from scalelab.spec import parse_spec
    from scalelab.study import resolve

    folder = Path(folder)
    if not 0 < tolerance < 1:
        raise UserError(f"--tolerance must be between 0 and 100%, got {100 * tolerance:g}%")
    if steps < 1:
        raise UserError(f"--steps must be 1 or more, got {steps}")
    if budget is not None and seconds is not None:
        raise UserError("give --budget (FLOPs) or --seconds, not both")
    state = read_state(folder, target)
    spec = parse_spec(state.spec, f"{folder}'s spec")
    _check_ladder(spec)
    check_target(state, target, folder)
    src = study_source(state.summary, folder, _noise_level(state.summary, state.fit, noise))
    if seconds is not None:
        if not src.cost.flops_per_s:
            raise UserError("--seconds needs the study's measured rate (its rungs recorded no "
                            "training time); give --budget in FLOPs")
        budget = seconds * src.cost.flops_per_s
    res = resolve(spec, task, family, folder)
    realize = realizer(res.family, res.task)
    run = _Runner(folder, res.spec, task, family, execute, executor, observers, on_rung_done)
    while True:
        if state.unfinished():  # a step a kill cut short: its forecasts stand, train its rungs
            say(f"resuming step {max(f['step'] for f in state.unfinished())}: "
                f"{len(state.unfinished())} rung(s) forecast before the interruption")
            state = run.train(state, target)
        point, lo, hi = law_interval(state.fit, target)
        width = half_width(point, lo, hi)
        if width is not None and width <= tolerance:
            return _outcome(state, target, f"the interval at the target is within "
                            f"±{100 * tolerance:g}% (±{100 * width:.2f}%)")
        if state.steps() >= steps:
            return _outcome(state, target, f"{state.steps()} step(s) grown, as --steps asked")
        left = None if budget is None else budget - state.spent(src.cost)
        step = propose(src, state.rungs, target, realize, left, sims=sims,
                       seed=seed + state.steps())
        if step is None:
            if not state.mine:
                least = min(src.cost.run_flops(n) * s for n, s in
                            candidate_steps(study_ladder(state.rungs), target, realize))
                raise UserError(f"a budget of {budget:.3g} FLOPs is too small for any step: "
                                f"the cheapest needs {least:.3g} FLOPs")
            return _outcome(state, target, "the budget is spent: no further step fits in it")
        plans = step_plans(res.spec, res.task, res.family, state.rungs, step)
        number = state.steps() + 1
        rows = [_forecast_row(plan, number, target, state.fit, src.noise, state.rungs, step,
                              point, lo, hi) for plan in plans]
        run.register(rows)
        f = rows[0]
        say(f"step {number}: {step.seeds} run(s) at N = {step.n:,.0f} ({step.flops:.3g} FLOPs; "
            f"simulated spread at the target {100 * step.width_now:.1f}% -> "
            f"{100 * step.width:.1f}%); forecast {f['predicted']:.4f} "
            f"[{f['lo']:.4f}, {f['hi']:.4f}] recorded before training")
        state = run.train(read_state(folder, target), target)
        src = study_source(state.summary, folder,
                           _noise_level(state.summary, state.fit, noise))


def _check_ladder(spec: StudySpec) -> None:
    from scalelab.ladder import schedule_of

    if spec.ladder.two_axis:
        raise UserError("grow adds rungs to a ladder in N alone; this study is a two-axis "
                        "ladder (plan a two-axis one with scalelab plan)")
    if schedule_of(spec) == "wsd":
        raise UserError("grow trains cosine rungs; this study's rungs use the wsd schedule")


def _forecast_row(plan: RungPlan, step: int, target: float, fit: dict, noise: NoiseModel,
                  rungs: Sequence[dict], proposal: Proposal, point: float, lo: float | None,
                  hi: float | None) -> dict[str, Any]:
    f = forecast(fit, noise, float(plan.n_nonembed))
    f["detail"].update(proposal=proposal.record(), fitted_rungs=len(done_rungs(rungs)),
                       target_before={"point": point, "lo": lo, "hi": hi})
    return {"rung": plan.rung, "target": target, "step": step, "n": float(plan.n_nonembed),
            "plan": plan.to_dict(), **f}


def _outcome(state: GrowState, target: float, stop: str) -> GrowOutcome:
    point, lo, hi = law_interval(state.fit, target)
    return GrowOutcome(stop, target, point, lo, hi, state.mine)


@dataclass
class _Runner:
    """Writes forecasts and trains the grown rungs through `run_study`."""

    folder: Path
    spec: StudySpec
    task: Task | None
    family: Family | None
    execute: ExecuteOptions | None
    executor: Executor | None
    observers: Sequence[Observer]
    on_rung_done: Callable[[RungPlan, dict], None] | None

    def register(self, rows: list[dict]) -> None:
        """The forecasts, committed before anything of their rungs trains."""
        from scalelab.storage import StudyStore

        with StudyStore.create_or_open(self.folder) as store:
            store.add_forecasts(rows)

    def train(self, state: GrowState, target: float) -> GrowState:
        """Every unfinished rung of the study, grown ones included (each grown rung is planned
        from its forecast's plan), then refit and outputs (`run_study`): summary.json and the
        report show each forecast with what its rung measured."""
        from scalelab.ladder import plan_ladder
        from scalelab.study import resolve, run_study

        res = resolve(self.spec, self.task, self.family, self.folder)
        plans = plan_ladder(res.spec, res.task, res.family)
        plans += [RungPlan.from_dict(f["plan"]) for f in state.forecasts]
        run_study(self.spec, self.folder, task=self.task, family=self.family,
                  execute=self.execute, executor=self.executor, observers=self.observers,
                  plans=plans, on_rung_done=self.on_rung_done)
        return read_state(self.folder, target)
