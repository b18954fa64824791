"""Family `gpt`: a decoder-only transformer in the style of nanoGPT's model file.

Pre-LayerNorm blocks, causal `scaled_dot_product_attention`, GELU MLP (4x), learned positions.

Decision: the token embedding and the output head are **tied** (one matrix), as in GPT-2 and
nanoGPT. With a 256-byte vocabulary the head is small anyway, and tying keeps `n_nonembed` (the
x-axis of the law) free of a matrix whose size does not change along the ladder.
`n_nonembed` = all parameters minus the token and position embeddings; the final LayerNorm and
every block count as non-embedding.

`share_layers=True` (ALBERT-style) reuses one block for every layer: the model does the same
compute as an unshared model of that depth but stores one block's parameters.

Head width (`head_dim`) and MLP width (`d_ff`) are fields of the config (defaults: d_model /
n_head and 4 · d_model), so a structurally pruned model (fewer heads, narrower MLP) is simply a
GPT of another config. `GPTFamily` puts this module on the `Family` protocol (models/base.py): a
rung's shape is `GPTConfig.to_dict()`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field
from torch.nn import functional as F

from scalelab.models.base import FamilyBase
from scalelab.tasks.base import TaskIO

HEAD_DIM = 16  # fixed per-head width: n_head = d_model / HEAD_DIM
ASPECT = 32  # fixed aspect rule of the ladder: d_model ≈ ASPECT * n_layer


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int
    d_model: int
    n_head: int
    block_size: int = 64
    vocab_size: int = 256
    share_layers: bool = False
    head_dim: int = 0  # 0: d_model // n_head
    d_ff: int = 0  # 0: 4 * d_model

    def __post_init__(self) -> None:
        if not self.head_dim:
            object.__setattr__(self, "head_dim", self.d_model // self.n_head)
        if not self.d_ff:
            object.__setattr__(self, "d_ff", 4 * self.d_model)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, shape: dict) -> GPTConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in shape.items() if k in names})


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        inner = cfg.n_head * cfg.head_dim  # = d_model unless heads were pruned
        self.qkv = nn.Linear(cfg.d_model, 3 * inner)
        self.proj = nn.Linear(inner, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        inner = self.n_head * self.head_dim
        q, k, v = self.qkv(x).split(inner, dim=2)
        q, k, v = (z.view(b, t, self.n_head, self.head_dim).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, inner))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.block_size, cfg.d_model)
        n_unique = 1 if cfg.share_layers else cfg.n_layer
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(n_unique))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.wte.weight  # tied, see module docstring
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections keeps the residual stream's variance
        # independent of depth.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def layers(self) -> list[Block]:
        """The block applied at each depth (the same object repeated when layers are shared)."""
        if self.cfg.share_layers:
            return [self.blocks[0]] * self.cfg.n_layer
        return list(self.blocks)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, time, vocab)."""
        t = idx.shape[1]
        pos = torch.arange(t, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.layers():
            x = block(x)
        return self.head(self.ln_f(x))


def build(cfg: GPTConfig) -> GPT:
    return GPT(cfg)


def nonembed_for(n_layer: int, d_model: int, share_layers: bool = False) -> int:
    """Exact non-embedding parameter count of a shape, without building it."""
    d = d_model
    per_block = (
        2 * 2 * d  # two LayerNorms
        + 3 * d * d + 3 * d  # qkv
        + d * d + d  # attention out
        + 4 * d * d + 4 * d  # mlp in
        + 4 * d * d + d  # mlp out
    )
    n_blocks = 1 if share_layers else n_layer
    return n_blocks * per_block + 2 * d  # + final LayerNorm


def shape_for(
    target_nonembed: float,
    block_size: int = 64,
    vocab_size: int = 256,
    share_layers: bool = False,
    max_layers: int = 24,
    min_layers: int = 1,
) -> GPTConfig:
    """The shape whose non-embedding count is closest to the target under the fixed aspect rule.

    For each depth we take the width (a multiple of HEAD_DIM) that comes closest to the target, then
    keep the depth whose d_model / n_layer is closest to ASPECT among those within 25% of the
    target, tie-broken by count error. One rule for every rung keeps the ladder a single family.
    Below about 3e3 (one layer of width 16) the smallest shape is returned. `min_layers` leaves
    out the shallower depths (a one-layer transformer is a different kind of model: it cannot
    compose attention heads, and its losses sit off the trend of deeper ones).
    """
    if target_nonembed <= 0:
        raise ValueError("target size must be positive")
    best: tuple[tuple, GPTConfig] | None = None
    for n_layer in range(min_layers, max(min_layers, max_layers) + 1):
        # Solve 12·L·d² ≈ target for d, then search neighbouring multiples of HEAD_DIM exactly.
        blocks = 1 if share_layers else n_layer
        d_est = math.sqrt(max(target_nonembed, 1.0) / (12 * blocks))
        k0 = max(1, round(d_est / HEAD_DIM))
        cands = [k for k in range(max(1, k0 - 2), k0 + 3)]

        def err(k: int, n_layer: int = n_layer) -> float:
            n = nonembed_for(n_layer, k * HEAD_DIM, share_layers)
            return abs(math.log(n / target_nonembed))

        k = min(cands, key=err)
        d = k * HEAD_DIM
        count_err = abs(math.log(nonembed_for(n_layer, d, share_layers) / target_nonembed))
        aspect_err = abs(math.log((d / n_layer) / ASPECT))
        cfg = GPTConfig(n_layer, d, d // HEAD_DIM, block_size, vocab_size, share_layers)
        # Shapes more than 25% off the target (width granularity) rank after every closer one.
        key = (count_err > 0.25, round(aspect_err, 6), count_err)
        if best is None or key < best[0]:
            best = (key, cfg)
    assert best is not None
    return best[1]


class GPTOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    block_size: int = Field(64, gt=1, description="context length in tokens")
    share_layers: bool = False
    min_layers: int = Field(1, ge=1, le=24, description="the shallowest depth the size rule "
                                                         "may choose")


class GPTFamily(FamilyBase):
    """Family `gpt` on the Family protocol: sequences only; the shape is `GPTConfig.to_dict()`."""

    name = "gpt"
    accepts = ("sequence",)
    Options = GPTOptions

    def __init__(self, options: GPTOptions | None = None):
        self.options = options or GPTOptions()
        self.context = self.options.block_size

    def shape_for(self, target_n: float, io: TaskIO) -> dict:
        return shape_for(target_n, self.options.block_size, io.vocab_size or io.n_outputs,
                         self.options.share_layers, min_layers=self.options.min_layers).to_dict()

    def build(self, shape: dict) -> GPT:
        return GPT(GPTConfig.from_dict(shape))


    def describe(self, shape: dict) -> str:
        return f"{shape['n_layer']}x{shape['d_model']}"
