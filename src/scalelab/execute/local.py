"""The local executor: jobs one after another in this process (CPU or one GPU).

Events reach the driver's callback synchronously, from inside the training loop's callbacks, so
a `StopJob` raised by the callback unwinds the training loop itself; the job's last checkpoint
stays on disk.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

from scalelab.execute.base import Emit, Event, Job, Pruned, StopJob, Workload
from scalelab.execute.branches import ordered
from scalelab.execute.job import run_job


class LocalExecutor:
    name = "local"

    def run(self, jobs: Sequence[Job], work: Workload, emit: Emit) -> None:
        for job in ordered(jobs):  # a WSD trunk before its cool-down branches
            last = [0]

            def tracked(event: Event, last: list[int] = last) -> None:
                step = getattr(event, "step", None)
                if step is not None:
                    last[0] = step
                emit(event)

            try:
                finished = run_job(job, work, tracked)
            except StopJob:
                emit(Pruned(job.key, last[0]))
                continue
            emit(finished)
            # The driver has recorded the result: the resume points are no longer needed.
            shutil.rmtree(job.resume_dir, ignore_errors=True)

    def close(self) -> None:
        pass
