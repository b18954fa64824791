"""The learning-rate rule lr*(N) = c·N^γ fitted to each rung's best learning rate.

A straight line in log-log space by least squares, with intervals from the regression's standard
errors (Student t with n - 2 degrees of freedom): a handful of rungs is too few for a bootstrap
to mean much. Two rungs give an exact line and no interval (`dof` 0, said so in the record).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats


def fit_lr_rule(n: Sequence[float], lr: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """{c, gamma, intervals {c, gamma}, level, dof, sigma, points, band} for lr = c·N^gamma;
    `band` holds the rule and its confidence band over the fitted range, for the report."""
    x, y = np.log(np.asarray(n, float)), np.log(np.asarray(lr, float))
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("a rule needs best learning rates at two sizes or more")
    design = np.column_stack([np.ones_like(x), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    dof = len(x) - 2
    out: dict[str, Any] = {"c": float(np.exp(coef[0])), "gamma": float(coef[1]), "level": level,
                           "dof": dof, "sigma": None, "intervals": {"c": None, "gamma": None},
                           "points": [{"n_nonembed": float(a), "lr": float(b)}
                                      for a, b in zip(n, lr, strict=True)]}
    grid = np.geomspace(min(n), max(n), 40)
    band = {"x": grid.tolist(), "point": (out["c"] * grid ** out["gamma"]).tolist(),
            "lo": None, "hi": None}
    if dof > 0:
        resid = y - design @ coef
        sigma = float(np.sqrt(resid @ resid / dof))
        cov = sigma ** 2 * np.linalg.inv(design.T @ design)
        t = float(stats.t.ppf(0.5 + level / 2, dof))
        se = np.sqrt(np.diag(cov))
        out["sigma"] = sigma
        out["intervals"] = {
            "c": [float(np.exp(coef[0] - t * se[0])), float(np.exp(coef[0] + t * se[0]))],
            "gamma": [float(coef[1] - t * se[1]), float(coef[1] + t * se[1])]}
        g = np.column_stack([np.ones_like(grid), np.log(grid)])
        half = t * np.sqrt(np.einsum("ij,jk,ik->i", g, cov, g))
        mid = g @ coef
        band["lo"], band["hi"] = np.exp(mid - half).tolist(), np.exp(mid + half).tolist()
    out["band"] = band
    return out


def rule_lr(rule: dict[str, Any], n_nonembed: float) -> float:
    return float(rule["c"] * n_nonembed ** rule["gamma"])
