"""Tasks: data, inputs, loss and metrics of what a study measures. See `tasks.base.Task`.

Adding a task is one file in this folder plus one line in `REGISTRY`: a class with a `name`, an
`Options` pydantic model (its spec keys; unknown keys are errors) and a constructor
`(options, context)`, where `context` is the sequence length a family asks for (None when the
family does not use one).
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from scalelab.errors import UserError
from scalelab.spec import parse_options
from scalelab.tasks.base import BaseTask, Metric, Task, TaskIO

REGISTRY: dict[str, str] = {
    "pycode": "scalelab.tasks.pycode:PyCodeTask",
    "text": "scalelab.tasks.text:TextTask",
    "tabular": "scalelab.tasks.tabular:TabularTask",
    "digits": "scalelab.tasks.digits:DigitsTask",
}


def task_class(name: str) -> Any:
    if name not in REGISTRY:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(REGISTRY)}")
    module, _, attr = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attr)


@cache
def declared_metrics() -> tuple[Metric, ...]:
    """Every metric the registered tasks declare (`METRICS`), each once, in the order tables
    show them: by first declaration, a complement (accuracy) right after what it complements."""
    found: list[Metric] = []
    for name in REGISTRY:
        for group in getattr(task_class(name), "METRICS", {}).values():
            found += [m for m in group if m not in found]
    ordered = [m for m in found if m.complement is None]
    for m in found:
        if m.complement is not None:
            bases = [i for i, b in enumerate(ordered) if b.name == m.complement]
            ordered.insert(bases[0] + 1 if bases else len(ordered), m)
    return tuple(ordered)


def get_task(name: str, context: int | None = None, **options: Any) -> Task:
    """Build the task `name` from its spec options (checked here, before anything runs)."""
    cls = task_class(name)
    opts = parse_options(cls.Options, options, f"task ({name})")
    return cls(opts, context)


def task_options(name: str, options: dict) -> dict:
    """The task's options with every default filled in (the spec as stored)."""
    cls = task_class(name)
    return parse_options(cls.Options, options, f"task ({name})").model_dump(mode="json")


__all__ = ["REGISTRY", "BaseTask", "Metric", "Task", "TaskIO", "declared_metrics", "get_task",
           "task_class", "task_options"]
