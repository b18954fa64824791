"""Which ladder to train for a target: candidates, their cost, their simulated chance, a spec.

`make_plan` takes a noise model (`plan.simulation`), a target size, a tolerance and a budget, and
for every candidate ladder (`candidate_ladders`: sizes from the smallest measured size up to
the target / ratio, geometrically spaced and mapped to the family's real shapes, times seeds
per size, repeating all fitted sizes or only the smaller half) it estimates by simulation the
probability that the ladder's law lies within the tolerance at the target, and its cost. It
screens every candidate with `SCREEN_SIMS` synthetic ladders, re-runs with `FINAL_SIMS` the
`FINALISTS` cheapest of those within the budget that screened near the best (within `TIE` plus
two screening standard errors), and chooses the most probable of them (among those within `TIE`
of it, the cheapest). The chosen ladder goes into the base spec (the source study's, or a
preset) as `ladder.sizes`, `repeats` and `repeats_below`, with one run at the target itself so
the study checks its own forecast; the D rule (`train.tokens` and `tokens_exponent`) is the
base spec's: a law in N alone was measured under one D rule and says nothing about another.

The table is sorted by probability per PFLOP of the fitted runs (the run at the target is the
same for every candidate and left out there; the budget counts it).

Cost: FLOPs of a run = FLOPs per unit of D at its size × its D; per unit from the source study's
measured FLOPs (`measured_cost`), else 6·N. Seconds: FLOPs over the study's
measured rate (the median over its rungs of FLOPs per training second: runs one after another).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.plan.simulation import (
    MAX_SIZES,
    Ladder,
    NoiseModel,
    interval_width,
    simulate_many,
)

RATIOS = (3.0, 4.0, 6.0, 8.0, 12.0)  # target / largest fitted size
COUNTS = tuple(range(4, MAX_SIZES + 1))  # sizes fitted (4: the fewest with a holdout)
REPEATS = (1, 2, 3, 4, 6, 8)
SCREEN_SIMS = 200
FINAL_SIMS = 1000
FINALISTS = 6
TIE = 0.02  # probabilities this close are one (1.3 standard errors at 1,000 draws and 0.8)
CHECK_RUNS = 1  # runs at the target itself, so the study tests its forecast


@dataclass
class CostModel:
    """FLOPs of one run at size N: per_unit(N) · D(N)."""

    per_unit: Callable[[float], float]
    d_rule: Callable[[float], float]
    source: str
    flops_per_s: float | None = None

    def run_flops(self, n: float) -> float:
        return float(self.per_unit(n) * self.d_rule(n))

    def ladder_flops(self, ladder: Ladder, target: float, check: bool) -> float:
        total = sum(self.run_flops(n) * ladder.runs_of(n) for n in ladder.sizes)
        return total + (CHECK_RUNS * self.run_flops(target) if check else 0.0)


def measured_cost(rungs: Sequence[dict[str, Any]], d_rule: Callable[[float], float]
                  ) -> CostModel:
    """FLOPs per unit of D as c1·N + c0 through a study's rungs' measured FLOPs (least squares
    on the relative error): a term that grows with the non-embedding N, as 6·N does, and one
    that does not (the output head and embeddings); on the default study within 6% of every
    rung, where a power law in N missed the largest by 14%. The rate is the median over its
    runs (None when it recorded no training time)."""
    done = [r for r in rungs if r.get("flops") and r.get("D") and r.get("n_nonembed")]
    if len({r["n_nonembed"] for r in done}) < 2:
        return six_nd(d_rule)
    n = np.array([r["n_nonembed"] for r in done], dtype=float)
    k = np.array([r["flops"] / r["D"] for r in done])
    (c1, c0), *_ = np.linalg.lstsq(np.column_stack([n, np.ones_like(n)]) / k[:, None],
                                   np.ones_like(k), rcond=None)
    return CostModel(lambda v: float(c1 * v + c0), d_rule,
                     f"the study's measured FLOPs per unit of D ({c1:.3g}·N + {c0:.3g}) × D",
                     measured_rate(done))


def measured_rate(rungs: Sequence[dict[str, Any]]) -> float | None:
    """FLOPs per training second: the median over the rungs that recorded both (None when
    none did)."""
    rates = [r["flops"] / r["train_seconds"] for r in rungs
             if r.get("flops") and r.get("train_seconds")]
    return float(np.median(rates)) if rates else None


def six_nd(d_rule: Callable[[float], float]) -> CostModel:
    return CostModel(lambda n: 6.0 * n, d_rule, "6·N·D")


def _geometric(lo: float, hi: float, k: int, realize: Callable[[float], float]
               ) -> tuple[float, ...] | None:
    """k sizes from lo to hi, each mapped to a real shape; None when two share one, or when
    the shapes bunch up (two sizes closer than half a step of the geometric grid: the coarse
    shapes of a small model can turn 50k and 57k into neighbours with a gap beside them)."""
    sizes = tuple(sorted({realize(float(v)) for v in np.geomspace(lo, hi, k)}))
    if len(sizes) != k:
        return None
    half_step = math.sqrt((hi / lo) ** (1.0 / (k - 1)))
    gaps = np.diff(np.log(sizes))
    return sizes if gaps.min() >= math.log(half_step) else None


def candidate_ladders(target: float, smallest: float, realize: Callable[[float], float],
                      own: Sequence[float] = (), reach: float = RATIOS[0]) -> list[Ladder]:
    """Every candidate ladder (see the module docstring) whose largest fitted size lies at
    least `reach` times below the target; `own` (a source study's sizes) adds its sizes up to
    target / reach as one more set of sizes."""
    size_sets: set[tuple[float, ...]] = set()
    for ratio in (r for r in RATIOS if r >= reach):
        top = target / ratio
        if top < smallest * 4:  # less than a 4x span: no law to speak of
            continue
        for k in COUNTS:
            sizes = _geometric(smallest, top, k, realize)
            # a shape a little larger than asked for can fall short of the reach
            if sizes is not None and target / sizes[-1] >= reach:
                size_sets.add(sizes)
    mine = tuple(sorted(float(n) for n in own if n <= target / reach))
    if len(mine) >= 4:
        size_sets.add(mine[-MAX_SIZES:])
    ladders = []
    for sizes in sorted(size_sets):
        for r in REPEATS:
            ladders.append(Ladder(sizes, r))
            if r > 1:  # seeds only at the smaller half of the sizes
                ladders.append(Ladder(sizes, r, math.sqrt(sizes[len(sizes) // 2 - 1]
                                                          * sizes[len(sizes) // 2])))
    return ladders


@dataclass
class Plan:
    target: float
    tolerance: float
    budget: float | None
    rows: list[dict[str, Any]]  # every candidate, sorted by probability per FLOP
    chosen: dict[str, Any]
    noise: dict[str, Any]
    cost_source: str
    settings: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # what the target is, for the figure (None: N = target)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "label": self.label, "tolerance": self.tolerance,
                "budget_flops": self.budget, "noise": self.noise, "cost": self.cost_source,
                "settings": self.settings, "chosen": self.chosen, "candidates": self.rows}


def _row(ladder: Ladder, cost: CostModel, target: float, check: bool) -> dict[str, Any]:
    flops = cost.ladder_flops(ladder, target, check)
    return {"sizes": list(ladder.sizes), "repeats": ladder.repeats,
            "repeats_below": ladder.repeats_below, "runs": int(len(ladder.run_sizes())),
            "ratio": target / ladder.sizes[-1], "describe": ladder.describe(), "flops": flops,
            "ladder_flops": cost.ladder_flops(ladder, target, False),
            "seconds": None if not cost.flops_per_s else flops / cost.flops_per_s}


def ladder_of(row: dict[str, Any]) -> Ladder:
    return Ladder(tuple(row["sizes"]), row["repeats"], row["repeats_below"])


def _evaluate(rows: list[dict[str, Any]], noise: NoiseModel, target: float, tolerance: float,
              sims: int, seed: int) -> None:
    """Simulate every row's ladder (all in one batch)."""
    outs = simulate_many([ladder_of(r) for r in rows], noise, target, tolerance=tolerance,
                         sims=sims, seed=seed)
    for row, out in zip(rows, outs, strict=True):
        row.update(out.record())
        # per FLOP of the fitted runs: the run at the target costs every candidate the same
        row["p_per_pflop"] = row["p_within"] / (row["ladder_flops"] / 1e15)


def check_budget(rows: list[dict[str, Any]], budget: float | None) -> None:
    """A UserError naming what the cheapest candidate needs when none fits the budget."""
    cheapest = min(r["flops"] for r in rows)
    if budget is not None and cheapest > budget:
        raise UserError(f"a budget of {budget:.3g} FLOPs is too small for any candidate ladder: "
                        f"the smallest that fits needs {cheapest:.3g} FLOPs")


def choose(rows: list[dict[str, Any]], evaluate: Callable[[list[dict[str, Any]], int, int], None],
           budget: float | None, screen_sims: int, final_sims: int, seed: int,
           refusal: Callable[[dict[str, Any]], str | None] | None = None) -> dict[str, Any]:
    """Screen every row (`evaluate(rows, sims, seed)` sets its p_within), give the cheapest
    FINALISTS within the budget that screened near the best more draws, and return the most
    probable of them (of those within TIE of it, the cheapest). `refusal(row)` (costly, so
    asked of the chosen row only) says why a study could not train a row, or None: a refused
    row is dropped and the choice made again, FINALISTS times at most, then a UserError."""
    evaluate(rows, screen_sims, seed)
    afford = [r for r in rows if budget is None or r["flops"] <= budget]
    # Near the best as screened (TIE plus two screening standard errors at p = 0.5): many
    # ladders reach P near 1 at very different costs, and the cheapest of them are the ones
    # worth more draws.
    margin = TIE + 2 * math.sqrt(0.25 / screen_sims)
    final: set[int] = set()  # rows already given final_sims draws (a retry reuses them)
    for _ in range(FINALISTS):
        top = max(r["p_within"] for r in afford)
        near = [r for r in afford if r["p_within"] >= top - margin]
        finalists = sorted(near, key=lambda r: r["flops"])[:FINALISTS]
        fresh = [r for r in finalists if id(r) not in final]
        if fresh:
            evaluate(fresh, final_sims, seed + 1)
            final.update(id(r) for r in fresh)
        best = max(r["p_within"] for r in finalists)
        chosen = min((r for r in finalists if r["p_within"] >= best - TIE),
                     key=lambda r: r["flops"])
        why = None if refusal is None else refusal(chosen)
        if why is None:
            return chosen
        chosen["refused"] = why
        afford.remove(chosen)
        if not afford:
            break
    raise UserError(f"no candidate ladder can be trained as planned: {why}")


def make_plan(noise: NoiseModel, target: float, *, tolerance: float = 0.02,
              budget: float | None = None, cost: CostModel, smallest: float,
              realize: Callable[[float], float] = float, own: Sequence[float] = (),
              check: bool = True, seed: int = 0, screen_sims: int = SCREEN_SIMS,
              final_sims: int = FINAL_SIMS, reach: float = RATIOS[0]) -> Plan:
    """The plan (see the module docstring): `reach` is the least ratio of the target to the
    largest fitted size (6: a 6x extrapolation at least). A UserError when no candidate fits
    the budget."""
    if not 0 < tolerance < 1:
        raise UserError(f"--tolerance must be between 0 and 100%, got {100 * tolerance:g}%")
    ladders = candidate_ladders(target, smallest, realize, own, reach)
    if not ladders:
        least = smallest * 4 * max(reach, RATIOS[0])
        raise UserError(f"no ladder of 4 sizes from {smallest:.3g} spans 4x below the target "
                        f"/ {max(reach, RATIOS[0]):g}; choose a target of {least:.3g} or more")
    rows = [_row(lad, cost, target, check) for lad in ladders]
    check_budget(rows, budget)

    def evaluate(some: list[dict[str, Any]], sims: int, s: int) -> None:
        _evaluate(some, noise, target, tolerance, sims, s)

    chosen = choose(rows, evaluate, budget, screen_sims, final_sims, seed)
    chosen["interval_width"] = interval_width(ladder_of(chosen), noise, target, seed=seed)
    rows.sort(key=lambda r: -r["p_per_pflop"])
    return Plan(target, tolerance, budget, rows, chosen, noise.record, cost.source,
                {"screen_sims": screen_sims, "final_sims": final_sims, "finalists": FINALISTS,
                 "tie": TIE, "check_runs": CHECK_RUNS if check else 0, "seed": seed,
                 "reach": reach})


def plan_spec(base: dict[str, Any], chosen: dict[str, Any], target: float, realize:
              Callable[[float], float], check: bool = True) -> dict[str, Any]:
    """The base spec (a study's stored spec, or a preset's) with the chosen ladder: its fitted
    sizes, plus the target itself (one run) when `check`; seeds below `repeats_below`."""
    spec = {k: v for k, v in base.items() if v is not None}
    sizes = list(chosen["sizes"]) + ([realize(target)] if check else [])
    ladder: dict[str, Any] = {"sizes": [int(round(s)) for s in sizes],
                              "repeats": int(chosen["repeats"])}
    below = chosen["repeats_below"]
    if chosen["repeats"] > 1:
        # without a cut of its own, every fitted size repeats and the check runs once
        below = below or (math.sqrt(chosen["sizes"][-1] * sizes[-1]) if check else None)
        if below is not None:
            ladder["repeats_below"] = float(f"{below:.4g}")
    spec["ladder"] = ladder
    spec["name"] = f"{base.get('name', 'study')}-plan"
    return spec
