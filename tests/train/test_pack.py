"""Packing: K GPTs trained as one batched model train as each would alone through train_rung.

Tolerance: RTOL = 1e-5 relative on every step's training loss, every curve point's validation
loss and the final validation loss (fp32, CPU). A packed model starts bit for bit as its run alone
(same init, same batches, the same first loss) and its AdamW update is the same arithmetic, but
the batched GEMMs and the gradient norm sum in another order, so the gradients differ by fp32
rounding (~1e-8 absolute measured on the first step) and the difference grows over the steps.
Measured over these tests' 50 steps (bmm and vmap forwards alike): at most 3.3e-7 relative per
step, 1.4e-7 on validation; the largest seen while exploring was 1.8e-6 (another seed at lr =
3e-2), so 1e-5 leaves room for other CPUs' kernels without hiding a real difference.
Runs that really differ are far apart: another seed or another learning rate moves the losses by
more than 1e-2, which each test checks too, so a mix-up of models cannot pass.

The fp32 gap is rounding that training amplifies, and it grows with steps and learning rate: at
150 steps and lr 6e-3 (benchmarks/packing.py on CPU) it reached 2.5e-4, and train_rung against
itself with 1 thread and then 2 drifts the same way (5e-6 there). In float64 the gap does not
grow: the float64 test's run (150 steps, lr 3e-2) drifts by 2.6e-4 in fp32, and by 1.6e-7 in
float64, a few ulps of the loss, which BaseTask.loss still takes in fp32. What differs is the
order of sums, not the computation.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from scalelab.models import get_family
from scalelab.models.gpt import GPTConfig
from scalelab.records import RungPlan
from scalelab.spec import TrainSpec
from scalelab.tasks import get_task
from scalelab.tasks.base import Task
from scalelab.train.loop import TrainOutcome, train_rung
from scalelab.train.pack import (
    PackedGPT,
    StackedAdamW,
    _check_known_parameters,
    check_packable,
    clip_per_model,
    packable_groups,
    train_packed,
)

CPU = torch.device("cpu")
BLOCK = 16
FAMILY = get_family("gpt", block_size=BLOCK)
# The smallest sensible GPT: 2 layers (so the layer loop is exercised), 2 heads of width 4;
# 888 non-embedding parameters per layer.
SHAPE = GPTConfig(n_layer=2, d_model=8, n_head=2, block_size=BLOCK).to_dict()
STEPS, BATCH = 50, 8
TRAIN = TrainSpec(eval_every=10, eval_tokens=512, final_eval_tokens=2048,
                  checkpoint_every=10_000)
RTOL = 1e-5  # see the module docstring
APART = 1e-2  # relative gap that tells two different runs apart


@pytest.fixture(scope="module")
def task() -> Task:
    return get_task("pycode", context=BLOCK)


def _plan(seed: int, lr: float = 1e-2, shape: dict = SHAPE, steps: int = STEPS) -> RungPlan:
    units = BATCH * BLOCK
    return RungPlan(rung=seed, family="gpt", shape=shape, target_n=1e3, n_params=0,
                    n_nonembed=0, D=steps * units, unit="byte", steps=steps, batch_size=BATCH,
                    units_per_step=units, lr=lr, warmup_steps=5, seed=seed)


def _alone(plan: RungPlan, task: Task, folder: Path) -> tuple[list[float], TrainOutcome]:
    losses: list[float] = []
    out = train_rung(plan, task, TRAIN, CPU, folder, family=FAMILY,
                     on_progress=lambda step, loss: losses.append(loss))
    return losses, out


def _packed(plans: list[RungPlan], task: Task,
            forward: str = "bmm") -> tuple[list[list[float]], list[TrainOutcome]]:
    steps: list[list[float]] = []
    outs = train_packed(plans, task, TRAIN, CPU, family=FAMILY, forward=forward,
                        on_progress=lambda step, losses: steps.append(losses))
    return [list(col) for col in zip(*steps, strict=True)], outs


def _rel(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))


def _final_val(out: TrainOutcome, task: Task) -> float:
    return task.evaluate(out.model, CPU, TRAIN.final_eval_tokens)["loss"]


def _assert_same_run(packed: tuple[list[float], TrainOutcome],
                     alone: tuple[list[float], TrainOutcome], task: Task) -> None:
    (p_losses, p), (a_losses, a) = packed, alone
    assert (p.status, p.steps, p.tokens) == (a.status, a.steps, a.tokens)
    assert p_losses[0] == a_losses[0]  # same init and first batch: bit for bit
    assert _rel(p_losses, a_losses) <= RTOL
    assert [c.step for c in p.curve] == [c.step for c in a.curve]
    assert [c.lr for c in p.curve] == [c.lr for c in a.curve]  # the same schedule, exactly
    assert _rel([c.train_loss for c in p.curve], [c.train_loss for c in a.curve]) <= RTOL
    assert _rel([c.val_loss for c in p.curve], [c.val_loss for c in a.curve]) <= RTOL
    assert _rel([_final_val(p, task)], [_final_val(a, task)]) <= RTOL


@pytest.mark.parametrize("share_layers", [False, True])
def test_each_packed_model_trains_as_it_would_alone(task, tmp_path, share_layers):
    shape = {**SHAPE, "share_layers": share_layers}
    plans = [_plan(seed, shape=shape) for seed in (0, 1, 2)]
    losses, outs = _packed(plans, task)
    alone = [_alone(p, task, tmp_path / str(p.seed)) for p in plans]
    for k in range(3):
        _assert_same_run((losses[k], outs[k]), alone[k], task)
    # The comparison tells models apart: model 0 packed is not model 1 alone.
    assert _rel(losses[0][-10:], alone[1][0][-10:]) > APART
    assert outs[0].curve[-1].val_loss < math.log(256) - 1.5  # they learned


def test_each_packed_model_follows_its_own_learning_rate(task, tmp_path):
    # One seed, three learning rates: the lr alone separates the runs.
    plans = [_plan(0, lr) for lr in (1e-3, 1e-2, 3e-2)]
    losses, outs = _packed(plans, task)
    for k, plan in enumerate(plans):
        _assert_same_run((losses[k], outs[k]), _alone(plan, task, tmp_path / str(k)), task)
    finals = [o.curve[-1].val_loss for o in outs]
    assert all(abs(a - b) / b > APART for a, b in zip(finals, finals[1:], strict=False))


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def test_in_float64_packed_and_alone_agree_where_fp32_drifts(task, tmp_path, float64):
    plans = [_plan(0, lr=3e-2, steps=150), _plan(1, lr=1e-2, steps=150)]
    losses, outs = _packed(plans, task)
    assert outs[0].model.wte.weight.dtype == torch.float64
    for k, plan in enumerate(plans):
        a_losses, a = _alone(plan, task, tmp_path / str(k))
        # A few fp32 ulps (the loss is taken in fp32), where the fp32 run drifts to 2.6e-4.
        assert _rel(losses[k], a_losses) <= 1e-6
        assert _rel([c.val_loss for c in outs[k].curve], [c.val_loss for c in a.curve]) <= 1e-6


def test_a_diverging_model_stops_alone_and_the_others_go_on(task, tmp_path):
    plans = [_plan(0), _plan(1, lr=50.0)]
    losses, outs = _packed(plans, task)
    alone_ok = _alone(plans[0], task, tmp_path / "ok")
    _, alone_bad = _alone(plans[1], task, tmp_path / "bad")
    _assert_same_run((losses[0], outs[0]), alone_ok, task)
    assert outs[1].status == alone_bad.status == "diverged"
    assert outs[1].diverged_step == outs[1].steps < STEPS
    # lr = 50 drives both to NaN (step 15 here); rounding may move that step on another CPU.
    assert abs(outs[1].diverged_step - alone_bad.diverged_step) <= 5
    assert len(losses[1]) == STEPS  # its row kept stepping, unread, beside the others


def test_vmap_forward_gives_the_batched_forward_s_logits_and_gradients(task):
    plans = [_plan(seed) for seed in (0, 1, 2)]
    pack = PackedGPT.build(plans, FAMILY, CPU)
    gens = [torch.Generator().manual_seed(s) for s in (0, 1, 2)]
    x = torch.stack([task.batch(BATCH, g)[0] for g in gens])
    got = {}
    for how in ("bmm", "vmap"):
        pack.zero_grad()
        logits = pack.forward(x, how)
        pack.backward(logits.square().mean())
        got[how] = (logits.detach(), pack.grad.clone())
    torch.testing.assert_close(got["vmap"][0], got["bmm"][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["vmap"][1], got["bmm"][1], rtol=1e-4, atol=1e-8)
    assert got["bmm"][1].abs().sum() > 0


def test_stacked_adamw_is_torch_adamw_per_row_bit_for_bit():
    # The same gradients into both: packed rows with their own lr against one torch AdamW
    # (foreach, decay on matrices only, as make_optimizer groups them) per model.
    lrs = [1e-3, 2e-2]
    pack = PackedGPT.build([_plan(0, lr) for lr in lrs], FAMILY, CPU)
    models = [pack.unpack(k) for k in range(2)]
    opts = [torch.optim.AdamW(
        [{"params": [q for q in m.parameters() if q.dim() >= 2], "weight_decay": 0.1},
         {"params": [q for q in m.parameters() if q.dim() < 2], "weight_decay": 0.0}],
        lr=lr, betas=(TRAIN.beta1, TRAIN.beta2), foreach=True) for m, lr in zip(models, lrs,
                                                                             strict=True)]
    opt = StackedAdamW(pack, TRAIN.model_copy(update={"weight_decay": 0.1}))
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        pack.grad.copy_(torch.randn(pack.grad.shape, generator=gen) * 1e-2)
        opt.step(lrs)
        for k, (model, o) in enumerate(zip(models, opts, strict=True)):
            for name, q in model.named_parameters():
                q.grad = pack.params[name].grad[k].clone()
            o.step()
    for k, model in enumerate(models):
        for name, q in model.named_parameters():
            assert torch.equal(pack.params[name][k], q), name


def test_clipping_is_per_model():
    pack = PackedGPT.build([_plan(0), _plan(1)], FAMILY, CPU)
    pack.grad.copy_(torch.randn(pack.grad.shape, generator=torch.Generator().manual_seed(0)))
    pack.grad[1].mul_(1e-3)  # model 1's norm is under the limit, model 0's far over it
    before = pack.grad.clone()
    models = [pack.unpack(k) for k in range(2)]
    expected = []
    for k, model in enumerate(models):
        for name, q in model.named_parameters():
            q.grad = pack.params[name].grad[k].clone()
        expected.append(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
    norms = clip_per_model(pack, 1.0)
    torch.testing.assert_close(norms, torch.stack(expected), rtol=1e-6, atol=0)
    assert torch.linalg.vector_norm(pack.grad[0]) == pytest.approx(1.0, rel=1e-5)
    assert torch.equal(pack.grad[1], before[1])  # untouched by model 0's clipping


def test_unpacked_model_is_the_packed_row(task):
    plans = [_plan(seed) for seed in (0, 1)]
    pack = PackedGPT.build(plans, FAMILY, CPU)
    x = task.example_input(4)
    logits = pack.forward(x.expand(2, *x.shape))
    for k in range(2):
        model = pack.unpack(k)
        assert model.head.weight is model.wte.weight  # still tied
        torch.testing.assert_close(model(x), logits[k], rtol=1e-5, atol=1e-6)
    torch.manual_seed(1)
    fresh = FAMILY.build(SHAPE)  # init = family.build after torch.manual_seed(seed)
    for name, p in fresh.named_parameters():
        assert torch.equal(pack.params[name][1], p)


def test_plans_that_cannot_share_a_pack_are_refused():
    base = _plan(0)
    for other in (_plan(1, shape={**SHAPE, "d_model": 16, "n_head": 4}), _plan(1, steps=20),
                  dataclasses.replace(base, batch_size=4), dataclasses.replace(base, family="mlp")):
        with pytest.raises(ValueError):
            check_packable([base, other])
    with pytest.raises(ValueError):
        check_packable([])
    check_packable([base, _plan(1, lr=1e-2), dataclasses.replace(base, warmup_steps=0)])


def test_packable_groups_fills_packs_of_at_most_k_in_order():
    wide = {**SHAPE, "d_model": 16, "n_head": 4}
    plans = [_plan(0), _plan(1, shape=wide), _plan(2), _plan(3), _plan(4, shape=wide),
             dataclasses.replace(_plan(5), family="mlp")]
    groups = packable_groups(plans, max_k=2)
    assert [[p.seed for p in g] for g in groups] == [[0, 2], [1, 4], [3], [5]]
    for g in groups[:3]:
        check_packable(g)
    with pytest.raises(ValueError):
        packable_groups(plans, max_k=0)


def test_a_gpt_the_batched_forward_does_not_know_is_refused():
    cfg = GPTConfig.from_dict(SHAPE)
    names = [n for n, _ in FAMILY.build(SHAPE).named_parameters()]
    _check_known_parameters(cfg, names)
    with pytest.raises(ValueError, match="update PackedGPT"):
        _check_known_parameters(cfg, [*names, "blocks.0.attn.rotary.weight"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("forward", ["bmm", "vmap"])
def test_packed_on_cuda_trains_as_alone_in_bf16(task, tmp_path, forward):
    # bf16 autocast on both sides: agreement to bf16 rounding, not fp32's.
    cuda = torch.device("cuda")
    plans = [_plan(seed, steps=20) for seed in (0, 1)]
    outs = train_packed(plans, task, TRAIN, cuda, family=FAMILY, forward=forward)
    for plan, out in zip(plans, outs, strict=True):
        alone = train_rung(plan, task, TRAIN, cuda, tmp_path / f"{forward}{plan.seed}",
                           family=FAMILY)
        assert out.status == "done"
        assert out.curve[-1].val_loss == pytest.approx(alone.curve[-1].val_loss, rel=2e-2)
