"""Both axes: a law in N and D from a study's rungs, and the compute-optimal answer.

`fit_two_axis(rows)` takes finished rungs over N and D (a grid, or IsoFLOP budgets) and returns
one JSON-ready record, law "two_axis":

- approach3: L(N, D) = E + A·N^-alpha + B·D^-beta (the `chinchilla` form), fitted by the law
  engine (log-space Huber, grid of starts, L-BFGS, bootstrap over rungs), and the
  compute-optimal N*(C), D*(C) it implies (`laws.optimal`).
- approach2 (IsoFLOP budgets with 3 or more sizes): a parabola in log N per budget gives N*(C),
  D*(C) and L*(C); N* ∝ C^a and D* ∝ C^b across budgets (`laws.isoflop`).
- both side by side (a, b, tokens per parameter and N* at the largest budget), whether they
  agree (their intervals of N* at the largest budget overlap) and, when not, why.
- candidates, selection: every candidate law (`laws.selection.TWO_AXIS`: chinchilla,
  chinchilla_shared, the frontier of `laws.frontier`) fitted without the largest budget it would
  be fitted on and judged on that one (the inner holdout), and fitted on every budget the
  holdout rule keeps and judged on the held-out ones (the outer holdout), side by side. The
  winner (Approach 3 unless another is closer on the inner holdout by more than the margin)
  answers: `chosen` ("approach3", or the winner's name; "approach2" when Approach 3 won but is
  degenerate), its fit in `selected_fit` when it is not Approach 3.
- holdout: the winner fitted without the largest budget (`holdout` "largest:K": the K
  largest; "below:C": fitted only on budgets <= C) predicts each held budget's best loss and
  the largest one's N* (with whether that budget's own runs identify N* at all).
- predictions at 10x and 100x the largest budget trained, from the chosen fit, flagged where
  they lie beyond the evidence.
- answer: "for C FLOPs, train N ≈ … on D ≈ … tokens; expected loss … [lo, hi]".

Compute. N is `n_nonembed`, D the units each rung trained on. C is the rung's measured training
FLOPs (torch's flop counter: FLOPs per step times steps), so one unit of D costs f(N) = flops / D
FLOPs, k(N) = f(N) / N per parameter: about 6 for large models, more for small ones, whose
attention and embeddings cost FLOPs that N does not count. The allocation searches along the
measured budget line C = f(N)·D (`isoflop.FlopsPerUnit`: f interpolated in log N between the
rungs' sizes, held at its end values beyond them); the chinchilla closed form with C = 6·N·D is
what this gives when f(N) = 6·N. Rungs without measured FLOPs fall back to 6·N·D.

Rows are summary.json `rungs` rows or `StudyStore.rungs()` dicts, read with `.get`: status
("done" counts), n_nonembed (else n_params), D (else tokens), flops, val_loss, train_loss,
budget, epochs and schedule (looked up in the rung's `plan` too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.candidates import (
    FormCandidate,
    FrontierCandidate,
    allocate_from_record,
    get_candidate,
)
from scalelab.laws.fit import Law, _quantiles
from scalelab.laws.groups import n_distinct, size_groups
from scalelab.laws.isoflop import FlopsPerUnit, budget_groups, extrapolate, isoflop_profiles
from scalelab.laws.optimal import allocation_samples, optimal_allocation
from scalelab.laws.selection import MARGIN, TWO_AXIS, holdout_summary, selection_record
from scalelab.laws.validate import holdout as holdout_rule
from scalelab.laws.validate import split
from scalelab.records import Holdout

LAW = "two_axis"
FORM = "chinchilla"
X_NAMES = ("n_nonembed", "D")
FACTORS = (10.0, 100.0)
STORED_SAMPLES = 200
FRONTIER_POINTS = 25
LEVEL = 0.95
Candidate = FormCandidate | FrontierCandidate
N_STAR_SPAN = 4.0  # a budget's N* is identified when its 95% interval spans at most this factor


@dataclass
class Runs:
    """The finished rungs as arrays (NaN where a row has no value)."""

    n: np.ndarray
    d: np.ndarray
    loss: np.ndarray
    train_loss: np.ndarray
    flops: np.ndarray
    budget: np.ndarray
    epochs: np.ndarray
    unit: str

    @property
    def X(self) -> np.ndarray:
        return np.column_stack([self.n, self.d])

    def subset(self, keep: np.ndarray) -> Runs:
        return Runs(*(getattr(self, f)[keep] for f in ("n", "d", "loss", "train_loss", "flops",
                                                         "budget", "epochs")), unit=self.unit)


def epochs_of(row: dict[str, Any]) -> float | None:
    """Passes over the training split a rung made: its `epochs`, else D / train_units."""
    ep, d, size = _num(_get(row, "epochs")), _num(_get(row, "D", "tokens")), \
        _num(_get(row, "train_units"))
    ep = ep if np.isfinite(ep) else d / size
    return float(ep) if np.isfinite(ep) else None


def _get(row: dict[str, Any], *keys: str) -> Any:
    """The first key present in the row, then in its plan (store rows keep plan fields there)."""
    plan = row.get("plan") if isinstance(row.get("plan"), dict) else {}
    for source in (row, plan):
        for key in keys:
            if source.get(key) is not None:
                return source[key]
    return None


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return np.nan
    return f if np.isfinite(f) else np.nan


def runs_from_rows(rows: Sequence[dict[str, Any]]) -> Runs:
    """Finished rungs (status done, a positive finite loss) as `Runs`."""
    keep = [r for r in rows if isinstance(r, dict) and r.get("status", "done") == "done"
            and _num(r.get("val_loss")) > 0]

    def col(*keys: str) -> np.ndarray:
        return np.array([_num(_get(r, *keys)) for r in keep], dtype=float)

    units = {str(_get(r, "unit")) for r in keep if _get(r, "unit")}
    d = col("D", "tokens")
    epochs = np.array([np.nan if (e := epochs_of(r)) is None else e for r in keep])
    return Runs(n=col("n_nonembed", "n_params"), d=d, loss=col("val_loss"),
                train_loss=col("train_loss"), flops=col("flops"), budget=col("budget"),
                epochs=epochs, unit=units.pop() if len(units) == 1 else "token")


def _check(runs: Runs) -> None:
    """One line for input a law in N and D cannot be fitted to."""
    if len(runs.loss) == 0:
        raise UserError("no finished rung with a validation loss: nothing to fit in N and D")
    for name, v in (("N (n_nonembed)", runs.n), ("D", runs.d)):
        if not np.all(np.isfinite(v) & (v > 0)):
            raise UserError(f"every finished rung needs a positive {name}; some have none")
    sizes = np.unique(size_groups(runs.n)).size
    datas = np.unique(size_groups(runs.d)).size
    if datas < 2:
        raise UserError(f"every finished rung has D = {runs.d[0]:.4g}: a law in N and D needs "
                        "rungs at 2 or more D (a grid with several tokens, or IsoFLOP budgets)")
    if sizes < 2:
        raise UserError(f"every finished rung has N = {runs.n[0]:.4g}: a law in N and D needs "
                        "rungs at 2 or more sizes")
    points = n_distinct(runs.X)
    if points <= 5:
        raise UserError(f"{points} distinct (N, D) points: L(N, D) = E + A·N^-alpha + "
                        "B·D^-beta has 5 parameters and needs at least 6")


def _law(runs: Runs, bootstrap: int, seed: int) -> Law:
    return Law(FORM, bootstrap=bootstrap, seed=seed, level=LEVEL, x_names=X_NAMES,
               y_name="val_loss").fit(runs.X, runs.loss)


def _residual_sigma(law: Law, runs: Runs) -> float | None:
    dof = len(runs.loss) - law.form_.n_params
    if dof <= 0:
        return None
    r = np.log(law.predict(runs.X).point / runs.loss)
    return float(np.sqrt((r**2).sum() / dof))


def _value(point: float, samples: np.ndarray | None, level: float = LEVEL) -> dict[str, Any]:
    iv = None
    if samples is not None:
        s = samples[np.isfinite(samples)]
        if s.size > 1:
            lo, hi = np.quantile(s, _quantiles(level))
            iv = [float(lo), float(hi)]
    return {"value": float(point), "interval": iv}


def _slopes(law: Law, per_unit: FlopsPerUnit, c_lo: float, c_hi: float) -> dict[str, Any]:
    """a, b of Approach 3 over the compute range trained (d log N* / d log C, fitted over 9
    budgets), and their limits beta/(alpha+beta), alpha/(alpha+beta) where f(N) ∝ N."""
    grid = np.geomspace(c_lo, c_hi, 9) if c_hi > c_lo * 1.01 else np.array([c_lo, c_lo * 10])
    point, samples = allocation_samples(law, grid, per_unit=per_unit)
    X = np.column_stack([np.log(grid), np.ones(len(grid))])
    pinv = np.linalg.pinv(X)

    def slope(v: np.ndarray) -> np.ndarray:
        return (np.log(v) @ pinv.T)[:, 0]

    p = law.params_
    s_all = law.bootstrap_params_
    limit_a = p["beta"] / (p["alpha"] + p["beta"])
    limit_s = None if s_all is None else s_all[:, 4] / (s_all[:, 3] + s_all[:, 4])
    return {
        "a": _value(slope(point["N"])[0], None if samples is None else slope(samples["N"])),
        "b": _value(slope(point["D"])[0], None if samples is None else slope(samples["D"])),
        "a_limit": _value(limit_a, limit_s),
        "b_limit": _value(1.0 - limit_a, None if limit_s is None else 1.0 - limit_s),
        "range": [float(grid[0]), float(grid[-1])],
    }


def _degenerate(law: Law) -> str | None:
    """Why Approach 3 cannot be trusted for an allocation, or None."""
    if law.dof_ is not None and law.dof_ <= 0:
        return "exact fit: no more distinct (N, D) points than parameters"
    bound = [p for p in law.on_bound_ if p in ("alpha", "beta", "A", "B")]
    if bound:
        return f"{', '.join(bound)} on a bound of the fit: the data do not pin the law down"
    if law.bootstrap_theta_ is None:
        return "no bootstrap: no interval on its answer"
    return None


def _approach3(law: Law, runs: Runs, per_unit: FlopsPerUnit, computes: list[float],
               c_range: tuple[float, float]) -> dict[str, Any]:
    s = law.summary(max_samples=STORED_SAMPLES)
    out = {k: s[k] for k in ("law", "formula", "x", "params", "intervals", "on_bound", "dof",
                             "flags", "starts", "n_points", "objective", "bootstrap")}
    out["bootstrap_params"] = s.get("bootstrap_params")
    out["residual_sigma"] = _residual_sigma(law, runs)
    out.update(_slopes(law, per_unit, *c_range))
    out["allocations"] = optimal_allocation(law, computes, per_unit=per_unit)
    out["degenerate"] = _degenerate(law)
    return out


def _largest_point(a2: dict[str, Any] | None, a3: dict[str, Any],
                   c_max: float) -> dict[str, Any]:
    """N*, D*, tokens per parameter at the largest budget from each approach."""
    out: dict[str, Any] = {"compute": c_max, "approach2": None, "approach3": None}
    row = next(r for r in a3["allocations"] if abs(r["compute"] / c_max - 1) < 1e-9)
    iv = row["intervals"] or {}
    out["approach3"] = {k: {"value": row[k], "interval": iv.get(k)}
                        for k in ("N", "D", "tokens_per_param", "loss")}
    top = _top_budget(a2, c_max)
    if top is not None and top["N"] is not None:
        tpp = top["D"] / top["N"]
        out["approach2"] = {"N": {"value": top["N"], "interval": top["N_interval"]},
                            "D": {"value": top["D"], "interval": top["D_interval"]},
                            "tokens_per_param": {"value": tpp,
                                                 "interval": top["tokens_per_param_interval"]},
                            "loss": {"value": top["loss"], "interval": top["loss_interval"]}}
    return out


def _top_budget(a2: dict[str, Any] | None, c_max: float) -> dict[str, Any] | None:
    if not a2 or not a2.get("budgets"):
        return None
    top = a2["budgets"][-1]
    return top if abs(top["compute"] / c_max - 1) < 0.01 else None


def _overlap(x: dict[str, Any] | None, y: dict[str, Any] | None) -> bool | None:
    if not x or not y or x.get("interval") is None or y.get("interval") is None:
        return None
    (a, b), (c, d) = x["interval"], y["interval"]
    return a <= d and c <= b


def _why(a2: dict[str, Any] | None, a3: dict[str, Any], runs: Runs, c_max: float) -> str:
    """The reasons Approach 2 and 3 may differ at the largest budget, most telling first."""
    reasons = []
    top = _top_budget(a2, c_max)
    if top is None or top["N"] is None:
        reasons.append("the largest budget's parabola has no minimum (it opens downward)")
    else:
        lo, hi = top["n_range"]
        if not top["vertex_inside"]:
            reasons.append(f"the largest budget's parabola has its vertex at N = {top['N']:.3g}, "
                           f"outside the sizes it sampled ({lo:.3g} to {hi:.3g}): Approach 2's "
                           "N* there is an extrapolation of the parabola")
        if top["no_vertex_share"] > 0.1:
            reasons.append(f"{100 * top['no_vertex_share']:.0f}% of that parabola's bootstrap "
                           "refits have no minimum: the profile is too flat for its noise")
    bound = [p for p in a3["on_bound"]]
    if bound:
        reasons.append(f"Approach 3's {', '.join(bound)} sit(s) on a bound of the fit")
    if a3.get("starts", {}).get("disagree"):
        reasons.append("Approach 3's starts disagree on the optimum")
    repeated = int(np.sum(runs.epochs > 1))
    if repeated:
        reasons.append(f"{repeated} rung(s) repeat their data (epochs > 1), which neither "
                       "approach models")
    if not reasons:
        reasons.append("no parameter on a bound and the vertex inside its range: the parabola "
                       "is symmetric in log N while the loss along a budget is not, or the "
                       "law's form does not fit (compare a and b)")
    return "; ".join(reasons)


def _side_by_side(a2: dict[str, Any] | None, a3: dict[str, Any], runs: Runs,
                  c_max: float) -> dict[str, Any]:
    largest = _largest_point(a2, a3, c_max)
    have2 = a2 is not None and a2.get("a") is not None
    out = {
        "a": {"approach2": a2["a"] if have2 else None, "approach3": a3["a"]},
        "b": {"approach2": a2["b"] if have2 else None, "approach3": a3["b"]},
        "largest": largest,
        "agree": None, "why": None,
    }
    if largest["approach2"] is not None:
        out["agree"] = _overlap(largest["approach2"]["N"], largest["approach3"]["N"])
        if out["agree"] is not True:
            out["why"] = _why(a2, a3, runs, c_max)
    return out


def _budget_at(a2: dict[str, Any] | None, c: float) -> dict[str, Any] | None:
    """Approach 2's record of the budget at C (within 1%), or None."""
    for b in (a2 or {}).get("budgets") or []:
        if abs(b["compute"] / c - 1) < 0.01:
            return b
    return None


def _measured_best(runs: Runs, a2: dict[str, Any] | None, rows: np.ndarray,
                   c: float) -> tuple[float, float, str]:
    """(best loss, its N, where from) at a held-out budget: the parabola's vertex when it
    lies inside the sizes sampled, else the best rung."""
    top = _budget_at(a2, c)
    if top is not None and top["vertex_inside"]:
        return top["loss"], top["N"], "parabola vertex"
    best = rows[np.argmin(runs.loss[rows])]
    return float(runs.loss[best]), float(runs.n[best]), "best rung"


def hold_rule(rule: str) -> tuple[str, float]:
    """("largest", K) or ("below", C) from a holdout rule; UserError for any other."""
    kind, _, value = str(rule).partition(":")
    try:
        if kind == "largest":
            k = int(value or 1)
            if k >= 1:
                return kind, float(k)
        elif kind == "below":
            c = float(value)
            if c > 0:
                return kind, c
    except ValueError:
        pass
    raise UserError(f"bad holdout rule {rule!r} for a law in N and D: use largest:K (hold out "
                    "the K largest budgets, or sizes on a grid) or below:C (fit only on "
                    "budgets <= C)")


def _fit_mask(runs: Runs, rule: str) -> tuple[np.ndarray, list[float]] | str:
    """(runs to fit on, held budgets) by an IsoFLOP holdout rule, or why there are none."""
    groups = budget_groups(runs.budget)
    kind, value = hold_rule(rule)
    if kind == "largest":
        held = [g for g in groups[len(groups) - int(value):]] if len(groups) > value else []
    else:
        held = [g for g in groups if g[0] > value * (1 + 1e-6)]
    if not held:
        return f"holdout {rule}: no budget to predict ({len(groups)} budget(s))"
    if len(held) == len(groups):
        return f"holdout {rule}: no smaller budget to fit on"
    keep = np.ones(len(runs.loss), dtype=bool)
    for _, idx in held:
        keep[idx] = False
    return keep, [c for c, _ in held]


def _holdout_budget(cand: Candidate, runs: Runs, a2: dict[str, Any] | None, rule: str,
                    tolerance: float, bootstrap: int, seed: int
                    ) -> tuple[dict[str, Any] | None, str | None]:
    """Fit `cand` on the budgets the rule keeps, predict each held budget's best loss and N*."""
    mask = _fit_mask(runs, rule)
    if isinstance(mask, str):
        return None, mask
    keep, held = mask
    fit_runs = runs.subset(keep)
    why = cand.why_not(fit_runs)
    if why:
        return None, f"the budgets fitted on cannot fit {cand.name}: {why}"
    per_unit = FlopsPerUnit.from_runs(fit_runs.n, fit_runs.d, fit_runs.flops)
    try:
        fitted = cand.fit(fit_runs, per_unit, bootstrap, seed)
    except UserError as err:
        return None, f"the budgets fitted on cannot fit {cand.name}: {err}"
    points, stars = [], []
    groups = dict(budget_groups(runs.budget))
    for c, row in zip(held, fitted.allocate(np.array(held)), strict=True):
        iv = row["intervals"] or {}
        loss, n_star, source = _measured_best(runs, a2, groups[c], c)
        points.append({"x": c, "measured": loss, "predicted": row["loss"],
                       "lo": (iv.get("loss") or [None])[0],
                       "hi": (iv.get("loss") or [None, None])[1],
                       "rel_error": (row["loss"] - loss) / loss})
        stars.append((n_star, row, iv, source))
    c_fit = max(c for c, idx in budget_groups(runs.budget) if keep[idx].all())
    ho = Holdout(rule="largest_budget" if rule == "largest:1" else rule,
                 n_fit=int(keep.sum()), n_test=int((~keep).sum()), max_fit_size=c_fit,
                 points=points, params=dict(fitted.law.params_),
                 on_bound=list(fitted.law.on_bound_)).to_dict()
    n_star, row, iv, source = stars[-1]
    ho.update(x_name="C", measured_from=source, ratio=held[-1] / c_fit, tolerance=tolerance,
              within_tolerance=abs(points[-1]["rel_error"]) <= tolerance, law=cand.name,
              n_star={"measured": n_star, "predicted": row["N"], "interval": iv.get("N"),
                      "rel_error": (row["N"] - n_star) / n_star,
                      **_identified(_budget_at(a2, held[-1]))})
    return ho, None


def _identified(budget: dict[str, Any] | None) -> dict[str, Any]:
    """Whether a held-out budget's own runs pin its N*: its vertex's interval (Approach 2's
    bootstrap) spans at most N_STAR_SPAN. A flat valley leaves N* anywhere in a wide range,
    and then no law's error of N* there means much."""
    iv = None if budget is None else budget.get("N_interval")
    ok = iv is not None and iv[0] > 0 and iv[1] / iv[0] <= N_STAR_SPAN
    note = None
    if not ok:
        where = (f"anywhere in [{iv[0]:.3g}, {iv[1]:.3g}] ({LEVEL:.0%})" if iv
                 else "nowhere in particular (no interval)")
        note = (f"N* is not identified at this budget: its own runs put it {where}, so its "
                "error says little about the law")
    return {"measured_interval": iv, "identified": ok, "note": note}


def _holdout_grid(cand: Candidate, runs: Runs, rule: str, tolerance: float, bootstrap: int,
                  seed: int) -> tuple[dict[str, Any] | None, str | None]:
    """A grid ladder: the law fitted without the largest N (or sizes by the rule) predicts its
    rungs."""
    if not isinstance(cand, FormCandidate):
        return None, cand.why_not(runs) or f"{cand.name} needs IsoFLOP budgets"
    law = Law(cand.name, bootstrap=bootstrap, seed=seed, level=LEVEL, x_names=X_NAMES,
              y_name="val_loss")
    try:
        ho = holdout_rule(law, runs.X, runs.loss, rule).to_dict()
    except UserError as err:
        return None, str(err)
    top = Holdout.from_dict(ho).largest() or {}
    ratio = None if not ho["max_fit_size"] else float(runs.n.max() / ho["max_fit_size"])
    ho.update(x_name="N", measured_from="rungs", ratio=ratio, tolerance=tolerance,
              within_tolerance=abs(top.get("rel_error") or np.inf) <= tolerance, n_star=None,
              law=cand.name)
    return ho, None


def _holdout(cand: Candidate, runs: Runs, a2: dict[str, Any] | None, rule: str,
             tolerance: float, bootstrap: int, seed: int
             ) -> tuple[dict[str, Any] | None, str | None]:
    if a2 is not None:
        return _holdout_budget(cand, runs, a2, rule, tolerance, bootstrap, seed)
    return _holdout_grid(cand, runs, rule, tolerance, bootstrap, seed)


def _inner(cand: Candidate, runs: Runs, a2: dict[str, Any] | None, rule: str,
           tolerance: float) -> tuple[dict[str, Any] | None, str | None]:
    """The candidate fitted without the largest budget (or size) it would be fitted on, judged
    on that one (no bootstrap: the choice needs the point error only)."""
    if a2 is not None:
        mask = _fit_mask(runs, rule)
        if isinstance(mask, str):
            return None, mask
        return _holdout_budget(cand, runs.subset(mask[0]), a2, "largest:1", tolerance, 0, 0)
    keep = split(runs.X, rule)
    return _holdout_grid(cand, runs.subset(keep), "largest:1", tolerance, 0, 0)


def _candidates(runs: Runs, a2: dict[str, Any] | None, rule: str, tolerance: float,
                forced: str | None) -> dict[str, Any]:
    """Every candidate's inner holdout, and the choice they make (`laws.selection`)."""
    names = [forced] if forced else list(TWO_AXIS)
    rows = []
    for name in names:
        cand = get_candidate(name)
        inner, inner_skipped = _inner(cand, runs, a2, rule, tolerance)
        rows.append({"law": name, "formula": cand.formula, "n_params": cand.n_params,
                     "inner": holdout_summary(inner), "inner_skipped": inner_skipped,
                     "outer": None, "outer_skipped": None})
    return selection_record(rows, "budget" if a2 is not None else "size", forced,
                            MARGIN * tolerance)


def _outer(selection: dict[str, Any], runs: Runs, a2: dict[str, Any] | None, rule: str,
           tolerance: float, bootstrap: int, seed: int
           ) -> tuple[dict[str, Any] | None, str | None]:
    """Every candidate's outer holdout beside its inner one; the winner's in full (with its
    bootstrap interval), which is the record's `holdout`."""
    full: tuple[dict[str, Any] | None, str | None] = (None, None)
    for row in selection["candidates"]:
        win = row["law"] == selection["selected"]
        ho, skipped = _holdout(get_candidate(row["law"]), runs, a2, rule, tolerance,
                               bootstrap if win else 0, seed)
        row["outer"], row["outer_skipped"] = holdout_summary(ho), skipped
        if win:
            full = (ho, skipped)
    return full


def _warning(factor: float, holdout: dict[str, Any] | None, chosen: str) -> str | None:
    """None when the holdout checked an extrapolation this far and it held; else why not."""
    if chosen == "approach2":
        return (f"{factor:g}x beyond the largest budget from Approach 2's power laws in C "
                "(Approach 3 is degenerate): a pure power law in C has no floor, no evidence "
                "it holds this far")
    if holdout is None:
        return (f"{factor:g}x beyond the largest budget trained, and no holdout checked the "
                "law: no evidence it holds this far")
    ratio = holdout.get("ratio") or 1.0
    if not holdout.get("within_tolerance"):
        return (f"the holdout missed by {100 * abs(holdout['rel_error']):.1f}% at "
                f"{ratio:.2g}x: no evidence the law holds {factor:g}x beyond")
    if factor > ratio * (1 + 1e-9):
        return (f"{factor:g}x beyond the largest budget; the holdout checked {ratio:.2g}x only: "
                "the interval shows the fit's noise, not the error of its form")
    return None


def _chosen(selected: str, a2: dict[str, Any] | None, a3: dict[str, Any]) -> str | None:
    """What answers: the selected candidate ("approach3" for chinchilla), Approach 2 when
    Approach 3 was selected but is degenerate, else nothing."""
    if selected != FORM:
        return selected
    if a3["degenerate"] is None:
        return "approach3"
    if a2 is not None and a2.get("a") is not None:
        return "approach2"
    return None


def _allocate(record: dict[str, Any], c: np.ndarray, per_unit: FlopsPerUnit
              ) -> list[dict[str, Any]]:
    """The chosen fit's allocation rows at budgets c, from the record alone."""
    chosen = record.get("chosen")
    if chosen == "approach2":
        return extrapolate(record["approach2"], c, per_unit)
    if chosen == "approach3":
        return optimal_allocation(Law.from_summary(record["approach3"]), c, per_unit=per_unit)
    if chosen and record.get("selected_fit"):
        return allocate_from_record(record["selected_fit"], c, per_unit)
    raise UserError("this two-axis fit has no usable law: "
                    + str((record.get("approach3") or {}).get("degenerate")))


def _predictions(allocate: Any, chosen: str | None, c_max: float,
                 holdout: dict[str, Any] | None) -> list[dict[str, Any]]:
    if chosen is None:
        return []
    c = np.array([f * c_max for f in FACTORS])
    rows = allocate(c)
    for f, row in zip(FACTORS, rows, strict=True):
        iv = row["intervals"] or {}
        warning = _warning(f, holdout, chosen)
        row.update(factor=f, source=chosen, x=row["compute"], predicted=row["loss"],
                   lo=(iv.get("loss") or [None])[0], hi=(iv.get("loss") or [None, None])[1],
                   level=LEVEL, beyond_evidence=warning is not None, warning=warning)
    return rows


def fmt_count(v: float | None) -> str:
    """12345 -> 12.3k, 4.5e6 -> 4.5M (3 significant digits)."""
    if v is None or not np.isfinite(v):
        return "-"
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


def answer_text(row: dict[str, Any], unit: str = "token") -> str:
    """The one-line answer for an allocation row {compute, N, D, loss, intervals}."""
    iv = (row.get("intervals") or {}).get("loss")
    band = f" [{iv[0]:.4g}, {iv[1]:.4g}]" if iv else ""
    return (f"for {row['compute']:.3g} FLOPs, train N ≈ {fmt_count(row['N'])} on "
            f"D ≈ {fmt_count(row['D'])} {unit}s; expected loss {row['loss']:.4g}{band}")



def answer_for(record: dict[str, Any], compute: float | Sequence[float]) -> list[dict[str, Any]]:
    """Allocation rows (with `answer`) for any budget from a stored record, by its chosen fit;
    intervals come from the record's stored bootstrap draws (at most 200)."""
    per_unit = FlopsPerUnit.from_dict(record.get("flops_per_unit"))
    c = np.atleast_1d(np.asarray(compute, dtype=float))
    if not np.all(np.isfinite(c) & (c > 0)):
        raise UserError("compute budgets must be positive numbers")
    rows = _allocate(record, c, per_unit)
    for row in rows:
        row["answer"] = answer_text(row, record.get("unit") or "token")
        row["source"] = record["chosen"]
    return rows


def _frontier(allocate: Any, c_lo: float, c_hi: float) -> list[dict]:
    """The chosen fit's frontier from a third of the smallest budget to 100x the largest."""
    return allocate(np.geomspace(c_lo / 3.0, c_hi * 100.0, FRONTIER_POINTS))


def _compute_range(runs: Runs, per_unit: FlopsPerUnit) -> tuple[list[float], float, float]:
    """(budgets to allocate at, smallest, largest): the IsoFLOP budgets, or for a grid the
    compute its rungs spent (measured FLOPs, else f(N)·D)."""
    groups = budget_groups(runs.budget)
    if groups:
        cs = [c for c, _ in groups]
        return cs, cs[0], cs[-1]
    spent = np.where(np.isfinite(runs.flops), runs.flops, per_unit(runs.n) * runs.d)
    return [float(spent.max())], float(spent.min()), float(spent.max())


def _selected_fit(selected: str, law: Law, runs: Runs, per_unit: FlopsPerUnit, bootstrap: int,
                  seed: int) -> dict[str, Any] | None:
    """The selected candidate fitted to every run (None: Approach 3, stored as approach3)."""
    if selected == FORM:
        return None
    cand = get_candidate(selected)
    why = cand.why_not(runs)
    if why:
        raise UserError(f"law {selected!r} cannot be fitted to these runs: {why}")
    return cand.fit(runs, per_unit, bootstrap, seed).record


def fit_two_axis(rows: list[dict], *, bootstrap: int = 1000, seed: int = 0,
                 tolerance: float = 0.02, compute: Sequence[float] | None = None,
                 holdout: str = "largest:1", law: str | None = None) -> dict[str, Any]:
    """Fit L(N, D) two ways to a study's rungs and answer the compute-optimal question.

    See the module docstring for the record. `compute` adds `answers` for those budgets (the
    CLI's --compute). `holdout`: largest:K holds out the K largest budgets (on a grid, sizes),
    below:C fits only on budgets <= C. `law` forces one candidate (`laws.selection.TWO_AXIS`);
    by default each candidate's inner holdout chooses (`selection`, `candidates`). UserError (one
    line) for rungs that cannot give a law in N and D: a single D, a single N, 5 or fewer
    distinct points.
    """
    if not 0 < tolerance < 1:
        raise UserError(f"tolerance must be between 0 and 1, got {tolerance}")
    hold_rule(holdout)
    if law is not None:
        get_candidate(law)  # an unknown or one-input law: one line, before any fitting
    runs = runs_from_rows(rows)
    _check(runs)
    per_unit = FlopsPerUnit.from_runs(runs.n, runs.d, runs.flops)
    a3_law = _law(runs, bootstrap, seed)
    computes, c_lo, c_max = _compute_range(runs, per_unit)
    a3 = _approach3(a3_law, runs, per_unit, computes, (c_lo, c_max))
    a2 = None
    if budget_groups(runs.budget):
        a2 = isoflop_profiles(runs.n, runs.d, runs.loss, runs.budget, per_unit,
                              bootstrap=bootstrap, seed=seed, level=LEVEL,
                              fallback_sigma=a3["residual_sigma"])
    selection = _candidates(runs, a2, holdout, tolerance, law)
    ho, skipped = _outer(selection, runs, a2, holdout, tolerance, bootstrap, seed)
    side = _side_by_side(a2, a3, runs, c_max)
    record: dict[str, Any] = {
        "law": LAW, "formula": a3_law.form_.formula, "x": list(X_NAMES), "y": "val_loss",
        "level": LEVEL, "unit": runs.unit, "n_rungs": int(len(runs.loss)),
        "ladder": "isoflop" if a2 is not None else "grid",
        "params": dict(a3_law.params_), "intervals": a3_law.intervals(),
        "on_bound": list(a3_law.on_bound_), "dof": a3_law.dof_, "flags": list(a3["flags"]),
        "flops_per_unit": per_unit.to_dict(), "budgets": computes,
        "approach3": a3, "approach2": a2, "comparison": side,
        "agree": side["agree"], "why": side["why"],
        "holdout": ho, "holdout_skipped": skipped, "tolerance": tolerance,
        "selection": {k: v for k, v in selection.items() if k != "candidates"},
        "candidates": selection["candidates"],
        "selected_fit": _selected_fit(selection["selected"], a3_law, runs, per_unit, bootstrap,
                                      seed),
        "repeated_data": int(np.sum(runs.epochs > 1)),
    }
    record["chosen"] = _chosen(selection["selected"], a2, a3)

    def allocate(c: np.ndarray) -> list[dict[str, Any]]:
        return _allocate(record, c, per_unit)

    if record["chosen"] == "approach3":  # the full bootstrap, not the 200 stored draws
        def allocate(c: np.ndarray) -> list[dict[str, Any]]:  # noqa: F811
            return optimal_allocation(a3_law, c, per_unit=per_unit)

    record["predictions"] = _predictions(allocate, record["chosen"], c_max, ho)
    # The frontier of the chosen candidate; Approach 3's when Approach 3 or 2 answers (as the
    # report has always drawn it) or when nothing does.
    other = record["chosen"] not in (None, "approach2", "approach3")
    record["frontier"] = _frontier(allocate if other else lambda c: optimal_allocation(
        a3_law, c, per_unit=per_unit), c_lo, c_max)
    record["answer"] = (answer_text(allocate(np.array([c_max]))[0], runs.unit)
                        if record["chosen"] else None)
    if compute is not None:
        record["answers"] = answer_for(record, compute) if record["chosen"] else []
    return record
