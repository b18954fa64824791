"""Executors: where jobs (rungs, tuning trials, compressed variants, fine-tunes) run. See
`base.py` for the seam.

Adding an executor is one file in this folder plus one line in `REGISTRY`: a class with a `name`,
`remote` (whether its jobs run in other processes, so the progress display names their workers),
a docstring whose first paragraph says where its jobs run (the CLI's `--executor` help and
`scalelab list executors` show it), `flags` (the CLI options it takes beyond `--executor`:
`--address`, `--storage`) and a classmethod `open(options, execute)` that checks the options
and connects (`execute` is the spec's `execute:` section). Everything that chooses an executor
(the CLI's `--executor`, the Python API's `ExecuteOptions`) goes through `open_executor`.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from scalelab.errors import UserError
from scalelab.execute.base import ExecuteOptions, Executor
from scalelab.spec import ExecuteSpec

REGISTRY: dict[str, str] = {
    "local": "scalelab.execute.local:LocalExecutor",
    "ray": "scalelab.execute.ray:RayExecutor",
}
# The CLI flag of each ExecuteOptions field an executor may take (its `flags`).
FLAGS = {"--address": "address", "--storage": "storage"}


def executor_class(kind: str) -> Any:
    """The registered class of an executor kind; one UserError line for an unknown one."""
    if kind not in REGISTRY:
        raise UserError(f"--executor {kind}: must be one of {', '.join(REGISTRY)}")
    module, _, attr = REGISTRY[kind].partition(":")
    return getattr(importlib.import_module(module), attr)


def summary(kind: str) -> str:
    """The first paragraph of an executor class's docstring, as one line: where its jobs run."""
    doc = (inspect.getdoc(executor_class(kind)) or kind).strip()
    text = " ".join(doc.split("\n\n")[0].split()).rstrip(".")
    return text[:1].lower() + text[1:]


def executor_help() -> str:
    """The `--executor` choices with what each does, for the CLI's help."""
    return "; ".join(f"{kind}: {summary(kind)}" for kind in REGISTRY)


def open_executor(options: ExecuteOptions, execute: ExecuteSpec) -> Executor:
    """The executor the options ask for, connected (a Ray cluster joined or started); close it
    when done. Bad options are one UserError line, before anything is written."""
    cls = executor_class(options.kind)
    for flag, attr in FLAGS.items():
        if getattr(options, attr) is not None and flag not in cls.flags:
            takers = [k for k in REGISTRY if flag in executor_class(k).flags]
            raise UserError(f"{flag} needs --executor {' or '.join(takers)}")
    return cls.open(options, execute)


def check_storage(executor: Executor, folder: Path) -> None:
    """Make sure every worker of `executor` can write `folder` (a no-op check for this
    process beyond creating it)."""
    probe = getattr(executor, "check_storage", None)
    if probe is not None:
        probe(folder)
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {folder}: {err.strerror}") from None


__all__ = ["FLAGS", "REGISTRY", "ExecuteOptions", "Executor", "check_storage", "executor_class",
           "executor_help", "open_executor", "summary"]
