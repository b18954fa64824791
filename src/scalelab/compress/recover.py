"""The `+ft` recovery fine-tune, and the common end of every structurally smaller variant.

Recovery fine-tunes run the rung's own training loop (`train_rung(model=...)`) for
FINETUNE_FRACTION of the rung's steps at FINETUNE_LR_FRACTION of its learning rate (cosine, no
warm-up), on batches from a different seed than the rung's (plan seed + FINETUNE_SEED_OFFSET), so
the fine-tune does not replay the rung's own stream. The training loss is the task's own.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping
from typing import Any

import torch.nn as nn

from scalelab.compress.base import Built, Context, Method
from scalelab.train.checkpoint import save_weights
from scalelab.train.loop import train_rung
from scalelab.values import fmt_spec

FINETUNE_FRACTION = 0.1
FINETUNE_LR_FRACTION = 0.2
FINETUNE_SEED_OFFSET = 100_000


def finetune(ctx: Context, model: nn.Module, name: str) -> dict:
    """Short recovery fine-tune of `model` in place; returns the facts stored in `extra`."""
    p = ctx.plan
    steps = max(1, round(FINETUNE_FRACTION * p.steps))
    ft = dataclasses.replace(p, steps=steps, D=steps * p.units_per_step,
                             lr=FINETUNE_LR_FRACTION * p.lr, warmup_steps=0,
                             seed=p.seed + FINETUNE_SEED_OFFSET)
    ckpt = ctx.folder / f"{name}-ckpt"
    out = train_rung(ft, ctx.task, ctx.spec.train, ctx.device, ckpt, model=model,
                     on_progress=ctx.progress(f"{name} fine-tune", steps))
    shutil.rmtree(ckpt, ignore_errors=True)
    model.eval()
    return {"finetune_steps": out.steps, "finetune_D": out.tokens, "finetune_unit": p.unit,
            "finetune_lr": ft.lr, "finetune_seconds": out.train_seconds,
            "finetune_status": out.status}


def finetune_note(settings: Mapping[str, Any], extra: Mapping[str, Any], unit: str) -> str:
    """The recovery fine-tune clause of a variant's report note ("; recovery fine-tune 1,600
    tokens"), or nothing."""
    if not settings.get("finetune"):
        return ""
    d = extra.get("finetune_D", extra.get("finetune_tokens"))  # scalelab 1: finetune_tokens
    return f"; recovery fine-tune {fmt_spec(d, ',.0f')} {extra.get('finetune_unit') or unit}s"


def finish(ctx: Context, model: nn.Module, name: str, method: Method, settings: dict,
           extra: dict) -> Built:
    """A structurally smaller model (pruned, factored): the optional recovery fine-tune, its
    saved file and exact counts (`nonembed_ratio` against the rung)."""
    if method.finetune:
        extra.update(finetune(ctx, model, name))
    path = ctx.file(name)
    n, ne = ctx.counts(model)
    extra["nonembed_ratio"] = ne / ctx.row["n_nonembed"]
    return Built(model, path, save_weights(model, path), n, ne,
                 settings={**settings, "finetune": method.finetune}, extra=extra)


__all__ = ["FINETUNE_FRACTION", "FINETUNE_LR_FRACTION", "FINETUNE_SEED_OFFSET", "finetune",
           "finetune_note", "finish"]
