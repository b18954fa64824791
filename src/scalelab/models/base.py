"""The Family protocol and registry: how a family turns a target size into a model.

A family is constructed from its spec options (`Options`, a pydantic model; unknown keys are
errors) and offers

- `accepts`: the task input kinds it can model (`TaskIO.kind`: sequence, vector, image);
- `context`: the sequence length it asks of a sequence task, or None;
- `shape_for(target_n, io)`: the shape (a JSON-able dict, opaque to every other stage) whose
  non-embedding parameter count comes closest to `target_n` under the family's one rule;
- `build(shape)`: a fresh `nn.Module`; its forward takes the task's input batch and returns the
  task's outputs (logits, or one value per example for regression);
- `count_params(model)` -> (n_params, n_nonembed);
- `describe(shape)`: a short text for tables ("4x144", "3x256", ...);
- optionally `fingerprint()`: what identifies the code that builds its models beyond its
  options (`family_fingerprint`); a resumed study refuses to go on when it changed.

The shape must hold everything `build` needs (input and output sizes included), so a stored rung
can be rebuilt from its shape alone. Adding a family is one file in `models/` plus one line in
`REGISTRY`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn as nn

from scalelab.errors import UserError
from scalelab.spec import parse_options
from scalelab.tasks.base import TaskIO

REGISTRY: dict[str, str] = {
    "gpt": "scalelab.models.gpt:GPTFamily",
    "mlp": "scalelab.models.mlp:MLPFamily",
    "cnn": "scalelab.models.cnn:CNNFamily",
    "custom": "scalelab.models.custom:CustomFamily",
    "hf": "scalelab.models.hf:HFFamily",
}


@runtime_checkable
class Family(Protocol):
    name: str
    accepts: tuple[str, ...]
    context: int | None

    def shape_for(self, target_n: float, io: TaskIO) -> dict: ...

    def build(self, shape: dict) -> nn.Module: ...

    def count_params(self, model: nn.Module) -> tuple[int, int]: ...

    def describe(self, shape: dict) -> str: ...


class FamilyBase:
    """What most families share: no context length, and parameters counted by `count_params`.
    A family subclasses it and adds its rule (`shape_for`), `build` and `describe`."""

    context: int | None = None
    name: str

    def count_params(self, model: nn.Module) -> tuple[int, int]:
        return count_params(model)

    def builder(self, shape: dict) -> str:
        """Who built the model of `shape`, for messages: "family 'mlp' at 3x64"."""
        return f"family {self.name!r} at {self.describe(shape)}"  # type: ignore[attr-defined]

    def fingerprint(self) -> dict:
        """The built-in families (gpt, mlp, cnn) are fingerprinted by their name alone: their
        code is scalelab's, their options are in the spec (which a resume compares already), and
        a change of their code that changes a model changes its parameter count, which a resume
        checks rung by rung (`scalelab.planned`). Fingerprinting scalelab's source or version
        instead would refuse every study made before an upgrade, the b309b61 ones included,
        though their models are built the same."""
        return {"family": self.name}


def count_params(model: nn.Module) -> tuple[int, int]:
    """(n_params, n_nonembed): unique parameters (tied ones once); non-embedding leaves out the
    weights of every nn.Embedding."""
    n_params = sum(p.numel() for p in model.parameters())
    seen: set[int] = set()
    embed = 0
    for m in model.modules():
        if isinstance(m, nn.Embedding) and id(m.weight) not in seen:
            seen.add(id(m.weight))
            embed += m.weight.numel()
    return n_params, n_params - embed


def closest_knob(target: float, count: Callable[[int], int], lo: int = 1,
                 hi: int = 1 << 20) -> int:
    """The integer knob whose count(knob) is closest to target in log, for a count that grows
    with the knob: a bisection to the crossing, then the better of its two neighbours."""
    if target <= 0:
        raise ValueError("target size must be positive")
    if count(lo) >= target:
        return lo
    a, b = lo, lo + 1
    while count(b) < target:  # gallop up to bracket the target
        a, b = b, min(hi, 2 * b)
        if a == hi:
            return hi
    while b - a > 1:
        mid = (a + b) // 2
        if count(mid) < target:
            a = mid
        else:
            b = mid
    return min((a, b), key=lambda k: abs(math.log(max(count(k), 1) / target)))


def family_fingerprint(family: Family) -> dict:
    """The family's `fingerprint()`, or its name for a user's family object without one."""
    fingerprint = getattr(family, "fingerprint", None)
    return fingerprint() if callable(fingerprint) else {"family": family.name}


def built_counts(family: Family, shape: dict) -> tuple[int, int]:
    """(n_params, n_nonembed) of the model `family.build(shape)` makes now. Built for real, as
    the ladder counts it: on the meta device the first build of some models loads PyTorch's
    meta kernels, seconds on a small CPU, more than a small model costs. (It draws random
    numbers for the initialisation; a rung seeds its own generator before it builds.)"""
    return family.count_params(family.build(shape))


PROBE_BATCH = 2  # examples in the forward pass that checks a model against its task


def check_forward(family: Family, shape: dict, task: Any) -> None:
    """One forward pass of the model of `shape` on an example batch of `task`, so a model whose
    inputs or outputs do not fit the task is one UserError line before the study folder is
    written, not a shape error mid-training. Built and run for real on the CPU (the meta
    device would first load PyTorch's meta kernels: seconds)."""
    from scalelab.tasks.base import describe_io

    x = task.example_input(PROBE_BATCH)
    model = family.build(shape)  # its own errors (a factory that raises) are its own
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as err:
        text = " ".join(str(err).split())
        raise UserError(f"{_builder(family, shape)} does not fit the task's inputs "
                        f"(a batch of shape {tuple(x.shape)}): {type(err).__name__}: {text}; "
                        f"the task gives {describe_io(task)}") from None
    want = _output_shape(task.io, task.objective, x)
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if got is None or math.prod(got) != math.prod(want) or (want[-1] > 1 and got[-1] != want[-1]):
        raise UserError(f"{_builder(family, shape)} returns outputs of shape {got} for a batch of "
                        f"shape {tuple(x.shape)}; the task needs {want} ({describe_io(task)})")


def _output_shape(io: TaskIO, objective: str, x: torch.Tensor) -> tuple[int, ...]:
    """What the task's loss needs from a model for the inputs `x`: logits per example (per
    position for sequences), or one value per example for regression."""
    lead = tuple(x.shape[:2]) if io.kind == "sequence" else (x.shape[0],)
    return lead + (1 if objective == "regression" else io.n_outputs,)


def _builder(family: Family, shape: dict) -> str:
    builder = getattr(family, "builder", None)
    return builder(shape) if callable(builder) else f"family {family.name!r} at {shape}"


def family_class(name: str) -> Any:
    if name not in REGISTRY:
        raise UserError(f"unknown family {name!r}; known families: {', '.join(REGISTRY)}")
    module, _, attr = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def get_family(name: str, **options: Any) -> Family:
    cls = family_class(name)
    return cls(parse_options(cls.Options, options, f"family ({name})"))


def family_options(name: str, options: dict) -> dict:
    cls = family_class(name)
    return parse_options(cls.Options, options, f"family ({name})").model_dump(mode="json")


def check_fit(family: Family, io: TaskIO, task_name: str) -> None:
    """A family that cannot model the task's inputs is one clear line before anything runs."""
    if io.kind not in family.accepts:
        raise UserError(f"family {family.name!r} does not fit task {task_name!r}: it models "
                        f"{' or '.join(family.accepts)} inputs, the task gives {io.kind} inputs")
