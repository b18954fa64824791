"""A realistic synthetic study (summary + curves) for the report tests."""

from __future__ import annotations

import math

import numpy as np

E, A, ALPHA = 1.25, 31.0, 0.30
XSS_NAME = "<script>alert(1)</script>"


def law(n: float) -> float:
    return E + A * n ** (-ALPHA)


def make_study(name: str = XSS_NAME, flat_latency: bool = False) -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    shapes = [(2, 16, 2), (2, 32, 2), (3, 48, 4), (4, 64, 4), (5, 96, 4), (6, 128, 8)]
    rungs, curves = [], {}
    for i, (n_layer, d_model, n_head) in enumerate(shapes):
        n_nonembed = 12 * n_layer * d_model**2 + 13 * n_layer * d_model
        n_params = n_nonembed + 256 * d_model + 64 * d_model
        tokens = 4_000_000
        steps = 3906
        diverged = i == 3
        val = law(n_nonembed) * (1 + 0.004 * rng.standard_normal())
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
        r = {
            "rung": i,
            "status": "diverged" if diverged else "done",
            "n_params": n_params,
            "n_nonembed": n_nonembed,
            "n_layer": n_layer,
            "d_model": d_model,
            "n_head": n_head,
            "tokens": tokens if not diverged else 832_512,
            "steps": steps if not diverged else 813,
            "lr": 3e-3 * (n_nonembed / 1e4) ** (-1 / 3),
            "val_loss": None if diverged else val,
            "val_bpb": None if diverged else val / math.log(2),
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
        if diverged:
            for k in ("flops", "train_seconds", "tokens_per_s", "mfu", "checkpoint_bytes"):
                r[k] = None
        rungs.append(r)
        pts = []
        n_pts = 40 if not diverged else 9
        for s in range(n_pts + 1):
            step = int(steps * s / 40)
            tok = step * 1024
            frac = s / 40
            tl = 5.55 if s == 0 else law(n_nonembed) + (5.5 - law(n_nonembed)) * math.exp(-8 * frac)
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

    xs = np.geomspace(3e3, 2e6, 50)
    point = law(xs)
    spread = 0.01 + 0.03 * np.abs(np.log(xs / 5e4)) / 4
    largest = rungs[-1]
    summary = {
        "study": {
            "name": name,
            "task": "pycode",
            "family": "gpt",
            "machine": "test-host (x86_64, 2 cores)",
            "device": "cpu",
            "gemm_peak_flops": 1.23e11,
            "vendor_peak_flops": None,
            "torch_version": "2.5.1+cpu",
            "python_version": "3.11.9",
            "threads": 2,
            "spec": {
                "name": name,
                "task": {"name": "pycode", "block_size": 64},
                "family": "gpt",
                "ladder": {"n_rungs": 6, "min_nonembed": 6600, "max_nonembed": 447000},
                "train": {
                    "batch_size": 16,
                    "tokens": 4_000_000,
                    "lr_rule": "n^-1/3",
                    "note": "</pre><b>not bold</b>",
                },
                "seed": 0,
            },
            "corpus": {
                "files": 812,
                "bytes": 27_345_118,
                "sha256": "ab" * 32,
                "train_files": 771,
                "val_files": 41,
            },
            "created": "2025-01-02T03:04:05Z",
        },
        "rungs": rungs,
        "fits": [
            {
                "law": "power",
                "x": "n_nonembed",
                "y": "val_loss",
                "params": {"E": 1.2487, "A": 30.8, "alpha": 0.2991},
                "intervals": {"E": [1.19, 1.31], "A": [25.1, 37.9], "alpha": [0.281, 0.318]},
                "on_bound": [],
                "holdout": {
                    "predicted": largest["val_loss"] * 1.0062,
                    "measured": largest["val_loss"],
                    "rel_error": 0.0062,
                    "interval": [largest["val_loss"] * 0.985, largest["val_loss"] * 1.027],
                },
                "band": {
                    "x": xs.tolist(),
                    "point": point.tolist(),
                    "lo": (point * (1 - spread)).tolist(),
                    "hi": (point * (1 + spread)).tolist(),
                },
            }
        ],
    }
    return summary, curves
