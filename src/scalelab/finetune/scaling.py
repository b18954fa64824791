"""Scaling of fine-tuning: a law per method, the gap of each method to full fine-tuning against N
with intervals, and how trainable parameters and time grow with N.

`analyse(finetunes, task)` reads the stored fine-tune rows of one second task (with their window
losses) and returns the record kept in `finetune_scaling` and summary.json's `finetune_scaling`:

- `laws`: {method: FitRecord dict}: L(N) = E + A·N^-alpha of the fine-tuned validation loss
  against the rung's n_nonembed, fitted as the study fits its own law (`laws.fit_study_power`:
  bootstrap intervals with the study's `fit.bootstrap` resamples, the holdout of the largest rung
  from 4 rungs up; less with fewer rungs, never a crash); `zero-shot` is the law of the loss
  before fine-tuning, for reference.
- `gaps`: per method other than full, one point per rung where both finished: `gap` = L(method)
  - L(full) (positive: the method is worse), with a 95% interval from a paired bootstrap over
  the validation windows (both models are scored on the same windows, so the noise that the two
  share cancels), and `rel_gap` = gap / (L(zero-shot) - L(full)): the share of full
  fine-tuning's improvement that the method misses (0: none, 1: all of it), with its interval.
  `trend`: the least-squares slope of the gap against log10 N (nats per decade of N), its
  interval from refitting the slope on each bootstrap replicate of every rung's gap, and a
  verdict: `closes` (the slope points toward zero from the side of the mean gap, a method worse
  on average getting less worse with N, and the interval excludes a zero slope), `widens`
  (away from zero, interval excluding zero), or `unclear`.
- `slopes`: per method, the log-log least-squares slopes of trainable parameters and of training
  time against N (for a LoRA of fixed rank the trainable count grows like the width, about
  N^0.5 on a ladder of fixed aspect, against N^1 for full fine-tuning).

Honesty notes. The intervals of the gaps measure the evaluation's sampling noise only (which
windows were drawn); the training noise (another seed of the fine-tune) is not in them, and at the
rungs where the gap is small it can be of the same size. The law intervals come from resampling
rungs, as for the study's own law.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

LEVEL = 0.95
ZERO_SHOT = "zero-shot"
REFERENCE = "full"


def _slug(f: dict) -> str:
    return (f.get("settings") or {}).get("slug") or f["method"]


def _windows(f: dict, key: str) -> np.ndarray | None:
    w = (f.get("window_losses") or {}).get(key)
    return None if not w else np.asarray(w, dtype=float)


def _ci(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.nanpercentile(samples, [50 * (1 - LEVEL), 100 - 50 * (1 - LEVEL)])
    return float(lo), float(hi)


def _fit(n: Sequence[float], y: Sequence[float], bootstrap: int, seed: int) -> dict | None:
    from scalelab.laws import fit_study_power

    pts = [(a, b) for a, b in zip(n, y, strict=True)
           if b is not None and math.isfinite(b) and b > 0]
    if len(pts) < 2:
        return None
    return fit_study_power([p[0] for p in pts], [p[1] for p in pts], bootstrap=bootstrap,
                           seed=seed)


def _loglog_slope(x: Sequence[float], y: Sequence[float]) -> float | None:
    pts = [(a, b) for a, b in zip(x, y, strict=True) if a and b and a > 0 and b > 0]
    if len({p[0] for p in pts}) < 2:
        return None
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(lx, ly, 1)[0])


def _trend(ns: list[float], gaps: list[float], reps: list[np.ndarray]) -> dict | None:
    if len(set(ns)) < 2:
        return None
    lx = np.log10(ns)
    slope = float(np.polyfit(lx, gaps, 1)[0])
    samples = np.stack(reps, axis=1)  # (B, rungs)
    xc = lx - lx.mean()
    boot = (samples - samples.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
    lo, hi = _ci(boot)
    mean = float(np.mean(gaps))
    toward_zero = (slope < 0) if mean > 0 else (slope > 0) if mean < 0 else None
    excludes = lo > 0 or hi < 0
    if toward_zero is None or not excludes:
        verdict = "unclear"
    else:
        verdict = "closes" if toward_zero else "widens"
    return {"slope_per_decade": slope, "lo": lo, "hi": hi, "level": LEVEL, "verdict": verdict,
            "n_rungs": len(ns)}


def paired_gap(method: np.ndarray, full: np.ndarray, zero: np.ndarray | None, rng: Any,
               bootstrap: int) -> dict:
    """Gap and relative gap of one rung with paired-bootstrap intervals; `samples` holds the
    gap's bootstrap replicates (for the trend)."""
    n = method.size
    idx = rng.integers(0, n, size=(bootstrap, n))
    d = method - full
    reps = d[idx].mean(axis=1)
    gap = float(d.mean())
    lo, hi = _ci(reps)
    out = {"gap": gap, "lo": lo, "hi": hi, "samples": reps}
    if zero is not None and zero.size == n:
        gain = zero - full
        denom = float(gain.mean())
        out["rel_gap"] = gap / denom if denom > 0 else None
        if denom > 0:
            rel = reps / gain[idx].mean(axis=1)
            out["rel_lo"], out["rel_hi"] = _ci(rel)
    return out


def analyse(finetunes: Sequence[dict], task: str, bootstrap: int = 1000,
            seed: int = 0) -> dict:
    """The scaling record of one second task (see the module docstring)."""
    rows = [f for f in finetunes if f["task"] == task and f["status"] == "done"
            and f.get("val_loss") is not None]
    by_method: dict[str, list[dict]] = {}
    for f in sorted(rows, key=lambda f: f["n_nonembed"]):
        by_method.setdefault(_slug(f), []).append(f)
    boot = max(bootstrap, 200)
    laws: dict[str, Any] = {}
    for slug, fs in by_method.items():
        laws[slug] = _fit([f["n_nonembed"] for f in fs], [f["val_loss"] for f in fs],
                          bootstrap, seed)
    zero = {}
    for f in rows:
        zero.setdefault(f["of_rung"], f)
    zs = sorted(zero.values(), key=lambda f: f["n_nonembed"])
    laws[ZERO_SHOT] = _fit([f["n_nonembed"] for f in zs], [f["zero_shot_loss"] for f in zs],
                           bootstrap, seed)
    rng = np.random.default_rng(seed)
    gaps = []
    full = {f["of_rung"]: f for f in by_method.get(REFERENCE, [])}
    for slug, fs in by_method.items():
        if slug == REFERENCE or not full:
            continue
        points, reps = [], []
        for f in fs:
            ref = full.get(f["of_rung"])
            a, b = _windows(f, "finetuned"), _windows(ref, "finetuned") if ref else None
            if ref is None or a is None or b is None or a.size != b.size:
                continue
            g = paired_gap(a, b, _windows(f, "zero_shot"), rng, boot)
            reps.append(g.pop("samples"))
            points.append({"rung": f["of_rung"], "n_nonembed": f["n_nonembed"],
                           "loss": f["val_loss"], "full_loss": ref["val_loss"],
                           "zero_shot_loss": f["zero_shot_loss"], **g})
        if points:
            trend = _trend([p["n_nonembed"] for p in points], [p["gap"] for p in points], reps)
            gaps.append({"method": slug, "vs": REFERENCE, "points": points, "trend": trend})
    slopes = {}
    for slug, fs in by_method.items():
        ns = [f["n_nonembed"] for f in fs]
        slopes[slug] = {
            "trainable_vs_n": _loglog_slope(ns, [f["trainable_params"] for f in fs]),
            "time_vs_n": _loglog_slope(ns, [f["train_seconds"] for f in fs]),
        }
    return {"task": task, "x": "n_nonembed", "methods": list(by_method), "laws": laws,
            "gaps": gaps, "slopes": slopes, "bootstrap": boot, "level": LEVEL}


__all__ = ["analyse", "paired_gap"]
