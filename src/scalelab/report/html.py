"""The self-contained HTML report of a study.

``render_report(summary, curves, out_path)`` writes one HTML file: no JavaScript, no network, plots
inline as SVG (``scalelab.report.plots``). All text from the study (name, spec values, corpus
fingerprint, divergence reasons) goes through Jinja2 with autoescaping; only our own SVG and the
``extra_sections`` HTML (produced by scalelab code, trusted) are inserted as markup.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import yaml
from markupsafe import Markup, escape

from scalelab.report import plots
from scalelab.report.plots import fmt_count, latency_batches, latency_of, scaled
from scalelab.values import finite

__all__ = ["build_report_html", "render_report"]

_TEMPLATES = Path(__file__).with_name("templates")


# --------------------------------------------------------------------------- formatting


def fmt_flops(v: Any) -> str:
    f = finite(v)
    if f is None:
        return "—"
    units = ((1e18, " EFLOP"), (1e15, " PFLOP"), (1e12, " TFLOP"), (1e9, " GFLOP"),
             (1e6, " MFLOP"))
    return scaled(f, units) or f"{f:.3g} FLOP"


def fmt_flops_rate(v: Any) -> str:
    s = fmt_flops(v)
    return s if s == "—" else s + "/s"


def fmt_bytes(v: Any) -> str:
    f = finite(v)
    if f is None:
        return "—"
    return scaled(f, ((1e12, " TB"), (1e9, " GB"), (1e6, " MB"), (1e3, " kB"))) or f"{int(f)} B"


def fmt_seconds(v: Any) -> str:
    f = finite(v)
    if f is None:
        return "—"
    if f < 1:
        return f"{f * 1e3:.3g} ms"
    if f < 120:
        return f"{f:.3g} s"
    if f < 7200:
        return f"{f / 60:.3g} min"
    return f"{f / 3600:.3g} h"


def fmt_ms(v: Any) -> str:
    f = finite(v)
    return "—" if f is None else f"{f:.3g} ms"


def fmt_pct(v: Any, digits: int = 2) -> str:
    f = finite(v)
    return "—" if f is None else f"{f * 100:.{digits}f}%"


def fmt_signed_pct(v: Any) -> str:
    f = finite(v)
    return "—" if f is None else f"{f * 100:+.2f}%"


def fmt_num(v: Any, digits: int = 4) -> str:
    if isinstance(v, bool):
        return str(v)
    f = finite(v)
    if f is None:
        if v is None:
            return "—"
        try:
            return str(float(v))  # nan / inf
        except (TypeError, ValueError):
            return str(v)
    return f"{f:.{digits}g}"


def fmt_lr(v: Any) -> str:
    f = finite(v)
    if f is None:
        return fmt_num(v)
    return f"{f:.3g}" if f >= 0.01 else f"{f:.2e}".replace("e-0", "e-")


def fmt_rate(v: Any) -> str:
    f = finite(v)
    return "—" if f is None else f"{fmt_count(f)}/s"


def fmt_latency(value: Any, unit: bool = True) -> str:
    """Median latency in ms, ± half the IQR when known."""
    med, iqr = plots.latency_median(value)
    if med is None:
        return "—"
    s = f"{med:.3g}" + (f" ± {iqr / 2:.2g}" if iqr is not None else "")
    return s + " ms" if unit else s


_PARAM_NAMES = {"alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ"}


def _param_name(name: str) -> str:
    return _PARAM_NAMES.get(name, name)


def _law_formula(law: str, x: str) -> Markup:
    """The law as HTML (exponent as a superscript); unknown forms show their escaped name."""
    n = escape("N" if x in ("n_nonembed", "n_params") else x)
    saturating = Markup("L({n}) = E + A · {n}<sup>−α</sup>").format(n=n)
    pure = Markup("L({n}) = A · {n}<sup>−α</sup>").format(n=n)
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


# --------------------------------------------------------------------------- view model


def _rung_rows(rungs: Sequence[Mapping[str, Any]], batches: list[str]) -> list[dict[str, Any]]:
    rows = []
    for r in rungs:
        shape = None
        if any(r.get(k) is not None for k in ("n_layer", "d_model", "n_head")):
            shape = f"{r.get('n_layer', '?')} × {r.get('d_model', '?')} / {r.get('n_head', '?')}"
        lat = []
        for b in batches:
            med, iqr = latency_of(r, b)
            lat.append(fmt_latency({"median": med, "iqr": iqr}, unit=False))
        rows.append(
            {
                "rung": r.get("rung", "?"),
                "status": str(r.get("status") or "unknown"),
                "diverged_step": r.get("diverged_step"),
                "diverged_reason": r.get("diverged_reason"),
                "n_params": fmt_count(r.get("n_params")),
                "n_nonembed": fmt_count(r.get("n_nonembed")),
                "shape": shape or "—",
                "tokens": fmt_count(r.get("tokens")),
                "steps": fmt_count(r.get("steps")),
                "lr": fmt_lr(r.get("lr")),
                "val_loss": fmt_num(r.get("val_loss"), 4),
                "val_bpb": fmt_num(r.get("val_bpb"), 4),
                "flops": fmt_flops(r.get("flops")),
                "flops_6nd": fmt_flops(r.get("flops_6nd")),
                "train_seconds": fmt_seconds(r.get("train_seconds")),
                "tokens_per_s": fmt_rate(r.get("tokens_per_s")),
                "mfu": fmt_pct(r.get("mfu")),
                "peak_mem": fmt_bytes(r.get("peak_mem_bytes")),
                "checkpoint": fmt_bytes(r.get("checkpoint_bytes")),
                "latency": lat,
            }
        )
    return rows


def _markup(svg: str | None) -> Markup | None:
    return None if svg is None else Markup(svg)


def _fit_views(summary: Mapping[str, Any], rungs: Sequence[Mapping[str, Any]]) -> list[dict]:
    views = []
    for i, fit in enumerate(summary.get("fits") or []):
        if not isinstance(fit, Mapping):
            continue
        law = str(fit.get("law", "power"))
        x = str(fit.get("x") or "n_nonembed")
        intervals = fit.get("intervals") or {}
        on_bound = [str(p) for p in (fit.get("on_bound") or [])]
        params = []
        for name, value in (fit.get("params") or {}).items():
            iv = intervals.get(name)
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
        ho = fit.get("holdout")
        holdout = None
        if isinstance(ho, Mapping):
            hx = ho.get("x", ho.get(x))
            if hx is None:
                xs = [finite(r.get(x)) for r in rungs if r.get("status", "done") == "done"]
                xs = [v for v in xs if v is not None]
                hx = max(xs) if xs else None
            interval = ho.get("interval")
            if not (isinstance(interval, Sequence) and len(interval) == 2):
                interval = (ho.get("lo"), ho.get("hi"))
            holdout = {
                "x": fmt_count(hx),
                "predicted": fmt_num(ho.get("predicted")),
                "measured": fmt_num(ho.get("measured")),
                "rel_error": fmt_signed_pct(ho.get("rel_error")),
                "interval": (
                    f"[{fmt_num(interval[0])}, {fmt_num(interval[1])}]"
                    if finite(interval[0]) is not None and finite(interval[1]) is not None
                    else None
                ),
            }
        level = finite(fit.get("level", (fit.get("band") or {}).get("level")))
        views.append(
            {
                "index": i,
                "law": law,
                "x": x,
                "x_label": _x_label(x),
                "y": str(fit.get("y") or "val_loss"),
                "formula": _law_formula(law, x),
                "params": params,
                "on_bound": [_param_name(p) for p in on_bound],
                "holdout": holdout,
                "level": (f"{level:.0%}" if level <= 1 else f"{level:.0f}%") if level else None,
                "svg": Markup(plots.loss_vs_n_svg(rungs, fit)),
                "residuals_svg": _markup(plots.residuals_svg(rungs, fit)),
            }
        )
    return views


def _headline(rungs: Sequence[Mapping[str, Any]], fits: list[dict]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for r in rungs:
        s = str(r.get("status") or "unknown")
        counts[s] = counts.get(s, 0) + 1
    out: dict[str, Any] = {"n_rungs": len(rungs), "counts": counts, "alpha": None, "holdout": None}
    if fits:
        f = fits[0]
        alpha = next((p for p in f["params"] if p["name"] == "α"), None)
        out["alpha"] = alpha
        out["holdout"] = f["holdout"]
    return out


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
    fits = _fit_views(summary, rungs)
    fit_xs = {f["x"] for f in fits}
    # Always show loss vs N, with the measured points alone if nothing is fitted yet.
    bare_loss_svg = None if fits else Markup(plots.loss_vs_n_svg(rungs, None))
    diverged = [r for r in rungs if r.get("status") == "diverged"]
    ctx = {
        "study": study,
        "name": str(study.get("name") or "unnamed study"),
        "machine": _machine_rows(study),
        "corpus": _corpus_rows(study.get("corpus")),
        "spec_text": _spec_text(study.get("spec")),
        "rows": _rung_rows(rungs, batches),
        "batches": batches,
        "fits": fits,
        "fit_xs": sorted(fit_xs),
        "bare_loss_svg": bare_loss_svg,
        "headline": _headline(rungs, fits),
        "diverged": [
            {
                "rung": r.get("rung"),
                "n": fmt_count(r.get("n_nonembed", r.get("n_params"))),
                "step": r.get("diverged_step"),
                "reason": r.get("diverged_reason"),
            }
            for r in diverged
        ],
        "curves_svg": Markup(plots.loss_curves_svg(curves_n, rungs)),
        "cost_svg": Markup(plots.cost_svg(rungs)),
        "extra_sections": [(str(t), Markup(h)) for t, h in (extra_sections or [])],
    }
    return _env().get_template("report.html.j2").render(**ctx)


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
    html = build_report_html(summary, curves, extra_sections)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".tmp", dir=out_path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(html)
        os.replace(tmp, out_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return out_path
