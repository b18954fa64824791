"""Two-axis ladders: a grid of (N, D), IsoFLOP budgets, the WSD branch plan, and bad input."""

from __future__ import annotations

import math

import pytest

from scalelab.errors import UserError
from scalelab.ladder import MIN_ISOFLOP_STEPS, flops_per_step, isoflop_sizes, plan_ladder
from scalelab.spec import parse_spec
from scalelab.study import resolve
from tests.helpers import tiny_spec


def _spec(ladder: dict, **train) -> dict:
    spec = tiny_spec(ladder=ladder, train=train)
    spec["ladder"] = ladder  # replace the tiny ladder's sizes, not merge into them
    return spec


def _plans(data: dict):
    spec = parse_spec(data)
    res = resolve(spec)
    return spec, res, plan_ladder(spec, res.task, res.family)


def test_grid_has_one_rung_per_size_and_d_with_wsd_branches():
    spec, res, plans = _plans(_spec({"sizes": [3e3, 1.2e4], "tokens": [20_000, 60_000, 40_000]}))
    per_step = spec.train.batch_size * 32
    assert len(plans) == 6 and len({p.key for p in plans}) == 6
    assert {p.schedule for p in plans} == {"wsd"}  # the two-axis default
    for size in {p.n_nonembed for p in plans}:
        group = sorted((p for p in plans if p.n_nonembed == size), key=lambda p: p.D)
        assert [math.ceil(d / per_step) * per_step for d in (20_000, 40_000, 60_000)] == \
            [p.D for p in group]
        trunk = group[-1]
        assert trunk.trunk is None and trunk.branch_step is None
        assert len({p.seed for p in group}) == 1 and len({p.warmup_steps for p in group}) == 1
        assert group[0].warmup_steps == round(spec.train.warmup_frac * group[0].steps)
        for p in group[:-1]:
            assert p.trunk == trunk.rung
            assert p.decay_steps == round(0.2 * p.steps)
            assert p.branch_step == p.steps - p.decay_steps
            # the branch point lies in the trunk's stable phase
            assert p.branch_step <= trunk.steps - trunk.decay_steps
        assert {p.budget for p in group} == {None}
    train_units = res.task.train.numel()
    for p in plans:
        assert p.train_units == train_units and p.epochs == pytest.approx(p.D / train_units)


def test_grid_in_tokens_per_param_and_cosine_runs_independently():
    _, _, plans = _plans(_spec({"sizes": [3e3, 1.2e4], "tokens_per_param": [4, 8, 12]},
                               schedule="cosine"))
    assert len(plans) == 6
    for p in plans:
        ratio = p.D / p.n_nonembed
        assert min(abs(ratio - r) for r in (4, 8, 12)) * p.n_nonembed < p.units_per_step
        assert p.schedule == "cosine" and p.trunk is None and p.decay_steps == 0
        assert p.warmup_steps == round(0.05 * p.steps)


def test_isoflop_sizes_follow_the_rule_and_d_comes_from_measured_flops():
    budgets = [2e10, 6e10, 2e11]
    spec, res, plans = _plans(_spec({"isoflop": {"budgets": budgets, "points": 3, "span": 4}}))
    ratio = 4.0  # span^(2/(points-1)) with 3 points
    assert isoflop_sizes(2e10, 3, 4.0, 20.0) == pytest.approx(
        [ratio ** k for k in (6, 7, 8)])  # N0 = sqrt(2e10/120) = 12.9k = 4^6.83: centre 4^7
    for budget in budgets:
        group = [p for p in plans if p.budget == budget]
        assert len(group) == 3
        n0 = math.sqrt(budget / 120)
        targets = sorted(p.target_n for p in group)
        assert targets[0] < n0 < targets[-1] and targets[1] / targets[0] == pytest.approx(ratio)
        assert abs(math.log(targets[1] / n0)) <= math.log(ratio) / 2 + 1e-9
        for p in group:
            step = flops_per_step(res.family, res.task, p.shape, p.batch_size)
            assert abs(p.steps * step - budget) <= step / 2  # D = C / measured FLOPs per unit
            assert p.steps >= MIN_ISOFLOP_STEPS
            assert step != pytest.approx(6 * p.n_params * p.units_per_step, rel=0.02)
    # a size of the shared grid recurs across budgets: a trunk with branches under WSD
    shared = [p for p in plans if p.trunk is not None]
    assert shared and all(plans[p.trunk].shape == p.shape and plans[p.trunk].D > p.D
                          for p in shared)


def test_n_only_ladder_is_unchanged_by_the_two_axis_fields():
    _, _, plans = _plans(tiny_spec())
    assert {(p.schedule, p.budget, p.trunk, p.decay_steps) for p in plans} == \
        {("cosine", None, None, 0)}


def test_wsd_on_an_n_only_ladder_decays_each_rung_over_its_own_end():
    _, _, cosine = _plans(tiny_spec())
    _, _, plans = _plans(tiny_spec(train={"schedule": "wsd", "decay_frac": 0.25}))
    assert [p.steps for p in plans] == [p.steps for p in cosine]
    for p in plans:
        assert (p.schedule, p.trunk, p.budget) == ("wsd", None, None)
        assert p.decay_steps == round(0.25 * p.steps)
        assert p.warmup_steps == round(0.05 * p.steps)


@pytest.mark.parametrize("ladder, says", [
    ({"sizes": [3e3, 1.2e4], "tokens": [40_000]}, "2 or more D values"),
    ({"sizes": [3e3, 1.2e4], "tokens_per_param": [8, 8]}, "2 or more D values"),
    ({"sizes": [1.2e4], "tokens": [20_000, 40_000]}, "2 or more sizes"),
    ({"isoflop": {"budgets": [1e11, 3e11], "points": 2}}, "3 or more points"),
    ({"isoflop": {"budgets": [3e11, 1e11]}}, "budgets must be increasing"),
    ({"isoflop": {"budgets": [1e11, 1e11]}}, "budgets must be increasing"),
    ({"isoflop": {"budgets": [1e11]}, "sizes": [1e3, 2e3]}, "drop sizes"),
    ({"sizes": [3e3, 1.2e4], "tokens": [1e4, 2e4], "tokens_per_param": [1, 2]}, "give one"),
    ({"sizes": [3e3, 1.2e4], "tokens": [20_000, 40_000]}, "4 distinct .* at least 6"),
    ({"isoflop": {"budgets": [1e11], "points": 4}}, "4 distinct .* at least 6"),
])
def test_bad_two_axis_ladders_are_one_line(ladder, says):
    with pytest.raises(UserError, match=says) as err:
        _plans(_spec(ladder))
    assert "\n" not in str(err.value)


def test_budget_too_small_for_any_step_is_refused_naming_the_size():
    with pytest.raises(UserError, match="too small for size") as err:
        _plans(_spec({"isoflop": {"budgets": [1e8, 1e12], "points": 3}}))
    assert "budget 1e+08 FLOPs" in str(err.value) and "\n" not in str(err.value)


def test_budget_below_the_smallest_shape_is_refused():
    with pytest.raises(UserError, match="budget 100 FLOPs is too small for size 1x16"):
        _plans(_spec({"isoflop": {"budgets": [1e2, 1e3], "points": 3, "span": 100}}))
