"""The fitting objective: sum over runs of Huber(delta) (or squares) of log-residuals.

Evaluated for a whole batch of parameter vectors at once, in chunks of rows so the (rows x runs)
temporaries stay in the CPU cache (a 4,500 x 240 batch in one piece is ~6x slower, it streams
through memory), and the chunks are spread over threads (NumPy releases the GIL inside ufuncs).
The temporaries live in per-thread workspaces reused from call to call: freshly allocated arrays
of this size come from mmap, and their page faults cost more than the arithmetic (measured: up
to 13,800 faults and 2-3x the time per 4,500-row evaluation, erratically, with glibc's malloc).
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from scalelab.laws.forms import Form

_CHUNK_ELEMENTS = 65_536  # rows x runs per chunk: 512 KiB arrays, about what a core's L2 holds
_THREADS = max(1, min(8, os.cpu_count() or 1))  # the calling thread and THREADS - 1 helpers
_POOL: ThreadPoolExecutor | None = None


def _helpers() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_THREADS - 1)
    return _POOL


class Workspace(threading.local):
    """Named scratch arrays, one set per thread, reused while they are big enough."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def __call__(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        size = math.prod(shape)
        buf = self.arrays.get(name)
        if buf is None or buf.size < size:
            buf = self.arrays[name] = np.empty(size)
        return buf[:size].reshape(shape)


class Objective:
    """f(theta) = sum_i w_i·rho(log L(theta; x_i) - log y_i), batched over theta rows.

    `weights` is None (every run once) or (R, n): one row of run weights per problem; the
    bootstrap uses resampling counts as weights so all resamples share one batched computation.
    `ly` is (n,), the same data for every problem, or (R, n): one data set per problem (the
    noise simulations of the extrapolation profile fit many synthetic ladders at once).
    """

    def __init__(self, form: Form, Z: np.ndarray, ly: np.ndarray, *, loss: str = "huber",
                 delta: float = 1e-3, weights: np.ndarray | None = None):
        if loss not in ("huber", "lsq"):
            raise ValueError(f"loss must be 'huber' or 'lsq', not {loss!r}")
        self.form, self.Z, self.ly = form, Z, ly
        self.loss, self.delta, self.weights = loss, delta, weights
        self._ws = Workspace()

    def _chunk(self, theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ws = self._ws
        lp, vjp = self.form.log_predict(theta, self.Z, ws)
        r = np.subtract(lp, self.ly if self.ly.ndim == 1 else self.ly[rows], out=lp)
        # psi is rho'(r); rho(r) = psi·(r - psi/2) for Huber and for squares alike.
        psi = r if self.loss == "lsq" else np.clip(r, -self.delta, self.delta,
                                                   out=ws("psi", r.shape))
        w_psi = psi
        if self.weights is not None:
            w_psi = np.multiply(psi, self.weights[rows], out=ws("w_psi", r.shape))
        f = np.einsum("ij,ij->i", w_psi, r) - 0.5 * np.einsum("ij,ij->i", w_psi, psi)
        return f, vjp(w_psi)

    def __call__(self, theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        theta = np.atleast_2d(theta)
        step = max(1, _CHUNK_ELEMENTS // max(1, self.ly.shape[-1]))
        if len(theta) <= step:
            return self._chunk(theta, rows)
        f, g = np.empty(len(theta)), np.empty_like(theta)
        starts = iter(range(0, len(theta), step))  # shared by the threads, behind a lock
        lock = threading.Lock()

        def work() -> None:  # take chunks until none are left
            while True:
                with lock:
                    i = next(starts, None)
                if i is None:
                    return
                f[i : i + step], g[i : i + step] = self._chunk(theta[i : i + step],
                                                             rows[i : i + step])

        # The calling thread works too, rather than waiting: one fewer hand-off per call.
        helpers = [_helpers().submit(work) for _ in range(_THREADS - 1)]
        work()
        for h in helpers:
            h.result()
        return f, g

    def scalar(self, theta: np.ndarray, row: int = 0) -> tuple[float, np.ndarray]:
        """One problem, SciPy's calling convention (value, gradient)."""
        f, g = self._chunk(np.asarray(theta, dtype=float)[None, :], np.array([row]))
        return float(f[0]), g[0]
