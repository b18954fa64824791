"""Variants stored by scalelab 1 (GPT only, `structure` for pruned models) still load through the
family and the registry, and reproduce the validation loss they recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scalelab.compress import load_rung_model, load_variant
from scalelab.compress.base import get_method
from scalelab.spec import parse_spec
from scalelab.storage import StudyStore
from scalelab.study import resolve

V1 = Path(__file__).resolve().parents[1] / "data" / "v1_study"


@pytest.fixture(scope="module")
def v1():
    with StudyStore.open_readonly(V1) as store:  # migrated in memory; nothing written
        study = store.study()
        rungs, variants = store.rungs(), store.variants()
    res = resolve(parse_spec(study["spec"]), out=V1)
    if (study["corpus"] or {}).get("sha256") != res.task.fingerprint().get("sha256"):
        pytest.skip("this Python's stdlib differs from the one the v1 fixture was trained on")
    return study, rungs, {v["name"]: v for v in variants}, res


def test_every_v1_variant_loads_and_reproduces_its_loss(v1):
    study, rungs, variants, res = v1
    units = study["spec"]["train"]["final_eval_tokens"]
    cpu = torch.device("cpu")
    assert set(variants) == {"r3-distill-r2", "r3-fp16", "r3-int8", "r3-lowrank0.5",
                             "r3-prune0.5", "r3-sparse0.5"}
    for name, v in variants.items():
        model = load_variant(V1, v, rungs, res.family)
        loss = res.task.evaluate(model, cpu, units)["loss"]
        tol = 2e-3 if v["method"] == "fp16" else 1e-4  # fp16 was measured in fp16
        assert loss == pytest.approx(v["val_loss"], abs=tol), name
    base = load_rung_model(V1, rungs[3], res.family)
    assert res.task.evaluate(base, cpu, units)["loss"] == pytest.approx(rungs[3]["val_loss"],
                                                                        abs=1e-5)


def test_a_v1_prune_variant_without_a_shape_is_resolved_from_its_structure(v1):
    _, rungs, variants, _ = v1
    v = dict(variants["r3-prune0.5"])
    migrated = v["settings"]["shape"]
    v["settings"] = {k: x for k, x in v["settings"].items() if k != "shape"}
    rows = {r["rung"]: r for r in rungs}
    assert get_method("prune").restore_shape(v, rows) == migrated
    d = dict(variants["r3-distill-r2"])
    assert get_method("distill").restore_shape(d, rows) == rows[2]["shape"]
