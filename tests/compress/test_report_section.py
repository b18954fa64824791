"""The compression section of the report, on a synthetic summary."""

from __future__ import annotations

from scalelab.report.compression import compression_section


def _summary(with_variants=True):
    rungs = [{"rung": i, "status": "done", "n_nonembed": n, "val_loss": 2.0 + 3.0 * n ** -0.3,
              "checkpoint_bytes": 4 * n + 80_000, "latency_ms": {"1": n / 1e4, "32": n / 1e3}}
             for i, n in enumerate((1e4, 1e5, 1e6))]
    variants = [
        {"name": "r2-int8<b>", "of_rung": 2, "method": "int8", "n_params": 1_000_000,
         "n_nonembed": 1e6, "bytes": 1_100_000, "val_loss": 2.05,
         "latency_ms": {"1": 40.0, "32": 500.0},
         "settings": {}, "extra": {"linear_weight_ratio": 3.99, "speedup": {"1": 2.5, "32": 2.0},
                                   "fp32_onnxruntime_latency_ms": {"1": 80, "32": 900}}},
        {"name": "r2-distill-r1", "of_rung": 2, "method": "distill", "n_params": 100_000,
         "n_nonembed": 1e5, "bytes": 480_000, "val_loss": 2.2, "latency_ms": {"1": 10, "32": 90},
         "settings": {"student_rung": 1},
         "extra": {"student_rung": 1, "teacher_rung": 2, "teacher_val_loss": 2.04,
                   "baseline_val_loss": 2.25, "loss_vs_baseline": -0.05, "student_tokens": 1000,
                   "stream_verified": True, "temperature": 2.0, "alpha": 0.5}},
    ] if with_variants else []
    return {"study": {"threads": 2, "machine": "x86_64 2 cores"}, "rungs": rungs,
            "fits": [{"law": "power", "x": "n_nonembed",
                      "params": {"E": 2.0, "A": 3.0, "alpha": 0.3}}],
            "variants": variants}


def test_section_has_plot_with_law_table_and_distillation():
    html = compression_section(_summary())
    assert html.count("<svg") == 1 and "fitted law" in html
    assert "r2-int8&lt;b&gt;" in html and "r2-int8<b>" not in html  # escaped
    assert "Distillation" in html and "verified" in html and "-0.0500" in html
    assert "4.00x smaller" not in html and "3.99x" in html


def test_no_variants_no_section():
    assert compression_section(_summary(with_variants=False)) is None
