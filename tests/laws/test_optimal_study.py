"""Compute-optimal allocation against brute force, and the study's power-law contract."""

from __future__ import annotations

import numpy as np
import pytest

from scalelab.errors import UserError
from scalelab.laws import Law, fit_study_power, optimal_allocation, predict_band
from scalelab.laws.forms import FORMS
from scalelab.records import Holdout
from tests.laws.util import EPOCH_FINAL, HOLDOUT_KEYS


def _law(form: str, params: dict) -> Law:
    f = FORMS[form]
    return Law.from_summary({"law": form, "params": params,
                             "x": list(f.roles) if f.n_inputs > 1 else "x"})


def _brute_force(law: Law, c: float, k: float = 6.0) -> tuple[float, float]:
    n = np.geomspace(1e6, c / k / 1e6, 2_000_001)
    loss = law.predict(np.column_stack([n, c / (k * n)])).point
    i = int(np.argmin(loss))
    return float(n[i]), float(loss[i])


@pytest.mark.parametrize("form, params", [
    ("chinchilla", EPOCH_FINAL),
    ("kaplan", {"N_c": 8.8e13, "D_c": 5.4e13, "alpha_N": 0.076, "alpha_D": 0.095}),
])
def test_optimal_matches_brute_force_at_chinchilla_compute(form, params):
    law = _law(form, params)
    c = 5.76e23
    row = optimal_allocation(law, c)[0]
    n_bf, loss_bf = _brute_force(law, c)
    assert row["N"] == pytest.approx(n_bf, rel=1e-4)
    assert row["D"] == pytest.approx(c / (6 * n_bf), rel=1e-4)
    assert row["loss"] == pytest.approx(loss_bf, rel=1e-9)
    assert row["tokens_per_param"] == pytest.approx(row["D"] / row["N"])
    assert row["N"] * row["D"] * 6 == pytest.approx(c)


def test_optimal_with_epoch_fit_is_about_20_tokens_per_parameter():
    row = optimal_allocation(_law("chinchilla", EPOCH_FINAL), 5.76e23, k=6)[0]
    assert 5e10 < row["N"] < 1.2e11 and 12 < row["tokens_per_param"] < 30
    assert row["intervals"] is None  # no bootstrap samples in this record


def test_optimal_needs_a_law_in_n_and_d():
    with pytest.raises(UserError, match="N and D"):
        optimal_allocation(_law("power", {"E": 1.0, "A": 10.0, "alpha": 0.3}), 1e20)


def _ladder(k=6, seed=0):
    n = np.geomspace(1e4, 1e6, k)
    rng = np.random.default_rng(seed)
    return n, (1.3 + 25.0 * n**-0.3) * np.exp(rng.normal(0, 0.01, k))


def test_fit_study_power_contract_on_a_six_rung_ladder():
    n, loss = _ladder()
    fit = fit_study_power(n, loss, bootstrap=200, seed=0)
    assert {"law", "x", "y", "params", "intervals", "on_bound", "holdout"} <= set(fit)
    assert (fit["law"], fit["x"], fit["y"]) == ("power", "n_nonembed", "val_loss")
    assert set(fit["params"]) == {"E", "A", "alpha"}
    assert 0 <= fit["params"]["E"] <= loss.min()
    # Six clean points pin all three parameters: none ends on a bound, each lies in its interval.
    assert fit["on_bound"] == []
    for name, (lo, hi) in fit["intervals"].items():
        assert lo <= fit["params"][name] <= hi, name
    assert set(fit) == {"law", "x", "y", "params", "intervals", "level", "on_bound", "holdout",
                        "band", "bootstrap_params", "dof", "flags", "noise", "profile",
                        "predictions", "weights", "selection", "candidates"}
    assert (fit["dof"], fit["flags"]) == (3, [])
    ho = fit["holdout"]
    assert set(ho) == HOLDOUT_KEYS
    assert (ho["rule"], ho["n_fit"], ho["n_test"], ho["max_fit_size"]) == \
        ("largest:1", 5, 1, pytest.approx(n[-2]))
    (pt,) = ho["points"]
    assert pt["x"] == pytest.approx(n[-1]) and pt["measured"] == pytest.approx(loss[-1])
    assert pt["rel_error"] == pytest.approx((pt["predicted"] - pt["measured"]) / pt["measured"])
    assert ho["mean_rel_error"] == pytest.approx(pt["rel_error"])
    assert ho["mean_abs_rel_error"] == pytest.approx(abs(pt["rel_error"]))
    assert pt["lo"] < pt["predicted"] < pt["hi"]  # the study's law is bootstrapped
    assert abs(pt["rel_error"]) < 0.05
    assert Holdout.from_dict(ho).largest() == pt
    point, lo, hi = predict_band(fit, n)
    assert np.all(lo <= point + 1e-12) and np.all(point <= hi + 1e-12)
    np.testing.assert_allclose(point, fit["params"]["E"] + fit["params"]["A"]
                               * n ** -fit["params"]["alpha"])
    assert len(fit["bootstrap_params"]["E"]) <= 200
    import json
    json.dumps(fit)  # summary.json-ready


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_fit_study_power_with_few_points_says_less_but_does_not_crash(k):
    n, loss = _ladder(6)
    fit = fit_study_power(n[:k], loss[:k], bootstrap=100)
    assert fit["holdout"] is None and fit["band"] is None and fit["y"] == "val_loss"
    assert all(v is None for v in fit["intervals"].values())
    # two or three sizes for three parameters: an exact fit, flagged, with nothing built on it
    assert fit["flags"] == (["zero_dof"] if k >= 2 else [])
    assert fit["dof"] == {0: None, 1: None, 2: -1, 3: 0}[k]
    assert (fit["profile"], fit["predictions"]) == (None, None)
    if k == 3:
        assert fit["params"]["alpha"] > 0
    if k == 2:
        assert fit["params"]["E"] == 0.0 and "E" in fit["on_bound"]
    if k < 2:
        assert all(v is None for v in fit["params"].values())
    point, lo, hi = predict_band(fit, [1e7])
    assert np.isnan(lo).all()


def test_fit_study_power_skips_diverged_rungs_and_rejects_nonsense():
    n, loss = _ladder(6)
    loss = loss.tolist()
    loss[2] = float("nan")
    fit = fit_study_power(n, loss, bootstrap=50)
    assert fit["params"]["alpha"] > 0
    with pytest.raises(UserError):
        fit_study_power([1e4, -1.0, 1e6], [2.0, 1.9, 1.8])
