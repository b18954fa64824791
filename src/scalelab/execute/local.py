"""The local executor: jobs one after another in this process (CPU or one GPU).

Events reach the driver's callback synchronously, from inside the training loop's callbacks, so
a `StopJob` raised by the callback unwinds the training loop itself; the job's last checkpoint
stays on disk.

A job that raises ends `Failed` with its error in one line (as a Ray task that raises does), and
the next job runs; a UserError (bad input: a model that no longer matches its plan, a factory
that raises) is reported `Failed` and then re-raised, so the command stops with that one line.
An error raised by the callback itself is the driver's and propagates as it is.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

from scalelab.errors import UserError
from scalelab.execute.base import Emit, Event, Failed, Job, Pruned, StopJob, Workload, one_line
from scalelab.execute.branches import ordered
from scalelab.execute.job import run_job


class LocalExecutor:
    name = "local"

    def run(self, jobs: Sequence[Job], work: Workload, emit: Emit) -> None:
        for job in ordered(jobs):  # a WSD trunk before its cool-down branches
            last = [0]
            driver_errors: list[BaseException] = []

            def tracked(event: Event, last: list[int] = last,
                        driver_errors: list[BaseException] = driver_errors) -> None:
                step = getattr(event, "step", None)
                if step is not None:
                    last[0] = step
                try:
                    emit(event)
                except StopJob:
                    raise
                except BaseException as err:
                    driver_errors.append(err)
                    raise

            try:
                finished = run_job(job, work, tracked)
            except StopJob:
                emit(Pruned(job.key, last[0]))
                continue
            except Exception as err:
                if any(err is e for e in driver_errors):
                    raise
                emit(Failed(job.key, one_line(err)))
                if isinstance(err, UserError):
                    raise
                continue
            emit(finished)
            # The driver has recorded the result: the resume points are no longer needed.
            shutil.rmtree(job.resume_dir, ignore_errors=True)

    def close(self) -> None:
        pass
