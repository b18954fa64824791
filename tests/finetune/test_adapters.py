"""PEFT on a family's model: target layers, the refusals, and that LoRA (and IA3) change only
their own weights, trained with the study's own loop."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from scalelab.errors import UserError
from scalelab.finetune import adapters
from scalelab.finetune.methods import parse_method
from scalelab.models.gpt import GPT, GPTConfig
from scalelab.records import RungPlan
from scalelab.spec import TrainSpec
from scalelab.tasks import get_task
from scalelab.train.loop import train_rung


def gpt(n_layer: int = 2, d: int = 32) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer, d, d // 16, block_size=16, vocab_size=256))


@pytest.fixture(scope="module")
def text_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    for i in range(6):
        (root / f"f{i}.py").write_text(f"def f(x):\n    return x * {i}  # comment\n" * 200)
    return get_task("text", context=16, path=str(root))


def test_targets_all_attn_mlp_names_and_the_ia3_default():
    m = gpt()
    all_ = adapters.resolve_targets(m, parse_method("lora:r=4"), "rung 0").modules
    assert all_ == [f"blocks.{i}.{p}" for i in (0, 1)
                    for p in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")]  # no head
    attn = adapters.resolve_targets(m, parse_method("lora:r=4:targets=attn"), "r").modules
    assert attn == ["blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.1.attn.qkv",
                    "blocks.1.attn.proj"]
    mlp = adapters.resolve_targets(m, parse_method("lora:r=4:targets=mlp"), "r").modules
    assert all(".mlp." in n for n in mlp) and len(mlp) == 4
    named = adapters.resolve_targets(m, parse_method("lora:r=4:targets=qkv+mlp.fc"), "r")
    assert named.modules == ["blocks.0.attn.qkv", "blocks.1.attn.qkv", "blocks.0.mlp.fc",
                             "blocks.1.mlp.fc"]
    ia3 = adapters.resolve_targets(m, parse_method("ia3"), "r")
    assert ia3.modules == ["blocks.0.attn.qkv", "blocks.1.attn.qkv", "blocks.0.mlp.proj",
                           "blocks.1.mlp.proj"]
    assert ia3.feedforward == ["blocks.0.mlp.proj", "blocks.1.mlp.proj"]


@pytest.mark.parametrize("method, needle", [
    ("lora:r=40", "rank 40 is larger than layer blocks.0.attn.qkv of rung 0 (32 -> 96); its "
                  "rank is at most 32"),
    ("lora:r=4:targets=nope", "target module 'nope' matches no Linear layer of rung 0"),
    ("lora:r=4:targets=head", "shares its weight with another module (tied)"),
    ("ia3:targets=attention", "matches no Linear layer"),
])
def test_refusals_are_one_line(method, needle):
    with pytest.raises(UserError) as err:
        adapters.resolve_targets(gpt(), parse_method(method), "rung 0")
    assert needle in str(err.value) and "\n" not in str(err.value)


def _train(model, task, steps=30):
    plan = RungPlan(rung=0, family="gpt", shape={}, target_n=1, n_params=1, n_nonembed=1,
                    D=steps * 64, unit="byte", steps=steps, batch_size=4, units_per_step=64,
                    lr=3e-3, warmup_steps=2, seed=7)
    t = TrainSpec(eval_every=10, eval_tokens=256, checkpoint_every=1000, weight_decay=0.1)
    return train_rung(plan, task, t, torch.device("cpu"), _tmp_ckpt(), model=model)


def _tmp_ckpt():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp()) / "ckpt"


@pytest.mark.parametrize("method", ["lora:r=4", "lora:r=8:dropout=0.1:targets=attn", "ia3"])
def test_peft_training_leaves_every_frozen_base_weight_bit_identical(text_task, method):
    m = gpt()
    before = {k: v.detach().clone() for k, v in m.state_dict().items()}
    parsed = parse_method(method)
    peft_model = adapters.apply_method(m, parsed, adapters.resolve_targets(m, parsed, "r"), None,
                                       seed=0)
    adapter_before = {k: v.detach().clone() for k, v in adapters.adapter_state(peft_model).items()}
    trainable, total = adapters.counts(peft_model)
    assert 0 < trainable < total
    out = _train(peft_model, text_task)
    assert out.status == "done"
    frozen = adapters.base_parameters(peft_model)
    assert set(frozen) == {k for k in before if k != "head.weight"}  # tied: one tensor
    for name, p in frozen.items():
        assert torch.equal(p.detach(), before[name]), f"{name} changed"
    # and the adapter itself did train
    after = adapters.adapter_state(peft_model)
    assert any(not torch.equal(after[k], adapter_before[k]) for k in after)


def test_full_fine_tuning_trains_every_weight(text_task):
    m = gpt()
    before = {k: v.detach().clone() for k, v in m.state_dict().items()}
    model = adapters.apply_method(m, parse_method("full"), None, None, seed=0)
    assert adapters.counts(model)[0] == adapters.counts(model)[1]
    _train(model, text_task, steps=5)
    assert all(not torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_train_state_bytes_counts_grads_and_adam_moments_of_trainable_weights_only():
    m = gpt()
    n = sum(p.numel() for p in m.parameters())
    assert adapters.train_state_bytes(m) == 4 * 4 * n
    parsed = parse_method("lora:r=4")
    pm = adapters.apply_method(m, parsed, adapters.resolve_targets(m, parsed, "r"), None, 0)
    trainable, total = adapters.counts(pm)
    assert adapters.train_state_bytes(pm) == 4 * (total + 3 * trainable)


def test_new_head_replaces_the_output_layer_and_trains_fully_with_lora():
    from scalelab.models.mlp import build

    model = build({"in_features": 64, "hidden": [32, 32], "n_outputs": 10})
    name = adapters.replace_head(model, 5, seed=3)
    assert name == "head" and model.head.out_features == 5
    parsed = parse_method("lora:r=4")
    targets = adapters.resolve_targets(model, parsed, "r")
    assert targets.modules == ["layers.0", "layers.1"]
    pm = adapters.apply_method(model, parsed, targets, name, seed=0)
    trainable, _ = adapters.counts(pm)
    assert trainable == 4 * (64 + 32) + 4 * (32 + 32) + 32 * 5 + 5
    merged = adapters.merged(pm)
    x = torch.randn(7, 64)
    assert (merged(x) - pm(x)).abs().max() < 1e-5 and merged.head.out_features == 5


def test_lora_merge_matches_the_adapter_model():
    m = gpt()
    parsed = parse_method("lora:r=4")
    pm = adapters.apply_method(m, parsed, adapters.resolve_targets(m, parsed, "r"), None, 0)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a trained-looking adapter (B starts at zero)
    merged = adapters.merged(pm)
    assert type(merged) is GPT and merged.head.weight is merged.wte.weight
    x = torch.randint(0, 256, (3, 16))
    assert (merged(x) - pm(x)).abs().max().item() <= 1e-5
    assert dataclasses.asdict(merged.cfg) == dataclasses.asdict(m.cfg)
