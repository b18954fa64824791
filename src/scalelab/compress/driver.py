"""The compression driver: plan one variant job per method, run them on the executor, record each.

Each variant is a job of the executor (`execute.base.Job`, kind `variant`), so it runs wherever
rungs run (this process, or a Ray worker with `--executor ray`) and observers (progress bars, the
MLflow mirror) hear its events as they hear a rung's. The job (`job.make_variant`) has the
registry's object `make` the variant (its model, saved file, counts, settings) and measures it
with `train.measure.measure_model`, the one harness of the rungs (the task's validation loss and
metrics on the same fixed final batches, `spec.train.final_eval_tokens` units; latency at the
spec's batch sizes on `task.example_input`; peak memory); this driver records the
`records.Variant` its Finished event carries. Its size is the bytes of its saved file under
`variants/` in the study folder (on a cluster, a folder every node mounts). The base rung's
latency is measured again right before each variant's, so `extra.speedup` compares two numbers
taken under the same machine load; `extra.base_latency_ms` holds the medians it divides, with
their IQRs (`base_latency_iqr_ms`) and flags (`base_latency_unstable`). Every latency (the fastest
of its sub-series) whose IQR is large against its median is measured again (up to
`latency.MAX_SERIES` measurements) and flagged when none is steady (`scalelab.latency`).

Notes on the stored fields:
- `peak_mem_bytes` of a variant is the peak over its evaluation and latency runs (inference),
  while a rung's is over its training.
- `n_params` of a sparse variant counts the stored (non-zero) parameters; the dense count is in
  `extra.n_params_dense`. Quantized and cast variants keep the rung's counts.
- int8 runs in ONNX Runtime on the CPU (see quantize.py); on a CUDA study its latency is a CPU
  latency (`extra.measured_on`, no `speedup` against the CUDA rung), compared with the fp32 graph
  in the same runtime.
- The task's metrics (accuracy and error for classifiers, RMSE for regression, bits per byte for
  byte LMs) are `extra.metrics`, the base rung's `extra.base_metrics` (the variants table has no
  metrics column).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING

import torch

from scalelab import latency
from scalelab.compress.base import get_method
from scalelab.compress.job import VARIANTS_DIR, VariantPayload
from scalelab.compress.plan import CompressPlan, plan_compress
from scalelab.execute import check_storage
from scalelab.execute.base import (
    Event,
    Executor,
    Failed,
    Finished,
    Job,
    Observer,
    Started,
    StudyIncomplete,
    Workload,
    drive,
)
from scalelab.execute.local import LocalExecutor
from scalelab.execute.progress import ProgressBars
from scalelab.progress import ProgressFn
from scalelab.records import RungPlan, Variant

if TYPE_CHECKING:
    from scalelab.models.base import Family
    from scalelab.spec import StudySpec
    from scalelab.storage import StudyStore
    from scalelab.tasks.base import Task


def _as_variant(row: dict) -> Variant:
    return Variant(**{f.name: row.get(f.name) for f in fields(Variant)})


def _kept(store: StudyStore, name: str, stored: dict[str, dict]) -> bool:
    old = stored.get(name)
    return bool(old and (store.folder / ((old.get("extra") or {}).get("file") or "-")).is_file())


def variant_key(name: str) -> str:
    return f"variant-{name}"


def variant_jobs(store: StudyStore, spec: StudySpec, plan: CompressPlan,
                 todo: Sequence[str]) -> list[Job]:
    """A job for each variant named in `todo`, in the plan's method order."""
    folder = store.folder
    study = store.study() or {}
    row = plan.rung
    jobs = []
    for m, name in zip(plan.methods, plan.names(), strict=True):
        if name in todo:
            payload = VariantPayload(m, name, row, str(folder), dict(plan.students), study)
            jobs.append(Job(variant_key(name), RungPlan.from_dict(row["plan"]),
                            str(folder / VARIANTS_DIR / f"{name}-ckpt"), None, spec.train,
                            kind="variant", payload=payload))
    return jobs


class VariantRecorder:
    """What a run of variant jobs writes to the store, event by event, and the lines it says."""

    def __init__(self, store: StudyStore, jobs: list[Job], say: Callable[[str], None]):
        self.store, self.say = store, say
        self.jobs = {j.key: j for j in jobs}
        self.records: dict[str, Variant] = {}
        self.failed: dict[str, str] = {}

    def __call__(self, event: Event) -> None:
        job = self.jobs[event.key]
        name = job.payload.name
        if isinstance(event, Started):
            self.say(f"{name}: {get_method(job.payload.method.kind).describe(job.payload.method)}")
        elif isinstance(event, Finished):
            variant = _as_variant(event.record or {})
            self.store.record_variant(variant.to_dict())
            self.records[name] = variant
            self.say(result_line(variant))
        elif isinstance(event, Failed):
            self.failed[name] = event.error
            self.say(f"{name}: failed: {event.error}")


def result_line(v: Variant) -> str:
    val = v.val_loss
    lat = {b: round(x, 3) for b, x in latency.medians(v.latency_ms).items()}
    unsteady = latency.unstable_batches(v.latency_ms)
    return (f"{v.name}: loss {val if val is None else round(val, 4)}, {v.bytes:,} bytes, "
            f"latency ms {lat}" + (f" (UNSTABLE at batch {', '.join(unsteady)}: IQR over "
                                   f"{latency.UNSTABLE_IQR:.0%} of the median in each of "
                                   f"{latency.MAX_SERIES} measurements; "
                                   "other processes were using the cores)"
                                   if unsteady else ""))


def compress_study(store: StudyStore, spec: StudySpec, task: Task | None, family: Family | None,
                   device: torch.device, rung: str | int = "largest",
                   methods: Sequence[str] | str | None = None, *,
                   on_event: Callable[[str], None] | None = None,
                   on_progress: ProgressFn | None = None,
                   plan: CompressPlan | None = None, redo: bool = False,
                   executor: Executor | None = None,
                   observers: Sequence[Observer] = ()) -> list[Variant]:
    """Make, measure and record one variant per method of `rung`; returns the variants in method
    order. `methods=None`: the default methods that apply (see `plan.plan_compress`).

    The variants are jobs of `executor` (None: this process, one after another); `observers`
    get their events once recorded (they have been told of the study already: `on_study`).
    With `redo=False` (what `scalelab run` does on every invocation, resumes included) a variant
    that is already stored with its file is kept, not remade; `scalelab compress` passes
    `redo=True` and remakes every variant it is asked for. `task` and `family` may be None only
    when every variant is kept. A variant whose job fails is StudyIncomplete, after the others
    are recorded (a UserError stops the run at once)."""
    if plan is None:
        plan = plan_compress(store.rungs(), rung, methods,
                             getattr(family, "name", None), getattr(task, "objective", None))
    say = on_event or (lambda _msg: None)
    stored = {v["name"]: v for v in store.variants()}
    todo, records = [], {}
    for name in plan.names():
        if not redo and _kept(store, name, stored):
            say(f"{name}: already in the study, kept")
            records[name] = _as_variant(stored[name])
        else:
            todo.append(name)
    if not todo:
        return [records[name] for name in plan.names()]
    if task is None or family is None:
        raise TypeError("compress_study needs the study's task and family to make variants")
    executor = executor or LocalExecutor()
    # Every worker writes the variants' files into the study folder: it must see that folder.
    check_storage(executor, store.folder / VARIANTS_DIR)
    jobs = variant_jobs(store, spec, plan, todo)
    recorder = VariantRecorder(store, jobs, say)
    bars = [ProgressBars(on_progress, {j.key: j.payload.name for j in jobs})] \
        if on_progress is not None else []
    drive(executor, jobs, Workload(task, family, spec, str(device), None), recorder,
          [*observers, *bars])
    records.update(recorder.records)
    if recorder.failed:
        first = next(n for n in plan.names() if n in recorder.failed)
        raise StudyIncomplete(f"{len(recorder.failed)} variant(s) could not be made ({first}: "
                              f"{recorder.failed[first]}); the others are recorded")
    return [records[name] for name in plan.names()]


__all__ = ["VARIANTS_DIR", "compress_study", "variant_jobs"]
