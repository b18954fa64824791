"""Every task x family pairing of examples/ gives a complete study through the real CLI: a fitted
law with an interval, a holdout, the train/validation gap, and for classifiers the error rate.

Each example spec runs shrunken (smaller ladder, fewer units) so the whole file stays within a
few minutes on 2 cores; everything else (task, family, options) is the example's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from scalelab.spec import resolve_paths
from tests.helpers import scalelab, write_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

SHRINK = {"measure": {"latency_repeats": 3, "threads": 1}, "fit": {"bootstrap": 50},
          "device": "cpu"}
# example -> (sizes, units per rung, objective)
CASES = {
    "text-folder": ([2.0e3, 6.0e3, 2.0e4, 5.0e4], 24_000, "lm"),
    "text-bpe": ([2.0e3, 6.0e3, 2.0e4, 5.0e4], 12_000, "lm"),
    "tabular-classification": ([3.0e2, 1.0e3, 3.0e3, 1.0e4], 2_000, "classification"),
    "tabular-regression": ([1.0e2, 3.0e2, 1.0e3, 3.0e3], 1_500, "regression"),
    "digits-mlp": ([1.0e3, 3.0e3, 1.0e4, 3.0e4], 8_000, "classification"),
    "digits-cnn": ([1.0e3, 3.0e3, 1.0e4, 3.0e4], 4_000, "classification"),
    "custom-factory": ([1.0e3, 3.0e3, 1.0e4, 3.0e4], 8_000, "classification"),
}


def shrunken(name: str, tmp_path: Path) -> Path:
    spec = resolve_paths(yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text()), EXAMPLES)
    sizes, units, _ = CASES[name]
    spec["ladder"] = {"sizes": sizes}
    spec["train"].update(tokens=units, eval_every=25, checkpoint_every=100)
    for key, value in SHRINK.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return write_spec(tmp_path / f"{name}.yaml", spec)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_example_gives_a_complete_study(name, tmp_path):
    spec = shrunken(name, tmp_path)
    out = tmp_path / "study"
    # The shrunken spec lives in tmp_path: its relative paths (a CSV, the factory's module)
    # are the example's own, resolved from examples/, whatever the working directory.
    scalelab("run", spec, "--out", out, cwd=tmp_path, check=True)
    summary = json.loads((out / "summary.json").read_text())
    objective = CASES[name][2]
    assert summary["study"]["corpus"]["objective"] == objective
    rungs = summary["rungs"]
    n_folds = 5 if name == "tabular-regression" else 1
    assert len(rungs) == 4 * n_folds and all(r["status"] == "done" for r in rungs)
    assert all(r["train_loss"] is not None and r["val_loss"] is not None for r in rungs)
    loss_fit = next(f for f in summary["fits"] if f["y"] == "val_loss")
    assert all(loss_fit["intervals"][k] is not None for k in ("E", "A", "alpha"))
    assert loss_fit["holdout"] is not None
    if objective == "classification":
        assert all(0 <= r["val_error"] <= 1 for r in rungs)
        assert any(f["y"] == "val_error" for f in summary["fits"])
        assert all(r["val_bpb"] is None for r in rungs)
    elif objective == "regression":
        assert all(r["val_rmse"] > 0 and r["val_bpb"] is None for r in rungs)
        assert sorted({r["rung"] for r in rungs}) == list(range(20))
    else:
        assert all(r["val_bpb"] is not None for r in rungs)
    html = (out / "report.html").read_text()
    assert "<svg" in html
    if name == "text-bpe":
        assert (out / "tokenizer.json").is_file()
        assert summary["study"]["corpus"]["unit"] == "token"
