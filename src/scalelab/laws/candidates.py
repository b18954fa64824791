"""The laws a two-axis ladder may answer with, each as a candidate with one interface.

A candidate says whether it can be fitted to some runs (`why_not`), fits them (`fit`), and the
fit answers at any budget C (`Fitted.allocate`): N*, D*, D*/N* and the best loss there, with
bootstrap intervals, in the rows of `laws.optimal.optimal_allocation` (so one answer line and one
table print them all).

- `FormCandidate`: a law in N and D (chinchilla, chinchilla_shared, kaplan), fitted to every run
  by the law engine; its answer is its compute-optimal point on the measured budget line.
- `FrontierCandidate`: the compute frontier (`laws.frontier`), fitted to the IsoFLOP parabolas'
  vertices only: L*(C) = E + A·C^-gamma for the best loss, N* ∝ C^a and D* ∝ C^b for the
  allocation. It needs IsoFLOP budgets, `frontier.MIN_BUDGETS` or more with a parabola minimum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fit import Law
from scalelab.laws.forms import get_form
from scalelab.laws.frontier import FORMULA as FRONTIER_FORMULA
from scalelab.laws.frontier import MIN_BUDGETS, Frontier, budget_vertices, fit_frontier
from scalelab.laws.groups import n_distinct
from scalelab.laws.isoflop import FlopsPerUnit
from scalelab.laws.optimal import optimal_allocation

LEVEL = 0.95
STORED_SAMPLES = 200
X_NAMES = ("n_nonembed", "D")
FRONTIER = "frontier"


class Arrays(Protocol):
    """The runs a candidate is fitted to (`two_axis.Runs`): sizes, data, loss, measured FLOPs
    (NaN where unknown) and budgets (NaN off an IsoFLOP ladder)."""

    n: np.ndarray
    d: np.ndarray
    loss: np.ndarray
    flops: np.ndarray
    budget: np.ndarray

    @property
    def X(self) -> np.ndarray: ...


@dataclass
class Fitted:
    """A fitted candidate: its JSON record and its answer at any budget."""

    name: str
    record: dict[str, Any]
    allocate: Callable[[np.ndarray], list[dict[str, Any]]]
    law: Law  # the fitted law (a law in N and D, or L*(C) for the frontier)


class FormCandidate:
    """A law in N and D from `laws.forms`, answering at its compute-optimal point."""

    def __init__(self, name: str):
        self.form = get_form(name)
        if self.form.roles != ("N", "D"):
            raise UserError(f"law {name!r} is not a law in N and D; two-axis data need one")
        self.name, self.formula, self.n_params = name, self.form.formula, self.form.n_params

    def why_not(self, runs: Arrays) -> str | None:
        points = n_distinct(runs.X)
        if points <= self.n_params:
            return (f"{points} distinct (N, D) points: {self.formula} has {self.n_params} "
                    f"parameters and needs at least {self.n_params + 1}")
        return None

    def fit(self, runs: Arrays, per_unit: FlopsPerUnit, bootstrap: int, seed: int) -> Fitted:
        law = Law(self.name, bootstrap=bootstrap, seed=seed, level=LEVEL, x_names=X_NAMES,
                  y_name="val_loss").fit(runs.X, runs.loss)
        s = law.summary(max_samples=STORED_SAMPLES)
        record = {k: s.get(k) for k in ("law", "formula", "params", "intervals", "on_bound",
                                        "dof", "flags", "n_points", "bootstrap_params")}
        return Fitted(self.name, record,
                      lambda c: optimal_allocation(law, np.atleast_1d(c), per_unit=per_unit), law)


class FrontierCandidate:
    """The compute frontier L*(C), N*(C), D*(C) through the IsoFLOP vertices
    (`laws.frontier`)."""

    name, formula, n_params = FRONTIER, FRONTIER_FORMULA, 3

    def why_not(self, runs: Arrays) -> str | None:
        if not np.isfinite(runs.budget).any():
            return "needs IsoFLOP budgets (a grid has no per-budget best loss)"
        have = np.isfinite(runs.budget)
        used = [v for v in budget_vertices(runs.n[have], runs.d[have], runs.loss[have],
                                           runs.budget[have]) if v.N is not None]
        if len(used) < MIN_BUDGETS:
            return (f"{len(used)} budget(s) with a parabola minimum: L*(C) has {self.n_params} "
                    f"parameters and needs {MIN_BUDGETS}")
        return None

    def fit(self, runs: Arrays, per_unit: FlopsPerUnit, bootstrap: int, seed: int) -> Fitted:
        have = np.isfinite(runs.budget)
        fr = fit_frontier(runs.n[have], runs.d[have], runs.loss[have], runs.budget[have],
                          bootstrap=bootstrap, seed=seed, level=LEVEL)
        record = fr.summary(max_samples=STORED_SAMPLES)
        record["dof"] = len(fr.used) - self.n_params
        record["flags"] = ["zero_dof"] if record["dof"] <= 0 else []
        return Fitted(FRONTIER, record, fr.allocate, fr.loss_law)


def get_candidate(name: str) -> FormCandidate | FrontierCandidate:
    """The candidate registered under `name` (a law in N and D, or the frontier)."""
    return FrontierCandidate() if name == FRONTIER else FormCandidate(name)


def allocate_from_record(fit: dict[str, Any], c: np.ndarray,
                         per_unit: FlopsPerUnit) -> list[dict[str, Any]]:
    """A stored candidate fit (`Fitted.record`) answering at budgets c again, intervals from
    its stored bootstrap draws."""
    if fit.get("law") == FRONTIER:
        return Frontier.from_summary(fit).allocate(c)
    law = Law.from_summary({**fit, "x": list(X_NAMES), "level": LEVEL})
    return optimal_allocation(law, c, per_unit=per_unit)
