"""The executor seam: what an executor is given (jobs and a workload), what it reports (events).

An executor runs `Job`s of three kinds: a rung of the ladder or a tuning trial of one (`rung`),
a compressed variant of a trained rung (`variant`: made and measured), and a fine-tune of a rung
on a second task (`finetune`: trained and measured). It reports what happens as events, through
a callback that runs in the driver's own thread:

    Started      a worker took the job (its pid and host, and the step it resumes from)
    Progress     one optimizer step (its training loss), for progress bars
    Checkpoint   a resume point was written; carries the curve so far
    Finished     the job ended: a rung's RungResult (status done, or diverged) and its whole
                 curve, or the plain record of a variant or fine-tune, ready to be stored
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
from typing import TYPE_CHECKING, Any, Literal, Protocol

from scalelab.records import RungPlan, RungResult
from scalelab.spec import StudySpec, TrainSpec

if TYPE_CHECKING:
    from scalelab.models.base import Family
    from scalelab.tasks.base import Task


JobKind = Literal["rung", "variant", "finetune"]


@dataclass(frozen=True)
class Job:
    """One training run, or one variant made and measured.

    key: unique among the jobs of one `run`, its kind and name ("rung-3", "rung-3/trial-5",
    "variant-r3-int8", "finetune-r3-stdlib-test-full").
    plan: the rung it trains (a rung, a trial, a fine-tune's budget and seed), or for a variant
    the rung it is made from.
    resume_dir: the folder of its resume points; a restarted job continues from the newest one,
    so it must be a folder every worker that may run the job can read and write.
    weights: where to write the final weights (a safetensors file), or None to keep none.
    full: measure everything a rung records (cost, latency, metrics), or only the validation
    loss (a tuning trial needs no more).
    train: the training settings (a trial may checkpoint more often than the study's rungs).
    branch_saves: a WSD trunk's hand-offs, (step, resume_dir of a branch job): at each step it
    writes its state into that folder, where the branch job resumes from it (branches.py).
    kind: which worker function runs it (`job.run_job` dispatches on it); `payload` is what
    that function needs beyond the plan and the workload (a variant's method, a fine-tune's
    method and its record so far), plain picklable data.
    """

    key: str
    plan: RungPlan
    resume_dir: str
    weights: str | None
    train: TrainSpec
    full: bool = True
    branch_saves: tuple[tuple[int, str], ...] = ()
    kind: JobKind = "rung"
    payload: Any = None


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
    total: int | None = None  # the steps of the loop it counts, where not the plan's own


@dataclass(frozen=True)
class Checkpoint:
    key: str
    step: int
    curve: list[dict]  # every curve point so far (CurvePoint fields)


@dataclass(frozen=True)
class Finished:
    key: str
    result: RungResult | None  # a rung's; None for a variant or a fine-tune (see `record`)
    curve: list[dict] = field(default_factory=list)
    record: dict | None = None  # a variant's or fine-tune's record, as the store takes it


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


class StudyIncomplete(RuntimeError):  # noqa: N818 (an outcome the CLI reports, not a bug)
    """Some jobs could not finish (their workers died more often than the retries allow, or
    they raised). What finished is recorded; running the same command again resumes the rest."""


class StopJob(Exception):  # noqa: N818 (a request, not an error)
    """Raised by an event callback to stop the job the event came from (it is then Pruned)."""


class Executor(Protocol):
    """Runs jobs and reports their events to `emit` in the calling thread. Jobs may run side by
    side; events of one job arrive in order. `run` returns when every job has finished, failed
    or been pruned; an exception from `emit` (other than StopJob) or a KeyboardInterrupt stops
    every job still running and propagates."""

    name: str
    # Whether jobs run in other processes or on other hosts (the progress display then names the
    # worker each one started on).
    remote: bool

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


def drive(executor: Executor, jobs: Sequence[Job], work: Workload, record: Emit,
          observers: Sequence[Observer]) -> None:
    """The driver's side of every run, whatever its jobs: observers hear of the jobs, then each
    event is handed to `record` (which writes it to the study's store: this process is its only
    writer) and, once recorded, to every observer."""
    for observer in observers:
        observer.on_jobs(list(jobs))

    def emit(event: Event) -> None:
        record(event)
        for observer in observers:
            observer.on_event(event)

    executor.run(jobs, work, emit)
