"""A batched, box-constrained L-BFGS: thousands of small problems advanced side by side.

Why write this instead of calling scipy.optimize.minimize: SciPy's L-BFGS-B solves one problem
at a time, so 4,500 starts (or 1,000 bootstrap resamples x a few starts) become a Python loop of
4,500 solver runs whose cost is interpreter overhead, not arithmetic. Here every round evaluates
the objective once, for one trial point of every unfinished problem, in one vectorized call.

Each problem keeps its own state: point, L-BFGS memory, search direction, trial step and place
in its line search. Problems are not held in lockstep: in one round some take the first trial
of a new iteration while others are backtracking, so a problem that needs many backtracks does
not make the whole batch wait for it (in lockstep, the 4,500-start fit made four times as many
objective calls, most of them for a handful of rows). A problem's sequence of trial points is the
same either way; only the grouping of evaluations changes.

Bounds are handled by projection (a projected path search, with variables pinned at a bound by an
outward gradient held fixed); this is a heuristic version of L-BFGS-B that is accurate enough to
find the basin. The fitter polishes its best few results with SciPy's L-BFGS-B.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# fun(theta (S, P), rows (S,)) -> (f (S,), g (S, P)); rows say which problems the rows belong to.
BatchFun = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

ARMIJO_C1 = 1e-4  # sufficient decrease
WOLFE_C2 = 0.9  # curvature: the slope along the step must flatten to 0.9 of the start's (SciPy's)
MAX_TRIALS = 30  # trial points per line search before it counts as failed
EXPAND = 4.0  # step growth while the curvature condition fails and the decrease goes on


@dataclass
class BatchResult:
    x: np.ndarray  # (S, P) final points
    f: np.ndarray  # (S,) final objective values
    converged: np.ndarray  # (S,) bool: gradient or relative-reduction test passed
    n_iter: np.ndarray  # (S,) iterations taken


def projected_gradient(x: np.ndarray, g: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    return x - np.clip(x - g, lo, hi)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("sp,sp->s", a, b)


def _two_loop(q, s_hist, y_hist, rho, gamma):
    """H·q for every row at once, with the standard L-BFGS two-loop recursion.

    The memory is stored newest first; pairs whose rho is 0 (not yet filled, or rejected
    curvature) contribute nothing.
    """
    q = q.copy()
    # pairs no row has filled yet (the first iterations) are skipped outright
    used = [j for j in range(rho.shape[1]) if rho[:, j].any()]  # newest to oldest
    alphas = {}
    for j in used:
        a = rho[:, j] * _dot(s_hist[:, j], q)
        q -= a[:, None] * y_hist[:, j]
        alphas[j] = a
    r = gamma[:, None] * q
    for j in reversed(used):
        b = rho[:, j] * _dot(y_hist[:, j], r)
        r += (alphas[j] - b)[:, None] * s_hist[:, j]
    return r


class _State:
    """Everything each unfinished problem carries from one round to the next."""

    def __init__(self, x: np.ndarray, f: np.ndarray, g: np.ndarray, memory: int):
        n, p = x.shape
        self.x, self.f, self.g = x, f, g
        self.s = np.zeros((n, memory, p))  # memory pairs, newest first
        self.y = np.zeros((n, memory, p))
        self.rho = np.zeros((n, memory))
        self.gamma = np.ones(n)
        self.d = np.zeros((n, p))  # search direction of the current iteration
        self.t = np.zeros(n)  # current trial step
        self.steep = np.zeros(n, dtype=bool)  # the direction is steepest descent
        self.trials = np.zeros(n, dtype=int)  # trial points tried in this line search
        self.shrunk = np.zeros(n, dtype=bool)  # this line search has backtracked
        self.found = np.zeros(n, dtype=bool)  # ... has an acceptable point: x_acc, f_acc, g_acc
        self.x_acc, self.f_acc, self.g_acc = x.copy(), f.copy(), g.copy()

    def keep(self, i: np.ndarray) -> None:
        for name, value in vars(self).items():
            setattr(self, name, value[i])

    def advance(self, i: np.ndarray, lo, hi, ftol: float, gtol: float):
        """End the iteration of problems i (their line search is over) and start the next.

        Returns (stop, converged) for them. Stopping rules follow SciPy's L-BFGS-B defaults:
        the largest projected-gradient component <= gtol, or (f_k - f_k+1) /
        max(|f_k|, |f_k+1|, 1) <= ftol, or a failed line search from a steepest-descent
        direction. All of it works on copies of the rows i, written back once.
        """
        ok, steep = self.found[i], self.steep[i]
        x, f, g = self.x[i], self.f[i], self.g[i]
        x_new = np.where(ok[:, None], self.x_acc[i], x)
        f_new = np.where(ok, self.f_acc[i], f)
        g_new = np.where(ok[:, None], self.g_acc[i], g)
        s, yv = x_new - x, g_new - g
        sy, yy = _dot(s, yv), _dot(yv, yv)
        good = ok & (sy > 1e-10 * yy) & (yy > 0)
        s_hist, y_hist, rho = self.s[i], self.y[i], self.rho[i]
        s_hist[:, 1:], y_hist[:, 1:], rho[:, 1:] = s_hist[:, :-1], y_hist[:, :-1], rho[:, :-1]
        s_hist[:, 0], y_hist[:, 0] = s, yv
        rho[:, 0] = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)
        gamma = np.where(good, sy / np.where(good, yy, 1.0), self.gamma[i])
        # a failed search after a quasi-Newton step: forget the memory, retry with steepest descent
        restart = ~ok & ~steep
        rho[restart] = 0.0
        rel = (f - f_new) / np.maximum(np.maximum(np.abs(f), np.abs(f_new)), 1.0)
        pg_small = np.abs(projected_gradient(x_new, g_new, lo, hi)).max(1) <= gtol
        stop = pg_small | (ok & (rel <= ftol)) | (~ok & steep)

        # the next iteration's direction and first trial step (wasted on rows that stop)
        free = ~(((x_new <= lo) & (g_new > 0)) | ((x_new >= hi) & (g_new < 0)))
        q = g_new * free
        d = -_two_loop(q, s_hist, y_hist, rho, gamma) * free
        steep = ~(_dot(q, d) < 0) | restart
        d[steep] = -q[steep]
        qn = np.sqrt(_dot(q, q))
        t = np.where(steep, np.minimum(1.0, 1.0 / np.maximum(qn, 1e-300)), 1.0)

        self.x[i], self.f[i], self.g[i] = x_new, f_new, g_new
        self.s[i], self.y[i], self.rho[i], self.gamma[i] = s_hist, y_hist, rho, gamma
        self.d[i], self.steep[i], self.t[i] = d, steep, t
        self.trials[i], self.shrunk[i], self.found[i] = 0, False, False
        return stop, pg_small | ok


def _backtrack(t, ft, f, dec):
    """Next trial step after a rejected one: quadratic interpolation within [0.1, 0.5]·t."""
    denom = 2.0 * (ft - f - dec)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_quad = -dec * t / denom
    t_quad = np.where(np.isfinite(t_quad), t_quad, 0.5 * t)
    return np.clip(t_quad, 0.1 * t, 0.5 * t)


def batched_lbfgs(
    fun: BatchFun,
    x0: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    *,
    memory: int = 10,
    max_iter: int = 1000,
    ftol: float = 2.2e-9,
    gtol: float = 1e-5,
) -> BatchResult:
    """Minimize S independent problems from the rows of x0 inside the box [lo, hi].

    Each iteration searches along the projected path from the L-BFGS direction (at most
    MAX_TRIALS trial points): backtracking until the Armijo condition holds, or growing the step
    while it holds and the curvature condition does not; see `_State.advance` for the
    stopping rules. A problem still running after max_iter iterations is returned as it is,
    not converged.
    """
    x_out = np.clip(np.asarray(x0, dtype=float), lo, hi)
    S = len(x_out)
    f_out, g_out = fun(x_out, np.arange(S))
    converged = np.zeros(S, dtype=bool)
    n_iter = np.zeros(S, dtype=int)
    act = np.flatnonzero(np.abs(projected_gradient(x_out, g_out, lo, hi)).max(1) > gtol)
    converged[np.setdiff1d(np.arange(S), act)] = True
    # The starting points enter as if a line search had just failed there from a quasi-Newton
    # step: `advance` then sets up a steepest-descent step for each, counting no iteration.
    st = _State(x_out[act], f_out[act], g_out[act], memory)
    st.advance(np.arange(act.size), lo, hi, ftol, gtol)
    if max_iter <= 0:
        act = act[:0]
    while act.size:
        xt = np.clip(st.x + st.t[:, None] * st.d, lo, hi)
        ft, gt = fun(xt, act)
        step = xt - st.x
        dec = _dot(st.g, step)
        armijo = np.isfinite(ft) & (ft <= st.f + ARMIJO_C1 * dec)
        better = armijo & (~st.found | (ft < st.f_acc))
        b = np.flatnonzero(better)
        st.x_acc[b], st.f_acc[b], st.g_acc[b] = xt[b], ft[b], gt[b]
        st.found |= better
        st.trials += 1
        # Like SciPy's line search (and unlike plain backtracking), a step that decreases f but
        # leaves the slope steep is extended: one long step instead of many short iterations.
        flat = _dot(gt, step) >= WOLFE_C2 * dec
        grow = better & ~flat & ~st.shrunk
        end = (better & ~grow) | (~better & st.found) | (st.trials >= MAX_TRIALS)
        back = np.flatnonzero(~end & ~grow)
        st.t[grow] *= EXPAND
        st.t[back] = _backtrack(st.t[back], ft[back], st.f[back], dec[back])
        st.shrunk[back] = True
        ended = np.flatnonzero(end)
        if ended.size == 0:
            continue
        stop_alg, conv = st.advance(ended, lo, hi, ftol, gtol)
        n_iter[act[ended]] += 1
        stop = stop_alg | (n_iter[act[ended]] >= max_iter)
        if stop.any():
            rows = ended[stop]
            done = act[rows]
            x_out[done], f_out[done], g_out[done] = st.x[rows], st.f[rows], st.g[rows]
            converged[done] = (stop_alg & conv)[stop]
            going = np.ones(act.size, dtype=bool)
            going[rows] = False
            act = act[going]
            st.keep(np.flatnonzero(going))
    return BatchResult(x=x_out, f=f_out, converged=converged, n_iter=n_iter)
