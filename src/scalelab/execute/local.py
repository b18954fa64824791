"""Run the rungs of a ladder one after another in this process and hand results to the store.

The driver (this process) is the only writer of study.db. A rung that is already `done` or
`diverged` is skipped; a rung that was `running` when the process died resumes from its last
checkpoint.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import torch

from scalelab.models.base import Family
from scalelab.records import FINISHED, RungPlan, RungResult
from scalelab.spec import StudySpec
from scalelab.store import StudyStore
from scalelab.tasks.base import Task
from scalelab.train import measure
from scalelab.train.checkpoint import save_weights
from scalelab.train.loop import TrainOutcome, train_rung


def measure_rung(plan: RungPlan, outcome: TrainOutcome, task: Task, spec: StudySpec,
                 device: torch.device, gemm_peak: float | None) -> RungResult:
    """Every measurement of a trained rung, by DESIGN.md's rules."""
    model = outcome.model
    m = spec.measure
    q = measure.measure_model(model, task, device, spec.train.final_eval_tokens,
                              m.latency_batches, m.latency_repeats, train_loss=True)
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


def run_rungs(
    store: StudyStore,
    spec: StudySpec,
    task: Task,
    family: Family,
    plans: list[RungPlan],
    device: torch.device,
    gemm_peak: float | None,
    progress: Callable[[RungPlan, int, float], None] | None = None,
    on_rung_done: Callable[[RungPlan, dict], None] | None = None,
) -> None:
    status = {r["rung"]: r["status"] for r in store.rungs()}
    for plan in plans:
        if status.get(plan.rung) in FINISHED:
            continue
        store.set_status(plan.rung, "running")
        ckpt_dir = store.checkpoints / f"rung-{plan.rung}"

        def save_curve(curve, rung=plan.rung):
            store.record_curve(rung, [p.__dict__ for p in curve])

        def step_progress(step, loss, plan=plan):
            if progress is not None:
                progress(plan, step, loss)

        rung_task = task.fold(plan.repeat) if getattr(task, "n_folds", 1) > 1 else task
        with measure.PeakMemory(device) as mem:
            outcome = train_rung(plan, rung_task, spec.train, device, ckpt_dir, family=family,
                                 on_progress=step_progress, on_checkpoint=save_curve)
        save_curve(outcome.curve)
        if outcome.status == "diverged":
            result = RungResult(status="diverged", D=outcome.tokens, steps=outcome.steps,
                                train_seconds=outcome.train_seconds,
                                diverged_step=outcome.diverged_step,
                                diverged_reason=outcome.diverged_reason)
        else:
            weights = store.checkpoints / f"rung-{plan.rung}.safetensors"
            nbytes = save_weights(outcome.model, weights)
            result = measure_rung(plan, outcome, rung_task, spec, device, gemm_peak)
            result.peak_mem_bytes = mem.peak_bytes
            result.checkpoint_bytes = nbytes
            result.checkpoint = str(weights.relative_to(store.folder))
        store.record_rung(plan.rung, result.to_dict())
        # The resume points are only needed while the rung is unfinished.
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        if on_rung_done is not None:
            on_rung_done(plan, store_row(store, plan.rung))


def store_row(store: StudyStore, rung: int) -> dict:
    return next(r for r in store.rungs() if r["rung"] == rung)
