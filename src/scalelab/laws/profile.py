"""How far can a law be trusted? Its extrapolation profile and trust horizon.

A single holdout (fit on all sizes but the largest, predict it) tests one short step. The
profile tests every step the data allow: for each split point k, fit the law on the runs with
size <= x_k (only where that leaves more distinct points than the law has parameters: an exact
fit has no degrees of freedom and predicts nothing), predict every larger size, and record the
signed relative error (predicted - measured) / measured against the extrapolation ratio
x / x_k. Sizes are the law's first input (N), or with ``by="compute"`` the compute C = k·N·D of
a law in N and D (two-axis data, where N alone does not order the runs by cost).

With a noise level (sigma per run, in log space: from seed repeats or the law's residuals) each
error also gets its noise-implied band: the same splits refitted to `sims` synthetic ladders,
the full fit plus Gaussian noise of that size in log L, give the range (at `level`) of errors
that noise alone produces when the law is exactly right. An error outside its band is more
than noise: the law's form, or the ladder, is off.

Each predicted size gets a verdict (`point_verdict`). A check can test the tolerance only where
its band is narrower than the tolerance (hi - lo <= 2·tolerance), or where there is no band (no
noise level to tell):
- "within": |error| <= tolerance, on a check that can test it;
- "fail": beyond the tolerance, and either outside its noise band or on a check that can test
  it: more than noise, the law (or the ladder) is off;
- "noise": the band is wider than the tolerance and the error lies inside it. Noise alone gives
  errors this large when the law is exactly right, so the check can neither confirm nor refute
  the tolerance: it is named (with the sizes where more seeds would narrow it), and counts
  neither for nor against the law. Counting such a miss made the default study read "trust
  horizon: none" from one split of 4 sizes whose +3.1% lay inside its own band [-2.5%, +5.5%];
  counting such a pass would let a lucky check 14× out, inside a band of ±11%, set the horizon.

The trust horizon is the largest ratio of a "within" check below the first "fail": every split
is within the tolerance at all ratios up to the horizon that it could test, and some split fails
at the next ratio tested, or none was tested beyond ("no evidence beyond"), or the checks beyond
were too noisy to tell ("too noisy to tell beyond").

Profile fits have no bootstrap (a point error per size is what the profile is about).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fit import Law, _rows, as_inputs
from scalelab.laws.groups import n_distinct, size_groups
from scalelab.laws.objective import Objective
from scalelab.laws.optim import batched_lbfgs
from scalelab.values import fmt_count

MAX_SPLITS = 8  # more eligible split points than this: that many, evenly spaced in log size
SIMS = 200  # synthetic ladders per split for the noise-implied band
TOLERANCE = 0.02
ALPHA = 0.05  # family-wise false-alarm rate of the profile's checks (see z_limit)
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
        for split, (split_bands, mean, sd) in zip(out["splits"], bands, strict=True):
            for p, b, mu, sg in zip(split["points"], split_bands, mean, sd, strict=True):
                p["band"] = [float(b[0]), float(b[1])]
                p["z"] = float((p["rel_error"] - mu) / sg) if sg > 0 else None
        out["noise"] = {"sigma": float(np.sqrt(np.mean(sig**2))), "sims": int(sims),
                        "seed": int(seed)}
        out["outside_band"] = sum(not p["band"][0] <= p["rel_error"] <= p["band"][1]
                                  for s in out["splits"] for p in s["points"])
    z_max = _z_max(out["splits"])
    for split in out["splits"]:
        for p in split["points"]:
            p["verdict"] = point_verdict(p, tolerance, z_max)
    out.update(trust_horizon(out["splits"], tolerance))
    return out


def _noise_bands(law: Law, Xa: np.ndarray, yv: np.ndarray, w: np.ndarray | None,
                 sig: np.ndarray, truth: Law, fits: list[tuple[int, Law]], groups: np.ndarray,
                 sims: int, seed: int, level: float
                 ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per split, per larger size: the [lo, hi] range (at `level`) of the profile's error over
    `sims` synthetic ladders (truth plus noise sig in log L), each refitted like the real one,
    and the mean and sd of those errors (for the check's z-score)."""
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
        bands.append((np.quantile(per_size, q, axis=0).T, per_size.mean(0), per_size.std(0)))
    return bands


def z_limit(n_checks: int, alpha: float = ALPHA) -> float:
    """The |z| beyond which a check's error is more than noise, at a family-wise false-alarm
    rate `alpha` over the profile's n_checks checks (Bonferroni, two-sided). Judged check by
    check at 95%, an exact law under 2% noise was called a failure on 4 of 8 synthetic
    ladders: ten checks a profile, each with its own 5% chance."""
    return float(NormalDist().inv_cdf(1 - alpha / (2 * max(n_checks, 1))))


def point_verdict(point: dict[str, Any], tolerance: float, z_max: float | None = None) -> str:
    """"within", "fail" or "noise" for one profile check (see the module docstring); `z_max`
    (from `z_limit`) judges an untestable check by its z-score, else by its band."""
    err = point["rel_error"]
    band = point.get("band")
    testable = band is None or band[1] - band[0] <= 2 * tolerance
    if testable:
        return "within" if abs(err) <= tolerance else "fail"
    z = point.get("z")
    beyond_noise = (abs(z) > z_max if z is not None and z_max is not None
                    else not band[0] <= err <= band[1])
    return "fail" if abs(err) > tolerance and beyond_noise else "noise"


def _z_max(splits: list[dict[str, Any]]) -> float:
    return z_limit(sum(p.get("z") is not None for s in splits for p in s["points"]))


def trust_horizon(splits: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """{horizon, max_ratio, failed, noisy} of profile splits (see the module docstring).

    failed: the smallest ratio at which some split's check failed, with its error and the split
    (its max_fit_x); None when none did. A split counts from its first failure: a later return
    within tolerance does not restore trust. noisy: the checks too noisy to tell, each {ratio,
    x, rel_error, band, max_fit_x}, in the order of their ratio; they neither extend nor cut the
    horizon.
    """
    fail, failed = math.inf, None
    within, noisy = [], []
    z_max = _z_max(splits)
    for s in splits:
        for p in sorted(s["points"], key=lambda p: p["ratio"]):
            verdict = point_verdict(p, tolerance, z_max)
            if verdict == "within":
                within.append(p["ratio"])
            elif verdict == "noise":
                noisy.append({"ratio": p["ratio"], "x": p.get("x"), "rel_error": p["rel_error"],
                              "band": p.get("band"), "max_fit_x": s["max_fit_x"]})
            else:
                if p["ratio"] < fail:
                    fail = p["ratio"]
                    failed = {"ratio": p["ratio"], "rel_error": p["rel_error"],
                              "max_fit_x": s["max_fit_x"], "band": p.get("band")}
                break
    all_ratios = [p["ratio"] for s in splits for p in s["points"]]
    # Splits of a geometric ladder meet the same ratios, equal but for rounding.
    ok = [r for r in within if r < fail * (1 - RATIO_RTOL)]
    noisy = sorted((n for n in noisy if n["ratio"] < fail * (1 - RATIO_RTOL)),
                   key=lambda n: n["ratio"])
    return {"horizon": max(ok) if ok else None,
            "max_ratio": max(all_ratios) if all_ratios else None, "failed": failed,
            "noisy": noisy}


def fmt_ratio(r: float) -> str:
    """2.2×, 6.4×, 12×, 150×."""
    return f"{r:.2g}×" if r < 10 else f"{r:.0f}×"


def _noisy_text(n: dict[str, Any]) -> str:
    """One too-noisy check: its error, its band, and where more seeds would narrow it."""
    band = n.get("band") or [math.nan, math.nan]
    return (f"{100 * n['rel_error']:+.1f}% at {fmt_ratio(n['ratio'])} lies inside its noise band "
            f"[{100 * band[0]:+.1f}%, {100 * band[1]:+.1f}%]: add seeds at the sizes up to "
            f"{fmt_count(n['max_fit_x'])} and at {fmt_count(n.get('x'))}")


def horizon_text(profile: dict[str, Any] | None) -> str:
    """The trust horizon in words, e.g. "within 2% up to 3× beyond the fitted range; no evidence
    beyond", "within 2% up to 2.2× beyond the fitted range; too noisy to tell beyond: ..."."""
    if not profile or not profile.get("splits"):
        why = (profile or {}).get("skipped") or "the ladder is too short"
        return f"no extrapolation profile: {why}"
    tol = f"{100 * profile['tolerance']:g}%"
    h, failed = profile.get("horizon"), profile.get("failed")
    noisy = profile.get("noisy") or []
    if h is None and failed is None and noisy:
        return (f"too noisy to tell within {tol} even at {fmt_ratio(noisy[0]['ratio'])} beyond "
                f"the fitted range: {_noisy_text(noisy[0])}")
    if h is None:
        noise = ", beyond its noise" if failed.get("band") is not None else ""
        return (f"not within {tol} even at {fmt_ratio(failed['ratio'])} beyond the fitted range "
                f"({100 * failed['rel_error']:+.1f}%{noise})")
    fmt = fmt_ratio
    if failed is not None and fmt(h) == fmt(failed["ratio"]):  # 1.68× and 1.72×: say so
        def fmt(r: float) -> str:
            return f"{r:.3g}×"
    text = f"within {tol} up to {fmt(h)} beyond the fitted range"
    beyond = [n for n in noisy if n["ratio"] > h * (1 + RATIO_RTOL)]
    inside = [n for n in noisy if n["ratio"] <= h * (1 + RATIO_RTOL)]
    if failed is not None:
        text += f"; {100 * failed['rel_error']:+.1f}% at {fmt(failed['ratio'])}"
        if failed.get("band") is not None:
            text += ", beyond its noise"
    elif beyond:
        text += f"; too noisy to tell beyond: {_noisy_text(beyond[0])}"
    else:
        text += "; no evidence beyond"
    if inside:
        text += f" ({len(inside)} nearer check{'s' if len(inside) > 1 else ''} too noisy to tell)"
    return text


def profile_rows(profile: dict[str, Any]) -> list[dict[str, Any]]:
    """One summary per split, for tables: max_fit_x, n_fit, n_points, predicts (sizes),
    max_ratio, next / largest (the error at the nearest and at the largest size predicted, with
    its band), mean_error, worst (the largest |error|), within (the largest ratio up to which
    this split stayed within tolerance on checks that could test it, None if not even its
    first), first_verdict (its nearest check's verdict); `within_text` says `within` in words."""
    tol = profile["tolerance"]
    rows = []
    for s in profile["splits"]:
        pts = sorted(s["points"], key=lambda p: p["ratio"])
        within, first = None, None
        z_max = _z_max(profile["splits"])
        for p in pts:
            verdict = point_verdict(p, tol, z_max)
            first = first or verdict
            if verdict == "fail":
                break
            if verdict == "within":
                within = p["ratio"]
        rows.append({"max_fit_x": s["max_fit_x"], "n_fit": s["n_fit"],
                     "n_points": s["n_points"], "predicts": len(pts),
                     "max_ratio": pts[-1]["ratio"], "next": pts[0], "largest": pts[-1],
                     "mean_error": float(np.mean([p["rel_error"] for p in pts])),
                     "worst": max(pts, key=lambda p: abs(p["rel_error"])), "within": within,
                     "first_verdict": first})
    return rows


def within_text(row: dict[str, Any]) -> str:
    """A profile row's reach in words, for tables: "6.4×", "too noisy at the first", "not at
    the first"."""
    if row["within"] is not None:
        return fmt_ratio(row["within"])
    return "too noisy at the first" if row.get("first_verdict") == "noise" else "not at the first"
