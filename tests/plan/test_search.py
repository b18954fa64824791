"""The plan's candidates, its choice within a budget, and the spec it writes."""

from __future__ import annotations

import re

import pytest

from scalelab.errors import UserError
from scalelab.laws.fit import Law
from scalelab.plan import assumed_noise, candidate_ladders, make_plan, plan_spec
from scalelab.plan.search import _geometric, six_nd
from scalelab.plan.simulation import MAX_SIZES


def test_candidates_keep_the_reach():
    ladders = candidate_ladders(6e6, 1e4, float, reach=6)
    assert ladders and all(6e6 / lad.sizes[-1] >= 6 for lad in ladders)
    assert all(4 <= len(lad.sizes) <= MAX_SIZES for lad in ladders)
    assert {lad.repeats for lad in ladders} == {1, 2, 3, 4, 6, 8}


def test_shapes_that_bunch_up_are_dropped():
    """1e4, 2.15e4, 4.64e4, 1e5 asked; shapes 1e4, 4e4, 4.64e4, 1e5 built: two sizes closer
    than half a step of the grid, a gap beside them. Not a candidate; the grid itself is."""
    asked = _geometric(1e4, 1e5, 4, float)
    assert asked is not None and len(asked) == 4
    bunched = {round(asked[1]): 4e4}
    assert _geometric(1e4, 1e5, 4, lambda n: bunched.get(round(n), n)) is None
    assert _geometric(1e4, 1e5, 4, lambda n: 1e4 if n < 3e4 else n) is None  # one shape twice


COST = six_nd(lambda n: 20 * n)


def _plan(budget: float | None):
    law = Law.from_summary({"law": "power", "params": {"E": 0.5, "A": 8.0, "alpha": 0.2}})
    return make_plan(assumed_noise(law, 0.01), 2e6, budget=budget, cost=COST, smallest=1e4,
                     reach=8, screen_sims=20, final_sims=40)


def _costs() -> list[float]:
    return sorted(COST.ladder_flops(lad, 2e6, True)
                  for lad in candidate_ladders(2e6, 1e4, float, reach=8))


def test_the_choice_fits_the_budget_and_the_table_is_by_probability_per_flop():
    costs = _costs()
    budget = costs[len(costs) // 3]
    plan = _plan(budget)
    assert plan.chosen["flops"] <= budget
    afford = [r for r in plan.rows if r["flops"] <= budget and r["sims"] == 40]
    assert plan.chosen["p_within"] >= max(r["p_within"] for r in afford) - 0.02
    per = [r["p_per_pflop"] for r in plan.rows]
    assert per == sorted(per, reverse=True)


def test_a_budget_below_every_candidate_names_the_cheapest():
    cheapest = _costs()[0]
    with pytest.raises(UserError, match=re.escape(f"needs {cheapest:.3g} FLOPs")):
        _plan(cheapest / 2)


def test_spec_repeats_the_fitted_sizes_and_runs_the_target_once():
    chosen = {"sizes": [1e4, 3e4, 1e5, 2.5e5], "repeats": 4, "repeats_below": None}
    spec = plan_spec({"name": "x", "train": {"tokens": 1e6}}, chosen, 2e6, float)
    ladder = spec["ladder"]
    assert ladder["sizes"] == [10000, 30000, 100000, 250000, 2000000]
    assert 2.5e5 < ladder["repeats_below"] < 2e6 and ladder["repeats"] == 4
    assert spec["name"] == "x-plan" and spec["train"] == {"tokens": 1e6}


def test_a_refused_choice_is_replaced_without_drawing_the_finalists_again():
    """`choose`: the chosen row refused, the next is chosen from the same finalists; a row's
    final draws are made once (rows are simulated from a fixed seed, so a second evaluation
    could only repeat them)."""
    from collections import Counter

    from scalelab.plan.search import choose

    rows = [{"name": i, "flops": 10.0 + i, "p": 0.9 - 0.001 * i} for i in range(8)]
    calls: Counter = Counter()

    def evaluate(some, sims, seed):
        for r in some:
            r["p_within"] = r["p"]
            if sims == 500:
                calls[r["name"]] += 1

    chosen = choose(rows, evaluate, None, 100, 500, 0,
                    refusal=lambda r: "too small" if r["name"] == 0 else None)
    assert chosen["name"] == 1 and rows[0]["refused"] == "too small"
    assert calls and max(calls.values()) == 1
