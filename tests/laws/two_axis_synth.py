"""A synthetic two-axis study with known truth: L(N, D) = E + A·N^-alpha + B·D^-beta sampled on
IsoFLOP budgets, with multiplicative noise of known size, and measured FLOPs per unit of D that
cost more than 6·N (an overhead per unit, as attention and embeddings add in a real model)."""

from __future__ import annotations

import numpy as np

# Chinchilla's exponents; E, A, B scaled so both terms matter at N ~ 1e4-1e6, D ~ 1e6-1e8.
E, A, ALPHA, B, BETA = 1.7, 40.0, 0.34, 73.0, 0.28
OVERHEAD = 5e4  # FLOPs per unit of D beyond 6·N: k(N) = f(N) / N runs from 11 (N = 1e4) to 6.05
BUDGETS = (1e12, 3e12, 1e13, 3e13)  # 30x
SIGMA = 0.005  # relative noise of each loss
TRAIN_UNITS = 3e7  # the training split: rungs with D beyond it repeat their data


def flops_per_unit(n: np.ndarray | float) -> np.ndarray | float:
    return 6.0 * n + OVERHEAD


def law(n: np.ndarray | float, d: np.ndarray | float) -> np.ndarray | float:
    return E + A * n ** -ALPHA + B * d ** -BETA


def true_optimum(c: float) -> tuple[float, float, float]:
    """(N*, D*, L*) of the truth at budget c, by brute force along C = f(N)·D."""
    n = np.geomspace(1e2, 1e9, 400_001)
    loss = law(n, c / flops_per_unit(n))
    i = int(np.argmin(loss))
    return float(n[i]), float(c / flops_per_unit(n[i])), float(loss[i])


def true_exponents(budgets: tuple[float, ...] = BUDGETS) -> tuple[float, float]:
    """a, b of the truth over the budgets (least squares of log N*, log D* on log C, as both
    approaches measure them; with f(N) != 6·N they differ a little from beta/(alpha+beta))."""
    opt = np.array([true_optimum(c) for c in budgets])
    X = np.column_stack([np.log(budgets), np.ones(len(budgets))])
    a = np.linalg.lstsq(X, np.log(opt[:, 0]), rcond=None)[0][0]
    b = np.linalg.lstsq(X, np.log(opt[:, 1]), rcond=None)[0][0]
    return float(a), float(b)


def isoflop_rows(budgets: tuple[float, ...] = BUDGETS, points: int = 5, seed: int = 0,
                 sigma: float = SIGMA, span: float = 16.0, shift: float = 1.0) -> list[dict]:
    """Rungs of an IsoFLOP ladder: per budget `points` sizes spread over `span`x around
    `shift` times the true optimum (as a ladder centres them on its guess of it)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in budgets:
        centre = true_optimum(c)[0] * shift
        for n in centre * np.geomspace(1 / np.sqrt(span), np.sqrt(span), points):
            d = c / flops_per_unit(n)
            val = float(law(n, d) * np.exp(sigma * rng.standard_normal()))
            rows.append({"rung": len(rows), "status": "done", "n_nonembed": float(n),
                         "n_params": float(1.2 * n), "D": float(d),
                         "flops": float(flops_per_unit(n) * d), "val_loss": val,
                         "train_loss": val - 0.05 * d / TRAIN_UNITS, "budget": c,
                         "epochs": d / TRAIN_UNITS, "schedule": "wsd", "repeat": 0,
                         "unit": "byte"})
    return rows


def grid_rows(sizes: tuple[float, ...] = (2e4, 6e4, 2e5, 6e5), tokens: tuple[float, ...] = (
        2e6, 6e6, 2e7), seed: int = 0) -> list[dict]:
    """A grid ladder: every size at every D, no budgets."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        for d in tokens:
            val = float(law(n, d) * np.exp(SIGMA * rng.standard_normal()))
            rows.append({"rung": len(rows), "status": "done", "n_nonembed": n, "D": d,
                         "flops": float(flops_per_unit(n) * d), "val_loss": val,
                         "train_loss": val - 0.02, "budget": None, "epochs": d / TRAIN_UNITS,
                         "schedule": "cosine", "repeat": 0})
    return rows
