"""Realistic synthetic studies (summary + curves) for the report tests.

`make_study()` is the default study (pycode, gpt: a byte-level language model); `objective`
"classification" gives a digits/mlp study (loss and error-rate fits), "regression" a
tabular/mlp one (RMSE). `legacy=True` gives what an old (schema 1) study reads back as: rungs
as the storage's migration gives them (family gpt, `describe`, D and units/s in bytes) but no
train loss, a corpus without objective, unit or metrics, and the old holdout record
{x, predicted, measured, rel_error, interval}.
"""

from __future__ import annotations

import math

import numpy as np

from scalelab.records import FitRecord, Holdout

E, A, ALPHA = 1.25, 31.0, 0.30
XSS_NAME = "<script>alert(1)</script>"
# The generalisation gap (val - train loss) of each rung of the default study: it shrinks with
# size; rung 3 diverged and has none.
LM_GAPS = [0.42, 0.31, 0.22, None, 0.11, 0.07]
# Classifier: cross-entropy and error rate against N; the gap grows with size (overfitting).
CLS_LOSS = (0.08, 9.0, 0.35)
CLS_ERR = (0.01, 4.0, 0.40)
CLS_GAPS = [0.01, 0.02, 0.035, 0.05, 0.065, 0.08]
REG_LOSS = (0.05, 6.0, 0.32)
RMSE_SCALE = 2.5


def law(n: float, e: float = E, a: float = A, alpha: float = ALPHA) -> float:
    return e + a * n ** (-alpha)


def _band(params: tuple[float, float, float]) -> dict:
    xs = np.geomspace(3e3, 2e6, 50)
    point = law(xs, *params)
    spread = 0.01 + 0.03 * np.abs(np.log(xs / 5e4)) / 4
    return {"x": xs.tolist(), "point": point.tolist(), "lo": (point * (1 - spread)).tolist(),
            "hi": (point * (1 + spread)).tolist(), "level": 0.95}


def _holdout(x: float, measured: float, rel: float, n_fit: int) -> Holdout:
    predicted = measured * (1 + rel)
    return Holdout(rule="largest:1", n_fit=n_fit, n_test=1, max_fit_size=x / 2.1,
                   points=[{"x": x, "measured": measured, "predicted": predicted,
                            "lo": predicted * 0.98, "hi": predicted * 1.02,
                            "rel_error": rel}],
                   params={"E": 1.2, "A": 30.0, "alpha": 0.29}, on_bound=[])


def _fit(y: str, params: dict, intervals: dict, holdout: Holdout, band: dict) -> dict:
    return FitRecord(law="power", x="n_nonembed", y=y, params=params, intervals=intervals,
                     level=0.95, on_bound=[], holdout=holdout, band=band,
                     bootstrap_params=None).to_dict()


def make_study(name: str = XSS_NAME, flat_latency: bool = False, objective: str = "lm",
               legacy: bool = False) -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    lm = objective == "lm"
    shapes = [(2, 16, 2), (2, 32, 2), (3, 48, 4), (4, 64, 4), (5, 96, 4), (6, 128, 8)]
    unit = {"lm": "byte"}.get(objective, "example")
    rungs, curves = [], {}
    for i, (n_layer, d_model, n_head) in enumerate(shapes):
        n_nonembed = 12 * n_layer * d_model**2 + 13 * n_layer * d_model
        n_params = n_nonembed + 256 * d_model + 64 * d_model
        tokens = 4_000_000 if lm else 50_000
        steps = 3906
        diverged = lm and i == 3
        noise = 1 + 0.004 * rng.standard_normal()
        if lm:
            val = law(n_nonembed) * noise
            gap = LM_GAPS[i]
        elif objective == "classification":
            val = law(n_nonembed, *CLS_LOSS) * noise
            gap = CLS_GAPS[i]
        else:
            val = law(n_nonembed, *REG_LOSS) * noise
            gap = CLS_GAPS[i] / 4
        lat1 = 0.2 + n_params * 2e-6
        lat32 = 1.5 + n_params * 3e-5
        latency = (
            {"1": lat1, "32": lat32}
            if flat_latency
            else {
                "1": {"median": lat1, "iqr": lat1 * 0.08},
                "32": {"median": lat32, "iqr": lat32 * 0.05},
            }
        )
        error = law(n_nonembed, *CLS_ERR) if objective == "classification" else None
        r = {
            "rung": i,
            "status": "diverged" if diverged else "done",
            "n_params": n_params,
            "n_nonembed": n_nonembed,
            "n_layer": n_layer if lm else None,
            "d_model": d_model if lm else None,
            "n_head": n_head if lm else None,
            "tokens": tokens if not diverged else 832_512,
            "steps": steps if not diverged else 813,
            "lr": 3e-3 * (n_nonembed / 1e4) ** (-1 / 3),
            "val_loss": None if diverged else val,
            "val_bpb": None if diverged or not lm else val / math.log(2),
            "flops": 6.3 * n_params * tokens,
            "flops_6nd": 6.0 * n_params * tokens,
            "train_seconds": 8 + n_params * 4e-4,
            "tokens_per_s": tokens / (8 + n_params * 4e-4),
            "mfu": 0.02 + 0.05 * i / 5,
            "peak_mem_bytes": 5e7 + 40 * n_params,
            "checkpoint_bytes": 4 * n_params + 1200,
            "latency_ms": None if diverged else latency,
            "diverged_step": 812 if diverged else None,
            "diverged_reason": "loss is NaN <after> lr spike" if diverged else None,
        }
        # What the storage's v1 migration gives every rung (the plan's describe, D, its rate).
        r.update(
            family="gpt" if lm else "mlp",
            describe=f"{n_layer}x{d_model}" if lm else f"{n_layer}x{d_model * 2}",
            D=r["tokens"],
            unit=unit,
            units_per_s=r["tokens_per_s"],
        )
        if not legacy:
            r.update(
                train_loss=None if diverged else val - gap,
                val_error=error,
                val_accuracy=None if error is None else 1 - error,
                val_rmse=(math.sqrt(val) * RMSE_SCALE if objective == "regression" else None),
                shape={"n_layer": n_layer, "d_model": d_model} if lm
                else {"hidden": [d_model * 2] * n_layer},
                metrics={},
            )
        if diverged:
            for k in ("flops", "train_seconds", "tokens_per_s", "units_per_s", "mfu",
                      "checkpoint_bytes"):
                r[k] = None
        rungs.append(r)
        pts = []
        n_pts = 40 if not diverged else 9
        start = 5.5 if lm else 2.4
        final = val / noise
        for s in range(n_pts + 1):
            step = int(steps * s / 40)
            tok = step * 1024 if lm else step * 13
            frac = s / 40
            tl = start + 0.05 if s == 0 else final + (start - final) * math.exp(-8 * frac)
            tl *= 1 + 0.01 * rng.standard_normal()
            if diverged and s == n_pts:
                tl = float("nan")
            pts.append(
                {
                    "step": step,
                    "tokens": tok,
                    "train_loss": tl,
                    "val_loss": (tl * 1.01 if s % 5 == 0 and math.isfinite(tl) else None),
                    "lr": 1e-3,
                }
            )
        curves[i] = pts

    largest = rungs[-1]
    x_top = float(largest["n_nonembed"])
    if lm:
        corpus = {
            "files": 812,
            "bytes": 27_345_118,
            "sha256": "ab" * 32,
            "train_files": 771,
            "val_files": 41,
        }
        task = {"name": "pycode", "block_size": 64}
        fits = [_fit("val_loss", {"E": 1.2487, "A": 30.8, "alpha": 0.2991},
                     {"E": [1.19, 1.31], "A": [25.1, 37.9], "alpha": [0.281, 0.318]},
                     _holdout(x_top, largest["val_loss"], 0.0062, 4), _band((E, A, ALPHA)))]
        if not legacy:
            corpus.update(task="pycode", objective="lm", unit="byte", metrics=["bpb"],
                          io={"kind": "sequence", "input_shape": [64], "n_outputs": 256,
                              "vocab_size": 256})
    elif objective == "classification":
        corpus = {"task": "digits", "objective": "classification", "unit": "example",
                  "metrics": ["accuracy", "error"], "n_train": 1437, "n_val": 360,
                  "sha256": "cd" * 32,
                  "io": {"kind": "vector", "input_shape": [64], "n_outputs": 10,
                         "vocab_size": None}}
        task = {"name": "digits"}
        fits = [
            _fit("val_loss", {"E": 0.0812, "A": 8.91, "alpha": 0.3488},
                 {"E": [0.071, 0.092], "A": [7.2, 10.9], "alpha": [0.331, 0.367]},
                 _holdout(x_top, largest["val_loss"], -0.0143, 5), _band(CLS_LOSS)),
            _fit("val_error", {"E": 0.0107, "A": 3.87, "alpha": 0.3972},
                 {"E": [0.0061, 0.0149], "A": [3.1, 4.7], "alpha": [0.371, 0.425]},
                 _holdout(x_top, largest["val_error"], 0.0391, 5), _band(CLS_ERR)),
        ]
    else:
        corpus = {"task": "tabular", "objective": "regression", "unit": "example",
                  "metrics": ["rmse"], "path": "houses.csv", "rows": 2000,
                  "sha256": "ef" * 32,
                  "io": {"kind": "vector", "input_shape": [8], "n_outputs": 1,
                         "vocab_size": None}}
        task = {"name": "tabular", "path": "houses.csv", "target": "price"}
        fits = [_fit("val_loss", {"E": 0.0497, "A": 6.02, "alpha": 0.3207},
                     {"E": [0.041, 0.058], "A": [4.9, 7.3], "alpha": [0.301, 0.339]},
                     _holdout(x_top, largest["val_loss"], 0.0215, 5), _band(REG_LOSS))]
    if legacy:  # the old holdout record: the largest rung only
        for fit in fits:
            pt = fit["holdout"]["points"][0]
            fit["holdout"] = {"x": pt["x"], "predicted": pt["predicted"],
                              "measured": pt["measured"], "rel_error": pt["rel_error"],
                              "interval": [pt["lo"], pt["hi"]]}
            del fit["y"], fit["level"], fit["bootstrap_params"]
    summary = {
        "study": {
            "name": name,
            "task": task["name"],
            "family": "gpt" if lm else "mlp",
            "machine": "test-host (x86_64, 2 cores)",
            "device": "cpu",
            "gemm_peak_flops": 1.23e11,
            "vendor_peak_flops": None,
            "torch_version": "2.5.1+cpu",
            "python_version": "3.11.9",
            "threads": 2,
            "spec": {
                "name": name,
                "task": task,
                "family": "gpt" if lm else "mlp",
                "ladder": {"n_rungs": 6, "min_nonembed": 6600, "max_nonembed": 447000},
                "train": {
                    "batch_size": 16,
                    "tokens": 4_000_000,
                    "lr_rule": "n^-1/3",
                    "note": "</pre><b>not bold</b>",
                },
                "seed": 0,
            },
            "corpus": corpus,
            "created": "2025-01-02T03:04:05Z",
        },
        "rungs": rungs,
        "fits": fits,
    }
    return summary, curves
