"""Pruning of the GPT family: structured (heads and MLP channels really removed) and unstructured
(magnitude, a quality-and-size study).

Structured. Our own code instead of Torch-Pruning: the model is a small nanoGPT-style module where
the dependency groups are obvious (a head = its q, k and v rows of `qkv` plus its columns of
`attn.proj`; an MLP channel = one row of `mlp.fc` and one column of `mlp.proj`), so slicing those
weights is a few lines and needs no graph tracing. Each layer loses the same fraction R of its
heads and of its MLP channels (at least one of each is kept); the residual width d_model and
HEAD_DIM per head stay, so the kept heads compute exactly what they computed before.

Importance is activation-weighted: for each input feature j of `attn.proj` and `mlp.proj`,
mean |activation_j| over calibration batches from the *training* split times the L2 norm of the
weight column that reads it (the feature's contribution to the residual stream); a head's score
is the sum over its HEAD_DIM features. With shared layers (ALBERT-style) the one block is scored
over all the depths it is applied at.

The pruned model is a `GPT` whose blocks carry `PrunedAttention` and narrower MLP Linears; its
structure is the per-block lists `heads` and `ffn` (kept heads, kept MLP channels), stored with
the variant so `restructure` can rebuild it for loading its weights.

Unstructured. Within every Linear weight of the blocks (the tied embedding/head is left dense),
the fraction S of entries with the smallest magnitude is set to zero. The saved file is a
safetensors file in a bitmask format: per pruned matrix a packed bit mask (1 bit per entry) and
the fp32 values of the kept entries, the rest dense, so its size (not an estimate) shows what the
sparsity buys in storage. Run time uses dense kernels on the zero-filled matrices: no speedup is
claimed (the latency is measured and stored all the same).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from scalelab.models import gpt

CALIBRATION_BATCHES = 8
CALIBRATION_BATCH_SIZE = 32
CALIBRATION_SEED = 1234
SPARSE_FORMAT = "scalelab-bitmask-sparse-v1"


class PrunedAttention(nn.Module):
    """Causal self-attention with `n_head` heads of `head_dim` each, reading and writing a
    residual stream of width `d_model` (n_head * head_dim may be smaller than d_model)."""

    def __init__(self, d_model: int, n_head: int, head_dim: int):
        super().__init__()
        self.n_head, self.head_dim = n_head, head_dim
        inner = n_head * head_dim
        self.qkv = nn.Linear(d_model, 3 * inner)
        self.proj = nn.Linear(inner, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        inner = self.n_head * self.head_dim
        q, k, v = self.qkv(x).split(inner, dim=2)
        q, k, v = (z.view(b, t, self.n_head, self.head_dim).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, inner))


def _head_dim(model: gpt.GPT) -> int:
    return model.cfg.d_model // model.cfg.n_head


def _keep(n: int, ratio: float) -> int:
    return max(1, int(n * (1.0 - ratio) + 0.5))


@torch.no_grad()
def importance(model: gpt.GPT, task, block_size: int, device: torch.device) -> list[dict]:
    """Per unique block: {"heads": score per head, "ffn": score per MLP channel}."""
    model = model.eval()
    sums: dict[int, dict[str, torch.Tensor]] = {}
    hooks = []
    for i, block in enumerate(model.blocks):
        sums[i] = {}

        def hook(name, i=i):
            def fn(_module, inputs):
                a = inputs[0].detach().abs().float().sum(dim=(0, 1))
                sums[i][name] = sums[i].get(name, 0) + a
            return fn

        hooks.append(block.attn.proj.register_forward_pre_hook(hook("attn")))
        hooks.append(block.mlp.proj.register_forward_pre_hook(hook("ffn")))
    gen = torch.Generator().manual_seed(CALIBRATION_SEED)
    try:
        for _ in range(CALIBRATION_BATCHES):
            x, _ = task.batch(CALIBRATION_BATCH_SIZE, block_size, gen)
            model(x.to(device))
    finally:
        for h in hooks:
            h.remove()
    out = []
    hd = _head_dim(model)
    for i, block in enumerate(model.blocks):
        attn_feat = sums[i]["attn"] * block.attn.proj.weight.detach().float().norm(dim=0)
        ffn_feat = sums[i]["ffn"] * block.mlp.proj.weight.detach().float().norm(dim=0)
        out.append({"heads": attn_feat.view(-1, hd).sum(dim=1).cpu(), "ffn": ffn_feat.cpu()})
    return out


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores, in ascending index order (keeps the original layout)."""
    return torch.sort(torch.topk(scores, k).indices).values


@torch.no_grad()
def prune_structured(model: gpt.GPT, ratio: float, scores: list[dict]) -> tuple[gpt.GPT, dict]:
    """A copy of `model` with the fraction `ratio` of each block's heads and MLP channels removed.
    Returns (pruned model, structure {"heads": [...], "ffn": [...]} per unique block)."""
    model = copy.deepcopy(model)
    hd = _head_dim(model)
    d = model.cfg.d_model
    heads, ffn = [], []
    for block, score in zip(model.blocks, scores, strict=True):
        attn, mlp = block.attn, block.mlp
        n_head = attn.qkv.out_features // (3 * hd)
        keep_h = _top(score["heads"], _keep(n_head, ratio))
        rows = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in keep_h.tolist()])
        inner = n_head * hd
        qkv_rows = torch.cat([rows + s * inner for s in range(3)])
        new_attn = PrunedAttention(d, len(keep_h), hd).to(attn.qkv.weight.device)
        new_attn.qkv.weight.copy_(attn.qkv.weight[qkv_rows])
        new_attn.qkv.bias.copy_(attn.qkv.bias[qkv_rows])
        new_attn.proj.weight.copy_(attn.proj.weight[:, rows])
        new_attn.proj.bias.copy_(attn.proj.bias)
        block.attn = new_attn

        keep_f = _top(score["ffn"], _keep(mlp.fc.out_features, ratio))
        fc = nn.Linear(d, len(keep_f)).to(mlp.fc.weight.device)
        fc.weight.copy_(mlp.fc.weight[keep_f])
        fc.bias.copy_(mlp.fc.bias[keep_f])
        proj = nn.Linear(len(keep_f), d).to(mlp.proj.weight.device)
        proj.weight.copy_(mlp.proj.weight[:, keep_f])
        proj.bias.copy_(mlp.proj.bias)
        mlp.fc, mlp.proj = fc, proj
        heads.append(len(keep_h))
        ffn.append(len(keep_f))
    return model, {"heads": heads, "ffn": ffn}


def restructure(model: gpt.GPT, structure: dict) -> gpt.GPT:
    """Give a freshly built GPT the pruned shapes of `structure` (weights to be loaded next)."""
    hd = _head_dim(model)
    d = model.cfg.d_model
    for block, h, f in zip(model.blocks, structure["heads"], structure["ffn"], strict=True):
        block.attn = PrunedAttention(d, h, hd)
        block.mlp.fc = nn.Linear(d, f)
        block.mlp.proj = nn.Linear(f, d)
    return model


# -- unstructured ------------------------------------------------------------------------------


def _block_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(f"blocks.{name}", m) for name, m in model.blocks.named_modules()
            if isinstance(m, nn.Linear)]


@torch.no_grad()
def sparsify(model: nn.Module, sparsity: float) -> tuple[nn.Module, dict]:
    """A copy with the smallest-magnitude fraction `sparsity` of each block Linear weight zeroed.
    Returns (model, {"sparsity": achieved over those weights, "pruned_weights": count})."""
    model = copy.deepcopy(model)
    zeros, total = 0, 0
    for _, lin in _block_linears(model):
        w = lin.weight
        k = int(round(sparsity * w.numel()))
        if k:
            idx = torch.argsort(w.abs().flatten())[:k]
            w.view(-1)[idx] = 0.0
        zeros += int((w == 0).sum())
        total += w.numel()
    return model, {"sparsity": zeros / total if total else 0.0, "pruned_weights": total}


def save_sparse(model: nn.Module, path: Path) -> int:
    """Bitmask-sparse safetensors file (see module docstring); returns its bytes."""
    sparse = {f"{name}.weight" for name, _ in _block_linears(model)}
    tensors, shapes = {}, {}
    seen: set[int] = set()
    for name, t in model.state_dict().items():
        if t.data_ptr() in seen:  # the tied head shares the embedding's storage
            continue
        seen.add(t.data_ptr())
        t = t.detach().cpu().contiguous()
        if name in sparse:
            mask = (t != 0).numpy().reshape(-1)
            tensors[f"{name}:mask"] = torch.from_numpy(np.packbits(mask))
            tensors[f"{name}:values"] = t.reshape(-1)[torch.from_numpy(mask)].clone()
            shapes[name] = list(t.shape)
        else:
            tensors[name] = t
    save_file(tensors, str(path), metadata={"format": SPARSE_FORMAT, "shapes": json.dumps(shapes)})
    return path.stat().st_size


def load_sparse(model: nn.Module, path: Path) -> nn.Module:
    """Load a bitmask-sparse file into a dense model of the same shape."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != SPARSE_FORMAT:
        raise ValueError(f"{path} is not a {SPARSE_FORMAT} file")
    shapes = json.loads(meta["shapes"])
    raw = load_file(str(path))
    state = {k: v for k, v in raw.items() if ":" not in k}
    for name, shape in shapes.items():
        n = int(np.prod(shape))
        mask = np.unpackbits(raw[f"{name}:mask"].numpy())[:n].astype(bool)
        dense = torch.zeros(n, dtype=raw[f"{name}:values"].dtype)
        dense[torch.from_numpy(mask)] = raw[f"{name}:values"]
        state[name] = dense.view(shape)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(k != "head.weight" for k in missing):
        raise ValueError(f"{path} does not match the model: missing {missing}, "
                         f"unexpected {unexpected}")
    return model
