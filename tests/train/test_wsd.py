"""The WSD schedule and its cool-down branches: the learning rate, the trunk's hand-off, and a
branch that equals the WSD run of its own D, interrupted or not."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from scalelab.ladder import plan_ladder
from scalelab.spec import parse_spec
from scalelab.study import resolve
from scalelab.train.checkpoint import latest_checkpoint
from scalelab.train.loop import lr_at, train_rung
from tests.helpers import tiny_spec

CPU = torch.device("cpu")


def _setup(**train):
    data = tiny_spec(train={"checkpoint_every": 40, **train})
    data["ladder"] = {"sizes": [3e3, 1.2e4], "tokens": [24_000, 36_000, 48_000]}
    spec = parse_spec(data)
    res = resolve(spec)
    plans = plan_ladder(spec, res.task, res.family)
    return spec, res, plans


@pytest.fixture(scope="module")
def setup():
    return _setup()


def _train(plan, spec, res, folder, **kw):
    return train_rung(plan, res.task, spec.train, CPU, folder, family=res.family, **kw)


@pytest.mark.parametrize("shape", ["1-sqrt", "linear"])
def test_wsd_warms_up_holds_then_decays_to_the_floor(setup, shape):
    _, _, plans = setup
    plan = max(plans, key=lambda p: p.steps)
    lrs = [lr_at(s, plan, 0.1, shape) for s in range(plan.steps)]
    start = plan.steps - plan.decay_steps
    assert plan.warmup_steps > 0 and lrs[plan.warmup_steps - 1] == pytest.approx(plan.lr)
    assert all(lr == plan.lr for lr in lrs[plan.warmup_steps:start])
    assert lrs[-1] == pytest.approx(0.1 * plan.lr)
    decay = lrs[start:]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    mid = plan.decay_steps // 2 - 1  # progress ~ 1/2 of the decay
    frac = (decay[mid] - 0.1 * plan.lr) / (0.9 * plan.lr)
    want = 1 - math.sqrt((mid + 1) / plan.decay_steps) if shape == "1-sqrt" \
        else 1 - (mid + 1) / plan.decay_steps
    assert frac == pytest.approx(want)


def test_cosine_plan_ignores_the_wsd_settings(setup):
    _, _, plans = setup
    plan = replace(plans[0], schedule="cosine")
    assert [lr_at(s, plan, 0.1, "linear") for s in range(plan.steps)] == \
        [lr_at(s, replace(plan, decay_steps=0), 0.1) for s in range(plan.steps)]


def _branch(plans):
    return next(p for p in plans if p.trunk is not None)


def _same(a, b):
    assert a.steps == b.steps
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    assert [(p.step, p.val_loss, p.train_loss) for p in a.curve] == \
        [(p.step, p.val_loss, p.train_loss) for p in b.curve]


def test_a_branch_from_the_trunk_is_the_wsd_run_of_its_own_d(setup, tmp_path):
    spec, res, plans = setup
    branch = _branch(plans)
    trunk = plans[branch.trunk]
    assert branch.branch_step % spec.train.checkpoint_every  # a hand-off, not a routine save
    alone = _train(branch, spec, res, tmp_path / "alone")
    _train(trunk, spec, res, tmp_path / "trunk",
           branch_saves={branch.branch_step: [tmp_path / "branch"]})
    handed = latest_checkpoint(tmp_path / "branch")
    assert handed is not None and handed.name == f"step-{branch.branch_step:08d}"
    steps_run = []
    from_trunk = _train(branch, spec, res, tmp_path / "branch",
                        on_progress=lambda step, loss: steps_run.append(step))
    assert steps_run[0] == branch.branch_step + 1  # it resumed from the hand-off
    _same(from_trunk, alone)


class Interrupt(Exception):
    pass


def test_a_branch_interrupted_mid_decay_resumes_to_the_same_result(setup, tmp_path):
    spec, res, plans = setup
    branch = _branch(plans)
    trunk = plans[branch.trunk]
    hand_off = {branch.branch_step: [tmp_path / "a", tmp_path / "b"]}
    _train(trunk, spec, res, tmp_path / "trunk", branch_saves=hand_off)
    full = _train(branch, spec, res, tmp_path / "a")
    stop = branch.steps - 3
    saved = 40 * (stop // 40)  # checkpoint_every 40: the last save before the stop
    assert branch.branch_step < saved < stop  # so the interruption falls mid-decay, after a save

    def stop_at(step, loss):
        if step == stop:
            raise Interrupt

    with pytest.raises(Interrupt):
        _train(branch, spec, res, tmp_path / "b", on_progress=stop_at)
    assert latest_checkpoint(tmp_path / "b").name == f"step-{saved:08d}"
    # A trunk run again (a rerun that had not recorded it) leaves the started branch alone.
    _train(trunk, spec, res, tmp_path / "trunk2", branch_saves=hand_off)
    assert latest_checkpoint(tmp_path / "b").name == f"step-{saved:08d}"
    _same(_train(branch, spec, res, tmp_path / "b"), full)


def test_the_benchmark_compares_every_matched_rung_and_the_compute(tmp_path):
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "wsd.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/wsd_vs_cosine.py", "--sizes", "3e3,1.2e4", "--tokens",
         "1e4,2e4,3e4", "--batch", "8", "--block", "32", "--eval-every", "25",
         "--final-eval-tokens", "4096", "--threads", "1", "--lr", "3e-3,6e-3", "--seeds", "2",
         "--jobs", "2", "--json", str(out)],
        cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    matched = result["matched"]
    assert len(matched) == 6 and len({(m["n_nonembed"], m["D"]) for m in matched}) == 6
    for m in matched:
        # each schedule's loss is its mean over the two seeds; the difference is of the means
        assert len(m["cosine_losses"]) == len(m["wsd_losses"]) == 2
        assert m["cosine"] == pytest.approx(sum(m["cosine_losses"]) / 2)
        assert m["wsd"] == pytest.approx(sum(m["wsd_losses"]) / 2)
        assert m["rel_diff"] == pytest.approx((m["wsd"] - m["cosine"]) / m["cosine"])
        paired = [(w - c) / c for c, w in zip(m["cosine_losses"], m["wsd_losses"], strict=True)]
        assert m["rel_diff_se"] == pytest.approx(abs(paired[0] - paired[1]) / 2)
    # Each schedule at its own best rate: the lower of its two mean losses at every (N, D).
    assert [b["lr"] for b in result["by_lr"]] == [3e-3, 6e-3]
    for i, m in enumerate(matched):
        per_lr = [b["matched"][i] for b in result["by_lr"]]
        assert all((b["n_nonembed"], b["D"]) == (m["n_nonembed"], m["D"]) for b in per_lr)
        assert m["cosine"] == min(b["cosine"] for b in per_lr)
        assert m["wsd"] == min(b["wsd"] for b in per_lr)
    # two branches per size: WSD trains each size's longest D plus 20% of the two others
    assert sum(m["wsd_branch"] for m in matched) == 4
    cos, wsd = result["cosine"], result["wsd"]
    assert cos["flops_spent"] == pytest.approx(cos["flops_if_independent"])
    per_size = {}
    for m in matched:
        per_size.setdefault(m["n_nonembed"], []).append(m)
    want = 0.0
    for group in per_size.values():
        group.sort(key=lambda m: m["D"])
        want += group[-1]["steps"] * group[-1]["flops_per_step"]
        want += sum(round(0.2 * m["steps"]) * m["flops_per_step"] for m in group[:-1])
    assert wsd["flops_spent"] == pytest.approx(2 * want)  # both seeds
    assert result["compute_ratio"] == pytest.approx(wsd["flops_spent"] / cos["flops_spent"])
    assert result["loss_target_met"] == (result["max_abs_rel_diff"] <= 0.01)
    assert "compute spent" in proc.stdout


def test_the_benchmark_refuses_bad_input_with_exit_2(tmp_path):
    root = Path(__file__).resolve().parents[2]
    for bad, says in ((["--tokens", "1e5"], "need 2 or more"), (["--seeds", "0"], "--seeds"),
                      (["--sizes", "1e4,1e4"], "same shape")):
        proc = subprocess.run([sys.executable, "benchmarks/wsd_vs_cosine.py", *bad,
                               "--json", str(tmp_path / "x.json")],
                              cwd=root, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "x.json").exists()
