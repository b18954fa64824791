"""The local executor: jobs one after another in this process (CPU or one GPU).

Events reach the driver's callback synchronously, from inside the training loop's callbacks, so
a `StopJob` raised by the callback unwinds the training loop itself; the job's last checkpoint
stays on disk.

A job that raises ends `Failed` with its error in one line (as a Ray task that raises does), and
the next job runs; a UserError (bad input: a model that no longer matches its plan, a factory
that raises) is reported `Failed` and then re-raised, so the command stops with that one line.
An error raised by the callback itself is the driver's and propagates as it is.

With `execute: {processes: K}` (K > 1) a rung or tuning trial trains on K ranks started by
`execute/ranks.py` (variants and fine-tunes stay in this process); a rank that dies ends the job
`Failed`, and running again resumes it from its last checkpoint.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

from scalelab.errors import UserError
from scalelab.execute.base import (
    Emit,
    Event,
    ExecuteOptions,
    Failed,
    Job,
    Pruned,
    StopJob,
    Workload,
    one_line,
)
from scalelab.execute.branches import ordered
from scalelab.execute.job import run_job
from scalelab.execute.ranks import check_devices, check_processes, run_ranks
from scalelab.spec import ExecuteSpec


class LocalExecutor:
    """Jobs one after another in this process (CPU or one GPU)."""

    name = "local"
    remote = False
    flags: tuple[str, ...] = ()  # no CLI option beyond --executor

    @classmethod
    def open(cls, options: ExecuteOptions, execute: ExecuteSpec) -> LocalExecutor:
        return cls()

    def run(self, jobs: Sequence[Job], work: Workload, emit: Emit) -> None:
        check_processes(list(jobs), work)
        check_devices(work)
        ranked = work.spec.execute.processes > 1
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
                if ranked and job.kind == "rung":
                    finished = run_ranks(job, work, tracked)
                else:
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
