"""One study, end to end: plan -> execute -> record -> fit -> outputs.

`run_study` is what `scalelab run` calls; `write_outputs` is what `scalelab report` calls. Both
only pass plain data between the stages (docs/method.md, "The flow of a study").
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from scalelab import latency
from scalelab.errors import UserError
from scalelab.execute import ExecuteOptions, Executor, check_storage, open_executor
from scalelab.execute.base import (
    BaseObserver,
    Checkpoint,
    Event,
    Failed,
    Finished,
    Job,
    Observer,
    Progress,
    Started,
    StudyIncomplete,
    Workload,
    drive,
    one_line,
)
from scalelab.execute.branches import link as link_branches
from scalelab.ladder import plan_ladder, resolve_train
from scalelab.laws.engine import MIN_POINTS_FOR_FIT  # noqa: F401 (the study's rule, re-exported)
from scalelab.models.base import Family, check_fit, check_forward, family_options, get_family
from scalelab.planned import check_resume
from scalelab.records import FINISHED, RungPlan, RungResult
from scalelab.spec import StudySpec, TrainSpec, parse_spec, resolve_paths
from scalelab.storage import StudyStore
from scalelab.tasks import declared_metrics, get_task, task_options
from scalelab.tasks.base import Task
from scalelab.train import measure

_RUNG_COLUMNS = (
    "rung", "status", "n_params", "n_nonembed", "n_layer", "d_model", "n_head", "tokens", "steps",
    "lr", "val_loss", "val_bpb", "flops", "flops_6nd", "train_seconds", "tokens_per_s", "mfu",
    "peak_mem_bytes", "checkpoint_bytes", "latency_ms", "latency_iqr_ms", "diverged_step",
    "diverged_reason",
    # Added with the task and family seams: which family and unit, D in that unit, the loss on
    # training windows beside the validation loss; then the tasks' metrics (`metric_columns`).
    "family", "describe", "D", "unit", "units_per_s", "train_loss",
)
_LATER_COLUMNS = (
    "repeat", "seed",
    # Added with the speed work: MFU against the vendor's peak (CUDA devices with a known one),
    # and the device's energy over the rung's training (NVML) in joules and joules per unit.
    "mfu_vendor", "energy_j", "energy_j_per_unit",
    # Added with two-axis ladders: the IsoFLOP budget C (None off one), passes over the training
    # split (epochs > 1: repeated data), the schedule, and the trunk a WSD branch starts from.
    "budget", "epochs", "schedule", "trunk",
    # Why a rung with status `failed` stopped (its error in one line); None otherwise.
    "failed_reason",
)


def metric_columns() -> list[tuple[str, str]]:
    """(column, metric) of each metric the registered tasks declare (`Metric.column`:
    val_<name>), flattened from a rung's `metrics` into summary.json and runs.csv; val_bpb is
    a rung column of its own already (v1 studies stored it), so it keeps its place."""
    return [(m.column, m.name) for m in declared_metrics() if m.column not in _RUNG_COLUMNS]


def run_columns() -> tuple[str, ...]:
    """The columns of a rung in summary.json and runs.csv, in order."""
    return (*_RUNG_COLUMNS, *(c for c, _ in metric_columns()), *_LATER_COLUMNS)


def default_out(spec: StudySpec) -> Path:
    """studies/<name>, with the name reduced to characters safe in a folder name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.name).strip("-.") or "study"
    return Path("studies") / slug


@dataclass
class Resolved:
    """A spec with its task and family built and checked against each other."""

    spec: StudySpec
    task: Task
    family: Family


def canonical_spec(spec: StudySpec, task: Task | None = None,
                   family: Family | None = None) -> dict:
    """The spec as stored: the task's and family's options with every default filled in, so a
    resumed study compares equal whatever defaults its YAML left out. A task or family object
    given through the API is stored by its name and, where it has them, its options."""
    from scalelab.models.base import REGISTRY as FAMILIES
    from scalelab.tasks import REGISTRY as TASKS

    data = spec.model_dump(mode="json")
    data["task"] = _named(task, spec.task, task_options, TASKS)
    data["family"] = _named(family, spec.family, family_options, FAMILIES)
    return data


def _named(obj: Any, named: Any, fill: Any, registry: dict) -> dict:
    name = getattr(obj, "name", None) or named.name
    if obj is not None and getattr(obj, "options", None) is not None \
            and hasattr(obj.options, "model_dump"):
        return {"name": name, **obj.options.model_dump(mode="json")}
    if obj is not None or name not in registry:
        return {"name": name, **named.options}  # a user's own object: options are its own
    return {"name": name, **fill(name, named.options)}


def resolve(spec: StudySpec, task: Task | None = None, family: Family | None = None,
            out: Path | None = None) -> Resolved:
    """Build the family and the task of a spec (or take the user's own objects) and check that
    they fit; every bad option is a UserError here, before anything runs or is written."""
    if family is None:
        family = get_family(spec.family.name, **spec.family.options)
    if task is None:
        options = dict(spec.task.options)
        if out is not None and spec.task.name == "text" and not options.get("tokenizer_dir"):
            options["tokenizer_dir"] = str(out)  # a trained BPE lives with its study
        task = get_task(spec.task.name, context=family.context, **options)
    check_fit(family, task.io, getattr(task, "name", type(task).__name__))
    spec = resolve_train(spec, task, family)  # the budget and lr it left out, for this task
    if spec.compress is not None:
        from scalelab.compress.base import check_supported
        from scalelab.compress.methods import parse_methods, parse_rung

        parse_rung(spec.compress.rung)
        if spec.compress.methods is not None:
            check_supported(parse_methods(spec.compress.methods), family.name, task.objective)
    return Resolved(spec, task, family)


# What may change between a run and its resume: the device, where rungs run, what tuning searches.
# The ladder and training may not.
RESUMABLE_KEYS = ("device", "execute", "tune")


def _comparable(spec: dict) -> dict:
    """The parts of a stored spec a resume must match, its relative paths resolved from the
    working directory: a spec file's paths are stored absolute (resolved from its folder), a
    study stored before that holds them as written, relative to the directory it ran from."""
    canon = resolve_paths(canonical_spec(parse_spec(spec)), Path.cwd())
    return {k: v for k, v in canon.items() if k not in RESUMABLE_KEYS}


def open_study(spec: StudySpec, out: Path, stored: dict | None = None) -> StudyStore:
    """Create the study folder, or reopen it to resume, checking it holds this same spec."""
    store = StudyStore.create_or_open(out)
    existing = store.study()
    dumped = stored or spec.model_dump(mode="json")
    if existing is None:
        store.init_study(spec.name, dumped["task"]["name"], dumped["family"]["name"], dumped)
    elif _comparable(existing["spec"]) != _comparable(dumped):
        store.close()
        raise UserError(f"{out} holds a study with a different spec; "
                        "rerun with its own spec or choose another --out")
    return store


def rung_key(rung: int) -> str:
    return f"rung-{rung}"


def storage_root(execute: ExecuteOptions, out: Path, canon: dict) -> Path:
    """Where a study's resume points and fresh weights go: the study's own checkpoints/, or,
    with `--storage`, a folder of this study inside it (named by the study and a hash of its
    spec, so a rerun of the same study finds its checkpoints and other studies do not)."""
    if execute.storage is None:
        return (out / "checkpoints").resolve()
    from scalelab.execute.ray import storage_path

    slug = default_out(parse_spec(canon)).name
    digest = hashlib.sha1(json.dumps(_comparable(canon), sort_keys=True).encode()).hexdigest()
    return storage_path(execute.storage) / f"{slug}-{digest[:10]}"


class RungRecorder:
    """What an executor run over the ladder's rungs writes to the store, event by event
    (`execute.base.drive` hands the events to the observers once recorded)."""

    def __init__(self, store: StudyStore, jobs: list[Job]):
        self.store = store
        self.rungs = {j.key: j.plan.rung for j in jobs}
        self.failed: dict[int, str] = {}

    def __call__(self, event: Event) -> None:
        rung = self.rungs[event.key]
        if isinstance(event, Started):
            self.store.set_status(rung, "running")
        elif isinstance(event, Checkpoint):
            self.store.record_curve(rung, event.curve)
        elif isinstance(event, Finished):
            self.store.record_curve(rung, event.curve)
            self.store.record_rung(rung, self._keep_weights(rung, event.result).to_dict())
        elif isinstance(event, Failed):
            self.failed[rung] = event.error
            self.store.fail_rung(rung, event.error)

    def _keep_weights(self, rung: int, result: RungResult) -> RungResult:
        """Final weights live in the study folder, whatever storage the worker wrote them to."""
        if result.checkpoint is None:
            return result
        src = Path(result.checkpoint)
        dest = self.store.checkpoints / f"rung-{rung}.safetensors"
        if src.resolve() != dest.resolve():
            tmp = dest.with_suffix(".copy")
            shutil.copyfile(src, tmp)
            tmp.replace(dest)
        return replace(result, checkpoint=str(dest.relative_to(self.store.folder)))


class _Callbacks(BaseObserver):
    """run_study's plain callbacks (`progress`, `on_rung_done`) as an observer."""

    def __init__(self, store: StudyStore, plans: dict[str, RungPlan],
                 progress: Callable[[RungPlan, int, float], None] | None,
                 on_rung_done: Callable[[RungPlan, dict], None] | None):
        self.store, self.plans = store, plans
        self.progress, self.on_rung_done = progress, on_rung_done

    def on_event(self, event: Event) -> None:
        plan = self.plans.get(event.key)
        if plan is None:
            return
        if isinstance(event, Progress) and self.progress is not None:
            self.progress(plan, event.step, event.train_loss)
        elif isinstance(event, Finished) and self.on_rung_done is not None:
            row = next(r for r in self.store.rungs() if r["rung"] == plan.rung)
            self.on_rung_done(plan, row)


def rung_jobs(store: StudyStore, plans: list[RungPlan], storage: Path,
              train: TrainSpec) -> list[Job]:
    """A job for every rung not finished yet (done and diverged rungs are kept as they are)."""
    status = {r["rung"]: r["status"] for r in store.rungs()}
    return link_branches([Job(rung_key(p.rung), p, str(storage / f"rung-{p.rung}"),
                              str(storage / f"rung-{p.rung}.safetensors"), train)
                          for p in plans if status.get(p.rung) not in FINISHED])


def drive_rungs(store: StudyStore, executor: Executor, work: Workload, plans: list[RungPlan],
                storage: Path, observers: Sequence[Observer]) -> None:
    jobs = rung_jobs(store, plans, storage, work.spec.train)
    recorder = RungRecorder(store, jobs)
    try:
        drive(executor, jobs, work, recorder, observers)
    except Exception as err:
        # An error outside the jobs' own (the driver's, or the executor's): a rung it cut short
        # is failed with that reason, not left `running`. (An interrupt leaves it as it is.)
        reason = one_line(err)
        for r in store.rungs():
            if r["status"] == "running" and r["rung"] in recorder.rungs.values():
                store.fail_rung(r["rung"], reason)
        raise
    if recorder.failed:
        first = min(recorder.failed)
        raise StudyIncomplete(
            f"{len(recorder.failed)} rung(s) did not finish (rung {first}: "
            f"{recorder.failed[first]}); finished rungs are recorded, rerun the same command "
            "to resume")


@contextmanager
def use_executor(executor: Executor | None, execute: ExecuteOptions,
                 spec: StudySpec) -> Iterator[Executor]:
    """The caller's executor as it is, or one opened for these options and closed after."""
    if executor is not None:
        yield executor
        return
    opened = open_executor(execute, spec.execute)
    try:
        yield opened
    finally:
        opened.close()


def run_study(
    spec: StudySpec,
    out: Path,
    device_name: str | None = None,
    progress: Callable[[RungPlan, int, float], None] | None = None,
    on_rung_done: Callable[[RungPlan, dict], None] | None = None,
    on_plan: Callable[[list[RungPlan]], None] | None = None,
    task: Task | None = None,
    family: Family | None = None,
    *,
    execute: ExecuteOptions | None = None,
    executor: Executor | None = None,
    observers: Sequence[Observer] = (),
    plans: list[RungPlan] | None = None,
    replan: bool = False,
) -> dict:
    """Train (or resume) every rung, fit the law, write outputs; returns the summary.

    `task` and `family` replace the spec's own with the user's objects (see tasks/base.py and
    models/base.py for the protocols); the spec still gives the ladder, training and fits.
    `execute` says where rungs train (this process, or Ray with an address and storage), or
    `executor` is one already open; `observers` get every event after it is recorded (and the
    study's start and outputs). `plans` replaces the spec's ladder (a tuned ladder).

    Before anything is written, one forward pass per planned shape checks that the models fit
    the task's inputs and outputs. A resumed study checks that its rungs' models are still the
    ones it planned (`scalelab.planned`): a changed model is a UserError, unless `replan`, which
    plans the unfinished rungs again (and still refuses when a finished rung was made by
    another model)."""
    out = Path(out)
    execute = execute or ExecuteOptions()
    device = measure.resolve_device(device_name or spec.device)
    if spec.measure.threads:
        torch.set_num_threads(spec.measure.threads)
    res = resolve(spec, task, family, out)
    spec = res.spec  # with the budget and lr chosen for the task: what the study stores
    plans = plans if plans is not None else plan_ladder(spec, res.task, res.family)
    check_models(res, plans)
    canon = canonical_spec(spec, task, family)
    with use_executor(executor, execute, spec) as ex:
        storage = storage_root(execute, out, canon)
        if execute.storage is not None:  # a storage of its own is checked before any write
            check_storage(ex, storage)
        with open_study(spec, out, canon) as store:
            if execute.storage is None:  # the study folder's own, once open_study made it
                check_storage(ex, storage)
            for rung in check_resume(store, res.family, plans, replan):
                shutil.rmtree(storage / f"rung-{rung}", ignore_errors=True)  # the old model's
            store.add_rungs([p.to_dict() for p in plans])
            study = store.study()
            gemm_peak = study["gemm_peak_flops"]
            if gemm_peak is None:  # measured once per study, kept across resumes
                gemm_peak = measure.gemm_peak_flops(device)
                store.set_machine(measure.machine_info(device), task_record(res.task),
                                  gemm_peak, measure.vendor_peak_flops(device))
            if on_plan is not None:
                on_plan(plans)
            by_key = {rung_key(p.rung): p for p in plans}
            watchers = [*observers, _Callbacks(store, by_key, progress, on_rung_done)]
            for w in watchers:
                w.on_study(store.folder, store.study()["spec"])
            work = Workload(res.task, res.family, spec, str(device), gemm_peak)
            try:
                drive_rungs(store, ex, work, plans, storage, watchers)
            except StudyIncomplete:
                # summary.json and the report say which rungs failed and why, and what the
                # finished ones give so far; a rerun resumes the rest.
                store.replace_fits(fit_rungs(store.rungs(), spec))
                write_outputs(store)
                raise
            if spec.compress is not None:
                from scalelab.compress import compress_study

                compress_study(store, spec, res.task, res.family, device, spec.compress.rung,
                               spec.compress.methods, executor=ex, observers=watchers)
            store.replace_fits(fit_rungs(store.rungs(), spec))
            summary = write_outputs(store)
            for w in watchers:
                w.on_outputs(store.folder, summary)
            return summary


def check_models(res: Resolved, plans: list[RungPlan]) -> None:
    """One forward pass of the smallest planned model on an example batch of the task, so a
    model whose inputs or outputs do not fit the task is one line before the study folder is
    written (a width that does not match the task's inputs does not depend on the size)."""
    if plans:
        check_forward(res.family, min(plans, key=lambda p: p.n_params).shape, res.task)


TUNE_JSON = "tune.json"  # written by scalelab.tune.driver, read into summary.json


def task_record(task: Task) -> dict:
    """The task as recorded with the study (the `corpus` of summary.json): its data fingerprint
    plus what the report needs to know of it (objective, unit of D, metrics, inputs)."""
    return {**task.fingerprint(), "task": getattr(task, "name", type(task).__name__),
            "objective": task.objective, "unit": task.unit, "metrics": list(task.metrics),
            "io": task.io.to_dict()}


def finished(rungs: list[dict], key: str = "val_loss") -> list[dict]:
    """The rungs a law is fitted to: status done, with a finite value of `key` (summary rows,
    where metrics have their own val_<name> keys, or store rows)."""
    from scalelab.values import finite

    return [r for r in rungs if r["status"] == "done" and finite(r.get(key)) is not None]


def fit_rungs(rungs: list[dict], spec: StudySpec, **options: Any) -> list[dict]:
    """The power law L(N) = E + A·N^-alpha over finished rungs, with intervals and holdout; for
    classifiers the same law of the error rate too (rungs with zero error are left out: a power
    law cannot reach it). Each record also holds the noise model (from the seed repeats or
    folds of each size), the extrapolation profile with its trust horizon at
    `fit.tolerance`, and predictions 10x and 100x beyond the largest rung. A two-axis ladder
    (a grid of (N, D) or IsoFLOP budgets) gets the two-axis record instead. The law engine
    (`scalelab.laws.engine.fit_ladder`) fits them, as it does for `scalelab fit STUDY`, whose
    `options` (weights, law, holdout, compute) go to it."""
    from scalelab.laws.engine import fit_ladder

    return fit_ladder([_rung_summary(r) for r in rungs], two_axis=spec.ladder.two_axis,
                      bootstrap=spec.fit.bootstrap, seed=spec.fit.seed,
                      tolerance=spec.fit.tolerance, **options)


def _flat_latency(record: dict) -> dict:
    """summary.json's latency: medians per batch in `latency_ms`, IQRs in `latency_iqr_ms`,
    flagged batches in `latency_unstable` (`scalelab.latency.flat`)."""
    return latency.flat(record.get("latency_ms"))


def _rung_summary(r: dict, vendor_peak: float | None = None) -> dict:
    metrics = r.get("metrics") or {}
    row = dict(r, **{column: metrics.get(m) for column, m in metric_columns()})
    flops, seconds, energy, units = (r.get("flops"), r.get("train_seconds"), r.get("energy_j"),
                                     r.get("D"))
    row["mfu_vendor"] = (flops / seconds / vendor_peak
                         if flops and seconds and vendor_peak else None)
    row["energy_j_per_unit"] = energy / units if energy is not None and units else None
    shape = r.get("shape") or {}
    row["describe"] = ((r.get("plan") or {}).get("describe")
                       or (f"{shape['n_layer']}x{shape['d_model']}" if "n_layer" in shape
                           else None))
    out = {k: row.get(k) for k in run_columns() if k not in ("latency_ms", "latency_iqr_ms")}
    out.update(checkpoint=r.get("checkpoint"), shape=r.get("shape"), metrics=metrics)
    return out | _flat_latency(r)


def _variant_summary(v: dict) -> dict:
    return dict(v) | _flat_latency(v)


def build_summary(store: StudyStore) -> dict:
    study = store.study()
    if study is None:
        raise UserError(f"{store.folder} has no study recorded")
    machine = study["machine"] or {}
    return {
        "study": {
            "name": study["name"],
            "task": study["task"],
            "family": study["family"],
            "machine": machine.get("machine"),
            "device": machine.get("device"),
            "gemm_peak_flops": study["gemm_peak_flops"],
            "vendor_peak_flops": study["vendor_peak_flops"],
            "torch_version": machine.get("torch_version"),
            "python_version": machine.get("python_version"),
            "threads": machine.get("threads"),
            "platform": machine.get("platform"),
            "spec": study["spec"],
            "corpus": study["corpus"],
            "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(study["created"])),
        },
        "rungs": [_rung_summary(r, study["vendor_peak_flops"]) for r in store.rungs()],
        "fits": store.fits(),
        "variants": [_variant_summary(v) for v in store.variants()],
        # Fine-tunes on second tasks (`scalelab finetune`), and each second task's scaling.
        "finetunes": [_variant_summary(f) for f in store.finetunes()],
        "finetune_scaling": store.finetune_scaling(),
        # Rungs `scalelab grow` added: each one's forecast, recorded before it trained.
        "forecasts": store.forecasts(),
    }


def write_runs_csv(summary: dict, path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        batches = sorted({b for r in summary["rungs"] for b in r["latency_ms"]}, key=int)
        cols = [c for c in run_columns() if c not in ("latency_ms", "latency_iqr_ms")]
        writer.writerow(cols + [f"latency_ms_b{b}" for b in batches])
        for r in summary["rungs"]:
            writer.writerow([r.get(c) for c in cols] + [r["latency_ms"].get(b) for b in batches])


def write_outputs(store: StudyStore) -> dict:
    """summary.json, runs.csv and report.html, all derived from the database."""
    from scalelab.report.html import render_report

    summary = build_summary(store)
    folder = store.folder
    atomic_write(folder / "summary.json", json.dumps(summary, indent=2))
    write_runs_csv(summary, folder / "runs.csv")
    from scalelab.report.compression import compression_section
    from scalelab.report.finetune import finetune_section
    from scalelab.report.tune import tune_section

    tune = folder / TUNE_JSON
    sections = [(title, html) for title, html in
                (("Compression", compression_section(summary)),
                 ("Fine-tuning", finetune_section(summary)),
                 ("Tuning", tune_section(json.loads(tune.read_text())) if tune.is_file()
                  else None)) if html is not None]
    render_report(summary, store.curves(), folder / "report.html",
                  extra_sections=sections or None)
    return summary


def atomic_write(path: Path, text: str) -> None:
    """Write to a temporary file, then rename: a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
