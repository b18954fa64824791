"""The divergence guard of a training run, shared by `train_rung` (loop.py) and packed training
(pack.py): when a run's loss says it has diverged.

A run is judged at each evaluation, on the mean training loss of the interval since the last one
(a validation loss that rises is over-fitting, which small data sets do within a few epochs: a
result to record, not a failed run). It has diverged when

- a loss is non-finite, or
- the interval's mean has climbed above the lowest mean so far (`best`) by more than
  `rise` × the fall from the first interval's mean (`start`) to `best` (rise 1: back to where
  training started), AND by more than `NOISE_SPREADS` × the noise of interval means: the largest
  of the standard errors of the last `RECENT` intervals' means (from their steps' losses) and of
  the climbs between their consecutive means (ones the run showed and came back from).

Why not a multiple of the best loss (the rule before): a model that memorises its rows drives
the loss near zero, where ordinary noise multiplies it (0.000135 -> 0.0016 is 12x and means
nothing). Measured against the fall and against the noise, a rise counts only when it gives back
a real share of what training gained and is larger than the wobble the run already showed; a
learning rate far too high still sends the loss back up to where it started, or to infinity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

NOISE_SPREADS = 4.0  # a rise smaller than this many noise scales is noise
RECENT = 4  # intervals whose climbs from one to the next measure how much the means wobble


def interval_mean(window: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error of the mean) of an interval's step losses, from the window
    [sum, count, sum of squares] that the training loops accumulate."""
    total, count = window[0], int(window[1])
    mean = total / count
    squares = window[2] if len(window) > 2 else mean * mean * count  # an old window: no spread
    var = max(0.0, squares / count - mean * mean)
    return mean, math.sqrt(var / count)


def add_loss(window: list[float], loss: float) -> None:
    """Count one step's training loss into the interval's window [sum, count, sum of squares]."""
    if len(window) < 3:  # a window from a checkpoint written before the sum of squares was kept
        window.append(0.0)
    window[0] += loss
    window[1] += 1
    window[2] += loss * loss


def new_window() -> list[float]:
    return [0.0, 0, 0.0]


def divergence(earlier: Sequence[float], noise: Sequence[float], mean: float, val: float,
               rise: float) -> str | None:
    """The reason a run has diverged, or None. `earlier`: the mean training losses of the
    intervals before this one (oldest first); `noise`: the standard errors of their means (the
    same intervals; a checkpoint written before they were kept may hold fewer); `mean`: this
    interval's mean training loss; `val`: its validation loss; `rise`: `train.diverge_rise`.
    The noise is the earlier intervals', not this one's: a blow-up inflates its own spread."""
    if not math.isfinite(mean) or not math.isfinite(val):
        return f"non-finite loss (training {mean:.4g}, validation {val:.4g})"
    if not earlier:
        return None
    start, best = earlier[0], min(earlier)
    recent = earlier[-RECENT:]
    # Only climbs: a fall between intervals is progress, not noise.
    wobble = max((b - a for a, b in zip(recent, recent[1:], strict=False)), default=0.0)
    scale = max(wobble, *noise[-RECENT:], 0.0)
    climb = mean - best
    if climb > rise * (start - best) and climb > NOISE_SPREADS * scale:
        return (f"training loss {mean:.4g} climbed {climb:.3g} above the best so far "
                f"({best:.4g}): more than {rise:g} of its fall from {start:.4g} and more than "
                f"{NOISE_SPREADS:g}x its noise ({scale:.2g})")
    return None
