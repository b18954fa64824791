"""The study's own law: L(N) = E + A·N^-alpha over a ladder's finished rungs.

`fit_study_power` returns the record that goes into summary.json (and the report); it never
crashes on a short ladder, it says less instead. Points are distinct sizes (the seed repeats of
a size are one point):

- 4 points or more: fit, bootstrap intervals, and a holdout (fit all but the largest N, predict it;
  a `Holdout` record whose `largest()` is the largest rung's prediction and relative error);
  its noise model; from 5 points its extrapolation profile and trust horizon
  (`scalelab.laws.profile`: every split with more points than parameters, a larger size to
  predict), and predictions 10x and 100x beyond the largest rung, with a warning beyond the
  horizon.
- 3 points: fit (exactly determined), intervals None, holdout None, flagged "zero_dof".
- 2 points: a pure power law through both (E fixed at its bound 0, listed in on_bound),
  intervals None, holdout None, flagged "zero_dof".
- fewer, or a single distinct N: params None, intervals None, holdout None.

Seed repeats (several runs of one size) give the noise model (`scalelab.laws.noise`): the fit
weighs each run by 1/sigma of its size, and the bootstrap resamples sizes, then seeds within
each size. Without repeats every run weighs 1 and the noise is read off the residuals.

Rungs with a missing or non-finite loss (diverged) are left out; non-positive N or loss is a
UserError. E is bounded to [min(loss)/1000 (read: 0), min(loss)]: with ~6 small rungs it is
often poorly identified, and then it ends on a bound and is listed in on_bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fit import Law
from scalelab.laws.forms import Power
from scalelab.laws.groups import n_distinct
from scalelab.laws.noise import Noise, repeat_noise, residual_noise
from scalelab.laws.profile import (
    RATIO_RTOL,
    SIMS,
    TOLERANCE,
    extrapolation_profile,
    fmt_ratio,
)
from scalelab.laws.selection import one_axis_selection
from scalelab.laws.validate import holdout
from scalelab.records import FitRecord, Holdout

STORED_SAMPLES = 200  # bootstrap samples kept in the record: enough for a band, still small
BAND_POINTS = 60
NAMES = Power.param_names
FACTORS = (10.0, 100.0)  # predictions this many times the largest rung
ZERO_DOF = "zero_dof"


def _empty(x_name: str, params: dict[str, Any] | None = None,
           on_bound: list[str] | None = None, y_name: str = "val_loss") -> FitRecord:
    return FitRecord(law="power", x=x_name, y=y_name,
                     params=params or {n: None for n in NAMES},
                     intervals={n: None for n in NAMES}, level=0.95,
                     on_bound=on_bound or [], holdout=None)


def _clean(n: Sequence[float], loss: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([np.nan if v is None else v for v in n], dtype=float)
    y = np.array([np.nan if v is None else v for v in loss], dtype=float)
    if len(x) != len(y):
        raise UserError(f"{len(x)} values of N but {len(y)} losses")
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if np.any(~np.isfinite(x) | (x <= 0)) or np.any(y <= 0):
        raise UserError("N and loss must be positive numbers")
    return x, y


def _two_point(x: np.ndarray, y: np.ndarray, x_name: str, y_name: str) -> FitRecord:
    """Pure power law through two (mean) points: E = 0 sits on its bound."""
    xs = np.unique(x)
    ys = np.array([y[x == v].mean() for v in xs])
    alpha = -np.log(ys[-1] / ys[0]) / np.log(xs[-1] / xs[0])
    a = float(ys[0] * xs[0] ** alpha)
    return _empty(x_name, {"E": 0.0, "A": a, "alpha": float(alpha)}, ["E"], y_name)


def fit_study_power(n: Sequence[float], loss: Sequence[float], bootstrap: int = 1000,
                    seed: int = 0, x_name: str = "n_nonembed", y_name: str = "val_loss", *,
                    tolerance: float = TOLERANCE, sims: int = SIMS, weights: str = "noise",
                    law: str | None = None) -> dict[str, Any]:
    """Fit L(N) = E + A·N^-alpha to a ladder; the summary.json record (see module docstring).

    Returns `scalelab.records.FitRecord.to_dict()`: law, x, y, params {E, A, alpha}, intervals
    {name: [lo, hi] | None} (95%), level, on_bound, holdout (a `Holdout` record, rule
    "largest:1") | None, band {x, point, lo, hi, level} over the ladder's range and
    bootstrap_params {name: [...]} (at most 200 samples, for `predict_band`) when bootstrapped,
    else None; dof, flags, noise, profile (trust horizon at `tolerance`, noise bands from
    `sims` synthetic ladders) and predictions (see `FitRecord`). `y` is whatever was fitted
    (val_loss, or val_error for a classifier).

    Beside them: `weights` ("noise": each run weighed by its size's seed noise, the default;
    "equal": every run alike) and, from 4 sizes, `selection` {rule, selected, forced,
    on_evidence, margin} and `candidates` (every one-input law's inner and outer holdout,
    `laws.selection`): the selected law is the one fitted (power unless another wins the inner
    holdout on evidence; `law` forces one).
    """
    record, extras = _fit(n, loss, bootstrap, seed, x_name, y_name, tolerance, sims, weights,
                          law)
    return record.to_dict() | extras


def fit_study_record(n: Sequence[float], loss: Sequence[float], bootstrap: int = 1000,
                     seed: int = 0, x_name: str = "n_nonembed", y_name: str = "val_loss", *,
                     tolerance: float = TOLERANCE, sims: int = SIMS, weights: str = "noise",
                     law: str | None = None) -> FitRecord:
    """`fit_study_power` as a `FitRecord` (without `weights`, `selection` and `candidates`)."""
    return _fit(n, loss, bootstrap, seed, x_name, y_name, tolerance, sims, weights, law)[0]


def _select(x: np.ndarray, y: np.ndarray, w: np.ndarray | None, law: str | None,
            tolerance: float, enough: bool) -> tuple[str, dict[str, Any]]:
    """The law to fit and the `selection`, `candidates` keys (empty below 4 sizes)."""
    if not enough:
        return law or "power", {}
    sel = one_axis_selection(x, y, weights=w, forced=law, tolerance=tolerance)
    rows = sel.pop("candidates")
    return sel["selected"], {"selection": sel, "candidates": rows}


def _fit(n: Sequence[float], loss: Sequence[float], bootstrap: int, seed: int, x_name: str,
         y_name: str, tolerance: float, sims: int, weights: str,
         law_name: str | None) -> tuple[FitRecord, dict[str, Any]]:
    if weights not in ("noise", "equal"):
        raise UserError(f"weights must be noise or equal, not {weights!r}")
    x, y = _clean(n, loss)
    points = n_distinct(x[:, None]) if len(x) else 0
    extras: dict[str, Any] = {"weights": weights}
    if points < 2:
        return _empty(x_name, y_name=y_name), extras
    noise = repeat_noise(x, y)
    if points == 2:
        record = _two_point(x, y, x_name, y_name)  # 2 sizes, 3 parameters (E pinned at 0)
        record.dof, record.flags = 2 - len(NAMES), [ZERO_DOF]
        record.noise = None if noise is None else noise.record
        return record, extras
    w = None if noise is None or weights == "equal" else noise.weights
    enough = points >= 4
    form, chosen = _select(x, y, w, law_name, tolerance, enough)
    extras.update(chosen)
    law = Law(form, bootstrap=bootstrap if enough else 0, seed=seed, level=0.95,
              x_names=(x_name,), y_name=y_name, resample="sizes").fit(x, y, w)
    out = law.summary(max_samples=STORED_SAMPLES)
    record = _empty(x_name, out["params"], out["on_bound"], y_name)
    record.law = form
    record.intervals = out["intervals"]
    record.dof, record.flags = out["dof"], list(out["flags"])
    if noise is None and law.dof_ > 0:
        resid = np.log(law.predict(x).point) - np.log(y)
        noise = residual_noise(resid, law.form_.n_params)
    record.noise = None if noise is None else noise.record
    if "bootstrap_params" in out:
        record.bootstrap_params = out["bootstrap_params"]
        grid = np.geomspace(x.min() / 1.6, x.max() * 2.5, BAND_POINTS)
        point, lo, hi = predict_band(record.to_dict(), grid)
        record.band = {"x": grid.tolist(), "point": point.tolist(), "lo": lo.tolist(),
                       "hi": hi.tolist(), "level": 0.95}
    if enough:
        record.holdout = _holdout_largest(law, x, y, w)
    if law.dof_ > 0:
        record.profile = _profile(law, x, y, noise, w, tolerance, sims, seed)
        record.predictions = _predictions(law, float(x.max()), record.profile)
    return record, extras


def _profile(law: Law, x: np.ndarray, y: np.ndarray, noise: Noise | None,
             w: np.ndarray | None, tolerance: float, sims: int, seed: int) -> dict[str, Any]:
    return extrapolation_profile(law, x, y, tolerance=tolerance, sample_weight=w,
                                 sigma=None if noise is None else noise.sigma, truth=law,
                                 sims=sims, seed=seed)


def _predictions(law: Law, x_max: float, profile: dict[str, Any]) -> list[dict[str, Any]]:
    """The law at FACTORS times the largest rung, with its interval and, beyond the trust
    horizon, a plain warning."""
    h = profile.get("horizon")
    grid = np.array([f * x_max for f in FACTORS])
    pred = law.predict(grid)
    rows = []
    for i, f in enumerate(FACTORS):
        beyond = h is None or f > h * (1 + RATIO_RTOL)
        if not beyond:
            warning = None
        elif h is not None:
            warning = (f"beyond the trust horizon ({fmt_ratio(h)}): no evidence that the law "
                       "holds this far; the interval shows the fit's noise, not the error of "
                       "its form")
        elif profile.get("failed") is None and profile.get("noisy"):
            warning = ("the checks of the law were too noisy to tell whether it holds within "
                       f"{100 * profile['tolerance']:g}% (see its trust horizon): no evidence "
                       "that it holds this far")
        elif profile.get("splits"):
            warning = (f"the law was not within {100 * profile['tolerance']:g}% even at the "
                       "nearest extrapolation it was checked on: no evidence that it holds "
                       "this far")
        else:
            warning = ("no extrapolation profile (too few sizes): nothing checks the law this "
                       "far beyond the ladder")
        rows.append({"factor": f, "x": float(grid[i]), "predicted": float(pred.point[i]),
                     "lo": None if pred.lo is None else float(pred.lo[i]),
                     "hi": None if pred.hi is None else float(pred.hi[i]),
                     "level": pred.level, "beyond_horizon": beyond, "warning": warning})
    return rows


def _holdout_largest(law: Law, x: np.ndarray, y: np.ndarray,
                     weights: np.ndarray | None = None) -> Holdout | None:
    """Fit on all but the largest N, predict the largest: the law's own extrapolation check."""
    top = x == x.max()
    if np.unique(x[~top]).size < 3:
        return None
    return holdout(law, x, y, "largest:1", sample_weight=weights)


def predict_band(fit: dict[str, Any] | FitRecord, n_grid: Sequence[float],
                 level: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point, lo, hi) of a fit record's power law on n_grid; lo/hi are NaN without samples."""
    if isinstance(fit, FitRecord):
        fit = fit.to_dict()
    grid = np.asarray(n_grid, dtype=float)
    nan = np.full(grid.shape, np.nan)
    if any((fit.get("params") or {}).get(k) is None for k in NAMES):
        return nan, nan.copy(), nan.copy()
    pred = Law.from_summary(fit).predict(grid, level or float(fit.get("level") or 0.95))
    if pred.lo is None:
        return pred.point, nan, nan.copy()
    return pred.point, pred.lo, pred.hi
