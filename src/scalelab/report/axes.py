"""The one tick style of every plot (report panels, `fit --plot`, the report's sections).

Tick labels are written by `scalelab.values.fmt_tick` (0.05, 3, 250, 8k, 10k, 1M: the style of
the tables, never 1e+03 or 10^3). A log axis is labelled so that it reads whatever its range:

- under half a decade (a loss from 1.6 to 2.6, a peak memory of 11 to 19 MB) matplotlib's log
  ticks would label one value or none, so the ticks are evenly spaced round numbers instead
  (1.6, 1.8, 2.0, ...), still on the log scale;
- with fewer than three decade ticks in view, the minor ticks at 2× and 5× (and 3× under two
  decades) are labelled too;
- otherwise the decades are labelled and the minor ticks stay unlabelled.

Call it after the data are drawn and the limits set: it reads the axis limits. `style_figure`
(called by the report's `to_inline_svg` and by `fit --plot`'s `save_figure`) applies it to every
axis still on matplotlib's default labels.
"""

from __future__ import annotations

import math
from typing import Any

from matplotlib import ticker

from scalelab.values import fmt_tick

__all__ = ["style_axes", "style_figure"]

_EVEN_STEPS = (1.0, 2.0, 2.5, 5.0, 10.0)


def style_axes(ax: Any, *, x: bool = True, y: bool = True, unit: str = "") -> None:
    """Give the chosen axes of `ax` the one tick style (log or linear); `unit` follows each
    label (× on an axis of ratios)."""
    def label(v: float, _pos: Any = None) -> str:
        text = fmt_tick(v)
        return text + unit if text else ""

    for on, axis, lim in ((x, ax.xaxis, ax.get_xlim()), (y, ax.yaxis, ax.get_ylim())):
        if not on:
            continue
        if axis.get_scale() == "log":
            _log_ticks(axis, *sorted(lim), label)
        elif axis.get_scale() == "linear":
            axis.set_major_formatter(ticker.FuncFormatter(label))


def style_figure(fig: Any) -> None:
    """The one tick style on every axis of `fig` that still has matplotlib's own labels (10^3,
    1e+03, an offset text); an axis whose plot chose its own formatter keeps it."""
    for ax in fig.axes:
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            if isinstance(axis.get_major_formatter(), ticker.LogFormatter | ticker.ScalarFormatter):
                style_axes(ax, x=name == "x", y=name == "y")


def _log_ticks(axis: Any, lo: float, hi: float, label: Any) -> None:
    if not (lo > 0 and hi > lo and math.isfinite(hi)):
        return
    decades = math.log10(hi / lo)
    axis.set_major_formatter(ticker.FuncFormatter(label))
    if decades < 0.5:
        axis.set_major_locator(ticker.MaxNLocator(nbins=5, steps=list(_EVEN_STEPS)))
        axis.set_minor_formatter(ticker.NullFormatter())
        return
    axis.set_major_locator(ticker.LogLocator(base=10.0))
    majors = math.floor(math.log10(hi) + 1e-9) - math.ceil(math.log10(lo) - 1e-9) + 1
    if majors >= 3:
        axis.set_minor_formatter(ticker.NullFormatter())
        return
    subs = (2.0, 3.0, 5.0) if decades < 2.0 else (2.0, 5.0)

    def minor(v: float, _pos: Any = None) -> str:
        if not (math.isfinite(v) and v > 0):
            return ""
        mantissa = v / 10 ** math.floor(math.log10(v) + 1e-9)
        return label(v) if any(abs(mantissa - s) < 1e-6 for s in subs) else ""

    axis.set_minor_locator(ticker.LogLocator(base=10.0, subs=tuple(range(2, 10))))
    axis.set_minor_formatter(ticker.FuncFormatter(minor))
