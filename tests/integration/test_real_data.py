"""A user's first `scalelab run SPEC --quick` on real data of three kinds, with a spec of only task
and family: every rung finishes (none `diverged`), a law is fitted, and the stored spec says
which budget and learning rate were chosen for the data (ladder.resolve_train).

Data from installed packages (tests/integration/real_data.py): a 20,190-row regression CSV with
string categories, a 300-row classification CSV with empty cells, a residual-MLP factory on
`digits`; and a classification CSV whose loss falls little (statsmodels' `fair`, `fair_csv`)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from scalelab.ladder import LM_LR, VECTOR_LR, default_epochs
from tests.helpers import scalelab
from tests.integration.real_data import RESIDUAL_MLP, breast_cancer_csv, rand_hie_csv


def fair_csv(path: Path) -> Path:
    """statsmodels' `fair` (6,366 rows, 8 numeric columns) with the target `had_affair`
    (affairs > 0, a third of the rows)."""
    from statsmodels.datasets import fair

    data = fair.load_pandas().data
    features = [c for c in data.columns if c != "affairs"]
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*features, "had_affair"])
        for row in data.itertuples(index=False):
            out.writerow([*(f"{getattr(row, c):g}" for c in features), int(row.affairs > 0)])
    return path


def _quick(tmp_path: Path, spec: dict) -> dict:
    """Run the spec through the real CLI with --quick; the study's summary.json."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "study"
    proc = scalelab("run", path, "--quick", "--out", out, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "summary.json").read_text())


def _check_study(summary: dict, train_rows: int) -> dict:
    """Every rung done, a law fitted; the stored train section with the chosen budget."""
    rungs = summary["rungs"]
    assert [r["status"] for r in rungs] == ["done"] * len(rungs), \
        [r.get("diverged_reason") for r in rungs]
    law = summary["fits"][0]
    assert (law["y"], law["x"]) == ("val_loss", "n_nonembed")
    assert all(math.isfinite(v) for v in law["params"].values())
    train = summary["study"]["spec"]["train"]
    epochs = default_epochs(train_rows)
    assert train["tokens"] == epochs * train_rows
    assert {r["D"] for r in rungs} == {math.ceil(train["tokens"] / 16) * 16}
    assert train["lr"] == VECTOR_LR != LM_LR
    return train


def test_small_classification_csv_with_empty_cells(tmp_path):
    csv = breast_cancer_csv(tmp_path / "cancer.csv", rows=300)
    summary = _quick(tmp_path, {"task": {"name": "tabular", "path": str(csv),
                                         "target": "diagnosis"},
                                "family": {"name": "mlp"}})
    train_rows = summary["study"]["corpus"]["train_rows"]
    assert train_rows == 240
    _check_study(summary, train_rows)
    # 100 epochs (the most a small table gets), not the 1.6M examples (6,700 epochs) the
    # language model's budget gave it.
    assert max(r["D"] for r in summary["rungs"]) < 25_000


@pytest.mark.slow
def test_large_regression_csv_with_categories(tmp_path):
    csv = rand_hie_csv(tmp_path / "hie.csv")
    summary = _quick(tmp_path, {"task": {"name": "tabular", "path": str(csv),
                                         "target": "mdvis"},
                                "family": {"name": "mlp"}})
    task = summary["study"]["corpus"]
    assert task["rows"] == 20_190 and task["objective"] == "regression"
    assert task["categorical_columns"] == ["deductible", "health"]
    _check_study(summary, task["train_rows"])
    assert default_epochs(task["train_rows"]) == 3  # a large table: a few passes


@pytest.mark.slow
def test_custom_residual_mlp_on_digits(tmp_path):
    (tmp_path / "resmlp.py").write_text(RESIDUAL_MLP)
    summary = _quick(tmp_path, {"task": {"name": "digits"},
                                "family": {"name": "custom", "factory": "resmlp:make"}})
    _check_study(summary, summary["study"]["corpus"]["train_rows"])


@pytest.mark.slow
def test_classification_csv_whose_loss_falls_little(tmp_path):
    """A hard target (the loss falls about 14%, 0.60 to 0.52): its interval means wobble by
    several standard errors, and a short last interval by more; the guard before stopped 2 of
    the 4 rungs as diverged (train/diverge.py)."""
    path = fair_csv(tmp_path / "fair.csv")
    summary = _quick(tmp_path, {"task": {"name": "tabular", "path": str(path),
                                         "target": "had_affair"},
                                "family": {"name": "mlp"}})
    task = summary["study"]["corpus"]
    assert task["rows"] == 6366 and task["objective"] == "classification"
    _check_study(summary, task["train_rows"])
