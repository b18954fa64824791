"""Defaults that fit the data (ladder.resolve_train) and partial spec files (spec.load_spec):
what a spec that leaves things out trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scalelab.ladder import (
    LM_LR,
    MAX_EPOCHS,
    MIN_EPOCHS,
    TEXT_UNITS,
    VECTOR_LR,
    default_epochs,
    plan_ladder,
    resolve_train,
)
from scalelab.models import get_family
from scalelab.spec import base_note, default_spec, load_spec, parse_spec, quick_spec
from scalelab.tasks import get_task
from tests.integration.real_data import breast_cancer_csv


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_epochs_follow_the_size_of_the_table():
    assert default_epochs(275) == MAX_EPOCHS  # 344 rows, 80% train: capped, not 4,600 epochs
    assert default_epochs(1437) == 21  # digits' train split: ~30k examples
    assert default_epochs(43_000) == MIN_EPOCHS  # a 54k-row table: a few passes


def test_a_small_table_without_a_budget_gets_epochs_and_the_vector_rate(tmp_path):
    csv = breast_cancer_csv(tmp_path / "t.csv", rows=344)
    spec = parse_spec({"task": {"name": "tabular", "path": str(csv), "target": "diagnosis"},
                       "family": {"name": "mlp"}})
    task = get_task("tabular", path=str(csv), target="diagnosis")
    family = get_family("mlp")
    chosen = resolve_train(spec, task, family).train
    rows = task.train_units
    assert (chosen.tokens, chosen.lr) == (MAX_EPOCHS * rows, VECTOR_LR)
    # --quick keeps the table's own budget: every rung 100 epochs, not 1.6M examples.
    plans = plan_ladder(quick_spec(spec), task, family)
    assert {p.D for p in plans} == {-(-MAX_EPOCHS * rows // 16) * 16}
    assert all(p.D / rows < MAX_EPOCHS + 1 for p in plans)
    assert resolve_train(resolve_train(spec, task, family), task, family).train == chosen


def test_text_gets_the_language_model_defaults_and_the_default_study_its_own():
    task, family = get_task("pycode", context=64), get_family("gpt", block_size=64)
    chosen = resolve_train(parse_spec({}), task, family).train
    assert (chosen.tokens, chosen.lr) == (TEXT_UNITS, LM_LR)
    # The default preset sets its budget and rate: nothing is chosen for it.
    default = default_spec()
    assert resolve_train(default, task, family) is default


def test_a_partial_spec_starts_from_the_default_study(tmp_path):
    path = _write(tmp_path, {"train": {"seed": 1}})
    default = default_spec()
    expected = default.model_copy(update={"train": default.train.model_copy(
        update={"seed": 1})})
    assert load_spec(path) == expected
    assert "starts from the default study" in base_note(path)


def test_a_budget_key_replaces_the_default_studys_budget_rule(tmp_path):
    spec = load_spec(_write(tmp_path, {"train": {"tokens": 1_000_000}}))
    assert (spec.train.tokens, spec.train.tokens_exponent) == (1_000_000, 0.0)
    assert spec.ladder == default_spec().ladder and spec.train.beta2 == 0.95


@pytest.mark.parametrize("data", [
    {"ladder": {"sizes": [1e4, 2e4]}, "train": {"seed": 1}},
    {"task": {"name": "digits"}, "family": {"name": "mlp"}},
])
def test_a_spec_with_its_own_ladder_or_task_starts_from_the_field_defaults(tmp_path, data):
    path = _write(tmp_path, data)
    assert load_spec(path) == parse_spec(data)
    assert base_note(path) is None
