"""The report's compression section: frontier plot, variant table, distillation comparison.

(Moved here from `scalelab.compress.report`: the report reads summary.json's data only and imports
no stage that makes variants.)

`compression_section(summary)` returns trusted HTML (every study-derived string escaped here) or
None when the study has no variants. Nothing here names a family or a method: the loss unit comes
from the task record (`summary["study"]["corpus"]["unit"]`, "token" for studies that did not
record it), the task's metrics (error, RMSE) get columns when the variants recorded them
(`extra.metrics`), and each method's class (`compress.base.CompressMethod`, through
`find_method`) gives its marker and colour, its notes cell, whether it claims a speedup, a
sentence for the introduction and any table of its own (distillation's comparison).

The plot puts rungs and variants on the loss-vs-bytes and loss-vs-latency planes; the fitted law
L(N) = E + A * N^-alpha (when `summary["fits"]` has one in n_nonembed) is drawn through the rungs
by mapping N to each rung's measured bytes and latency (log-log interpolation between rungs, so
the curve spans the rungs' range only). Models on the
Pareto frontier over (loss, latency, bytes) are ringed.

Speedups are computed here from the medians the table shows beside them (the base rung's,
measured again before each variant, `extra.base_latency_ms`, over the variant's), by
`scalelab.latency.speedups`, the function that stored `extra.speedup`; a latency flagged unstable
(`scalelab.latency`) is marked where it is shown, and so is a speedup made from one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from scalelab import latency, select
from scalelab.compress.base import ReportTable, find_method, latency_cell
from scalelab.report.html import esc as _e
from scalelab.report.html import fmt_bytes
from scalelab.report.html import fmt_spec as _fmt
from scalelab.report.plots import section_rc, to_inline_svg
from scalelab.tasks import declared_metrics
from scalelab.values import finite

RUNG_COLOR = "#1f3b73"
LAW_COLOR = "#d95f02"
_RC = section_rc("compress")


def _unit(summary: Mapping[str, Any]) -> str:
    corpus = (summary.get("study") or {}).get("corpus") or {}
    return str(corpus.get("unit") or "token")


def _metric_columns(summary: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(metric, header, format) of the task metrics the variants recorded, beside the loss:
    not those that are a function of the loss (its change has a column) or the complement of
    another (accuracy is 1 - error)."""
    have = {k for v in summary.get("variants") or []
            for k in ((v.get("extra") or {}).get("metrics") or {})}
    return [(m.name, m.label, m.format) for m in declared_metrics()
            if m.name in have and not m.of_loss and m.complement is None]


def _law(summary: Mapping[str, Any]) -> dict | None:
    for fit in summary.get("fits") or []:
        p = fit.get("params") or {}
        # The loss law only: classifier studies also fit the error rate (y "val_error").
        is_loss_law = fit.get("x", "n_nonembed") == "n_nonembed" \
            and fit.get("y", "val_loss") == "val_loss"
        if is_loss_law and all(finite(p.get(k)) is not None for k in ("E", "A", "alpha")):
            return {k: float(p[k]) for k in ("E", "A", "alpha")}
    return None


def _batch(models: list[dict]) -> str | None:
    batches = sorted({b for m in models for b in (m.get("latency_ms") or {})}, key=int)
    if not batches:
        return None
    return "32" if "32" in batches else batches[-1]


def _bytes_tick(v: float, _pos: Any = None) -> str:
    return "" if v <= 0 else fmt_bytes(v).replace(" ", "\u2009")


def _plain_tick(v: float, _pos: Any = None) -> str:
    return "" if v <= 0 else f"{v:g}"


def frontier_svg(summary: Mapping[str, Any], batch: str) -> str:
    """Rungs and variants on the loss/bytes and loss/latency planes (inline SVG)."""
    from matplotlib import rc_context, ticker
    from matplotlib.figure import Figure

    models = select.models(summary)
    front = {m["name"] for m in select.pareto_front(models, batch)}
    rungs = sorted((m for m in models if m["kind"] == "rung"), key=lambda m: m["n_nonembed"])
    law = _law(summary)
    with rc_context(_RC):
        fig = Figure(figsize=(9.2, 3.8))
        axes = fig.subplots(1, 2, sharey=True)
        planes = (("bytes", "bytes of the saved file"),
                  ("latency", f"latency at batch {batch}, ms (median)"))
        for ax, (key, label) in zip(axes, planes, strict=True):
            ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(_bytes_tick if key == "bytes"
                                                              else _plain_tick))
            ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            pts = [(select.metric(m, key, batch), select.metric(m, "val_loss", batch), m)
                   for m in models]
            pts = [(x, y, m) for x, y, m in pts if x is not None and x > 0 and y is not None]
            rx = [(x, y) for x, y, m in pts if m["kind"] == "rung"]
            if rx:
                xs, ys = zip(*sorted(rx), strict=True)
                ax.plot(xs, ys, "o", color=RUNG_COLOR, ms=6, label="rungs (trained)", zorder=3)
            for x, y, m in pts:
                if m["kind"] == "rung":
                    ax.annotate(m["name"], (x, y), textcoords="offset points", xytext=(4, 4),
                                fontsize=7, color=RUNG_COLOR)
            seen = set()
            for x, y, m in pts:
                if m["kind"] != "variant":
                    continue
                meth = m.get("method", "")
                style = find_method(meth).style
                ax.plot([x], [y], style.marker, color=style.color, ms=style.size, zorder=4,
                        label=(style.label or meth) if meth not in seen else None)
                seen.add(meth)
            ring = [(x, y) for x, y, m in pts if m["name"] in front]
            if ring:
                ax.plot(*zip(*ring, strict=True), "o", mfc="none", mec="black", ms=12, mew=0.8,
                        label="Pareto frontier", zorder=5)
            if law is not None and len(rungs) >= 2:
                rn = [(m["n_nonembed"], select.metric(m, key, batch)) for m in rungs]
                rn = [(n, v) for n, v in rn if n and v and v > 0]
                if len(rn) >= 2:
                    ln, lv = np.log([n for n, _ in rn]), np.log([v for _, v in rn])
                    grid = np.linspace(ln.min(), ln.max(), 60)
                    xs = np.exp(np.interp(grid, ln, lv))
                    ys = law["E"] + law["A"] * np.exp(grid) ** (-law["alpha"])
                    ax.plot(xs, ys, "-", color=LAW_COLOR, lw=1.2, zorder=2,
                            label="fitted law L(N) through the rungs")
            if ax is axes[0]:
                ax.set_ylabel(f"validation loss, nats/{_unit(summary)}")
        handles, labels = axes[0].get_legend_handles_labels()
        h2, l2 = axes[1].get_legend_handles_labels()
        for h, lab in zip(h2, l2, strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
        fig.legend(handles, labels, loc="upper center", ncol=min(6, len(labels)),
                   frameon=False, bbox_to_anchor=(0.5, 1.0))
        # A layout engine (not a one-off tight_layout) so to_inline_svg keeps the legend's room.
        fig.set_layout_engine("tight", rect=(0, 0, 1, 0.88))
        return to_inline_svg(fig)


def _speedup_cells(v: Mapping[str, Any], base: Mapping[str, float],
                   lat: Mapping[str, float], batch: str) -> tuple[str, str]:
    """Speedups at b1 and `batch`: the ratio of the two medians shown beside them (the base
    rung's, measured again before this variant, over the variant's), computed by the function
    that stored `extra.speedup`; marked when either latency is flagged."""
    if not find_method(str(v.get("method"))).claims_speedup:
        return "not claimed", "not claimed"
    ex = v.get("extra") or {}
    sp = latency.speedups(base, lat)
    cells = []
    for b in ("1", batch):
        shaky = latency.flagged(v, b) or latency.flagged(ex, b, "base_")
        cells.append(_fmt(sp.get(b), ".2f", "×") + (latency.UNSTABLE_MARK if shaky else ""))
    return cells[0], cells[1]


def _table(summary: Mapping[str, Any], batch: str, front: set[str]) -> str:
    variants = summary.get("variants") or []
    unit = _unit(summary)
    metric_cols = _metric_columns(summary)
    heads = ("variant", "method", "of rung", "N (non-emb)", "bytes", "smaller", "val loss",
             "Δ loss", *(label for _, label, _ in metric_cols), "lat b1 ms", f"lat b{batch} ms",
             f"base rung lat b1 / b{batch} ms", "speedup b1", f"speedup b{batch}", "frontier",
             "notes")
    rows = []
    for v in variants:
        ex = v.get("extra") or {}
        lat = latency.medians(v.get("latency_ms"))
        base = latency.medians(ex.get("base_latency_ms"))
        metrics = ex.get("metrics") or {}
        cells = (v["name"], v.get("method"), v.get("of_rung"), _fmt(v.get("n_nonembed"), ",.0f"),
                 fmt_bytes(v.get("bytes")), _fmt(ex.get("size_ratio"), ".2f", "×"),
                 _fmt(v.get("val_loss"), ".4f"), _fmt(ex.get("loss_delta"), "+.4f"),
                 *(_fmt(metrics.get(key), spec) for key, _, spec in metric_cols),
                 latency_cell(lat, v, "1"), latency_cell(lat, v, batch),
                 f"{latency_cell(base, ex, '1', 'base_')} / "
                 f"{latency_cell(base, ex, batch, 'base_')}",
                 *_speedup_cells(v, base, lat, batch),
                 "yes" if v["name"] in front else "",
                 find_method(str(v.get("method"))).notes(v, batch, unit))
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return ("<table class=\"variants\"><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in heads)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _method_tables(summary: Mapping[str, Any]) -> list[ReportTable]:
    """The tables the study's methods add of their own, in the order their variants come."""
    variants = summary.get("variants") or []
    kinds = list(dict.fromkeys(str(v.get("method")) for v in variants))
    tables = [find_method(k).report_table([v for v in variants if v.get("method") == k],
                                          _unit(summary)) for k in kinds]
    return [t for t in tables if t is not None]


def _render(table: ReportTable) -> str:
    return (f"<h3>{_e(table.title)}</h3><p>{_e(table.intro)}</p>"
            f'<table class="{_e(table.css)}"><thead><tr>'
            + "".join(f"<th>{_e(h)}</th>" for h in table.heads) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>"
                      for row in table.rows)
            + "</tbody></table>")


def compression_section(summary: Mapping[str, Any]) -> str | None:
    """The section's HTML, or None when the study has no variants."""
    variants = summary.get("variants") or []
    if not variants:
        return None
    models = select.models(summary)
    batch = _batch(models) or "1"
    front = {m["name"] for m in select.pareto_front(models, batch)}
    study = summary.get("study") or {}
    kinds = dict.fromkeys(str(v.get("method")) for v in variants)
    notes = [n for n in (find_method(k).section_note for k in kinds) if n]
    parts = [
        "<p>Variants of trained rungs, each re-evaluated on the rungs' validation data and "
        f"measured with the same harness: loss in nats/{_e(_unit(summary))}, size = bytes of "
        "the saved file, "
        f"latency = median forward time of one batch of {_e(batch)} (and 1) inputs after "
        f"warm-up, on {_e(study.get('machine') or '?')} with {_e(study.get('threads') or '?')} "
        "torch thread(s)."
        " Speedups compare with the base rung measured again right before each variant (its "
        "medians are in the table: a speedup is the ratio of the two medians beside it). "
        + "".join(f"{_e(note)} " for note in notes)
        + f"A latency marked{_e(latency.UNSTABLE_MARK)} came from a series whose IQR "
        f"is over {latency.UNSTABLE_IQR:.0%} of its median (such a series is measured a second "
        "time first; the cores were busy): its median, and a speedup made from it, may be far "
        "from a quiet machine's.</p>",
    ]
    try:
        parts.append(f'<figure class="plot">{frontier_svg(summary, batch)}<figcaption>Rungs and '
                     "variants on the loss/size and loss/latency planes; ringed: the Pareto "
                     f"frontier over (loss, latency at batch {_e(batch)}, bytes): "
                     f"{_e(', '.join(sorted(front)))}.</figcaption></figure>")
    except Exception as err:  # noqa: BLE001 - a plot failure must not lose the tables
        parts.append(f"<p>(frontier plot unavailable: {_e(type(err).__name__)})</p>")
    parts.append(_table(summary, batch, front))
    parts += [_render(table) for table in _method_tables(summary)]
    return "\n".join(parts)


__all__ = ["compression_section", "frontier_svg"]
