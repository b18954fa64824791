"""The gap analysis on synthetic window losses: intervals cover the truth, the trend's verdict."""

from __future__ import annotations

import numpy as np

from scalelab.finetune.scaling import analyse, paired_gap


def _row(rung, n, slug, windows, zero, trainable=1000, seconds=1.0):
    return {"name": f"r{rung}-t-{slug}", "of_rung": rung, "task": "t", "status": "done",
            "method": slug.split("-")[0], "n_nonembed": n, "val_loss": float(np.mean(windows)),
            "zero_shot_loss": float(np.mean(zero)), "trainable_params": trainable,
            "train_seconds": seconds, "settings": {"slug": slug},
            "window_losses": {"finetuned": list(windows), "zero_shot": list(zero)}}


def test_paired_gap_cancels_shared_noise():
    rng = np.random.default_rng(0)
    shared = rng.normal(2.0, 0.5, 2000)  # window difficulty, common to both models
    full = shared + rng.normal(0, 0.01, 2000)
    lora = shared + 0.02 + rng.normal(0, 0.01, 2000)
    g = paired_gap(lora, full, shared + 0.5, np.random.default_rng(1), 500)
    assert g["lo"] < 0.02 < g["hi"] and g["hi"] - g["lo"] < 0.005  # unpaired would be ~0.06
    assert abs(g["rel_gap"] - 0.02 / 0.5) < 0.005 and g["rel_lo"] < g["rel_gap"] < g["rel_hi"]


def test_analyse_fits_a_law_per_method_and_sees_a_closing_gap():
    rng = np.random.default_rng(0)
    rows = []
    for rung, n in enumerate([1e4, 3e4, 1e5, 3e5]):
        base = 1.0 + 5.0 * n ** -0.3
        shared = base + rng.normal(0, 0.3, 1000)
        gap = 0.08 - 0.03 * np.log10(n / 1e4)  # 0.08 at 1e4, closing with N
        rows.append(_row(rung, n, "full", shared, shared + 0.6, trainable=int(n),
                         seconds=n / 1e4))
        rows.append(_row(rung, n, "lora-r4", shared + gap + rng.normal(0, 0.005, 1000),
                         shared + 0.6, trainable=int(30 * n ** 0.5), seconds=n / 2e4))
    a = analyse(rows, "t", bootstrap=300, seed=0)
    assert set(a["laws"]) == {"full", "lora-r4", "zero-shot"}
    assert a["laws"]["full"]["intervals"]["alpha"] is not None  # 4 rungs: bootstrapped
    (g,) = a["gaps"]
    assert g["method"] == "lora-r4" and g["vs"] == "full" and len(g["points"]) == 4
    t = g["trend"]
    assert t["verdict"] == "closes" and t["lo"] < -0.03 < t["hi"] < 0
    assert abs(a["slopes"]["lora-r4"]["trainable_vs_n"] - 0.5) < 0.02
    assert abs(a["slopes"]["full"]["trainable_vs_n"] - 1.0) < 0.02


def test_flat_gap_is_unclear_and_rungs_without_a_full_partner_are_skipped():
    rng = np.random.default_rng(1)
    rows = []
    for rung, n in enumerate([1e4, 1e5, 1e6]):
        shared = 2.0 + rng.normal(0, 0.3, 500)
        rows.append(_row(rung, n, "lora-r4", shared + 0.01, shared + 0.5))
        if rung != 2:
            rows.append(_row(rung, n, "full", shared, shared + 0.5))
    (g,) = analyse(rows, "t", bootstrap=200)["gaps"]
    assert [p["rung"] for p in g["points"]] == [0, 1]
    assert g["trend"]["verdict"] == "unclear"
