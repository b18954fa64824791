"""Fit a law: robust log-space objective, a grid of starts in one batch, bootstrap intervals.

`Law` follows scikit-learn's habits: settings in the constructor, `fit(X, y)`, `predict(X)`,
fitted attributes with a trailing underscore, and `summary()` for a JSON-ready record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy.optimize import minimize

from scalelab.errors import UserError
from scalelab.laws.forms import Form, get_form
from scalelab.laws.groups import n_distinct, point_ids
from scalelab.laws.objective import Objective
from scalelab.laws.optim import batched_lbfgs

SAME_OPTIMUM_RTOL = 1e-5  # starts whose objective is this close to the best reached the optimum
SAME_OPTIMUM_ATOL = 1e-8  # ... or this close in absolute terms (the grid stops at ~2e-9 steps)
DISAGREE_RTOL = 1e-2  # ... and "disagree" when their parameters still differ by more than this


class Prediction(NamedTuple):
    """Point prediction of L and, when the law was bootstrapped, an interval at `level`."""

    point: np.ndarray
    lo: np.ndarray | None
    hi: np.ndarray | None
    level: float


@dataclass
class MultiStart:
    theta: np.ndarray  # best optimum (after polishing)
    objective: float
    candidates: np.ndarray  # distinct local optima, best first (warm starts for the bootstrap)
    starts: dict[str, Any]  # what the starts did: counts, agreement


def as_inputs(X: Any, form: Form, names: tuple[str, ...] | None = None) -> np.ndarray:
    """X as a positive, finite (n, k) float array; UserError with one clear line otherwise."""
    names = names or form.roles
    try:
        arr = np.asarray(X, dtype=float)
    except (TypeError, ValueError):
        raise UserError("inputs must be numbers") from None
    if arr.ndim == 1 and form.n_inputs == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != form.n_inputs:
        raise UserError(f"law {form.name!r} takes {form.n_inputs} input column(s) "
                        f"({', '.join(form.roles)}), got shape {arr.shape}")
    for j, name in enumerate(names):
        _check_positive(arr[:, j], name)
    return arr


def _check_positive(v: np.ndarray, name: str) -> None:
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise UserError(f"{name} has a missing or non-finite value ({v[bad[0]]}) at row {bad[0]}")
    bad = np.flatnonzero(v <= 0)
    if bad.size:
        raise UserError(f"{name} must be positive; row {bad[0]} has {v[bad[0]]:g}")


def check_fit_data(X: np.ndarray, y: Any, form: Form, names: tuple[str, ...], y_name: str):
    """Validate a training set: values, enough points, more than one distinct value per input."""
    try:
        yv = np.asarray(y, dtype=float).ravel()
    except (TypeError, ValueError):
        raise UserError(f"{y_name} must be numbers") from None
    if len(yv) != len(X):
        raise UserError(f"{len(X)} input rows but {len(yv)} values of {y_name}")
    _check_positive(yv, y_name)
    if len(yv) < form.n_params:
        raise UserError(f"law {form.name!r} has {form.n_params} parameters but only "
                        f"{len(yv)} points were given; need at least {form.n_params}")
    for j, name in enumerate(names):
        if np.unique(X[:, j]).size < 2:
            raise UserError(f"all points have the same {name} ({X[0, j]:g}); "
                            f"a law in {name} needs at least 2 distinct values")
    return yv


def check_weights(w: Any, n: int) -> np.ndarray | None:
    """Per-run weights as a positive, finite (n,) array (None stays None)."""
    if w is None:
        return None
    try:
        arr = np.asarray(w, dtype=float).ravel()
    except (TypeError, ValueError):
        raise UserError("sample weights must be numbers") from None
    if arr.shape != (n,):
        raise UserError(f"{n} runs but {arr.size} sample weights")
    if not np.all(np.isfinite(arr) & (arr > 0)):
        raise UserError("sample weights must be positive and finite")
    return arr


def _distinct(theta: np.ndarray, f: np.ndarray, k: int, tol: float = 1e-3) -> np.ndarray:
    """Indices of up to k results with distinct parameters, best objective first."""
    picked: list[int] = []
    for i in np.argsort(f):
        if not np.isfinite(f[i]):
            break
        if all(np.max(np.abs(theta[i] - theta[j])) > tol for j in picked):
            picked.append(int(i))
            if len(picked) == k:
                break
    return np.array(picked, dtype=int)


def _polish(obj: Objective, theta: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """SciPy L-BFGS-B from one point with tight tolerances: the last digits of the optimum."""
    res = minimize(obj.scalar, theta, jac=True, method="L-BFGS-B",
                   bounds=list(zip(lo, hi, strict=True)),
                   options={"ftol": 1e-15, "gtol": 1e-11, "maxiter": 5000})
    f0 = obj.scalar(theta)[0]
    if not res.fun < f0:  # keep the batched result unless SciPy improved on it
        return theta, f0
    return np.clip(res.x, lo, hi), float(res.fun)


def start_agreement(form: Form, f_batch: np.ndarray, converged: np.ndarray,
                    thetas: np.ndarray, fs: np.ndarray) -> dict[str, Any]:
    """Did the starts agree on the optimum?

    `f_batch` are the objectives every start reached; `thetas`, `fs` the polished distinct
    optima, best first. The starts disagree when another polished optimum is as good as the best
    (objective within SAME_OPTIMUM_RTOL) but has different parameters (> DISAGREE_RTOL).
    """
    best = float(fs[0])
    tol = max(SAME_OPTIMUM_RTOL * abs(best), SAME_OPTIMUM_ATOL)
    nat = form.to_params(thetas)
    rel = np.abs(nat - nat[0]) / np.maximum(np.abs(nat[0]), 1e-12)
    rivals = (fs <= best + tol) & (rel.max(1) > DISAGREE_RTOL)
    runner = int(np.argmax(rel.max(1) > DISAGREE_RTOL)) if np.any(rel.max(1) > DISAGREE_RTOL) else 0
    return {
        "n": int(len(f_batch)),
        "converged": int(converged.sum()),
        "reached_best": int(np.sum(np.isfinite(f_batch) & (f_batch <= best + tol))),
        "disagree": bool(rivals.any()),
        "runner_up": None if runner == 0 else {
            "objective": float(fs[runner]),
            "params": dict(zip(form.param_names, map(float, nat[runner]), strict=True)),
        },
    }


def _rows(weights: np.ndarray | None, n_rows: int) -> np.ndarray | None:
    """Per-run weights as the (rows, n) array the objective takes (a view, no copy)."""
    return None if weights is None else np.broadcast_to(weights, (n_rows, len(weights)))


def fit_multistart(form: Form, Z: np.ndarray, ly: np.ndarray, *, loss: str = "huber",
                   delta: float = 1e-3, grid: np.ndarray | None = None, polish: int = 5,
                   keep: int = 3, weights: np.ndarray | None = None) -> MultiStart:
    """Batched L-BFGS from every grid start; then the best `polish` distinct optima refined.

    The grid runs with SciPy's default stopping rules (like the reference procedure); the few
    best results are then refined with tight tolerances in one batch, and the best of those is
    finished with SciPy's L-BFGS-B as an independent check of the last digits. `weights`
    (per run, or None for 1 each) multiply each run's term of the objective.
    """
    lo, hi = form.bounds(Z, ly)
    starts = form.grid(Z, ly) if grid is None else np.atleast_2d(np.asarray(grid, float))
    obj = Objective(form, Z, ly, loss=loss, delta=delta, weights=_rows(weights, len(starts)))
    res = batched_lbfgs(obj, starts, lo, hi, max_iter=300)
    top = _distinct(res.x, res.f, max(polish, keep, 1))
    ref = batched_lbfgs(obj, res.x[top], lo, hi, ftol=1e-15, gtol=1e-11, max_iter=2000)
    thetas, fs = ref.x, ref.f
    best = int(np.argmin(fs))
    thetas[best], fs[best] = _polish(obj, thetas[best], lo, hi)
    order = np.argsort(fs)
    distinct = order[_distinct(thetas[order], fs[order], len(fs))]
    thetas, fs = thetas[distinct], fs[distinct]
    return MultiStart(theta=thetas[0], objective=float(fs[0]), candidates=thetas[:keep],
                      starts=start_agreement(form, res.f, res.converged, thetas, fs))


def _two_stage(rng: np.random.Generator, members: list[np.ndarray],
               k: int) -> list[np.ndarray]:
    """k resamples as run indices: as many sizes as there are, drawn with replacement, then
    within each drawn size as many of its runs as it has, drawn with replacement."""
    picks = rng.integers(0, len(members), size=(k, len(members)))
    return [np.concatenate([members[g][rng.integers(0, len(members[g]), size=len(members[g]))]
                            for g in row]) for row in picks]


def resample_weights(Z: np.ndarray, n_params: int, B: int, seed: int,
                     groups: np.ndarray | None = None) -> np.ndarray:
    """(B, n) bootstrap counts over runs; resamples too degenerate to fit are redrawn.

    A resample needs at least 2 distinct values of each input and as many distinct points as
    the law has parameters (or all of them, if there are fewer), else the law is not identified.

    `groups` (a size id per run, numbered by first appearance) makes it a two-stage bootstrap:
    draw as many sizes as there are, with replacement, then within each drawn size as many of
    its runs (seeds, folds) as it has, with replacement; so the intervals carry both the
    scatter of sizes about the law and the seed noise within a size. Without groups, or when
    every size has one run, it resamples runs (the same draws as before sizes were grouped).
    """
    rng = np.random.default_rng(seed)
    n = len(Z)
    point_id = np.unique(Z, axis=0, return_inverse=True)[1].ravel()
    col_ids = [np.unique(Z[:, j], return_inverse=True)[1].ravel() for j in range(Z.shape[1])]
    need = min(n_params, point_id.max() + 1)
    members = None
    if groups is not None and np.bincount(groups).max() > 1:
        members = [np.flatnonzero(groups == g) for g in range(groups.max() + 1)]
    W = np.zeros((B, n))
    todo = np.arange(B)
    for _ in range(50):
        if members is None:
            idx = list(rng.integers(0, n, size=(len(todo), n)))
        else:
            idx = _two_stage(rng, members, len(todo))
        ok = np.array([np.unique(point_id[r]).size >= need
                       and all(np.unique(c[r]).size >= 2 for c in col_ids) for r in idx])
        for row, r, good in zip(todo, idx, ok, strict=True):
            if good:
                W[row] = np.bincount(r, minlength=n)
        todo = todo[~ok]
        if todo.size == 0:
            break
    for row in todo:  # give up on rare degenerate draws: use the data as is
        W[row] = 1.0
    return W


def bootstrap_thetas(form: Form, Z: np.ndarray, ly: np.ndarray, starts: np.ndarray, B: int, *,
                     seed: int = 0, loss: str = "huber", delta: float = 1e-3,
                     weights: np.ndarray | None = None,
                     groups: np.ndarray | None = None) -> np.ndarray:
    """Refit on B resamples of the runs, all at once; (B, P) thetas, one optimum per resample.

    Each resample starts from the few distinct optima of the full fit and keeps its best.
    `weights` (per run) multiply the resampling counts; `groups` resample sizes, then runs
    within each size (`resample_weights`).
    """
    lo, hi = form.bounds(Z, ly)
    k = len(starts)
    W = resample_weights(Z, form.n_params, B, seed, groups)
    if weights is not None:
        W = W * weights
    W = np.repeat(W, k, axis=0)
    obj = Objective(form, Z, ly, loss=loss, delta=delta, weights=W)
    # Tolerances far below SciPy's defaults: the objective is ~1e-3 in size, and a resample's
    # optimum is only ever a small move from the start, which loose tests would stop short of.
    res = batched_lbfgs(obj, np.tile(starts, (B, 1)), lo, hi, ftol=1e-14, gtol=1e-9)
    f = np.where(np.isfinite(res.f), res.f, np.inf).reshape(B, k)
    return res.x.reshape(B, k, -1)[np.arange(B), f.argmin(1)]


def on_bound(form: Form, theta: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[str]:
    """Names of parameters that ended on a bound of the box (their value is not an estimate)."""
    tol = 1e-6 * np.maximum(1.0, np.maximum(np.abs(lo), np.abs(hi)))
    hit = (theta <= lo + tol) | (theta >= hi - tol)
    return [n for n, h in zip(form.param_names, hit, strict=True) if h]


class Law:
    """A scaling law to fit, e.g. ``Law("chinchilla").fit(X, y).predict([[7e10, 1.4e12]])``.

    Settings: `form` (power, chinchilla, kaplan, bnsl), `loss` ("huber" on log residuals with
    `delta`, or "lsq"), `grid` (starts in the fitting parameterization; default: the form's
    grid), `bootstrap` (resamples, 0 for none), `level` (interval coverage), `seed`,
    `resample` ("runs": the bootstrap resamples runs; "sizes": it resamples sizes, then the
    runs (seeds) within each size, see `resample_weights`).
    """

    def __init__(self, form: str = "power", *, loss: str = "huber", delta: float = 1e-3,
                 grid: np.ndarray | None = None, bootstrap: int = 1000, level: float = 0.95,
                 seed: int = 0, polish: int = 5, x_names: tuple[str, ...] | None = None,
                 y_name: str = "loss", resample: str = "runs"):
        if resample not in ("runs", "sizes"):
            raise UserError(f"resample must be 'runs' or 'sizes', not {resample!r}")
        self.form, self.loss, self.delta, self.grid = form, loss, delta, grid
        self.bootstrap, self.level, self.seed, self.polish = bootstrap, level, seed, polish
        self.x_names, self.y_name, self.resample = x_names, y_name, resample

    def get_params(self) -> dict[str, Any]:
        keys = ("loss", "delta", "grid", "bootstrap", "level", "seed", "polish", "x_names",
                "y_name", "resample")
        return {"form": self.form, **{k: getattr(self, k) for k in keys}}

    def clone(self, **overrides: Any) -> Law:
        """An unfitted copy with the same settings (some overridden)."""
        return Law(**{**self.get_params(), **overrides})

    @property
    def form_(self) -> Form:
        return get_form(self.form)

    def _names(self) -> tuple[str, ...]:
        return tuple(self.x_names) if self.x_names else self.form_.roles

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Law:
        """Fit to runs X (n, k), y (n,); `sample_weight` (n,) weighs each run's term of the
        objective (the study weighs each size by its seed noise; default 1 each)."""
        form = self.form_
        names = self._names()
        Xa = as_inputs(X, form, names)
        yv = check_fit_data(Xa, y, form, names, self.y_name)
        w = check_weights(sample_weight, len(yv))
        Z, ly = np.log(Xa), np.log(yv)
        ms = fit_multistart(form, Z, ly, loss=self.loss, delta=self.delta, grid=self.grid,
                            polish=self.polish, weights=w)
        lo, hi = form.bounds(Z, ly)
        self.theta_, self.objective_, self.starts_ = ms.theta, ms.objective, ms.starts
        self.params_ = dict(zip(form.param_names, map(float, form.to_params(ms.theta)),
                                strict=True))
        self.bounds_ = (lo, hi)
        self.on_bound_ = on_bound(form, ms.theta, lo, hi)
        self.n_points_ = len(yv)
        # Degrees of freedom: distinct points (seed repeats of a size are one) less parameters.
        self.dof_ = n_distinct(Xa) - form.n_params
        self.weighted_ = w is not None
        self.bootstrap_theta_ = None
        # Resampling n <= P distinct points gives the same exact fit every time: no interval.
        if self.bootstrap and np.unique(Z, axis=0).shape[0] > form.n_params:
            groups = point_ids(Xa[:, :1]) if self.resample == "sizes" else None
            self.bootstrap_theta_ = bootstrap_thetas(form, Z, ly, ms.candidates, self.bootstrap,
                                                     seed=self.seed, loss=self.loss,
                                                     delta=self.delta, weights=w, groups=groups)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "theta_"):
            raise UserError("this law is not fitted yet; call fit(X, y) first")

    @property
    def bootstrap_params_(self) -> np.ndarray | None:
        """(B, P) natural parameters of the bootstrap refits, or None."""
        b = getattr(self, "bootstrap_theta_", None)
        return None if b is None else self.form_.to_params(b)

    def intervals(self, level: float | None = None) -> dict[str, list[float] | None]:
        """Percentile bootstrap interval of each parameter (None without a bootstrap)."""
        self._check_fitted()
        samples = self.bootstrap_params_
        if samples is None or len(samples) < 2:
            return {n: None for n in self.form_.param_names}
        q = _quantiles(level or self.level)
        lo_hi = np.quantile(samples, q, axis=0)
        return {n: [float(lo_hi[0, j]), float(lo_hi[1, j])]
                for j, n in enumerate(self.form_.param_names)}

    def predict(self, X: Any, level: float | None = None) -> Prediction:
        """L at X: the point prediction and, with a bootstrap, the percentile interval."""
        self._check_fitted()
        form = self.form_
        Z = np.log(as_inputs(X, form, self._names()))
        point = form.predict(self.theta_, Z)[0]
        lvl = level or self.level
        if self.bootstrap_theta_ is None or len(self.bootstrap_theta_) < 2:
            return Prediction(point, None, None, lvl)
        samples = form.predict(self.bootstrap_theta_, Z)
        lo, hi = np.quantile(samples, _quantiles(lvl), axis=0)
        return Prediction(point, lo, hi, lvl)

    def summary(self, max_samples: int | None = None) -> dict[str, Any]:
        """JSON-ready record of the fit (the `fit.json` schema, holdout filled in by callers)."""
        self._check_fitted()
        form = self.form_
        names = list(self._names())
        out: dict[str, Any] = {
            "law": form.name,
            "formula": form.formula,
            "x": names[0] if len(names) == 1 else names,
            "y": self.y_name,
            "n_points": self.n_points_,
            "params": dict(self.params_),
            "intervals": self.intervals(),
            "level": self.level,
            "objective": self.objective_,
            "fit_loss": {"kind": self.loss,
                         "delta": self.delta if self.loss == "huber" else None},
            "on_bound": list(self.on_bound_),
            "starts": self.starts_,
            "dof": self.dof_,
            "flags": ["zero_dof"] if self.dof_ is not None and self.dof_ <= 0 else [],
            "holdout": None,
            "bootstrap": {"n": 0 if self.bootstrap_theta_ is None else len(self.bootstrap_theta_),
                          "seed": self.seed, "resample": self.resample},
        }
        samples = self.bootstrap_params_
        if samples is not None:
            samples = samples[:max_samples] if max_samples else samples
            out["bootstrap_params"] = {
                n: [float(f"{v:.7g}") for v in samples[:, j]]
                for j, n in enumerate(form.param_names)
            }
        return out

    @classmethod
    def from_summary(cls, d: dict[str, Any]) -> Law:
        """A fitted law back from `summary()` (e.g. fit.json), ready to predict."""
        try:
            form = get_form(str(d["law"]))
            params = np.array([float(d["params"][n]) for n in form.param_names])
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"not a fit record: missing or bad {err}") from None
        x = d.get("x")
        law = cls(form.name, bootstrap=0, level=float(d.get("level") or 0.95),
                  x_names=tuple([x] if isinstance(x, str) else x) if x else None,
                  y_name=str(d.get("y") or "loss"))
        law.theta_ = form.from_params(params)
        law.params_ = dict(zip(form.param_names, map(float, params), strict=True))
        law.objective_ = d.get("objective")
        law.starts_ = d.get("starts")
        law.on_bound_ = list(d.get("on_bound") or [])
        law.n_points_ = d.get("n_points")
        law.dof_ = d.get("dof")
        law.weighted_ = False
        law.bootstrap_theta_ = None
        bp = d.get("bootstrap_params")
        if bp:
            samples = np.column_stack([np.asarray(bp[n], dtype=float) for n in form.param_names])
            law.bootstrap_theta_ = form.from_params(samples)
        return law


def _quantiles(level: float) -> list[float]:
    if not 0 < level < 1:
        raise UserError(f"interval level must be between 0 and 1, got {level}")
    return [(1 - level) / 2, (1 + level) / 2]
