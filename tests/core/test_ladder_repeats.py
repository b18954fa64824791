"""Seed repeats in the ladder: `ladder.repeats` and `repeats_below`, and k-fold tasks."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalelab.errors import UserError
from scalelab.ladder import plan_ladder
from scalelab.spec import parse_spec
from scalelab.study import resolve

ROOT = Path(__file__).resolve().parents[2]
SIZES = [1.0e2, 3.0e2, 1.0e3, 3.0e3]
MLP = {"task": {"name": "digits"}, "family": {"name": "mlp", "depth": 2},
       "ladder": {"sizes": SIZES}, "train": {"seed": 7}}


def _plans(data: dict):
    spec = parse_spec(data)
    res = resolve(spec)
    return plan_ladder(spec, res.task, res.family)


def test_repeats_plan_every_size_k_times_with_their_own_seeds():
    once = _plans(MLP)
    thrice = _plans({**MLP, "ladder": {"sizes": SIZES, "repeats": 3}})
    assert [(p.target_n, p.repeat) for p in thrice] == [(s, r) for s in SIZES for r in range(3)]
    assert [p.rung for p in thrice] == list(range(12))
    # seed + size index + repeat * sizes: repeat 0 is the ladder without repeats, none shared
    assert [p.seed for p in thrice] == [7 + i + 4 * r for i in range(4) for r in range(3)]
    assert [p.seed for p in thrice if p.repeat == 0] == [p.seed for p in once]
    assert len({p.key for p in thrice}) == 12
    # the repeats of a size are the same rung otherwise
    for a, b in zip(thrice[::3], thrice[1::3], strict=True):
        assert (a.shape, a.n_nonembed, a.D, a.steps, a.lr) == (b.shape, b.n_nonembed, b.D,
                                                                b.steps, b.lr)


def test_repeats_below_a_size():
    plans = _plans({**MLP, "ladder": {"sizes": SIZES, "repeats": 2, "repeats_below": 1.0e3}})
    assert [(p.target_n, p.repeat) for p in plans] == [
        (1e2, 0), (1e2, 1), (3e2, 0), (3e2, 1), (1e3, 0), (3e3, 0)]


def test_repeats_below_needs_repeats():
    with pytest.raises(UserError, match="repeats_below needs repeats of 2 or more"):
        parse_spec({"ladder": {"repeats_below": 1e5}})
    with pytest.raises(UserError, match="ladder.repeats"):
        parse_spec({"ladder": {"repeats": 0}})


def test_k_fold_tasks_keep_their_folds_and_refuse_seed_repeats(monkeypatch):
    monkeypatch.chdir(ROOT)
    task = {"name": "tabular", "path": "examples/data/diabetes.csv", "target": "progression",
            "folds": 3}
    folds = _plans({**MLP, "task": task})
    assert [(p.target_n, p.repeat) for p in folds] == [(s, f) for s in SIZES for f in range(3)]
    assert [p.seed for p in folds] == [7 + i for i in range(4) for _ in range(3)]
    with pytest.raises(UserError) as err:
        _plans({**MLP, "task": task, "ladder": {"sizes": SIZES, "repeats": 2}})
    assert str(err.value) == ("ladder.repeats: the task's 3 folds already train every size 3 "
                              "times (the folds are its repeats); drop ladder.repeats or the "
                              "task's folds")
