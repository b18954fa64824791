"""Which layers the family-neutral methods (sparse, lowrank) touch, found on any nn.Module.

Rule: every `nn.Linear` whose weight is not an `nn.Embedding`'s weight. Embeddings are lookups,
not matmuls, and a head tied to the token embedding (GPT) shares that matrix, so sparsifying or
factoring it would change the embedding too. For the GPT family this is exactly the Linear layers
of the blocks (its head is tied); for an MLP it is every hidden layer and the head; for a CNN the
head only (convolutions are not Linear layers).
"""

from __future__ import annotations

import torch.nn as nn


def untied_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """(qualified name, layer) of every Linear not tied to an embedding, in module order; a
    Linear reachable under several names (shared layers) is listed once."""
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    out, seen = [], set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in embedded \
                and id(module) not in seen:
            seen.add(id(module))
            out.append((name, module))
    return out


def parent_and_attr(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The module holding the submodule `name` and its attribute name there."""
    parent_name, _, attr = name.rpartition(".")
    return (root.get_submodule(parent_name) if parent_name else root), attr


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, attr = parent_and_attr(root, name)
    setattr(parent, attr, module)


__all__ = ["parent_and_attr", "set_submodule", "untied_linears"]
