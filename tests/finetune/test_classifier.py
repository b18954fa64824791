"""Fine-tuning a classifier family: a new head for the second task's classes, plus LoRA or full;
and a second task whose inputs do not fit is refused."""

from __future__ import annotations

import csv

import pytest

from tests.finetune.conftest import db_state
from tests.helpers import scalelab, write_spec


@pytest.fixture(scope="module")
def digits_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft-digits")
    spec = {"name": "digits-ft", "task": {"name": "digits", "flatten": True},
            "family": {"name": "mlp"}, "ladder": {"sizes": [2000, 6000]},
            "train": {"tokens": 8000, "batch_size": 32, "eval_every": 100,
                      "checkpoint_every": 200, "eval_tokens": 256, "final_eval_tokens": 512},
            "measure": {"latency_repeats": 3, "threads": 1}, "fit": {"bootstrap": 10},
            "device": "cpu"}
    scalelab("run", write_spec(root / "spec.yaml", spec), "--out", root / "s", check=True)
    return root / "s"


@pytest.fixture(scope="module")
def csvs(tmp_path_factory):
    """The digits 0-4 as a 5-class CSV of 64 pixel columns, and a CSV of 3 features."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("csv")
    d = load_digits()
    keep = d.target < 5
    with open(root / "five.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"p{i}" for i in range(64)] + ["label"])
        for x, y in zip(d.data[keep], d.target[keep], strict=True):
            w.writerow([*x.tolist(), f"d{y}"])
    with open(root / "small.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "b", "c", "label"])
        for i in range(200):
            w.writerow([i, i % 7, i % 3, f"c{i % 2}"])
    return root


def test_new_head_plus_lora_or_full(digits_study, csvs, cli):
    import json

    on = f"{{name: tabular, path: '{csvs / 'five.csv'}', target: label}}"
    cli("finetune", digits_study, "--on", on, "--methods", "full,lora:r=4", "--tokens", "4096",
        check=True)
    summary = json.loads((digits_study / "summary.json").read_text())
    fts = {f["name"]: f for f in summary["finetunes"]}
    assert sorted(fts) == sorted(f"r{r}-tabular-{m}" for r in (0, 1) for m in ("full", "lora-r4"))
    for f in fts.values():
        assert f["settings"]["new_head"] is True and f["task_spec"]["io"]["n_outputs"] == 5
        assert f["zero_shot_loss"] > f["val_loss"] and f["metrics"]["error"] < 0.5
    lora = next(f for f in fts.values() if f["of_rung"] == 1 and f["method"] == "lora")
    # the new head (hidden width x 5 + 5) trains fully beside the rank-4 factors
    assert lora["trainable_params"] > 4 * (64 + 1)
    assert lora["extra"]["merge_max_abs_diff"] <= 1e-5
    res = cli("recommend", digits_study, "--task", lora["task"], "--json", check=True)
    names = {m for m in json.loads(res.stdout)["frontier"]}
    assert names <= set(fts)  # no zero-shot rungs: without the new head they cannot score


def test_inputs_that_do_not_fit_are_refused(digits_study, csvs, cli):
    state = db_state(digits_study)
    on = f"{{name: tabular, path: '{csvs / 'small.csv'}', target: label}}"
    res = cli("finetune", digits_study, "--on", on)
    assert res.returncode == 2
    assert "vectors of 3 features" in res.stderr and "vectors of 64 features" in res.stderr
    assert "input kind and shape must match" in res.stderr
    assert db_state(digits_study) == state
