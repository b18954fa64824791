"""What scalelab knows by name: its tasks, families, compression methods, presets, laws and
executors.

Each listing is read from the registry that the study itself uses (`tasks.REGISTRY`,
`models.REGISTRY`, `compress.base.REGISTRY`, the preset files, `laws.forms.FORMS`,
`execute.REGISTRY`) and, for options, from each one's own declaration (a task's or family's
pydantic `Options` model, a compression method's `argument`), so a new one appears here with its
options and defaults without another table to keep. `scalelab list` prints it.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from scalelab.docs_spec import type_name
from scalelab.errors import UserError

KINDS = ("tasks", "families", "methods", "presets", "laws", "executors")


@dataclass(frozen=True)
class Option:
    """One setting: its key, its type as written in the model, its default (`required` when it
    has none) and its description."""

    name: str
    type: str
    default: Any
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Entry:
    """One registered thing: its name, one line on what it is, its options, and facts of its
    kind (a task's objective, a family's input kinds, a law's parameters...)."""

    name: str
    summary: str
    options: list[Option] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)


def catalog(kind: str) -> list[Entry]:
    """Every registered one of `kind` (one of KINDS), in registry order."""
    listers = {"tasks": tasks, "families": families, "methods": methods, "presets": presets,
               "laws": laws, "executors": executors}
    if kind not in listers:
        raise UserError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    return listers[kind]()


def options_of(model: type[BaseModel]) -> list[Option]:
    """The fields of a pydantic model, with their defaults as a spec would store them."""
    out = []
    for name, info in model.model_fields.items():
        required = info.is_required()
        if required:
            default = None
        elif info.default_factory is not None:
            default = info.default_factory()  # type: ignore[call-arg]
        else:
            default = info.default
        if default is PydanticUndefined:
            default = None
        out.append(Option(name, type_name(info.annotation), _plain(default), required,
                          info.description or ""))
    return out


def _plain(value: Any) -> Any:
    """Enum members as their values, so a default reads as it is written in a spec."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return getattr(value, "value", value)


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _first_line(obj: Any) -> str:
    """The first line of the docstring of `obj`'s module, less a "Task `x`: " prefix."""
    doc = inspect.getdoc(inspect.getmodule(obj)) or ""
    line = doc.strip().splitlines()[0] if doc.strip() else ""
    head, sep, rest = line.partition("`: ")
    return rest if sep and "`" in head else line


def tasks() -> list[Entry]:
    from scalelab.tasks import REGISTRY

    out = []
    for name, target in REGISTRY.items():
        cls = _load(target)
        # A task whose options choose its objective (tabular) has none of its own to show.
        chosen = "objective" in cls.Options.model_fields
        facts = {"unit": cls.unit, "objective": "by its options" if chosen else cls.objective}
        out.append(Entry(name, _first_line(cls), options_of(cls.Options), facts))
    return out


def families() -> list[Entry]:
    from scalelab.models import REGISTRY

    out = []
    for name, target in REGISTRY.items():
        cls = _load(target)
        facts = {"accepts": ", ".join(cls.accepts)}
        if getattr(cls, "other_keys", None):  # a family whose other keys are passed through
            facts["other keys"] = cls.other_keys
        out.append(Entry(name, _first_line(cls), options_of(cls.Options), facts))
    return out


def methods() -> list[Entry]:
    from scalelab.compress.base import REGISTRY, get_method

    out = []
    for kind in REGISTRY:
        method = get_method(kind)
        a = method.argument
        options = []
        if a is not None:
            rule = (f"a whole number >= {a.low}" if a.integer else "0 < value < 1")
            extra = f" ({a.help})" if a.help else ""
            options.append(Option(kind, "int" if a.integer else "float", None, not a.optional,
                                  f"{a.name}, {rule}: {kind}:{a.example}{extra}"))
        if method.finetune_option:
            options.append(Option("+ft", "flag", False, False, "then a recovery fine-tune"))
        facts = {"syntax": method.syntax,
                 "default list": ", ".join(method.defaults) or "-",
                 "families": ", ".join(method.families or ("all",)),
                 "objectives": ", ".join(method.objectives or ("all",))}
        out.append(Entry(kind, method.summary, options, facts))
    return out


def executors() -> list[Entry]:
    from scalelab.execute import REGISTRY, executor_class, summary

    return [Entry(kind, summary(kind), [],
                  {"options": ", ".join(("--executor", *executor_class(kind).flags))})
            for kind in REGISTRY]


def presets() -> list[Entry]:
    from scalelab.spec import PRESET_DIR, PRESETS, preset_spec

    out = []
    for name in PRESETS:
        path = PRESET_DIR / f"{name}.yaml"
        spec = preset_spec(name)
        data = yaml.safe_load(path.read_text())
        resolved = spec.model_dump(mode="json")  # the values as read (YAML reads 1.0e6 as text)
        facts = {"task": spec.task.name, "family": spec.family.name,
                 "rungs": str(len(spec.ladder.targets())),
                 "sizes": f"{spec.ladder.targets()[0]:.3g} .. {spec.ladder.targets()[-1]:.3g}",
                 "device": str(_plain(spec.device))}
        options = [Option(f"{section}.{key}", type(value).__name__, value)
                   for section, body in data.items() if isinstance(body, dict)
                   for key, value in resolved[section].items() if key in body]
        out.append(Entry(name, _comment(path.read_text()), options, facts))
    return out


def _comment(text: str) -> str:
    """A preset's summary: the first sentence of its leading comment."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    paragraph = " ".join(lines).split("  ")[0]
    return paragraph.split(". ")[0].rstrip(".")


def laws() -> list[Entry]:
    from scalelab.laws.forms import FORMS

    return [Entry(name, form.formula, [],
                  {"inputs": ", ".join(form.roles), "parameters": ", ".join(form.param_names)})
            for name, form in FORMS.items()]


__all__ = ["KINDS", "Entry", "Option", "catalog", "options_of"]
