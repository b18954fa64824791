"""Low-rank variants (`lowrank:F[+ft]`): Linear layers replaced by truncated-SVD factors; any
family.

A Linear weight W (out x in) becomes two Linears, `in -> k` (no bias) then `k -> out` (W's
bias), with W ~ (U_k sqrt(S_k)) (sqrt(S_k) V_k^T), the best rank-k approximation in Frobenius
norm. The rank is a fraction F of the full rank: k = max(1, round(F * min(out, in))). A layer is
factored only when that stores fewer parameters than W (k * (out + in) < out * in); otherwise it
stays dense. So for a GPT at F = 0.5 the square attention output projection (d x d) stays dense
while `qkv` (3d x d) and the MLP matrices (4d x d, d x 4d) are factored. The layers considered are
`layers.untied_linears` (every Linear but a head tied to the embedding: a GPT's blocks, an MLP's
hidden layers and head, a CNN's head). The structure (rank per layer name) is stored with the
variant (`settings.ranks`), so `restructure` rebuilds the module tree of `family.build(shape)` for
loading its weights. A model none of whose layers would shrink is a one-line UserError.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_model

from scalelab.compress.base import Argument, Built, CompressMethod, Context, Method, Style
from scalelab.compress.layers import set_submodule, untied_linears
from scalelab.compress.recover import finetune_note, finish
from scalelab.errors import UserError
from scalelab.models.base import Family


def _factored(in_f: int, out_f: int, rank: int, bias: bool) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_f, rank, bias=False), nn.Linear(rank, out_f, bias=bias))


def rank_for(out_f: int, in_f: int, fraction: float) -> int | None:
    """The rank a layer gets at `fraction`, or None when factoring would not save parameters."""
    k = max(1, round(fraction * min(out_f, in_f)))
    return k if k * (out_f + in_f) < out_f * in_f else None


@torch.no_grad()
def factorize(model: nn.Module, fraction: float) -> tuple[nn.Module, dict[str, int]]:
    """A copy of `model` with each untied Linear replaced by rank-k SVD factors; returns
    (model, {layer name: rank}) for the layers that were factored."""
    model = copy.deepcopy(model)
    ranks: dict[str, int] = {}
    for name, lin in untied_linears(model):
        k = rank_for(lin.out_features, lin.in_features, fraction)
        if k is None:
            continue
        w = lin.weight.detach().float()
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        root = s[:k].sqrt()
        new = _factored(lin.in_features, lin.out_features, k, lin.bias is not None)
        new = new.to(device=lin.weight.device, dtype=lin.weight.dtype)
        new[0].weight.copy_(root[:, None] * vh[:k])
        new[1].weight.copy_(u[:, :k] * root[None, :])
        if lin.bias is not None:
            new[1].bias.copy_(lin.bias)
        set_submodule(model, name, new)
        ranks[name] = k
    return model, ranks


def restructure(model: nn.Module, ranks: Mapping[str, int]) -> nn.Module:
    """Give a freshly built model the factored layers of `ranks` (weights to be loaded next)."""
    for name, k in ranks.items():
        lin = model.get_submodule(name)
        set_submodule(model, name, _factored(lin.in_features, lin.out_features, int(k),
                                             lin.bias is not None))
    return model


class LowRank(CompressMethod):
    """`lowrank:F[+ft]`: truncated-SVD factors of the untied Linear layers; any family."""

    kind = "lowrank"
    summary = "Linear layers replaced by SVD factors of rank F x full rank; any family"
    argument = Argument("F", "rank fraction")
    finetune_option = True
    defaults = ("lowrank:0.5",)
    style = Style("#1b9e77", "P")

    def describe(self, method: Method) -> str:
        ft = ", then a recovery fine-tune" if method.finetune else ""
        return (f"Linear layers replaced by SVD factors of rank {method.value:g} x full rank "
                f"where that saves parameters{ft}")

    def make(self, ctx: Context, method: Method, name: str) -> Built:
        assert method.value is not None
        model, ranks = factorize(ctx.base, method.value)
        if not ranks:
            raise UserError(f"{method.text}: no Linear layer of rung {ctx.row['rung']}'s "
                            f"{ctx.family.name} model gets smaller at rank fraction "
                            f"{method.value:g}")
        return finish(ctx, model, name, method, {"rank_fraction": method.value, "ranks": ranks},
                      {"factored_layers": len(ranks)})

    def notes(self, variant: Mapping[str, Any], batch: str, unit: str) -> str:
        st, ex = variant.get("settings") or {}, variant.get("extra") or {}
        return (f"rank fraction {st.get('rank_fraction')}, {ex.get('factored_layers')} layers "
                "factored" + finetune_note(st, ex, unit))

    def restore(self, family: Family, shape: dict, variant: Mapping[str, Any],
                path: Path) -> nn.Module:
        model = restructure(family.build(shape), (variant.get("settings") or {})["ranks"])
        load_model(model, str(path))
        return model.float().eval()


__all__ = ["LowRank", "factorize", "rank_for", "restructure"]
