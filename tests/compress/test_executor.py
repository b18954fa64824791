"""Variants are jobs of the executor: `scalelab compress --executor ray` through the real entry
point, on a local Ray, makes the same variants as the local run of the package's study (same
validation losses, sizes and counts to the last bit; latencies differ), and `--mlflow` gets a
child run per variant as its job ends."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from tests.helpers import TWO_RUNG_NAME, copy_study, scalelab

RAY_METHODS = "fp16,prune:0.5+ft"  # a cast and one that trains (its recovery fine-tune)
SAME = ("name", "of_rung", "method", "settings", "n_params", "n_nonembed", "bytes", "val_loss")


@pytest.mark.slow
def test_ray_makes_the_local_variants_and_mlflow_sees_each(study, variants, tmp_path):
    folder = copy_study(study, tmp_path / "study")
    tracking = tmp_path / "tracking"
    proc = scalelab("compress", folder, "--methods", RAY_METHODS, "--executor", "ray",
                    "--mlflow", tracking, check=True)
    names = ["r1-fp16", "r1-prune0.5-ft"]
    assert all(f"{n}: loss" in proc.stdout for n in names), proc.stdout
    remade = {v["name"]: v for v in json.loads((folder / "summary.json").read_text())["variants"]}
    for name in names:
        assert {k: remade[name][k] for k in SAME} == {k: variants[name][k] for k in SAME}

    client = MlflowClient(f"sqlite:///{tracking / 'mlflow.db'}")
    exp = client.get_experiment_by_name(TWO_RUNG_NAME)
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    parent = runs[TWO_RUNG_NAME].info.run_id
    for name in names:
        run = runs[name]
        assert run.data.tags["scalelab.kind"] == "variant"
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.info.status == "FINISHED"
        assert run.data.params["method"] == remade[name]["method"]
        assert run.data.metrics["val_loss"] == pytest.approx(remade[name]["val_loss"])
        assert run.data.metrics["bytes"] == remade[name]["bytes"]
