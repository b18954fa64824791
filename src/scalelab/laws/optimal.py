"""Compute-optimal allocation: for a budget C = k·N·D, the N and D that minimize L(N, D).

For the chinchilla form the optimum is closed-form; for any other law in N and D it is found by
golden-section search over log N (L along the budget line is unimodal in log N for these forms).
Both run on all bootstrap samples at once, which gives intervals on N*, D* and the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fit import Law, _quantiles
from scalelab.laws.forms import Form

GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


def _chinchilla_n(theta: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """N* = G·(C/k)^(beta/(alpha+beta)), G = (alpha·A / (beta·B))^(1/(alpha+beta))."""
    _, a, b, alpha, beta = (theta[:, i : i + 1] for i in range(5))
    s = alpha + beta
    with np.errstate(divide="ignore", invalid="ignore"):
        log_g = (np.log(alpha) + a - np.log(beta) - b) / s
        return np.exp(log_g + beta / s * np.log(budget))


def _golden_n(form: Form, theta: np.ndarray, budget: np.ndarray, iters: int = 120) -> np.ndarray:
    """argmin over N in [1, C/k] of L(N, C/(k·N)), for every (theta, budget) pair."""
    lo = np.zeros((len(theta), len(budget)))
    hi = np.broadcast_to(np.log(budget), lo.shape).copy()
    lb = np.log(budget)

    def loss(u: np.ndarray) -> np.ndarray:
        Z = np.stack([u, lb - u], axis=-1)  # (S, m, 2): log N, log D
        return form.log_predict(theta, Z)[0]

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
    return np.exp((lo + hi) / 2.0)


def optimal_n(form: Form, theta: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """N* (S, m) for thetas (S, P) and budgets C/k (m,)."""
    if form.roles != ("N", "D"):
        raise UserError(f"compute-optimal allocation needs a law in N and D, not {form.name!r}")
    if form.name == "chinchilla":
        return _chinchilla_n(theta, budget)
    return _golden_n(form, theta, budget)


def _evaluate(form: Form, theta: np.ndarray, compute: np.ndarray, k: float) -> dict[str, Any]:
    budget = compute / k
    n = optimal_n(form, theta, budget)
    d = budget / n
    Z = np.stack([np.log(n), np.log(d)], axis=-1)
    loss = np.exp(form.log_predict(theta, Z)[0])
    return {"N": n, "D": d, "tokens_per_param": d / n, "loss": loss}


def optimal_allocation(law: Law, compute: float | Sequence[float], k: float = 6.0,
                       level: float | None = None) -> list[dict[str, Any]]:
    """N*, D*, D*/N* and the predicted loss for each compute budget, with bootstrap intervals.

    C = k·N·D (k = 6 FLOPs per parameter per token by default).
    """
    law._check_fitted()
    c = np.atleast_1d(np.asarray(compute, dtype=float))
    if not np.all(np.isfinite(c) & (c > 0)) or not k > 0:
        raise UserError("compute budgets and k must be positive numbers")
    form = law.form_
    point = _evaluate(form, law.theta_[None, :], c, k)
    boot = None
    if law.bootstrap_theta_ is not None and len(law.bootstrap_theta_) > 1:
        samples = _evaluate(form, law.bootstrap_theta_, c, k)
        q = _quantiles(level or law.level)
        boot = {key: np.nanquantile(v, q, axis=0) for key, v in samples.items()}
    rows = []
    for j, cj in enumerate(c):
        row: dict[str, Any] = {"compute": float(cj), "k": k}
        row.update({key: float(v[0, j]) for key, v in point.items()})
        row["intervals"] = None if boot is None else {
            key: [float(v[0, j]), float(v[1, j])] for key, v in boot.items()}
        rows.append(row)
    return rows


def frontier(law: Law, c_min: float, c_max: float, num: int = 25, k: float = 6.0,
             level: float | None = None) -> list[dict[str, Any]]:
    """The compute-optimal frontier over a log-spaced range of budgets."""
    if not (0 < c_min < c_max) or num < 2:
        raise UserError("frontier needs 0 < C_min < C_max and at least 2 points")
    return optimal_allocation(law, np.geomspace(c_min, c_max, num), k=k, level=level)
