"""The torch side of the methods: which Linear layers a method touches, PEFT's LoRA and IA3 on a
family's model, a new output layer, trainable counts, adapter files and merging.

Layers. A method's targets resolve to full module paths of `nn.Linear` layers of the rung's model
(family-neutral, from `named_modules()`):

- the output layer is the module named `head` when there is one (every scalelab family names it
  so), else the last Linear layer; `all` is every Linear layer but that one;
- `attn` is every Linear layer with a path component `attn`, `attention` or `self_attn`; `mlp`
  every one with a component `mlp`, `ffn` or `feed_forward`;
- a name matches the Linear layers whose path is the name or ends in `.name` (PEFT's rule);
- IA3 by default takes the IA3 paper's places: in each attention module every Linear layer but its
  last (the output projection), scaling their outputs (a GPT's fused `qkv`, so queries too, not
  only keys and values), and the last Linear layer of each MLP module, scaling its input (the
  MLP's inner activation); a model without attention modules gets every Linear layer but the
  output, scaling inputs.

A layer whose weight is shared with another module (a GPT's head, tied to its token embedding) is
never a target: an adapter on it could not be merged without changing the other module too.

PEFT: `get_peft_model(model, LoraConfig | IA3Config)` with the resolved paths as
`target_modules` (exact names, so nothing else matches), `bias="none"`; a new head is listed in
`modules_to_save` so it trains fully and is saved with the adapter. The adapter file holds
`get_peft_model_state_dict` (the adapter weights and the new head only).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from scalelab.errors import UserError
from scalelab.finetune.methods import FTMethod

ATTN_PARTS = ("attn", "attention", "self_attn")
MLP_PARTS = ("mlp", "ffn", "feed_forward")
ADAPTER_NAME = "default"


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def output_layer(model: nn.Module) -> str | None:
    lins = linear_layers(model)
    if "head" in lins:
        return "head"
    return list(lins)[-1] if lins else None


def _shared(model: nn.Module) -> set[str]:
    """Linear layers whose weight is also another module's parameter (tied weights)."""
    owners: dict[int, list[str]] = {}
    for name, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append(f"{name}.{pname}")
    return {n for n, m in linear_layers(model).items() if len(owners.get(id(m.weight), [])) > 1}


def _component(name: str, parts: Sequence[str]) -> str | None:
    """The path of the module named one of `parts` that holds layer `name`, if any."""
    pieces = name.split(".")
    for i, p in enumerate(pieces[:-1]):
        if p in parts:
            return ".".join(pieces[: i + 1])
    return None


@dataclass
class Targets:
    """Resolved targets: module paths, and (IA3) those scaled at their input."""

    modules: list[str]
    feedforward: list[str]


def resolve_targets(model: nn.Module, method: FTMethod, where: str) -> Targets:
    """The Linear layers `method` adapts in `model`; UserError (one line) for a name that
    matches nothing, a tied layer, or a rank larger than a targeted layer."""
    lins = linear_layers(model)
    out = output_layer(model)
    shared = _shared(model)
    usable = [n for n in lins if n != out and n not in shared]
    names = method.targets
    if names is None and method.kind == "ia3":
        chosen = _ia3_default(usable)
        if not chosen.modules:
            raise UserError(f"{method.text}: {where} has no Linear layer but its output layer")
        return chosen
    names = names or ("all",)
    chosen: list[str] = []
    for name in names:
        if name == "all":
            hits = usable
        elif name == "attn":
            hits = [n for n in usable if _component(n, ATTN_PARTS)]
        elif name == "mlp":
            hits = [n for n in usable if _component(n, MLP_PARTS)]
        else:
            hits = [n for n in lins if n == name or n.endswith("." + name)]
            bad = [n for n in hits if n in shared]
            if bad:
                raise UserError(f"{method.text}: {bad[0]} shares its weight with another module "
                                "(tied); an adapter on it cannot be merged")
        if not hits:
            listing = ", ".join(list(lins)[:8]) + (", ..." if len(lins) > 8 else "")
            raise UserError(f"{method.text}: target module {name!r} matches no Linear layer of "
                            f"{where} (its Linear layers: {listing}; or all, attn, mlp)")
        chosen += [n for n in hits if n not in chosen]
    if method.kind == "lora":
        for n in chosen:
            lin = lins[n]
            limit = min(lin.in_features, lin.out_features)
            if method.rank > limit:
                raise UserError(f"{method.text}: rank {method.rank} is larger than layer {n} of "
                                f"{where} ({lin.in_features} -> {lin.out_features}); its rank "
                                f"is at most {limit}")
    ff = [n for n in chosen if not _component(n, ATTN_PARTS)] if method.kind == "ia3" else []
    return Targets(chosen, ff)


def _ia3_default(usable: list[str]) -> Targets:
    attn = [n for n in usable if _component(n, ATTN_PARTS)]
    if not attn:
        return Targets(list(usable), list(usable))
    groups: dict[str, list[str]] = {}
    for n in attn:
        groups.setdefault(_component(n, ATTN_PARTS), []).append(n)
    scaled = [n for members in groups.values() for n in members[:-1]]
    mlps: dict[str, list[str]] = {}
    for n in usable:
        comp = _component(n, MLP_PARTS)
        if comp and not _component(n, ATTN_PARTS):
            mlps.setdefault(comp, []).append(n)
    ff = [members[-1] for members in mlps.values()]
    return Targets(scaled + ff, ff)


def replace_head(model: nn.Module, n_outputs: int, seed: int) -> str:
    """Replace the output layer with a fresh nn.Linear of `n_outputs` (PyTorch's default init,
    seeded); returns its path."""
    name = output_layer(model)
    if name is None:
        raise UserError("the model has no Linear output layer to replace for the new task")
    old = linear_layers(model)[name]
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)
    new = nn.Linear(old.in_features, n_outputs, bias=old.bias is not None)
    torch.set_rng_state(gen_state)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    setattr(parent, name.rpartition(".")[2], new)
    return name


def apply_method(model: nn.Module, method: FTMethod, targets: Targets | None,
                 head: str | None, seed: int) -> nn.Module:
    """The model to train: `model` itself for full fine-tuning (every parameter trainable), or
    the PEFT model wrapping it. The adapter's random init (LoRA's A) is seeded."""
    if not method.peft:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import IA3Config, LoraConfig, get_peft_model

    save = [head] if head else None
    if method.kind == "lora":
        cfg = LoraConfig(r=method.rank, lora_alpha=method.alpha, lora_dropout=method.dropout,
                         target_modules=list(targets.modules), bias="none",
                         modules_to_save=save)
    else:
        cfg = IA3Config(target_modules=list(targets.modules),
                        feedforward_modules=list(targets.feedforward), modules_to_save=save)
    torch.manual_seed(seed)
    return get_peft_model(model, cfg)


def counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, all) unique parameters of the model being trained."""
    params = list({id(p): p for p in model.parameters()}.values())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def train_state_bytes(model: nn.Module) -> int:
    """Parameter-side training memory: every weight, plus a gradient and AdamW's two moments for
    each trainable one (activations excluded: they depend on the batch, not the method)."""
    params = list({id(p): p for p in model.parameters()}.values())
    return sum(p.numel() * p.element_size() * (4 if p.requires_grad else 1) for p in params)


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def save_adapter(model: nn.Module, path) -> int:
    """The adapter's weights (and a new head) as one safetensors file; returns its bytes."""
    import os

    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(adapter_state(model), str(tmp))
    os.replace(tmp, path)
    return path.stat().st_size


def load_adapter(model: nn.Module, path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(model, load_file(str(path)))
    missing = [k for k in getattr(result, "unexpected_keys", []) or []]
    if missing:
        raise UserError(f"adapter file {path} does not fit the model ({missing[0]} ...)")


def merged(model: nn.Module) -> nn.Module:
    """A plain model with the adapter merged into its weights (a copy; `model` is kept)."""
    if not hasattr(model, "merge_and_unload"):
        return model
    return copy.deepcopy(model).merge_and_unload()


@torch.no_grad()
def merge_diff(adapter_model: nn.Module, merged_model: nn.Module, x: torch.Tensor) -> dict:
    """How well a merge reproduces its adapter model on inputs `x`: the largest absolute logit
    difference computed in float64 (`float64`: copies of both models in double precision, so
    only the merge is judged: the merged weights as stored, against the adapter's exact
    function) and in float32 (`float32`: what the two shipped models give; two fp32 forward
    passes of algebraically equal models differ by rounding alone, measured up to ~1e-5 on the
    --quick rungs' logits of real text)."""
    out = {}
    for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
        a = copy.deepcopy(adapter_model).to(dtype).eval()
        b = copy.deepcopy(merged_model).to(dtype).eval()
        xi = x if not torch.is_floating_point(x) else x.to(dtype)
        out[name] = float((a(xi).double() - b(xi).double()).abs().max().item())
    return out


def base_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """The frozen base weights of a PEFT model by their plain-model names (for checks)."""
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            continue
        plain = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        out[plain] = p
    return out


__all__ = ["Targets", "adapter_state", "apply_method", "base_parameters", "counts", "merge_diff",
           "linear_layers", "load_adapter", "merged", "output_layer", "replace_head",
           "resolve_targets", "save_adapter", "train_state_bytes"]
