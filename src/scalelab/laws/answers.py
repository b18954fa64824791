"""What a fit answers, from Python as `scalelab predict` and `scalelab optimal` answer it: the
loss at given sizes (`predict_rows`), and the compute-optimal N and D at given budgets
(`optimal_rows`) from a fit.json, a CSV of runs over N and D, or a two-axis study folder.

    from scalelab.laws import optimal_rows, predict_rows, read_fit
    predict_rows(read_fit("fit.json"), N=[7e10], D=[1.4e12]).rows
    optimal_rows("fit.json", [5.76e23]).rows

Both warn, per point, where the fit's evidence ends (`beyond_warnings`): past the trust horizon
of a fit with an extrapolation profile, else past the largest run fitted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.data import Where
from scalelab.laws.fit import Law
from scalelab.laws.fitfile import Progress, no_progress

TWO_AXIS = "two_axis"  # the law name of a two-axis record (several laws side by side)
MEASURED_TITLE = "compute-optimal allocation, C = measured FLOPs per unit × D"


def read_fit(path: str | Path) -> dict[str, Any]:
    """A fit.json written by `scalelab fit --out` (or `FitResult.write`), or one line why not."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None
    except json.JSONDecodeError:
        raise UserError(f"{path} is not JSON (expected a fit.json from `scalelab fit`)") from None
    if not isinstance(record, dict):
        raise UserError(f"{path} is not a fit record")
    return record


def law_of(record: dict[str, Any], name: str = "this fit") -> Law:
    """The one law of a fit record (`name` says which file in the error of a two-axis one)."""
    if record.get("law") == TWO_AXIS:
        raise UserError(f"{name} is a two-axis fit (Approaches 2 and 3 and the candidate laws "
                        f"side by side): ask it with `scalelab optimal {name} --compute C`, or "
                        "fit one form with --law to predict from it")
    return Law.from_summary(record)


def beyond_warnings(record: dict[str, Any], X: np.ndarray) -> list[str | None]:
    """Per point of X (rows in the law's inputs): None where a fit.json's evidence covers it,
    else a plain warning. With an extrapolation profile, beyond its trust horizon; without one,
    beyond the largest run fitted (`x_max`). `predict` and `optimal` both warn through here."""
    from scalelab.laws.profile import RATIO_RTOL, fmt_ratio

    profile = record.get("profile")
    if isinstance(profile, dict) and profile.get("max_x"):
        axis = X[:, 0] if profile.get("k") is None else profile["k"] * X[:, 0] * X[:, 1]
        h = profile.get("horizon")
        out = []
        for ratio in axis / float(profile["max_x"]):
            if ratio <= 1 + RATIO_RTOL or h is not None and ratio <= h * (1 + RATIO_RTOL):
                out.append(None)  # inside the runs fitted, or within the trust horizon
            elif h is not None:
                out.append(f"{fmt_ratio(ratio)} beyond the fitted range, past the trust "
                           f"horizon ({fmt_ratio(h)}): no evidence the law holds there")
            else:
                out.append(f"{fmt_ratio(ratio)} beyond the fitted range; the profile found no "
                           "trust horizon: no evidence the law holds there")
        return out
    x_max = record.get("x_max")
    if not isinstance(x_max, list) or len(x_max) != X.shape[1]:
        return [None] * len(X)  # an older fit.json: nothing known of its range
    names = record.get("x") if isinstance(record.get("x"), list) else [record.get("x")]
    out = []
    for row in X:
        ratios = [v / m for v, m in zip(row, x_max, strict=True)]
        j = max(range(len(ratios)), key=lambda i: ratios[i])
        out.append(None if ratios[j] <= 1 + RATIO_RTOL else
                   f"{fmt_ratio(ratios[j])} beyond the largest {names[j]} fitted, and the fit "
                   "has no extrapolation profile (fit --profile): no evidence the law holds "
                   "there")
    return out


@dataclass
class PredictionTable:
    """A law's predictions: `rows` (what `scalelab predict --out` writes: the inputs by role,
    predicted, interval, level, warning), the law's name, its quantity and inputs."""

    law: str
    y: str
    roles: tuple[str, ...]
    level: float
    rows: list[dict[str, Any]]


def predict_rows(record: dict[str, Any], *, N: Sequence[float] = (), D: Sequence[float] = (),
                 x: Sequence[float] = (), level: float | None = None,
                 name: str = "this fit") -> PredictionTable:
    """The loss a fit record predicts at N (and D), or x for a law of one input (N is taken for
    x there), with its interval at `level` (default: the fit's). Lists of one value are
    broadcast against the others."""
    model = law_of(record, name)
    roles = model.form_.roles
    given = {"N": list(N), "D": list(D), "x": list(x)}
    if roles == ("x",):
        if given["x"] and given["N"]:
            raise UserError("give --x or --N for a one-input law, not both")
        given["x"] = given["x"] or given["N"]
    cols = []
    for role in roles:
        if not given[role]:
            raise UserError(f"law {model.form_.name!r} needs --{role}")
        cols.append(given[role])
    size = max(len(c) for c in cols)
    if any(len(c) not in (1, size) for c in cols):
        raise UserError("--N and --D must have the same number of values (or one)")
    X = np.column_stack([np.resize(np.asarray(c, dtype=float), size) for c in cols])
    if level is not None and not 0 < level < 1:
        raise UserError("--level must be in (0, 1)")
    pred = model.predict(X, level=level)
    warnings = beyond_warnings(record, X)
    rows = []
    for i in range(size):
        iv = None if pred.lo is None else [float(pred.lo[i]), float(pred.hi[i])]
        rows.append({**dict(zip(roles, map(float, X[i]), strict=True)),
                     "predicted": float(pred.point[i]), "interval": iv, "level": pred.level,
                     "warning": warnings[i]})
    return PredictionTable(model.form_.name, model.y_name, roles, pred.level, rows)


def budgets_for(compute: Sequence[float] = (), frontier: tuple[float, float] | None = None,
                points: int = 25) -> list[float]:
    """The budgets asked for: `compute`, then `points` log-spaced budgets over `frontier`."""
    budgets = [float(c) for c in compute]
    if frontier is not None:
        lo, hi = frontier
        if not 0 < lo < hi or points < 2:
            raise UserError("frontier needs 0 < C_min < C_max and at least 2 points")
        budgets += [float(c) for c in np.geomspace(lo, hi, points)]
    if not budgets:
        raise UserError("give --compute C (or --frontier LO:HI)")
    return budgets


@dataclass
class Allocation:
    """Compute-optimal answers: `rows` (what `scalelab optimal --out` writes: compute, N, D,
    tokens_per_param, loss, intervals, warning, and from runs the answer in words), the
    two-axis record they come from (None for a one-form fit.json), the table's title, and the
    warnings of a one-form fit.json's points (also in the rows)."""

    rows: list[dict[str, Any]]
    record: dict[str, Any] | None
    title: str
    warnings: list[str | None]

    def figure(self) -> Any:
        """The frontier plot of `scalelab optimal --plot` (a Matplotlib Figure)."""
        from scalelab.laws.plots import frontier_figure

        return frontier_figure(sorted(self.rows, key=lambda r: r["compute"]))


def optimal_rows(source: str | Path, budgets: Sequence[float], *, k: float | None = None,
                 bootstrap: int = 1000, seed: int = 0, law: str | None = None,
                 x: list[str] | None = None, y: str | None = None, flops_col: str | None = None,
                 budget_col: str | None = None, where: Sequence[Where | str] = (),
                 progress: Progress | None = None) -> Allocation:
    """Compute-optimal N and D at `budgets` from a fit.json (C = k·N·D, k the fit's unless
    given), a CSV of runs over N and D (fitted as `fit_runs` fits it: `x`, `y`, `flops_col`,
    `budget_col`, `where`), or a study folder whose rungs vary N and D. A CSV or a study is
    fitted with `bootstrap` resamples (`seed`), `law` forcing one candidate."""
    source, progress = Path(source), progress or no_progress
    picked = [w if isinstance(w, Where) else Where.parse(w) for w in where]
    if picked and source.suffix.lower() != ".csv":
        raise UserError("--where picks rows of a CSV; give a CSV of runs")
    if bootstrap < 0:
        raise UserError(f"--bootstrap must be >= 0, got {bootstrap}")
    if source.is_dir() or source.suffix.lower() == ".csv":
        if k is not None:
            raise UserError("--k applies to a fit.json; a study or CSV uses the FLOPs its runs "
                            "measured (else 6·N·D)")
        fit = {"bootstrap": bootstrap, "seed": seed, "compute": budgets, "law": law}
        if source.is_dir():
            record = _two_axis_study(source, fit, progress)
        else:
            record = _two_axis_csv(source, fit, progress, x=x, y=y, flops=flops_col,
                                   budget_col=budget_col, where=picked)
        return _answered(record["answers"], record, MEASURED_TITLE)
    record = read_fit(source)
    if record.get("law") == TWO_AXIS:
        from scalelab.laws.two_axis import answer_for

        if k is not None:
            raise UserError("--k applies to a one-form fit.json; a two-axis fit uses the FLOPs "
                            "its runs measured (else 6·N·D)")
        return _answered(answer_for(record, budgets), record, MEASURED_TITLE)
    return _from_fit(record, budgets, k, str(source))


def _answered(rows: list[dict], record: dict, title: str) -> Allocation:
    """Answers from runs: each row's own warning (if any) kept, none added."""
    for row in rows:
        row["warning"] = row.get("warning")
    return Allocation(rows, record, title, [None] * len(rows))


def _from_fit(record: dict, budgets: Sequence[float], k: float | None, name: str) -> Allocation:
    """A one-form fit.json's law in N and D, C = k·N·D, its points warned as predict warns."""
    from scalelab.laws.optimal import optimal_allocation

    model = law_of(record, name)
    record_k = 6.0
    try:
        record_k = float((record.get("flops") or {}).get("k", 6.0))
    except (AttributeError, TypeError, ValueError):
        pass
    k = record_k if k is None else k
    if not k > 0:
        raise UserError("--k must be positive")
    rows = optimal_allocation(model, budgets, k=k)
    warnings = beyond_warnings(record, np.array([[r["N"], r["D"]] for r in rows]))
    for row, warning in zip(rows, warnings, strict=True):
        row["warning"] = row.get("warning") or warning
    return Allocation(rows, None, f"compute-optimal allocation, C = {k:g}·N·D", warnings)


def _two_axis_csv(path: Path, fit: dict[str, Any], progress: Progress,
                  **columns: Any) -> dict[str, Any]:
    """The two-axis record of a CSV of runs over N and D, fitted as `fit_runs` does."""
    from scalelab.laws.engine import two_axis_rows
    from scalelab.laws.two_axis import fit_two_axis

    runs = two_axis_rows(path, **columns)
    progress(f"fitting L(N, D) to {len(runs)} runs of {path} ({fit['bootstrap']} "
             "resamples)...")
    record = fit_two_axis(runs, **fit)
    if not record.get("chosen"):
        raise UserError(f"{path}: no usable law: {record['approach3']['degenerate']}")
    return record


def _two_axis_study(folder: Path, fit: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The two-axis record of a study's rungs."""
    from scalelab.laws.two_axis import fit_two_axis
    from scalelab.storage import StudyStore

    if not (folder / "study.db").is_file():
        raise UserError(f"{folder} is a folder without study.db; pass a study folder or a "
                        "fit.json")
    with StudyStore.open_readonly(folder) as store:
        rungs = store.rungs()
    try:
        progress(f"fitting L(N, D) to {folder} ({fit['bootstrap']} resamples)...")
        return fit_two_axis(rungs, **fit)
    except UserError as err:
        raise UserError(f"{folder} is not a two-axis study: {err}") from None
