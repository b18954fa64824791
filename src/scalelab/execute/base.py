"""The executor seam: what an executor is given (jobs and a workload), what it reports (events).

An executor trains `Job`s, each one `RungPlan` (a rung of the ladder, or a tuning trial of one),
and reports what happens as events, through a callback that runs in the driver's own thread:

    Started      a worker took the job (its pid and host, and the step it resumes from)
    Progress     one optimizer step (its training loss), for progress bars
    Checkpoint   a resume point was written; carries the curve so far
    Finished     the job ended: a RungResult (status done, or diverged) and its whole curve
    Failed       the job could not finish (its worker died more often than retries allow)
    Pruned       the driver stopped it (a tuning trial judged hopeless from its curve)

The driver is the only writer of study.db: executors and their workers write checkpoint and
weight files only, and hand every measurement back as an event. The callback may raise
`StopJob` to stop the job the event came from; the executor then ends it and reports `Pruned`.
Observers (an MLflow mirror, an Optuna trial reporter) receive the same events from the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from scalelab.records import RungPlan, RungResult
from scalelab.spec import StudySpec, TrainSpec

if TYPE_CHECKING:
    from scalelab.models.base import Family
    from scalelab.tasks.base import Task


@dataclass(frozen=True)
class Job:
    """One training run.

    key: unique among the jobs of one `run` ("rung-3", "rung-3/trial-5").
    resume_dir: the folder of its resume points; a restarted job continues from the newest one,
    so it must be a folder every worker that may run the job can read and write.
    weights: where to write the final weights (a safetensors file), or None to keep none.
    full: measure everything a rung records (cost, latency, metrics), or only the validation
    loss (a tuning trial needs no more).
    train: the training settings (a trial may checkpoint more often than the study's rungs).
    branch_saves: a WSD trunk's hand-offs, (step, resume_dir of a branch job): at each step it
    writes its state into that folder, where the branch job resumes from it (branches.py).
    """

    key: str
    plan: RungPlan
    resume_dir: str
    weights: str | None
    train: TrainSpec
    full: bool = True
    branch_saves: tuple[tuple[int, str], ...] = ()


@dataclass
class Workload:
    """What every job of a run shares: the task and family objects, the spec (measurement
    settings), the device name as the spec or CLI gave it, and the machine's GEMM peak (for
    MFU)."""

    task: Task
    family: Family
    spec: StudySpec
    device: str
    gemm_peak: float | None


@dataclass(frozen=True)
class Started:
    key: str
    pid: int
    host: str
    from_step: int  # 0 for a fresh start, else the step of the checkpoint it resumes from


@dataclass(frozen=True)
class Progress:
    key: str
    step: int
    train_loss: float


@dataclass(frozen=True)
class Checkpoint:
    key: str
    step: int
    curve: list[dict]  # every curve point so far (CurvePoint fields)


@dataclass(frozen=True)
class Finished:
    key: str
    result: RungResult
    curve: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Failed:
    key: str
    error: str  # one line: "RuntimeError: mat1 and mat2 shapes cannot be multiplied (...)"


def one_line(err: BaseException, limit: int = 500) -> str:
    """An exception as the one line a failed job reports: its type and its message."""
    text = " ".join(str(err).split())
    return (f"{type(err).__name__}: {text}" if text else type(err).__name__)[:limit]


@dataclass(frozen=True)
class Pruned:
    key: str
    step: int


Event = Started | Progress | Checkpoint | Finished | Failed | Pruned
Emit = Callable[[Event], None]


class StopJob(Exception):  # noqa: N818 (a request, not an error)
    """Raised by an event callback to stop the job the event came from (it is then Pruned)."""


class Executor(Protocol):
    """Runs jobs and reports their events to `emit` in the calling thread. Jobs may run side by
    side; events of one job arrive in order. `run` returns when every job has finished, failed
    or been pruned; an exception from `emit` (other than StopJob) or a KeyboardInterrupt stops
    every job still running and propagates."""

    name: str

    def run(self, jobs: Sequence[Job], work: Workload, emit: Emit) -> None: ...

    def close(self) -> None: ...


class Observer(Protocol):
    """Receives every event after the driver has recorded it, plus the study's start (its folder
    and stored spec), the jobs about to run, and its outputs (summary.json's content, once
    report.html is written)."""

    def on_event(self, event: Event) -> None: ...

    def on_jobs(self, jobs: list[Job]) -> None: ...

    def on_study(self, folder: Path, spec: dict) -> None: ...

    def on_outputs(self, folder: Path, summary: dict) -> None: ...


class BaseObserver:
    """An observer that ignores everything; subclasses override what they watch."""

    def on_event(self, event: Event) -> None:
        pass

    def on_jobs(self, jobs: list[Job]) -> None:
        pass

    def on_study(self, folder: Path, spec: dict) -> None:
        pass

    def on_outputs(self, folder: Path, summary: dict) -> None:
        pass


@dataclass(frozen=True)
class ExecuteOptions:
    """How to execute, as the CLI or API asks: `local` (this process) or `ray`; the Ray
    cluster's address (None: start a local Ray in this process); the storage every node sees
    (None: the study folder's checkpoints/)."""

    kind: str = "local"
    address: str | None = None
    storage: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"executor": self.kind, "address": self.address, "storage": self.storage}
