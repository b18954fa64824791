"""Load stored models back: a rung's trained weights, and a stored variant through its method.

Both build from a family shape (`family.build(shape)`), never from a family-specific config: a
rung from its row's `shape`, a variant from the shape its method says (`restore_shape`: the
pruned or student shape stored in its settings, else its rung's), then the method's `restore`
loads the weights (int8: the ONNX Runtime module of its .onnx file). Variants of scalelab 1
studies load too (the store migrates their rows; prune and distill settings without a `shape`
are resolved from their `structure` and `student_rung`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scalelab.compress.base import get_method, rung_shape
from scalelab.errors import UserError

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from scalelab.models.base import Family


def load_rung_model(folder: str | Path, row: Mapping[str, Any], family: Family,
                    device: torch.device | str | None = None) -> nn.Module:
    """The trained fp32 model of a rung, from its safetensors weights, in eval mode."""
    from safetensors.torch import load_model

    path = Path(folder) / str(row.get("checkpoint") or "-")
    if not row.get("checkpoint") or not path.is_file():
        raise UserError(f"rung {row['rung']}'s weights are missing ({path})")
    model = family.build(rung_shape(row))
    load_model(model, str(path))
    return model.to(device or "cpu").eval()


def load_variant(folder: str | Path, variant: Mapping[str, Any], rungs: Sequence[dict],
                 family: Family) -> nn.Module:
    """Rebuild a stored variant as a CPU fp32 nn.Module (int8: its ONNX Runtime module)."""
    path = Path(folder) / str((variant.get("extra") or {}).get("file") or "-")
    if not path.is_file():
        raise UserError(f"variant {variant['name']}'s file is missing ({path})")
    try:
        method = get_method(variant["method"])
    except UserError:
        raise UserError(f"variant {variant['name']} has an unknown method "
                        f"{variant['method']!r}") from None
    rows = {r["rung"]: r for r in rungs}
    shape = method.restore_shape(variant, rows)
    return method.restore(family, shape, variant, path)


__all__ = ["load_rung_model", "load_variant"]
