"""A batched, box-constrained L-BFGS: thousands of small problems advanced in lockstep.

Why write this instead of calling scipy.optimize.minimize: SciPy's L-BFGS-B solves one problem
at a time, so 4,500 starts (or 1,000 bootstrap resamples x a few starts) become a Python loop of
4,500 solver runs whose cost is interpreter overhead, not arithmetic. Here every iteration
evaluates the objective for all unfinished problems in one vectorized call, keeps each problem's
own L-BFGS memory, step length and convergence test, and drops finished problems from the batch.

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


@dataclass
class BatchResult:
    x: np.ndarray  # (S, P) final points
    f: np.ndarray  # (S,) final objective values
    converged: np.ndarray  # (S,) bool: gradient or relative-reduction test passed
    n_iter: np.ndarray  # (S,) iterations taken


def projected_gradient(x: np.ndarray, g: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    return x - np.clip(x - g, lo, hi)


def _two_loop(q, s_hist, y_hist, rho, gamma, order):
    """H·q for every row at once, with the standard L-BFGS two-loop recursion.

    Pairs whose rho is 0 (rejected curvature) contribute nothing, so problems can skip updates
    without breaking the shared ring-buffer order.
    """
    q = q.copy()
    alphas = []
    for j in order:  # newest to oldest
        a = rho[:, j] * np.einsum("sp,sp->s", s_hist[:, j], q)
        q -= a[:, None] * y_hist[:, j]
        alphas.append(a)
    r = gamma[:, None] * q
    for j, a in zip(reversed(order), reversed(alphas), strict=True):
        b = rho[:, j] * np.einsum("sp,sp->s", y_hist[:, j], r)
        r += (a - b)[:, None] * s_hist[:, j]
    return r


def _line_search(fun, rows, x, f, g, d, t0, lo, hi, c1=1e-4, max_steps=30):
    """Backtracking Armijo search along the projected path, each problem with its own step."""
    n = len(x)
    x_new, f_new, g_new = x.copy(), f.copy(), g.copy()
    ok = np.zeros(n, dtype=bool)
    t = t0.copy()
    pend = np.arange(n)
    for _ in range(max_steps):
        xt = np.clip(x[pend] + t[pend, None] * d[pend], lo, hi)
        ft, gt = fun(xt, rows[pend])
        dec = np.einsum("sp,sp->s", g[pend], xt - x[pend])
        acc = np.isfinite(ft) & (ft <= f[pend] + c1 * dec)
        done = pend[acc]
        x_new[done], f_new[done], g_new[done] = xt[acc], ft[acc], gt[acc]
        ok[done] = True
        rej = ~acc
        pend, ft, dec = pend[rej], ft[rej], dec[rej]
        if pend.size == 0:
            break
        # quadratic interpolation of the step, kept within [0.1, 0.5] of the last one
        tp = t[pend]
        denom = 2.0 * (ft - f[pend] - dec)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_quad = -dec * tp / denom
        t_quad = np.where(np.isfinite(t_quad), t_quad, 0.5 * tp)
        t[pend] = np.clip(t_quad, 0.1 * tp, 0.5 * tp)
    return x_new, f_new, g_new, ok


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

    Stopping rules per problem follow SciPy's L-BFGS-B defaults: the largest projected-gradient
    component <= gtol, or (f_k - f_k+1) / max(|f_k|, |f_k+1|, 1) <= ftol, or a failed line search.
    """
    x_out = np.clip(np.asarray(x0, dtype=float), lo, hi)
    S, P = x_out.shape
    f_out, g_out = fun(x_out, np.arange(S))
    converged = np.zeros(S, dtype=bool)
    n_iter = np.zeros(S, dtype=int)
    # State of the unfinished problems only, compacted whenever some finish.
    act = np.flatnonzero(np.abs(projected_gradient(x_out, g_out, lo, hi)).max(1) > gtol)
    converged[np.setdiff1d(np.arange(S), act)] = True
    st = _State(x_out[act], f_out[act], g_out[act], memory)
    for it in range(max_iter):
        if act.size == 0:
            break
        stop, conv = _iterate(fun, act, st, it, lo, hi, ftol, gtol)
        n_iter[act] += 1
        if stop.any():
            done = act[stop]
            x_out[done], f_out[done], g_out[done] = st.x[stop], st.f[stop], st.g[stop]
            converged[done] = conv[stop]
            act = act[~stop]
            st.keep(~stop)
    x_out[act], f_out[act], g_out[act] = st.x, st.f, st.g
    return BatchResult(x=x_out, f=f_out, converged=converged, n_iter=n_iter)


class _State:
    """Per-problem L-BFGS state: point, value, gradient, memory ring, scaling, restart flag."""

    def __init__(self, x: np.ndarray, f: np.ndarray, g: np.ndarray, memory: int):
        n, p = x.shape
        self.x, self.f, self.g = x, f, g
        self.s = np.zeros((n, memory, p))
        self.y = np.zeros((n, memory, p))
        self.rho = np.zeros((n, memory))
        self.gamma = np.ones(n)
        self.restart = np.ones(n, dtype=bool)  # next step is steepest descent

    def keep(self, mask: np.ndarray) -> None:
        for name in ("x", "f", "g", "s", "y", "rho", "gamma", "restart"):
            setattr(self, name, getattr(self, name)[mask])


def _iterate(fun, rows, st: _State, it: int, lo, hi, ftol: float, gtol: float):
    """One L-BFGS step for every unfinished problem; returns (stop, converged) masks."""
    memory = st.rho.shape[1]
    xa, fa, ga = st.x, st.f, st.g
    free = ~(((xa <= lo) & (ga > 0)) | ((xa >= hi) & (ga < 0)))
    q = ga * free
    order = [(it - 1 - j) % memory for j in range(min(it, memory))]
    d = -_two_loop(q, st.s, st.y, st.rho, st.gamma, order) * free
    steep = ~(np.einsum("sp,sp->s", q, d) < 0) | st.restart
    d[steep] = -q[steep]
    qn = np.sqrt(np.einsum("sp,sp->s", q, q))
    t0 = np.where(steep, np.minimum(1.0, 1.0 / np.maximum(qn, 1e-300)), 1.0)
    xn, fn, gn, ok = _line_search(fun, rows, xa, fa, ga, d, t0, lo, hi)
    s, yv = xn - xa, gn - ga
    sy = np.einsum("sp,sp->s", s, yv)
    yy = np.einsum("sp,sp->s", yv, yv)
    good = ok & (sy > 1e-10 * yy) & (yy > 0)
    slot = it % memory
    st.s[:, slot], st.y[:, slot] = s, yv
    st.rho[:, slot] = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)
    st.gamma = np.where(good, sy / np.where(good, yy, 1.0), st.gamma)
    # a failed search after a quasi-Newton step: forget the memory, retry with steepest descent
    retry = ~ok & ~steep
    st.rho[retry] = 0.0
    st.restart = retry
    st.x, st.f, st.g = xn, fn, gn
    rel = (fa - fn) / np.maximum(np.maximum(np.abs(fa), np.abs(fn)), 1.0)
    pg_small = np.abs(projected_gradient(xn, gn, lo, hi)).max(1) <= gtol
    stop = pg_small | (ok & (rel <= ftol)) | (~ok & steep)
    return stop, pg_small | ok
