"""An `hf` rung trains as a plain PyTorch loop over the same `transformers` model, and resumes.

Why not against `gpt`: a llama of the `gpt` shape (2 layers of width 64, 4 heads of 16, MLP
width 256, head tied to the embedding) is another function: RMSNorm for LayerNorm, rotary
positions for learned ones, a SwiGLU MLP (three matrices) for GELU (two), no biases, and
`transformers`' own init. On the same 20 batches of `pycode` bytes, with the same optimizer
and schedule, both start at 5.490 and after 20 steps `gpt` is at a training loss of 3.6522,
the llama at 3.6849 (measured on CPU, fp32: a gap of 0.033 nats, over 300 times the 1e-4 asked
of matching models). So this test compares the `hf` rung with the plain loop of its own model
instead: the same init (the rung's seed), the same batches (its batch stream), AdamW with
weight decay on matrices, the same warm-up and cosine schedule and gradient clipping, written
out here without scalelab's training code. The losses agree to within 1e-4 at every step
(measured: equal to the bit, a difference of 0.0 at each of the 20 steps).
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from torch.nn import functional as F

from scalelab.models import get_family
from scalelab.models.gpt import GPTConfig
from scalelab.records import RungPlan
from scalelab.spec import TrainSpec
from scalelab.tasks import get_task
from scalelab.train.loop import train_rung

pytest.importorskip("transformers")

CPU = torch.device("cpu")
BLOCK, BATCH, STEPS, LR, WARMUP, SEED = 32, 8, 20, 3e-3, 5, 3
TRAIN = TrainSpec(eval_every=10, eval_tokens=512, final_eval_tokens=1024, checkpoint_every=10)
# llama at the gpt shape below: 2 x 64, 4 heads of 16, MLP 256, tied head
LLAMA = {"model_type": "llama", "config": {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 4, "head_dim": 16, "intermediate_size": 256, "vocab_size": 256,
    "max_position_embeddings": BLOCK, "tie_word_embeddings": True, "use_cache": False}}
GPT = GPTConfig(n_layer=2, d_model=64, n_head=4, block_size=BLOCK).to_dict()


@pytest.fixture(scope="module")
def task():
    return get_task("pycode", context=BLOCK)


def _plan(family: str, shape: dict) -> RungPlan:
    units = BATCH * BLOCK
    return RungPlan(rung=0, family=family, shape=shape, target_n=1e5, n_params=0, n_nonembed=0,
                    D=STEPS * units, unit="byte", steps=STEPS, batch_size=BATCH,
                    units_per_step=units, lr=LR, warmup_steps=WARMUP, seed=SEED)


def _rung_losses(family_name: str, shape: dict, task, folder) -> tuple[list[float], object]:
    family = get_family(family_name, block_size=BLOCK, **(
        {"model_type": "llama"} if family_name == "hf" else {}))
    losses: list[float] = []
    out = train_rung(_plan(family_name, shape), task, TRAIN, CPU, folder, family=family,
                     on_progress=lambda step, loss: losses.append(loss))
    return losses, out


def _plain_loop(task) -> list[float]:
    """The same training written plainly over the `transformers` model itself."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(SEED)
    lm = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", **LLAMA["config"]))
    params = list(lm.parameters())
    opt = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": TRAIN.weight_decay},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=LR, betas=(TRAIN.beta1, TRAIN.beta2), fused=True)
    gen = torch.Generator().manual_seed(SEED)
    floor = TRAIN.min_lr_frac * LR
    losses = []
    lm.train()
    for step in range(STEPS):
        if step < WARMUP:
            lr = LR * (step + 1) / WARMUP
        else:
            progress = (step - WARMUP) / (STEPS - WARMUP)
            lr = floor + 0.5 * (LR - floor) * (1 + math.cos(math.pi * progress))
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = task.batch(BATCH, gen)
        logits = lm(input_ids=x).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, TRAIN.grad_clip)
        opt.step()
        losses.append(loss.item())
    return losses


def test_hf_rung_trains_as_the_plain_loop(task, tmp_path):
    rung, _ = _rung_losses("hf", LLAMA, task, tmp_path / "hf")
    plain = _plain_loop(task)
    assert len(rung) == len(plain) == STEPS
    assert max(abs(a - b) for a, b in zip(rung, plain, strict=True)) < 1e-4
    assert plain[-1] < plain[0] - 0.5  # it learned: the comparison is of a real run


def test_hf_is_not_gpt_of_the_same_shape(task, tmp_path):
    """The note above: the same shape in `gpt` is another model, its loss far from llama's."""
    hf, _ = _rung_losses("hf", LLAMA, task, tmp_path / "hf")
    gpt, _ = _rung_losses("gpt", GPT, task, tmp_path / "gpt")
    assert abs(hf[-1] - gpt[-1]) > 1e-2


def test_hf_rung_resumes_from_its_checkpoint(task, tmp_path):
    """Stopped after its step-10 checkpoint and run again, the rung ends as one uninterrupted
    run: the same weights to the bit (model, optimizer and batch stream all resume)."""
    _, whole = _rung_losses("hf", LLAMA, task, tmp_path / "whole")
    resumed = shutil.copytree(tmp_path / "whole", tmp_path / "resumed")
    # a finished rung keeps its last periodic checkpoint: the state after step 10
    assert [p.name for p in resumed.iterdir()] == ["step-00000010"]
    _, again = _rung_losses("hf", LLAMA, task, resumed)
    a, b = whole.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
