"""Low-rank variants: Linear layers of the blocks replaced by truncated-SVD factors.

A Linear weight W (out x in) becomes two Linears, `in -> k` (no bias) then `k -> out` (W's
bias), with W ~ (U_k sqrt(S_k)) (sqrt(S_k) V_k^T), the best rank-k approximation in Frobenius
norm. The rank is a fraction F of the full rank: k = max(1, round(F * min(out, in))). A layer is
factored only when that stores fewer parameters than W (k * (out + in) < out * in); otherwise it
stays dense. So at F = 0.5 the square attention output projection (d x d) stays dense while
`qkv` (3d x d) and the MLP matrices (4d x d, d x 4d) are factored. The tied embedding/head is not
factored. The structure (rank per layer name) is stored with the variant, so `restructure`
rebuilds the module tree for loading its weights.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


def _parent_and_attr(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, attr = name.rpartition(".")
    return (root.get_submodule(parent_name) if parent_name else root), attr


def _factored(in_f: int, out_f: int, rank: int, bias: bool) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_f, rank, bias=False), nn.Linear(rank, out_f, bias=bias))


def rank_for(out_f: int, in_f: int, fraction: float) -> int | None:
    """The rank a layer gets at `fraction`, or None when factoring would not save parameters."""
    k = max(1, round(fraction * min(out_f, in_f)))
    return k if k * (out_f + in_f) < out_f * in_f else None


@torch.no_grad()
def factorize(model: nn.Module, fraction: float) -> tuple[nn.Module, dict[str, int]]:
    """A copy of `model` with each block Linear replaced by rank-k SVD factors; returns
    (model, {layer name: rank}) for the layers that were factored."""
    model = copy.deepcopy(model)
    ranks: dict[str, int] = {}
    targets = [(f"blocks.{n}", m) for n, m in model.blocks.named_modules()
               if isinstance(m, nn.Linear)]
    for name, lin in targets:
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
        parent, attr = _parent_and_attr(model, name)
        setattr(parent, attr, new)
        ranks[name] = k
    return model, ranks


def restructure(model: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """Give a freshly built model the factored layers of `ranks` (weights to be loaded next)."""
    for name, k in ranks.items():
        parent, attr = _parent_and_attr(model, name)
        lin = getattr(parent, attr)
        setattr(parent, attr, _factored(lin.in_features, lin.out_features, k,
                                        lin.bias is not None))
    return model
