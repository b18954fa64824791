"""Figures of a fitted law: data and law with its band, residuals, holdout, optimal frontier.

Each function takes fitted objects and draws on a Matplotlib Figure (no pyplot state), so the
CLI can save it (`save_figure`). The study report reuses `draw_residuals` for its residual panel
(`scalelab.report.plots.residuals_svg`); its loss-vs-N panel is its own
(`scalelab.report.plots.loss_vs_n_svg`) because it also marks diverged rungs and draws the
holdout of the largest rung from the summary record, and evaluates the law through `Law`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # a bare Figure: no pyplot state, no GUI backend needed

from scalelab.errors import UserError
from scalelab.laws.fit import Law, as_inputs
from scalelab.records import Holdout
from scalelab.report.axes import style_figure

LAW, DATA, HELD = "#1f6fb2", "#333333", "#d1495b"


def _loglog(ax: Any, xlabel: str, ylabel: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def as_holdout(holdout: Holdout | dict[str, Any] | None) -> Holdout | None:
    """A Holdout from a record or its JSON (any stored shape), None for none."""
    if holdout is None or isinstance(holdout, Holdout):
        return holdout
    return Holdout.from_dict(dict(holdout))


def _held_mask(X: np.ndarray, holdout: Holdout | dict[str, Any] | None) -> np.ndarray:
    ho = as_holdout(holdout)
    if ho is None or ho.max_fit_size is None:
        return np.zeros(len(X), dtype=bool)
    return X[:, 0] > ho.max_fit_size


def draw_fit(ax: Any, law: Law, X: Any, y: Any,
             holdout: Holdout | dict[str, Any] | None = None) -> None:
    """One-input law: data and the law with its band. Two inputs: predicted vs measured."""
    Xa = as_inputs(X, law.form_, law._names())
    yv = np.asarray(y, dtype=float)
    held = _held_mask(Xa, holdout)
    names = law._names()
    if Xa.shape[1] == 1:
        grid = np.geomspace(Xa.min() / 1.5, Xa.max() * 3.0, 200)
        pred = law.predict(grid)
        if pred.lo is not None:
            ax.fill_between(grid, pred.lo, pred.hi, color=LAW, alpha=0.18, lw=0,
                            label=f"{pred.level:.0%} bootstrap band")
        ax.plot(grid, pred.point, color=LAW, label=law.form_.formula)
        ax.plot(Xa[~held, 0], yv[~held], "o", color=DATA, ms=4, label="runs")
        if held.any():
            ax.plot(Xa[held, 0], yv[held], "o", color=HELD, ms=5, label="held out")
        _loglog(ax, names[0], law.y_name)
    else:
        pred = law.predict(Xa)
        err = None
        if pred.lo is not None:
            err = np.abs(np.vstack([pred.point - pred.lo, pred.hi - pred.point]))
        ax.errorbar(yv[~held], pred.point[~held], yerr=None if err is None else err[:, ~held],
                    fmt="o", color=DATA, ms=3, elinewidth=0.6, label="runs")
        if held.any():
            ax.plot(yv[held], pred.point[held], "o", color=HELD, ms=5, label="held out")
        lims = [yv.min() * 0.97, yv.max() * 1.03]
        ax.plot(lims, lims, color=LAW, lw=1, label="predicted = measured")
        _loglog(ax, f"measured {law.y_name}", f"predicted ({law.form_.name})")
    ax.legend(fontsize=7)


def draw_residuals(ax: Any, law: Law, X: Any, y: Any) -> None:
    """log(predicted / measured) against the first input: structure here means a wrong form."""
    Xa = as_inputs(X, law.form_, law._names())
    resid = np.log(law.predict(Xa).point) - np.log(np.asarray(y, dtype=float))
    ax.axhline(0.0, color=LAW, lw=1.5)  # the reference: at least one solid pixel row at any scale
    ax.plot(Xa[:, 0], resid, "o", color=DATA, ms=3)
    ax.set_xscale("log")
    ax.set_xlabel(law._names()[0])
    ax.set_ylabel("log residual (pred / measured)")
    ax.grid(True, which="both", alpha=0.3)


def draw_holdout(ax: Any, holdout: Holdout | dict[str, Any] | None,
                 note: str = "no holdout") -> None:
    """Relative error of each held-out prediction (fit on the smaller sizes only); for
    leave-one-size-out, the mean error of each size predicted from all the others. Without a
    holdout, `note` says why."""
    ho = as_holdout(holdout)
    if ho is not None and ho.folds:
        size = np.array([f["size"] for f in ho.folds])
        rel = np.array([f["mean_rel_error"] for f in ho.folds]) * 100
        title = f"leave one size out: mean |err| {100 * ho.mean_abs_rel_error:.2f}%"
    elif ho is not None and ho.points:
        size = np.array([p["x"] if np.isscalar(p["x"]) else p["x"][0] for p in ho.points])
        rel = np.array([p["rel_error"] for p in ho.points]) * 100
        title = f"holdout {ho.rule}: mean |err| {100 * ho.mean_abs_rel_error:.2f}%"
    else:
        ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, wrap=True)
        ax.set_axis_off()
        return
    ax.axhline(0.0, color=LAW, lw=1)
    ax.plot(size, rel, "o", color=HELD, ms=5)
    ax.set_xscale("log")
    ax.set_xlabel("size of held-out run")
    ax.set_ylabel("relative error of prediction, %")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)


def fit_figure(law: Law, X: Any, y: Any, holdout: Holdout | dict[str, Any] | None = None,
               note: str = "no holdout") -> Figure:
    """The three panels the CLI writes with --plot: fit, residuals, holdout."""
    fig = Figure(figsize=(14, 4.2), layout="constrained")
    axes = fig.subplots(1, 3)
    draw_fit(axes[0], law, X, y, holdout)
    draw_residuals(axes[1], law, X, y)
    draw_holdout(axes[2], holdout, note)
    return fig


def frontier_figure(rows: list[dict[str, Any]]) -> Figure:
    """N*, D* and the loss at the optimum against compute, with bootstrap bands."""
    c = np.array([r["compute"] for r in rows])
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax_nd, ax_l = fig.subplots(1, 2)
    for key, color in (("N", LAW), ("D", HELD)):
        ax_nd.plot(c, [r[key] for r in rows], color=color, label=f"{key}*")
        if rows[0]["intervals"]:
            ax_nd.fill_between(c, [r["intervals"][key][0] for r in rows],
                               [r["intervals"][key][1] for r in rows], color=color, alpha=0.18,
                               lw=0)
    _loglog(ax_nd, "compute C (FLOPs)", "optimal N*, D*")
    ax_nd.legend(fontsize=8)
    ax_l.plot(c, [r["loss"] for r in rows], color=LAW)
    if rows[0]["intervals"]:
        ax_l.fill_between(c, [r["intervals"]["loss"][0] for r in rows],
                          [r["intervals"]["loss"][1] for r in rows], color=LAW, alpha=0.18, lw=0)
    _loglog(ax_l, "compute C (FLOPs)", "predicted loss at the optimum")
    return fig


def save_figure(fig: Figure, path: str | Path) -> None:
    """Save as SVG or PNG, chosen by the file suffix."""
    path = Path(path)
    if path.suffix.lower() not in (".svg", ".png"):
        raise UserError(f"--plot {path}: use a .svg or .png file name")
    style_figure(fig)  # the report's tick labels (10k, 1M), not matplotlib's 10^4
    fig.savefig(path, dpi=150)
