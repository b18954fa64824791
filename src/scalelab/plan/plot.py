"""The plan's figure: each candidate's probability of landing within the tolerance against its
cost, the chosen one marked, the budget as a line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # a bare Figure: no pyplot state, no GUI backend needed

from scalelab.laws.plots import save_figure
from scalelab.values import fmt_count

CANDIDATE, CHOSEN, BUDGET = "#1f6fb2", "#d1495b", "#333333"


def plan_figure(plan: dict[str, Any]) -> Figure:
    """P(|error| <= tolerance) at the target against FLOPs, one point per candidate ladder."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    rows = plan["candidates"]
    ax.scatter([r["flops"] for r in rows], [r["p_within"] for r in rows], s=12,
               color=CANDIDATE, alpha=0.5, label="candidate ladders")
    c = plan["chosen"]
    ax.scatter([c["flops"]], [c["p_within"]], s=90, marker="*", color=CHOSEN,
               label=f"chosen: {c['describe']}", zorder=3)
    if plan.get("budget_flops"):
        ax.axvline(plan["budget_flops"], color=BUDGET, linestyle="--", linewidth=1,
                   label="budget")
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.set_xlabel("cost (FLOPs)")
    tol = f"{100 * plan['tolerance']:g}%"
    ax.set_ylabel(f"P(|error| <= {tol}) at the target")
    label = plan.get("label") or f"N = {fmt_count(plan['target'])}"
    ax.set_title(f"Ladders for {label}: chance of landing within {tol}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def save_plan_figure(plan: dict[str, Any], path: str | Path) -> None:
    save_figure(plan_figure(plan), path)
