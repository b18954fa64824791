"""The report's fine-tuning section: per second task, the loss of each method against N with its
law, the gap of each method to full fine-tuning against N with intervals, trainable parameters,
time and memory against N, and a table of every fine-tune.

`finetune_section(summary)` returns trusted HTML (every study-derived string escaped here) or None
when the study has no fine-tunes. It reads summary.json's `finetunes` and `finetune_scaling` only
(see `scalelab.finetune.driver` and `scalelab.finetune.scaling` for the fields) and names no
family or task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from scalelab.report.html import esc as _e
from scalelab.report.plots import section_rc, to_inline_svg
from scalelab.values import finite, fmt_bytes
from scalelab.values import fmt_spec as _fmt

PALETTE = ("#1f3b73", "#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#a6761d",
           "#666666")
ZERO_COLOR = "#999999"
_RC = section_rc("finetune")


def _slug(f: Mapping[str, Any]) -> str:
    return (f.get("settings") or {}).get("slug") or str(f.get("method"))


def _colors(methods: list[str]) -> dict[str, str]:
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}


def _methods(fts: list[dict]) -> list[str]:
    out: list[str] = []
    for f in fts:
        s = _slug(f)
        if s not in out:
            out.append(s)
    return sorted(out, key=lambda s: (s != "full", s))


def _loss_svg(fts: list[dict], analysis: Mapping[str, Any], unit: str) -> str:
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    methods = _methods(fts)
    colors = _colors(methods)
    laws = analysis.get("laws") or {}
    with rc_context(_RC):
        fig = Figure(figsize=(8.6, 4.2))
        ax = fig.add_subplot()
        ax.set_xscale("log")
        zs = {}
        for f in fts:
            zs.setdefault(f["of_rung"], (f["n_nonembed"], f.get("zero_shot_loss")))
        pts = sorted(v for v in zs.values() if finite(v[1]) is not None)
        if pts:
            ax.plot(*zip(*pts, strict=True), "o--", color=ZERO_COLOR, mfc="white", ms=5,
                    lw=0.8, label="zero-shot (before fine-tuning)")
        for m in methods:
            rows = sorted((f["n_nonembed"], f["val_loss"]) for f in fts
                          if _slug(f) == m and finite(f.get("val_loss")) is not None)
            if not rows:
                continue
            ax.plot(*zip(*rows, strict=True), "o", color=colors[m], ms=6, label=m, zorder=4)
            band = (laws.get(m) or {}).get("band") or {}
            x, point = band.get("x"), band.get("point")
            if x and point:
                ax.plot(x, point, "-", color=colors[m], lw=1.1, zorder=3)
                lo, hi = band.get("lo"), band.get("hi")
                if lo and hi:
                    ax.fill_between(x, [finite(v) or np.nan for v in lo],
                                    [finite(v) or np.nan for v in hi], color=colors[m],
                                    alpha=0.12, lw=0)
        ax.set_xlabel("N (non-embedding parameters of the rung)")
        ax.set_ylabel(f"validation loss on the second task, nats/{unit}")
        ax.legend(frameon=False, loc="upper right")
        return to_inline_svg(fig)


def _gap_svg(analysis: Mapping[str, Any], colors: dict[str, str]) -> str | None:
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    gaps = analysis.get("gaps") or []
    if not gaps:
        return None
    with rc_context(_RC):
        fig = Figure(figsize=(9.2, 3.8))
        ax1, ax2 = fig.subplots(1, 2)
        for g in gaps:
            c = colors.get(g["method"], "#333333")
            pts = g["points"]
            n = np.array([p["n_nonembed"] for p in pts], dtype=float)
            y = np.array([p["gap"] for p in pts])
            err = np.array([[p["gap"] - p["lo"] for p in pts], [p["hi"] - p["gap"] for p in pts]])
            ax1.errorbar(n, y, yerr=err, fmt="o", color=c, ms=5, capsize=3,
                         label=f"{g['method']} − {g['vs']}")
            t = g.get("trend")
            if t and len(n) >= 2:
                lx = np.log10(n)
                grid = np.linspace(lx.min(), lx.max(), 20)
                ax1.plot(10 ** grid, y.mean() + t["slope_per_decade"] * (grid - lx.mean()), "-",
                         color=c, lw=0.9, alpha=0.8)
            rel = [(p["n_nonembed"], p.get("rel_gap"), p.get("rel_lo"), p.get("rel_hi"))
                   for p in pts if finite(p.get("rel_gap")) is not None]
            if rel:
                rn, rv, rlo, rhi = (np.array(v, dtype=float) for v in zip(*rel, strict=True))
                ax2.errorbar(rn, rv, yerr=[rv - rlo, rhi - rv], fmt="o", color=c, ms=5,
                             capsize=3, label=g["method"])
        for ax, label in ((ax1, "loss gap to full fine-tuning, nats"),
                          (ax2, "share of full fine-tuning's gain missed")):
            ax.set_xscale("log")
            ax.axhline(0, color="#555555", lw=0.8)
            ax.set_xlabel("N (non-embedding)")
            ax.set_ylabel(label)
        ax1.legend(frameon=False, fontsize=7)
        fig.set_layout_engine("tight")
        return to_inline_svg(fig)


def _cost_svg(fts: list[dict], colors: dict[str, str]) -> str:
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    panels = (("trainable_params", "trainable parameters"),
              ("train_seconds", "training time, s"),
              ("train_state_bytes", "weights + grads + AdamW state, bytes"),
              ("peak_mem_bytes", "measured peak memory, bytes"))
    with rc_context(_RC):
        fig = Figure(figsize=(9.2, 6.4))
        axes = fig.subplots(2, 2).ravel()
        for ax, (key, label) in zip(axes, panels, strict=True):
            for m in _methods(fts):
                rows = sorted((f["n_nonembed"], f.get(key)) for f in fts
                              if _slug(f) == m and f["status"] == "done"
                              and finite(f.get(key)) is not None and f.get(key) > 0)
                if rows:
                    ax.plot(*zip(*rows, strict=True), "o-", color=colors[m], ms=4, lw=1,
                            label=m)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("N (non-embedding)")
            ax.set_ylabel(label)
        axes[0].legend(frameon=False, fontsize=7)
        fig.set_layout_engine("tight")
        return to_inline_svg(fig)


def _law_rows(analysis: Mapping[str, Any]) -> str:
    rows = []
    for m, fit in (analysis.get("laws") or {}).items():
        if not fit:
            continue
        p, iv = fit.get("params") or {}, fit.get("intervals") or {}

        def cell(k: str, p: dict = p, iv: dict = iv) -> str:
            band = iv.get(k)
            return _fmt(p.get(k), ".4g") + (f" [{band[0]:.3g}, {band[1]:.3g}]" if band else "")

        ho = fit.get("holdout") or {}
        pts = [q for q in ho.get("points") or [] if finite(q.get("rel_error")) is not None]
        hold = _fmt(pts[-1]["rel_error"] * 100, "+.2f", "%") if pts else "—"
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in (
            m, cell("E"), cell("A"), cell("alpha"), ", ".join(fit.get("on_bound") or []) or "—",
            hold)) + "</tr>")
    heads = ("method", "E", "A", "alpha", "on a bound", "holdout: largest rung")
    return ("<table class=\"ft-laws\"><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in heads)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _gap_of(analysis: Mapping[str, Any]) -> dict[tuple[str, int], dict]:
    out = {}
    for g in analysis.get("gaps") or []:
        for p in g["points"]:
            out[(g["method"], p["rung"])] = p
    return out


def _table(fts: list[dict], analysis: Mapping[str, Any], unit: str) -> str:
    gaps = _gap_of(analysis)
    heads = ("fine-tune", "rung", "N (non-emb)", "method", "trainable", "trainable %",
             "zero-shot loss", "val loss", "gap to full [95%]", "time", f"{unit}s/s",
             "peak memory", "train state", "file", "full model", "lat b1 ms", "merge Δ")
    rows = []
    for f in sorted(fts, key=lambda f: (f["n_nonembed"], _slug(f) != "full", _slug(f))):
        g = gaps.get((_slug(f), f["of_rung"]))
        gap = (f"{g['gap']:+.4f} [{g['lo']:+.4f}, {g['hi']:+.4f}]" if g else "—")
        lat = (f.get("latency_ms") or {}).get("1")
        done = f["status"] == "done"
        cells = (f["name"], f["of_rung"], _fmt(f["n_nonembed"], ",.0f"), _slug(f),
                 _fmt(f.get("trainable_params"), ",.0f"),
                 _fmt(100 * (f.get("trainable_fraction") or 0), ".3g", "%"),
                 _fmt(f.get("zero_shot_loss"), ".4f"),
                 _fmt(f.get("val_loss"), ".4f") if done else f["status"], gap,
                 _fmt(f.get("train_seconds"), ".1f", " s"), _fmt(f.get("units_per_s"), ",.0f"),
                 fmt_bytes(f.get("peak_mem_bytes")), fmt_bytes(f.get("train_state_bytes")),
                 fmt_bytes(f.get("bytes")), fmt_bytes(f.get("full_bytes")), _fmt(lat, ".3g"),
                 _fmt((f.get("extra") or {}).get("merge_max_abs_diff"), ".1e"))
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return ("<table class=\"finetunes\"><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in heads)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _findings(fts: list[dict], analysis: Mapping[str, Any]) -> str:
    items = []
    for g in analysis.get("gaps") or []:
        t = g.get("trend")
        pts = g["points"]
        first, last = pts[0], pts[-1]
        text = (f"{g['method']} vs {g['vs']}: gap {first['gap']:+.4f} nats at N = "
                f"{first['n_nonembed']:,} and {last['gap']:+.4f} at N = {last['n_nonembed']:,}")
        if t:
            word = {"closes": "closes as N grows", "widens": "widens as N grows",
                    "unclear": "shows no trend its interval can resolve"}[t["verdict"]]
            text += (f"; slope {t['slope_per_decade']:+.4f} nats per decade of N "
                     f"[{t['lo']:+.4f}, {t['hi']:+.4f}]: the gap {word}")
        items.append(text)
    for m, s in (analysis.get("slopes") or {}).items():
        fr = [f.get("trainable_fraction") for f in fts if _slug(f) == m
              and finite(f.get("trainable_fraction")) is not None]
        if fr and m != "full":
            items.append(f"{m}: {100 * min(fr):.3g}%–{100 * max(fr):.3g}% of the parameters "
                         f"train; trainable count ∝ N^{_fmt(s.get('trainable_vs_n'), '.2f')}")
    full = {f["of_rung"]: f for f in fts if _slug(f) == "full" and f["status"] == "done"}
    for m in _methods(fts):
        if m == "full":
            continue
        ratios = [(f.get("train_seconds") or 0) / full[f["of_rung"]]["train_seconds"]
                  for f in fts if _slug(f) == m and f["status"] == "done"
                  and f["of_rung"] in full and full[f["of_rung"]].get("train_seconds")]
        mem = [(f.get("train_state_bytes") or 0) / full[f["of_rung"]]["train_state_bytes"]
               for f in fts if _slug(f) == m and f["status"] == "done"
               and f["of_rung"] in full and full[f["of_rung"]].get("train_state_bytes")]
        if ratios:
            items.append(f"{m} time / full time: {min(ratios):.2f}–{max(ratios):.2f}; "
                         f"parameter-side training memory / full: {min(mem):.2f}–"
                         f"{max(mem):.2f}")
    if not items:
        return ""
    return "<ul>" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>"


def _task_part(task: str, fts: list[dict], analysis: Mapping[str, Any]) -> str:
    spec = (fts[0].get("task_spec") or {})
    unit = spec.get("unit") or fts[0].get("unit") or "token"
    fp = spec.get("fingerprint") or {}
    colors = _colors(_methods(fts))
    D = fts[0].get("D")
    task_spec = spec.get("spec") or {}
    options = ", ".join(f"{k}={v}" for k, v in task_spec.items() if k != "name")
    parts = [f"<h3>Second task: {_e(task)}</h3>",
             f"<p>Task {_e(task_spec.get('name'))} ({_e(options)}"
             f"; {_e(fp.get('files', '?'))} files, {_e(fp.get('train_bytes', '?'))} train / "
             f"{_e(fp.get('val_bytes', '?'))} validation bytes). Every method fine-tunes every "
             f"rung from its final weights on the same {_fmt(D, ',.0f')} {_e(unit)}s (same "
             "batches, the rung's batch size, warm-up and cosine schedule); losses are on the "
             "second task's fixed validation windows. Gaps carry 95% intervals from a paired "
             "bootstrap over those windows: evaluation noise only, not seed-to-seed training "
             "noise.</p>"]
    parts.append(_findings(fts, analysis))
    done = [f for f in fts if f["status"] == "done"]
    for label, make in (("loss", lambda: _loss_svg(done, analysis, unit)),
                        ("gap", lambda: _gap_svg(analysis, colors)),
                        ("cost", lambda: _cost_svg(fts, colors))):
        try:
            svg = make()
        except Exception as err:  # noqa: BLE001 - a plot failure must not lose the tables
            parts.append(f"<p>({label} plot unavailable: {_e(type(err).__name__)})</p>")
            continue
        if svg:
            caption = {"loss": "Validation loss after fine-tuning against N, per method, with "
                               "its fitted law L(N) = E + A·N^-alpha and 95% band; hollow: "
                               "before fine-tuning.",
                       "gap": "Left: loss of each method minus full fine-tuning's, per rung, "
                              "with 95% paired-bootstrap intervals and the least-squares trend "
                              "in log N. Right: the same gap as a share of the improvement "
                              "full fine-tuning made over zero-shot.",
                       "cost": "Cost against N: trainable parameters, training time, the "
                               "parameter-side training memory (exact), and the measured "
                               "peak memory (on CPU the process's peak resident set, "
                               "dominated by the runtime at these sizes)."}[label]
            parts.append(f'<figure class="plot">{svg}<figcaption>{_e(caption)}'
                         "</figcaption></figure>")
    parts.append("<h4>Laws per method</h4>" + _law_rows(analysis))
    parts.append("<h4>Every fine-tune</h4>" + _table(fts, analysis, unit))
    return "\n".join(parts)


def finetune_section(summary: Mapping[str, Any]) -> str | None:
    """The section's HTML, or None when the study has no fine-tunes."""
    fts = [f for f in summary.get("finetunes") or [] if isinstance(f, Mapping)]
    if not fts:
        return None
    analyses = {a.get("task"): a for a in summary.get("finetune_scaling") or []}
    tasks: dict[str, list[dict]] = {}
    for f in fts:
        tasks.setdefault(str(f.get("task")), []).append(dict(f))
    parts = ["<p>Rungs fine-tuned on second tasks (<code>scalelab finetune</code>): full "
             "fine-tuning against parameter-efficient methods. Trainable % is of the rung's "
             "parameters; time is the training loop's; <em>train state</em> is the exact "
             "parameter-side training memory (weights, plus gradients and AdamW's two moments "
             "of the trainable ones); <em>file</em> is the method's own file (a LoRA: the "
             "adapter only), <em>full model</em> a whole model file; latency is the shipped "
             "model's (a LoRA merged); merge Δ is the largest logit difference between the "
             "adapter model and its merge.</p>"]
    for task, rows in tasks.items():
        parts.append(_task_part(task, rows, analyses.get(task) or {}))
    return "\n".join(parts)


__all__ = ["finetune_section"]
