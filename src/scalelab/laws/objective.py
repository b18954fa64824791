"""The fitting objective: sum over runs of Huber(delta) (or squares) of log-residuals.

Evaluated for a whole batch of parameter vectors at once, in chunks of rows so the (rows x runs)
temporaries stay in the CPU cache (a 4,500 x 240 batch in one piece is ~6x slower, it streams
through memory), and the chunks are spread over threads (NumPy releases the GIL inside ufuncs).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from scalelab.laws.forms import Form

_CHUNK_ELEMENTS = 32_768  # rows x runs per chunk: a few 256 KiB arrays, comfortably in L2
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1)))
    return _POOL


class Objective:
    """f(theta) = sum_i w_i·rho(log L(theta; x_i) - log y_i), batched over theta rows.

    `weights` is None (every run once) or (R, n): one row of run weights per problem; the
    bootstrap uses resampling counts as weights so all resamples share one batched computation.
    """

    def __init__(self, form: Form, Z: np.ndarray, ly: np.ndarray, *, loss: str = "huber",
                 delta: float = 1e-3, weights: np.ndarray | None = None):
        if loss not in ("huber", "lsq"):
            raise ValueError(f"loss must be 'huber' or 'lsq', not {loss!r}")
        self.form, self.Z, self.ly = form, Z, ly
        self.loss, self.delta, self.weights = loss, delta, weights

    def _chunk(self, theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lp, vjp = self.form.log_predict(theta, self.Z)
        r = lp - self.ly
        psi = np.minimum(np.maximum(r, -self.delta), self.delta) if self.loss == "huber" else r
        terms = psi * (r - 0.5 * psi)  # = Huber(r) (or r²/2): psi is its derivative
        if self.weights is not None:
            w = self.weights[rows]
            terms, psi = terms * w, psi * w
        return terms.sum(1), vjp(psi)

    def __call__(self, theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        theta = np.atleast_2d(theta)
        step = max(1, _CHUNK_ELEMENTS // max(1, len(self.ly)))
        if len(theta) <= step:
            return self._chunk(theta, rows)
        parts = [(theta[i : i + step], rows[i : i + step]) for i in range(0, len(theta), step)]
        out = list(_pool().map(lambda p: self._chunk(*p), parts))
        return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])

    def scalar(self, theta: np.ndarray, row: int = 0) -> tuple[float, np.ndarray]:
        """One problem, SciPy's calling convention (value, gradient)."""
        f, g = self._chunk(np.asarray(theta, dtype=float)[None, :], np.array([row]))
        return float(f[0]), g[0]
