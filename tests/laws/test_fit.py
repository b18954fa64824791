"""Fitting: recovery of known laws, interval coverage, predictions, the fit record."""

from __future__ import annotations

import numpy as np
import pytest

from scalelab.errors import UserError
from scalelab.laws import Law, compare_forms, holdout, leave_one_size_out, size_groups
from scalelab.laws.forms import FORMS
from scalelab.records import Holdout
from tests.laws.util import HOLDOUT_KEYS


def _grid_nd(n_sizes=8, per_size=6):
    N = np.repeat(np.geomspace(1e7, 1e10, n_sizes), per_size)
    D = np.tile(np.geomspace(1e9, 1e12, per_size), n_sizes)
    return np.column_stack([N, D])


def _draw(form, params, X, sigma, rng):
    theta = FORMS[form].from_params([params[n] for n in FORMS[form].param_names])
    y = FORMS[form].predict(theta, np.log(X).reshape(len(X), -1))[0]
    return y * np.exp(rng.normal(0.0, sigma, len(y)))


CASES = {
    "power": ({"E": 1.5, "A": 40.0, "alpha": 0.3}, np.geomspace(1e4, 1e8, 15)),
    "chinchilla": ({"E": 1.8, "A": 480.0, "B": 2100.0, "alpha": 0.35, "beta": 0.37}, _grid_nd()),
    "kaplan": ({"N_c": 8.8e13, "D_c": 5.4e13, "alpha_N": 0.076, "alpha_D": 0.095}, _grid_nd()),
    "bnsl": ({"E": 1.2, "A": 30.0, "alpha": 0.15, "dalpha": 0.4, "x_b": 1e6, "f": 0.5},
             np.geomspace(1e3, 1e9, 30)),
}


@pytest.mark.parametrize("form", sorted(CASES))
def test_recovers_known_law(form):
    params, X = CASES[form]
    y = _draw(form, params, X, 0.002, np.random.default_rng(0))
    law = Law(form, bootstrap=0).fit(X, y)
    # Compare predictions (parameters of some forms trade off); recovered where identified.
    pred = law.predict(X).point
    np.testing.assert_allclose(pred, _draw(form, params, X, 0.0, np.random.default_rng(0)),
                               rtol=0.01)
    if form in ("power", "chinchilla"):
        for name in ("E", "alpha"):
            assert law.params_[name] == pytest.approx(params[name], rel=0.05)
    assert law.starts_["n"] == len(FORMS[form].grid(np.log(X).reshape(len(X), -1), np.log(y)))


def test_noiseless_power_law_is_exact_and_starts_agree():
    params, x = CASES["power"]
    y = _draw("power", params, x, 0.0, np.random.default_rng(0))
    law = Law("power", bootstrap=0).fit(x, y)
    for name, value in params.items():
        assert law.params_[name] == pytest.approx(value, rel=1e-4)
    assert law.on_bound_ == []
    assert not law.starts_["disagree"] and law.starts_["reached_best"] > 1


def test_pure_power_law_flags_E_on_its_bound():
    x = np.geomspace(1e4, 1e7, 10)
    y = 20.0 * x**-0.2
    law = Law("power", bootstrap=0).fit(x, y)
    assert "E" in law.on_bound_
    assert law.params_["E"] == pytest.approx(y.min() / 1000, rel=1e-3)  # the bound meaning 0
    assert law.params_["alpha"] == pytest.approx(0.2, rel=1e-3)


@pytest.mark.slow
def test_90_percent_intervals_cover_the_truth_about_90_percent_of_the_time():
    params, x = {"E": 1.5, "A": 40.0, "alpha": 0.3}, np.geomspace(1e4, 1e7, 12)
    rng = np.random.default_rng(123)
    draws = 40
    hits = dict.fromkeys(params, 0)
    band_hits = 0
    x_new = np.array([3e7])
    truth_new = params["E"] + params["A"] * x_new**-params["alpha"]
    for r in range(draws):
        y = _draw("power", params, x, 0.01, rng)
        law = Law("power", bootstrap=200, level=0.9, seed=r).fit(x, y)
        for name, (lo, hi) in law.intervals().items():
            hits[name] += lo <= params[name] <= hi
        pred = law.predict(x_new)
        band_hits += bool(pred.lo[0] <= truth_new[0] <= pred.hi[0])
    coverage = {k: v / draws for k, v in hits.items()}
    for name, c in coverage.items():
        assert 0.75 <= c <= 1.0, (name, coverage)
    assert np.mean(list(coverage.values())) >= 0.82, coverage
    assert band_hits / draws >= 0.75


def test_predict_returns_point_and_interval_and_summary_round_trips():
    params, x = CASES["power"]
    y = _draw("power", params, x, 0.01, np.random.default_rng(3))
    law = Law("power", bootstrap=100, seed=1).fit(x, y)
    pred = law.predict([1e9, 1e10])
    assert pred.point.shape == (2,) and np.all(pred.lo <= pred.point) and np.all(
        pred.point <= pred.hi)
    record = law.summary()
    for key in ("law", "x", "y", "n_points", "params", "intervals", "objective", "on_bound",
                "holdout", "starts", "bootstrap_params"):
        assert key in record
    again = Law.from_summary(record)
    np.testing.assert_allclose(again.predict([1e9]).point, law.predict([1e9]).point, rtol=1e-9)
    np.testing.assert_allclose(again.predict([1e9]).hi, law.predict([1e9]).hi, rtol=1e-5)
    # same seed, same resamples
    again2 = Law("power", bootstrap=100, seed=1).fit(x, y)
    assert again2.intervals() == law.intervals()


def test_input_errors_are_user_errors():
    x = np.geomspace(1e4, 1e7, 6)
    with pytest.raises(UserError, match="positive"):
        Law("power", bootstrap=0).fit(np.r_[x[:-1], -1.0], np.ones(6) * 2)
    with pytest.raises(UserError, match="at least 3"):
        Law("power", bootstrap=0).fit(x[:2], [2.0, 1.9])
    with pytest.raises(UserError, match="same"):
        Law("power", bootstrap=0).fit(np.full(6, 1e5), np.linspace(2, 3, 6))
    with pytest.raises(UserError, match="non-finite"):
        Law("power", bootstrap=0).fit(x, np.r_[np.ones(5) * 2, np.nan])
    with pytest.raises(UserError, match="unknown law"):
        Law("nope").fit(x, np.ones(6))


def test_size_groups_merge_near_equal_sizes():
    g = size_groups(np.array([1e6, 1.005e6, 2e6, 1e6, 4e6]))
    assert g.tolist() == [0, 0, 1, 0, 2]


def test_holdout_rules_and_leave_one_size_out():
    params, x = CASES["power"]
    y = _draw("power", params, x, 0.005, np.random.default_rng(4))
    law = Law("power", bootstrap=0)
    ho = holdout(law, x, y, "largest:3")
    assert isinstance(ho, Holdout) and set(ho.to_dict()) == HOLDOUT_KEYS
    assert ho.n_test == 3 and ho.n_fit == 12 and len(ho.points) == 3
    assert ho.max_fit_size == x[np.argsort(x)[11]]
    assert sorted(p["x"] for p in ho.points) == sorted(x)[12:]
    for p in ho.points:
        assert p["rel_error"] == (p["predicted"] - p["measured"]) / p["measured"]
        assert p["lo"] is None and p["hi"] is None  # no bootstrap, no interval
    assert ho.mean_rel_error == pytest.approx(np.mean([p["rel_error"] for p in ho.points]))
    assert abs(ho.mean_rel_error) < 0.03 and ho.folds is None
    assert set(ho.params) == {"E", "A", "alpha"}
    assert holdout(law, x, y, "smallest:10").n_fit == 10
    assert holdout(law, x, y, "below:1e6").n_fit == int((x < 1e6).sum())
    with pytest.raises(UserError):
        holdout(law, x, y, "sideways:1")
    loso = leave_one_size_out(law, x[:8], y[:8])
    assert isinstance(loso, Holdout) and set(loso.to_dict()) == HOLDOUT_KEYS
    assert loso.rule == "loso" and len(loso.folds) == 8 and loso.mean_abs_rel_error < 0.05
    assert len(loso.points) == loso.n_test == 8
    assert (loso.n_fit, loso.max_fit_size, loso.params, loso.on_bound) == (None,) * 4
    assert loso.mean_rel_error == pytest.approx(np.mean([f["mean_rel_error"]
                                                         for f in loso.folds]))


def test_compare_forms_prefers_the_bending_law_on_bent_data():
    params, x = CASES["bnsl"]
    y = _draw("bnsl", params, x, 0.002, np.random.default_rng(5))
    ranked = compare_forms(x, y, ["power", "bnsl"], rule="largest:5")
    assert [r["law"] for r in ranked] == ["bnsl", "power"]
    assert all(isinstance(r["holdout"], Holdout) and r["holdout"].n_test == 5 for r in ranked)
    assert ranked[0]["holdout"].mean_abs_rel_error < ranked[1]["holdout"].mean_abs_rel_error
    loso = compare_forms(x[::2], y[::2], ["power", "bnsl"], rule="loso")
    assert loso[0]["law"] == "bnsl" and loso[0]["holdout"].params is None
    assert loso[0]["holdout"].mean_abs_rel_error < loso[1]["holdout"].mean_abs_rel_error
