"""The compression method protocol, what a method is handed (`Context`) and returns (`Built`), and
the registry of methods.

A method kind (`int8`, `prune`, ...) is one object, a subclass of `CompressMethod`, that offers

- `supports(family, objective) -> Support`: whether it applies to a study's family (by name) and
  task objective (lm, classification, regression); a `Support` is truthy when it does and carries
  the one line shown to the user when it does not, e.g.
  "prune does not apply to family 'cnn' (it supports gpt, mlp)";
- `describe(method) -> str`: one line saying what the parsed method does;
- `make(ctx, method, name) -> Built`: the compressed model, its saved file and counts, and the
  method's own settings and facts (measurement is not the method's job: the driver measures every
  variant with `train.measure.measure_model`, the rungs' harness);
- `after_measure(built, measured) -> dict`: facts that need the measurement (e.g. int8's speedup
  over the fp32 graph in the same runtime); empty by default;
- `restore_shape(variant, rungs) -> dict`: the family shape a stored variant is built from
  (default: the settings' `shape`, else its rung's shape);
- `restore(family, shape, variant, path) -> nn.Module`: the stored variant as a CPU fp32 module
  (int8: its ONNX Runtime module).

Parsing stays in `methods.py` (pure, no torch), so adding a method is its `methods.py` syntax,
one module with its class, and one line in `REGISTRY`. Method modules are imported on first use,
so parsing and planning never import torch.

Decisions:
- `supports` takes the family's *name*: a study row, the stored spec and a Family object all give
  it, so the read-only checks of the CLI run before any model or task is built.
- A method that does not apply is a UserError before anything runs when the user named it; the
  default method list (no `--methods`, or `compress: {}` in a spec) quietly keeps the methods that
  apply (`applicable`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from scalelab.compress.methods import KINDS, Method
from scalelab.errors import UserError

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from scalelab.models.base import Family
    from scalelab.records import RungPlan
    from scalelab.spec import StudySpec
    from scalelab.tasks.base import Task

REGISTRY: dict[str, str] = {
    "int8": "scalelab.compress.quantize:Int8",
    "fp16": "scalelab.compress.quantize:Cast",
    "bf16": "scalelab.compress.quantize:Cast",
    "prune": "scalelab.compress.prune:Prune",
    "sparse": "scalelab.compress.sparse:Sparse",
    "lowrank": "scalelab.compress.lowrank:LowRank",
    "distill": "scalelab.compress.distill:Distill",
}
assert set(REGISTRY) == set(KINDS), "every parsed method kind needs a registry entry"

ProgressFn = Callable[[str, int, int, float], None]


@dataclass(frozen=True)
class Support:
    """Whether a method applies; `reason` is the user-facing line when it does not."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


@dataclass
class Built:
    """What `make` returns: the model to measure, its saved file (`bytes` of it, not an
    estimate), parameter counts, and the method's settings (stored with the variant, enough to
    restore it) and facts (`extra`). `device`: where the model runs when that is not the study's
    device (int8 runs in ONNX Runtime on the CPU)."""

    model: nn.Module
    path: Path
    bytes: int
    n_params: int
    n_nonembed: int
    settings: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    device: torch.device | None = None


@dataclass
class Context:
    """Everything a method's `make` may use: the study's spec, task and family, the base rung
    (its store row and its trained model on `device`), where variant files go, the distillation
    students chosen by the plan, and the progress callback of the caller."""

    spec: StudySpec
    task: Task
    family: Family
    device: torch.device
    row: dict
    base: nn.Module
    folder: Path  # the study's variants/ folder
    students: Mapping[Method, dict] = field(default_factory=dict)
    study: dict = field(default_factory=dict)  # the store's study record
    on_progress: ProgressFn | None = None

    @property
    def plan(self) -> RungPlan:
        from scalelab.records import RungPlan

        return RungPlan.from_dict(self.row["plan"])

    @property
    def shape(self) -> dict:
        return rung_shape(self.row)

    def file(self, name: str, suffix: str = ".safetensors") -> Path:
        return self.folder / f"{name}{suffix}"

    def progress(self, label: str, total: int) -> Callable[[int, float], None] | None:
        if self.on_progress is None:
            return None
        report = self.on_progress
        return lambda step, loss: report(label, step, total, loss)

    def counts(self, model: nn.Module) -> tuple[int, int]:
        return self.family.count_params(model)


def rung_shape(row: Mapping[str, Any]) -> dict:
    """The family shape of a stored rung row (v2 rows carry `shape`; else the plan's)."""
    shape = row.get("shape") or (row.get("plan") or {}).get("shape")
    if not shape:
        raise UserError(f"rung {row.get('rung')} has no stored shape; upgrade the study "
                        "(open it once with `scalelab run` or `scalelab compress`)")
    return dict(shape)


class CompressMethod:
    """Base class of the registry's objects; see the module docstring for the protocol."""

    kind: ClassVar[str] = ""
    families: ClassVar[tuple[str, ...] | None] = None  # None: every family
    objectives: ClassVar[tuple[str, ...] | None] = None  # None: every task objective

    def __init__(self, kind: str | None = None) -> None:
        self.kind = kind or type(self).kind

    def supports(self, family: str, objective: str | None = None) -> Support:
        if self.families is not None and family not in self.families:
            return Support(False, f"{self.kind} does not apply to family {family!r} "
                                  f"(it supports {', '.join(self.families)})")
        if objective is not None and self.objectives is not None \
                and objective not in self.objectives:
            return Support(False, f"{self.kind} does not apply to a task with objective "
                                  f"{objective!r} (it supports "
                                  f"{', '.join(self.objectives)})")
        return Support(True)

    def describe(self, method: Method) -> str:
        raise NotImplementedError

    def make(self, ctx: Context, method: Method, name: str) -> Built:
        raise NotImplementedError

    def after_measure(self, built: Built, measured: dict) -> dict:
        return {}

    def restore_shape(self, variant: Mapping[str, Any], rungs: Mapping[int, dict]) -> dict:
        settings = variant.get("settings") or {}
        if settings.get("shape"):
            return dict(settings["shape"])
        return rung_shape(rungs[variant["of_rung"]])

    def restore(self, family: Family, shape: dict, variant: Mapping[str, Any],
                path: Path) -> nn.Module:
        raise NotImplementedError


_INSTANCES: dict[str, CompressMethod] = {}


def get_method(kind: str) -> CompressMethod:
    """The registry's object for a method kind (imported on first use)."""
    if kind not in REGISTRY:
        raise UserError(f"unknown compression method {kind!r}; known methods: "
                        f"{', '.join(REGISTRY)}")
    if kind not in _INSTANCES:
        module, _, attr = REGISTRY[kind].partition(":")
        _INSTANCES[kind] = getattr(importlib.import_module(module), attr)(kind)
    return _INSTANCES[kind]


def check_supported(methods: Sequence[Method], family: str, objective: str | None) -> None:
    """One UserError line for the first method that does not apply, before anything runs."""
    for m in methods:
        support = get_method(m.kind).supports(family, objective)
        if not support:
            raise UserError(f"{m.text}: {support.reason}" if m.text != m.kind
                            else support.reason)


def applicable(methods: Sequence[Method], family: str, objective: str | None) -> list[Method]:
    """The methods of a default list that apply to this family and objective."""
    return [m for m in methods if get_method(m.kind).supports(family, objective)]


__all__ = ["REGISTRY", "Built", "CompressMethod", "Context", "Support", "applicable",
           "check_supported", "get_method", "rung_shape"]
