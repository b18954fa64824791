"""Compute-optimal allocation: for a budget C = k·N·D, the N and D that minimize L(N, D).

For the chinchilla form the optimum is closed-form; for any other law in N and D it is found by
golden-section search over log N (L along the budget line is unimodal in log N for these forms).
Both run on all bootstrap samples at once, which gives intervals on N*, D* and the loss.

Measured FLOPs. A study knows what one unit of D costs each of its shapes: f(N) = flops / D,
measured by torch's flop counter (`per_unit`). The budget line is then C = f(N)·D rather than
C = k·N·D; k(N) = f(N) / N is above 6 for small models (attention and embeddings cost FLOPs that
N, the non-embedding parameters, does not count). With `per_unit` the optimum is found by search
along that line (a coarse grid in log N, then golden section around its best point), for every
form, the chinchilla one included; a constant f(N) = k·N gives back the closed form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fit import Law, _quantiles
from scalelab.laws.forms import Form

GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0
COARSE = 64  # grid points in log N before the golden section (measured FLOPs per unit)

# FLOPs per unit of D as a function of N (array in, array out): the measured cost of training.
PerUnit = Callable[[np.ndarray], np.ndarray]


def _chinchilla_n(theta: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """N* = G·(C/k)^(beta/(alpha+beta)), G = (alpha·A / (beta·B))^(1/(alpha+beta))."""
    _, a, b, alpha, beta = (theta[:, i : i + 1] for i in range(5))
    s = alpha + beta
    with np.errstate(divide="ignore", invalid="ignore"):
        log_g = (np.log(alpha) + a - np.log(beta) - b) / s
        return np.exp(log_g + beta / s * np.log(budget))


def _golden(loss: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray,
            iters: int = 120) -> np.ndarray:
    """argmin of loss(u) over u in [lo, hi], elementwise (loss unimodal in that bracket)."""
    lo, hi = lo.copy(), hi.copy()
    u1, u2 = hi - GOLDEN * (hi - lo), lo + GOLDEN * (hi - lo)
    f1, f2 = loss(u1), loss(u2)
    for _ in range(iters):
        left = f1 < f2  # minimum in [lo, u2]
        hi = np.where(left, u2, hi)
        lo = np.where(left, lo, u1)
        u1n = np.where(left, hi - GOLDEN * (hi - lo), u2)
        u2n = np.where(left, u1, lo + GOLDEN * (hi - lo))
        u1, u2 = u1n, u2n
        new = loss(np.where(left, u1, u2))
        f1, f2 = np.where(left, new, f2), np.where(left, f1, new)
    return (lo + hi) / 2.0


def _golden_n(form: Form, theta: np.ndarray, budget: np.ndarray, iters: int = 120) -> np.ndarray:
    """argmin over N in [1, C/k] of L(N, C/(k·N)), for every (theta, budget) pair."""
    lo = np.zeros((len(theta), len(budget)))
    hi = np.broadcast_to(np.log(budget), lo.shape).copy()
    lb = np.log(budget)

    def loss(u: np.ndarray) -> np.ndarray:
        Z = np.stack([u, lb - u], axis=-1)  # (S, m, 2): log N, log D
        return form.log_predict(theta, Z)[0]

    return np.exp(_golden(loss, lo, hi, iters))


def _measured_n(form: Form, theta: np.ndarray, compute: np.ndarray,
                per_unit: PerUnit) -> np.ndarray:
    """argmin over N of L(N, C / f(N)), f = per_unit, for every (theta, budget) pair.

    The search runs over N from 1 to where one unit of D takes the whole budget. A coarse grid
    first: a measured k(N) is piecewise, so L along the line need not be unimodal everywhere,
    only near its minimum; the golden section then refines between the grid neighbours."""
    lc = np.log(compute)
    u_hi = lc - np.log(per_unit(np.ones(1)))[0]  # f grows with N: N < C / f(1)

    def loss(u: np.ndarray) -> np.ndarray:
        ld = lc - np.log(per_unit(np.exp(u)))
        return form.log_predict(theta, np.stack([u, ld], axis=-1))[0]

    S, m = len(theta), len(compute)
    grid = np.linspace(0.0, 1.0, COARSE)[:, None] * np.maximum(u_hi, 1e-3)  # (G, m)
    vals = np.stack([loss(np.broadcast_to(g, (S, m))) for g in grid])  # (G, S, m)
    best = np.nanargmin(np.where(np.isfinite(vals), vals, np.inf), axis=0)
    step = grid[1] - grid[0]
    u0 = grid[best, np.arange(m)]
    lo = np.maximum(u0 - step, 0.0)
    hi = np.minimum(u0 + step, np.broadcast_to(u_hi, (S, m)))
    return np.exp(_golden(loss, lo, hi))


def optimal_n(form: Form, theta: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """N* (S, m) for thetas (S, P) and budgets C/k (m,)."""
    if form.roles != ("N", "D"):
        raise UserError(f"compute-optimal allocation needs a law in N and D, not {form.name!r}")
    if form.name == "chinchilla":
        return _chinchilla_n(theta, budget)
    return _golden_n(form, theta, budget)


def optimum_along_budgets(form: Form, theta: np.ndarray, compute: np.ndarray, k: float,
                          per_unit: PerUnit | None = None) -> dict[str, Any]:
    """N, D, tokens_per_param and loss at the optimum of each budget in `compute`, for each row
    of parameters `theta` (fitting parameterization): (rows, budgets) arrays. The FLOPs of a
    unit of D are `per_unit(N)` when given, else k·N."""
    if per_unit is None:
        budget = compute / k
        n = optimal_n(form, theta, budget)
        d = budget / n
    else:
        if form.roles != ("N", "D"):
            optimal_n(form, theta, compute)  # the same one-line refusal
        n = _measured_n(form, theta, compute, per_unit)
        d = compute / per_unit(n.ravel()).reshape(n.shape)
    Z = np.stack([np.log(n), np.log(d)], axis=-1)
    loss = np.exp(form.log_predict(theta, Z)[0])
    return {"N": n, "D": d, "tokens_per_param": d / n, "loss": loss}


def allocation_samples(law: Law, compute: float | Sequence[float], k: float = 6.0,
                       per_unit: PerUnit | None = None) -> tuple[dict[str, np.ndarray],
                                                                 dict[str, np.ndarray] | None]:
    """(point, samples): N, D, tokens_per_param and loss at the optimum of each budget, as
    (1, m) arrays for the fit and (B, m) arrays for its bootstrap refits (None without)."""
    law._check_fitted()
    c = np.atleast_1d(np.asarray(compute, dtype=float))
    if not np.all(np.isfinite(c) & (c > 0)) or not k > 0:
        raise UserError("compute budgets and k must be positive numbers")
    form = law.form_
    point = optimum_along_budgets(form, law.theta_[None, :], c, k, per_unit)
    samples = None
    if law.bootstrap_theta_ is not None and len(law.bootstrap_theta_) > 1:
        samples = optimum_along_budgets(form, law.bootstrap_theta_, c, k, per_unit)
    return point, samples


def optimal_allocation(law: Law, compute: float | Sequence[float], k: float = 6.0,
                       level: float | None = None,
                       per_unit: PerUnit | None = None) -> list[dict[str, Any]]:
    """N*, D*, D*/N* and the predicted loss for each compute budget, with bootstrap intervals.

    C = k·N·D (k = 6 FLOPs per parameter per token by default), or with `per_unit` C = f(N)·D,
    f the measured FLOPs per unit of D of a model of N parameters (then `k` in each row is
    f(N*) / N*, the FLOPs per parameter per unit at the optimum).
    """
    point, samples = allocation_samples(law, compute, k, per_unit)
    c = np.atleast_1d(np.asarray(compute, dtype=float))
    boot = None
    if samples is not None:
        q = _quantiles(level or law.level)
        boot = {key: np.nanquantile(v, q, axis=0) for key, v in samples.items()}
    rows = []
    for j, cj in enumerate(c):
        row: dict[str, Any] = {"compute": float(cj), "k": k}
        if per_unit is not None:
            n_j = point["N"][0, j]
            row["k"] = float(per_unit(np.array([n_j]))[0] / n_j)
        row.update({key: float(v[0, j]) for key, v in point.items()})
        row["intervals"] = None if boot is None else {
            key: [float(v[0, j]), float(v[1, j])] for key, v in boot.items()}
        rows.append(row)
    return rows


def frontier(law: Law, c_min: float, c_max: float, num: int = 25, k: float = 6.0,
             level: float | None = None,
             per_unit: PerUnit | None = None) -> list[dict[str, Any]]:
    """The compute-optimal frontier over a log-spaced range of budgets."""
    if not (0 < c_min < c_max) or num < 2:
        raise UserError("frontier needs 0 < C_min < C_max and at least 2 points")
    return optimal_allocation(law, np.geomspace(c_min, c_max, num), k=k, level=level,
                              per_unit=per_unit)
