"""Sizes that count as one: runs whose sizes differ by less than 1% are one size (numbers read
off a plot are never exactly equal; seed repeats of a rung share its size exactly)."""

from __future__ import annotations

import numpy as np

SIZE_RTOL = 0.01


def size_groups(sizes: np.ndarray, rtol: float = SIZE_RTOL) -> np.ndarray:
    """Group index of each size, 0 for the smallest; sizes within rtol of the last one merge."""
    sizes = np.asarray(sizes, dtype=float)
    order = np.argsort(sizes, kind="stable")
    groups = np.empty(len(sizes), dtype=int)
    g, anchor = -1, None
    for i in order:
        if anchor is None or sizes[i] > anchor * (1 + rtol):
            g, anchor = g + 1, sizes[i]
        groups[i] = g
    return groups


def point_ids(X: np.ndarray, rtol: float = SIZE_RTOL) -> np.ndarray:
    """Id of each run's point: runs whose every input is within rtol of another's (seed
    repeats, folds) share one. Numbered in order of first appearance."""
    X = np.asarray(X, dtype=float).reshape(len(X), -1)
    cols = np.column_stack([size_groups(X[:, j], rtol) for j in range(X.shape[1])])
    _, first, inverse = np.unique(cols, axis=0, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))  # renumber by first appearance
    return rank[inverse.ravel()]


def n_distinct(X: np.ndarray, rtol: float = SIZE_RTOL) -> int:
    """Distinct points among the runs: what a law's degrees of freedom are counted from."""
    return int(point_ids(X, rtol).max() + 1) if len(X) else 0
