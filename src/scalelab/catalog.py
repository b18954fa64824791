"""What scalelab knows by name: its tasks, families, compression methods, presets and laws.

Each listing is read from the registry that the study itself uses (`tasks.REGISTRY`,
`models.REGISTRY`, `compress.base.REGISTRY`, the preset files, `laws.forms.FORMS`) and, for
options, from each one's own pydantic `Options` model, so a new task or family appears here with
its options and defaults without another table to keep. `scalelab list` prints it.
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

KINDS = ("tasks", "families", "methods", "presets", "laws")


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
               "laws": laws}
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
        out.append(Entry(name, _first_line(cls), options_of(cls.Options),
                         {"accepts": ", ".join(cls.accepts)}))
    return out


def methods() -> list[Entry]:
    from scalelab.compress import methods as syntax
    from scalelab.compress.base import REGISTRY, get_method

    out = []
    for kind in REGISTRY:
        method = get_method(kind)
        defaults = [m for m in syntax.DEFAULT_METHODS if m.split(":")[0].split("+")[0] == kind]
        example = syntax.parse_method(defaults[0] if defaults else
                                      f"{kind}:0.5" if kind in syntax.RATIO_KINDS else kind)
        options = []
        if kind in syntax.RATIO_KINDS:
            options.append(Option(kind, "float", None, True,
                                  f"{syntax.RATIO_KINDS[kind]}, 0 < value < 1: {kind}:0.5"))
        if kind in syntax.FINETUNE_KINDS:
            options.append(Option("+ft", "flag", False, False, "then a recovery fine-tune"))
        if kind == "distill":
            options.append(Option("distill", "int", None, False,
                                  "the student rung: distill:2 (default: the next smaller "
                                  "trained rung)"))
        facts = {"default list": ", ".join(defaults) or "-",
                 "families": ", ".join(method.families or ("all",)),
                 "objectives": ", ".join(method.objectives or ("all",))}
        out.append(Entry(kind, method.describe(example), options, facts))
    return out


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
