"""Unstructured magnitude pruning (`sparse:S`): a quality-and-size study, any family.

Within every Linear weight not tied to an embedding (`layers.untied_linears`: a GPT's block
Linears, an MLP's hidden layers and head, a CNN's head), the fraction S of entries with the
smallest magnitude is set to zero (per matrix). The saved file is a safetensors file in a bitmask
format: per pruned matrix a packed bit mask (1 bit per entry) and the values of the kept entries,
the rest dense, so its size (not an estimate) shows what the sparsity buys in storage. Run time
uses dense kernels on the zero-filled matrices: no speedup is claimed (the latency is measured and
stored all the same). `n_params` of the variant counts the stored (non-zero) parameters; the
dense count is `extra.n_params_dense`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from scalelab.compress.base import Argument, Built, CompressMethod, Context, Method, Style
from scalelab.compress.layers import untied_linears
from scalelab.errors import UserError
from scalelab.models.base import Family
from scalelab.values import fmt_spec

SPARSE_FORMAT = "scalelab-bitmask-sparse-v1"


@torch.no_grad()
def sparsify(model: nn.Module, sparsity: float) -> tuple[nn.Module, dict]:
    """A copy with the smallest-magnitude fraction `sparsity` of each untied Linear weight
    zeroed. Returns (model, {"sparsity": achieved over those weights, "pruned_weights": count,
    "pruned_layers": count})."""
    model = copy.deepcopy(model)
    zeros, total = 0, 0
    layers = untied_linears(model)
    for _, lin in layers:
        w = lin.weight
        k = int(round(sparsity * w.numel()))
        if k:
            idx = torch.argsort(w.abs().flatten())[:k]
            w.view(-1)[idx] = 0.0
        zeros += int((w == 0).sum())
        total += w.numel()
    return model, {"sparsity": zeros / total if total else 0.0, "pruned_weights": total,
                   "pruned_layers": len(layers)}


def _aliases(model: nn.Module) -> set[str]:
    """State-dict names whose tensor is an earlier name's (a tied head): stored once."""
    seen: set[int] = set()
    out = set()
    for name, t in model.state_dict().items():
        if t.data_ptr() in seen:
            out.add(name)
        seen.add(t.data_ptr())
    return out


def save_sparse(model: nn.Module, path: Path) -> int:
    """Bitmask-sparse safetensors file (see the module docstring); returns its bytes."""
    sparse = {f"{name}.weight" for name, _ in untied_linears(model)}
    skip = _aliases(model)
    tensors, shapes = {}, {}
    for name, t in model.state_dict().items():
        if name in skip:
            continue
        t = t.detach().cpu().contiguous()
        if name in sparse:
            mask = (t != 0).numpy().reshape(-1)
            tensors[f"{name}:mask"] = torch.from_numpy(np.packbits(mask))
            tensors[f"{name}:values"] = t.reshape(-1)[torch.from_numpy(mask)].clone()
            shapes[name] = list(t.shape)
        else:
            tensors[name] = t
    path.parent.mkdir(parents=True, exist_ok=True)
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
    if unexpected or set(missing) - _aliases(model):
        raise ValueError(f"{path} does not match the model: missing {missing}, "
                         f"unexpected {unexpected}")
    return model


class Sparse(CompressMethod):
    """`sparse:S`: unstructured magnitude pruning; any family with an untied Linear layer."""

    kind = "sparse"
    summary = ("unstructured magnitude pruning to sparsity S of the Linear weights; a size "
               "study, no speed claim; any family")
    argument = Argument("S", "sparsity")
    defaults = ("sparse:0.5", "sparse:0.9")
    style = Style("#666666", "X")
    claims_speedup = False
    section_note = ("Unstructured (sparse) variants run dense kernels: their size is a storage "
                    "result, no speedup is claimed.")

    def describe(self, method: Method) -> str:
        return (f"zero the {method.value:.0%} smallest-magnitude entries of every Linear weight "
                "(tied heads excepted); bitmask file; no speed claim")

    def make(self, ctx: Context, method: Method, name: str) -> Built:
        assert method.value is not None
        model, facts = sparsify(ctx.base, method.value)
        if not facts["pruned_layers"]:
            raise UserError(f"{method.text}: the {ctx.family.name} model of rung "
                            f"{ctx.row['rung']} has no Linear layer to sparsify")
        path = ctx.file(name)
        nbytes = save_sparse(model, path)
        n, ne = ctx.counts(model)
        zeros = int(round(facts["sparsity"] * facts["pruned_weights"]))
        facts.update({"n_params_dense": n, "format": SPARSE_FORMAT, "speed_claim": None,
                      "note": "dense kernels on zero-filled weights: latency measured, "
                              "no speedup claimed"})
        return Built(model, path, nbytes, n - zeros, ne - zeros,
                     settings={"sparsity": method.value}, extra=facts)

    def notes(self, variant: Mapping[str, Any], batch: str, unit: str) -> str:
        sparsity = (variant.get("extra") or {}).get("sparsity")
        return (f"sparsity {fmt_spec(sparsity, '.0%')} of the Linear weights; bitmask file; "
                "dense kernels: no speedup claimed")

    def restore(self, family: Family, shape: dict, variant: Mapping[str, Any],
                path: Path) -> nn.Module:
        return load_sparse(family.build(shape), path).float().eval()


__all__ = ["SPARSE_FORMAT", "Sparse", "load_sparse", "save_sparse", "sparsify"]
