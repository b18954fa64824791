"""The compression method plugin, the registry of methods, what a method is handed (`Context`)
and returns (`Built`).

A method kind (`int8`, `prune`, ...) is one class, a subclass of `CompressMethod`, in one module,
plus one line in `REGISTRY` (`kind: "module:Class"`). The class declares everything the rest of
scalelab shows or checks about the method, so nothing else names it:

- what its method string takes (`argument`: an `Argument`, or None for a bare name such as
  `int8`; `finetune_option`: whether `+ft` applies; `takes_student`: whether the plan gives it a
  smaller trained rung, as `distill`); parsing, the syntax in messages and help, and the variant
  names follow from these;
- `summary` (one line for `scalelab compress --help` and `scalelab list methods`) and
  `describe(method)` (one line on what a parsed method does, said as its variant starts);
- `families` and `objectives` it applies to (None: all); `supports(family, objective)` returns a
  `Support` that is truthy when it applies and carries the one line shown when it does not, e.g.
  "prune does not apply to family 'cnn' (it supports gpt, mlp)";
- `defaults`: its method strings in the default list (no `--methods`);
- its report style: `style` (legend label, colour, marker), `claims_speedup` (False: tables
  say "not claimed" instead of a speedup), `section_note` (a sentence the compression section
  adds when the study has such variants), `notes(variant, batch, unit)` (the notes cell of its
  table row) and `report_table(variants, unit)` (a table of its own, or None);
- `make(ctx, method, name) -> Built`: the compressed model, its saved file and counts, and the
  method's own settings and facts (measurement is not the method's job: the job measures every
  variant with `train.measure.measure_model`, the rungs' harness);
- `after_measure(built, measured) -> dict`: facts that need the measurement (e.g. int8's speedup
  over the fp32 graph in the same runtime); empty by default;
- `restore_shape(variant, rungs) -> dict` and `restore(family, shape, variant, path)`: the stored
  variant as a CPU fp32 module (int8: its ONNX Runtime module); `restored_note` is what export
  says of it (a cast's weights run in fp32; int8's difference is its quantization error).

This module and `methods.py` (parsing) import no torch; a method's own module is imported the
first time its kind is looked up (`get_method`).

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

from scalelab import latency
from scalelab.errors import UserError
from scalelab.progress import ProgressFn
from scalelab.values import fmt_spec

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from scalelab.models.base import Family
    from scalelab.records import RungPlan
    from scalelab.spec import StudySpec
    from scalelab.tasks.base import Task

REGISTRY: dict[str, str] = {
    "int8": "scalelab.compress.quantize:Int8",
    "fp16": "scalelab.compress.quantize:Fp16",
    "bf16": "scalelab.compress.quantize:Bf16",
    "prune": "scalelab.compress.prune:Prune",
    "sparse": "scalelab.compress.sparse:Sparse",
    "lowrank": "scalelab.compress.lowrank:LowRank",
    "distill": "scalelab.compress.distill:Distill",
}


@dataclass(frozen=True)
class Method:
    """One parsed method string: its kind, its argument (a fraction, or for a method that takes
    a rung the rung index) and whether a recovery fine-tune follows."""

    kind: str
    value: float | None = None
    finetune: bool = False

    @property
    def text(self) -> str:
        """Canonical spelling, e.g. `prune:0.5+ft`, `distill:2`."""
        out = self.kind if self.value is None else f"{self.kind}:{self.value:g}"
        return out + ("+ft" if self.finetune else "")

    def variant_name(self, rung: int, student: int | None = None) -> str:
        """Name in the variants table: r<rung>-<kind><value>[-ft], e.g. r5-prune0.5-ft; a
        method with a student rung: r<rung>-<kind>-r<student>, e.g. r3-distill-r2."""
        if student is not None:
            return f"r{rung}-{self.kind}-r{student}"
        name = f"r{rung}-{self.kind}"
        if self.value is not None:
            name += f"{self.value:g}"
        return name + ("-ft" if self.finetune else "")


@dataclass(frozen=True)
class Argument:
    """What follows `kind:` in a method string: a number strictly between 0 and 1, or (with
    `integer`) a whole number in [low, high]. `letter` is how the syntax writes it (R in
    `prune:R`), `name` what messages call it; `optional`: it may be left out (value None)."""

    letter: str
    name: str
    integer: bool = False
    optional: bool = False
    low: int = 0
    high: int | None = None
    example: str = "0.5"
    help: str = ""

    def parse(self, arg: str, kind: str, text: str) -> float:
        """The value of `arg` (the text after the colon); one UserError line when it is bad."""
        if self.integer:
            if not arg.isdigit():
                raise UserError(f"{text}: {kind} takes a {self.name}, e.g. {kind}:{self.example}")
            value = int(arg)
            if value < self.low or (self.high is not None and value > self.high):
                top = "" if self.high is None else f" and at most {self.high}"
                raise UserError(f"{text}: {self.name} must be at least {self.low}{top}, got {arg}")
            return value
        try:
            number = float(arg)
        except ValueError:
            raise UserError(f"{text}: {self.name} {arg!r} is not a number") from None
        if not 0.0 < number < 1.0:
            raise UserError(f"{text}: {self.name} must be between 0 and 1 (exclusive), got {arg}")
        return number


@dataclass(frozen=True)
class Style:
    """How the report draws a method's variants: legend label (default: the kind), matplotlib
    colour and marker, marker size."""

    color: str = "#333333"
    marker: str = "o"
    size: float = 6.0
    label: str = ""


@dataclass(frozen=True)
class ReportTable:
    """A table a method adds to the report's compression section: heading, the paragraph before
    it, the HTML class, column heads and rows of plain text (the report escapes them)."""

    title: str
    intro: str
    css: str
    heads: Sequence[str]
    rows: Sequence[Sequence[Any]]


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


def latency_cell(medians: Mapping[str, float], holder: Mapping[str, Any], batch: str,
                 prefix: str = "") -> str:
    """A shown median latency (3 significant digits), marked when its series is flagged."""
    text = fmt_spec(medians.get(batch), ".3g")
    return text + (latency.UNSTABLE_MARK if latency.flagged(holder, batch, prefix) else "")


class CompressMethod:
    """Base class of the registry's methods; see the module docstring for what a method
    declares. The defaults describe a method that takes no argument, applies everywhere, is not
    in the default list and whose notes cell is its variant's `extra.note`."""

    kind: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    argument: ClassVar[Argument | None] = None
    finetune_option: ClassVar[bool] = False
    takes_student: ClassVar[bool] = False
    families: ClassVar[tuple[str, ...] | None] = None  # None: every family
    objectives: ClassVar[tuple[str, ...] | None] = None  # None: every task objective
    defaults: ClassVar[tuple[str, ...]] = ()
    style: ClassVar[Style] = Style()
    claims_speedup: ClassVar[bool] = True
    section_note: ClassVar[str] = ""
    restored_note: ClassVar[str] = ""

    def __init__(self, kind: str | None = None) -> None:
        self.kind = kind or type(self).kind

    # -- the method string ---------------------------------------------------------------------

    @property
    def syntax(self) -> str:
        """How its method string is written, e.g. `prune:R[+ft]`, `distill[:RUNG]`."""
        a = self.argument
        arg = "" if a is None else (f"[:{a.letter}]" if a.optional else f":{a.letter}")
        return self.kind + arg + ("[+ft]" if self.finetune_option else "")

    def parse(self, arg: str, finetune: bool, text: str) -> Method:
        """The `Method` of a string of this kind, split into its argument (after the colon, ""
        when there is none) and its `+ft`; one UserError line when it is bad."""
        if finetune and not self.finetune_option:
            takers = [k for k in REGISTRY if get_method(k).finetune_option]
            raise UserError(f"{text}: '+ft' (recovery fine-tune) applies to "
                            f"{' and '.join(takers)} only")
        a = self.argument
        if a is None:
            if arg:
                raise UserError(f"{text}: {self.kind} takes no value")
            return Method(self.kind, None, finetune)
        if not arg:
            if a.optional:
                return Method(self.kind, None, finetune)
            raise UserError(f"{text}: {self.kind} needs a {a.name}, e.g. {self.kind}:{a.example}")
        return Method(self.kind, a.parse(arg, self.kind, text), finetune)

    # -- where it applies ----------------------------------------------------------------------

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

    # -- what it says --------------------------------------------------------------------------

    def describe(self, method: Method) -> str:
        """One line on what the parsed method does (default: the summary)."""
        return self.summary

    def notes(self, variant: Mapping[str, Any], batch: str, unit: str) -> str:
        """The notes cell of the variant's report row; `batch` is the larger latency batch the
        table shows, `unit` what the study's D counts (token, byte, example)."""
        return str((variant.get("extra") or {}).get("note", ""))

    def report_table(self, variants: Sequence[Mapping[str, Any]],
                     unit: str) -> ReportTable | None:
        """A table of this method's variants beside the main one (None: none)."""
        return None

    # -- making and restoring ------------------------------------------------------------------

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


_INSTANCES: dict[tuple[str, str], CompressMethod] = {}


def get_method(kind: str) -> CompressMethod:
    """The registry's object for a method kind (its module imported on first use)."""
    if kind not in REGISTRY:
        raise UserError(f"unknown compression method {kind!r}; known methods: "
                        f"{', '.join(REGISTRY)}")
    key = (kind, REGISTRY[kind])
    if key not in _INSTANCES:
        module, _, attr = REGISTRY[kind].partition(":")
        _INSTANCES[key] = getattr(importlib.import_module(module), attr)(kind)
    return _INSTANCES[key]


def find_method(kind: str) -> CompressMethod:
    """The method of a stored variant's kind for showing it; a kind no longer registered (a
    plugin of another installation) gets the base class's defaults (its `extra.note`, a grey
    circle) rather than an error, so the report still shows every variant."""
    return get_method(kind) if kind in REGISTRY else CompressMethod(kind)


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


__all__ = ["REGISTRY", "Argument", "Built", "CompressMethod", "Context", "Method", "ReportTable",
           "Style", "Support", "applicable", "check_supported", "find_method", "get_method",
           "latency_cell", "rung_shape"]
