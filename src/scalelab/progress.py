"""The progress callback every stage takes from its caller: `on_progress(name, step, total, loss)`.

It lives here, below every stage, so the stages that make progress (compress, finetune) and the
observer that feeds it from executor events (`execute.progress.ProgressBars`) share one definition
without importing each other (`compress.base` is imported by the jobs that `execute` runs).
"""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[str, int, int, float], None]

__all__ = ["ProgressFn"]
