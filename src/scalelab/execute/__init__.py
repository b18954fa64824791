"""Executors: where jobs (rungs, tuning trials, compressed variants, fine-tunes) run. See
`base.py` for the seam."""

from __future__ import annotations

from pathlib import Path

from scalelab.errors import UserError
from scalelab.execute.base import ExecuteOptions, Executor
from scalelab.execute.local import LocalExecutor
from scalelab.spec import ExecuteSpec

KINDS = ("local", "ray")


def open_executor(options: ExecuteOptions, execute: ExecuteSpec) -> Executor:
    """The executor the options ask for, connected (a Ray cluster joined or started); close it
    when done. Bad options are one UserError line, before anything is written."""
    if options.kind not in KINDS:
        raise UserError(f"--executor {options.kind}: must be one of {', '.join(KINDS)}")
    if options.kind == "local":
        for flag, value in (("--address", options.address), ("--storage", options.storage)):
            if value is not None:
                raise UserError(f"{flag} needs --executor ray")
        return LocalExecutor()
    from scalelab.execute.ray import RayExecutor, storage_path

    if options.storage is not None:
        storage_path(options.storage)  # a URL is refused before Ray starts
    return RayExecutor(options.address, execute)


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


__all__ = ["ExecuteOptions", "Executor", "KINDS", "check_storage", "open_executor"]
