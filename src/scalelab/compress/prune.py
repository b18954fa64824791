"""Structured pruning (`prune:R[+ft]`): whole heads, channels and hidden units really removed, so
the pruned model is a smaller model of the same family, built by `family.build(pruned shape)`.
Families: gpt and mlp.

Our own code instead of Torch-Pruning: the models are small modules whose dependency groups are
obvious, so slicing those weights is a few lines and needs no graph tracing.

- gpt: a head = its q, k and v rows of `attn.qkv` plus its columns of `attn.proj`; an MLP channel
  = one row of `mlp.fc` and one column of `mlp.proj`. Each layer loses the same fraction R of its
  heads and of its MLP channels (at least one of each is kept); the residual width d_model and
  `head_dim` stay, so the kept heads compute exactly what they computed before. Because every
  layer keeps the same counts, the pruned model is a GPT of the config `n_head = kept heads,
  d_ff = kept channels` (GPTConfig carries `head_dim` and `d_ff` for this): no special module.
- mlp: a hidden unit = its row of its Linear and its column of the next one (the head for the last
  hidden layer); each hidden layer loses the fraction R of its units (`models.mlp.prune_hidden`
  slices them; the widths may then differ per layer, which the shape's `hidden` list allows).

Importance is activation-weighted: mean |activation| of a feature over calibration batches from
the *training* split (CALIBRATION_BATCHES x CALIBRATION_BATCH_SIZE examples of `task.batch`, fixed
seed) times the L2 norm of the weight column that reads it (its contribution downstream). For
gpt the features are the inputs of `attn.proj` and `mlp.proj`, a head's score is the sum over its
`head_dim` features, and with shared layers (ALBERT-style) the one block is scored over all the
depths it is applied at. For mlp it is `models.mlp.hidden_importance`.

Stored settings: `ratio`, the pruned `shape` (so restoring is `family.build(shape)` + the saved
weights) and `finetune`. `extra.structure` lists what changed as {part, before, after}. Variants
of scalelab 1 stored only `structure` ({"heads": [...], "ffn": [...]} per block); the store's
migration adds their `shape`, and `restore_shape` derives it the same way when it is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_model

from scalelab.compress.base import (
    Argument,
    Built,
    CompressMethod,
    Context,
    Method,
    Style,
    rung_shape,
)
from scalelab.compress.recover import finetune_note, finish
from scalelab.models.base import Family
from scalelab.tasks.base import Task

CALIBRATION_BATCHES = 8
CALIBRATION_BATCH_SIZE = 32
CALIBRATION_SEED = 1234

Scores = list[Any]
Pruned = tuple[nn.Module, dict, list[dict]]  # (model, shape, structure changes)


def keep_count(n: int, ratio: float) -> int:
    """How many of n units a layer keeps at `ratio` (rounded, at least one)."""
    return max(1, int(n * (1.0 - ratio) + 0.5))


def top_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores, in ascending index order (keeps the original layout)."""
    return torch.sort(torch.topk(scores, k).indices).values


def calibration_batches(task: Task) -> list[torch.Tensor]:
    """The inputs importance is measured on: fixed-seed training batches of the task."""
    gen = torch.Generator().manual_seed(CALIBRATION_SEED)
    return [task.batch(CALIBRATION_BATCH_SIZE, gen)[0] for _ in range(CALIBRATION_BATCHES)]


# -- gpt ---------------------------------------------------------------------------------------


@torch.no_grad()
def gpt_importance(model: nn.Module, task: Task, device: torch.device) -> Scores:
    """Per unique block: {"heads": score per head, "ffn": score per MLP channel}."""
    model = model.eval()
    sums: dict[int, dict[str, torch.Tensor]] = {}
    hooks = []
    for i, block in enumerate(model.blocks):
        sums[i] = {}

        def hook(name: str, i: int = i) -> Callable:
            def fn(_module: nn.Module, inputs: tuple) -> None:
                a = inputs[0].detach().abs().float().sum(dim=(0, 1))
                sums[i][name] = sums[i].get(name, 0) + a
            return fn

        hooks.append(block.attn.proj.register_forward_pre_hook(hook("attn")))
        hooks.append(block.mlp.proj.register_forward_pre_hook(hook("ffn")))
    try:
        for x in calibration_batches(task):
            model(x.to(device))
    finally:
        for h in hooks:
            h.remove()
    hd = model.cfg.head_dim
    out = []
    for i, block in enumerate(model.blocks):
        attn_feat = sums[i]["attn"] * block.attn.proj.weight.detach().float().norm(dim=0)
        ffn_feat = sums[i]["ffn"] * block.mlp.proj.weight.detach().float().norm(dim=0)
        out.append({"heads": attn_feat.view(-1, hd).sum(dim=1).cpu(), "ffn": ffn_feat.cpu()})
    return out


@torch.no_grad()
def prune_gpt(family: Family, model: nn.Module, shape: dict, ratio: float,
              scores: Scores) -> Pruned:
    """The GPT of config n_head = kept heads, d_ff = kept channels, with the kept rows and
    columns of every block copied in (everything else copied as is)."""
    cfg = model.cfg
    hd, inner = cfg.head_dim, cfg.n_head * cfg.head_dim
    n_head, d_ff = keep_count(cfg.n_head, ratio), keep_count(cfg.d_ff, ratio)
    new_shape = {**shape, "n_head": n_head, "d_ff": d_ff, "head_dim": hd}
    state = dict(model.state_dict())
    for i, score in enumerate(scores):
        keep_h = top_indices(score["heads"], n_head)
        rows = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in keep_h.tolist()])
        qkv_rows = torch.cat([rows + s * inner for s in range(3)])
        keep_f = top_indices(score["ffn"], d_ff)
        p = f"blocks.{i}."
        for key, index, dim in (("attn.qkv.weight", qkv_rows, 0), ("attn.qkv.bias", qkv_rows, 0),
                                ("attn.proj.weight", rows, 1), ("mlp.fc.weight", keep_f, 0),
                                ("mlp.fc.bias", keep_f, 0), ("mlp.proj.weight", keep_f, 1)):
            t = state[p + key]
            state[p + key] = t.index_select(dim, index.to(t.device))
    ref = next(model.parameters())
    new = family.build(new_shape).to(device=ref.device, dtype=ref.dtype)
    new.load_state_dict(state)
    changes = [{"part": "attention heads per layer", "before": cfg.n_head, "after": n_head},
               {"part": "MLP channels per layer", "before": cfg.d_ff, "after": d_ff}]
    return new.eval(), new_shape, changes


# -- mlp ---------------------------------------------------------------------------------------


@torch.no_grad()
def mlp_importance(model: nn.Module, task: Task, device: torch.device) -> Scores:
    """Per hidden layer, per unit (`models.mlp.hidden_importance` on the calibration batches)."""
    from scalelab.models.mlp import hidden_importance

    x = torch.cat(calibration_batches(task)).to(device)
    return [s.cpu() for s in hidden_importance(model.eval(), x)]


@torch.no_grad()
def prune_mlp(family: Family, model: nn.Module, shape: dict, ratio: float,
              scores: Scores) -> Pruned:
    """The MLP keeping the highest-scoring fraction 1 - ratio of each hidden layer's units."""
    from scalelab.models.mlp import prune_hidden

    keep = [top_indices(s, keep_count(len(s), ratio)).tolist() for s in scores]
    new, new_shape = prune_hidden(model, shape, keep)
    changes = [{"part": "hidden units", "before": list(shape["hidden"]),
                "after": list(new_shape["hidden"])}]
    return new.eval(), new_shape, changes


PRUNERS: dict[str, tuple[Callable[..., Scores], Callable[..., Pruned]]] = {
    "gpt": (gpt_importance, prune_gpt),
    "mlp": (mlp_importance, prune_mlp),
}


def prune_structured(family: Family, model: nn.Module, shape: dict, ratio: float, task: Task,
                     device: torch.device) -> Pruned:
    """Score on the task's calibration batches, then prune the fraction `ratio` (0 keeps every
    unit: the same function, rebuilt)."""
    importance, prune = PRUNERS[family.name]
    return prune(family, model, shape, ratio, importance(model, task, device))


class Prune(CompressMethod):
    """`prune:R[+ft]`: structured pruning of gpt and mlp models (see the module docstring)."""

    kind = "prune"
    summary = ("structured: remove the fraction R of heads and MLP channels (gpt) or hidden "
               "units (mlp); +ft adds a short recovery fine-tune")
    argument = Argument("R", "ratio")
    finetune_option = True
    families = tuple(PRUNERS)
    defaults = ("prune:0.25", "prune:0.5", "prune:0.5+ft")
    style = Style("#e7298a", "D")

    def describe(self, method: Method) -> str:
        ft = ", then a recovery fine-tune" if method.finetune else ""
        return (f"remove {method.value:.0%} of each layer's attention heads and MLP channels "
                f"(gpt) or hidden units (mlp){ft}")

    def make(self, ctx: Context, method: Method, name: str) -> Built:
        assert method.value is not None
        model, shape, changes = prune_structured(ctx.family, ctx.base, ctx.shape, method.value,
                                                 ctx.task, ctx.device)
        return finish(ctx, model, name, method, {"ratio": method.value, "shape": shape},
                      {"structure": changes, "shape_before": ctx.family.describe(ctx.shape),
                       "shape_after": ctx.family.describe(shape)})

    def notes(self, variant: Mapping[str, Any], batch: str, unit: str) -> str:
        """What was removed ("attention heads per layer 4 → 2, ..."), then the fine-tune."""
        st, ex = variant.get("settings") or {}, variant.get("extra") or {}
        if ex.get("structure"):
            removed = ", ".join(f"{c.get('part')} {c.get('before')} → {c.get('after')}"
                                for c in ex["structure"])
        else:  # scalelab 1 variants: per-block widths in the settings, the old ones in extra
            s = st.get("structure") or {}
            removed = (f"heads per layer {ex.get('heads_before')} → {s.get('heads')}, MLP "
                       f"channels {ex.get('ffn_before')} → {s.get('ffn')}")
        return removed + finetune_note(st, ex, unit)

    def restore_shape(self, variant: Mapping[str, Any], rungs: Mapping[int, dict]) -> dict:
        settings = variant.get("settings") or {}
        if settings.get("shape"):
            return dict(settings["shape"])
        structure = settings.get("structure") or {}
        heads, ffn = structure.get("heads") or [], structure.get("ffn") or []
        if len(set(heads)) != 1 or len(set(ffn)) != 1:
            raise ValueError(f"variant {variant.get('name')}: prune settings hold neither a "
                             f"shape nor one width per model ({structure})")
        return {**rung_shape(rungs[variant["of_rung"]]), "n_head": heads[0], "d_ff": ffn[0]}

    def restore(self, family: Family, shape: dict, variant: Mapping[str, Any],
                path: Path) -> nn.Module:
        model = family.build(shape)
        load_model(model, str(path))
        return model.float().eval()


__all__ = ["CALIBRATION_BATCHES", "CALIBRATION_BATCH_SIZE", "CALIBRATION_SEED", "PRUNERS",
           "Prune", "gpt_importance", "keep_count", "mlp_importance", "prune_gpt", "prune_mlp",
           "prune_structured", "top_indices"]
