"""The self-contained HTML report of a study.

``render_report(summary, curves, out_path)`` writes one HTML file: no JavaScript, no network, plots
inline as SVG (``scalelab.report.plots``). All text from the study (name, spec values, corpus
fingerprint, divergence reasons) goes through Jinja2 with autoescaping; only our own SVG and the
``extra_sections`` HTML (produced by scalelab code, trusted) are inserted as markup.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import yaml
from markupsafe import Markup, escape

from scalelab import latency
from scalelab.laws.missing import missing_law
from scalelab.laws.profile import fmt_ratio, horizon_text, profile_rows, within_text
from scalelab.records import FitRecord, Holdout
from scalelab.report import plots
from scalelab.report.plots import latency_batches, latency_of
from scalelab.tasks import BaseTask, Metric, declared_metrics
from scalelab.values import (
    finite,
    fmt_bytes,
    fmt_count,
    fmt_flops,
    fmt_flops_rate,
    fmt_lr,
    fmt_num,
    fmt_pct,
    fmt_rate,
    fmt_seconds,
    fmt_sig,
    fmt_signed_pct,
)
from scalelab.values import (
    fmt_spec as fmt_spec,  # re-exported: report sections import it from here
)

__all__ = ["build_report_html", "candidates_html", "candidates_view", "render_report"]

_TEMPLATES = Path(__file__).with_name("templates")


# --------------------------------------------------------------------------- formatting


def esc(x: Any) -> str:
    """Text for hand-built HTML (the report's sections outside the template)."""
    return html.escape(str(x))


def fmt_latency(value: Any, unit: bool = True) -> str:
    """Median latency in ms, ± half the IQR when known."""
    med, iqr = plots.latency_median(value)
    if med is None:
        return "—"
    s = fmt_sig(med) + (f" ± {fmt_sig(iqr / 2, 2)}" if iqr is not None else "")
    return s + " ms" if unit else s


_PARAM_NAMES = {"alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ"}


def _param_name(name: str) -> str:
    return _PARAM_NAMES.get(name, name)


def _law_formula(law: str, x: str, symbol: str = "L") -> Markup:
    """The law as HTML (exponent as a superscript); unknown forms show their escaped name."""
    n = escape("N" if x in ("n_nonembed", "n_params") else x)
    saturating = Markup("{s}({n}) = E + A · {n}<sup>−α</sup>").format(s=symbol, n=n)
    pure = Markup("{s}({n}) = A · {n}<sup>−α</sup>").format(s=symbol, n=n)
    forms = {
        "power": saturating,
        "power_e": saturating,
        "saturating_power": saturating,
        "pure_power": pure,
        "power_noe": pure,
    }
    return forms.get(law, escape(law))


def _spec_text(spec: Any) -> str:
    if spec is None:
        return ""
    try:
        return yaml.safe_dump(spec, sort_keys=False, default_flow_style=False, allow_unicode=True)
    except yaml.YAMLError:
        return json.dumps(spec, indent=2, default=str)


def _x_label(key: str) -> str:
    return {"n_nonembed": "non-embedding parameters", "n_params": "all parameters"}.get(key, key)


# --------------------------------------------------------------------------- the task


def _metric_column(m: Metric) -> dict[str, Any]:
    """A quality column of the rung table: a rate as a percentage, a number to 4 significant
    digits (nan shown as nan: a table must not hide that a rung's metric was not finite)."""
    fmt = fmt_pct if m.format.endswith("%") else (lambda v: fmt_num(v, 4))
    return {"key": m.column, "head": m.label, "sub": m.unit, "fmt": fmt}

# Symbols of fitted quantities in a law's formula (HTML, and Matplotlib mathtext for the plot).
_SYMBOLS = {"val_loss": ("L", "L"), "val_error": ("err", r"\mathrm{err}")}


def _task_view(study: Mapping[str, Any]) -> dict[str, Any]:
    """What the study's task measures, from summary.json's `corpus` (its objective, the unit of
    D, its metrics). Studies from before tasks (no objective) were byte-level language models."""
    corpus = study.get("corpus")
    corpus = corpus if isinstance(corpus, Mapping) else {}
    objective = str(corpus.get("objective") or "lm")
    unit = str(corpus.get("unit") or ("byte" if objective == "lm" else "example"))
    metrics = corpus.get("metrics")
    if not isinstance(metrics, list | tuple):  # what a study of its objective measured
        metrics = [m.name for m in BaseTask.METRICS.get(objective, ())]
    metrics = [str(m) for m in metrics]
    loss_unit = {"lm": f"nats/{unit}", "classification": "nats/example",
                 "regression": "MSE, standardised target"}.get(objective, "nats")
    columns = [_metric_column(m) for m in declared_metrics() if m.name in metrics]
    return {
        "objective": objective,
        "unit": unit,
        "units": unit + "s",
        "metrics": metrics,
        "loss_unit": loss_unit,
        "loss_name": {"lm": "cross-entropy", "classification": "cross-entropy",
                      "regression": "squared error"}.get(objective, "loss"),
        "columns": columns,
    }


def _quantity(key: str, task: Mapping[str, Any]) -> str:
    """A fitted or plotted quantity in words, with its unit."""
    return {
        "val_loss": f"validation loss ({task['loss_unit']})",
        "val_error": "validation error rate",
        "val_accuracy": "validation accuracy",
        "val_bpb": "validation bits per byte",
        "val_rmse": "validation RMSE",
    }.get(key, key)


def _short_quantity(key: str) -> str:
    return {"val_loss": "validation loss", "val_error": "error rate"}.get(key, key)


# --------------------------------------------------------------------------- view model


def _shape_text(r: Mapping[str, Any]) -> str:
    """The family's short text for the shape (`describe`; the storage gives v1 rungs theirs),
    with the heads where a model has them."""
    text = r.get("describe")
    if not text:
        return "—"
    if r.get("n_head") is not None:
        text = f"{text} · {r['n_head']} heads"
    if r.get("repeat"):  # a seed repeat, or the fold of a k-fold task
        text = f"{text} · repeat {r['repeat']}"
    return str(text)


def _rung_rows(rungs: Sequence[Mapping[str, Any]], batches: list[str],
               task: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for r in rungs:
        lat = []
        for b in batches:
            med, iqr = latency_of(r, b)
            lat.append(fmt_latency({"median": med, "iqr": iqr}, unit=False)
                       + (latency.UNSTABLE_MARK if latency.flagged(r, b) else ""))
        d, rate = r.get("D"), r.get("units_per_s")
        val, train = finite(r.get("val_loss")), finite(r.get("train_loss"))
        gap = None if val is None or train is None else val - train
        rows.append(
            {
                "rung": r.get("rung", "?"),
                "status": str(r.get("status") or "unknown"),
                "diverged_step": r.get("diverged_step"),
                "diverged_reason": r.get("diverged_reason"),
                "n_params": fmt_count(r.get("n_params")),
                "n_nonembed": fmt_count(r.get("n_nonembed")),
                "shape": _shape_text(r),
                "D": fmt_count(d),
                "steps": fmt_count(r.get("steps")),
                "lr": fmt_lr(r.get("lr")),
                "val_loss": fmt_num(r.get("val_loss"), 4),
                "train_loss": fmt_num(r.get("train_loss"), 4),
                "gap": "—" if gap is None else f"{gap:+.3g}",
                "metrics": [c["fmt"](r.get(c["key"])) for c in task["columns"]],
                "flops": fmt_flops(r.get("flops")),
                "flops_6nd": fmt_flops(r.get("flops_6nd")),
                "train_seconds": fmt_seconds(r.get("train_seconds")),
                "units_per_s": fmt_rate(rate),
                "mfu": fmt_pct(r.get("mfu")),
                "mfu_vendor": fmt_pct(r.get("mfu_vendor")),
                "energy": "—" if r.get("energy_j") is None else f"{r['energy_j']:,.0f} J",
                "energy_per_unit": ("—" if r.get("energy_j_per_unit") is None
                                    else f"{r['energy_j_per_unit']:.3g} J"),
                "peak_mem": fmt_bytes(r.get("peak_mem_bytes")),
                "checkpoint": fmt_bytes(r.get("checkpoint_bytes")),
                "latency": lat,
            }
        )
    return rows


def _markup(svg: str | None) -> Markup | None:
    return None if svg is None else Markup(svg)


def _largest_done_x(rungs: Sequence[Mapping[str, Any]], x: str) -> float | None:
    xs = [finite(r.get(x)) for r in rungs if r.get("status", "done") == "done"]
    xs = [v for v in xs if v is not None]
    return max(xs) if xs else None


def _holdout_view(ho: Holdout, rungs: Sequence[Mapping[str, Any]], x: str) -> dict | None:
    """The holdout as the report states it: the largest rung's prediction (several runs of
    that size averaged), its interval and relative error, and what the law was fitted to."""
    top = ho.largest()
    if top is None:
        return None
    hx = top.get("x")
    hx = hx[0] if isinstance(hx, list | tuple) and hx else hx
    if finite(hx) is None:  # old records without x: the largest finished rung
        hx = _largest_done_x(rungs, x)
    lo, hi = finite(top.get("lo")), finite(top.get("hi"))
    return {
        "rule": ho.rule,
        "n_fit": ho.n_fit,
        "x": fmt_count(hx),
        "predicted": fmt_num(top.get("predicted")),
        "measured": fmt_num(top.get("measured")),
        "rel_error": fmt_signed_pct(top.get("rel_error")),
        "interval": f"[{fmt_num(lo)}, {fmt_num(hi)}]" if lo is not None and hi is not None
        else None,
    }


def _band_text(band: Any) -> str:
    if isinstance(band, Sequence) and not isinstance(band, str) and len(band) == 2 \
            and finite(band[0]) is not None and finite(band[1]) is not None:
        return f"[{band[0] * 100:+.1f}%, {band[1] * 100:+.1f}%]"
    return "—"


def _profile_view(profile: Mapping[str, Any] | None, x: str) -> dict[str, Any] | None:
    """The extrapolation profile as the report states it: the horizon in words, one row per
    split, and how many errors left their noise-implied band."""
    if not isinstance(profile, Mapping):
        return None
    profile = dict(profile)
    h = finite(profile.get("horizon"))
    view: dict[str, Any] = {
        "text": horizon_text(profile), "rows": [], "svg": None, "noise": None,
        "horizon": None if h is None else fmt_ratio(h),
        # no horizon: either a check failed beyond its noise, or none could test the tolerance
        "no_horizon": ("too noisy to tell" if profile.get("failed") is None
                       and profile.get("noisy") else "none"),
        "tolerance": f"{100 * (finite(profile.get('tolerance')) or 0.02):g}%"}
    if not profile.get("splits"):
        return view
    symbol = "N" if x in ("n_nonembed", "n_params") else x
    view["svg"] = _markup(plots.profile_svg(profile, x_label=symbol))
    for r in profile_rows(profile):
        view["rows"].append({
            "fit_on": fmt_count(r["max_fit_x"]),
            "sizes": r["n_points"],
            "runs": r["n_fit"],
            "predicts": r["predicts"],
            "next": f"{fmt_signed_pct(r['next']['rel_error'])} at {fmt_ratio(r['next']['ratio'])}",
            "largest": (f"{fmt_signed_pct(r['largest']['rel_error'])} at "
                        f"{fmt_ratio(r['largest']['ratio'])}"),
            "band": _band_text(r["largest"].get("band")),
            "mean": fmt_signed_pct(r["mean_error"]),
            "within": within_text(r),
        })
    noise = profile.get("noise")
    if isinstance(noise, Mapping) and profile.get("outside_band") is not None:
        n_pts = sum(len(s.get("points") or []) for s in profile["splits"])
        view["noise"] = {"outside": profile["outside_band"], "n": n_pts,
                         "sigma": fmt_pct(noise.get("sigma")), "sims": noise.get("sims"),
                         "level": _level_text(profile.get("level"))}
    return view


def _level_text(level: Any) -> str | None:
    f = finite(level)
    if not f:
        return None
    return f"{f:.0%}" if f <= 1 else f"{f:.0f}%"


def _prediction_rows(predictions: Any) -> list[dict[str, Any]]:
    rows = []
    for p in predictions or []:
        if not isinstance(p, Mapping):
            continue
        lo, hi = finite(p.get("lo")), finite(p.get("hi"))
        rows.append({"factor": f"{finite(p.get('factor')) or 0:g}×",
                     "x": fmt_count(p.get("x")), "predicted": fmt_num(p.get("predicted")),
                     "interval": f"[{fmt_num(lo)}, {fmt_num(hi)}]" if lo is not None
                     and hi is not None else "—",
                     "warning": p.get("warning") if p.get("beyond_horizon") else None})
    return rows


def _noise_view(noise: Any) -> dict[str, Any] | None:
    """The noise model: the spread across the repeats of each size, or the residuals'."""
    if not isinstance(noise, Mapping):
        return None
    sizes = []
    for s in noise.get("sizes") or []:
        sizes.append({"x": fmt_count(s.get("x")), "runs": s.get("n_runs"),
                      "mean": fmt_num(s.get("mean")), "sd": fmt_num(s.get("sd"), 3),
                      "rel_sd": fmt_pct(s.get("rel_sd")), "sigma": fmt_pct(s.get("sigma")),
                      "weight": fmt_num(s.get("weight"), 3)})
    return {"source": str(noise.get("source") or ""), "sigma": fmt_pct(noise.get("sigma")),
            "dof": noise.get("dof"), "weighted": noise.get("weighting") is not None,
            "sizes": sizes}


def _first(v: Any) -> Any:
    """A holdout's x: one value, or the first of a list (several held-out points)."""
    if isinstance(v, Sequence) and not isinstance(v, str):
        return v[0] if v else None
    return v


def _why_answers(selection: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                 chosen: str | None) -> str:
    """Why the selected candidate answers, in the words of the recorded rule and margin."""
    selected = str(selection.get("selected"))
    if selection.get("forced"):
        why = (f"{selected} was asked for, not chosen ({selection.get('rule') or 'forced'}): "
               "no other candidate was tried")
    elif not selection.get("on_evidence"):
        why = ("no candidate could be fitted without the largest point and judged on it: the "
               "default answers, not chosen on evidence")
    else:
        margin = fmt_pct(selection.get("margin"))
        inner = {r.get("law"): finite((r.get("inner") or {}).get("rel_error")) for r in rows}
        default = str(rows[0].get("law")) if rows else selected
        if selected == default:
            why = (f"the default; no other candidate's |inner error| was smaller than its own "
                   f"({fmt_pct(_abs(inner.get(default)))}) by more than the margin {margin}"
                   if inner.get(default) is not None else
                   f"the default; no other candidate beat it by more than the margin {margin}")
        elif inner.get(default) is None or inner.get(selected) is None:
            why = (f"the default {default} could not be judged on the inner holdout; "
                   f"{selected} has the smallest |inner error| "
                   f"({fmt_pct(_abs(inner.get(selected)))})")
        else:
            gap = abs(inner[default]) - abs(inner[selected])
            why = (f"its |inner error| {fmt_pct(abs(inner[selected]))} is smaller than the "
                   f"default {default}'s by {fmt_pct(gap)}, more than the margin {margin}")
    if chosen == "approach2" and selected == "chinchilla":
        why += ("; Approach 3 is degenerate on all the runs, so Approach 2's power laws in C "
                "answer in its place")
    return why


def _abs(v: float | None) -> float | None:
    return None if v is None else abs(v)


def candidates_view(record: Mapping[str, Any], what: str = "size",
                    chosen: str | None = None) -> dict[str, Any] | None:
    """Every candidate law of a fit record (`selection`, `candidates`: `laws.selection`) as the
    report's table states it: inner and outer holdout side by side, which one answers and why.
    `what` is "size" (the held-out point is an N) or "budget" (a compute budget C); `chosen`
    the record's answering fit where it differs from the selected law (a two-axis record)."""
    selection, rows = record.get("selection"), record.get("candidates")
    if not isinstance(selection, Mapping) or not isinstance(rows, Sequence) or not rows:
        return None
    size = fmt_flops if what == "budget" else fmt_count
    out = []
    for r in rows:
        if not isinstance(r, Mapping):
            continue
        inner, outer = r.get("inner") or {}, r.get("outer") or {}
        notes = [f"inner: {r['inner_skipped']}" if r.get("inner_skipped") else "",
                 f"outer: {r['outer_skipped']}" if r.get("outer_skipped") else ""]
        out.append({"law": str(r.get("law")), "formula": str(r.get("formula") or ""),
                    "n_params": r.get("n_params"),
                    "inner_fit": size(inner.get("max_fit_size")),
                    "inner_on": size(_first(inner.get("x"))),
                    "inner": fmt_signed_pct(inner.get("rel_error")),
                    "outer_fit": size(outer.get("max_fit_size")),
                    "outer_on": size(_first(outer.get("x"))),
                    "outer": fmt_signed_pct(outer.get("rel_error")),
                    "n_star": fmt_signed_pct(outer.get("n_star")),
                    "answers": r.get("law") == selection.get("selected"),
                    "note": "; ".join(n for n in notes if n)})
    return {"what": what, "symbol": "C" if what == "budget" else "N",
            "rule": str(selection.get("rule") or ""),
            "margin": fmt_pct(selection.get("margin")),
            "selected": str(selection.get("selected")),
            "forced": bool(selection.get("forced")),
            "on_evidence": bool(selection.get("on_evidence")),
            "why": _why_answers(selection, rows, chosen),
            "has_n_star": any(row["n_star"] != "—" for row in out), "rows": out}


def candidates_html(view: Mapping[str, Any], index: Any) -> Markup:
    """The candidates table (templates/candidates.html.j2), for parts built outside the main
    template (the two-axis part): the one place it is rendered."""
    return Markup(_env().get_template("candidates.html.j2").render(c=view, index=index))


def _fit_views(summary: Mapping[str, Any], rungs: Sequence[Mapping[str, Any]],
               task: Mapping[str, Any]) -> list[dict]:
    views = []
    for i, stored in enumerate(summary.get("fits") or []):
        if not isinstance(stored, Mapping) or stored.get("law") == "two_axis":
            continue  # a law in N and D has a part of its own (report.two_axis)
        fit = FitRecord.from_dict(dict(stored))
        x = fit.x if isinstance(fit.x, str) else str(fit.x[0])
        on_bound = list(fit.on_bound)
        params = []
        for name, value in fit.params.items():
            iv = fit.intervals.get(name)
            iv_s = None
            if isinstance(iv, Sequence) and not isinstance(iv, str) and len(iv) == 2:
                iv_s = f"[{fmt_num(iv[0])}, {fmt_num(iv[1])}]"
            params.append(
                {
                    "name": _param_name(str(name)),
                    "value": fmt_num(value),
                    "interval": iv_s or "—",
                    "on_bound": str(name) in on_bound,
                }
            )
        holdout = None if fit.holdout is None else _holdout_view(fit.holdout, rungs, x)
        level = finite(stored.get("level", (stored.get("band") or {}).get("level")))
        html_symbol, tex_symbol = _SYMBOLS.get(fit.y, ("y", "y"))
        record = fit.to_dict()
        exact = "zero_dof" in fit.flags
        n_params = len(fit.params)
        if exact:  # the points alone: a curve through them is no result to draw
            svg = plots.loss_vs_n_svg(rungs, None, x_key=x, y_key=fit.y,
                                      y_label=_quantity(fit.y, task))
        else:
            svg = plots.loss_vs_n_svg(rungs, record, y_label=_quantity(fit.y, task),
                                      symbol=tex_symbol)
        views.append(
            {
                "index": i,
                "law": fit.law,
                "x": x,
                "x_label": _x_label(x),
                "y": fit.y,
                "y_label": _quantity(fit.y, task),
                "y_short": _short_quantity(fit.y),
                "symbol": html_symbol,
                "formula": _law_formula(fit.law, x, html_symbol),
                "params": params,
                "fitted": any(finite(v) is not None for v in fit.params.values()),
                "on_bound": [_param_name(p) for p in on_bound],
                "holdout": holdout,
                "level": (f"{level:.0%}" if level <= 1 else f"{level:.0f}%") if level else None,
                "svg": Markup(svg),
                "residuals_svg": None if exact else _markup(plots.residuals_svg(rungs, record)),
                "exact": exact,
                "n_sizes": None if fit.dof is None else fit.dof + n_params,
                "n_params": n_params,
                "profile": None if exact else _profile_view(fit.profile, x),
                "predictions": [] if exact else _prediction_rows(fit.predictions),
                "noise": _noise_view(fit.noise),
                "candidates": candidates_view(stored),
            }
        )
    return views


def _largest_done(rungs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    done = [r for r in rungs if r.get("status") == "done"
            and finite(r.get("n_nonembed", r.get("n_params"))) is not None]
    return max(done, key=lambda r: finite(r.get("n_nonembed", r.get("n_params")))) \
        if done else None


def _headline(rungs: Sequence[Mapping[str, Any]], fits: list[dict],
              task: Mapping[str, Any]) -> dict[str, Any]:
    """The top of the report: rung counts, what was fitted, the exponent and holdout error of
    every fit, and the quality the largest finished rung reached in the task's own metric."""
    counts: dict[str, int] = {}
    for r in rungs:
        s = str(r.get("status") or "unknown")
        counts[s] = counts.get(s, 0) + 1
    cards = []
    for f in fits:
        alpha = next((p for p in f["params"] if p["name"] == "α"), None)
        if alpha is not None and alpha["value"] != "—" and not f["exact"]:
            cards.append({"id": f"alpha-{f['index']}", "k": f"exponent α · {f['y_short']}",
                          "v": alpha["value"], "sub": f"interval {alpha['interval']}"})
        if f["exact"]:
            cards.append({"id": f"exact-{f['index']}", "k": f"law · {f['y_short']}",
                          "v": "exact fit", "sub": "zero degrees of freedom: not a result"})
        prof = f["profile"]
        if prof is not None and prof["rows"]:
            cards.append({"id": f"horizon-{f['index']}", "k": f"trust horizon · {f['y_short']}",
                          "v": prof["horizon"] or prof["no_horizon"],
                          "sub": f"beyond the fitted range, within {prof['tolerance']}"})
        if f["holdout"]:
            ho = f["holdout"]
            cards.append({"id": f"holdout-{f['index']}",
                          "k": f"holdout error, largest rung · {f['y_short']}",
                          "v": ho["rel_error"],
                          "sub": f"predicted {ho['predicted']} · measured {ho['measured']}"})
    top = _largest_done(rungs)
    if top is not None:
        n = fmt_count(top.get("n_nonembed", top.get("n_params")))
        if task["objective"] == "classification" and finite(top.get("val_error")) is not None:
            sub = f"accuracy {fmt_pct(top.get('val_accuracy'))} · N = {n}"
            cards.append({"id": "quality", "k": "error rate, largest rung",
                          "v": fmt_pct(top.get("val_error")), "sub": sub})
        elif task["objective"] == "regression" and finite(top.get("val_rmse")) is not None:
            cards.append({"id": "quality", "k": "RMSE, largest rung",
                          "v": fmt_num(top.get("val_rmse"), 4), "sub": f"N = {n}"})
        elif "bpb" in task["metrics"] and finite(top.get("val_bpb")) is not None:
            cards.append({"id": "quality", "k": "bits per byte, largest rung",
                          "v": fmt_num(top.get("val_bpb"), 4), "sub": f"N = {n}"})
    fitted = [_fitted_text(f) for f in fits]
    return {"n_rungs": len(rungs), "counts": counts, "cards": cards, "fitted": fitted}


def _fitted_text(f: Mapping[str, Any]) -> Markup:
    """One fit in the headline: the law with its trust horizon beside it, or why there is no
    law to show."""
    if f["exact"]:
        sizes = (f"{f['n_sizes']} sizes for" if f["n_sizes"] is not None
                 else "no more sizes than its")
        return Markup("{q}: <span class=\"warn\">exact fit, {s} {p} parameters (zero degrees "
                      "of freedom): not a result</span>").format(q=f["y_label"], s=sizes,
                                                                 p=f["n_params"])
    if not f["fitted"]:
        return Markup("{q}: too few finished rungs to fit a law yet").format(q=f["y_label"])
    text = Markup("{q} against {x} (<span class=\"law\">{f}</span>)").format(
        q=f["y_label"], x=f["x_label"], f=f["formula"])
    if f["profile"] is not None:
        text += Markup(" — <span class=\"horizon\">{h}</span>").format(h=f["profile"]["text"])
    return text


def _machine_rows(study: Mapping[str, Any]) -> list[tuple[str, str]]:
    vendor = study.get("vendor_peak_flops")
    rows = [
        ("machine", study.get("machine")),
        ("device", study.get("device")),
        ("torch", study.get("torch_version")),
        ("python", study.get("python_version")),
        ("threads", study.get("threads")),
        ("GEMM peak (measured)", fmt_flops_rate(study.get("gemm_peak_flops"))),
        (
            "vendor peak",
            fmt_flops_rate(vendor) if finite(vendor) is not None else "not known for this device",
        ),
    ]
    return [(k, "—" if v is None else str(v)) for k, v in rows]


def _corpus_rows(corpus: Any) -> list[tuple[str, str]]:
    if not isinstance(corpus, Mapping):
        return [] if corpus is None else [("corpus", str(corpus))]
    rows = []
    for k, v in corpus.items():
        if k == "bytes" or str(k).endswith("_bytes"):
            f = finite(v)
            s = f"{fmt_bytes(v)} ({int(f):,} bytes)" if f is not None else str(v)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            s = f"{v:,}" if isinstance(v, int) else fmt_num(v)
        elif isinstance(v, Mapping | list):
            s = json.dumps(v, default=str)
        else:
            s = str(v)
        rows.append((str(k), s))
    return rows


def _normalise_curves(curves: Mapping[Any, Any] | None) -> dict[int, list]:
    out: dict[int, list] = {}
    for k, v in (curves or {}).items():
        try:
            out[int(k)] = list(v or [])
        except (TypeError, ValueError):
            continue
    return out


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["sentence"] = lambda text: str(text)[:1].upper() + str(text)[1:]
    return env


def build_report_html(
    summary: Mapping[str, Any],
    curves: Mapping[int, Sequence[Mapping[str, Any]]] | None = None,
    extra_sections: Sequence[tuple[str, str]] | None = None,
) -> str:
    """The report as one HTML string (see :func:`render_report`)."""
    study = {"task": None, "family": None, "created": None, **(summary.get("study") or {})}
    rungs = [r for r in (summary.get("rungs") or []) if isinstance(r, Mapping)]
    rungs = sorted(
        rungs, key=lambda r: (finite(r.get("rung")) is None, finite(r.get("rung")) or 0.0)
    )
    curves_n = _normalise_curves(curves)
    batches = latency_batches(rungs)
    task = _task_view(study)
    fits = _fit_views(summary, rungs, task)
    from scalelab.report.two_axis import two_axis_records, two_axis_view  # imports this module

    two_axis = [two_axis_view(r, rungs) for r in two_axis_records(summary.get("fits") or [])]
    # Always show loss vs N, with the measured points alone if nothing is fitted yet.
    bare_loss_svg = None if fits else Markup(
        plots.loss_vs_n_svg(rungs, None, y_label=_quantity("val_loss", task)))
    gap_svg = plots.gap_svg(rungs, loss_unit=task["loss_unit"])
    diverged = [r for r in rungs if r.get("status") == "diverged"]
    ctx = {
        "study": study,
        "name": str(study.get("name") or "unnamed study"),
        "machine": _machine_rows(study),
        "corpus": _corpus_rows(study.get("corpus")),
        "spec_text": _spec_text(study.get("spec")),
        "task": task,
        "rows": _rung_rows(rungs, batches, task),
        "batches": batches,
        # Columns only a GPU study fills: MFU against a known vendor peak, NVML energy.
        "has_vendor": any(r.get("mfu_vendor") is not None for r in rungs),
        "has_energy": any(r.get("energy_j") is not None for r in rungs),
        "fits": fits,
        "bare_loss_svg": bare_loss_svg,
        "gap_svg": _markup(gap_svg),
        "n_gap": len(plots.gap_points(rungs)),
        "headline": _headline(rungs, fits, task),
        # why there is no law (too few rungs, all diverged, not finished yet), in one line
        "no_law": missing_law(summary) or "No law fitted yet.",
        "two_axis": [{"answer": t["answer"], "html": Markup(t["html"])} for t in two_axis],
        "diverged": [
            {
                "rung": r.get("rung"),
                "n": fmt_count(r.get("n_nonembed", r.get("n_params"))),
                "step": r.get("diverged_step"),
                "reason": r.get("diverged_reason"),
            }
            for r in diverged
        ],
        "curves_svg": Markup(plots.loss_curves_svg(curves_n, rungs, unit=task["unit"],
                                                   loss_unit=task["loss_unit"])),
        "cost_svg": Markup(plots.cost_svg(rungs, unit=task["unit"])),
        "extra_sections": [(str(t), Markup(h)) for t, h in (extra_sections or [])]
        + _forecast_sections(summary),
    }
    return _env().get_template("report.html.j2").render(**ctx)


def _forecast_sections(summary: Mapping[str, Any]) -> list[tuple[str, Markup]]:
    """The forecast record of a study that `scalelab grow` added rungs to (report.forecast)."""
    from scalelab.report.forecast import forecast_section  # imports this module

    html = forecast_section(summary)
    return [] if html is None else [("Forecast record", Markup(html))]


def render_report(
    summary: dict,
    curves: dict[int, list[dict]],
    out_path: Path,
    extra_sections: list[tuple[str, str]] | None = None,
) -> Path:
    """Write the study report to ``out_path`` (atomically) and return the path.

    ``summary`` is the content of ``summary.json``; ``curves[rung]`` the loss curve of each rung
    (points with ``step``, ``tokens``, ``train_loss``, ``val_loss`` (None where not evaluated),
    ``lr``); keys may be ints or their strings. ``extra_sections`` are ``(title, html)`` pairs
    appended as sections: the title is escaped, the HTML is inserted as is (trusted, ours).
    Values of unfinished rungs may be None; NaN/inf are shown as such, never plotted.
    """
    out_path = Path(out_path)
    page = build_report_html(summary, curves, extra_sections)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0666 less the umask, like summary.json and runs.csv (mkstemp would make it 0600,
    # unreadable to the others who read the study's other files); O_EXCL keeps it our own file.
    tmp = out_path.parent / f".report-{os.getpid()}-{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(page)
        os.replace(tmp, out_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return out_path
