"""The trainer's speed settings: precision, compilation, fused AdamW, the batched loss reads, NVML
energy, and the `gpu` preset."""

import sys
import types

import pytest
import torch

from scalelab.errors import UserError
from scalelab.ladder import plan_ladder
from scalelab.models import get_family
from scalelab.spec import parse_spec, preset_spec
from scalelab.study import resolve
from scalelab.tasks import get_task
from scalelab.tasks.base import uses_bf16
from scalelab.train import loop, measure
from scalelab.train.loop import compiles, make_optimizer, train_rung
from tests.helpers import tiny_spec

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # only as a value: nothing here runs on it
FAMILY = get_family("gpt", block_size=32)


@pytest.fixture(scope="module")
def task():
    return get_task("pycode", context=32)


def _run(task, tmp_path, name, **train):
    spec = parse_spec(tiny_spec(train={"tokens": 16_000, **train}))
    plan = plan_ladder(spec, task, FAMILY)[0]
    losses: list[tuple[int, float]] = []
    out = train_rung(plan, task, spec.train, CPU, tmp_path / name, family=FAMILY,
                     on_progress=lambda step, loss: losses.append((step, loss)))
    return out, losses


def test_auto_settings_are_bf16_and_compile_on_cuda_only():
    t = parse_spec({}).train
    assert (t.precision, t.compile) == ("auto", "auto")
    assert not uses_bf16(CPU) and uses_bf16(CUDA)
    assert uses_bf16(CPU, "bf16") and not uses_bf16(CUDA, "fp32")
    assert not compiles(t, CPU) and compiles(t, CUDA)
    forced = parse_spec({"train": {"compile": True}}).train
    assert compiles(forced, CPU)


def test_bad_precision_is_one_clear_error():
    with pytest.raises(Exception, match="precision"):
        parse_spec({"train": {"precision": "fp8"}})


def test_optimizer_is_fused():
    model = FAMILY.build(FAMILY.shape_for(3e3, get_task("pycode", context=32).io))
    opt = make_optimizer(model, parse_spec({}).train, 1e-3)
    assert all(g["fused"] for g in opt.param_groups)


def test_every_step_is_reported_once_in_order_though_read_in_groups(task, tmp_path):
    out, losses = _run(task, tmp_path, "a")
    assert [s for s, _ in losses] == list(range(1, out.steps + 1))
    assert out.steps > loop.LOSS_READ_EVERY  # the grouping was exercised
    # The curve's interval means are the means of exactly those per-step losses.
    first = out.curve[0]
    window = [loss for step, loss in losses if step <= first.step]
    assert first.train_loss == pytest.approx(sum(window) / len(window), rel=1e-12)


def test_bf16_on_cpu_trains_and_rounds_differently(task, tmp_path):
    fp32, _ = _run(task, tmp_path, "fp32", precision="fp32")
    auto, _ = _run(task, tmp_path, "auto")
    bf16, _ = _run(task, tmp_path, "bf16", precision="bf16")
    assert [p.val_loss for p in auto.curve] == [p.val_loss for p in fp32.curve]
    assert [p.val_loss for p in bf16.curve] != [p.val_loss for p in fp32.curve]
    # Same seed and batches: bf16 lands within a few percent of fp32.
    assert bf16.curve[-1].val_loss == pytest.approx(fp32.curve[-1].val_loss, rel=0.05)


@pytest.mark.slow
def test_compiled_training_matches_eager_within_rounding(task, tmp_path):
    torch._dynamo.reset()
    eager, eager_losses = _run(task, tmp_path, "eager", compile=False)
    compiled, compiled_losses = _run(task, tmp_path, "compiled", compile=True)
    # Inductor fuses and reorders float arithmetic, so not bit-equal; the first steps agree to
    # rounding and the run ends at the same loss to well under a percent.
    assert compiled_losses[0][1] == pytest.approx(eager_losses[0][1], rel=1e-5)
    assert compiled.curve[-1].val_loss == pytest.approx(eager.curve[-1].val_loss, rel=5e-3)


def _fake_nvml(monkeypatch, readings: list[int], fail: bool = False) -> None:
    """A stand-in for nvidia-ml-py whose energy counter returns `readings` (millijoules)."""
    counter = iter(readings)

    def total_energy(handle):
        if fail:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return next(counter)

    fake = types.SimpleNamespace(nvmlInit=lambda: None,
                                 nvmlDeviceGetHandleByIndex=lambda i: ("gpu", i),
                                 nvmlDeviceGetTotalEnergyConsumption=total_energy)
    monkeypatch.setitem(sys.modules, "pynvml", fake)


def test_energy_is_the_nvml_counter_difference_in_joules(monkeypatch):
    _fake_nvml(monkeypatch, [1_000_000, 1_004_500])
    with measure.EnergyMeter(CUDA) as meter:
        pass
    assert meter.joules == pytest.approx(4.5)


def test_no_energy_number_on_cpu_or_without_a_counter(monkeypatch):
    _fake_nvml(monkeypatch, [1, 2])
    with measure.EnergyMeter(CPU) as cpu:
        pass
    assert cpu.joules is None
    _fake_nvml(monkeypatch, [], fail=True)
    with measure.EnergyMeter(CUDA) as unsupported:
        pass
    assert unsupported.joules is None


def test_gpu_preset_plans_seven_rungs_to_100m_with_growing_budgets():
    spec = preset_spec("gpu")
    assert spec.device == "cuda" and spec.family.options["block_size"] == 256
    res = resolve(spec)
    plans = plan_ladder(spec, res.task, res.family)
    assert len(plans) == 7
    assert 0.8e6 < plans[0].n_nonembed < 1.2e6 and 0.8e8 < plans[-1].n_nonembed < 1.2e8
    ds = [p.D for p in plans]
    assert ds == sorted(ds) and 7e8 < ds[-1] < 9e8


def test_unknown_preset_is_one_clear_error():
    with pytest.raises(UserError, match=r"^unknown preset 'tpu' \(choose from default, gpu\)$"):
        preset_spec("tpu")
