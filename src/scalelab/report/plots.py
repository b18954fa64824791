"""Plots of a study as inline SVG strings.

Every function takes plain data (the dicts of ``summary.json`` and the loss curves) and returns
an ``<svg>`` element as a string, ready to be placed inside an HTML page: no XML prolog, no
DOCTYPE, no namespace or metadata URLs, and element ids prefixed so several plots can live in one
document. Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, no global
backend switch), so this module is safe to import from anywhere.

Nothing the user typed (study name, spec values) is drawn into a plot; labels are numbers and
fixed words only.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from scalelab.errors import UserError
from scalelab.laws.fit import Law
from scalelab.laws.plots import draw_residuals
from scalelab.laws.profile import fmt_ratio
from scalelab.records import Holdout
from scalelab.report.axes import style_axes, style_figure
from scalelab.values import finite, fmt_count

__all__ = [
    "cost_svg",
    "eval_law",
    "finished_points",
    "gap_svg",
    "latency_median",
    "loss_curves_svg",
    "loss_vs_n_svg",
    "profile_svg",
    "residuals_svg",
    "rung_colors",
    "to_inline_svg",
]

_RC = {
    "svg.fonttype": "none",  # text stays text: small, selectable, escaped by matplotlib
    "svg.hashsalt": "scalelab",  # deterministic ids -> reproducible report
    "font.family": "DejaVu Sans",
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.labelsize": 9.0,
    "legend.fontsize": 8.0,
    "xtick.labelsize": 8.0,
    "ytick.labelsize": 8.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.6,
    "axes.edgecolor": "#555555",
    "axes.axisbelow": True,
}
# The report's extra sections (compression, fine-tuning) draw in a lighter style of their own.
SECTION_RC = {"svg.fonttype": "none", "font.size": 9.0, "axes.spines.top": False,
              "axes.spines.right": False, "axes.grid": True, "grid.color": "#e3e3e3",
              "grid.linewidth": 0.6, "legend.fontsize": 7.5}


def section_rc(salt: str) -> dict:
    """SECTION_RC with the section's own SVG id salt, so ids never collide across sections."""
    return {**SECTION_RC, "svg.hashsalt": f"scalelab-{salt}"}


_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}

MEASURED = "#1f3b73"
FIT = "#d95f02"
HOLDOUT = "#c2185b"
DIVERGED = "#b00020"


# --------------------------------------------------------------------------- helpers


def _floats(values: Any) -> np.ndarray:
    """A float array with None / non-numbers as NaN."""
    out = [finite(v) for v in (values or [])]
    return np.array([np.nan if v is None else v for v in out], dtype=float)


def latency_median(value: Any) -> tuple[float | None, float | None]:
    """(median, iqr) from a latency entry: a number, or a ``{"median", "iqr"}`` dict."""
    if isinstance(value, Mapping):
        return finite(value.get("median")), finite(value.get("iqr"))
    return finite(value), None


def latency_batches(rungs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Batch sizes (as strings, numerically sorted) present in any rung's ``latency_ms``."""
    keys: set[str] = set()
    for r in rungs:
        lat = r.get("latency_ms")
        if isinstance(lat, Mapping):
            keys.update(str(k) for k in lat)

    def order(k: str) -> tuple[int, float, str]:
        f = finite(k)
        return (0, f, k) if f is not None else (1, 0.0, k)

    return sorted(keys, key=order)


def latency_of(rung: Mapping[str, Any], batch: str) -> tuple[float | None, float | None]:
    lat = rung.get("latency_ms")
    if not isinstance(lat, Mapping):
        return None, None
    for k, v in lat.items():
        if str(k) == batch:
            return latency_median(v)
    return None, None


def eval_law(law: str, params: Mapping[str, Any], x: np.ndarray) -> np.ndarray | None:
    """A fitted one-input law on ``x``, through scalelab.laws; None if it cannot be evaluated."""
    try:
        fitted = Law.from_summary({"law": law, "params": dict(params)})
    except UserError:
        return None
    if fitted.form_.n_inputs != 1:
        return None
    return fitted.predict(np.asarray(x, dtype=float)).point


def finished_points(rungs: Sequence[Mapping[str, Any]], x_key: str,
                     y_key: str) -> list[tuple[float, float]]:
    """(x, y) of the finished rungs whose x and y are both positive numbers."""
    pts = [(finite(r.get(x_key)), finite(r.get(y_key))) for r in rungs
           if r.get("status", "done") == "done"]
    return [(x, y) for x, y in pts if x is not None and y is not None and x > 0 and y > 0]


def residuals_svg(rungs: Sequence[Mapping[str, Any]], fit: Mapping[str, Any]) -> str | None:
    """The fit's log residuals per finished rung, drawn by scalelab.laws.plots (as `fit --plot`).

    None when the record cannot be evaluated (no params yet) or fewer than two rungs finished.
    """
    x_key, y_key = str(fit.get("x") or "n_nonembed"), str(fit.get("y") or "val_loss")
    pts = finished_points(rungs, x_key, y_key)
    if len(pts) < 2:
        return None
    try:
        law = Law.from_summary(dict(fit))
    except UserError:
        return None
    if law.form_.n_inputs != 1:
        return None
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(9.5, 2.8))
        ax = fig.add_subplot()
        draw_residuals(ax, law, [p[0] for p in pts], [p[1] for p in pts])
        ax.set_xlabel(_axis_name(x_key))
        return to_inline_svg(fig)


def rung_colors(n: int) -> list[str]:
    """One distinct colour per rung, small to large (viridis, without its palest end)."""
    cmap = matplotlib.colormaps["viridis"]
    if n <= 0:
        return []
    if n == 1:
        return [matplotlib.colors.to_hex(cmap(0.35))]
    return [matplotlib.colors.to_hex(cmap(0.88 * i / (n - 1))) for i in range(n)]


_ID_ATTR = re.compile(r'\bid="([^"]+)"')


def to_inline_svg(fig: Figure) -> str:
    """The figure as SVG to inline in HTML: no prolog, metadata or namespaces, ids unique to the
    plot, sized to scale with the page."""
    buf = io.StringIO()
    style_figure(fig)
    if fig.get_layout_engine() is None:
        fig.tight_layout(pad=0.6)
    fig.savefig(buf, format="svg", metadata=_NO_METADATA)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML prolog and DOCTYPE (it names a URL)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg, count=0)  # the HTML parser supplies these
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    # Unique ids per plot: several SVGs share one document.
    prefix = "p" + hashlib.sha1(svg.encode()).hexdigest()[:8] + "-"  # deterministic
    ids = set(_ID_ATTR.findall(svg))
    if ids:
        svg = _ID_ATTR.sub(lambda m: f'id="{prefix}{m.group(1)}"', svg)
        svg = re.sub(
            r"(url\(#|href=\"#)([^)\"]+)",
            lambda m: m.group(1) + (prefix + m.group(2) if m.group(2) in ids else m.group(2)),
            svg,
        )
    # Scale with the page: keep the viewBox, let CSS decide the width.
    svg = re.sub(
        r'^<svg([^>]*?)\swidth="([\d.]+)pt"\s+height="([\d.]+)pt"',
        lambda m: (
            f'<svg{m.group(1)} class="plot" role="img" '
            f'width="{float(m.group(2)) * 4 / 3:.0f}" height="{float(m.group(3)) * 4 / 3:.0f}"'
        ),
        svg,
        count=1,
    )
    return svg.strip()


def _no_data(ax: Any, text: str = "no data yet") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#888888")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


# --------------------------------------------------------------------------- loss vs N


def loss_vs_n_svg(
    rungs: Sequence[Mapping[str, Any]],
    fit: Mapping[str, Any] | None = None,
    *,
    x_key: str = "n_nonembed",
    y_key: str = "val_loss",
    y_label: str | None = None,
    symbol: str = "L",
) -> str:
    """Measured quality of each finished rung against N, log-log, with the fitted law.

    ``fit`` (a ``summary["fits"]`` entry, a ``FitRecord`` as a dict) sets the axes (its ``x`` and
    ``y``: the loss, or a classifier's error rate) and adds the law's line (from
    ``fit["band"]["point"]`` when a band is given, else evaluated from ``fit["params"]``), its
    uncertainty band (``band["lo"]``/``band["hi"]``), and the holdout prediction of the largest
    rung (``Holdout.largest()`` of ``fit["holdout"]``, any stored shape): a marker at the
    prediction with an error bar from its interval when given, joined to the measured point, its
    relative error in the legend. A holdout point without x (old records) sits at the largest
    finished rung. ``y_label`` names the y axis (default: a name for ``y``), ``symbol`` the
    quantity in the law's legend entry.
    """
    if fit is not None:
        x_key = str(fit.get("x") or x_key)
        y_key = str(fit.get("y") or y_key)
    pts = finished_points(rungs, x_key, y_key)
    bad = [
        (finite(r.get(x_key)), finite(r.get(y_key)))
        for r in rungs
        if r.get("status") == "diverged"
    ]
    bad = [(x, y) for x, y in bad if x is not None and x > 0]

    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(9.5, 5.2))
        ax = fig.add_subplot()
        if not pts:
            _no_data(ax, "no finished rungs yet")
            return to_inline_svg(fig)
        xs = np.array([p[0] for p in pts])
        ys = np.array([p[1] for p in pts])

        if fit is not None:
            band = fit.get("band") or {}
            law = str(fit.get("law", "power"))
            bx = _floats(band.get("x"))
            drawn = False
            if bx.size:
                lo = _floats(band.get("lo"))
                hi = _floats(band.get("hi"))
                if lo.size == bx.size and hi.size == bx.size:
                    ax.fill_between(
                        bx,
                        lo,
                        hi,
                        color=FIT,
                        alpha=0.18,
                        lw=0,
                        label=_band_label(band.get("level", fit.get("level"))),
                    )
                point = _floats(band.get("point"))
                if point.size == bx.size:
                    ax.plot(bx, point, color=FIT, lw=1.6, label=_law_label(law, symbol))
                    drawn = True
            if not drawn:
                lo_x = xs.min() / 1.6
                hi_x = xs.max() * 2.5
                gx = np.geomspace(lo_x, hi_x, 200)
                gy = eval_law(law, fit.get("params") or {}, gx)
                if gy is not None:
                    ax.plot(gx, gy, color=FIT, lw=1.6, label=_law_label(law, symbol))

        ax.plot(xs, ys, "o", color=MEASURED, ms=6, zorder=5, label="measured (finished rungs)")
        for x, y in bad:
            yy = y if y is not None and y > 0 else None
            if yy is None:
                ax.axvline(x, color=DIVERGED, lw=0.9, ls=":", zorder=1)
        if bad:
            ax.plot([], [], ls=":", color=DIVERGED, label="diverged rung (no loss)")

        ho = (fit or {}).get("holdout")
        top = Holdout.from_dict(dict(ho)).largest() if isinstance(ho, Mapping) else None
        if top is not None and finite(top.get("predicted")) is not None:
            _draw_holdout(ax, top, xs, ys)

        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(_axis_name(x_key))
        ax.set_ylabel(y_label or _axis_name(y_key))
        ax.grid(True, which="major")
        ax.grid(True, which="minor", alpha=0.4)
        ax.legend(loc="lower left", frameon=False)
        return to_inline_svg(fig)


def _level(level: Any) -> str:
    f = finite(level)
    return "95%" if f is None or f <= 0 else (f"{f:.0%}" if f <= 1 else f"{f:.0f}%")


def _band_label(level: Any) -> str:
    f = finite(level)
    if f is None or f <= 0:
        return "uncertainty band"
    return f"{f:.0%} band" if f <= 1 else f"{f:.0f}% band"


def _law_label(law: str, symbol: str = "L") -> str:
    if law in ("power", "power_e", "saturating_power"):
        return rf"fit: ${symbol} = E + A\,N^{{-\alpha}}$"
    return f"fit: {law}"


def _axis_name(key: str) -> str:
    return {
        "n_nonembed": "N, non-embedding parameters",
        "n_params": "N, all parameters",
        "val_loss": "validation loss",
        "val_error": "validation error rate",
        "val_bpb": "validation bits per byte",
        "val_rmse": "validation RMSE",
        "flops": "training compute C (FLOPs)",
        "tokens": "training tokens D",
    }.get(key, key)


def _draw_holdout(ax: Any, top: Mapping[str, Any], xs: np.ndarray, ys: np.ndarray) -> None:
    """The holdout's prediction of the largest rung (``Holdout.largest()``)."""
    pred = finite(top.get("predicted"))
    meas = finite(top.get("measured"))
    x = top.get("x")
    hx = finite(x[0] if isinstance(x, list | tuple) and x else x)
    if hx is None:
        hx = float(xs.max())
    if meas is None:
        meas = float(ys[int(np.argmax(xs))]) if hx == float(xs.max()) else None
    lo, hi = finite(top.get("lo")), finite(top.get("hi"))
    rel = finite(top.get("rel_error"))
    if rel is None and meas:
        rel = (pred - meas) / meas
    label = "holdout prediction of the largest rung"
    if rel is not None:
        label += f" (rel. error {rel:+.2%})"
    xoff = hx * 1.1  # beside the measured point, so both stay visible
    if lo is not None and hi is not None:
        yerr = np.array([[max(pred - lo, 0.0)], [max(hi - pred, 0.0)]])
        ax.errorbar(
            [xoff],
            [pred],
            yerr=yerr,
            fmt="D",
            color=HOLDOUT,
            ms=6,
            capsize=4,
            lw=1.2,
            zorder=6,
            label=label,
        )
    else:
        ax.plot([xoff], [pred], "D", color=HOLDOUT, ms=6, zorder=6, label=label)
    if meas is not None:
        ax.plot([hx, xoff], [meas, pred], color=HOLDOUT, lw=0.8, ls="--", zorder=4)


# --------------------------------------------------------------------------- loss curves


def _curve_series(points: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for p in points:
        x, y = finite(p.get("tokens")), finite(p.get(key))
        if x is not None and y is not None and x > 0:
            xs.append(x)
            ys.append(y)
    order = np.argsort(xs, kind="stable")
    return np.asarray(xs)[order], np.asarray(ys)[order]


def with_final_point(points: Sequence[Mapping[str, Any]],
                     rung: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A finished rung's curve ending at the D it trained on: when the stored curve stops short
    of it (none recorded yet, an older study), its final validation loss is the last point, so a
    rung shorter than `eval_every` or one without a stored curve still shows where it ended."""
    out = list(points)
    d, val = finite(rung.get("D")), finite(rung.get("val_loss"))
    if rung.get("status", "done") != "done" or d is None or d <= 0 or val is None:
        return out
    last = max((finite(p.get("tokens")) or 0.0 for p in out), default=0.0)
    if last < d * 0.99:  # a curve that ends within 1% of D ended at D (rounding of steps)
        out.append({"step": rung.get("steps"), "tokens": d, "train_loss": None, "val_loss": val})
    return out


def _few(n: int) -> dict[str, Any]:
    """Markers for a series of one or two points, which a bare line would not show."""
    return {"marker": "o", "ms": 3} if n < 3 else {}


def loss_curves_svg(
    curves: Mapping[int, Sequence[Mapping[str, Any]]],
    rungs: Sequence[Mapping[str, Any]] = (),
    *,
    unit: str = "token",
    loss_unit: str = "nats/token",
) -> str:
    """Train (left) and validation (right) loss of every rung against D seen, log x.

    ``unit`` is what D counts (byte, token, example: the points' ``tokens``), ``loss_unit`` what
    the loss is in (nats/byte, nats/example, ...).

    One colour per rung (same colours in both panels); a diverged rung's curve ends in an ``x``;
    a finished rung's curve ends at its final validation loss (`with_final_point`), and a series
    of one or two points is drawn with markers, so every rung shows whatever `eval_every` was.
    The y range is capped near the initial loss so a blow-up does not flatten the other curves.
    """
    by_rung = {int(r["rung"]): r for r in rungs if finite(r.get("rung")) is not None}
    norm: dict[int, Sequence[Mapping[str, Any]]] = {}
    for k, v in curves.items():
        if finite(k) is not None:
            norm[int(float(k))] = v or []
    for rid, r in by_rung.items():
        norm[rid] = with_final_point(norm.get(rid) or [], r)
    ids = sorted(set(norm) | set(by_rung))
    colors = dict(zip(ids, rung_colors(len(ids)), strict=True))

    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(12.0, 4.4))
        ax_t, ax_v = fig.subplots(1, 2, sharex=True, sharey=True)
        ax_t.set_title("training loss")
        ax_v.set_title("validation loss")
        if not any(norm.values()):
            _no_data(ax_t)
            _no_data(ax_v)
            return to_inline_svg(fig)

        firsts, finals = [], []
        for rid in ids:
            pts = norm.get(rid) or []
            if not pts:
                continue
            r = by_rung.get(rid, {})
            n = r.get("n_nonembed", r.get("n_params"))
            label = f"rung {rid}" + (f" · N={fmt_count(n)}" if finite(n) else "")
            c = colors[rid]
            tx, ty = _curve_series(pts, "train_loss")
            vx, vy = _curve_series(pts, "val_loss")
            if ty.size:
                ax_t.plot(tx, ty, color=c, lw=1.1, alpha=0.9, label=label, **_few(ty.size))
                firsts.append(ty[0])
                finals.append(ty[-1])
            if vy.size:
                ax_v.plot(vx, vy, "o-", color=c, lw=1.2, ms=3, label=label)
                firsts.append(vy[0])
                finals.append(vy[-1])
            if r.get("status") == "diverged":
                for ax, sx, sy in ((ax_t, tx, ty), (ax_v, vx, vy)):
                    if sy.size:
                        ax.plot(sx[-1:], sy[-1:], "x", color=DIVERGED, ms=8, mew=2, zorder=6)
        if any(r.get("status") == "diverged" for r in by_rung.values()):
            ax_v.plot([], [], "x", color=DIVERGED, ms=8, mew=2, label="diverged (last point)")

        if firsts:
            top = max(firsts) * 1.05
            bottom = min(finals + firsts) * 0.95
            if top > bottom > 0:
                ax_t.set_ylim(bottom, top)
        for ax in (ax_t, ax_v):
            ax.set_xscale("log")
            ax.set_xlabel(f"{unit}s seen")
            ax.grid(True, which="major")
        ax_t.set_ylabel(f"loss ({loss_unit})")
        ax_v.legend(loc="upper right", frameon=False)
        fig.tight_layout(pad=0.6)
        return to_inline_svg(fig)


# --------------------------------------------------------------------------- costs


def cost_svg(rungs: Sequence[Mapping[str, Any]], *, x_key: str = "n_params",
             unit: str = "token") -> str:
    """Small multiples of cost against N (log-log): training FLOPs (measured and 6·N·D), training
    time, latency per batch size (median, bar = IQR), checkpoint size, peak memory, throughput
    in units of D per second (``units_per_s``).
    Finished rungs only."""
    done = [r for r in rungs if r.get("status", "done") == "done" and finite(r.get(x_key))]
    done.sort(key=lambda r: float(r[x_key]))
    batches = latency_batches(done)

    def series(get: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xs, ys, es = [], [], []
        for r in done:
            y, e = get(r)
            if y is not None and y > 0:
                xs.append(float(r[x_key]))
                ys.append(y)
                es.append(e if e is not None else np.nan)
        return np.array(xs), np.array(ys), np.array(es)

    def key(k: str, scale: float = 1.0) -> Any:
        return lambda r: (
            (finite(r.get(k)) * scale if finite(r.get(k)) is not None else None),
            None,
        )

    palette = ["#1f3b73", "#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e"]
    panels: list[tuple[str, str, list[tuple[str, Any, str]]]] = [
        (
            "training compute",
            "FLOPs",
            [("measured", key("flops"), "o-"), ("6·N·D", key("flops_6nd"), "s--")],
        ),
        ("training time", "seconds", [("wall time", key("train_seconds"), "o-")]),
        (
            "inference latency",
            "ms (median, bar = IQR)",
            [(f"batch {b}", (lambda r, b=b: latency_of(r, b)), "o-") for b in batches],
        ),
        ("checkpoint size", "MB on disk", [("weights file", key("checkpoint_bytes", 1e-6), "o-")]),
        ("peak memory", "MB", [("training", key("peak_mem_bytes", 1e-6), "o-")]),
        ("throughput", f"{unit}s/s", [("training", key("units_per_s"), "o-")]),
    ]

    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(12.0, 6.6))
        axes = fig.subplots(2, 3).ravel()
        for ax, (title, ylabel, lines) in zip(axes, panels, strict=True):
            ax.set_title(title)
            drawn = 0
            for i, (lab, get, style) in enumerate(lines):
                xs, ys, es = series(get)
                if not xs.size:
                    continue
                color = palette[i % len(palette)]
                ax.plot(xs, ys, style, color=color, ms=4, lw=1.2, label=lab)
                if np.isfinite(es).any():
                    half = np.where(np.isfinite(es), es / 2, 0.0)
                    lower = np.minimum(half, ys * 0.999)  # stay above zero on a log axis
                    ax.errorbar(
                        xs, ys, yerr=[lower, half], fmt="none", ecolor=color, capsize=2, lw=0.9
                    )
                drawn += 1
            if not drawn:
                _no_data(ax)
                continue
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="major")
            ax.grid(True, which="minor", alpha=0.35)
            if len(lines) > 1:
                ax.legend(frameon=False, loc="upper left")
        for ax in axes[3:]:
            ax.set_xlabel(_axis_name(x_key))
        fig.tight_layout(pad=0.6)
        return to_inline_svg(fig)


# --------------------------------------------------------------------------- generalisation gap

TRAIN = "#1b9e77"
GAP = "#7570b3"


def gap_points(rungs: Sequence[Mapping[str, Any]],
               x_key: str = "n_nonembed") -> list[tuple[float, float, float]]:
    """(N, train_loss, val_loss) of the finished rungs that measured both, sorted by N."""
    out = []
    for r in rungs:
        if r.get("status", "done") != "done":
            continue
        x, t, v = finite(r.get(x_key)), finite(r.get("train_loss")), finite(r.get("val_loss"))
        if x is not None and x > 0 and t is not None and v is not None:
            out.append((x, t, v))
    return sorted(out)


def gap_svg(rungs: Sequence[Mapping[str, Any]], *, x_key: str = "n_nonembed",
            loss_unit: str = "nats/token") -> str | None:
    """How generalisation changes with size: the loss on fixed training windows and on the
    validation split against N (left, log-log), and the gap val - train (right, log x).

    Rungs without a training loss (older studies, unfinished rungs) are left out; None when no
    rung has both."""
    pts = gap_points(rungs, x_key)
    if not pts:
        return None
    xs = np.array([p[0] for p in pts])
    train = np.array([p[1] for p in pts])
    val = np.array([p[2] for p in pts])
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(12.0, 4.2))
        ax_l, ax_g = fig.subplots(1, 2)
        ax_l.set_title("training and validation loss")
        ax_l.plot(xs, train, "s--", color=TRAIN, ms=5, lw=1.2, label="training split")
        ax_l.plot(xs, val, "o-", color=MEASURED, ms=5, lw=1.2, label="validation split")
        ax_l.set_xscale("log")
        if (train > 0).all() and (val > 0).all():
            ax_l.set_yscale("log")
        ax_l.set_ylabel(f"loss ({loss_unit})")
        ax_l.legend(frameon=False, loc="best")
        ax_g.set_title("generalisation gap")
        ax_g.axhline(0.0, color="#888888", lw=0.9)
        ax_g.plot(xs, val - train, "o-", color=GAP, ms=5, lw=1.2, label="val − train")
        ax_g.set_xscale("log")
        ax_g.set_ylabel(f"val − train ({loss_unit})")
        ax_g.legend(frameon=False, loc="best")
        for ax in (ax_l, ax_g):
            ax.set_xlabel(_axis_name(x_key))
            ax.grid(True, which="major")
        fig.tight_layout(pad=0.6)
        return to_inline_svg(fig)


# --------------------------------------------------------------------------- extrapolation profile

TOLERANCE_FILL = "#1b7a3e"


def profile_svg(profile: Mapping[str, Any] | None, *, x_label: str = "N") -> str | None:
    """The extrapolation profile (``scalelab.laws.profile``): the signed relative error of each
    split's predictions against the extrapolation ratio x / x_k (log x), one line per split,
    its noise-implied band as bars where recorded, the tolerance as a shaded band and the trust
    horizon as a dashed line. None without splits."""
    splits = [s for s in (profile or {}).get("splits") or [] if s.get("points")]
    if not splits:
        return None
    tol = finite(profile.get("tolerance")) or 0.02
    colors = rung_colors(len(splits))
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(9.5, 4.6))
        ax = fig.add_subplot()
        ax.axhspan(-100 * tol, 100 * tol, color=TOLERANCE_FILL, alpha=0.10, lw=0,
                   label=f"within {100 * tol:g}%")
        ax.axhline(0.0, color="#888888", lw=0.9)
        for i, (split, color) in enumerate(zip(splits, colors, strict=True)):
            pts = sorted(split["points"], key=lambda p: p["ratio"])
            r = np.array([p["ratio"] for p in pts], dtype=float)
            e = 100 * np.array([p["rel_error"] for p in pts], dtype=float)
            label = (f"fit on {x_label} ≤ {fmt_count(split.get('max_fit_x'))} "
                     f"({split.get('n_points')} sizes)")
            ax.plot(r, e, "o-", color=color, ms=4.5, lw=1.3, label=label, zorder=4)
            bands = [p.get("band") for p in pts]
            if all(isinstance(b, list | tuple) and len(b) == 2 for b in bands):
                lo = 100 * np.array([b[0] for b in bands], dtype=float)
                hi = 100 * np.array([b[1] for b in bands], dtype=float)
                # beside the point, each split a little further: splits meet at equal ratios
                ax.vlines(r * 1.012 ** (i + 1), lo, hi, color=color, lw=3.0, alpha=0.3, zorder=2)
        h = finite(profile.get("horizon"))
        if h is not None:
            ax.axvline(h, color=FIT, lw=1.8, ls="--", label=f"trust horizon {fmt_ratio(h)}")
        if any(p.get("band") for s in splits for p in s["points"]):
            ax.plot([], [], color="#888888", lw=3.0, alpha=0.35,
                    label=f"noise-implied range of the error ({_level(profile.get('level'))})")
        ax.set_xscale("log")
        ax.set_xlabel(f"extrapolation ratio {x_label} / largest {x_label} fitted")
        ax.set_ylabel("error of prediction, % (predicted − measured)")
        ax.grid(True, which="major")
        ax.grid(True, which="minor", alpha=0.35)
        style_axes(ax, y=False, unit="×")
        ax.legend(loc="best", frameon=False, fontsize=7.5)
        return to_inline_svg(fig)
