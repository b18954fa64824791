"""The report's two-axis part: a study over N and D and its compute-optimal answer.

`two_axis_view(record, rungs)` turns one `law: "two_axis"` fit record (`scalelab.laws.two_axis`)
and summary.json's rungs into {answer, html}: the one-line answer for the top of the report and
trusted HTML (every study-derived string escaped here) with

- IsoFLOP curves: loss against N per budget, its parabola and minimum (with interval);
- iso-loss contours of L(N, D) (Approach 3) with the rungs, the budget lines, the
  compute-optimal frontier and its band;
- N* and D* against C from both approaches;
- the two approaches side by side, the holdout, every candidate law's inner and outer holdout
  (which one answers and why), and a table of predictions for larger budgets;
- the train/validation gap per (N, D) as a map, rungs that repeat their data (epochs > 1) ringed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scalelab.laws.fit import Law
from scalelab.laws.isoflop import FlopsPerUnit
from scalelab.laws.two_axis import epochs_of
from scalelab.report.html import candidates_html, candidates_view
from scalelab.report.html import esc as _e
from scalelab.report.plots import section_rc, to_inline_svg
from scalelab.values import finite, fmt_count
from scalelab.values import fmt_spec as _fmt

PALETTE = ("#1f3b73", "#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#a6761d",
           "#666666")
FRONTIER = "#c2185b"
REPEATED = "#b00020"
_RC = section_rc("two-axis")


def _c(v: Any) -> str:
    f = finite(v)
    return "—" if f is None else f"{f:.3g}"


def _iv(iv: Any, fmt: Any = fmt_count) -> str:
    if isinstance(iv, Sequence) and len(iv) == 2 and all(finite(v) is not None for v in iv):
        return f" [{fmt(iv[0])}, {fmt(iv[1])}]"
    return ""


def _with_iv(v: Mapping[str, Any] | None, fmt: Any = fmt_count) -> str:
    if not v or finite(v.get("value")) is None:
        return "—"
    return fmt(v["value"]) + _iv(v.get("interval"), fmt)


def _num(v: float) -> str:
    return f"{v:.4g}"


def _figure(fig_id: str, svg: str | None, caption: str) -> str:
    if svg is None:
        return f'<p class="note" id="{fig_id}-none">{_e(caption)}</p>'
    return (f'<figure class="two-axis" id="{fig_id}">{svg}<figcaption>{_e(caption)}'
            "</figcaption></figure>")


def _figure_obj(w: float, h: float, cols: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    return fig, fig.subplots(1, cols)


# --------------------------------------------------------------------------- panels


def _isoflop_svg(record: Mapping[str, Any]) -> str | None:
    """Loss against N per budget: rungs, parabola (dotted beyond the sizes sampled), minimum
    with its N* interval, and Approach 3 along the same budget line (thin dashes)."""
    from matplotlib import rc_context

    a2 = record.get("approach2") or {}
    budgets = a2.get("budgets") or []
    if not budgets:
        return None
    law = _law(record)
    per_unit = FlopsPerUnit.from_dict(record.get("flops_per_unit"))
    with rc_context(_RC):
        fig, ax = _figure_obj(8.6, 4.4)
        for i, b in enumerate(budgets):
            color = PALETTE[i % len(PALETTE)]
            pts = b["points"]
            ax.plot([p["N"] for p in pts], [p["loss"] for p in pts], "o", color=color, ms=5,
                    label=f"C = {b['compute']:.2g}", zorder=4)
            _draw_parabola(ax, b, color)
            if law is not None:
                n = np.geomspace(b["n_range"][0] / 1.5, b["n_range"][1] * 1.5, 60)
                ax.plot(n, law.predict(np.column_stack([n, b["compute"] / per_unit(n)])).point,
                        "--", color=color, lw=0.7, alpha=0.7)
        ax.set_xscale("log")
        ax.set_xlabel("N (non-embedding parameters)")
        ax.set_ylabel("validation loss")
        ax.legend(frameon=False, fontsize=7, loc="upper right")
        return to_inline_svg(fig)


def _draw_parabola(ax: Any, b: Mapping[str, Any], color: str) -> None:
    c2, c1, c0 = b["coef"]
    lo, hi = np.log(b["n_range"][0]), np.log(b["n_range"][1])
    inside = np.linspace(lo, hi, 60)

    def par(u: np.ndarray) -> np.ndarray:
        v = u - b["centre"]
        return c2 * v**2 + c1 * v + c0

    ax.plot(np.exp(inside), par(inside), "-", color=color, lw=1.2)
    if b["N"] is None:
        return
    uv = np.log(b["N"])
    if not b["vertex_inside"]:  # the parabola carried on to its vertex: an extrapolation
        beyond = np.linspace(min(uv, lo), max(uv, hi), 60)
        ax.plot(np.exp(beyond), par(beyond), ":", color=color, lw=1.0)
    iv = b.get("N_interval")
    xerr = None if not iv else [[b["N"] - iv[0]], [iv[1] - b["N"]]]
    ax.errorbar([b["N"]], [b["loss"]], xerr=xerr, fmt="*", color=color, ms=11, mec="black",
                mew=0.6, capsize=3, zorder=5)


def _law(record: Mapping[str, Any]) -> Law | None:
    a3 = record.get("approach3") or {}
    if not a3.get("params"):
        return None
    return Law.from_summary(dict(a3))


def _contour_grid(record: Mapping[str, Any], rungs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    fr = record.get("frontier") or []
    ns = [r["N"] for r in rungs] + [r["N"] for r in fr]
    ds = [r["D"] for r in rungs] + [r["D"] for r in fr]
    return (np.geomspace(min(ns) / 2, max(ns) * 2, 80), np.geomspace(min(ds) / 2, max(ds) * 2, 80))


def _contour_svg(record: Mapping[str, Any], rungs: list[dict]) -> str | None:
    """Iso-loss contours of L(N, D) with the rungs, budget lines and the frontier with band."""
    from matplotlib import rc_context

    law = _law(record)
    if law is None or not rungs:
        return None
    per_unit = FlopsPerUnit.from_dict(record.get("flops_per_unit"))
    n_grid, d_grid = _contour_grid(record, rungs)
    N, D = np.meshgrid(n_grid, d_grid)
    L = law.predict(np.column_stack([N.ravel(), D.ravel()])).point.reshape(N.shape)
    with rc_context(_RC):
        fig, ax = _figure_obj(8.6, 5.2)
        levels = np.quantile(L, np.linspace(0.03, 0.97, 12))
        ax.contourf(N, D, L, levels=levels, cmap="Blues_r", alpha=0.35)
        cs = ax.contour(N, D, L, levels=levels, colors="#1f3b73", linewidths=0.6)
        ax.clabel(cs, fmt="%.3g", fontsize=6.5)
        for c in record.get("budgets") or []:
            ax.plot(n_grid, c / per_unit(n_grid), "-", color="#888888", lw=0.6)
        _draw_frontier(ax, record.get("frontier") or [], per_unit)
        _draw_rungs(ax, rungs)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(n_grid[0], n_grid[-1])
        ax.set_ylim(d_grid[0], d_grid[-1])
        ax.set_xlabel("N (non-embedding parameters)")
        ax.set_ylabel(f"D ({record.get('unit') or 'token'}s)")
        ax.legend(frameon=False, fontsize=7, loc="upper left")
        return to_inline_svg(fig)


def _draw_frontier(ax: Any, frontier: list[dict], per_unit: FlopsPerUnit) -> None:
    if not frontier:
        return
    ax.plot([r["N"] for r in frontier], [r["D"] for r in frontier], "-", color=FRONTIER, lw=1.8,
            label="compute-optimal frontier (Approach 3)")
    band = [r for r in frontier if r.get("intervals") and r["intervals"].get("N")]
    if band:
        lo = np.array([r["intervals"]["N"][0] for r in band])
        hi = np.array([r["intervals"]["N"][1] for r in band])
        c = np.array([r["compute"] for r in band])
        # Along each budget line the band runs from N_lo to N_hi: D follows from C = f(N)·D.
        xs = np.concatenate([lo, hi[::-1]])
        ys = np.concatenate([c / per_unit(lo), (c / per_unit(hi))[::-1]])
        ax.fill(xs, ys, color=FRONTIER, alpha=0.18, lw=0, label="its 95% band")


def _draw_rungs(ax: Any, rungs: list[dict]) -> None:
    fresh = [r for r in rungs if not r["repeated"]]
    again = [r for r in rungs if r["repeated"]]
    if fresh:
        ax.plot([r["N"] for r in fresh], [r["D"] for r in fresh], "o", color="black", ms=4,
                label="rungs", zorder=5)
    if again:
        ax.plot([r["N"] for r in again], [r["D"] for r in again], "o", mfc="black", ms=4,
                mec=REPEATED, mew=1.6, label="rungs repeating their data", zorder=5)


def _optimal_svg(record: Mapping[str, Any]) -> str | None:
    """N* (left) and D* (right) against C: Approach 3's frontier with band, Approach 2's
    per-budget minima with intervals and its power law, the predictions hollow."""
    from matplotlib import rc_context

    fr = record.get("frontier") or []
    if not fr:
        return None
    a2 = record.get("approach2") or {}
    with rc_context(_RC):
        fig, axes = _figure_obj(9.2, 4.0, cols=2)
        for ax, key in zip(axes, ("N", "D"), strict=True):
            c = np.array([r["compute"] for r in fr])
            ax.plot(c, [r[key] for r in fr], "-", color=FRONTIER, lw=1.4, label="Approach 3")
            if fr[0].get("intervals"):
                ax.fill_between(c, [r["intervals"][key][0] for r in fr],
                                [r["intervals"][key][1] for r in fr], color=FRONTIER,
                                alpha=0.15, lw=0)
            _draw_approach2(ax, a2, key, c)
            preds = record.get("predictions") or []
            if preds:
                ax.plot([p["compute"] for p in preds], [p[key] for p in preds], "o", mfc="white",
                        mec=FRONTIER, ms=6, label="predictions (10×, 100×)")
            budgets = record.get("budgets") or []
            if budgets:
                ax.axvspan(min(budgets), max(budgets), color="#eeeeee", zorder=0)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("compute C (FLOPs)")
            ax.set_ylabel(f"{key}* (optimal {'parameters' if key == 'N' else 'data'})")
        axes[0].legend(frameon=False, fontsize=7)
        fig.set_layout_engine("tight")
        return to_inline_svg(fig)


def _draw_approach2(ax: Any, a2: Mapping[str, Any], key: str, c: np.ndarray) -> None:
    pts = [b for b in a2.get("budgets") or [] if b.get(key) is not None]
    if not pts:
        return
    x = np.array([b["compute"] for b in pts])
    y = np.array([b[key] for b in pts])
    ivs = [b.get(f"{key}_interval") for b in pts]
    err = None
    if all(ivs):
        err = [[v - iv[0] for v, iv in zip(y, ivs, strict=True)],
               [iv[1] - v for v, iv in zip(y, ivs, strict=True)]]
    ax.errorbar(x, y, yerr=err, fmt="s", color="#1b9e77", ms=5, capsize=3,
                label="Approach 2 (parabola minima)", zorder=5)
    fit = a2.get("a" if key == "N" else "b")
    if fit:
        ax.plot(c, np.exp(fit["intercept"]) * c ** fit["value"], "--", color="#1b9e77", lw=1.0)


def _gap_svg(rungs: list[dict]) -> str | None:
    """val − train loss per (N, D) as a coloured map; rungs that repeat their data ringed."""
    from matplotlib import rc_context

    pts = [r for r in rungs if r["gap"] is not None]
    if not pts:
        return None
    with rc_context(_RC):
        fig, ax = _figure_obj(8.6, 4.6)
        sc = ax.scatter([r["N"] for r in pts], [r["D"] for r in pts],
                        c=[r["gap"] for r in pts], cmap="viridis", s=70, zorder=4,
                        edgecolors=[REPEATED if r["repeated"] else "none" for r in pts],
                        linewidths=[2.0 if r["repeated"] else 0.0 for r in pts])
        for r in pts:
            if r["repeated"]:
                ax.annotate(f"{r['epochs']:.3g} ep", (r["N"], r["D"]), xytext=(5, 4),
                            textcoords="offset points", fontsize=6.5, color=REPEATED)
        fig.colorbar(sc, ax=ax, label="generalisation gap: val − train loss")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (non-embedding parameters)")
        ax.set_ylabel("D (training units seen)")
        return to_inline_svg(fig)


# --------------------------------------------------------------------------- tables


def _comparison_table(record: Mapping[str, Any]) -> str:
    comp = record.get("comparison") or {}
    largest = comp.get("largest") or {}
    a2, a3 = largest.get("approach2") or {}, largest.get("approach3") or {}

    def pair(key: str, fmt: Any) -> tuple[str, str]:
        return _with_iv(a2.get(key), fmt), _with_iv(a3.get(key), fmt)

    def exp(name: str) -> tuple[str, str]:
        e = comp.get(name) or {}
        return _with_iv(e.get("approach2"), _num), _with_iv(e.get("approach3"), _num)

    rows = [("a in N* ∝ C^a", *exp("a")), ("b in D* ∝ C^b", *exp("b")),
            (f"N* at C = {_c(largest.get('compute'))}", *pair("N", fmt_count)),
            (f"D* at C = {_c(largest.get('compute'))}", *pair("D", fmt_count)),
            ("tokens per parameter there", *pair("tokens_per_param", _num)),
            ("best loss there", *pair("loss", _num))]
    body = "".join(f"<tr><td>{_e(a)}</td><td>{_e(b)}</td><td>{_e(c)}</td></tr>"
                   for a, b, c in rows)
    return ('<table class="two-axis-compare" id="two-axis-compare"><thead><tr><th></th>'
            "<th>Approach 2: IsoFLOP parabolas</th><th>Approach 3: L(N, D)</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _agreement(record: Mapping[str, Any]) -> str:
    agree = record.get("agree")
    if agree is True:
        return ('<p class="agree" id="two-axis-agree"><b>The approaches agree:</b> their '
                "intervals of N* at the largest budget overlap.</p>")
    if agree is False:
        return ('<p class="warn" id="two-axis-agree"><b>The approaches disagree</b> on N* at '
                f"the largest budget: {_e(record.get('why'))}.</p>")
    why = (record.get("approach2") or {}).get("skipped")
    text = "only Approach 3 applies (a grid ladder has no IsoFLOP budgets)" \
        if record.get("ladder") == "grid" else (why or "no interval to compare")
    return f'<p class="note" id="two-axis-agree">No comparison: {_e(text)}.</p>'


def _holdout_text(record: Mapping[str, Any]) -> str:
    ho = record.get("holdout")
    if not ho:
        return (f'<p class="note" id="two-axis-holdout">No holdout: '
                f"{_e(record.get('holdout_skipped') or 'too few rungs')}.</p>")
    what = ("all budgets but the largest" if ho.get("x_name") == "C"
            else "all rungs but those of the largest N")
    text = (f"<b>Holdout:</b> L(N, D) fitted to {_e(what)} ({_e(ho.get('n_fit'))} rungs) "
            f"predicts the best loss of the largest {'budget' if ho.get('x_name') == 'C' else 'N'}"
            f" {_e(_c(ho.get('predicted')))}{_e(_iv(ho.get('interval'), _num))}; measured "
            f"{_e(_c(ho.get('measured')))} ({_e(ho.get('measured_from'))}): error "
            f"<b>{_e(_fmt(100 * (ho.get('rel_error') or 0), '+.2f', '%'))}</b>")
    ns = ho.get("n_star")
    if ns:
        text += (f"; its N* {_e(fmt_count(ns['predicted']))}{_e(_iv(ns.get('interval')))} "
                 f"against {_e(fmt_count(ns['measured']))} "
                 f"({_e(_fmt(100 * ns['rel_error'], '+.1f', '%'))})")
    return f'<p class="holdout" id="two-axis-holdout">{text}.</p>'


def _predictions_table(record: Mapping[str, Any]) -> str:
    preds = record.get("predictions") or []
    if not preds:
        return ('<p class="note" id="two-axis-predictions">No predictions: neither approach '
                "gave a usable law.</p>")
    rows = []
    for p in preds:
        iv = p.get("intervals") or {}
        cells = (f"{p['factor']:g}×", _c(p["compute"]),
                 fmt_count(p["N"]) + _iv(iv.get("N")), fmt_count(p["D"]) + _iv(iv.get("D")),
                 _num(p["tokens_per_param"]) + _iv(iv.get("tokens_per_param"), _num),
                 _num(p["loss"]) + _iv(iv.get("loss"), _num), p.get("source") or "")
        warn = (f'<span class="warn">{_e(p["warning"])}.</span>' if p.get("warning") else "")
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells)
                    + f'<td style="text-align:left">{warn}</td></tr>')
    heads = ("budget", "C (FLOPs)", "N*", "D*", "D*/N*", "expected loss", "from", "")
    return ('<table class="predictions" id="two-axis-predictions"><thead><tr>'
            + "".join(f"<th>{_e(h)}</th>" for h in heads) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _budgets_table(record: Mapping[str, Any]) -> str:
    a2 = record.get("approach2") or {}
    rows = []
    for b in a2.get("budgets") or []:
        inside = "yes" if b["vertex_inside"] else "no: extrapolated"
        cells = (_c(b["compute"]), b["n_points"],
                 f"{fmt_count(b['n_range'][0])} – {fmt_count(b['n_range'][1])}",
                 fmt_count(b["N"]) + _iv(b.get("N_interval")), inside,
                 fmt_count(b["D"]) + _iv(b.get("D_interval")),
                 "—" if b["loss"] is None else _num(b["loss"]) + _iv(b.get("loss_interval"), _num))
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    for s in a2.get("skipped_budgets") or []:
        rows.append(f"<tr><td>{_e(_c(s['compute']))}</td><td>{_e(s['n_points'])}</td>"
                    f'<td colspan="5">skipped: {_e(s["reason"])}</td></tr>')
    if not rows:
        return ""
    heads = ("C (FLOPs)", "rungs", "N sampled", "N* (vertex)", "inside the sizes?", "D*", "L*")
    return ('<table class="two-axis-budgets" id="two-axis-budgets"><thead><tr>'
            + "".join(f"<th>{_e(h)}</th>" for h in heads) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _candidates(record: Mapping[str, Any]) -> str:
    """Every candidate law's inner and outer holdout, and which answers (`report.html`)."""
    view = candidates_view(record, "budget" if record.get("ladder") == "isoflop" else "size",
                           record.get("chosen"))
    if view is None:
        return ""
    return "<h4>Which law answers</h4>\n" + candidates_html(view, "two-axis")


# --------------------------------------------------------------------------- the part


def _rung_points(rungs: Sequence[Mapping[str, Any]]) -> list[dict]:
    out = []
    for r in rungs:
        n = finite(r.get("n_nonembed", r.get("n_params")))
        d = finite(r.get("D"))
        if r.get("status", "done") != "done" or n is None or d is None:
            continue
        val, train, ep = finite(r.get("val_loss")), finite(r.get("train_loss")), \
            epochs_of(dict(r))
        out.append({"N": n, "D": d, "epochs": ep, "repeated": ep is not None and ep > 1,
                    "gap": None if val is None or train is None else val - train})
    return out


def _safe(make: Any, what: str) -> str | None:
    """A plot, or None with the failure noted: a plot must not take the tables down with it."""
    try:
        return make()
    except Exception as err:  # noqa: BLE001 - report what failed, keep the rest
        return f"<p class=\"warn\">({_e(what)} unavailable: {_e(type(err).__name__)})</p>"


def two_axis_view(record: Mapping[str, Any], rungs: Sequence[Mapping[str, Any]]
                  ) -> dict[str, str | None]:
    """{answer: the one-line answer or None, html: the part's trusted HTML}."""
    pts = _rung_points(rungs)
    repeated = sum(p["repeated"] for p in pts)
    unit = record.get("unit") or "token"
    parts = [f"<h3 id=\"two-axis\">Both axes: N and D ({_e(record.get('ladder'))} ladder, "
             f"{_e(record.get('n_rungs'))} rungs)</h3>",
             f"<p class=\"answer\"><b>Answer:</b> {_e(record.get('answer') or 'no usable law')}"
             f" (from {_e(record.get('chosen') or 'neither approach')}).</p>",
             _figure("two-axis-isoflop", _safe(lambda: _isoflop_svg(record), "IsoFLOP plot"),
                     "IsoFLOP profiles: validation loss against N for every budget (points), "
                     "the parabola in log N fitted to each (dotted where carried beyond the "
                     "sizes sampled) and its minimum with the interval of N* (star); dashed: "
                     "Approach 3's L(N, D) along the same budget line."),
             _budgets_table(record),
             _figure("two-axis-contours", _safe(lambda: _contour_svg(record, pts), "contours"),
                     f"Iso-loss contours of the fitted L(N, D) over N and D ({unit}s), the "
                     "rungs (ringed in red where they repeat their data), the IsoFLOP budget "
                     "lines C = f(N)·D (grey, f the measured FLOPs per unit) and the "
                     "compute-optimal frontier with its 95% band, to 100× the largest budget."),
             _figure("two-axis-optimal", _safe(lambda: _optimal_svg(record), "N*, D* plot"),
                     "N* (left) and D* (right) against compute: Approach 3's frontier with "
                     "its 95% band, Approach 2's parabola minima with intervals and its power "
                     "law in C (dashed); grey: the budgets trained; hollow: the predictions."),
             "<h4>Both approaches</h4>", _comparison_table(record), _agreement(record),
             _holdout_text(record), _candidates(record),
             "<h4>Larger budgets</h4>", _predictions_table(record),
             "<h4>Over-fitting and data</h4>",
             _figure("two-axis-gap", _safe(lambda: _gap_svg(pts), "gap map"),
                     "Generalisation gap (validation − train loss, same amount of data) per "
                     "(N, D); red rings mark rungs that saw their training data more than once "
                     "(epochs > 1), with the number of epochs."
                     if any(p["gap"] is not None for p in pts) else
                     "No rung recorded a training loss beside its validation loss: no gap map."),
             f'<p class="note" id="two-axis-repeated">{repeated} of {len(pts)} rungs repeat '
             "their training data (epochs > 1).</p>" if pts else ""]
    return {"answer": record.get("answer"), "html": "\n".join(p for p in parts if p)}


def two_axis_records(fits: Sequence[Any]) -> list[Mapping[str, Any]]:
    """The two-axis fit records among summary.json's `fits`."""
    return [f for f in fits or [] if isinstance(f, Mapping) and f.get("law") == "two_axis"]


__all__ = ["two_axis_records", "two_axis_view"]
