"""A task declares its metrics (`Metric`); runs.csv, the report, `scalelab show` and the variants
table take their columns from the declarations."""

from __future__ import annotations

import pytest

from scalelab import study
from scalelab.cli.study import _columns
from scalelab.report.compression import _metric_columns
from scalelab.report.html import _task_view
from scalelab.tasks import REGISTRY, declared_metrics
from scalelab.tasks.base import Metric
from scalelab.tasks.digits import DigitsTask

F1 = Metric("f1", "val F1", "macro", "F1", ".3f")


class F1Digits(DigitsTask):
    """The digits task with one more metric: all a new metric needs is its declaration here
    (and its value in `evaluate`)."""

    METRICS = {**DigitsTask.METRICS, "classification": (*DigitsTask.METRICS["classification"],
                                                         F1)}


@pytest.fixture
def f1_registered(monkeypatch):
    monkeypatch.setitem(REGISTRY, "f1digits", f"{__name__}:F1Digits")
    declared_metrics.cache_clear()
    yield
    monkeypatch.undo()
    declared_metrics.cache_clear()


def test_built_in_columns_are_those_runs_csv_always_had():
    assert [m.name for m in declared_metrics()] == ["bpb", "error", "accuracy", "rmse"]
    cols = study.run_columns()
    i = cols.index("train_loss")
    assert cols[i + 1:i + 5] == ("val_error", "val_accuracy", "val_rmse", "repeat")
    assert cols.index("val_bpb") == cols.index("val_loss") + 1
    summary = {"variants": [{"extra": {"metrics": {"bpb": 1.0, "error": 0.1, "accuracy": 0.9,
                                                   "rmse": 2.0}}}]}
    assert _metric_columns(summary) == [("error", "val error", ".2%"), ("rmse", "val RMSE", ".4g")]


def test_a_declared_metric_reaches_every_table(f1_registered):
    assert F1 in declared_metrics()
    cols = study.run_columns()
    assert cols[cols.index("val_rmse") + 1] == "val_f1"
    corpus = {"objective": "classification", "unit": "example",
              "metrics": ["accuracy", "error", "f1"]}
    view = _task_view({"corpus": corpus})
    assert [(c["key"], c["head"], c["sub"]) for c in view["columns"]] == [
        ("val_error", "val error", "rate"), ("val_accuracy", "val", "accuracy"),
        ("val_f1", "val F1", "macro")]
    assert _columns({"study": {"corpus": corpus}})[1] == [("val_error", "error"),
                                                          ("val_f1", "F1")]
    summary = {"variants": [{"extra": {"metrics": {"error": 0.1, "accuracy": 0.9, "f1": 0.8}}}]}
    assert _metric_columns(summary) == [("error", "val error", ".2%"), ("f1", "val F1", ".3f")]
    row = study._rung_summary({"rung": 0, "metrics": {"error": 0.1, "f1": 0.8},
                               "latency_ms": {}})
    assert row["val_f1"] == 0.8 and row["val_error"] == 0.1 and row["val_rmse"] is None


def test_a_task_reports_the_names_it_declares():
    task = DigitsTask(DigitsTask.Options(), None)
    assert task.metrics == ("accuracy", "error")  # as stored with every classification study
    assert F1Digits.METRICS["classification"][-1] is F1
