"""The numerical core: analytic gradients of every form, and the batched L-BFGS itself."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from scalelab.laws.forms import FORMS
from scalelab.laws.objective import Objective
from scalelab.laws.optim import batched_lbfgs


def _data(form, rng):
    n = 30
    Z = np.log(np.column_stack([np.geomspace(1e6, 1e9, n), rng.permutation(np.geomspace(
        1e8, 1e11, n))])[:, : form.n_inputs])
    ly = np.log(rng.uniform(2.0, 3.5, n))
    return Z, ly


@pytest.mark.parametrize("name", sorted(FORMS))
@pytest.mark.parametrize("loss", ["huber", "lsq"])
def test_gradient_matches_finite_differences(name, loss):
    rng = np.random.default_rng(0)
    form = FORMS[name]
    Z, ly = _data(form, rng)
    lo, hi = form.bounds(Z, ly)
    grid = form.grid(Z, ly)
    theta = np.clip(grid[rng.choice(len(grid), 4, replace=False)] + 0.05, lo, hi - 1e-3)
    obj = Objective(form, Z, ly, loss=loss, delta=0.05)
    f, g = obj(theta, np.arange(4))
    eps = 1e-6
    for j in range(form.n_params):
        step = np.zeros_like(theta)
        step[:, j] = eps
        num = (obj(theta + step, np.arange(4))[0] - obj(theta - step, np.arange(4))[0]) / (2 * eps)
        np.testing.assert_allclose(g[:, j], num, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", sorted(FORMS))
def test_params_round_trip(name):
    form = FORMS[name]
    theta = form.grid(*_data(form, np.random.default_rng(1)))[:7]
    np.testing.assert_allclose(form.from_params(form.to_params(theta)), theta, atol=1e-12)


def _rosenbrock(x, rows):
    a, b = x[:, 0], x[:, 1]
    f = (1 - a) ** 2 + 100 * (b - a * a) ** 2
    g = np.column_stack([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)])
    return f, g


def test_batched_lbfgs_solves_many_problems_at_once():
    starts = np.random.default_rng(0).uniform(-2, 2, size=(200, 2))
    res = batched_lbfgs(_rosenbrock, starts, np.full(2, -5.0), np.full(2, 5.0), gtol=1e-8,
                        ftol=1e-15)
    assert res.converged.all()
    np.testing.assert_allclose(res.x, 1.0, atol=1e-4)


def test_batched_lbfgs_respects_bounds_like_scipy():
    lo, hi = np.array([-5.0, -5.0]), np.array([0.5, 5.0])
    starts = np.random.default_rng(1).uniform(-2, 0.5, size=(50, 2))
    res = batched_lbfgs(_rosenbrock, starts, lo, hi, gtol=1e-9, ftol=1e-15)
    ref = minimize(lambda x: tuple(v[0] for v in _rosenbrock(x[None], None)), starts[0],
                   jac=True, method="L-BFGS-B", bounds=list(zip(lo, hi, strict=True)))
    assert np.all(res.x <= hi + 1e-12) and np.all(res.x >= lo - 1e-12)
    np.testing.assert_allclose(res.x, np.tile(ref.x, (50, 1)), atol=1e-4)


def test_batched_lbfgs_each_problem_runs_as_if_alone():
    # Problems are not held in lockstep (one backtracking does not stall the others), and the
    # batch must not change any problem's path: batched and one-at-a-time runs agree.
    lo, hi = np.full(2, -5.0), np.full(2, 5.0)
    starts = np.random.default_rng(2).uniform(-3, 3, size=(25, 2))
    together = batched_lbfgs(_rosenbrock, starts, lo, hi, gtol=1e-9, ftol=1e-15)
    for i, x0 in enumerate(starts):
        alone = batched_lbfgs(_rosenbrock, x0[None], lo, hi, gtol=1e-9, ftol=1e-15)
        np.testing.assert_allclose(alone.x[0], together.x[i], rtol=1e-12, atol=1e-14)
        assert alone.n_iter[0] == together.n_iter[i]
    assert together.converged.all() and len(set(together.n_iter)) > 1

