"""Family `mlp`: a multilayer perceptron for vector and image tasks.

The model (`MLP`) has stable, simple attribute names, which structured pruning relies on:

- `flatten`: nn.Flatten; images (B, C, H, W) become (B, C*H*W), vectors pass through unchanged;
- `layers`: nn.ModuleList of nn.Linear, the hidden layers; `layers[i]` maps width
  `hidden[i-1]` (or `in_features`) to `hidden[i]`;
- `act`: the activation (nn.ReLU or nn.GELU), applied after every hidden layer;
- `drop`: nn.Dropout after every activation (identity when `dropout` is 0);
- `head`: nn.Linear(hidden[-1], n_outputs); the output is logits (B, K), or (B, 1) for
  regression.

Hidden unit j of layer i is row j of `layers[i]` (weight and bias) and column j of the next
Linear (`layers[i+1]`, or `head` for the last hidden layer); `prune_hidden` slices exactly those.

Decisions:
- One rule for the ladder: `depth` hidden layers of one width w, the integer w whose exact count
  is closest (in log) to the target. Depth stays fixed so the ladder varies one thing only.
- The shape keeps `hidden` as a per-layer list, so a structurally pruned model (narrower hidden
  layers, not all equal) is just another shape, built by the same `build`.
- There are no embeddings, so n_nonembed = n_params: the target counts every parameter.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field

from scalelab.models.base import FamilyBase, closest_knob
from scalelab.tasks.base import TaskIO

# A target the family cannot reach by more than this factor is an error, not a silent clamp.
MAX_MISS = 2.0


class MLP(nn.Module):
    """Linear layers of the widths in `hidden`, activation and dropout after each, then a head."""

    def __init__(self, in_features: int, hidden: list[int], n_outputs: int,
                 activation: str = "gelu", dropout: float = 0.0):
        super().__init__()
        dims = [in_features, *hidden]
        self.flatten = nn.Flatten()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:],
                                                                    strict=True))
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(dims[-1], n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        for layer in self.layers:
            x = self.drop(self.act(layer(x)))
        return self.head(x)


def n_params_for(in_features: int, hidden: list[int], n_outputs: int) -> int:
    """Exact parameter count (weights and biases) of an MLP, without building it."""
    dims = [in_features, *hidden, n_outputs]
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:], strict=True))


def build(shape: dict) -> MLP:
    """A fresh model from a shape alone (the family's options are not needed)."""
    return MLP(int(shape["in_features"]), [int(w) for w in shape["hidden"]],
               int(shape["n_outputs"]), shape.get("activation", "gelu"),
               float(shape.get("dropout", 0.0)))


def describe(shape: dict) -> str:
    """"2x64" for equal widths; "64-48" once pruning has made them differ."""
    hidden = list(shape["hidden"])
    if len(set(hidden)) == 1:
        return f"{len(hidden)}x{hidden[0]}"
    return "-".join(str(w) for w in hidden)


def check_reached(target_n: float, n: int, what: str) -> None:
    """Refuse a target outside the family's range by more than MAX_MISS (the caller turns the
    ValueError into a UserError); inside the range the closest shape is always accepted."""
    if n > target_n * MAX_MISS:
        raise ValueError(f"target size {target_n:.3g} is below the smallest {what} "
                         f"({n} parameters)")
    if n * MAX_MISS < target_n:
        raise ValueError(f"target size {target_n:.3g} is above the largest {what} "
                         f"({n} parameters)")


class MLPFamily(FamilyBase):
    """Family `mlp`; see the module docstring for the model and the sizing rule."""

    name = "mlp"
    accepts: tuple[str, ...] = ("vector", "image")

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        depth: int = Field(2, ge=1, description="number of hidden layers")
        activation: Literal["relu", "gelu"] = "gelu"
        dropout: float = Field(0.0, ge=0.0, lt=1.0)

    def __init__(self, options: Options):
        self.options = options

    def shape_for(self, target_n: float, io: TaskIO) -> dict:
        if io.kind not in self.accepts:
            raise ValueError(f"family 'mlp' models vector or image inputs, not {io.kind}")
        in_features = math.prod(io.input_shape)
        depth = self.options.depth

        def count(w: int) -> int:
            return n_params_for(in_features, [w] * depth, io.n_outputs)

        w = closest_knob(target_n, count)
        check_reached(target_n, count(w), f"mlp of depth {depth} for this task")
        return {"in_features": in_features, "input_shape": list(io.input_shape),
                "hidden": [w] * depth, "n_outputs": io.n_outputs,
                "activation": self.options.activation, "dropout": self.options.dropout}

    def build(self, shape: dict) -> nn.Module:
        return build(shape)


    def describe(self, shape: dict) -> str:
        return describe(shape)


def _outgoing(model: MLP, i: int) -> nn.Linear:
    """The Linear that reads hidden layer i."""
    return model.layers[i + 1] if i + 1 < len(model.layers) else model.head


@torch.no_grad()
def hidden_importance(model: MLP, x: torch.Tensor) -> list[torch.Tensor]:
    """Per hidden layer, per unit: mean |activation| over the batch x times the L2 norm of the
    unit's outgoing weight column. Dropout is skipped, so the score is deterministic."""
    h = model.flatten(x)
    scores = []
    for i, layer in enumerate(model.layers):
        h = model.act(layer(h))
        column_norm = _outgoing(model, i).weight.norm(dim=0)
        scores.append(h.abs().mean(dim=0) * column_norm)
    return scores


@torch.no_grad()
def prune_hidden(model: MLP, shape: dict,
                 keep: list[list[int]]) -> tuple[MLP, dict]:
    """The narrower model keeping, in each hidden layer, the units listed in `keep` (indices
    are sorted, so unit order is preserved) and its shape; built by `build(new_shape)`, the
    kept rows and columns copied. The new model has the old one's device, dtype and mode."""
    hidden = list(shape["hidden"])
    if len(keep) != len(hidden):
        raise ValueError(f"keep lists {len(keep)} layers; the model has {len(hidden)}")
    index = []
    for i, (units, width) in enumerate(zip(keep, hidden, strict=True)):
        units = sorted(int(u) for u in units)
        if not units:
            raise ValueError(f"hidden layer {i}: keep at least one unit")
        if len(set(units)) != len(units) or units[0] < 0 or units[-1] >= width:
            raise ValueError(f"hidden layer {i}: unit indices must be distinct and in "
                             f"[0, {width})")
        index.append(units)
    new_shape = {**shape, "hidden": [len(units) for units in index]}
    new = build(new_shape)
    ref = next(model.parameters())
    new.to(device=ref.device, dtype=ref.dtype)
    dev = ref.device
    rows = [torch.tensor(units, device=dev) for units in index]
    for i, (old_l, new_l) in enumerate(zip(model.layers, new.layers, strict=True)):
        w = old_l.weight.index_select(0, rows[i])
        if i > 0:
            w = w.index_select(1, rows[i - 1])
        new_l.weight.copy_(w)
        new_l.bias.copy_(old_l.bias.index_select(0, rows[i]))
    new.head.weight.copy_(model.head.weight.index_select(1, rows[-1]))
    new.head.bias.copy_(model.head.bias)
    new.train(model.training)
    return new, new_shape
