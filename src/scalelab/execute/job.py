"""One job, wherever it runs (this process or a Ray worker): train or resume it, measure it, and
report its events. Writes checkpoint and weight files only; every number goes back as an event.

`run_job` runs a job by its kind: a rung (or tuning trial) here, a variant by
`compress.job.make_variant`, a fine-tune by `finetune.job.train_finetune`.
"""

from __future__ import annotations

import importlib
import os
import socket
from pathlib import Path

import torch

from scalelab.execute.base import (
    Checkpoint,
    Emit,
    Finished,
    Job,
    JobKind,
    Progress,
    Started,
    Workload,
)
from scalelab.planned import check_built
from scalelab.records import RungPlan, RungResult
from scalelab.spec import StudySpec
from scalelab.tasks.base import Task
from scalelab.train import measure
from scalelab.train.checkpoint import PREFIX, latest_checkpoint, save_weights
from scalelab.train.distributed import Ranks
from scalelab.train.loop import TrainOutcome, train_rung


def measure_rung(plan: RungPlan, outcome: TrainOutcome, task: Task, spec: StudySpec,
                 device: torch.device, gemm_peak: float | None) -> RungResult:
    """Every measurement of a trained rung, by the rules of docs/method.md ("Definitions")."""
    model = outcome.model
    m = spec.measure
    q = measure.measure_model(model, task, device, spec.train.final_eval_tokens,
                              m.latency_batches, m.latency_repeats, spec.train.precision,
                              train_loss=True)
    step_flops = measure.train_step_flops(model, task.example_input(plan.batch_size).to(device))
    flops = float(step_flops) * outcome.steps
    seconds = outcome.train_seconds
    return RungResult(
        status="done", D=outcome.tokens, steps=outcome.steps, train_seconds=seconds,
        val_loss=q["val_loss"], train_loss=q["train_loss"], metrics=q["metrics"],
        flops=flops,
        # 6·N·D with N = all parameters (a tied head's matmul is real compute; embedding
        # lookups are not, a small overcount at these sizes).
        flops_6nd=6.0 * plan.n_params * outcome.tokens,
        units_per_s=outcome.tokens / seconds if seconds > 0 else None,
        mfu=flops / seconds / gemm_peak if seconds > 0 and gemm_peak else None,
        latency_ms=q["latency_ms"],
    )


def _loss_only(outcome: TrainOutcome, task: Task, spec: StudySpec,
               device: torch.device) -> RungResult:
    """A tuning trial's result: the validation loss on the same windows a rung is judged on."""
    val = task.evaluate(outcome.model, device, spec.train.final_eval_tokens,
                        precision=spec.train.precision)
    return RungResult(status="done", D=outcome.tokens, steps=outcome.steps,
                      train_seconds=outcome.train_seconds, val_loss=val["loss"],
                      metrics={k: v for k, v in val.items() if k != "loss"})


def resume_step(folder: Path) -> int:
    last = latest_checkpoint(folder)
    return 0 if last is None else int(last.name.removeprefix(PREFIX))


def _saves(job: Job) -> dict[int, list[Path]]:
    out: dict[int, list[Path]] = {}
    for step, folder in job.branch_saves:
        out.setdefault(step, []).append(Path(folder))
    return out


# Each kind's worker function, imported when a job of that kind runs (the compression and
# fine-tuning packages import this one).
WORKERS: dict[JobKind, str] = {
    "rung": "scalelab.execute.job:train_job",
    "variant": "scalelab.compress.job:make_variant",
    "finetune": "scalelab.finetune.job:train_finetune",
}


def run_job(job: Job, work: Workload, emit: Emit) -> Finished:
    """Run the job by its kind's worker function; returns its Finished event (the caller emits
    it, once the job's files are in place)."""
    module, name = WORKERS[job.kind].split(":")
    return getattr(importlib.import_module(module), name)(job, work, emit)


def train_job(job: Job, work: Workload, emit: Emit, ranks: Ranks | None = None) -> Finished | None:
    """Train (or resume) the job's rung and measure it. With `ranks` (one of several processes
    training it: execute/ranks.py), the first rank measures and reports; the others return None
    once the rung is trained."""
    plan, spec = job.plan, work.spec
    check_built(work.family, plan)  # the model it is about to train is the one it planned
    device = measure.resolve_device(work.device)
    ckpt_dir = Path(job.resume_dir)
    emit(Started(job.key, os.getpid(), socket.gethostname(), resume_step(ckpt_dir)))
    task = work.task
    rung_task = task.fold(plan.repeat) if getattr(task, "n_folds", 1) > 1 else task

    def on_checkpoint(curve: list) -> None:
        points = [p.__dict__ for p in curve]
        emit(Checkpoint(job.key, points[-1]["step"] if points else 0, points))

    with measure.PeakMemory(device) as mem, measure.EnergyMeter(device) as energy:
        outcome = train_rung(plan, rung_task, job.train, device, ckpt_dir, family=work.family,
                             on_progress=lambda step, loss: emit(Progress(job.key, step, loss)),
                             on_checkpoint=on_checkpoint, branch_saves=_saves(job),
                             ranks=ranks)
    if ranks is not None:
        full = ranks.full_model(outcome.model)  # every rank takes part in gathering it
        if full is None:
            return None
        outcome.model = full.to(device)
    curve = [p.__dict__ for p in outcome.curve]
    if outcome.status == "diverged":
        result = RungResult(status="diverged", D=outcome.tokens, steps=outcome.steps,
                            train_seconds=outcome.train_seconds,
                            diverged_step=outcome.diverged_step,
                            diverged_reason=outcome.diverged_reason)
        return Finished(job.key, result, curve)
    if not job.full:
        return Finished(job.key, _loss_only(outcome, rung_task, spec, device), curve)
    nbytes = save_weights(outcome.model, Path(job.weights)) if job.weights else None
    result = measure_rung(plan, outcome, rung_task, spec, device, work.gemm_peak)
    result.peak_mem_bytes = mem.peak_bytes
    result.energy_j = energy.joules
    result.checkpoint_bytes = nbytes
    result.checkpoint = job.weights
    return Finished(job.key, result, curve)
