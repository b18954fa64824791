"""Every method on a real trained study, through `scalelab compress`: measured and stored."""

from __future__ import annotations

import pytest
import torch

from scalelab.compress import load_rung_model, load_variant
from scalelab.compress.layers import untied_linears
from scalelab.models import count_params, gpt
from scalelab.spec import parse_spec
from scalelab.storage import StudyStore
from scalelab.study import resolve

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


def _resolved(study):
    with StudyStore.open_readonly(study) as store:
        spec = parse_spec(store.study()["spec"])
        rungs = store.rungs()
        stored = {v["name"]: v for v in store.variants()}
    return resolve(spec, out=study), spec, rungs, stored


def test_variant_loss_is_on_the_rungs_validation_data(study, variants):
    """Reloading a stored variant and scoring it on the rungs' validation data gives its
    recorded loss (and metrics)."""
    res, spec, rungs, stored = _resolved(study)
    cpu = torch.device("cpu")
    units = spec.train.final_eval_tokens
    for name in ("r1-prune0.5-ft", "r1-lowrank0.5-ft", "r1-sparse0.5", "r1-distill-r0",
                 "r1-fp16"):
        model = load_variant(study, stored[name], rungs, res.family)
        ev = res.task.evaluate(model, cpu, units)
        tol = 2e-3 if name == "r1-fp16" else 1e-5  # restored in fp32, measured in fp16
        assert ev["loss"] == pytest.approx(variants[name]["val_loss"], abs=tol)
        assert set(variants[name]["extra"]["metrics"]) == {"bpb"}
    base = load_rung_model(study, rungs[1], res.family)
    assert res.task.evaluate(base, cpu, units)["loss"] == pytest.approx(
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
    # The stored shape is the rung's GPT with fewer heads and a narrower MLP; it rebuilds a
    # plain GPT that runs and has the recorded size.
    shape = variants["r1-prune0.5"]["settings"]["shape"]
    assert shape == {**rung["shape"], "n_head": rung["shape"]["n_head"] // 2,
                     "d_ff": rung["shape"]["d_ff"] // 2}
    res, _, rungs, stored = _resolved(study)
    model = load_variant(study, stored["r1-prune0.5"], rungs, res.family)
    assert type(model) is gpt.GPT
    assert count_params(model)[0] == variants["r1-prune0.5"]["n_params"]
    assert model(torch.zeros(2, 32, dtype=torch.long)).shape == (2, 32, 256)
    parts = [c["part"] for c in variants["r1-prune0.5"]["extra"]["structure"]]
    assert parts == ["attention heads per layer", "MLP channels per layer"]


def test_unstructured_pruning_matches_its_sparsity_and_claims_no_speed(study, summary, variants):
    v = variants["r1-sparse0.5"]
    assert v["extra"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert v["extra"]["speed_claim"] is None
    assert v["bytes"] < summary["rungs"][1]["checkpoint_bytes"]
    res, _, rungs, stored = _resolved(study)
    model = load_variant(study, stored["r1-sparse0.5"], rungs, res.family)
    zeros = sum(int((lin.weight == 0).sum()) for _, lin in untied_linears(model))
    total = sum(lin.weight.numel() for _, lin in untied_linears(model))
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
    assert ex["student_D"] == small["D"] and ex["unit"] == "byte"
    assert v["settings"]["shape"] == small["shape"]
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
        records = compress_study(store, spec, None, None, torch.device("cpu"), 1,
                                 ["int8", "fp16"])
        after = {v["name"]: v["created"] for v in store.variants()}
    assert [r.name for r in records] == ["r1-int8", "r1-fp16"]
    assert before == after
