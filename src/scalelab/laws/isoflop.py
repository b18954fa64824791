"""IsoFLOP profiles (Approach 2 of Hoffmann et al. 2022) and the measured cost of a unit of D.

Every rung of an IsoFLOP budget C spends the same compute on a different split between size and
data. Loss against log N along one budget is close to a parabola near its minimum; its vertex is
that budget's compute-optimal size N*(C), D*(C) = C / f(N*) and its value the best loss L*(C).
Across budgets N* ∝ C^a and D* ∝ C^b.

Intervals come from a parametric bootstrap: every rung's loss redrawn as the parabola's value
times exp(sigma·z), sigma the relative noise pooled over the residuals of every budget's
parabola (each has n - 3 degrees of freedom; with none left, the caller's fallback, the law's
residual noise), and every parabola and both exponent fits refitted per draw. Resampling the
rungs themselves would leave 3 or 4 points per parabola: too few to redraw. A sigma estimated
from a few degrees of freedom is itself uncertain (8 of them can miss by 30%), so each draw
uses its own sigma, drawn as sigma·sqrt(dof / chi2(dof)): the intervals widen like Student's t
rather than trusting the estimate.

`FlopsPerUnit` is f(N), the FLOPs one unit of D costs a model of N parameters, read off the
rungs (measured FLOPs / D) rather than assumed to be 6·N.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from scalelab.laws.fit import _quantiles
from scalelab.laws.groups import size_groups

MIN_POINTS = 3  # a parabola has 3 coefficients
UNSTABLE_SHARE = 0.1  # more bootstrap draws than this without a minimum: say so


@dataclass(frozen=True)
class FlopsPerUnit:
    """f(N) = k(N)·N, the training FLOPs per unit of D at size N.

    k(N) = flops / (N·D) per size (the geometric mean over its rungs), interpolated linearly in
    log N between sizes and held at its end values beyond them (extrapolating a slope fitted
    to a few small models would be a guess). Without measured FLOPs k = 6 (C = 6·N·D).
    """

    n: tuple[float, ...]
    k: tuple[float, ...]
    source: str  # "measured" or "6ND"

    @classmethod
    def from_runs(cls, n: np.ndarray, d: np.ndarray, flops: np.ndarray) -> FlopsPerUnit:
        ok = np.isfinite(flops) & (flops > 0)
        if not ok.any():
            return cls((1.0,), (6.0,), "6ND")
        n, lk = n[ok], np.log(flops[ok] / (n[ok] * d[ok]))
        groups = size_groups(n)
        sizes = [float(np.exp(np.log(n[groups == g]).mean())) for g in range(groups.max() + 1)]
        ks = [float(np.exp(lk[groups == g].mean())) for g in range(groups.max() + 1)]
        return cls(tuple(sizes), tuple(ks), "measured")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FlopsPerUnit:
        if not data:
            return cls((1.0,), (6.0,), "6ND")
        return cls(tuple(map(float, data["n"])), tuple(map(float, data["k"])),
                   str(data.get("source") or "measured"))

    def to_dict(self) -> dict[str, Any]:
        return {"n": list(self.n), "k": list(self.k), "source": self.source}

    def k_at(self, n: Any) -> np.ndarray:
        n = np.asarray(n, dtype=float)
        lk = np.interp(np.log(n).ravel(), np.log(self.n), np.log(self.k))
        return np.exp(lk).reshape(n.shape)

    def __call__(self, n: Any) -> np.ndarray:
        n = np.asarray(n, dtype=float)
        return self.k_at(n) * n


def budget_groups(budget: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """(C, row indices) per IsoFLOP budget, smallest first; rows without a budget are left out.
    Budgets within 1% are one (a budget read back from JSON may differ in the last digits)."""
    have = np.flatnonzero(np.isfinite(budget))
    if have.size == 0:
        return []
    groups = size_groups(budget[have])
    return [(float(np.median(budget[have][groups == g])), have[groups == g])
            for g in range(groups.max() + 1)]


def _parabolas(u: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Least-squares y = c2·v² + c1·v + c0, v = u - mean(u), for rows of y (B, n) at once.
    Returns c2, c1, c0 (B,) and the centre mean(u) (centring keeps the fit well conditioned)."""
    centre = float(u.mean())
    v = u - centre
    pinv = np.linalg.pinv(np.column_stack([v**2, v, np.ones_like(v)]))
    coef = np.atleast_2d(y) @ pinv.T
    return coef[:, 0], coef[:, 1], coef[:, 2], centre


def _vertex(c2: np.ndarray, c1: np.ndarray, c0: np.ndarray,
            centre: float) -> tuple[np.ndarray, np.ndarray]:
    """(log N*, L*) of each parabola; NaN where it opens downward (no minimum)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        up = c2 > 0
        u = np.where(up, centre - c1 / (2 * c2), np.nan)
        loss = np.where(up, c0 - c1**2 / (4 * c2), np.nan)
    return u, loss


def _interval(samples: np.ndarray, level: float) -> list[float] | None:
    s = samples[np.isfinite(samples)]
    if s.size < 2:
        return None
    lo, hi = np.quantile(s, _quantiles(level))
    return [float(lo), float(hi)]


@dataclass
class _Budget:
    compute: float
    idx: np.ndarray
    u: np.ndarray  # log N of its rungs
    y: np.ndarray  # loss of its rungs
    fitted: np.ndarray  # the parabola's values at u


def _pooled_sigma(budgets: list[_Budget], fallback: float | None) -> tuple[float, int, str]:
    """Relative noise of the losses about their parabolas, pooled over budgets."""
    dof = sum(len(b.y) - MIN_POINTS for b in budgets)
    if dof > 0:
        ss = sum(float((np.log(b.y / b.fitted) ** 2).sum()) for b in budgets)
        return float(np.sqrt(ss / dof)), dof, "parabola residuals"
    return float(fallback or 0.0), 0, "law residuals (every parabola is exact)"


def _power_fit(log_c: np.ndarray, log_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slope and intercept of log y = intercept + slope·log C for rows of log_y (B, m)."""
    X = np.column_stack([log_c, np.ones_like(log_c)])
    coef = np.atleast_2d(log_y) @ np.linalg.pinv(X).T
    return coef[:, 0], coef[:, 1]


def _budget_record(b: _Budget, per_unit: FlopsPerUnit, n_rows: np.ndarray, d_rows: np.ndarray,
                   point: tuple[float, float], samples: tuple[np.ndarray, np.ndarray],
                   coef: tuple[float, float, float, float], level: float) -> dict[str, Any]:
    u_pt, l_pt = point
    u_s, l_s = samples
    n_s = np.exp(u_s)
    d_s = b.compute / per_unit(np.where(np.isfinite(n_s), n_s, 1.0))
    d_s = np.where(np.isfinite(n_s), d_s, np.nan)
    lo_n, hi_n = float(np.exp(b.u.min())), float(np.exp(b.u.max()))
    n_pt = float(np.exp(u_pt)) if np.isfinite(u_pt) else None
    best = int(np.argmin(b.y))
    return {
        "compute": b.compute, "n_points": int(len(b.y)), "n_range": [lo_n, hi_n],
        "N": n_pt, "N_interval": _interval(n_s, level),
        "D": None if n_pt is None else float(b.compute / per_unit(np.array([n_pt]))[0]),
        "D_interval": _interval(d_s, level), "tokens_per_param_interval": _interval(d_s / n_s,
                                                                                     level),
        "loss": float(l_pt) if np.isfinite(l_pt) else None, "loss_interval": _interval(l_s, level),
        "vertex_inside": n_pt is not None and lo_n <= n_pt <= hi_n,
        "no_vertex_share": float(np.mean(~np.isfinite(u_s))) if u_s.size else 0.0,
        "coef": [float(c) for c in coef[:3]], "centre": coef[3],
        "best_rung": {"N": float(n_rows[b.idx][best]), "D": float(d_rows[b.idx][best]),
                      "loss": float(b.y[best])},
        "points": [{"N": float(n), "D": float(d), "loss": float(y)}
                   for n, d, y in zip(n_rows[b.idx], d_rows[b.idx], b.y, strict=True)],
    }


def _exponent(log_c: np.ndarray, log_y: np.ndarray, log_y_s: np.ndarray,
              level: float) -> dict[str, Any]:
    """A power law y ∝ C^slope over budgets: point, interval and the joint samples."""
    slope, icpt = _power_fit(log_c, log_y[None, :])
    ok = np.isfinite(log_y_s).all(axis=1)
    s_slope, s_icpt = _power_fit(log_c, log_y_s[ok]) if ok.any() else (np.array([]),) * 2
    return {"value": float(slope[0]), "interval": _interval(s_slope, level),
            "intercept": float(icpt[0]), "draws_used": int(ok.sum()),
            "_samples": (s_icpt, s_slope)}


def isoflop_profiles(n: np.ndarray, d: np.ndarray, loss: np.ndarray, budget: np.ndarray,
                     per_unit: FlopsPerUnit, *, bootstrap: int = 1000, seed: int = 0,
                     level: float = 0.95, fallback_sigma: float | None = None
                     ) -> dict[str, Any]:
    """Approach 2 over the rungs of every IsoFLOP budget (see the module docstring).

    Returns {budgets: one record per budget with a parabola, skipped_budgets: [{compute,
    n_points, reason}], noise: {sigma, dof, source}, a, b (N* ∝ C^a, D* ∝ C^b: value,
    interval, intercept), loss_fit (L* ∝ C^slope, for extrapolation only), skipped: why there
    are no exponents (None when there are), samples: joint draws of the exponent fits}.
    """
    out: dict[str, Any] = {"budgets": [], "skipped_budgets": [], "noise": None, "a": None,
                           "b": None, "loss_fit": None, "skipped": None, "samples": None}
    budgets = []
    for c, idx in budget_groups(budget):
        if np.unique(size_groups(n[idx])).size < MIN_POINTS:
            out["skipped_budgets"].append({
                "compute": c, "n_points": int(len(idx)),
                "reason": f"{len(idx)} rung(s) at {np.unique(size_groups(n[idx])).size} "
                          f"size(s): a parabola needs {MIN_POINTS} sizes"})
            continue
        u, y = np.log(n[idx]), loss[idx]
        c2, c1, c0, centre = _parabolas(u, y)
        fitted = c2 * (u - centre) ** 2 + c1 * (u - centre) + c0
        budgets.append((_Budget(c, idx, u, y, fitted), (c2[0], c1[0], c0[0], centre)))
    if not budgets:
        out["skipped"] = "no IsoFLOP budget has rungs at 3 or more sizes"
        return out
    sigma, dof, source = _pooled_sigma([b for b, _ in budgets], fallback_sigma)
    out["noise"] = {"sigma": sigma, "dof": dof, "source": source}
    rng = np.random.default_rng(seed)
    B = max(int(bootstrap), 0)
    u_pts, l_pts, u_draws, l_draws = [], [], [], []
    sigmas = np.full((B, 1), sigma)
    if dof > 0:
        sigmas = sigma * np.sqrt(dof / rng.chisquare(dof, (B, 1)))
    for b, coef in budgets:
        u_pt, l_pt = _vertex(*(np.array([v]) for v in coef[:3]), coef[3])
        draws = b.fitted * np.exp(sigmas * rng.standard_normal((B, len(b.y))))
        u_s, l_s = _vertex(*_parabolas(b.u, draws))
        out["budgets"].append(_budget_record(b, per_unit, n, d, (u_pt[0], l_pt[0]),
                                             (u_s, l_s), coef, level))
        u_pts.append(u_pt[0])
        l_pts.append(l_pt[0])
        u_draws.append(u_s)
        l_draws.append(l_s)
    _fit_exponents(out, np.array(u_pts), np.array(l_pts), np.array(u_draws).T,
                   np.array(l_draws).T, per_unit, level)
    return out


def _fit_exponents(out: dict[str, Any], u_pt: np.ndarray, l_pt: np.ndarray, u_s: np.ndarray,
                   l_s: np.ndarray, per_unit: FlopsPerUnit, level: float) -> None:
    """N* ∝ C^a, D* ∝ C^b and L* ∝ C^slope over the budgets whose parabola has a minimum."""
    comp = np.array([r["compute"] for r in out["budgets"]])
    use = np.isfinite(u_pt)
    if use.sum() < 2:
        out["skipped"] = (f"{int(use.sum())} budget(s) with a parabola that has a minimum: "
                          "N* ∝ C^a needs 2 or more")
        return
    log_c = np.log(comp[use])
    ud, ld = u_s[:, use], l_s[:, use]
    log_d_pt = log_c - np.log(per_unit(np.exp(u_pt[use])))
    log_d_s = log_c - np.log(per_unit(np.exp(np.where(np.isfinite(ud), ud, 0.0))))
    log_d_s = np.where(np.isfinite(ud), log_d_s, np.nan)
    a = _exponent(log_c, u_pt[use], ud, level)
    b = _exponent(log_c, log_d_pt, log_d_s, level)
    lf = _exponent(log_c, np.log(l_pt[use]), np.log(np.where(ld > 0, ld, np.nan)), level)
    keep = 200  # joint draws kept in the record: enough for an interval when answering later
    out["samples"] = {name: {"intercept": [float(v) for v in e["_samples"][0][:keep]],
                             "slope": [float(v) for v in e["_samples"][1][:keep]]}
                      for name, e in (("N", a), ("loss", lf))}
    for e in (a, b, lf):
        e.pop("_samples")
    out["a"], out["b"], out["loss_fit"] = a, b, lf
    out["budgets_used"] = [float(c) for c in comp[use]]


def extrapolate(record: dict[str, Any], compute: np.ndarray, per_unit: FlopsPerUnit,
                level: float = 0.95) -> list[dict[str, Any]]:
    """N*, D*, L* at budgets from Approach 2's power laws in C (N* ∝ C^a, L* ∝ C^slope), with
    intervals from the stored joint draws. A pure power law in C has no floor E: beyond the
    budgets trained it is a rough guide, never the law."""
    rows = []
    a, lf, s = record["a"], record["loss_fit"], record.get("samples") or {}
    for c in np.atleast_1d(np.asarray(compute, dtype=float)):
        lc = np.log(c)
        n = float(np.exp(a["intercept"] + a["value"] * lc))
        row: dict[str, Any] = {"compute": float(c), "N": n,
                               "D": float(c / per_unit(np.array([n]))[0]),
                               "loss": float(np.exp(lf["intercept"] + lf["value"] * lc))}
        row["tokens_per_param"] = row["D"] / n
        row["intervals"] = None
        if s.get("N") and len(s["N"]["slope"]) > 1:
            ns = np.exp(np.array(s["N"]["intercept"]) + np.array(s["N"]["slope"]) * lc)
            ds = c / per_unit(ns)
            ls = np.exp(np.array(s["loss"]["intercept"]) + np.array(s["loss"]["slope"]) * lc)
            row["intervals"] = {"N": _interval(ns, level), "D": _interval(ds, level),
                                "tokens_per_param": _interval(ds / ns, level),
                                "loss": _interval(ls, level)}
        rows.append(row)
    return rows
