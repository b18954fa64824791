import math

import pytest

from scalelab.errors import UserError
from scalelab.ladder import plan_ladder, target_sizes
from scalelab.spec import (
    QUICK_MAX_UNITS,
    QUICK_RUNGS,
    StudySpec,
    default_spec,
    load_spec,
    parse_spec,
    quick_spec,
)
from scalelab.study import resolve


def _plans(spec):
    res = resolve(spec)
    return plan_ladder(spec, res.task, res.family)


def test_default_study_is_seven_shapes_with_d_growing_as_sqrt_n_and_repeats_below_200k():
    spec = default_spec()
    plans = _plans(spec)
    shapes = ["1x32", "1x48", "2x48", "2x64", "2x80", "3x112", "4x144"]
    assert [p.describe for p in plans if p.repeat == 0] == shapes
    # The five sizes below 200k run 6 times each, from 6 different seeds; the two largest once.
    counts = {d: sum(p.describe == d for p in plans) for d in shapes}
    assert counts == {**dict.fromkeys(shapes[:5], 6), "3x112": 1, "4x144": 1}
    assert len({p.seed for p in plans}) == len(plans)
    largest = plans[-1]
    assert largest.describe == "4x144" and 4_000_000 <= largest.D < 4_000_000 + 1024
    per_step = spec.train.batch_size * 64
    for p in plans:
        want = 4_000_000 * (p.n_nonembed / largest.n_nonembed) ** 0.5
        assert want <= p.D < want + per_step
        assert p.lr == pytest.approx(3e-3 * (p.n_nonembed / 1e5) ** (-1 / 3))
    assert spec.train.beta2 == 0.95
    # Five sizes lie at or below 1/6 of the largest's N: the fit of the trust check.
    assert len({p.n_nonembed for p in plans if p.n_nonembed <= largest.n_nonembed / 6}) == 5


def test_plain_spec_ladder_is_six_rungs_over_two_decades():
    spec = StudySpec()
    sizes = target_sizes(spec)
    assert len(sizes) == 6
    assert sizes[0] == pytest.approx(1e4) and sizes[-1] == pytest.approx(1e6)
    ratios = [b / a for a, b in zip(sizes, sizes[1:], strict=False)]
    assert all(r == pytest.approx(ratios[0]) for r in ratios)


def test_plan_matches_budget_and_lr_rule():
    spec = resolve(StudySpec()).spec  # with the budget and lr chosen for its task (pycode)
    plans = _plans(spec)
    tokens_per_step = spec.train.batch_size * 64
    for p in plans:
        assert p.D == p.steps * tokens_per_step
        assert p.D >= spec.train.tokens
        expected = spec.train.lr * (p.n_nonembed / spec.train.lr_ref_nonembed) ** (-1 / 3)
        assert p.lr == pytest.approx(expected)
        assert p.warmup_steps == round(spec.train.warmup_frac * p.steps)
    assert [p.n_nonembed for p in plans] == sorted(p.n_nonembed for p in plans)
    assert [p.lr for p in plans] == sorted((p.lr for p in plans), reverse=True)


def test_tokens_per_param_budget():
    spec = parse_spec({"train": {"tokens_per_param": 20}})
    for p in _plans(spec):
        assert p.D >= 20 * p.n_nonembed
        assert p.D - 20 * p.n_nonembed < spec.train.batch_size * 64


def test_budget_that_grows_with_size():
    spec = parse_spec({"train": {"tokens": 1_000_000, "tokens_exponent": 0.5,
                                 "tokens_ref_nonembed": 1e5}})
    per_step = spec.train.batch_size * 64
    for p in _plans(spec):
        want = 1_000_000 * (p.n_nonembed / 1e5) ** 0.5
        assert want <= p.D < want + per_step


def test_two_budget_rules_at_once_is_one_clear_error():
    with pytest.raises(UserError, match="tokens_per_param and tokens_exponent are two budget"):
        parse_spec({"train": {"tokens_per_param": 20, "tokens_exponent": 0.5}})


def test_quick_spec_is_the_smaller_end_of_the_ladder_once():
    full, q = default_spec(), quick_spec()
    plans = _plans(q)
    assert [p.target_n for p in plans] == full.ladder.targets()[:QUICK_RUNGS]
    assert all(p.repeat == 0 for p in plans)
    assert max(p.D for p in plans) <= QUICK_MAX_UNITS + q.train.batch_size * 64
    # The default's own budgets where they are small enough; D still grows with N.
    assert [p.D for p in plans] == sorted(p.D for p in plans)


def test_quick_spec_scales_a_large_fixed_budget_down():
    q = quick_spec(parse_spec({"train": {"tokens": 8_000_000}}))
    assert q.train.tokens == QUICK_MAX_UNITS
    assert q.ladder.sizes == StudySpec().ladder.targets()[:QUICK_RUNGS]


@pytest.mark.parametrize("data,needle", [
    ({"trian": {}}, "unknown key 'trian'"),
    ({"train": {"tokenz": 5}}, "unknown key 'train.tokenz'"),
    ({"ladder": {"sizes": [1e4, -5]}}, "sizes must be positive"),
    ({"ladder": {"sizes": [0]}}, "sizes must be positive"),
    ({"ladder": {"min_nonembed": 0}}, "ladder.min_nonembed"),
    ({"train": {"tokens": 0}}, "train.tokens"),
    ({"train": {"batch_size": -1}}, "train.batch_size"),
    ([1, 2], "mapping"),
])
def test_bad_specs_say_what_is_wrong(data, needle):
    with pytest.raises(UserError) as err:
        parse_spec(data, "s.yaml")
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntrain: {tokens: [1, 2\n")
    with pytest.raises(UserError, match="malformed YAML at line"):
        load_spec(path)


def test_spec_round_trips_through_yaml(tmp_path):
    spec = parse_spec({"name": "rt", "ladder": {"sizes": [1e4, 1e5]}})
    path = tmp_path / "s.yaml"
    path.write_text(spec.to_yaml())
    assert load_spec(path) == spec
    assert math.isclose(load_spec(path).train.lr_exponent, -1 / 3)


def test_quick_spec_of_two_axis_ladders_keeps_both_axes():
    iso = quick_spec(load_spec("examples/isoflop-pycode.yaml"))
    full = load_spec("examples/isoflop-pycode.yaml").ladder.isoflop
    assert iso.ladder.isoflop.budgets == full.budgets[:3] and iso.ladder.isoflop.points == 3
    grid = quick_spec(parse_spec({"ladder": {"sizes": [1e4, 2e4, 4e4, 8e4, 1.6e5],
                                             "tokens": [4e5, 1e5, 2e5]}}))
    assert grid.ladder.sizes == [1e4, 2e4, 4e4, 8e4] and grid.ladder.tokens == [1e5, 2e5]
    assert len(_plans(grid)) == 8
