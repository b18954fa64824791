"""How far can a law be trusted? Its extrapolation profile and trust horizon.

A single holdout (fit on all sizes but the largest, predict it) tests one short step. The
profile tests every step the data allow: for each split point k, fit the law on the runs with
size <= x_k (only where that leaves more distinct points than the law has parameters: an exact
fit has no degrees of freedom and predicts nothing), predict every larger size, and record the
signed relative error (predicted - measured) / measured against the extrapolation ratio
x / x_k. Sizes are the law's first input (N), or with ``by="compute"`` the compute C = k·N·D of
a law in N and D (two-axis data, where N alone does not order the runs by cost).

The trust horizon is the largest ratio at which every split's error stayed within the
tolerance: every split is within it at all ratios up to the horizon, and some split fails at the
next ratio tested (or none was tested beyond: "no evidence beyond").

With a noise level (sigma per run, in log space: from seed repeats or the law's residuals) each
error also gets its noise-implied band: the same splits refitted to `sims` synthetic ladders,
the full fit plus Gaussian noise of that size in log L, give the range (at `level`) of errors
that noise alone produces when the law is exactly right. An error outside its band is more
than noise: the law's form, or the ladder, is off.

Profile fits have no bootstrap (a point error per size is what the profile is about).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fit import Law, _rows, as_inputs
from scalelab.laws.groups import n_distinct, size_groups
from scalelab.laws.objective import Objective
from scalelab.laws.optim import batched_lbfgs

MAX_SPLITS = 8  # more eligible split points than this: that many, evenly spaced in log size
SIMS = 200  # synthetic ladders per split for the noise-implied band
TOLERANCE = 0.02
RATIO_RTOL = 1e-6  # ratios this close are the same ratio


def profile_axis(Xa: np.ndarray, by: str, k: float = 6.0) -> np.ndarray:
    """The values runs are ordered and split by: the first input, or C = k·N·D."""
    if by == "size":
        return Xa[:, 0]
    if by == "compute":
        if Xa.shape[1] != 2:
            raise UserError("a profile over compute needs a law in N and D (C = k·N·D)")
        return k * Xa[:, 0] * Xa[:, 1]
    raise UserError(f"profile by {by!r}: use size or compute")


def _pick(eligible: list[int], values: np.ndarray, max_splits: int) -> list[int]:
    """At most max_splits of the eligible split groups, evenly spaced in log size, keeping the
    first and the last."""
    if len(eligible) <= max_splits:
        return eligible
    logs = np.log([values[g] for g in eligible])
    chosen = {int(np.argmin(np.abs(logs - t))) for t in np.linspace(logs[0], logs[-1],
                                                                   max_splits)}
    return [eligible[i] for i in sorted(chosen)]


def extrapolation_profile(law: Law, X: Any, y: Any, *, tolerance: float = TOLERANCE,
                          by: str = "size", k: float = 6.0, sample_weight: Any = None,
                          sigma: Any = None, truth: Law | None = None, sims: int = SIMS,
                          max_splits: int = MAX_SPLITS, seed: int = 0,
                          level: float = 0.95) -> dict[str, Any]:
    """The extrapolation profile of `law`'s form on runs X, y, as a JSON-ready dict.

    `law` gives the form and fit settings (it is cloned, without a bootstrap, for every split);
    `sample_weight` weighs runs as in `Law.fit`; `sigma` (a number or one per run: the sd of
    log L) turns on the noise-implied bands, simulated around `truth` (default: the law fitted
    to all runs). Shape::

        {by, k, max_x, tolerance, level, n_params, max_splits,
         splits: [{max_fit_x, n_fit, n_points, dof, params, on_bound,
                   points: [{x, ratio, n_runs, measured, predicted, rel_error, band}]}],
         horizon, max_ratio, failed: {ratio, rel_error, max_fit_x} | None,
         noise: {sigma, sims, seed} | None, outside_band, skipped}

    `by` names the axis (the first input's name, or "C" with `k`); `max_x` is the largest
    size of all runs (a prediction at x is x / max_x beyond the fitted range of the full law).
    `points` has one entry per larger size: means over its runs (rel_error is the mean of the
    runs' relative errors), `band` the noise-implied [lo, hi] of that error or None. `horizon`
    is None when no split was within tolerance at its first ratio (or there is no split);
    `skipped` says why there is no split, else None.
    """
    if not 0 < tolerance < 1:
        raise UserError(f"tolerance must be between 0 and 1, got {tolerance}")
    form = law.form_
    Xa = as_inputs(X, form, law._names())
    yv = np.asarray(y, dtype=float).ravel()
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=float).ravel()
    axis = profile_axis(Xa, by, k)
    groups = size_groups(axis)
    G = int(groups.max()) + 1
    top = np.array([axis[groups == g].max() for g in range(G)])
    P = form.n_params
    eligible = [g for g in range(G - 1) if n_distinct(Xa[groups <= g]) > P]
    out: dict[str, Any] = {
        "by": law._names()[0] if by == "size" else "C", "k": None if by == "size" else k,
        "max_x": float(axis.max()), "tolerance": float(tolerance),
        "level": float(level), "n_params": P, "max_splits": max_splits, "splits": [],
        "horizon": None, "max_ratio": None, "failed": None, "noise": None,
        "outside_band": None, "skipped": None,
    }
    if not eligible:
        out["skipped"] = (f"needs more than {P} distinct points below some size and a larger "
                          f"size to predict; there are {G} sizes")
        return out
    fits = []
    for g in _pick(eligible, top, max_splits):
        fit = groups <= g
        try:
            fitted = law.clone(bootstrap=0).fit(Xa[fit], yv[fit],
                                                None if w is None else w[fit])
        except UserError:  # e.g. one distinct D among the fitted runs of a law in N and D
            continue
        rel = fitted.predict(Xa[~fit]).point / yv[~fit] - 1.0
        pts = []
        for h in range(g + 1, G):
            m = groups[~fit] == h
            runs = groups == h
            pts.append({"x": float(axis[runs].mean()), "ratio": float(axis[runs].mean() / top[g]),
                        "n_runs": int(runs.sum()), "measured": float(yv[runs].mean()),
                        "predicted": float(fitted.predict(Xa[runs]).point.mean()),
                        "rel_error": float(rel[m].mean()), "band": None})
        out["splits"].append({"max_fit_x": float(top[g]), "n_fit": int(fit.sum()),
                              "n_points": n_distinct(Xa[fit]),
                              "dof": n_distinct(Xa[fit]) - P, "params": dict(fitted.params_),
                              "on_bound": list(fitted.on_bound_), "points": pts})
        fits.append((g, fitted))
    if sigma is not None and fits and sims > 0:
        sig = np.broadcast_to(np.asarray(sigma, dtype=float), yv.shape)
        if truth is None:
            truth = law.clone(bootstrap=0).fit(Xa, yv, w)
        bands = _noise_bands(law, Xa, yv, w, sig, truth, fits, groups, sims, seed, level)
        for split, split_bands in zip(out["splits"], bands, strict=True):
            for p, b in zip(split["points"], split_bands, strict=True):
                p["band"] = [float(b[0]), float(b[1])]
        out["noise"] = {"sigma": float(np.sqrt(np.mean(sig**2))), "sims": int(sims),
                        "seed": int(seed)}
        out["outside_band"] = sum(not p["band"][0] <= p["rel_error"] <= p["band"][1]
                                  for s in out["splits"] for p in s["points"])
    out.update(trust_horizon(out["splits"], tolerance))
    return out


def _noise_bands(law: Law, Xa: np.ndarray, yv: np.ndarray, w: np.ndarray | None,
                 sig: np.ndarray, truth: Law, fits: list[tuple[int, Law]], groups: np.ndarray,
                 sims: int, seed: int, level: float) -> list[np.ndarray]:
    """Per split, per larger size: the [lo, hi] range (at `level`) of the profile's error over
    `sims` synthetic ladders (truth plus noise sig in log L), each refitted like the real one."""
    form = law.form_
    Z = np.log(Xa)
    rng = np.random.default_rng(seed)
    ly_true = form.log_predict(np.atleast_2d(truth.theta_), Z)[0][0]
    ly_sim = ly_true + rng.standard_normal((sims, len(yv))) * sig
    q = [(1 - level) / 2, (1 + level) / 2]
    bands = []
    for g, fitted in fits:
        fit = groups <= g
        Zf = Z[fit]
        lo, hi = form.bounds(Zf, np.log(yv[fit]))
        starts = np.vstack([truth.theta_, fitted.theta_])  # the truth and the real split's fit
        n_starts = len(starts)
        obj = Objective(form, Zf, np.repeat(ly_sim[:, fit], n_starts, axis=0), loss=law.loss,
                        delta=law.delta,
                        weights=_rows(None if w is None else w[fit], sims * n_starts))
        res = batched_lbfgs(obj, np.tile(starts, (sims, 1)), lo, hi, ftol=1e-14, gtol=1e-9)
        f = np.where(np.isfinite(res.f), res.f, np.inf).reshape(sims, n_starts)
        thetas = res.x.reshape(sims, n_starts, -1)[np.arange(sims), f.argmin(1)]
        test = ~fit
        rel = form.predict(thetas, Z[test]) / np.exp(ly_sim[:, test]) - 1.0
        per_size = np.column_stack([rel[:, groups[test] == h].mean(1)
                                    for h in range(g + 1, int(groups.max()) + 1)])
        bands.append(np.quantile(per_size, q, axis=0).T)
    return bands


def trust_horizon(splits: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """{horizon, max_ratio, failed} of profile splits (see the module docstring).

    failed: the smallest ratio at which some split's error left the tolerance, with that error
    and the split (its max_fit_x); None when none did. A split counts from its first failure:
    a later return within tolerance does not restore trust.
    """
    fail, failed = math.inf, None
    ratios = []
    for s in splits:
        for p in sorted(s["points"], key=lambda p: p["ratio"]):
            ratios.append(p["ratio"])
            if abs(p["rel_error"]) > tolerance:
                if p["ratio"] < fail:
                    fail = p["ratio"]
                    failed = {"ratio": p["ratio"], "rel_error": p["rel_error"],
                              "max_fit_x": s["max_fit_x"]}
                break
    all_ratios = [p["ratio"] for s in splits for p in s["points"]]
    # Splits of a geometric ladder meet the same ratios, equal but for rounding.
    ok = [r for r in all_ratios if r < fail * (1 - RATIO_RTOL)]
    return {"horizon": max(ok) if ok else None,
            "max_ratio": max(all_ratios) if all_ratios else None, "failed": failed}


def fmt_ratio(r: float) -> str:
    """2.2×, 6.4×, 12×, 150×."""
    return f"{r:.2g}×" if r < 10 else f"{r:.0f}×"


def horizon_text(profile: dict[str, Any] | None) -> str:
    """The trust horizon in words, e.g. "within 2% up to 3× beyond the fitted range; no evidence
    beyond"."""
    if not profile or not profile.get("splits"):
        why = (profile or {}).get("skipped") or "the ladder is too short"
        return f"no extrapolation profile: {why}"
    tol = f"{100 * profile['tolerance']:g}%"
    h, failed = profile.get("horizon"), profile.get("failed")
    if h is None:
        return (f"not within {tol} even at {fmt_ratio(failed['ratio'])} beyond the fitted range "
                f"({100 * failed['rel_error']:+.1f}%)")
    fmt = fmt_ratio
    if failed is not None and fmt(h) == fmt(failed["ratio"]):  # 1.68× and 1.72×: say so
        def fmt(r: float) -> str:
            return f"{r:.3g}×"
    text = f"within {tol} up to {fmt(h)} beyond the fitted range"
    if failed is None:
        return text + "; no evidence beyond"
    return text + f"; {100 * failed['rel_error']:+.1f}% at {fmt(failed['ratio'])}"


def profile_rows(profile: dict[str, Any]) -> list[dict[str, Any]]:
    """One summary per split, for tables: max_fit_x, n_fit, n_points, predicts (sizes),
    max_ratio, next / largest (the error at the nearest and at the largest size predicted, with
    its band), mean_error, worst (the largest |error|), within (the largest ratio up to which
    this split stayed within tolerance, None if not even its first)."""
    tol = profile["tolerance"]
    rows = []
    for s in profile["splits"]:
        pts = sorted(s["points"], key=lambda p: p["ratio"])
        within = None
        for p in pts:
            if abs(p["rel_error"]) > tol:
                break
            within = p["ratio"]
        rows.append({"max_fit_x": s["max_fit_x"], "n_fit": s["n_fit"],
                     "n_points": s["n_points"], "predicts": len(pts),
                     "max_ratio": pts[-1]["ratio"], "next": pts[0], "largest": pts[-1],
                     "mean_error": float(np.mean([p["rel_error"] for p in pts])),
                     "worst": max(pts, key=lambda p: abs(p["rel_error"])), "within": within})
    return rows
