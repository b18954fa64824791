"""Progress callbacks as an observer: a caller's `on_progress(name, step, total, loss)` (one bar
per name, `cli.app.named_progress`) fed by the Progress events of any executor's jobs."""

from __future__ import annotations

from scalelab.execute.base import BaseObserver, Event, Job, Progress
from scalelab.progress import ProgressFn


class ProgressBars(BaseObserver):
    """Hands each Progress event to `on_progress` under its job's name (`names`: job key ->
    name); the total is the event's own where it counts another loop (a variant's recovery
    fine-tune), else the job plan's steps."""

    def __init__(self, on_progress: ProgressFn, names: dict[str, str]):
        self.on_progress, self.names = on_progress, names
        self.totals: dict[str, int] = {}

    def on_jobs(self, jobs: list[Job]) -> None:
        self.totals = {j.key: j.plan.steps for j in jobs}

    def on_event(self, event: Event) -> None:
        name = self.names.get(event.key)
        if isinstance(event, Progress) and name is not None:
            total = event.total or self.totals.get(event.key, event.step)
            self.on_progress(name, event.step, total, event.train_loss)
