"""The noise of a ladder: from its repeats (seed repeats, or the folds of a k-fold task) when it
has them, else from the law's own residuals; and the weight it gives each run in the fit.

Noise is measured in log space: sigma is the standard deviation of log(loss) across the runs
of one size, i.e. the relative noise (0.005 = 0.5%), the scale the fit's residuals live on.

Estimating it per size from 2 or 3 seeds is itself noisy (two seeds that happen to agree would
claim no noise at all), so each size's variance is shrunk toward the pooled one:
sigma_s^2 = (nu_s·s_s^2 + NU0·pooled^2) / (nu_s + NU0), with nu_s = runs - 1 and NU0 = 2 (the
pooled value counts as two extra degrees of freedom). Sizes without repeats get the pooled value.

Weighting. Each run of size s is weighted by pooled / sigma_s (then scaled so the weights
average 1). The fit minimizes sum_i w_i·Huber_delta(r_i) with delta = 1e-3, far below seed noise
(~5e-3), so nearly every residual sits in Huber's linear part, where a run's term is delta·|r_i|:
an L1 (Laplace) fit, whose likelihood weighs a residual by 1/scale, hence 1/sigma rather than
the 1/sigma^2 of least squares. A size with more repeats counts more because each of its runs
is a term of the objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from scalelab.laws.groups import SIZE_RTOL, size_groups

NU0 = 2.0  # degrees of freedom the pooled noise lends each size's estimate
WEIGHTING = "1/sigma"


@dataclass
class Noise:
    """A noise estimate: `record` for JSON, `sigma` (per run, log space) for the profile's
    noise simulations, `weights` (per run, mean 1) for the fit, or None to weigh runs alike."""

    record: dict[str, Any]
    sigma: np.ndarray
    weights: np.ndarray | None


def repeat_noise(x: Any, y: Any, rtol: float = SIZE_RTOL) -> Noise | None:
    """The spread across the runs of each size (x: sizes, y: losses); None without repeats.

    record: {source: "repeats", sigma: pooled sd of log y, dof: sum of (runs - 1), prior_dof,
    weighting: "1/sigma", sizes: [{x, n_runs, mean, sd, rel_sd, sigma, weight}]}, where mean
    and sd (ddof 1, in y's units) are of y over the size's runs, rel_sd the sd of log y, sigma
    the shrunk estimate the fit uses and weight the weight of each of its runs.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    groups = size_groups(x, rtol)
    ly = np.log(y)
    counts = np.bincount(groups)
    if counts.max() < 2:
        return None
    sizes = []
    for g, n in enumerate(counts):
        m = groups == g
        sizes.append({"x": float(x[m].mean()), "n_runs": int(n), "mean": float(y[m].mean()),
                      "sd": float(np.std(y[m], ddof=1)) if n > 1 else None,
                      "rel_sd": float(np.std(ly[m], ddof=1)) if n > 1 else None})
    nu = counts - 1
    var = np.array([s["rel_sd"] ** 2 if s["rel_sd"] is not None else 0.0 for s in sizes])
    pooled = float(np.sqrt((nu * var).sum() / nu.sum()))
    sigma = np.sqrt((nu * var + NU0 * pooled**2) / (nu + NU0))
    run_sigma = sigma[groups]
    if pooled > 0:
        raw = pooled / run_sigma
        scale = 1.0 / raw.mean()
        weights = raw * scale
        size_weight = pooled / sigma * scale
    else:  # repeats that agree exactly (a deterministic trainer): nothing to weigh by
        weights, size_weight = None, np.ones(len(sizes))
    for s, sg, w in zip(sizes, sigma, size_weight, strict=True):
        s["sigma"], s["weight"] = float(sg), float(w)
    record = {"source": "repeats", "sigma": pooled, "dof": int(nu.sum()), "prior_dof": NU0,
              "weighting": WEIGHTING if weights is not None else None, "sizes": sizes}
    return Noise(record, run_sigma, weights)


def residual_noise(log_residuals: Any, n_params: int) -> Noise | None:
    """Without repeats: sigma from the law's own log residuals, sqrt(sum r^2 / (n - P)); None
    with no degrees of freedom left. It holds any misfit of the form as well as the noise. The
    fit is not weighted by it (one value for every run)."""
    r = np.asarray(log_residuals, dtype=float).ravel()
    dof = len(r) - n_params
    if dof <= 0:
        return None
    sigma = float(np.sqrt((r**2).sum() / dof))
    record = {"source": "residuals", "sigma": sigma, "dof": int(dof), "prior_dof": None,
              "weighting": None, "sizes": []}
    return Noise(record, np.full(len(r), sigma), None)
