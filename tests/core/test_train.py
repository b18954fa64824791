"""The trainer on real data: learning, schedule, checkpoint/resume determinism, divergence."""

import math

import pytest
import torch

from scalelab.ladder import plan_ladder
from scalelab.models import get_family
from scalelab.spec import parse_spec
from scalelab.tasks import get_task
from scalelab.train.checkpoint import latest_checkpoint
from scalelab.train.loop import lr_at, train_rung
from tests.helpers import tiny_spec

CPU = torch.device("cpu")
FAMILY = get_family("gpt", block_size=32)


@pytest.fixture(scope="module")
def task():
    return get_task("pycode", context=32)


def _plan(spec):
    return plan_ladder(spec, get_task("pycode", context=32), FAMILY)[0]


def _train(plan, task, spec, folder, **kw):
    return train_rung(plan, task, spec.train, CPU, folder, family=FAMILY, **kw)


def test_schedule_warms_up_then_decays_to_the_floor():
    spec = parse_spec(tiny_spec(train={"tokens": 64_000, "warmup_frac": 0.1}))
    plan = _plan(spec)
    lrs = [lr_at(s, plan, 0.1) for s in range(plan.steps)]
    peak = lrs.index(max(lrs))
    assert peak == plan.warmup_steps - 1 or peak == plan.warmup_steps
    assert max(lrs) == pytest.approx(plan.lr)
    assert lrs[-1] == pytest.approx(0.1 * plan.lr, rel=0.01)
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:], strict=False))


def test_training_lowers_validation_loss(task, tmp_path):
    spec = parse_spec(tiny_spec(train={"tokens": 48_000}))
    plan = _plan(spec)
    torch.manual_seed(plan.seed)
    from scalelab.models import gpt

    untrained = task.evaluate(gpt.build(gpt.GPTConfig.from_dict(plan.shape)), CPU, 4096)["loss"]
    out = _train(plan, task, spec, tmp_path / "ck")
    trained = task.evaluate(out.model, CPU, 4096)["loss"]
    assert out.status == "done" and out.steps == plan.steps
    assert untrained > math.log(256) - 0.3  # about uniform over bytes at init
    assert trained < untrained - 1.5
    assert [p.step for p in out.curve] == sorted(p.step for p in out.curve)


class Interrupt(Exception):
    pass


def test_resume_after_interruption_reproduces_the_uninterrupted_run(task, tmp_path):
    # 50 steps, evaluated at 25 and 50: the resumed run evaluates again at 25 from its restart.
    spec = parse_spec(tiny_spec(train={"checkpoint_every": 20, "tokens": 12_800}))
    plan = _plan(spec)
    assert plan.steps == 50
    full = _train(plan, task, spec, tmp_path / "a")

    def stop_at(step, loss):
        if step == 30:  # after the checkpoint of step 20, mid-way to the next
            raise Interrupt

    with pytest.raises(Interrupt):
        _train(plan, task, spec, tmp_path / "b", on_progress=stop_at)
    assert latest_checkpoint(tmp_path / "b").name == "step-00000020"
    resumed = _train(plan, task, spec, tmp_path / "b")
    assert resumed.steps == full.steps
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    assert [p.val_loss for p in resumed.curve] == [p.val_loss for p in full.curve]


def test_exploding_learning_rate_is_caught_as_divergence(task, tmp_path):
    spec = parse_spec(tiny_spec(train={"lr": 50.0, "warmup_frac": 0.0, "eval_every": 5}))
    out = _train(_plan(spec), task, spec, tmp_path / "ck")
    assert out.status == "diverged"
    assert out.diverged_step is not None and out.diverged_step < _plan(spec).steps
    assert "loss" in out.diverged_reason


def test_nan_loss_is_caught_at_its_step(task, tmp_path, monkeypatch):
    spec = parse_spec(tiny_spec())
    plan = _plan(spec)
    from scalelab.tasks import base

    real = base.F.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 7 else loss

    monkeypatch.setattr(base.F, "cross_entropy", poisoned)
    out = _train(plan, task, spec, tmp_path / "ck")
    assert out.status == "diverged" and out.diverged_step == 7
    assert "non-finite" in out.diverged_reason
