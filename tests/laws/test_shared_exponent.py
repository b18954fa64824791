"""The `chinchilla_shared` form, L = E + A/N^eta + B/D^eta (one exponent for N and D)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from scalelab.laws import Law, optimal_allocation
from scalelab.laws.forms import FORMS
from tests.helpers import DATA

TRUE = {"E": 1.8, "A": 300.0, "B": 900.0, "eta": 0.3}


def _grid_runs(noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 6 x 6 grid of N and tokens per parameter from the true law, times exp(noise·z)."""
    n = np.geomspace(1e7, 1e9, 6)
    tpp = np.geomspace(5.0, 320.0, 6)
    N, T = np.meshgrid(n, tpp)
    X = np.column_stack([N.ravel(), (N * T).ravel()])
    y = TRUE["E"] + TRUE["A"] * X[:, 0] ** -TRUE["eta"] + TRUE["B"] * X[:, 1] ** -TRUE["eta"]
    rng = np.random.default_rng(seed)
    return X, y * np.exp(noise * rng.standard_normal(len(y)))


def test_gradient_matches_finite_differences() -> None:
    form = FORMS["chinchilla_shared"]
    X, _ = _grid_runs()
    Z = np.log(X)
    theta = form.from_params(np.array(list(TRUE.values())))[None, :]
    v = np.random.default_rng(1).standard_normal((1, len(X)))
    _, vjp = form.log_predict(theta, Z)
    grad = vjp(v)[0]
    for j in range(4):
        step = np.zeros(4)
        step[j] = 1e-6
        up = (form.log_predict(theta + step, Z)[0] * v).sum()
        down = (form.log_predict(theta - step, Z)[0] * v).sum()
        assert grad[j] == pytest.approx((up - down) / 2e-6, rel=1e-5, abs=1e-7)


def test_recovers_parameters_noise_free() -> None:
    X, y = _grid_runs()
    law = Law("chinchilla_shared", bootstrap=0).fit(X, y)
    for name, value in TRUE.items():
        assert law.params_[name] == pytest.approx(value, rel=1e-4), name
    assert law.on_bound_ == []


def test_recovers_parameters_with_noise_inside_its_intervals() -> None:
    X, y = _grid_runs(noise=0.003, seed=3)
    law = Law("chinchilla_shared", bootstrap=200, seed=0).fit(X, y)
    iv = law.intervals()
    for name in ("E", "eta"):
        lo, hi = iv[name]
        assert lo <= TRUE[name] <= hi, (name, iv[name])
    assert law.params_["eta"] == pytest.approx(TRUE["eta"], rel=0.1)


def test_optimal_tokens_per_parameter_is_the_shared_exponent_constant() -> None:
    """With one exponent, D*/N* = (B/A)^(1/eta) at every budget (C = 6·N·D)."""
    X, y = _grid_runs()
    law = Law("chinchilla_shared", bootstrap=0).fit(X, y)
    p = law.params_
    for row in optimal_allocation(law, [1e19, 1e23]):
        assert row["D"] / row["N"] == pytest.approx((p["B"] / p["A"]) ** (1 / p["eta"]),
                                                    rel=1e-4)


def _gadre(dataset: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with open(DATA / "gadre_overtraining.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["dataset"] == dataset]
    X = np.array([[float(r["params"]), float(r["tokens"])] for r in rows])
    y = np.array([float(r["c4_val_loss"]) for r in rows])
    small = X[:, 0] < 1e9
    return X[small], y[small], X[~small], y[~small]


def test_gadre_redpajama_targets_within_one_percent() -> None:
    """Fitted on RedPajama's runs below 1B, the paper's two targets (1.4B at 32x, 6.9B at 1x)
    come out within 1% (the 5-parameter chinchilla form: -1.11% and -3.02%).

    Measured +0.13% and +0.31%; the fit is well identified (4 parameters, 32 runs, no
    parameter on a bound), so 0.1 points of slack covers any BLAS kernel's rounding.
    """
    X, y, Xb, yb = _gadre("rpj")
    law = Law("chinchilla_shared", bootstrap=0).fit(X, y)
    err = law.predict(Xb).point / yb - 1
    big = dict(zip(((x[0], round(x[1] / x[0] / 20)) for x in Xb), err, strict=True))
    assert big[(1439795200.0, 32)] == pytest.approx(0.0013, abs=1e-3)
    assert big[(6889410560.0, 1)] == pytest.approx(0.0031, abs=1e-3)
    baseline = Law("chinchilla", bootstrap=0).fit(X, y).predict(Xb).point / yb - 1
    assert np.abs(err).max() < np.abs(baseline).max()
