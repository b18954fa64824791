"""The divergence guard of a training run, shared by `train_rung` (loop.py) and packed training
(pack.py): when a run's loss says it has diverged.

A run is judged at each evaluation, on the mean training loss of the interval since the last one
(a validation loss that rises is over-fitting, which small data sets do within a few epochs: a
result to record, not a failed run). With `start` the first interval's mean and `noise` the noise
of one interval's mean (`noise_scale`: the largest standard error of the earlier intervals' means,
from their steps' losses, and the largest climb from one mean to the next), it has diverged
when

- a loss is non-finite, or
- this interval's mean is back above `start` by more than `NOISE_SPREADS` × noise: it left the
  range training reached, or
- this interval's mean AND the one before it both lie above the lowest mean before them
  (`best`) by more than `rise` × the fall from `start` to `best` and by more than
  `NOISE_SPREADS` × noise: a climb short of the start counts when the loss stays up.

Why a climb short of the start must last two intervals (measured on statsmodels' `fair` affairs
table, a binary target whose loss falls only 14%, from 0.60 to about 0.52, in a `--quick` study
with a spec of task and family; the rule before, one interval enough, flagged 2 of its 4 healthy
rungs):
- The best is the lowest of many noisy means, itself a low excursion, and any later interval may
  be a high one. Rung 2x153 (batch 16, 100-step intervals whose means have a standard error of
  about 0.014) fell 0.596 0.557 0.548 0.513, then rose to 0.570: 0.057 above the best, 4.0x the
  noise and more than half the fall (0.083), and was stopped; trained on, its next mean is
  0.5385. Its sister rungs swing like that all along (0.507 -> 0.552, 0.523 -> 0.561) and are
  back the next interval.
- A run's last interval is often short (1,910 steps: 19 intervals of 100 and one of 10), so its
  mean carries about √10 times the noise the other intervals measured. Rung 2x392 ended 0.521
  0.539 0.511 and then 0.605 over those 10 steps, and was marked diverged at its last step.
A learning rate far too high sends the loss back above where it started, or to infinity, and
one interval shows it: an MLP on a regression table at 100x its rate has interval means 1.13,
then 16.1 (one step at 1,140), 85x its noise above the start.

What no rule on a run's own curve can tell: a rate too high that leaves the loss on a plateau.
A 1x32 GPT on pycode at 100x its rate (0.6) falls in a few steps to the bytes' frequencies and
stays there (100-step means 3.52 3.44 3.38 3.36 3.36 ... 3.17 over 1,000 steps, against 3.57 to
2.07 at its rate): 5% below its first interval by the 5th, 10% at the end, about what a hard
table shows when healthy (fair: 10% by the 5th, 13% at the end). Such a rung is an outlier
against its neighbours in the study, not a run whose loss left its range.

Why not a multiple of the best loss (the rule before these): a model that memorises its rows
drives the loss near zero, where ordinary noise multiplies it (0.000135 -> 0.0016 is 12x and
means nothing). Measured against the fall and against the noise, a rise counts only when it
gives back a real share of what training gained and is larger than the wobble the run showed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

NOISE_SPREADS = 4.0  # a rise smaller than this many noise scales is noise


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


def noise_scale(means: Sequence[float], noise: Sequence[float]) -> float:
    """The noise of one interval's mean training loss, from the intervals `means` (oldest first)
    and their standard errors `noise` (a checkpoint written before they were kept may hold
    fewer): the largest standard error, and the largest climb from one mean to the next."""
    # The first interval's spread is mostly its fall from the untrained loss: left out once
    # there are later ones.
    errors = noise[1:len(means)] if len(means) > 1 else noise[:1]
    # Only climbs: a fall between intervals is progress, not noise.
    climbs = (b - a for a, b in pairwise(means))
    return max(0.0, *errors, *climbs)


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
    start, scale = earlier[0], noise_scale(earlier, noise)
    # Against the start, the start's own spread counts too: a fine-tune begins trained, its
    # first interval is no fall, and a second task's batches differ more than one interval's
    # steps show (measured: a fine-tune's means 2.756, 2.776, 2.896 over 32 steps, healthy, its
    # validation loss below zero-shot, flagged when only the later intervals' errors counted).
    scale = max(scale, *noise[:1])
    if mean - start > NOISE_SPREADS * scale:
        return (f"training loss {mean:.4g} is back above where training started ({start:.4g}) "
                f"by more than {NOISE_SPREADS:g}x its noise ({scale:.2g})")
    return _stayed_up(earlier, noise, mean, rise)


def _stayed_up(earlier: Sequence[float], noise: Sequence[float], mean: float,
               rise: float) -> str | None:
    """The reason, when this interval and the one before it both climbed out of the range the
    intervals before them reached (by the share `rise` of the fall and by the noise)."""
    if len(earlier) < 2:  # nothing before the previous interval to measure a climb from
        return None
    reached, previous = earlier[:-1], earlier[-1]
    start, best = reached[0], min(reached)
    scale = noise_scale(reached, noise[:len(reached)])
    bar = best + max(rise * (start - best), NOISE_SPREADS * scale)
    if previous <= bar or mean <= bar:
        return None
    return (f"training loss {previous:.4g} then {mean:.4g}: two intervals in a row more than "
            f"{bar - best:.3g} above the best before them ({best:.4g}), more than {rise:g} of "
            f"its fall from {start:.4g} and more than {NOISE_SPREADS:g}x its noise ({scale:.2g})")
