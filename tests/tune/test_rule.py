"""The lr*(N) = c·N^gamma rule: least squares in log-log space, intervals from its standard
errors, checked against scipy's own linear regression."""

import numpy as np
import pytest
from scipy import stats

from scalelab.tune.rule import fit_lr_rule, rule_lr


def test_points_on_a_power_law_give_it_back():
    n = [3e3, 1e4, 3e4, 1e5]
    rule = fit_lr_rule(n, [0.02 * x ** -0.4 for x in n])
    assert rule["c"] == pytest.approx(0.02) and rule["gamma"] == pytest.approx(-0.4)
    assert rule_lr(rule, 5e4) == pytest.approx(0.02 * 5e4 ** -0.4)
    lo, hi = rule["intervals"]["gamma"]
    assert hi - lo < 1e-9


def test_the_interval_is_the_regression_standard_error_times_t():
    rng = np.random.default_rng(0)
    n = np.geomspace(1e3, 1e6, 6)
    lr = 0.05 * n ** -0.3 * np.exp(rng.normal(0, 0.2, n.size))
    rule = fit_lr_rule(n.tolist(), lr.tolist())
    ref = stats.linregress(np.log(n), np.log(lr))
    t = stats.t.ppf(0.975, n.size - 2)
    assert rule["gamma"] == pytest.approx(ref.slope)
    assert rule["intervals"]["gamma"] == pytest.approx(
        [ref.slope - t * ref.stderr, ref.slope + t * ref.stderr])
    assert rule["intervals"]["c"] == pytest.approx(
        np.exp([ref.intercept - t * ref.intercept_stderr,
                ref.intercept + t * ref.intercept_stderr]).tolist())
    band = rule["band"]
    assert all(lo < p < hi for lo, p, hi in zip(band["lo"], band["point"], band["hi"],
                                                strict=True))


def test_two_sizes_are_an_exact_line_without_an_interval():
    rule = fit_lr_rule([1e3, 1e4], [0.01, 0.005])
    assert rule["dof"] == 0 and rule["intervals"]["gamma"] is None
    assert rule["gamma"] == pytest.approx(np.log10(0.5))
    with pytest.raises(ValueError):
        fit_lr_rule([1e3], [0.01])
