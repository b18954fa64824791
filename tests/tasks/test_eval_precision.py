"""Evaluation runs under the study's `train.precision`, the same autocast rule as training."""

from __future__ import annotations

import pytest
import torch

from scalelab.ladder import plan_ladder
from scalelab.models import get_family
from scalelab.spec import parse_spec
from scalelab.tasks import base, get_task
from scalelab.tasks.digits import DigitsTask
from scalelab.train import measure
from scalelab.train.loop import train_rung
from tests.helpers import tiny_spec

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # only the device's type is read: no GPU is needed


@pytest.mark.parametrize(("device", "precision", "bf16"), [
    (CPU, "auto", False), (CPU, "fp32", False), (CPU, "bf16", True),
    (CUDA, "auto", True), (CUDA, "fp32", False), (CUDA, "bf16", True),
])
def test_autocast_rule(device, precision, bf16):
    assert base.uses_bf16(device, precision) is bf16


@pytest.mark.parametrize(("precision", "enabled"), [("auto", False), ("fp32", False),
                                                    ("bf16", True)])
def test_cpu_autocast_context(precision, enabled):
    # "auto" on CPU stays fp32: the default study's evaluation is what it was.
    ctx = base.autocast(CPU, precision)
    assert ctx.device == "cpu" and ctx.fast_dtype == torch.bfloat16
    assert ctx._enabled is enabled


@pytest.fixture
def recorded(monkeypatch):
    """Every precision `tasks.base.autocast` is asked for (the context itself still runs)."""
    calls: list[str] = []
    real = base.autocast

    def spy(device: torch.device, precision: str = "auto"):
        calls.append(precision)
        return real(device, precision)

    monkeypatch.setattr(base, "autocast", spy)
    return calls


def _digits_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))


def test_evaluate_uses_the_precision_it_is_given(recorded):
    task = DigitsTask(DigitsTask.Options(), None)
    model = _digits_model()
    fp32 = task.evaluate(model, CPU, 300, precision="fp32")
    assert recorded and set(recorded) == {"fp32"}
    recorded.clear()
    bf16 = task.evaluate(model, CPU, 300, precision="bf16")
    assert set(recorded) == {"bf16"}
    assert bf16["loss"] != fp32["loss"]  # bf16 really ran: the matmuls rounded differently
    assert task.evaluate(model, CPU, 300)["loss"] == fp32["loss"]  # CPU auto: fp32, unchanged


def test_measure_model_evaluates_at_the_study_precision(recorded):
    task = DigitsTask(DigitsTask.Options(), None)
    out = measure.measure_model(_digits_model(), task, CPU, 200, [1], 3, "bf16",
                                train_loss=True)
    assert out["train_loss"] is not None
    assert recorded.count("bf16") == len(recorded) == 2 * len(range(0, 200, base.EVAL_BATCH))


def test_training_validates_at_the_study_precision(recorded, tmp_path):
    spec = parse_spec(tiny_spec(train={"tokens": 4096, "eval_every": 4, "eval_tokens": 512,
                                       "precision": "fp32"}))
    family = get_family("gpt", block_size=32)
    task = get_task("pycode", context=32)
    plan = plan_ladder(spec, task, family)[0]
    train_rung(plan, task, spec.train, CPU, tmp_path, family=family)
    assert recorded and set(recorded) == {"fp32"}
