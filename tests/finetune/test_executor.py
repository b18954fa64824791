"""Fine-tunes are jobs of the executor: `scalelab finetune --executor ray` through the real entry
point, on a local Ray, trains the same fine-tunes as the local run of the package's study (same
zero-shot and fine-tuned losses and curves to the last bit; times differ), and `--mlflow` gets
a child run per fine-tune with its curve by step and its measurements."""

from __future__ import annotations

import json

import pytest

from tests.finetune.conftest import FT_TOKENS
from tests.helpers import TWO_RUNG_NAME, copy_study, scalelab

SAME = ("name", "of_rung", "method", "settings", "steps", "lr", "trainable_params", "bytes",
        "zero_shot_loss", "val_loss", "metrics")


def _curve(f: dict) -> list[tuple]:
    return [(p["step"], p["train_loss"], p["val_loss"]) for p in f["curve"]]


@pytest.mark.slow
def test_ray_trains_the_local_finetunes(base_study, finetunes, tmp_path):
    folder = copy_study(base_study, tmp_path / "study")
    scalelab("finetune", folder, "--tokens", FT_TOKENS, "--methods", "lora:r=4,ia3",
             "--rungs", "1", "--executor", "ray", check=True)
    remade = {f["name"]: f for f in json.loads((folder / "summary.json").read_text())["finetunes"]}
    assert set(remade) == {"r1-stdlib-test-lora-r4", "r1-stdlib-test-ia3"}
    for name, f in remade.items():
        assert f["status"] == "done"
        assert {k: f[k] for k in SAME} == {k: finetunes[name][k] for k in SAME}
        assert _curve(f) == _curve(finetunes[name])


def test_mlflow_gets_a_child_run_per_finetune(base_study, finetunes, cli, tmp_path):
    from mlflow import MlflowClient

    folder = copy_study(base_study, tmp_path / "study")
    tracking = tmp_path / "tracking"
    cli("finetune", folder, "--tokens", FT_TOKENS, "--methods", "ia3", "--rungs", "0",
        "--mlflow", tracking, check=True)
    client = MlflowClient(f"sqlite:///{tracking / 'mlflow.db'}")
    exp = client.get_experiment_by_name(TWO_RUNG_NAME)
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    name = "r0-stdlib-test-ia3"
    run, mine = runs[name], finetunes[name]
    assert run.data.tags["scalelab.kind"] == "finetune"
    assert run.data.tags["mlflow.parentRunId"] == runs[TWO_RUNG_NAME].info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.params["method"] == "ia3" and int(run.data.params["steps"]) == mine["steps"]
    for key in ("val_loss", "zero_shot_loss", "trainable_params", "bytes"):
        assert run.data.metrics[key] == pytest.approx(mine[key])
    history = client.get_metric_history(run.info.run_id, "curve/val_loss")
    assert sorted((m.step, m.value) for m in history) == [
        (p["step"], pytest.approx(p["val_loss"])) for p in mine["curve"]
        if p.get("val_loss") is not None]
