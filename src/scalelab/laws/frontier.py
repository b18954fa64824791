"""The compute frontier as a law of its own: L*(C) = E + A·C^-gamma, N*(C), D*(C).

Each IsoFLOP budget C gives one point of the frontier: the vertex of a parabola in log N through
its runs (Approach 2, `isoflop._parabolas`), its best loss L*(C) and size N*(C); D*(C) is read off
the budget's own runs (log D is a line in log N along a budget, exact when C = k·N·D). Across
budgets:

- L*(C) = E + A·C^-gamma, the `power` form on x = C, fitted by the law engine (log-space Huber,
  grid of starts). Three parameters on the frontier itself: it never has to get the whole
  (N, D) plane right to get the best loss of the next budget right, which is why it extrapolates
  better than Approach 3 on published sweeps (benchmarks/real_ladders.py).
- N* ∝ C^a and D* ∝ C^b, lines in log-log.

Intervals: a bootstrap over runs within budgets. Each draw resamples every budget's runs with
replacement (as many as it has), refits every parabola and then the three laws; a draw whose
parabola for a budget has no minimum (or fewer than 3 distinct sizes) leaves that budget out of
that draw. Unlike `isoflop_profiles` (a parametric bootstrap about the parabolas) this carries
the parabola's misfit as well as the noise: an IsoFLOP valley is not exactly a parabola.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fit import Law, _quantiles
from scalelab.laws.groups import size_groups
from scalelab.laws.isoflop import MIN_POINTS, _parabolas, _vertex, budget_groups
from scalelab.laws.objective import Objective
from scalelab.laws.optim import batched_lbfgs

LOSS_FORM = "power"
FORMULA = "L*(C) = E + A·C^-gamma; N* ∝ C^a; D* ∝ C^b (over the IsoFLOP vertices)"
MIN_BUDGETS = 3  # L*(C) = E + A·C^-gamma has 3 parameters


@dataclass(frozen=True)
class Vertex:
    """One budget's point of the frontier (None where its parabola has no minimum)."""

    compute: float
    n_points: int
    n_range: tuple[float, float]
    N: float | None
    D: float | None
    loss: float | None
    coef: tuple[float, float, float]  # c2, c1, c0 of loss = c2·v² + c1·v + c0, v = log N - centre
    centre: float

    @property
    def inside(self) -> bool:
        """The vertex lies within the sizes the budget sampled (else it is extrapolated)."""
        return self.N is not None and self.n_range[0] <= self.N <= self.n_range[1]

    def parabola(self, n: Any) -> np.ndarray:
        """The budget's fitted loss at sizes n (how much a wrong N* costs along this budget)."""
        v = np.log(np.asarray(n, dtype=float)) - self.centre
        c2, c1, c0 = self.coef
        return c2 * v**2 + c1 * v + c0


@dataclass
class Frontier:
    """L*(C), N*(C), D*(C) fitted to the budgets' vertices, with bootstrap draws.

    `loss_law` is the fitted `power` law of L* in C (its `alpha` is gamma); `n_line`, `d_line`
    are (slope, intercept) of log N*, log D* against log C; the draws (one row per bootstrap
    resample, NaN where a draw had too few vertices) give the intervals.
    """

    vertices: list[Vertex]
    loss_law: Law
    n_line: tuple[float, float]
    d_line: tuple[float, float]
    level: float
    loss_draws: np.ndarray | None = None  # (B, 3) theta of the power law
    n_draws: np.ndarray | None = None  # (B, 2) slope, intercept
    d_draws: np.ndarray | None = None
    vertex_draws: dict[float, np.ndarray] = field(default_factory=dict)  # C -> (B, 2) N*, L*

    @property
    def used(self) -> list[Vertex]:
        return [v for v in self.vertices if v.N is not None]

    def predict(self, compute: Any) -> dict[str, Any]:
        """L*, N*, D* at budgets `compute`, each {"value": (m,), "interval": (m, 2) or None}."""
        c = np.atleast_1d(np.asarray(compute, dtype=float))
        if not np.all(np.isfinite(c) & (c > 0)):
            raise UserError("compute budgets must be positive numbers")
        lc = np.log(c)
        form = self.loss_law.form_
        out = {"compute": c}
        point = form.predict(self.loss_law.theta_, lc[:, None])[0]
        out["loss"] = self._with_interval(point, None if self.loss_draws is None else
                                          form.predict(self._finite(self.loss_draws), lc[:, None]))
        for name, line, draws in (("N", self.n_line, self.n_draws),
                                  ("D", self.d_line, self.d_draws)):
            point = np.exp(line[1] + line[0] * lc)
            s = None if draws is None else np.exp(self._finite(draws)[:, 1:2]
                                                  + self._finite(draws)[:, :1] * lc)
            out[name] = self._with_interval(point, s)
        return out

    @staticmethod
    def _finite(draws: np.ndarray) -> np.ndarray:
        return draws[np.isfinite(draws).all(1)]

    def _with_interval(self, point: np.ndarray, samples: np.ndarray | None) -> dict[str, Any]:
        if samples is None or len(samples) < 2:
            return {"value": point, "interval": None}
        lo, hi = np.quantile(samples, _quantiles(self.level), axis=0)
        return {"value": point, "interval": np.column_stack([lo, hi])}

    def allocate(self, compute: Any) -> list[dict[str, Any]]:
        """Rows in the shape of `optimal.optimal_allocation`: compute, k (= C / (N*·D*)), N, D,
        tokens_per_param, loss and their intervals (None without a bootstrap)."""
        p = self.predict(compute)
        ratio = None  # D*/N* per draw: the N and D lines of one draw go together
        if self.n_draws is not None and self.d_draws is not None:
            both = np.isfinite(self.n_draws).all(1) & np.isfinite(self.d_draws).all(1)
            lc = np.log(p["compute"])
            log_ratio = ((self.d_draws[both, 1:2] - self.n_draws[both, 1:2])
                         + (self.d_draws[both, :1] - self.n_draws[both, :1]) * lc)
            ratio = self._with_interval(p["D"]["value"] / p["N"]["value"], np.exp(log_ratio))
        have = ratio is not None and all(
            x["interval"] is not None for x in (p["N"], p["D"], p["loss"], ratio))
        rows = []
        for j, c in enumerate(p["compute"]):
            n, d = float(p["N"]["value"][j]), float(p["D"]["value"][j])
            row: dict[str, Any] = {"compute": float(c), "k": float(c / (n * d)), "N": n, "D": d,
                                   "tokens_per_param": d / n,
                                   "loss": float(p["loss"]["value"][j]), "intervals": None}
            if have:
                row["intervals"] = {
                    key: [float(v) for v in src["interval"][j]]
                    for key, src in (("N", p["N"]), ("D", p["D"]),
                                     ("tokens_per_param", ratio), ("loss", p["loss"]))}
            rows.append(row)
        return rows

    def vertex_interval(self, compute: float) -> dict[str, list[float] | None]:
        """Bootstrap intervals of one budget's own N* and L* (resampling its runs)."""
        key = min(self.vertex_draws, key=lambda c: abs(np.log(c / compute)), default=None)
        if key is None or abs(np.log(key / compute)) > 0.01:
            return {"N": None, "loss": None}
        s = self.vertex_draws[key]
        out: dict[str, list[float] | None] = {}
        for j, name in enumerate(("N", "loss")):
            col = s[:, j][np.isfinite(s[:, j])]
            out[name] = (None if col.size < 2 else
                         [float(q) for q in np.quantile(col, _quantiles(self.level))])
        return out

    def summary(self, max_samples: int | None = 200) -> dict[str, Any]:
        """JSON-ready record: the vertices, the three laws, their intervals and up to
        `max_samples` bootstrap draws (enough for `from_summary` to answer with intervals)."""
        p = self.loss_law.params_
        iv = _param_intervals(self.loss_draws, self.loss_law, self.level)
        lines = {}
        for name, line, draws in (("N", self.n_line, self.n_draws),
                                  ("D", self.d_line, self.d_draws)):
            s = None if draws is None else self._finite(draws)
            lines[name] = {"exponent": line[0], "intercept": line[1],
                           "exponent_interval": None if s is None or len(s) < 2 else
                           [float(q) for q in np.quantile(s[:, 0], _quantiles(self.level))]}
        draws = None
        if self.loss_draws is not None:
            # the draws where all three laws could be fitted, as plain JSON numbers
            ok = np.flatnonzero(np.isfinite(np.column_stack(
                [self.loss_draws, self.n_draws, self.d_draws])).all(1))[:max_samples]
            draws = {k: v[ok].tolist() for k, v in (
                ("loss_theta", self.loss_draws), ("N", self.n_draws), ("D", self.d_draws))}
        return {
            "law": "frontier", "formula": FORMULA,
            "params": {"E": p["E"], "A": p["A"], "gamma": p["alpha"]},
            "intervals": {"E": iv["E"], "A": iv["A"], "gamma": iv["alpha"]},
            "on_bound": ["gamma" if n == "alpha" else n for n in self.loss_law.on_bound_],
            "a": lines["N"], "b": lines["D"], "level": self.level,
            "bootstrap": 0 if self.loss_draws is None else int(len(self.loss_draws)),
            "loss_law": self.loss_law.summary(),
            "vertices": [{"compute": v.compute, "N": v.N, "D": v.D, "loss": v.loss,
                          "n_points": v.n_points, "n_range": list(v.n_range),
                          "inside": v.inside, "coef": list(v.coef), "centre": v.centre}
                         for v in self.vertices],
            "draws": draws,
        }

    @classmethod
    def from_summary(cls, d: dict[str, Any]) -> Frontier:
        """A fitted frontier back from `summary()`, ready to `predict` and `allocate` (its
        intervals from the stored draws)."""
        try:
            vertices = [Vertex(compute=float(v["compute"]), n_points=int(v["n_points"]),
                               n_range=(float(v["n_range"][0]), float(v["n_range"][1])),
                               N=v["N"], D=v["D"], loss=v["loss"],
                               coef=tuple(float(c) for c in v["coef"]),  # type: ignore[arg-type]
                               centre=float(v["centre"])) for v in d["vertices"]]
            fr = cls(vertices=vertices, loss_law=Law.from_summary(d["loss_law"]),
                     n_line=(float(d["a"]["exponent"]), float(d["a"]["intercept"])),
                     d_line=(float(d["b"]["exponent"]), float(d["b"]["intercept"])),
                     level=float(d.get("level") or 0.95))
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise UserError(f"not a frontier record: missing or bad {err}") from None
        draws = d.get("draws")
        if draws:
            fr.loss_draws, fr.n_draws, fr.d_draws = (
                np.array(draws[k], dtype=float) for k in ("loss_theta", "N", "D"))
        return fr


def _param_intervals(draws: np.ndarray | None, law: Law,
                     level: float) -> dict[str, list[float] | None]:
    names = law.form_.param_names
    if draws is None:
        return {n: None for n in names}
    nat = law.form_.to_params(draws[np.isfinite(draws).all(1)])
    if len(nat) < 2:
        return {n: None for n in names}
    lo, hi = np.quantile(nat, _quantiles(level), axis=0)
    return {n: [float(lo[j]), float(hi[j])] for j, n in enumerate(names)}


def _check_arrays(n: Any, d: Any, loss: Any, budget: Any) -> tuple[np.ndarray, ...]:
    arrays = []
    for name, v in (("N", n), ("D", d), ("loss", loss), ("budget", budget)):
        try:
            a = np.asarray(v, dtype=float).ravel()
        except (TypeError, ValueError):
            raise UserError(f"{name} must be numbers") from None
        bad = np.flatnonzero(~(np.isfinite(a) & (a > 0)))
        if bad.size:
            raise UserError(f"{name} must be positive and finite; row {bad[0]} has {a[bad[0]]}")
        arrays.append(a)
    if len({a.size for a in arrays}) != 1:
        raise UserError("N, D, loss and budget must have one value per run")
    return tuple(arrays)


def _d_line(u: np.ndarray, ld: np.ndarray) -> tuple[float, float]:
    """log D = slope·log N + intercept along one budget (slope -1 when C = k·N·D exactly)."""
    slope, icpt = np.polyfit(u, ld, 1)
    return float(slope), float(icpt)


def budget_vertices(n: Any, d: Any, loss: Any, budget: Any) -> list[Vertex]:
    """One `Vertex` per budget with runs at 3 or more sizes, smallest budget first.

    `budget` is each run's IsoFLOP budget, or its compute C: runs whose values lie within 1%
    are one budget (`isoflop.budget_groups`).
    """
    n, d, loss, budget = _check_arrays(n, d, loss, budget)
    out = []
    for c, idx in budget_groups(budget):
        if np.unique(size_groups(n[idx])).size < MIN_POINTS:
            continue
        u = np.log(n[idx])
        c2, c1, c0, centre = _parabolas(u, loss[idx])
        u_star, l_star = _vertex(c2, c1, c0, centre)
        ok = bool(np.isfinite(u_star[0]))
        slope, icpt = _d_line(u, np.log(d[idx]))
        out.append(Vertex(
            compute=c, n_points=int(idx.size),
            n_range=(float(n[idx].min()), float(n[idx].max())),
            N=float(np.exp(u_star[0])) if ok else None,
            D=float(np.exp(icpt + slope * u_star[0])) if ok else None,
            loss=float(l_star[0]) if ok else None,
            coef=(float(c2[0]), float(c1[0]), float(c0[0])), centre=centre))
    return out


def _weighted_vertices(u: np.ndarray, y: np.ndarray, sizes: np.ndarray,
                       W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log N*, L*) of the parabola fitted with run weights W (B, n), one per row; NaN where a
    row has fewer than 3 distinct sizes or no minimum."""
    centre = float(u.mean())
    v = u - centre
    X = np.column_stack([v**2, v, np.ones_like(v)])
    xtwx = np.einsum("bn,ni,nj->bij", W, X, X)
    xtwy = np.einsum("bn,ni,n->bi", W, X, y)
    enough = np.array([np.unique(sizes[w > 0]).size >= MIN_POINTS for w in W])
    xtwx[~enough] = np.eye(3)  # placeholder for rows left out below
    coef = np.linalg.solve(xtwx, xtwy[..., None])[..., 0]
    u_s, l_s = _vertex(coef[:, 0], coef[:, 1], coef[:, 2], centre)
    u_s[~enough] = np.nan
    l_s[~enough] = np.nan
    return u_s, l_s


def _lines(log_c: np.ndarray, log_y: np.ndarray) -> np.ndarray:
    """(B, 2) slope, intercept of log y against log C per row, over the finite entries."""
    out = np.full((len(log_y), 2), np.nan)
    for i, row in enumerate(log_y):
        ok = np.isfinite(row)
        if ok.sum() >= 2:
            out[i] = np.polyfit(log_c[ok], row[ok], 1)
    return out


def _bootstrap(n: np.ndarray, d: np.ndarray, loss: np.ndarray, budget: np.ndarray,
               vertices: list[Vertex], law: Law, B: int,
               seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[float, np.ndarray]]:
    """Resample runs within every budget, refit the vertices, then the three laws."""
    rng = np.random.default_rng(seed)
    groups = {c: idx for c, idx in budget_groups(budget)}
    comp = np.array([v.compute for v in vertices])
    u_draws = np.full((B, len(vertices)), np.nan)
    l_draws = np.full((B, len(vertices)), np.nan)
    d_draws = np.full((B, len(vertices)), np.nan)
    for j, v in enumerate(vertices):
        idx = groups[v.compute]
        picks = rng.integers(0, idx.size, size=(B, idx.size))
        W = np.stack([np.bincount(p, minlength=idx.size) for p in picks]).astype(float)
        u = np.log(n[idx])
        u_draws[:, j], l_draws[:, j] = _weighted_vertices(u, loss[idx], size_groups(n[idx]), W)
        slope, icpt = _d_line(u, np.log(d[idx]))
        d_draws[:, j] = icpt + slope * u_draws[:, j]
    log_c = np.log(comp)
    use = np.array([v.N is not None for v in vertices])
    n_lines = _lines(log_c[use], u_draws[:, use])
    d_lines = _lines(log_c[use], d_draws[:, use])
    loss_thetas = _refit_loss(law, log_c[use], l_draws[:, use])
    per_budget = {v.compute: np.column_stack([np.exp(u_draws[:, j]), l_draws[:, j]])
                  for j, v in enumerate(vertices)}
    return loss_thetas, n_lines, d_lines, per_budget


def _refit_loss(law: Law, log_c: np.ndarray, l_draws: np.ndarray) -> np.ndarray:
    """The power law of L* in C refitted to every draw's vertices at once, from the full fit's
    optimum; a budget missing from a draw (NaN) gets weight 0 there."""
    form = law.form_
    ok = np.isfinite(l_draws) & (l_draws > 0)
    ly = np.log(np.where(ok, l_draws, 1.0))
    Z = log_c[:, None]
    lo, hi = law.bounds_
    obj = Objective(form, Z, ly, loss=law.loss, delta=law.delta, weights=ok.astype(float))
    starts = np.tile(law.theta_, (len(ly), 1))
    res = batched_lbfgs(obj, starts, lo, hi, ftol=1e-14, gtol=1e-9)
    thetas = res.x.copy()
    thetas[ok.sum(1) < MIN_BUDGETS] = np.nan  # too few vertices to fit 3 parameters
    return thetas


def fit_frontier(n: Any, d: Any, loss: Any, budget: Any, *, bootstrap: int = 1000,
                 seed: int = 0, level: float = 0.95) -> Frontier:
    """Fit L*(C), N*(C), D*(C) to IsoFLOP runs (one value per run of N, D, loss and budget;
    `budget` may be each run's compute C, see `budget_vertices`).

    UserError (one line) when fewer than 3 budgets have a parabola with a minimum.
    """
    _quantiles(level)
    n, d, loss, budget = _check_arrays(n, d, loss, budget)
    vertices = budget_vertices(n, d, loss, budget)
    used = [v for v in vertices if v.N is not None]
    if len(used) < MIN_BUDGETS:
        raise UserError(f"{len(used)} IsoFLOP budget(s) with runs at 3 or more sizes and a "
                        f"minimum: the frontier L*(C) = E + A·C^-gamma needs {MIN_BUDGETS}")
    c = np.array([v.compute for v in used])
    law = Law(LOSS_FORM, bootstrap=0, level=level, x_names=("C",), y_name="best loss")
    law.fit(c, np.array([v.loss for v in used]))
    n_line = np.polyfit(np.log(c), np.log([v.N for v in used]), 1)
    d_line = np.polyfit(np.log(c), np.log([v.D for v in used]), 1)
    fr = Frontier(vertices=vertices, loss_law=law, n_line=(float(n_line[0]), float(n_line[1])),
                  d_line=(float(d_line[0]), float(d_line[1])), level=level)
    if bootstrap > 0:
        fr.loss_draws, fr.n_draws, fr.d_draws, fr.vertex_draws = _bootstrap(
            n, d, loss, budget, vertices, law, int(bootstrap), seed)
    return fr
