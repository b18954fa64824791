"""The extrapolation profile, its trust horizon and noise bands; the noise model from repeats; the
weighted fit and the two-stage bootstrap."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scalelab.errors import UserError
from scalelab.laws import Law, fit_study_power
from scalelab.laws.fit import resample_weights
from scalelab.laws.forms import FORMS
from scalelab.laws.noise import NU0, repeat_noise, residual_noise
from scalelab.laws.profile import (
    extrapolation_profile,
    fmt_ratio,
    horizon_text,
    profile_rows,
    trust_horizon,
)

E, A, ALPHA = 1.3, 25.0, 0.3
SIZES = np.geomspace(1e4, 1e6, 8)  # a step of 10^(2/7) = 1.93x
SIGMA = 0.005  # seed noise of the synthetic ladders: 0.5% in log L, what the issue measured


def _ladder(seeds: int = 3, sigma: float = SIGMA, seed: int = 0, law=None):
    """Every size `seeds` times; log L = log(law(N)) + Normal(0, sigma)."""
    n = np.repeat(SIZES, seeds)
    truth = (E + A * n**-ALPHA) if law is None else law(n)
    return n, truth * np.exp(np.random.default_rng(seed).normal(0.0, sigma, n.size))


def _bent(n):
    """A smoothly broken power law that steepens at 1e5: no plain power law fits across it."""
    form = FORMS["bnsl"]
    theta = form.from_params([1.0, 25.0, 0.12, 0.5, 1e5, 0.3])
    return form.predict(theta, np.log(n)[:, None])[0]


def _points(profile):
    return [p for s in profile["splits"] for p in s["points"]]


def test_known_power_law_and_known_noise_stay_within_the_noise_band():
    n, y = _ladder()
    law = Law("power", bootstrap=0, x_names=("n_nonembed",))
    prof = extrapolation_profile(law, n, y, sigma=SIGMA)
    # 8 sizes, 3 parameters: fits on the 4, 5, 6 and 7 smallest sizes (an exact fit on 3 is none)
    assert [s["n_points"] for s in prof["splits"]] == [4, 5, 6, 7]
    assert [s["n_fit"] for s in prof["splits"]] == [12, 15, 18, 21]
    assert [s["dof"] for s in prof["splits"]] == [1, 2, 3, 4]
    step = 10 ** (2 / 7)
    for s, first in zip(prof["splits"], (4, 5, 6, 7), strict=True):
        assert [p["ratio"] for p in s["points"]] == pytest.approx(
            [step**j for j in range(1, 9 - first)])
        assert all(p["n_runs"] == 3 for p in s["points"])
    # every error lies inside the range that noise of this size gives when the law is exact
    assert prof["outside_band"] == 0
    for p in _points(prof):
        assert p["band"][0] <= p["rel_error"] <= p["band"][1]
    assert prof["noise"] == {"sigma": SIGMA, "sims": 200, "seed": 0}
    # ... and the numbers themselves: the fit on the 7 smallest predicts the largest this well
    last = prof["splits"][-1]["points"][0]
    assert last["rel_error"] == pytest.approx(2.4e-05, abs=1e-6)
    assert last["band"] == pytest.approx([-0.011855, 0.009899], abs=1e-6)
    # the fit on the 4 smallest misses by 2.1% at 7.2x: outside the tolerance, but well inside
    # what this noise allows that far out ([-4.5%, +3.9%]), a band wider than the tolerance: the
    # check cannot test 2% either way, so it is named as too noisy, not counted as a failure
    # (counting it cried wolf on an exact law)
    first = prof["splits"][0]["points"]
    assert [p["rel_error"] for p in first] == pytest.approx(
        [-0.000772, -0.009927, -0.021056, -0.02749], abs=1e-6)
    # its band is a quantile of 200 refits to 4 points (1 degree of freedom each), where a
    # simulated fit moves with the BLAS kernel by up to 5e-6 (the bound is -0.0451972 to
    # -0.0452004 over OpenBLAS's Haswell, SkylakeX, Sandybridge, Nehalem and Prescott
    # kernels): 2e-5, four times that, still far below a change of noise or draws (1e-3)
    assert first[2]["band"] == pytest.approx([-0.0452, 0.039006], abs=2e-5)
    assert [p["verdict"] for p in first] == ["within", "noise", "noise", "noise"]
    assert prof["failed"] is None
    # the checks that can test 2% (bands narrower than 4%) reach 3.7x, all within
    assert prof["horizon"] == pytest.approx(step**2)
    assert [n["ratio"] for n in prof["noisy"]] == pytest.approx(
        [step**2, step**2, step**3, step**3, step**4])
    assert horizon_text(prof) == (
        "within 2% up to 3.7× beyond the fitted range; too noisy to tell beyond: -2.1% at 7.2× "
        "lies inside its noise band [-4.5%, +3.9%]: add seeds at the sizes up to 72k and at 518k "
        "(2 nearer checks too noisy to tell)")
    json.dumps(prof)


def test_the_band_is_the_noise_s_own_size():
    """Twice the noise, the same draws: the band doubles (the fits are nearly linear in it)."""
    n, y = _ladder()
    law = Law("power", bootstrap=0)
    one = extrapolation_profile(law, n, y, sigma=SIGMA, sims=100)
    two = extrapolation_profile(law, n, y, sigma=2 * SIGMA, sims=100)
    for p1, p2 in zip(_points(one), _points(two), strict=True):
        w1, w2 = p1["band"][1] - p1["band"][0], p2["band"][1] - p2["band"][0]
        assert 1.8 < w2 / w1 < 2.2
    # noise 0.5% averaged over 3 seeds, extrapolated 1.9x: about +-1.1%, not +-0.5%, not +-5%
    near = one["splits"][-1]["points"][0]["band"]
    assert -0.013 < near[0] < -0.009 and 0.009 < near[1] < 0.013


def test_a_bent_law_leaves_the_noise_band_and_the_horizon_shrinks():
    """The control that makes the check above mean something: same noise, a law that bends."""
    n, y = _ladder(law=_bent)
    prof = extrapolation_profile(Law("power", bootstrap=0), n, y, sigma=SIGMA)
    assert prof["outside_band"] >= 4
    assert prof["horizon"] is None
    assert prof["failed"]["ratio"] == pytest.approx(10 ** (2 / 7))
    assert horizon_text(prof).startswith("not within 2% even at 1.9× beyond the fitted range")


def test_profile_needs_more_points_than_parameters_below_a_larger_size():
    law = Law("power", bootstrap=0)
    n = SIZES[:4]
    prof = extrapolation_profile(law, n, E + A * n**-ALPHA)
    assert prof["splits"] == [] and prof["horizon"] is None
    assert prof["skipped"] == ("needs more than 3 distinct points below some size and a larger "
                               "size to predict; there are 4 sizes")
    assert horizon_text(prof) == ("no extrapolation profile: needs more than 3 distinct points "
                                  "below some size and a larger size to predict; there are 4 "
                                  "sizes")
    with pytest.raises(UserError, match="tolerance"):
        extrapolation_profile(law, SIZES, E + A * SIZES**-ALPHA, tolerance=2.0)
    with pytest.raises(UserError, match="law in N and D"):
        extrapolation_profile(law, SIZES, E + A * SIZES**-ALPHA, by="compute")


def test_trust_horizon_rules():
    def split(x, *errs):
        return {"max_fit_x": x, "n_fit": 4, "n_points": 4,
                "points": [{"ratio": r, "rel_error": e} for r, e in errs]}

    # every split within 2% as far as it was checked: no evidence beyond the largest ratio
    ok = [split(1.0, (2.0, 0.01), (4.0, -0.015)), split(2.0, (2.0, 0.005))]
    assert trust_horizon(ok, 0.02) == {"horizon": 4.0, "max_ratio": 4.0, "failed": None,
                                       "noisy": []}
    # one split fails at 3x: the horizon is the largest ratio checked below that, whatever
    # another split or a later point of the same split says
    bad = [split(1.0, (1.5, 0.001), (3.0, 0.03), (6.0, 0.0)), split(2.0, (2.0, -0.01),
                                                                      (4.0, -0.05))]
    assert trust_horizon(bad, 0.02) == {
        "horizon": 2.0, "max_ratio": 6.0,
        "failed": {"ratio": 3.0, "rel_error": 0.03, "max_fit_x": 1.0, "band": None},
        "noisy": []}
    # splits of a geometric ladder meet the same ratio but for rounding: one ratio
    same = [split(1.0, (1.9306977288832496, 0.0)), split(2.0, (1.9306977288832501, 0.025))]
    assert trust_horizon(same, 0.02)["horizon"] is None
    profile = {"tolerance": 0.02, "splits": bad, **trust_horizon(bad, 0.02)}
    assert horizon_text(profile) == "within 2% up to 2× beyond the fitted range; +3.0% at 3×"
    rows = profile_rows(profile)
    assert [(r["within"], r["mean_error"], r["worst"]["ratio"]) for r in rows] == [
        (1.5, pytest.approx(0.031 / 3), 3.0), (2.0, pytest.approx(-0.03), 4.0)]
    assert [fmt_ratio(r) for r in (1.2345, 2.2, 6.4, 10.0, 149.6)] == [
        "1.2×", "2.2×", "6.4×", "10×", "150×"]
    near = {"tolerance": 0.02, "splits": bad, "horizon": 1.68, "failed": {
        "ratio": 1.72, "rel_error": -0.021, "max_fit_x": 1.0}}
    assert horizon_text(near) == "within 2% up to 1.68× beyond the fitted range; -2.1% at 1.72×"


def test_repeat_noise_by_hand():
    x = [10.0, 10.0, 20.0, 20.0, 20.0, 40.0]
    y = [2.0, 2.2, 1.5, 1.5, 1.5, 1.2]
    noise = repeat_noise(x, y)
    s1 = np.std(np.log([2.0, 2.2]), ddof=1)
    pooled = np.sqrt(s1**2 / 3)  # 3 degrees of freedom in all; the second size has no spread
    sig = np.sqrt([(s1**2 + NU0 * pooled**2) / (1 + NU0), (NU0 * pooled**2) / (2 + NU0),
                   pooled**2])
    raw = pooled / sig[[0, 0, 1, 1, 1, 2]]
    rec = noise.record
    assert (rec["source"], rec["dof"], rec["prior_dof"], rec["weighting"]) == (
        "repeats", 3, NU0, "1/sigma")
    assert rec["sigma"] == pytest.approx(pooled)
    assert [s["n_runs"] for s in rec["sizes"]] == [2, 3, 1]
    assert [s["sigma"] for s in rec["sizes"]] == pytest.approx(sig)
    assert rec["sizes"][0]["sd"] == pytest.approx(np.std([2.0, 2.2], ddof=1))
    assert rec["sizes"][1]["rel_sd"] == 0.0 and rec["sizes"][2]["rel_sd"] is None
    np.testing.assert_allclose(noise.weights, raw / raw.mean())
    assert noise.weights.mean() == pytest.approx(1.0)
    assert [s["weight"] for s in rec["sizes"]] == pytest.approx(noise.weights[[0, 2, 5]])
    np.testing.assert_allclose(noise.sigma, sig[[0, 0, 1, 1, 1, 2]])
    assert repeat_noise([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) is None  # no repeats, no estimate
    res = residual_noise([0.01, -0.01, 0.02, 0.0, -0.02], 3)
    assert res.record["sigma"] == pytest.approx(np.sqrt(0.001 / 2)) and res.weights is None
    assert residual_noise([0.01, -0.01, 0.02], 3) is None


def test_a_weight_of_two_is_the_run_counted_twice():
    n = SIZES
    y = (E + A * n**-ALPHA) * np.exp(np.random.default_rng(3).normal(0, SIGMA, n.size))
    w = np.ones(n.size)
    w[2] = 2.0
    weighted = Law("power", bootstrap=0).fit(n, y, sample_weight=w)
    doubled = Law("power", bootstrap=0).fit(np.append(n, n[2]), np.append(y, y[2]))
    for name in ("E", "A", "alpha"):
        assert weighted.params_[name] == pytest.approx(doubled.params_[name], rel=1e-6)
    plain = Law("power", bootstrap=0).fit(n, y)
    assert abs(weighted.params_["alpha"] - plain.params_["alpha"]) > 1e-4
    with pytest.raises(UserError, match="positive"):
        Law("power", bootstrap=0).fit(n, y, sample_weight=-w)


def test_two_stage_bootstrap_resamples_sizes_then_seeds():
    n = np.repeat(SIZES, 3)
    Z = np.log(n)[:, None]
    groups = np.repeat(np.arange(8), 3)
    W = resample_weights(Z, 3, 300, seed=1, groups=groups)
    per_size = W.reshape(300, 8, 3)
    # a drawn size brings as many runs as it has: its total is 3 times the times it was drawn
    assert np.all(per_size.sum(2) % 3 == 0) and np.all(W.sum(1) == 24)
    # ... and which of its seeds is drawn varies: not always each seed once per draw
    drawn = per_size.sum(2) > 0
    uneven = (per_size.max(2) != per_size.min(2)) & drawn
    assert uneven.mean() > 0.5
    # one run per size: the same draws as resampling runs
    Z8 = np.log(SIZES)[:, None]
    np.testing.assert_array_equal(resample_weights(Z8, 3, 50, seed=2, groups=np.arange(8)),
                                  resample_weights(Z8, 3, 50, seed=2))


def test_study_record_with_seed_repeats():
    n, y = _ladder()
    fit = fit_study_power(n, y, bootstrap=200, seed=0)
    noise = fit["noise"]
    assert noise["source"] == "repeats" and noise["dof"] == 16
    assert [s["n_runs"] for s in noise["sizes"]] == [3] * 8
    assert 0.6 * SIGMA < noise["sigma"] < 1.4 * SIGMA
    assert fit["dof"] == 5 and fit["flags"] == []
    prof = fit["profile"]
    assert [s["n_points"] for s in prof["splits"]] == [4, 5, 6, 7]
    assert prof["noise"]["sigma"] == pytest.approx(
        np.sqrt(np.mean(np.repeat([s["sigma"] for s in noise["sizes"]], 3) ** 2)))
    # The seeds' own estimate of the noise came out low (0.37% for 0.5%, 16 degrees of
    # freedom), so its bands are narrower than the true noise's: 1 of the 10 errors (-1.83% at
    # 3.7x) falls just outside its 95% band [-1.64%, +1.91%] (about 0.5 expected by chance).
    assert noise["sigma"] == pytest.approx(0.0037377, abs=1e-6)
    assert prof["outside_band"] == 1
    (out,) = [p for p in _points(prof) if not p["band"][0] <= p["rel_error"] <= p["band"][1]]
    assert out["rel_error"] == pytest.approx(-0.018289, abs=1e-6)
    assert out["band"] == pytest.approx([-0.016396, 0.019139], abs=1e-6)
    for name, (lo, hi) in fit["intervals"].items():
        assert lo < fit["params"][name] < hi
    assert fit["holdout"]["n_fit"] == 21 and fit["holdout"]["n_test"] == 3
    # 10x and 100x the largest rung lie beyond the horizon: a plain warning, with the interval
    preds = fit["predictions"]
    assert [(p["factor"], p["x"]) for p in preds] == [(10.0, pytest.approx(1e7)),
                                                      (100.0, pytest.approx(1e8))]
    h = fmt_ratio(prof["horizon"])
    for p in preds:
        assert p["lo"] < p["predicted"] < p["hi"] and p["beyond_horizon"] is True
        assert p["warning"] == (f"beyond the trust horizon ({h}): no evidence that the law holds "
                                "this far; the interval shows the fit's noise, not the error of "
                                "its form")
    json.dumps(fit)


def test_study_record_without_repeats_reads_noise_off_the_residuals():
    n = SIZES
    y = (E + A * n**-ALPHA) * np.exp(np.random.default_rng(4).normal(0, SIGMA, n.size))
    fit = fit_study_power(n, y, bootstrap=0)
    assert fit["noise"]["source"] == "residuals" and fit["noise"]["dof"] == 5
    law = Law("power", bootstrap=0).fit(n, y)
    resid = np.log(law.predict(n).point / y)
    assert fit["noise"]["sigma"] == pytest.approx(np.sqrt((resid**2).sum() / 5), rel=1e-6)
    prof = fit["profile"]
    # one seed a size at 0.5%: every check's band is wider than 2%, so nothing here can test
    # the tolerance; the old rule read the -2.5% at 1.9x (band [-2.8%, +2.4%]) as a failure
    assert (prof["tolerance"], prof["horizon"], prof["failed"]) == (0.02, None, None)
    assert horizon_text(prof) == (
        "too noisy to tell within 2% even at 1.9× beyond the fitted range: +1.2% at 1.9× lies "
        "inside its noise band [-2.5%, +3.3%]: add seeds at the sizes up to 72k and at 139k")
    loose = fit_study_power(n, y, bootstrap=0, tolerance=0.05)["profile"]
    assert loose["tolerance"] == 0.05 and loose["horizon"] == pytest.approx(10 ** (4 / 7))
    assert horizon_text(loose).startswith(
        "within 5% up to 3.7× beyond the fitted range; too noisy to tell beyond: +0.4% at 7.2×")
