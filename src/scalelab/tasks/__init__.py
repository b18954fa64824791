"""Tasks: data splits, batches and evaluation windows. See `Task` for the protocol."""

from __future__ import annotations

from typing import Protocol

import torch

from scalelab.errors import UserError


class Task(Protocol):
    """What a trainer needs from a task.

    A task owns its train and validation splits; `batch` draws random training windows from a
    seeded generator, `eval_windows` gives the same validation windows every time it is called,
    so every rung and every variant is scored on identical data.
    """

    name: str
    vocab_size: int

    def fingerprint(self) -> dict: ...

    def batch(
        self, batch_size: int, block_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def eval_windows(
        self, n_tokens: int, block_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def get_task(name: str, **options) -> Task:
    if name == "pycode":
        from scalelab.tasks.pycode import PyCodeTask

        return PyCodeTask(**options)
    raise UserError(f"unknown task {name!r}; known tasks: pycode")
