"""Which law answers: every candidate judged by an inner holdout, the winner chosen on evidence.

In-sample fit favours the form with the most parameters; what a user needs is the form that
extrapolates. So each candidate is fitted without the largest fitted size (one-axis data) or
budget (two-axis data) and judged on it: the inner holdout. The candidate with the smallest
inner error answers. The outer holdout (the largest size or budget, never seen by the choice)
then says how well the winner and every other candidate did on data the choice never saw: both
stand side by side in the record (`candidates`), so a reader can see whether the choice held.

A candidate that cannot be fitted on the inner split (too few sizes or budgets for its
parameters) does not take part; its row says why. When no candidate has an inner holdout the
first candidate answers (the default form) and the record says the choice was not made on
evidence.

Two-axis candidates (`TWO_AXIS`): every law in N and D listed there, fitted to all runs and
answering at a budget by its compute-optimal point on the measured budget line; and the compute
frontier (`laws.frontier`), which needs IsoFLOP budgets. A form added to `FORMS` takes part when
its name is added to `ONE_AXIS` or `TWO_AXIS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fit import Law
from scalelab.laws.forms import get_form
from scalelab.laws.groups import n_distinct
from scalelab.laws.validate import holdout

ONE_AXIS = ("power", "bnsl")  # laws of one input, the default first
TWO_AXIS = ("chinchilla", "chinchilla_shared", "frontier")  # Approach 3 first: the default
# Another candidate replaces the default only when its |inner error| is smaller by more than
# this share of the tolerance (0.5% at 2%). Smaller gaps change no answer's standing against the
# tolerance, and flip with the noise of a few runs: on a synthetic Chinchilla ladder (alpha 0.34,
# beta 0.28, 0.5% noise) the shared-exponent form beat Approach 3 on the inner budget in 5 of 6
# data seeds by 0.02-0.23%, while their outer errors were as close. Measurement noise is no
# guide here: it is common to every candidate's error of the same measured loss.
MARGIN = 0.25
RULE = ("inner holdout: each candidate fitted without the largest fitted {what} and judged on "
        "it; another candidate replaces the first only if its |error| is smaller by more than "
        "the margin (a quarter of the tolerance)")


def pick(rows: list[dict[str, Any]], margin: float = 0.0) -> tuple[str, bool]:
    """(winner, chosen on evidence). The first candidate is the default; another replaces it
    only when its |inner error| is smaller by more than `margin` (see MARGIN). A default
    without an inner holdout gives way to the best candidate that has one."""
    judged = [r for r in rows if r.get("inner") is not None
              and r["inner"].get("rel_error") is not None]
    if not judged:
        return rows[0]["law"], False
    best = min(judged, key=lambda r: abs(r["inner"]["rel_error"]))
    default = rows[0]
    if default not in judged:
        return best["law"], True
    gap = abs(default["inner"]["rel_error"]) - abs(best["inner"]["rel_error"])
    return (best["law"] if gap > margin else default["law"]), True


def selection_record(rows: list[dict[str, Any]], what: str, forced: str | None,
                     margin: float = 0.0) -> dict[str, Any]:
    """{rule, selected, forced, on_evidence, margin, candidates}: the choice and every
    candidate."""
    if forced is not None:
        return {"rule": f"forced (--law {forced})", "selected": forced, "forced": True,
                "on_evidence": False, "margin": None, "candidates": rows}
    winner, evidence = pick(rows, margin)
    return {"rule": RULE.format(what=what), "selected": winner, "forced": False,
            "on_evidence": evidence, "margin": float(margin), "candidates": rows}


def holdout_summary(ho: dict[str, Any] | None) -> dict[str, Any] | None:
    """The few numbers of a holdout a comparison needs: where, and the largest size's error."""
    if ho is None:
        return None
    return {"max_fit_size": ho.get("max_fit_size"), "x": ho.get("x"),
            "measured": ho.get("measured"), "predicted": ho.get("predicted"),
            "rel_error": ho.get("rel_error"), "mean_abs_rel_error": ho.get("mean_abs_rel_error"),
            "n_star": (ho.get("n_star") or {}).get("rel_error")}


def one_axis_candidates(X: np.ndarray, y: np.ndarray, *, forms: Sequence[str] = ONE_AXIS,
                        weights: np.ndarray | None = None,
                        settings: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Per form: its inner holdout (fitted without the two largest sizes, judged on the second
    largest) and outer holdout (fitted without the largest, judged on it), no bootstrap."""
    settings = {**(settings or {}), "bootstrap": 0}
    rows = []
    for name in forms:
        form = get_form(name)
        law = Law(name, **settings)
        row: dict[str, Any] = {"law": name, "formula": form.formula, "n_params": form.n_params,
                               "inner": None, "inner_skipped": None, "outer": None,
                               "outer_skipped": None}
        row["outer"], row["outer_skipped"] = _judge(law, X, y, weights)
        row["inner"], row["inner_skipped"] = _inner_one_axis(law, X, y, weights)
        rows.append(row)
    return rows


def _judge(law: Law, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None
           ) -> tuple[dict[str, Any] | None, str | None]:
    """The law fitted without the largest size and judged on it, or why it cannot be."""
    from scalelab.laws.validate import split

    keep = split(X, "largest:1")
    points = n_distinct(X[keep]) if keep.any() else 0
    if points <= law.form_.n_params:
        return None, (f"{points} distinct point(s) to fit on: {law.form_.name} has "
                      f"{law.form_.n_params} parameters and needs more")
    try:
        return holdout_summary(holdout(law, X, y, "largest:1", sample_weight=weights)
                               .to_dict()), None
    except UserError as err:
        return None, str(err)


def _inner_one_axis(law: Law, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None
                    ) -> tuple[dict[str, Any] | None, str | None]:
    """`_judge` on the runs the outer holdout fits on (all but the largest size)."""
    from scalelab.laws.validate import split

    keep = split(X, "largest:1")
    w = None if weights is None else np.asarray(weights)[keep]
    return _judge(law, X[keep], y[keep], w)


def one_axis_selection(X: Any, y: Any, *, forms: Sequence[str] = ONE_AXIS,
                       weights: Any = None, forced: str | None = None, tolerance: float = 0.02,
                       settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The selection record for a law of one input (see the module docstring): the margin is
    MARGIN times `tolerance`."""
    Xa = np.asarray(X, dtype=float).reshape(len(y), -1)
    yv = np.asarray(y, dtype=float).ravel()
    w = None if weights is None else np.asarray(weights, dtype=float).ravel()
    names = [forced] if forced else list(forms)
    return selection_record(one_axis_candidates(Xa, yv, forms=names, weights=w,
                                                settings=settings), "size", forced,
                            MARGIN * tolerance)
