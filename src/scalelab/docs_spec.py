"""Write docs/spec.md, the spec reference, from the pydantic models in `scalelab.spec`.

`python -m scalelab.docs_spec > docs/spec.md` regenerates it; tests/test_docs.py fails when the
file differs from what this prints, so a key added to spec.py cannot go undocumented. It lives in
the package (not in a tools/ script) because it reads the models through the installed package,
and the test imports `render` rather than running a file by path.
"""

from __future__ import annotations

import enum
import inspect
import sys
import types
import typing

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from scalelab.spec import StudySpec

# Descriptions of the keys whose Field in spec.py has none (a `description=` there wins; a new key
# should get one there). The test requires a description for every key, from one place or the
# other, so the reference cannot silently leave a key blank.
NOTES: dict[str, str] = {
    "name": "the study's name (MLflow experiment, storage folder); a study folder keeps it",
    "task": "the data, loss and metrics: `name` (pycode, text, tabular, digits or your own) "
            "plus that task's options",
    "family": "how a target size becomes a model: `name` (gpt, mlp, cnn, custom, hf) plus that "
              "family's options",
    "ladder": "the rungs: sizes in N, and optionally D values or IsoFLOP budgets",
    "train": "one rung's training: budget D, learning-rate rule, optimizer, schedule",
    "measure": "latency and threads of the measurements",
    "fit": "the study's scaling law: bootstrap and trust-horizon tolerance",
    "compress": "compressed variants made after the ladder by `scalelab run`; none by default",
    "device": "where rungs train: auto (CUDA when present), cpu or cuda",
    "execute": "resources of one rung under `--executor ray`",
    "tune": "the search space of `scalelab tune`; required by it, ignored by `run`",
    "task.name": "a registered task: pycode, text, tabular, digits",
    "family.name": "a registered family: gpt, mlp, cnn, custom, hf",
    "ladder.sizes": "target non-embedding sizes N; replaces n_rungs/min/max",
    "ladder.n_rungs": "number of sizes, spaced geometrically from min_nonembed to max_nonembed",
    "ladder.min_nonembed": "smallest target N",
    "ladder.max_nonembed": "largest target N",
    "ladder.repeats": "runs of each size, each from its own seed (repeat r of size i: "
                      "seed + i + r·sizes)",
    "ladder.repeats_below": "only sizes with target N below this repeat; the others run once",
    "ladder.tokens": "a grid's D values (task units), one rung per (N, D)",
    "ladder.tokens_per_param": "a grid's D/N ratios: D = ratio × n_nonembed",
    "ladder.isoflop": "IsoFLOP budgets instead of a grid",
    "ladder.isoflop.budgets": "compute budgets C in FLOPs, increasing",
    "ladder.isoflop.points": "sizes per budget (3 or more: a parabola in log N needs 3)",
    "train.tokens": "budget D in task units (bytes/tokens of text, examples of a table); "
                    "left out: chosen for the task and stored",
    "train.tokens_exponent": "D = tokens × (N / tokens_ref_nonembed) ^ tokens_exponent "
                             "(0: one budget for every rung)",
    "train.tokens_ref_nonembed": "the N whose budget is `tokens` when tokens_exponent > 0",
    "train.tokens_per_param": "D = tokens_per_param × N instead (D ∝ N)",
    "train.batch_size": "sequences (or rows) per optimizer step",
    "train.lr": "peak learning rate at lr_ref_nonembed; left out: 3e-3 for a language model, "
                "1e-3 otherwise",
    "train.lr_ref_nonembed": "the N whose peak rate is `lr`",
    "train.lr_exponent": "lr × (N / lr_ref_nonembed) ^ lr_exponent",
    "train.warmup_frac": "share of a rung's steps in linear warm-up",
    "train.min_lr_frac": "the rate decays to this share of the peak",
    "train.weight_decay": "AdamW weight decay",
    "train.beta1": "AdamW beta1",
    "train.beta2": "AdamW beta2 (the default preset uses 0.95)",
    "train.grad_clip": "gradient-norm clip",
    "train.seed": "base seed of init and data order (each rung derives its own)",
    "measure.latency_batches": "batch sizes whose forward latency is timed",
    "measure.latency_repeats": "timed calls per batch size (median and IQR reported)",
    "fit.bootstrap": "bootstrap resamples for the law's intervals (0: none)",
    "fit.seed": "seed of the bootstrap",
    "fit.tolerance": "relative error the trust horizon allows (0.02 is 2%)",
    "execute.num_cpus": "CPUs each rung's Ray task asks for",
    "execute.num_gpus": "GPUs each rung's Ray task asks for",
    "execute.max_retries": "retries of a rung whose worker died (each resumes from its "
                           "last checkpoint)",
    "execute.local_cpus": "CPUs of a Ray started in-process (no --address); default: every core",
    "execute.processes": "processes (ranks) that train each rung together; the batch must "
                         "split evenly between them",
    "execute.sharding": "ddp: every rank holds the model; fsdp: FSDP2 shards it across ranks",
    "tune.lr": "[low, high] of the peak learning rate, searched log-uniform",
    "tune.warmup_frac": "[low, high] of the warm-up share, searched uniform",
    "tune.batch_size": "the batch sizes to choose among",
    "tune.trials": "trials per rung (`--trials` overrides)",
    "tune.prune": "stop hopeless trials early from their validation curves (median rule)",
    "tune.seed": "seed of the TPE sampler",
}


HEADER = """# Spec reference

<!-- Generated by `python -m scalelab.docs_spec > docs/spec.md` from src/scalelab/spec.py;
     tests/test_docs.py fails when this file is stale. Do not edit by hand. -->

A study's spec is YAML (or a dict in Python) with the sections below. Every key is optional and
unknown keys are errors, except in `task` and `family`, whose other keys are that task's or
family's own options (checked by it before anything runs). How the keys work together:
[study.md](study.md); the default study's values: `src/scalelab/presets/default.yaml`.
"""


def type_name(annotation: object) -> str:
    """A readable type: `int | None`, `list[float]`, `'auto' | 'fp32'`, a section's name."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(map(type_name, args))}]"
    if annotation is type(None):
        return "None"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return f"section {annotation.__name__}"
    if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
        return " | ".join(repr(m.value) for m in annotation)  # the choices, as a spec writes them
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "(section)" if isinstance(value, BaseModel) else f"`{value!r}`"
    if field.default is PydanticUndefined:
        return "required"
    value = field.default.value if isinstance(field.default, enum.Enum) else field.default
    return f"`{value!r}`"


def _bounds(field: FieldInfo) -> str:
    """The constraints pydantic checks (gt=0 ...), written as `> 0`."""
    ops = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "min_length": "length >="}
    parts = []
    for meta in field.metadata:
        for attr, op in ops.items():
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{op} {value:g}" if isinstance(value, float) else f"{op} {value}")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def description(path: str, field: FieldInfo) -> str:
    """The key's description: its Field's in spec.py, else NOTES'."""
    return field.description or NOTES.get(path, "")


def _section(key: str, model: type[BaseModel], prefix: str) -> list[str]:
    lines = [f"## {key} ({model.__name__})", ""]
    doc = inspect.getdoc(model)
    if doc and model.__doc__ is not None and "__doc__" in vars(model):
        lines += [doc, ""]
    lines += ["| key | type | default | allowed | description |", "| --- | --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        kind, default = _cell(type_name(field.annotation)), _cell(_default(field))
        note = _cell(description(prefix + name, field))
        lines.append(f"| `{name}` | {kind} | {default} | {_cell(_bounds(field))} | {note} |")
    return lines + [""]


def keys() -> list[tuple[str, FieldInfo]]:
    """Every key of the spec as (dotted path, field), the top level first."""
    found = list(StudySpec.model_fields.items())
    for key, model in _sections(StudySpec):
        found += [(f"{key}.{name}", field) for name, field in model.model_fields.items()]
    return found


def _sections(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """Every nested section (a model-typed field), depth first, keyed by its dotted path."""
    found = []
    for name, field in model.model_fields.items():
        for arg in (field.annotation, *typing.get_args(field.annotation)):
            if inspect.isclass(arg) and issubclass(arg, BaseModel):
                key = f"{prefix}{name}"
                found.append((key, arg))
                found += _sections(arg, key + ".")
    return found


def render() -> str:
    """The whole of docs/spec.md."""
    lines = [HEADER, *_section("Top level", StudySpec, "")]
    for key, model in _sections(StudySpec):
        lines += _section(f"`{key}`", model, key + ".")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
