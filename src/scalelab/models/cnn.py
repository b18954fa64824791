"""Family `cnn`: a plain convolutional network for image tasks.

The model (`CNN`) has stable, simple attribute names:

- `convs`: nn.ModuleList of nn.Conv2d (k x k, stride 1, padding k // 2 so the spatial size is
  kept), `convs[i]` maps `channels[i-1]` (or the input's channels) to `channels[i]`; each is
  followed by ReLU;
- `pool_after`: a tuple of bools, True where a 2x2 max-pool follows conv i: after every second
  conv while the spatial size (the smaller side) is still >= 4;
- `head`: nn.Linear(channels[-1], n_outputs) after global average pooling; the output is logits
  (B, K), or (B, 1) for regression.

Decisions:
- One rule for the ladder: `depth` conv layers of one channel count c, the integer c whose exact
  count is closest (in log) to the target; depth and kernel stay fixed.
- Pooling depends only on the input size and the depth, never on c, so every rung of a ladder
  sees the same spatial sizes. It stops at 4 so small inputs (8x8 digits) are never pooled to
  nothing; global average pooling makes the head independent of the input size.
- The kernel must be odd: padding k // 2 then keeps the size exactly (symmetric padding, which
  every exporter handles).
- `channels` is a per-layer list so a channel-pruned model is just another shape.
- There are no embeddings, so n_nonembed = n_params.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch.nn import functional as F

from scalelab.models.base import FamilyBase, closest_knob
from scalelab.models.mlp import check_reached
from scalelab.tasks.base import TaskIO


def pool_plan(input_shape: list[int] | tuple[int, ...], depth: int) -> tuple[bool, ...]:
    """Where a 2x2 max-pool follows a conv: after every second conv while min(H, W) >= 4."""
    size = min(int(input_shape[1]), int(input_shape[2]))
    plan = []
    for i in range(depth):
        pool = i % 2 == 1 and size >= 4
        if pool:
            size //= 2
        plan.append(pool)
    return tuple(plan)


class CNN(nn.Module):
    """Conv + ReLU layers (max-pools per `pool_plan`), global average pooling, Linear head."""

    def __init__(self, input_shape: list[int], channels: list[int], kernel: int,
                 n_outputs: int):
        super().__init__()
        dims = [int(input_shape[0]), *channels]
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, kernel, padding=kernel // 2)
            for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.pool_after = pool_plan(input_shape, len(channels))
        self.head = nn.Linear(dims[-1], n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, pool in zip(self.convs, self.pool_after, strict=True):
            x = F.relu(conv(x))
            if pool:
                x = F.max_pool2d(x, 2)
        return self.head(x.mean(dim=(2, 3)))


def n_params_for(in_channels: int, channels: list[int], kernel: int, n_outputs: int) -> int:
    """Exact parameter count (weights and biases) of a CNN, without building it."""
    dims = [in_channels, *channels]
    convs = sum(a * b * kernel * kernel + b for a, b in zip(dims[:-1], dims[1:], strict=True))
    return convs + dims[-1] * n_outputs + n_outputs


def build(shape: dict) -> CNN:
    """A fresh model from a shape alone."""
    return CNN([int(s) for s in shape["input_shape"]], [int(c) for c in shape["channels"]],
               int(shape["kernel"]), int(shape["n_outputs"]))


def describe(shape: dict) -> str:
    """"3x16" for equal channel counts, "16-12-16" once they differ."""
    channels = list(shape["channels"])
    if len(set(channels)) == 1:
        return f"{len(channels)}x{channels[0]}"
    return "-".join(str(c) for c in channels)


class CNNFamily(FamilyBase):
    """Family `cnn`; see the module docstring for the model and the sizing rule."""

    name = "cnn"
    accepts: tuple[str, ...] = ("image",)

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        depth: int = Field(3, ge=1, description="number of conv layers")
        kernel: int = Field(3, ge=1, description="conv kernel size (odd)")

        @field_validator("kernel")
        @classmethod
        def _odd(cls, v: int) -> int:
            if v % 2 == 0:
                raise ValueError("must be odd (padding k // 2 keeps the image size)")
            return v

    def __init__(self, options: Options):
        self.options = options

    def shape_for(self, target_n: float, io: TaskIO) -> dict:
        if io.kind not in self.accepts or len(io.input_shape) != 3:
            raise ValueError(f"family 'cnn' models images (C, H, W), not {io.kind} inputs "
                             f"of shape {tuple(io.input_shape)}")
        depth, kernel = self.options.depth, self.options.kernel
        in_channels = io.input_shape[0]

        def count(c: int) -> int:
            return n_params_for(in_channels, [c] * depth, kernel, io.n_outputs)

        c = closest_knob(target_n, count)
        check_reached(target_n, count(c), f"cnn of depth {depth} for this task")
        return {"input_shape": list(io.input_shape), "channels": [c] * depth, "kernel": kernel,
                "n_outputs": io.n_outputs}

    def build(self, shape: dict) -> nn.Module:
        return build(shape)


    def describe(self, shape: dict) -> str:
        return describe(shape)
