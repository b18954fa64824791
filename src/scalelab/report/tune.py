"""The report's tuning section (`scalelab tune`): the validation loss of every trial against its
learning rate, per rung; the best learning rate per rung against N with the fitted rule
lr*(N) = c·N^gamma, its band, and the default rule; and the tuned ladder beside the default one
(losses per rung, law, holdout error).

`tune_section(tune)` reads tune.json's record (see `scalelab.tune.driver.tune_study`) and returns
trusted HTML, every study-derived string escaped here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from scalelab.report.html import esc as _e
from scalelab.report.plots import rung_colors, section_rc, to_inline_svg
from scalelab.values import fmt_spec as _fmt

_RC = section_rc("tune")
DEFAULT_COLOR = "#666666"
RULE_COLOR = "#d95f02"


def _complete(rung: Mapping[str, Any]) -> list[dict]:
    return [t for t in rung["trials"] if t["state"] == "COMPLETE" and "lr" in t["params"]]


def _loss_vs_lr_svg(tune: Mapping[str, Any]) -> str:
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    rungs, rule = tune["rungs"], tune.get("rule")
    colors = rung_colors(len(rungs))
    with rc_context(_RC):
        fig = Figure(figsize=(8.6, 4.0))
        ax = fig.add_subplot()
        ax.set_xscale("log")
        for color, r in zip(colors, rungs, strict=True):
            pts = sorted((t["params"]["lr"], t["value"]) for t in _complete(r))
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, "o-", color=color, ms=4, lw=0.8,
                        label=f"rung {r['rung']} (N={r['n_nonembed']:,})")
            best = r["best"]
            if "lr" in best["params"]:
                ax.plot([best["params"]["lr"]], [best["value"]], "*", color=color, ms=12)
            if rule is not None:
                ax.axvline(rule["c"] * r["n_nonembed"] ** rule["gamma"], color=color, ls=":",
                           lw=0.9)
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel("validation loss")
        ax.set_title("completed trials per rung (star: best; dotted: the fitted rule's lr)",
                     fontsize=9)
        ax.legend(loc="best")
        return to_inline_svg(fig)


def _rule_svg(tune: Mapping[str, Any]) -> str | None:
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    rule = tune.get("rule")
    if rule is None:
        return None
    band, default = rule["band"], tune["default_rule"]
    with rc_context(_RC):
        fig = Figure(figsize=(8.6, 3.6))
        ax = fig.add_subplot()
        ax.set_xscale("log")
        ax.set_yscale("log")
        x = np.asarray(band["x"])
        ax.plot(x, band["point"], color=RULE_COLOR, label=_rule_text(rule))
        if band["lo"] is not None:
            ax.fill_between(x, band["lo"], band["hi"], color=RULE_COLOR, alpha=0.18,
                            label=f"{100 * rule['level']:.0f}% band of the rule")
        ax.plot(x, default["lr"] * (x / default["lr_ref_nonembed"]) ** default["lr_exponent"],
                color=DEFAULT_COLOR, ls="--", label="the default ladder's rule")
        pts = rule["points"]
        ax.plot([p["n_nonembed"] for p in pts], [p["lr"] for p in pts], "o", color="#1f3b73",
                label="best lr per rung")
        ax.set_xlabel("N (non-embedding parameters)")
        ax.set_ylabel("peak learning rate")
        ax.legend(loc="best")
        return to_inline_svg(fig)


def _rule_text(rule: Mapping[str, Any]) -> str:
    gamma = rule["intervals"]["gamma"]
    interval = (f" (γ in [{gamma[0]:.2f}, {gamma[1]:.2f}] at {100 * rule['level']:.0f}%)"
                if gamma else " (two sizes: an exact line, no interval)")
    return f"lr*(N) = {rule['c']:.3g}·N^{rule['gamma']:.3f}{interval}"


def _ladder_rows(tune: Mapping[str, Any]) -> str:
    default, tuned = tune["ladders"]["default"], tune["ladders"]["tuned"]
    rows = []
    for d, t in zip(default["rungs"], tuned["rungs"], strict=False):
        delta = (t["val_loss"] - d["val_loss"]) if d["val_loss"] is not None and \
            t["val_loss"] is not None else None
        rows.append(f"<tr><td>{d['rung']}</td><td>{d['n_nonembed']:,}</td>"
                    f"<td>{_fmt(d['lr'], '.3g')}</td><td>{_fmt(d['val_loss'], '.4f')}</td>"
                    f"<td>{_fmt(t['lr'], '.3g')}</td><td>{_fmt(t['val_loss'], '.4f')}</td>"
                    f"<td>{_fmt(delta, '+.4f')}</td></tr>")
    return "".join(rows)


def _law_row(label: str, ladder: Mapping[str, Any]) -> str:
    fit = ladder.get("fit")
    if fit is None:
        return f"<tr><td>{_e(label)}</td><td colspan='4'>no law (too few finished rungs)</td></tr>"
    if "zero_dof" in fit["flags"]:
        return (f"<tr><td>{_e(label)}</td><td colspan='4'>exact fit, as many sizes as "
                "parameters: not a result</td></tr>")
    p, iv = fit["params"], fit["intervals"]
    bound = set(fit.get("on_bound") or [])  # tuning records before the flag was kept: none

    def flag(name: str) -> str:
        return " (on a bound)" if name in bound else ""

    alpha_iv = iv.get("alpha")
    alpha = _fmt(p.get("alpha"), ".3f") + (
        f" [{alpha_iv[0]:.3f}, {alpha_iv[1]:.3f}]" if alpha_iv else "") + flag("alpha")
    ho = fit.get("holdout_rel_error")
    return (f"<tr><td>{_e(label)}</td><td>{_e(alpha)}</td>"
            f"<td>{_e(_fmt(p.get('E'), '.4g') + flag('E'))}</td>"
            f"<td>{_e(_fmt(p.get('A'), '.4g') + flag('A'))}</td>"
            f"<td>{'-' if ho is None else f'{100 * ho:+.2f}%'}</td></tr>")


def _trial_counts(rung: Mapping[str, Any]) -> str:
    states = [t["state"] for t in rung["trials"]]
    return ", ".join(f"{states.count(s)} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL")
                     if s in states)


def tune_section(tune: Mapping[str, Any]) -> str:
    rule = tune.get("rule")
    best_rows = "".join(
        f"<tr><td>{r['rung']}</td><td>{r['n_nonembed']:,}</td>"
        f"<td>{_fmt(r['default_lr'], '.3g')}</td>"
        f"<td>{_e(', '.join(f'{k} {v:.3g}' for k, v in r['best']['params'].items()))}</td>"
        f"<td>{_fmt(r['best']['value'], '.4f')}</td><td>{_e(_trial_counts(r))}</td></tr>"
        for r in tune["rungs"])
    rule_svg = _rule_svg(tune)
    parts = [
        f"<p>Optuna (TPE, median pruner) searched {tune['trials_per_rung']} trials per rung over "
        f"{_e(', '.join(k for k in ('lr', 'warmup_frac', 'batch_size') if tune['space'].get(k)))}"
        f"; each rung's first trial is the default ladder's own rung. Trials are stored in "
        f"<code>{_e(tune['storage'])}</code> (Optuna's RDB storage; "
        f"<code>optuna-dashboard sqlite:///{_e(tune['storage'])}</code> opens it).</p>",
        "<table><thead><tr><th>rung</th><th>N</th><th>default lr</th><th>best trial</th>"
        f"<th>its loss</th><th>trials</th></tr></thead><tbody>{best_rows}</tbody></table>",
        _loss_vs_lr_svg(tune),
    ]
    if rule is not None:
        parts.append(f"<p>Rule fitted to the best learning rates (least squares in log-log): "
                     f"<b>{_e(_rule_text(rule))}</b>.</p>")
    if rule_svg is not None:
        parts.append(rule_svg)
    parts += [
        f"<h3>The tuned ladder (<code>{_e(tune['ladders']['tuned']['folder'])}/</code>) beside "
        "the default one</h3>",
        "<table><thead><tr><th>rung</th><th>N</th><th>default lr</th><th>default loss</th>"
        "<th>tuned lr</th><th>tuned loss</th><th>tuned − default</th></tr></thead>"
        f"<tbody>{_ladder_rows(tune)}</tbody></table>",
        "<table><thead><tr><th>ladder</th><th>alpha [interval]</th><th>E</th><th>A</th>"
        "<th>holdout error (largest rung)</th></tr></thead><tbody>"
        + _law_row("default", tune["ladders"]["default"])
        + _law_row("tuned", tune["ladders"]["tuned"]) + "</tbody></table>",
    ]
    return "\n".join(parts)
