"""One law engine for every source of runs: a study's rungs, a CSV, or rows from Python.

A study (`scalelab.study.fit_rungs`) and `scalelab fit` both come here, so the same runs give
the same record whichever way they arrive:

- `fit_ladder(rows, ...)`: a ladder's records as the study stores them: for a ladder in N alone,
  the power law of the loss (and of the error rate, for a classifier), its runs weighed by their
  seed noise (`laws.study`); for a two-axis ladder, the record of `laws.two_axis` (Approaches 2
  and 3, every candidate's inner and outer holdout, the answer).
- `two_axis_rows(path, ...)`: the runs of a CSV over N and D as the rows a study's rungs give
  (n_nonembed, D, val_loss, flops, budget), with IsoFLOP budgets from a column or recovered from
  the runs' compute (`recover_budgets`); `fit_ladder(rows, two_axis=True)` then fits them as a
  study's.

Rows are summary.json `rungs` rows (or store rows): status ("done" counts), n_nonembed, the
loss under `val_loss` (and `val_error`), and for two axes D, flops, budget, epochs and unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.data import Where, _read_csv, lowest
from scalelab.laws.groups import size_groups

MIN_POINTS_FOR_FIT = 3  # a ladder in N needs 3 finished sizes for any law (E, A, alpha)
WEIGHTS = ("noise", "equal")
BUDGET_SPAN = 1.25  # runs of one recovered budget lie within this factor of compute
BUDGET_GAP = 1.25  # ... and budgets lie at least this factor apart


def _finite_positive(v: Any) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return bool(np.isfinite(f) and f > 0)


def fit_ladder(rows: Sequence[dict[str, Any]], *, two_axis: bool, bootstrap: int = 1000,
               seed: int = 0, tolerance: float = 0.02, weights: str = "noise",
               holdout: str = "largest:1", law: str | None = None,
               compute: Sequence[float] | None = None, quiet: bool = True
               ) -> list[dict[str, Any]]:
    """The records of a ladder's laws (what the study stores in `fits`).

    In N alone: one record per quantity with `MIN_POINTS_FOR_FIT` finished runs (`val_loss`,
    then `val_error`), `laws.study.fit_study_power` with `weights` ("noise": each run by its
    size's seed noise, as the study does; "equal": every run alike) and `law` (None: chosen by
    the inner holdout). Over N and D: the one
    record of `laws.two_axis.fit_two_axis` (`holdout`, `law` and `compute` go to it), or none
    when its runs cannot give a law in N and D (the study stays `quiet`; otherwise the
    UserError of `fit_two_axis` says why in one line).
    """
    if weights not in WEIGHTS:
        raise UserError(f"weights must be one of {', '.join(WEIGHTS)}, not {weights!r}")
    if two_axis:
        from scalelab.laws.two_axis import fit_two_axis

        try:
            return [fit_two_axis(list(rows), bootstrap=bootstrap, seed=seed, tolerance=tolerance,
                                 holdout=holdout, law=law, compute=compute)]
        except UserError:
            # Too few finished rungs to fit (some diverged; the plan itself had enough): the
            # rungs are recorded and reported without a law, as a short N-only ladder is.
            if not quiet:
                raise
            return []
    from scalelab.laws.study import fit_study_power

    fits = []
    for key in ("val_loss", "val_error"):
        done = [r for r in rows if r.get("status", "done") == "done"
                and _finite_positive(r.get(key))]
        if len(done) < MIN_POINTS_FOR_FIT:
            continue
        fits.append(fit_study_power([r["n_nonembed"] for r in done], [r[key] for r in done],
                                    bootstrap=bootstrap, seed=seed, y_name=key,
                                    tolerance=tolerance, weights=weights, law=law))
    return fits


def recover_budgets(compute: np.ndarray, n: np.ndarray) -> np.ndarray | str:
    """Each run's IsoFLOP budget from its compute, or why the runs do not cluster into budgets.

    Runs cluster when, sorted by compute, they fall into groups that each span at most
    BUDGET_SPAN, lie BUDGET_GAP or more apart, and hold runs at 3 or more sizes (a parabola);
    a grid of N x D does not (its products share values only along diagonals of 1 to 3 runs).
    Each group's budget is the geometric mean of its runs' compute.
    """
    order = np.argsort(compute)
    lc = np.log(compute[order])
    cuts = np.flatnonzero(np.diff(lc) > np.log(BUDGET_GAP)) + 1
    parts = np.split(order, cuts)
    budget = np.empty(len(compute))
    for idx in parts:
        span = compute[idx].max() / compute[idx].min()
        sizes = np.unique(size_groups(n[idx])).size
        if span > BUDGET_SPAN or sizes < 3:
            return (f"runs at C = {compute[idx].min():.3g} to {compute[idx].max():.3g} "
                    + (f"span {span:.2g}x" if span > BUDGET_SPAN else f"hold {sizes} size(s)"))
        budget[idx] = float(np.exp(np.log(compute[idx]).mean()))
    return budget


def _budgets(table: np.ndarray, n: np.ndarray, compute: np.ndarray, budget_col: str | None,
             isoflop: bool | None, path: Path, how: str) -> np.ndarray:
    """Budgets per run (NaN: a grid) from a column, or recovered from the runs' compute."""
    if budget_col is not None:
        budget = table[:, -1]
        distinct = np.unique(size_groups(budget)).size
        if distinct < 2:
            raise UserError(f"{path}: column {budget_col!r} has one budget ({budget[0]:.4g}); "
                            "an IsoFLOP fit needs runs on 2 or more budgets")
        return budget
    if isoflop is False:
        return np.full(len(n), np.nan)
    budget = recover_budgets(compute, n)
    if isinstance(budget, str):
        if isoflop:
            raise UserError(f"{path}: the runs' compute ({how}) does not cluster into IsoFLOP "
                            f"budgets ({budget}); name the budget column with --budget-col, or "
                            "fit them as a grid (--ladder grid)")
        return np.full(len(n), np.nan)
    if np.unique(budget).size < 2:
        if isoflop:
            raise UserError(f"{path}: every run's compute ({how}) is one budget "
                            f"({budget[0]:.4g}); an IsoFLOP fit needs 2 or more budgets")
        return np.full(len(n), np.nan)
    return budget


def two_axis_rows(path: str | Path, *, x: list[str] | None = None, y: str | None = None,
                  flops: str | None = None, budget_col: str | None = None,
                  isoflop: bool | None = None, k: float = 6.0,
                  drop_highest: int = 0, where: Sequence[Where] = ()) -> list[dict[str, Any]]:
    """The runs of a CSV over N and D as study rows (see the module docstring).

    `x` names the N and D columns (default N, D); with one column, D = C / (k·N) is derived from
    the compute column `flops` (as `scalelab fit --flops-col` always has); with two, `flops` is
    each run's measured training FLOPs (the cost of a unit of D is read off it, as in a study).
    Budgets: `budget_col`; else recovered from the compute (`flops`, else k·N·D) when the runs
    cluster (`isoflop` None: if they do; True: they must; False: never, a grid). `where`
    keeps the rows that meet every condition (`laws.data.Where`).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is not a CSV file")
    x = list(x) if x else ["N", "D"]
    if len(x) not in (1, 2) or (len(x) == 1 and not flops):
        raise UserError(f"a law in N and D needs the N and D columns (--x N,D), or the N column "
                        f"and a compute column (--x N --flops-col C); got --x {','.join(x)}")
    if budget_col is not None and isoflop is False:
        raise UserError("--budget-col names IsoFLOP budgets; leave out --ladder grid")
    columns = x + [y or "loss"] + ([flops] if flops else []) + ([budget_col] if budget_col
                                                                 else [])
    table = _read_csv(path, columns, where)
    if len(table) == 0:
        raise UserError(f"{path} has no runs")
    n, loss = table[:, 0], table[:, len(x)]
    measured = table[:, len(x) + 1] if flops else np.full(len(n), np.nan)
    d = table[:, 1] if len(x) == 2 else measured / (k * n)
    compute = measured if flops else k * n * d
    how = f"column {flops!r}" if flops else f"C = {k:g}·N·D"
    budget = _budgets(table, n, compute, budget_col, isoflop, path, how)
    keep = lowest(loss, drop_highest)
    return [{"status": "done", "n_nonembed": float(n[i]), "D": float(d[i]),
             "val_loss": float(loss[i]),
             "flops": float(measured[i]) if flops else None,
             "budget": None if np.isnan(budget[i]) else float(budget[i])}
            for i in keep]


def two_axis_profile(record: dict[str, Any], rows: Sequence[dict[str, Any]], *,
                     tolerance: float = 0.02, sims: int = 200, seed: int = 0
                     ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(noise, extrapolation profile) of the law that answers a two-axis record.

    A law in N and D (Approach 3, or the selected candidate) is profiled over compute,
    C = k·N·D with k the runs' measured FLOPs per parameter per unit (their geometric mean;
    6 without measured FLOPs); the frontier over the budgets' vertices (L* against C). The
    noise bands come from the law's residuals (`laws.profile`).
    """
    from scalelab.laws.fit import Law
    from scalelab.laws.noise import residual_noise
    from scalelab.laws.profile import extrapolation_profile
    from scalelab.laws.two_axis import FORM, X_NAMES, runs_from_rows

    chosen = record.get("chosen") or "approach3"
    if chosen == "frontier":
        used = [v for v in record["selected_fit"]["vertices"] if v.get("N") is not None]
        X = np.array([[v["compute"]] for v in used])
        y = np.array([v["loss"] for v in used])
        law = Law("power", bootstrap=0, x_names=("C",), y_name="best loss")
        by, k = "size", 6.0
    else:
        runs = runs_from_rows(list(rows))
        X, y = runs.X, runs.loss
        form = FORM if chosen in ("approach2", "approach3") else chosen
        law = Law(form, bootstrap=0, x_names=X_NAMES, y_name="val_loss")
        ks = (record.get("flops_per_unit") or {}).get("k") or [6.0]
        by, k = "compute", float(np.exp(np.mean(np.log(ks))))
    law.fit(X, y)
    noise = residual_noise(np.log(law.predict(X).point / y), law.form_.n_params)
    prof = extrapolation_profile(law, X, y, tolerance=tolerance, by=by, k=k,
                                 sigma=None if noise is None else noise.sigma, truth=law,
                                 sims=sims, seed=seed)
    return (None if noise is None else noise.record), prof
