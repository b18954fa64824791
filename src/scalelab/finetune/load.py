"""Load a stored fine-tune back: the model as it was trained (the PEFT model for LoRA and IA3),
and the plain model to ship (the full fine-tune, or the adapter merged into the base weights).

Everything is rebuilt from the study: the rung's shape and final weights, the new head's size from
the second task's recorded inputs and outputs, the method's settings and resolved target modules
from the fine-tune's row, then the saved file (the whole model, or the adapter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch.nn as nn

from scalelab.errors import UserError
from scalelab.finetune import adapters
from scalelab.finetune.adapters import Targets
from scalelab.finetune.methods import parse_method


def find(finetunes: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    for f in finetunes:
        if f["name"] == name:
            if f["status"] != "done":
                raise UserError(f"fine-tune {name} has not finished (status {f['status']})")
            return f
    known = ", ".join(f["name"] for f in finetunes if f["status"] == "done") or "none"
    raise UserError(f"fine-tune {name!r} does not exist (fine-tunes: {known})")


def load_finetune(folder: str | Path, ft: Mapping[str, Any], rungs: Sequence[dict],
                  family: Any) -> tuple[nn.Module, nn.Module]:
    """(trained, shipped): CPU fp32 modules in eval mode; the same object twice for a full
    fine-tune; for LoRA/IA3 the PEFT model and a merged copy of it."""
    from safetensors.torch import load_model

    from scalelab.compress.load import load_rung_model

    folder = Path(folder)
    path = folder / str((ft.get("extra") or {}).get("file") or "-")
    if not path.is_file():
        raise UserError(f"fine-tune {ft['name']}'s file is missing ({path})")
    row = next((r for r in rungs if r["rung"] == ft["of_rung"]), None)
    if row is None:
        raise UserError(f"fine-tune {ft['name']} is of rung {ft['of_rung']}, which the study "
                        "lacks")
    settings = ft.get("settings") or {}
    model = load_rung_model(folder, row, family)
    if settings.get("new_head"):
        n_out = ((ft.get("task_spec") or {}).get("io") or {}).get("n_outputs")
        adapters.replace_head(model, int(n_out), int(settings.get("seed", 0)))
    method = parse_method(settings["method"])
    if not method.peft:
        load_model(model, str(path))
        model.eval()
        return model, model
    targets = Targets(list(settings["targets_resolved"]), list(settings.get("feedforward") or []))
    head = adapters.output_layer(model) if settings.get("new_head") else None
    trained = adapters.apply_method(model, method, targets, head, int(settings.get("seed", 0)))
    adapters.load_adapter(trained, path)
    trained.eval()
    return trained, adapters.merged(trained).eval()


__all__ = ["find", "load_finetune"]
