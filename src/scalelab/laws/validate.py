"""Judge a law by extrapolation: fit on the smaller sizes, predict the larger ones.

In-sample fit says little about a scaling law; what matters is how well it predicts sizes it has
not seen. Sizes are the first input (N for laws in N and D); runs whose sizes differ by less than
1% count as one size (numbers read off a plot are never exactly equal).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fit import Law, as_inputs
from scalelab.laws.groups import SIZE_RTOL, size_groups
from scalelab.records import Holdout

__all__ = ["SIZE_RTOL", "compare_forms", "holdout", "leave_one_size_out", "size_groups", "split"]


def split(X: np.ndarray, rule: str) -> np.ndarray:
    """Mask of the runs to fit on (the rest are predicted), from a rule.

    Rules: "largest:K" holds out the K largest sizes; "smallest:K" fits on the K smallest
    sizes; "below:V" fits on sizes below V.
    """
    kind, _, value = rule.partition(":")
    sizes = X[:, 0]
    groups = size_groups(sizes)
    try:
        if kind == "largest":
            return groups < groups.max() + 1 - int(value or 1)
        if kind == "smallest":
            return groups < int(value)
        if kind == "below":
            return sizes < float(value)
    except ValueError:
        raise UserError(f"bad holdout rule {rule!r}: the number after ':' is not valid") from None
    raise UserError(f"unknown holdout rule {rule!r}; use largest:K, smallest:K, below:V or loso")


def _points(law: Law, X: np.ndarray, y: np.ndarray) -> list[dict[str, Any]]:
    pred = law.predict(X)
    out = []
    for i in range(len(y)):
        p = float(pred.point[i])
        out.append({
            "x": float(X[i, 0]) if X.shape[1] == 1 else [float(v) for v in X[i]],
            "measured": float(y[i]),
            "predicted": p,
            "lo": None if pred.lo is None else float(pred.lo[i]),
            "hi": None if pred.hi is None else float(pred.hi[i]),
            "rel_error": (p - float(y[i])) / float(y[i]),
        })
    return out


def _subset(w: Any, mask: np.ndarray) -> np.ndarray | None:
    return None if w is None else np.asarray(w, dtype=float).ravel()[mask]


def holdout(law: Law, X: Any, y: Any, rule: str = "largest:1",
            sample_weight: Any = None) -> Holdout:
    """Fit a clone of `law` on the runs the rule keeps, predict the others.

    Relative error is (predicted - measured) / measured, per point and its mean (signed, and of
    absolute values). The record is a `scalelab.records.Holdout` (`.to_dict()` for JSON).
    `sample_weight` (per run) weighs the kept runs in the fit as in `Law.fit`.
    """
    Xa = as_inputs(X, law.form_, law._names())
    yv = np.asarray(y, dtype=float).ravel()
    keep = split(Xa, rule)
    if keep.all() or not keep.any():
        raise UserError(f"holdout rule {rule!r} leaves nothing to "
                        + ("predict" if keep.all() else "fit on"))
    fitted = law.clone().fit(Xa[keep], yv[keep], _subset(sample_weight, keep))
    pts = _points(fitted, Xa[~keep], yv[~keep])
    rel = np.array([p["rel_error"] for p in pts])
    return Holdout(
        rule=rule,
        n_fit=int(keep.sum()),
        n_test=int((~keep).sum()),
        max_fit_size=float(Xa[keep, 0].max()),
        points=pts,
        mean_rel_error=float(rel.mean()),
        mean_abs_rel_error=float(np.abs(rel).mean()),
        params=dict(fitted.params_),
        on_bound=list(fitted.on_bound_),
    )


def leave_one_size_out(law: Law, X: Any, y: Any, sample_weight: Any = None) -> Holdout:
    """For every size: fit on all other sizes, predict it.

    `points` holds every run with its prediction from the fit without its size; per fold (size)
    the mean relative error (signed and absolute); overall their means over folds, so every size
    counts once however many runs it has. No single fit: n_fit, max_fit_size, params and
    on_bound are None.
    """
    Xa = as_inputs(X, law.form_, law._names())
    yv = np.asarray(y, dtype=float).ravel()
    groups = size_groups(Xa[:, 0])
    folds, points = [], []
    for g in range(groups.max() + 1):
        test = groups == g
        fitted = law.clone(bootstrap=0).fit(Xa[~test], yv[~test],
                                            _subset(sample_weight, ~test))
        pts = _points(fitted, Xa[test], yv[test])
        points += pts
        rel = np.array([p["rel_error"] for p in pts])
        folds.append({"size": float(Xa[test, 0].mean()), "n_test": int(test.sum()),
                      "mean_rel_error": float(rel.mean()),
                      "mean_abs_rel_error": float(np.abs(rel).mean())})
    return Holdout(rule="loso", n_fit=None, n_test=int(len(yv)), max_fit_size=None,
                   points=points, folds=folds,
                   mean_rel_error=float(np.mean([f["mean_rel_error"] for f in folds])),
                   mean_abs_rel_error=float(np.mean([f["mean_abs_rel_error"] for f in folds])))


def compare_forms(X: Any, y: Any, forms: Sequence[str], rule: str = "largest:1",
                  **settings: Any) -> list[dict[str, Any]]:
    """Fit each form on the same data; rank them by holdout error (best first).

    `rule` is a holdout rule (largest:K, smallest:K, below:V) or "loso"; `settings` go to every
    `Law` (loss, delta, x_names, ...). Every form is fitted without a bootstrap: the ranking
    needs the holdout errors only. A row is {"law": name, "holdout": Holdout}, ranked by the
    holdout's mean absolute relative error; with "loso" its params are None (one fit per size).
    """
    rows = []
    for name in forms:
        law = Law(name, **{**settings, "bootstrap": 0})
        ho = leave_one_size_out(law, X, y) if rule == "loso" else holdout(law, X, y, rule)
        rows.append({"law": name, "holdout": ho})
    return sorted(rows, key=lambda r: r["holdout"].mean_abs_rel_error)
