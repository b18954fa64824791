"""How often a ladder's law lands within the tolerance at a target: synthetic ladders, refitted.

A noise model (`NoiseModel`) is a law taken as the truth (a study's fitted power law, or a prior)
and the noise of one run about it: sigma, the sd of log L across seeds, per size (measured from
a study's seed repeats) or one value for every size (assumed). `simulate` draws `sims` synthetic
ladders of a candidate (`Ladder`: its sizes, and how many seeds each), each run's log loss the
law's plus Gaussian noise of its size's sigma, and fits each the way the study fits its own
runs (`laws.study`): the same form and objective (Huber on log residuals), the same weights
(each run by 1/sigma of its size, from the synthetic ladder's own repeats: `laws.noise`), and
the same form selection (`laws.selection`: a ladder of up to 8 sizes leaves no other form an
inner holdout, so power answers; larger ladders are refused rather than fitted otherwise). All
synthetic ladders of a candidate are fitted in one batch by the law engine's batched L-BFGS
(`laws.optim`), from a few starts each; `exact_fit` is the same fit through `Law.fit` (its full
grid of starts), for checks. The error at the target is predicted / true - 1, against the law's
own value there (the mean of a seed's loss), not one noisy run.

With an even number of seeds a size the study's nearly-L1 fit is not unique (any law between
each size's two seeds has the same objective), and which of the equal optima a fit ends at
depends on its path: the batch and `Law.fit` may then differ, as two starts of `Law.fit` may.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fit import Law, _rows
from scalelab.laws.forms import get_form
from scalelab.laws.groups import size_groups
from scalelab.laws.noise import NU0, repeat_noise
from scalelab.laws.objective import Objective
from scalelab.laws.optim import batched_lbfgs
from scalelab.laws.selection import ONE_AXIS

FORM = "power"  # the study's law in N; the one form the simulation fits (see MAX_SIZES)
LEVEL = 0.95  # the spread reported: the central 95% of the simulated errors
# The inner holdout fits all but the two largest sizes; another one-axis form takes part when
# that leaves it more distinct sizes than it has parameters (bnsl: 6, from 9 sizes). Up to here
# the study's selection always answers with power, which is what is simulated.
MAX_SIZES = min(get_form(f).n_params for f in ONE_AXIS if f != FORM) + 2


@dataclass(frozen=True)
class Ladder:
    """A candidate ladder: the sizes the law is fitted on (non-embedding N, ascending), seeds
    per size below `repeats_below` (all fitted sizes when None), one run at and above it; or,
    with `counts`, that many runs of each size (a study as it stands, which `grow` adds to)."""

    sizes: tuple[float, ...]
    repeats: int = 1
    repeats_below: float | None = None
    counts: tuple[int, ...] | None = None

    def runs_of(self, n: float) -> int:
        if self.counts is not None:
            return self.counts[self.sizes.index(n)]
        if self.repeats_below is not None and n >= self.repeats_below:
            return 1
        return self.repeats

    @property
    def most_runs(self) -> int:
        return max(self.runs_of(n) for n in self.sizes)

    def run_sizes(self) -> np.ndarray:
        """N of every run, each size once per seed."""
        return np.array([n for n in self.sizes for _ in range(self.runs_of(n))], dtype=float)

    def describe(self) -> str:
        from scalelab.values import fmt_count

        seeds = (f"{self.repeats} seeds" if self.repeats_below is None else
                 f"{self.repeats} seeds below {fmt_count(self.repeats_below)}")
        if self.counts is not None:
            seeds = "seeds " + "/".join(map(str, self.counts))
        elif self.repeats == 1:
            seeds = "1 seed"
        return (f"{len(self.sizes)} sizes {fmt_count(self.sizes[0])}-"
                f"{fmt_count(self.sizes[-1])}, {seeds}")


@dataclass
class NoiseModel:
    """The truth a plan simulates from: `law` (a fitted power law in N) and the noise of one run,
    sigma (sd of log L) at `sizes` (interpolated in log N between them, constant beyond)."""

    law: Law
    sizes: np.ndarray
    sigma: np.ndarray
    source: str  # "measured" (seed repeats of a study) or "assumed"
    record: dict[str, Any]

    def sigma_at(self, n: np.ndarray) -> np.ndarray:
        ln = np.log(np.asarray(n, dtype=float))
        return np.interp(ln, np.log(self.sizes), self.sigma)

    def loss_at(self, n: np.ndarray) -> np.ndarray:
        return self.law.predict(np.asarray(n, dtype=float)).point


def check_law(law: Law) -> Law:
    if law.form != FORM:
        raise UserError(f"a plan simulates the study's power law; this law is {law.form!r} "
                        "(give a fit of the power law, L(N) = E + A·N^-alpha)")
    return law


def measured_noise(law: Law, n: Any, loss: Any) -> NoiseModel:
    """The noise of a study's runs (its seed repeats: `laws.noise.repeat_noise`, each size's sd
    shrunk toward the pooled one) about its law; a UserError without repeats."""
    noise = repeat_noise(n, loss)
    if noise is None:
        raise UserError("the study has no seed repeats (every size ran once), so there is no "
                        "noise to measure; give --noise (e.g. --noise 1%) to assume one")
    rows = [s for s in noise.record["sizes"] if s["n_runs"] > 1]
    record = {**noise.record, "shapes": shape_offsets(law, noise.record["sizes"])}
    return NoiseModel(check_law(law), np.array([s["x"] for s in rows]),
                      np.array([s["sigma"] for s in rows]), "measured", record)


def shape_offsets(law: Law, sizes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """How far each size's mean sits off the law, beyond what its seeds' noise explains: the
    part of a ladder's noise that belongs to the size (its shape), not the run, which more
    seeds cannot average away and the plan's noise model (seed noise about a smooth law) leaves
    out. Measured on 30 seeds a size of the default ladder, such offsets reached 2.8% where each
    mean was known to 0.1-0.3% (docs/plan.md, "Checked against real ladders").

    `sizes`: `repeat_noise`'s record of each size (x, n_runs, mean, sigma). An offset is the
    log of a size's mean loss over the law's value there; `sigma` is a method-of-moments
    estimate of their spread, sqrt(max(0, (sum of offset^2 - sum of sigma_s^2 / runs_s) /
    (sizes - 3))) (3: the law's parameters). None with fewer than 5 sizes (too few degrees of
    freedom to say)."""
    if len(sizes) < 5:
        return None
    x = np.array([s["x"] for s in sizes])
    offset = np.log([s["mean"] for s in sizes]) - np.log(law.predict(x).point)
    seed_var = np.array([s["sigma"] ** 2 / s["n_runs"] for s in sizes])
    dof = len(sizes) - len(law.theta_)
    var = max(0.0, float((offset**2).sum() - seed_var.sum()) / dof)
    return {"sigma": float(np.sqrt(var)), "dof": dof,
            "seed_se": float(np.sqrt(seed_var.mean())),
            "sizes": [{"x": float(n), "offset": float(o)} for n, o in zip(x, offset, strict=True)]}


def assumed_noise(law: Law, sigma: float) -> NoiseModel:
    """One sigma (sd of log L, 0.01 = 1%) for a run of any size."""
    if not 0 < sigma < 1:
        raise UserError(f"--noise must be between 0 and 100%, got {100 * sigma:g}%")
    return NoiseModel(check_law(law), np.array([1.0]), np.array([float(sigma)]), "assumed",
                      {"source": "assumed", "sigma": float(sigma)})


@dataclass
class Outcome:
    """What `simulate` found for one ladder: the errors at the target over the synthetic
    ladders and what they say."""

    errors: np.ndarray
    tolerance: float

    @property
    def p_within(self) -> float:
        return float(np.mean(np.abs(self.errors) <= self.tolerance))

    def record(self) -> dict[str, Any]:
        lo, hi = np.quantile(self.errors, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
        p = self.p_within
        return {"p_within": p, "p_se": float(np.sqrt(p * (1 - p) / len(self.errors))),
                "mean_error": float(self.errors.mean()), "sd_error": float(self.errors.std()),
                "spread": [float(lo), float(hi)], "spread_width": float(hi - lo),
                "sims": len(self.errors)}


def study_weights(x: np.ndarray, ly: np.ndarray) -> np.ndarray | None:
    """(sims, runs) weights the study gives each synthetic ladder's runs, or None when no size
    repeats (every run weighs 1). `laws.noise.repeat_noise` row by row, in one pass over all
    rows: each size's variance of log L (ddof 1) shrunk toward the pooled one with NU0 degrees
    of freedom, each run weighed by pooled / sigma of its size, the weights scaled to mean 1."""
    groups = size_groups(x)
    counts = np.bincount(groups)
    if counts.max() < 2:
        return None
    nu = (counts - 1).astype(float)
    onehot = np.eye(len(counts))[groups]  # (runs, sizes)
    mean = (ly @ onehot) / counts
    var = ((ly - mean[:, groups]) ** 2 @ onehot) / np.maximum(nu, 1.0)
    pooled2 = (var * nu).sum(1, keepdims=True) / nu.sum()
    sigma = np.sqrt((nu * var + NU0 * pooled2) / (nu + NU0))
    raw = np.sqrt(pooled2) / sigma[:, groups]
    return raw / raw.mean(1, keepdims=True)


def _starts(law: Law, lo: np.ndarray, hi: np.ndarray, ly: np.ndarray) -> np.ndarray:
    """Starts of every synthetic fit: the truth, and the truth with E at either end of its
    range (an E near 0 and near the smallest loss are the two basins a power fit can end in)."""
    theta = np.clip(law.theta_, lo, hi)
    low, high = theta.copy(), theta.copy()
    low[0] = lo[0]
    high[0] = min(hi[0], float(np.log(0.5) + ly.min()))
    return np.vstack([theta, low, high])


def fit_batch(law: Law, x: np.ndarray, ly: np.ndarray, weights: np.ndarray | None,
              *, loss: str = "huber", delta: float = 1e-3) -> np.ndarray:
    """(sims, P) fitted parameters (fitting parameterization) of every synthetic ladder ly
    (sims, runs) at run sizes x, each from `_starts`, the best start kept. A run of weight 0
    takes no part in its ladder's fit: ladders of one set of sizes share one x that way."""
    return fit_designs(law, [(x, ly, weights)], loss=loss, delta=delta)[0]


def fit_designs(law: Law, designs: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
                *, loss: str = "huber", delta: float = 1e-3) -> list[np.ndarray]:
    """`fit_batch` for several designs (x, ly, weights) at once, in one batched L-BFGS. The
    form fitted is the truth's (`law`): power in N here, the chinchilla form in N and D for a
    two-axis plan (x then holds N and D as columns; `plan.two_axis`); both have log E first.

    One batch rather than one per design because the batch runs until its slowest problem
    stops (hundreds of rounds at these tolerances, which the Huber objective needs: looser
    ones moved P by up to 0.1), so one batch pays that tail once. The batch shares one box, so
    each design's log E is shifted by the log of its smallest loss, the one input its box
    depends on (E lies in [min loss / 1000, min loss]): the same problem, translated."""
    form = law.form_
    objs, shifts, starts, boxes = [], [], [], []
    for x, ly, weights in designs:
        Z = np.log(x).reshape(len(x), -1)
        ly_true = form.log_predict(np.atleast_2d(law.theta_), Z)[0][0]
        lo, hi = form.bounds(Z, ly_true)
        st = _starts(law, lo, hi, ly_true)
        k = len(st)
        w = None if weights is None else np.repeat(weights, k, axis=0)
        objs.append(Objective(form, Z, np.repeat(ly, k, axis=0), loss=loss, delta=delta,
                              weights=w if w is not None else _rows(None, len(ly) * k)))
        shift = np.zeros(form.n_params)
        shift[0] = hi[0]
        shifts.append(shift)
        starts.append(np.tile(st - shift, (len(ly), 1)))
        boxes.append((lo - shift, hi - shift))
    # Only the scale A's upper end differs beyond the shift, far above any fitted value.
    lo = boxes[0][0]
    hi = np.min([b[1] for b in boxes], axis=0)
    offsets = np.cumsum([0] + [len(s) for s in starts])

    def fun(theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f, g = np.empty(len(theta)), np.empty_like(theta)
        which = np.searchsorted(offsets, rows, side="right") - 1
        for d in np.unique(which):
            sel = which == d
            f[sel], g[sel] = objs[d](theta[sel] + shifts[d], rows[sel] - offsets[d])
        return f, g

    res = batched_lbfgs(fun, np.vstack(starts), lo, hi, ftol=1e-14, gtol=1e-9)
    out = []
    for d, (_, ly, _) in enumerate(designs):
        k = len(starts[d]) // len(ly)
        x_d = res.x[offsets[d]:offsets[d + 1]] + shifts[d]
        f = res.f[offsets[d]:offsets[d + 1]]
        f = np.where(np.isfinite(f), f, np.inf).reshape(len(ly), k)
        out.append(x_d.reshape(len(ly), k, -1)[np.arange(len(ly)), f.argmin(1)])
    return out


def draw(ladder: Ladder, noise: NoiseModel, sims: int, seed: int
         ) -> tuple[np.ndarray, np.ndarray]:
    """(run sizes, sims synthetic ladders of log L): the law plus each size's noise."""
    if len(ladder.sizes) > MAX_SIZES:
        raise UserError(f"a ladder of {len(ladder.sizes)} sizes lets other forms than power "
                        f"answer; a plan simulates ladders of up to {MAX_SIZES} sizes")
    x = ladder.run_sizes()
    rng = np.random.default_rng(seed)
    ly = np.log(noise.loss_at(x)) + rng.standard_normal((sims, len(x))) * noise.sigma_at(x)
    return x, ly


def _design(ladders: list[Ladder], noise: NoiseModel, sims: int, seed: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ladders of one set of sizes as one design (x, ly, weights): every ladder's runs are
    columns of it (each size as many times as the most seeds any of them has), a ladder's
    unused columns weigh 0; each ladder gets the draws it gets alone (`draw`)."""
    sizes = ladders[0].sizes
    most = max(lad.most_runs for lad in ladders)
    x = np.repeat(np.asarray(sizes, dtype=float), most)
    ly_full = np.log(noise.loss_at(x))
    blocks, weights = [], []
    for lad in ladders:
        xl, ly = draw(lad, noise, sims, seed)
        cols = np.concatenate([i * most + np.arange(lad.runs_of(n))
                               for i, n in enumerate(sizes)])
        full = np.tile(ly_full, (sims, 1))
        full[:, cols] = ly
        w = np.zeros((sims, len(x)))
        own = study_weights(xl, ly)
        w[:, cols] = 1.0 if own is None else own
        blocks.append(full)
        weights.append(w)
    return x, np.vstack(blocks), np.vstack(weights)


def simulate_many(ladders: list[Ladder], noise: NoiseModel, target: float, *,
                  tolerance: float = 0.02, sims: int = 400, seed: int = 0) -> list[Outcome]:
    """`simulate` for many ladders at once (one batched fit; see `fit_designs`), in order."""
    groups: dict[tuple[float, ...], list[int]] = {}
    for i, lad in enumerate(ladders):
        groups.setdefault(lad.sizes, []).append(i)
    designs = [_design([ladders[i] for i in idx], noise, sims, seed) for idx in groups.values()]
    thetas = fit_designs(noise.law, designs)
    form = get_form(FORM)
    truth = float(noise.loss_at(np.array([target]))[0])
    out: list[Outcome | None] = [None] * len(ladders)
    for idx, th in zip(groups.values(), thetas, strict=True):
        err = form.predict(th, np.log([[float(target)]]))[:, 0] / truth - 1.0
        for i, e in zip(idx, err.reshape(len(idx), sims), strict=True):
            out[i] = Outcome(e, tolerance)
    return [o for o in out if o is not None]


def simulate(ladder: Ladder, noise: NoiseModel, target: float, *, tolerance: float = 0.02,
             sims: int = 400, seed: int = 0) -> Outcome:
    """The errors at `target` of `sims` synthetic ladders, each fitted as the study would."""
    return simulate_many([ladder], noise, target, tolerance=tolerance, sims=sims,
                         seed=seed)[0]


def redraw_errors(law: Law, n: np.ndarray, loss: np.ndarray, sizes: tuple[float, ...],
                  repeats: int, target: float, target_loss: float, *, draws: int,
                  seed: int = 0) -> np.ndarray:
    """The check of a simulation against real runs: the errors at `target` (predicted over
    `target_loss`, measured, minus 1) of `draws` ladders of `repeats` runs of each of `sizes`,
    drawn without replacement from each size's runs (n, loss) and fitted as the study fits
    (`fit_batch`, `study_weights`). Draws from a pool only a little larger than `repeats`
    share most of their runs, so their errors scatter less than independent ladders' would."""
    n = np.asarray(n, dtype=float)
    ly = np.log(np.asarray(loss, dtype=float))
    rng = np.random.default_rng(seed)
    idx = np.array([np.concatenate([rng.choice(np.flatnonzero(n == s), repeats, replace=False)
                                    for s in sizes]) for _ in range(draws)])
    x, rows = n[idx[0]], ly[idx]
    thetas = fit_batch(law, x, rows, study_weights(x, rows))
    return get_form(FORM).predict(thetas, np.log([[float(target)]]))[:, 0] / target_loss - 1


def exact_fit(x: np.ndarray, ly_row: np.ndarray, bootstrap: int = 0, seed: int = 0) -> Law:
    """One synthetic ladder fitted through `Law.fit` as `laws.study` fits a study's runs (its
    weights, its grid of starts, and with `bootstrap` its two-stage bootstrap of sizes then
    seeds): the reference `fit_batch` is checked against, and the interval a study would show."""
    y = np.exp(ly_row)
    noise = repeat_noise(x, y)
    w = None if noise is None else noise.weights
    return Law(FORM, bootstrap=bootstrap, seed=seed, resample="sizes").fit(x, y, w)


def interval_width(ladder: Ladder, noise: NoiseModel, target: float, *, draws: int = 4,
                   bootstrap: int = 200, seed: int = 0) -> float | None:
    """The mean relative width of the study's 95% bootstrap interval at the target over a few
    synthetic ladders (the bootstrap is costly, so few); None below 4 sizes (no bootstrap)."""
    if len(ladder.sizes) < 4:
        return None
    x, ly = draw(ladder, noise, draws, seed + 1)
    widths = []
    for row in ly:
        pred = exact_fit(x, row, bootstrap=bootstrap, seed=seed).predict([target])
        widths.append(float((pred.hi[0] - pred.lo[0]) / pred.point[0]))
    return float(np.mean(widths))
