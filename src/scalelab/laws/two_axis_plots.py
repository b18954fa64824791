"""The figure `scalelab fit --plot` writes for runs over N and D (a `two_axis` record).

Three panels: the runs' loss against N (one colour per IsoFLOP budget, with its parabola), the
best loss against compute (the budgets' vertices, the held-out one marked, and the answering
law's frontier), and every candidate law's inner and outer holdout error side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from scalelab.laws.plots import DATA, HELD, LAW


def _runs_panel(ax: Any, record: dict[str, Any], rows: Sequence[dict[str, Any]]) -> None:
    a2 = record.get("approach2") or {}
    budgets = a2.get("budgets") or []
    colours = [f"C{i % 10}" for i in range(len(budgets))]
    for b, colour in zip(budgets, colours, strict=True):
        n = np.array([p["N"] for p in b["points"]])
        ax.plot(n, [p["loss"] for p in b["points"]], "o", ms=3, color=colour,
                label=f"C = {b['compute']:.2g}")
        grid = np.geomspace(n.min(), n.max(), 60)
        v = np.log(grid) - b["centre"]
        c2, c1, c0 = b["coef"]
        ax.plot(grid, c2 * v**2 + c1 * v + c0, lw=0.8, color=colour)
    if not budgets:  # a grid: the runs themselves
        done = [r for r in rows if r.get("status", "done") == "done" and r.get("val_loss")]
        ax.plot([r["n_nonembed"] for r in done], [r["val_loss"] for r in done], "o", ms=3,
                color=DATA, label="runs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N")
    ax.set_ylabel("loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)


def _frontier_panel(ax: Any, record: dict[str, Any]) -> None:
    a2 = record.get("approach2") or {}
    vertices = [b for b in a2.get("budgets") or [] if b.get("loss") is not None]
    if vertices:
        ax.plot([b["compute"] for b in vertices], [b["loss"] for b in vertices], "o",
                color=DATA, ms=4, label="best loss of each budget")
    front = record.get("frontier") or []
    if front:
        ax.plot([r["compute"] for r in front], [r["loss"] for r in front], color=LAW,
                label=f"answer ({record.get('chosen')})")
    ho = record.get("holdout") or {}
    for p in ho.get("points") or []:
        ax.plot([p["x"]] * 2, [p["measured"], p["predicted"]], color=HELD, lw=1)
        ax.plot(p["x"], p["predicted"], "x", color=HELD, ms=6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("compute C (FLOPs)")
    ax.set_ylabel("best loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def _candidates_panel(ax: Any, record: dict[str, Any]) -> None:
    rows = record.get("candidates") or []
    names = [r["law"] for r in rows]
    x = np.arange(len(rows))
    for shift, key, colour in ((-0.2, "inner", DATA), (0.2, "outer", HELD)):
        errs = [100 * ((r.get(key) or {}).get("rel_error") or np.nan) for r in rows]
        ax.bar(x + shift, errs, width=0.4, color=colour, label=f"{key} holdout")
    ax.axhline(0.0, color=LAW, lw=1)
    ax.set_xticks(x, names, fontsize=7)
    ax.set_ylabel("error of the best loss, %")
    ax.set_title(f"selected: {(record.get('selection') or {}).get('selected')}", fontsize=9)
    ax.legend(fontsize=7)


def two_axis_figure(record: dict[str, Any], rows: Sequence[dict[str, Any]] = ()) -> Figure:
    """The three panels of a `two_axis` record (see the module docstring)."""
    fig = Figure(figsize=(15, 4.4), layout="constrained")
    axes = fig.subplots(1, 3)
    _runs_panel(axes[0], record, rows)
    _frontier_panel(axes[1], record)
    _candidates_panel(axes[2], record)
    return fig
