"""Every method on a real trained study, through `scalelab compress`: measured and stored."""

from __future__ import annotations

import pytest
import torch

from scalelab.compress import load_rung_model, load_variant
from scalelab.compress.prune import _block_linears
from scalelab.models import gpt
from scalelab.store import StudyStore
from scalelab.tasks import get_task
from scalelab.train.measure import eval_loss

REQUIRED = {"name", "of_rung", "method", "n_params", "bytes", "val_loss", "latency_ms"}


def test_every_variant_is_measured_and_in_summary(summary, variants):
    assert set(variants) == {"r1-int8", "r1-fp16", "r1-prune0.5", "r1-prune0.5-ft",
                             "r1-sparse0.5", "r1-lowrank0.5-ft", "r1-distill-r0"}
    for v in summary["variants"]:
        assert REQUIRED <= set(v), v["name"]
        assert v["of_rung"] == 1
        assert set(v["latency_ms"]) == {"1", "32"}
        assert all(x > 0 for x in v["latency_ms"].values())
        assert v["val_loss"] is not None and 0.5 < v["val_loss"] < 6
        assert v["bytes"] > 0 and v["n_params"] > 0


def test_variant_loss_is_on_the_rungs_validation_windows(study, variants):
    """Reloading a stored variant and scoring it on the rung windows gives its recorded loss."""
    with StudyStore.open_readonly(study) as store:
        rungs = store.rungs()
        stored = {v["name"]: v for v in store.variants()}
        spec = store.study()["spec"]
    windows = get_task("pycode").eval_windows(spec["train"]["final_eval_tokens"], 32)
    for name in ("r1-prune0.5-ft", "r1-lowrank0.5-ft", "r1-sparse0.5", "r1-distill-r0"):
        model = load_variant(study, stored[name], rungs)
        assert eval_loss(model, windows, torch.device("cpu")) == pytest.approx(
            variants[name]["val_loss"], abs=1e-5)
    base = load_rung_model(study, rungs[1])
    assert eval_loss(base, windows, torch.device("cpu")) == pytest.approx(
        rungs[1]["val_loss"], abs=1e-5)


def test_int8_shrinks_linear_weights_at_least_3_5x(summary, variants):
    v = variants["r1-int8"]
    ex = v["extra"]
    assert ex["linear_weight_ratio"] >= 3.5
    assert ex["linear_weight_numel"] > 0
    rung = summary["rungs"][1]
    assert v["bytes"] < rung["checkpoint_bytes"] / 1.8  # the whole file, embeddings included
    assert abs(ex["loss_delta"]) < 0.05
    assert set(ex["fp32_onnxruntime_latency_ms"]) == {"1", "32"}


def test_fp16_halves_the_file(summary, variants):
    v = variants["r1-fp16"]
    assert v["bytes"] < 0.52 * summary["rungs"][1]["checkpoint_bytes"]
    assert abs(v["extra"]["loss_delta"]) < 0.01


def test_structured_pruning_really_shrinks_the_model(summary, variants, study):
    rung = summary["rungs"][1]
    for name in ("r1-prune0.5", "r1-prune0.5-ft"):
        v = variants[name]
        assert v["n_nonembed"] < 0.6 * rung["n_nonembed"]
        assert v["bytes"] < rung["checkpoint_bytes"]
        assert set(v["extra"]["speedup"]) == {"1", "32"}  # measured, under the same load
    ft = variants["r1-prune0.5-ft"]
    assert ft["extra"]["finetune_status"] == "done" and ft["extra"]["finetune_steps"] > 0
    # The stored structure rebuilds a model that runs and has the recorded size.
    with StudyStore.open_readonly(study) as store:
        model = load_variant(study, next(x for x in store.variants()
                                         if x["name"] == "r1-prune0.5"), store.rungs())
    assert gpt.count_params(model)[0] == variants["r1-prune0.5"]["n_params"]
    assert model(torch.zeros(2, 32, dtype=torch.long)).shape == (2, 32, 256)


def test_unstructured_pruning_matches_its_sparsity_and_claims_no_speed(study, summary, variants):
    v = variants["r1-sparse0.5"]
    assert v["extra"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert v["extra"]["speed_claim"] is None
    assert v["bytes"] < summary["rungs"][1]["checkpoint_bytes"]
    with StudyStore.open_readonly(study) as store:
        model = load_variant(study, next(x for x in store.variants()
                                         if x["name"] == "r1-sparse0.5"), store.rungs())
    zeros = sum(int((lin.weight == 0).sum()) for _, lin in _block_linears(model))
    total = sum(lin.weight.numel() for _, lin in _block_linears(model))
    assert zeros / total == pytest.approx(0.5, abs=1e-3)


def test_lowrank_reduces_parameters(summary, variants):
    v = variants["r1-lowrank0.5-ft"]
    assert v["n_nonembed"] < summary["rungs"][1]["n_nonembed"]
    assert v["settings"]["ranks"] and v["extra"]["factored_layers"] >= 1


def test_distillation_is_compared_with_the_same_shape_on_the_same_tokens(summary, variants):
    v = variants["r1-distill-r0"]
    ex = v["extra"]
    small = summary["rungs"][0]
    assert ex["student_rung"] == 0 and ex["teacher_rung"] == 1
    assert v["n_params"] == small["n_params"]
    assert ex["baseline_val_loss"] == small["val_loss"]
    assert ex["student_tokens"] == small["tokens"]
    assert ex["stream_verified"] is True and ex["corpus_matches_study"] is True
    assert ex["loss_vs_baseline"] == pytest.approx(v["val_loss"] - small["val_loss"])


def test_report_has_the_compression_section(study):
    html = (study / "report.html").read_text()
    assert "<h2>Compression</h2>" in html
    section = html[html.index("<h2>Compression</h2>"):]
    assert "<svg" in section and "r1-prune0.5-ft" in section
    assert "Distillation" in section and "verified" in section
    assert "not claimed" in section


def test_rerunning_the_study_keeps_existing_variants(study, variants):
    """`scalelab run` calls compress_study on every invocation: stored variants are kept."""
    from scalelab.compress import compress_study
    from scalelab.spec import parse_spec

    with StudyStore.create_or_open(study) as store:
        spec = parse_spec(store.study()["spec"])
        before = {v["name"]: v["created"] for v in store.variants()}
        records = compress_study(store, spec, None, torch.device("cpu"), 1, ["int8", "fp16"])
        after = {v["name"]: v["created"] for v in store.variants()}
    assert [r["name"] for r in records] == ["r1-int8", "r1-fp16"]
    assert before == after
